//! What HTTP consumers that are not WoT Profile clients need from the TDs and the longpoll
//! routes, over the wire: node-wot 0.9 (`.ci/interop/nodewot.sh` runs the real one) and the
//! WebThings Gateway's wot-adapter on node-wot 0.7. They take the first form with an op, so the
//! first observe/subscribe form is a longpoll one; node-wot 0.9 sends its handshake with the
//! form's method, so that form names none and `HEAD` is answered at once; it validates TDs with
//! a schema that wants the TD 1.0 context first. spec-notes/profile-http.md has the why.

use crate::common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

const TD_1_0: &str = "https://www.w3.org/2019/wot/td/v1";
const TD_1_1: &str = "https://www.w3.org/2022/wot/td/v1.1";
/// node-wot 0.9 gives its handshake this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn ops(form: &Value) -> Vec<&str> {
    match &form["op"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn is_http(form: &Value) -> bool {
    let href = form["href"].as_str().unwrap();
    !href.contains("://") || href.starts_with("http")
}

/// The form node-wot picks by default: the first HTTP form listing `op`.
fn default_form<'a>(forms: &'a Value, op: &str) -> &'a Value {
    forms
        .as_array()
        .unwrap()
        .iter()
        .find(|f| is_http(f) && ops(f).contains(&op))
        .unwrap_or_else(|| panic!("no HTTP form with {op} in {forms}"))
}

fn url(td: &Value, form: &Value) -> reqwest::Url {
    reqwest::Url::parse(td["base"].as_str().unwrap())
        .unwrap()
        .join(form["href"].as_str().unwrap())
        .unwrap()
}

/// Every TD (each thing's and the directory's) starts its context with the TD 1.0 URI, then the
/// TD 1.1 one, and still validates against the W3C TD 1.1 schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tds_put_the_td_1_0_context_first_and_stay_td_1_1() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let mut tds: Vec<Value> = common::get_json(&client, format!("{base}/things")).await;
    assert_eq!(tds.len(), 3);
    let directory: Value = common::get_json(&client, format!("{base}/.well-known/wot")).await;
    assert_eq!(directory["@type"], "ThingDirectory");
    tds.push(directory);
    for td in &tds {
        let context = td["@context"].as_array().expect("a context array");
        assert_eq!(context[0], TD_1_0, "{}", td["title"]);
        assert_eq!(context[1], TD_1_1, "{}", td["title"]);
        assert_eq!(context.iter().filter(|c| **c == TD_1_1).count(), 1);
        common::assert_valid_td(td);
    }
    // The TD 1.1 schema refuses the 1.0 URI anywhere but first: the order is what makes it valid.
    let mut swapped = tds[0].clone();
    swapped["@context"].as_array_mut().unwrap().swap(0, 1);
    assert!(!wot_runtime::td::validate::td_violations(&swapped).is_empty());
    running.stop().await;
}

/// For every observable property, every event and the thing-level observe/subscribe ops, the
/// first HTTP form is a longpoll form without `htv:methodName` that also unobserves (node-wot
/// unsubscribes through the form it subscribed with); the WoT Profile's SSE form follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_observe_and_subscribe_form_is_longpoll_and_sse_follows() {
    let running = common::start().await;
    let client = common::client();
    let tds: Vec<Value> = common::get_json(&client, format!("{}/things", running.http_url())).await;
    let mut checked = 0;
    for td in &tds {
        let mut cases: Vec<(&Value, &str, &str)> = vec![];
        for p in td["properties"].as_object().unwrap().values() {
            if p["observable"] == true {
                cases.push((&p["forms"], "observeproperty", "unobserveproperty"));
            }
        }
        for e in td["events"].as_object().into_iter().flatten().map(|(_, e)| e) {
            cases.push((&e["forms"], "subscribeevent", "unsubscribeevent"));
        }
        cases.push((&td["forms"], "observeallproperties", "unobserveallproperties"));
        if td.get("events").is_some() {
            cases.push((&td["forms"], "subscribeallevents", "unsubscribeallevents"));
        }
        for (forms, op, unop) in cases {
            let first = default_form(forms, op);
            assert_eq!(first["subprotocol"], "longpoll", "{op}: {first}");
            assert!(first.get("htv:methodName").is_none(), "{op}: {first}");
            assert_eq!(ops(first), [op, unop], "{first}");
            assert!(first["href"].as_str().unwrap().contains("/longpoll/"));
            let all: Vec<&Value> = forms.as_array().unwrap().iter().collect();
            let at = |f: &Value| all.iter().position(|g| *g == f).unwrap();
            let sse = all
                .iter()
                .find(|f| f["subprotocol"] == "sse" && ops(f).contains(&op))
                .unwrap_or_else(|| panic!("{op}: no SSE form"));
            assert_eq!(sse["htv:methodName"], "GET");
            assert_eq!(ops(sse), [op, unop]);
            assert!(at(sse) > at(first));
            checked += 1;
        }
    }
    // lamp: 2 properties, 1 event, 2 thing-level; thermostat: 2, 1, 2; host: 3, 0, 1.
    assert_eq!(checked, 14);
    running.stop().await;
}

/// node-wot 0.9's longpoll, request by request, on each kind of default form: a `HEAD`
/// answered 202 within its 1 s timeout, then a `GET` that answers the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_handshake_is_answered_at_once_and_the_poll_brings_the_change() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let td: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    let brightness = format!("{base}/things/lamp/properties/brightness");
    let fade = format!("{base}/things/lamp/actions/fade");
    // (default form, the key of a keyed body, whether a property write causes the change)
    let cases = [
        (
            default_form(&td["properties"]["brightness"]["forms"], "observeproperty"),
            None,
            true,
        ),
        (
            default_form(&td["forms"], "observeallproperties"),
            Some("brightness"),
            true,
        ),
        (
            default_form(&td["events"]["faded"]["forms"], "subscribeevent"),
            None,
            false,
        ),
        (
            default_form(&td["forms"], "subscribeallevents"),
            Some("faded"),
            false,
        ),
    ];
    for (form, key, by_write) in cases {
        let href = url(&td, form);
        let started = tokio::time::Instant::now();
        let head = client
            .head(href.clone())
            .timeout(HANDSHAKE_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("handshake on {href}: {e}"));
        assert_eq!(head.status(), StatusCode::ACCEPTED, "{href}");
        assert!(started.elapsed() < HANDSHAKE_TIMEOUT);
        assert_eq!(head.bytes().await.unwrap().len(), 0);
        let mut poll = tokio::spawn(client.get(href.clone()).send());
        // The poll answers the first change after it arrives, which this test cannot see
        // happen: cause a change (a new level each time) until the poll answers.
        let mut caused = Vec::new();
        let res = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let level = json!(10 + caused.len() % 90);
                let cause = if by_write {
                    client.put(&brightness).json(&level).send().await
                } else {
                    client
                        .post(&fade)
                        .json(&json!({"level": level, "duration": 0}))
                        .send()
                        .await
                };
                assert!(cause.unwrap().status().is_success());
                caused.push(level);
                if let Ok(answer) = tokio::time::timeout(Duration::from_millis(200), &mut poll).await {
                    return answer.unwrap().unwrap();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the poll on {href} never answered"));
        assert_eq!(res.status(), StatusCode::OK, "{href}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        let value = match key {
            Some(key) => {
                assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{href}: {body}");
                body[key].clone()
            }
            None => body,
        };
        assert!(caused.contains(&value), "{href}: {value} is none of {caused:?}");
    }
    running.stop().await;
}

/// The handshake refuses exactly what the poll would refuse, with the same status, and the
/// longpoll URLs answer other methods 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_handshake_refuses_what_the_poll_refuses() {
    let dir = std::env::temp_dir().join(format!("wot-http-consumers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("safe.json"),
        r#"{"title": "Safe", "properties": {
            "code": {"type": "integer", "writeOnly": true},
            "open": {"type": "boolean", "observable": true, "default": false}
        }, "events": {"alarm": {"data": {"type": "string"}}}}"#,
    )
    .unwrap();
    let running = common::serve_dir(&dir, wot_runtime::runtime::Config::loopback()).await;
    let client = common::client();
    let base = running.http_url();
    for path in [
        "things/nothing/longpoll/properties/open",
        "things/nothing/longpoll/properties",
        "things/nothing/longpoll/events",
        "things/safe/longpoll/properties/nothing",
        "things/safe/longpoll/events/nothing",
        "things/safe/longpoll/properties/code",
    ] {
        let href = format!("{base}/{path}");
        let head = client.head(&href).send().await.unwrap().status();
        let get = client.get(&href).send().await.unwrap();
        let get_status = get.status();
        assert!(head.is_client_error(), "{path}: HEAD {head}");
        assert_eq!(head, get_status, "{path}: HEAD and GET disagree");
        assert_eq!(get.headers()["content-type"], "application/problem+json");
    }
    for path in [
        "things/safe/longpoll/properties/open",
        "things/safe/longpoll/properties",
        "things/safe/longpoll/events/alarm",
        "things/safe/longpoll/events",
    ] {
        let href = format!("{base}/{path}");
        let head = client.head(&href).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::ACCEPTED, "{path}");
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let res = client.request(method.clone(), &href).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let problem: Value = res.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().ends_with("GET, HEAD"),
                "{problem}"
            );
        }
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
