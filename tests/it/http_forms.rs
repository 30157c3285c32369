//! Every bundled TD validates, and every form of every TD works: a walk over href + op (resolved
//! against `base`), not a hand-written URL list.

use crate::common;

use std::time::Duration;

use futures_util::FutureExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A value that satisfies a DataSchema (and differs from `avoid` where the schema allows).
fn sample(schema: &Value, avoid: Option<&Value>) -> Value {
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e.iter().find(|v| Some(*v) != avoid).unwrap_or(&e[0]).clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => Value::Bool(!avoid.and_then(Value::as_bool).unwrap_or(false)),
        Some(t @ ("integer" | "number")) => {
            let min = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let max = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(min + 100.0);
            let mut v = (min + 1.0).min(max);
            if avoid.and_then(Value::as_f64) == Some(v) {
                v = (min + 2.0).min(max);
            }
            if t == "integer" {
                json!(v as i64)
            } else {
                json!(v + 0.5_f64.min(max - v))
            }
        }
        Some("string") => json!("sample"),
        Some("array") => json!([]),
        Some("object") => {
            let mut out = serde_json::Map::new();
            let props = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                out.insert(name.into(), sample(&props.unwrap()[name], None));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

fn ops(form: &Value) -> Vec<String> {
    match &form["op"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        _ => panic!("form without op: {form}"),
    }
}

fn method(form: &Value) -> Method {
    Method::from_bytes(
        form["htv:methodName"]
            .as_str()
            .expect("explicit htv:methodName")
            .as_bytes(),
    )
    .unwrap()
}

struct Walk {
    client: reqwest::Client,
    base: reqwest::Url,
}

impl Walk {
    fn url(&self, href: &str, action_id: Option<&str>) -> reqwest::Url {
        let href = match action_id {
            Some(id) => href.replace("{actionID}", id),
            None => href.to_owned(),
        };
        self.base.join(&href).unwrap()
    }

    async fn json(&self, form: &Value, body: Option<&Value>, action_id: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .request(method(form), self.url(form["href"].as_str().unwrap(), action_id));
        req = req.header("Accept", "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap()
    }

    async fn stream(&self, form: &Value) -> common::SseReader {
        let url = self.url(form["href"].as_str().unwrap(), None);
        let res = self
            .client
            .get(url)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{form}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut reader = common::SseReader::new(res);
        reader.wait_for_text(": subscribed", Duration::from_secs(5)).await;
        reader
    }
}

/// Forms of the HTTP binding: their href, resolved against `base`, is http(s). The other
/// bindings' forms are walked by their own tests.
fn is_http(form: &Value) -> bool {
    let href = form["href"].as_str().unwrap();
    !href.contains("://") || href.starts_with("http://") || href.starts_with("https://")
}

fn http_forms(forms: &Value) -> Vec<Value> {
    forms
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| is_http(f))
        .cloned()
        .collect()
}

/// How long a test waits for what should come at once.
const WAIT: Duration = Duration::from_secs(10);
/// How often a longpoll's change is caused again until the poll answers.
const RETRY: Duration = Duration::from_millis(100);
/// How long a longpoll on a read-only property may be held without answering.
const HOLD: Duration = Duration::from_secs(3);

type Poll = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// The answer of a longpoll, causing the change it waits for again every `retry` until it comes.
/// A poll answers the first change after its subscription, which a client cannot see being
/// made: a change caused only once could come before it, and the poll would wait on.
async fn answer_of<F, Fut>(mut poll: Poll, retry: Duration, mut cause: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            cause().await;
            if let Ok(answer) = tokio::time::timeout(retry, &mut poll).await {
                return answer.expect("the poll task").expect("the poll answered");
            }
        }
    })
    .await
    .expect("the longpoll answers")
}

fn find_form<'a>(forms: &'a [Value], op: &str, subprotocol: Option<&str>) -> Option<&'a Value> {
    forms.iter().find(|f| {
        is_http(f)
            && ops(f).iter().any(|o| o == op)
            && f.get("subprotocol").and_then(Value::as_str) == subprotocol
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_every_bundled_td_works() {
    // The bundled things, their behaviours at test speed: the same TDs.
    let running = common::start_at_test_speed(wot_runtime::runtime::Config::loopback()).await;
    walk_every_form(&running, common::client()).await;
    running.stop().await;
}

/// The same walk over HTTPS, with a client that trusts only the generated certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_works_over_https() {
    let state = std::env::temp_dir().join(format!("wot-forms-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let tls = wot_runtime::security::self_signed(&state, wot_runtime::security::local_names()).unwrap();
    let mut config = wot_runtime::runtime::Config::loopback();
    config.security.tls = Some(tls.config);
    let running = common::start_at_test_speed(config).await;
    assert!(running.http_url().starts_with("https://"));
    walk_every_form(&running, common::trusting_client(&state.join("tls/cert.pem"))).await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

/// Performs every HTTP form of every TD the runtime lists, by href and op, checking each answer.
async fn walk_every_form(running: &wot_runtime::runtime::Running, client: reqwest::Client) {
    let list: Vec<Value> = common::get_json(&client, format!("{}/things", running.http_url())).await;
    assert_eq!(list.len(), 3);
    let mut performed = std::collections::BTreeMap::<String, usize>::new();
    // Longpolls on read-only properties, which nothing here can change: given HOLD each.
    let mut held = Vec::new();
    for td in &list {
        common::assert_valid_td(td);
        let walk = Walk {
            client: client.clone(),
            base: reqwest::Url::parse(td["base"].as_str().unwrap()).unwrap(),
        };
        // Thing-level forms.
        for form in &http_forms(&td["forms"]) {
            let op = ops(form)[0].clone();
            *performed.entry(op.clone()).or_default() += 1;
            let subprotocol = form.get("subprotocol").and_then(Value::as_str);
            match (op.as_str(), subprotocol) {
                ("readallproperties", None) => {
                    let res = walk.json(form, None, None).await;
                    assert_eq!(res.status(), StatusCode::OK);
                    let all: Value = res.json().await.unwrap();
                    for name in td["properties"].as_object().unwrap().keys() {
                        assert!(all.get(name).is_some(), "readall lacks {name}");
                    }
                }
                ("writemultipleproperties", None) => {
                    let mut values = serde_json::Map::new();
                    for (name, p) in td["properties"].as_object().unwrap() {
                        if !p["readOnly"].as_bool().unwrap_or(false) {
                            values.insert(name.clone(), sample(p, None));
                        }
                    }
                    let res = walk.json(form, Some(&Value::Object(values.clone())), None).await;
                    assert_eq!(res.status(), StatusCode::NO_CONTENT);
                    let read = find_form(td["forms"].as_array().unwrap(), "readallproperties", None).unwrap();
                    let all: Value = walk.json(read, None, None).await.json().await.unwrap();
                    for (name, v) in values {
                        assert_eq!(all[&name], v, "read-after-write of {name}");
                    }
                }
                ("observeallproperties", Some("sse")) => {
                    let mut sse = walk.stream(form).await;
                    if let Some((name, p)) = td["properties"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .find(|(_, p)| !p["readOnly"].as_bool().unwrap())
                    {
                        let write = find_form(p["forms"].as_array().unwrap(), "writeproperty", None).unwrap();
                        let current: Value = walk
                            .json(
                                find_form(p["forms"].as_array().unwrap(), "readproperty", None).unwrap(),
                                None,
                                None,
                            )
                            .await
                            .json()
                            .await
                            .unwrap();
                        let v = sample(p, Some(&current));
                        walk.json(write, Some(&v), None).await;
                        loop {
                            let frame = sse.next(Duration::from_secs(5)).await;
                            if frame.event.as_deref() == Some(name) {
                                assert_eq!(serde_json::from_str::<Value>(&frame.data).unwrap(), v);
                                break;
                            }
                        }
                    }
                }
                ("observeallproperties" | "subscribeallevents", Some("longpoll")) => {
                    // A longpoll answers with the next change; the thing's own sources or the
                    // writes below produce one. Start it, then cause a change if we can.
                    let url = walk.url(form["href"].as_str().unwrap(), None);
                    let poll = tokio::spawn(client.get(url).send());
                    let res = if op == "subscribeallevents" && td["title"] == "Lamp" {
                        let fade = find_form(
                            td["actions"]["fade"]["forms"].as_array().unwrap(),
                            "invokeaction",
                            None,
                        )
                        .unwrap();
                        answer_of(poll, RETRY, || async {
                            walk.json(fade, Some(&json!({"level": 3, "duration": 0})), None)
                                .await;
                        })
                        .await
                    } else if op == "subscribeallevents" && td["title"] == "Thermostat" {
                        // Overheating fires once the drifting temperature passes 25 °C, and
                        // again only after it fell below 24.5 °C: each attempt cools the room
                        // below that first, so that it crosses 25 °C once more.
                        let target = td["properties"]["target"]["forms"].as_array().unwrap();
                        let write = find_form(target, "writeproperty", None).unwrap();
                        let temperature = td["properties"]["temperature"]["forms"].as_array().unwrap();
                        let read = find_form(temperature, "readproperty", None).unwrap();
                        answer_of(poll, Duration::from_secs(2), || async {
                            walk.json(write, Some(&json!(5)), None).await;
                            common::eventually("the room cools below 24.5 °C", WAIT, || async {
                                let t: Value = walk.json(read, None, None).await.json().await.unwrap();
                                t.as_f64().unwrap() < 24.5
                            })
                            .await;
                            walk.json(write, Some(&json!(35)), None).await;
                        })
                        .await
                    } else if let Some(p) = td["properties"]
                        .as_object()
                        .unwrap()
                        .values()
                        .find(|p| !p["readOnly"].as_bool().unwrap())
                    {
                        let write = find_form(p["forms"].as_array().unwrap(), "writeproperty", None).unwrap();
                        let read = find_form(p["forms"].as_array().unwrap(), "readproperty", None).unwrap();
                        let current: Value = walk.json(read, None, None).await.json().await.unwrap();
                        let v = sample(p, Some(&current));
                        answer_of(poll, RETRY, || walk.json(write, Some(&v), None).map(drop)).await
                    } else {
                        answer_of(poll, RETRY, || async {}).await
                    };
                    assert_eq!(res.status(), StatusCode::OK, "{form}");
                    let body: Value = res.json().await.unwrap();
                    assert!(body.is_object() && body.as_object().unwrap().len() == 1, "{body}");
                }
                ("queryallactions", None) => {
                    let res = walk.json(form, None, None).await;
                    assert_eq!(res.status(), StatusCode::OK);
                    let all: Value = res.json().await.unwrap();
                    for (name, a) in td["actions"].as_object().unwrap() {
                        if a["synchronous"] == false {
                            assert!(all[name].is_array(), "{all}");
                        }
                    }
                }
                ("subscribeallevents", Some("sse")) => {
                    walk.stream(form).await;
                }
                other => panic!("unexpected thing-level form {other:?}: {form}"),
            }
        }
        // Property forms.
        for (name, p) in td["properties"].as_object().unwrap() {
            let forms = &http_forms(&p["forms"]);
            for form in forms {
                let op = ops(form)[0].clone();
                *performed.entry(op.clone()).or_default() += 1;
                match (op.as_str(), form.get("subprotocol").and_then(Value::as_str)) {
                    ("readproperty", None) => {
                        let res = walk.json(form, None, None).await;
                        assert_eq!(res.status(), StatusCode::OK, "{name}");
                        assert_eq!(res.headers()["content-type"], "application/json");
                        let v: Value = res.json().await.unwrap();
                        let schema = wot_runtime::core::DataSchema::compile(p).unwrap();
                        assert!(schema.is_valid(&v), "{name} = {v} violates its own schema");
                    }
                    ("writeproperty", None) => {
                        let read = find_form(forms, "readproperty", None).unwrap();
                        let before: Value = walk.json(read, None, None).await.json().await.unwrap();
                        let v = sample(p, Some(&before));
                        let res = walk.json(form, Some(&v), None).await;
                        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{name}");
                        let after: Value = walk.json(read, None, None).await.json().await.unwrap();
                        assert_eq!(after, v, "read-after-write of {name}");
                    }
                    ("observeproperty", Some("sse")) => {
                        let mut sse = walk.stream(form).await;
                        if let Some(write) = find_form(forms, "writeproperty", None) {
                            let read = find_form(forms, "readproperty", None).unwrap();
                            let before: Value = walk.json(read, None, None).await.json().await.unwrap();
                            let v = sample(p, Some(&before));
                            walk.json(write, Some(&v), None).await;
                            let frame = sse.next(Duration::from_secs(5)).await;
                            assert_eq!(frame.event.as_deref(), Some(name.as_str()));
                            assert!(frame.id.is_some());
                            assert_eq!(serde_json::from_str::<Value>(&frame.data).unwrap(), v);
                        }
                    }
                    ("observeproperty", Some("longpoll")) => {
                        let url = walk.url(form["href"].as_str().unwrap(), None);
                        let poll = tokio::spawn(client.get(url).send());
                        if let Some(write) = find_form(forms, "writeproperty", None) {
                            let read = find_form(forms, "readproperty", None).unwrap();
                            let before: Value = walk.json(read, None, None).await.json().await.unwrap();
                            let v = sample(p, Some(&before));
                            let res =
                                answer_of(poll, RETRY, || walk.json(write, Some(&v), None).map(drop)).await;
                            assert_eq!(res.status(), StatusCode::OK);
                            assert_eq!(res.json::<Value>().await.unwrap(), v);
                        } else {
                            // Read-only sources change on their own: uptime every second, free
                            // memory (in MiB) only when it moves. A poll either answers a change
                            // or is still held by the server, as a long poll should be: each is
                            // given 3 s, all at once, at the end of the walk.
                            held.push((name.clone(), tokio::time::Instant::now() + HOLD, poll));
                        }
                    }
                    other => panic!("unexpected property form {other:?}: {form}"),
                }
            }
        }
        // Action forms: invoke, then query and cancel the instance the invocation created.
        for (name, a) in td["actions"].as_object().into_iter().flatten() {
            let forms = &http_forms(&a["forms"]);
            let invoke = find_form(forms, "invokeaction", None).expect("invoke form");
            let input = a.get("input").map(|s| {
                let mut v = sample(s, None);
                if name == "fade" {
                    v["duration"] = json!(2000);
                }
                v
            });
            let res = walk.json(invoke, input.as_ref(), None).await;
            *performed.entry("invokeaction".into()).or_default() += 1;
            if a["synchronous"] == true {
                assert!(
                    matches!(res.status(), StatusCode::OK | StatusCode::NO_CONTENT),
                    "{name}"
                );
                continue;
            }
            assert_eq!(res.status(), StatusCode::CREATED, "{name}");
            let status: Value = res.json().await.unwrap();
            let action_id = status["href"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            for form in forms {
                let op = ops(form)[0].clone();
                match op.as_str() {
                    "invokeaction" => {}
                    "queryaction" => {
                        *performed.entry(op).or_default() += 1;
                        let res = walk.json(form, None, Some(&action_id)).await;
                        assert_eq!(res.status(), StatusCode::OK);
                        let s: Value = res.json().await.unwrap();
                        assert!(
                            ["pending", "running"].contains(&s["status"].as_str().unwrap()),
                            "{s}"
                        );
                    }
                    "cancelaction" => {
                        *performed.entry(op).or_default() += 1;
                        let res = walk.json(form, None, Some(&action_id)).await;
                        assert_eq!(res.status(), StatusCode::NO_CONTENT);
                    }
                    other => panic!("unexpected action form {other}: {form}"),
                }
            }
        }
        // Event forms.
        for (name, e) in td["events"].as_object().into_iter().flatten() {
            for form in &http_forms(&e["forms"]) {
                let op = ops(form)[0].clone();
                *performed.entry(op).or_default() += 1;
                match form.get("subprotocol").and_then(Value::as_str) {
                    Some("sse") => {
                        walk.stream(form).await;
                    }
                    Some("longpoll") => {
                        let url = walk.url(form["href"].as_str().unwrap(), None);
                        let poll = tokio::spawn(client.get(url).send());
                        if name == "faded" {
                            let fade = find_form(
                                td["actions"]["fade"]["forms"].as_array().unwrap(),
                                "invokeaction",
                                None,
                            )
                            .unwrap();
                            let input = json!({"level": 9, "duration": 0});
                            let res =
                                answer_of(poll, RETRY, || walk.json(fade, Some(&input), None).map(drop))
                                    .await;
                            assert_eq!(res.status(), StatusCode::OK);
                            assert_eq!(res.json::<Value>().await.unwrap(), json!(9));
                        } else {
                            poll.abort();
                        }
                    }
                    other => panic!("unexpected event form {other:?}"),
                }
            }
        }
    }
    for (name, deadline, poll) in held {
        if let Ok(res) = tokio::time::timeout_at(deadline, poll).await {
            let res = res.unwrap().unwrap();
            assert!(
                matches!(res.status(), StatusCode::OK | StatusCode::NO_CONTENT),
                "{name}: {}",
                res.status()
            );
        }
    }
    for op in [
        "readproperty",
        "writeproperty",
        "observeproperty",
        "readallproperties",
        "writemultipleproperties",
        "observeallproperties",
        "invokeaction",
        "queryaction",
        "cancelaction",
        "queryallactions",
        "subscribeevent",
        "subscribeallevents",
    ] {
        assert!(
            performed.get(op).copied().unwrap_or(0) > 0,
            "no form with op {op} was exercised: {performed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tds_are_served_with_td_media_type_head_and_directory() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    for slug in ["lamp", "thermostat", "host"] {
        let get = client.get(format!("{base}/things/{slug}")).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.headers()["content-type"], "application/td+json");
        let length = get.headers()["content-length"].clone();
        let td: Value = get.json().await.unwrap();
        common::assert_valid_td(&td);
        assert!(td["id"].as_str().unwrap().starts_with("urn:uuid:"));
        assert_eq!(td["base"], format!("{base}/"));
        // TD 1.1, in the order that TD 1.0 consumers can read too (`td-context-ns-td10-namespace`).
        assert_eq!(td["@context"][0], "https://www.w3.org/2019/wot/td/v1");
        assert_eq!(td["@context"][1], "https://www.w3.org/2022/wot/td/v1.1");
        for (_, a) in td["actions"].as_object().into_iter().flatten() {
            assert!(
                a["synchronous"].is_boolean(),
                "synchronous is explicit on every action"
            );
            for f in a["forms"].as_array().unwrap() {
                if ops(f) == ["cancelaction"] {
                    assert_eq!(f["htv:methodName"], "DELETE");
                }
            }
        }
        let head = client.head(format!("{base}/things/{slug}")).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["content-length"], length);
        assert_eq!(head.headers()["content-type"], "application/td+json");
        assert!(head.bytes().await.unwrap().is_empty());
    }
    // Same TD bytes twice (cached), and the id is stable across requests.
    let a = client
        .get(format!("{base}/things/lamp"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let b = client
        .get(format!("{base}/things/lamp"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(a, b);
    // Several things: /.well-known/wot is a directory TD that leads to every TD.
    let res = client
        .get(format!("{base}/.well-known/wot"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/td+json");
    let dir: Value = res.json().await.unwrap();
    common::assert_valid_td(&dir);
    assert!(dir["@type"].to_string().contains("ThingDirectory"), "{dir}");
    // The href is a URI template (`things{?offset,limit,format}`); expand it with no variables.
    let template = dir["properties"]["things"]["forms"][0]["href"].as_str().unwrap();
    let things_href = template.split('{').next().unwrap();
    let url = reqwest::Url::parse(dir["base"].as_str().unwrap())
        .unwrap()
        .join(things_href)
        .unwrap();
    let listed = client.get(url).send().await.unwrap();
    assert_eq!(listed.headers()["content-type"], "application/ld+json");
    let listed: Vec<Value> = listed.json().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "GET /things is ordered by id");
    // Pagination: limit 2 gives a next link that leads to the rest.
    let page = client.get(format!("{base}/things?limit=2")).send().await.unwrap();
    let link = page.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("rel=\"canonical\""), "{link}");
    assert!(
        link.contains("</things?offset=2&limit=2>; rel=\"next\""),
        "{link}"
    );
    assert_eq!(page.json::<Vec<Value>>().await.unwrap().len(), 2);
    let rest: Vec<Value> = common::get_json(&client, format!("{base}/things?offset=2&limit=2")).await;
    assert_eq!(rest.len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_thing_is_its_own_well_known_td() {
    let hosted: Vec<_> = common::bundled_things()
        .into_iter()
        .filter(|h| h.thing.slug == "lamp")
        .collect();
    let running = wot_runtime::runtime::Running::start(wot_runtime::runtime::Config::loopback(), hosted)
        .await
        .unwrap();
    let client = common::client();
    let well_known: Value =
        common::get_json(&client, format!("{}/.well-known/wot", running.http_url())).await;
    let direct: Value = common::get_json(&client, format!("{}/things/lamp", running.http_url())).await;
    assert_eq!(well_known, direct);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_headers() {
    let running = common::start().await;
    let client = common::client();
    let url = format!("{}/things/lamp/properties/on", running.http_url());
    let pre = client
        .request(Method::OPTIONS, &url)
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "PUT")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    assert!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("content-type")
    );
    let get = client
        .get(&url)
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(get.headers()["access-control-allow-origin"], "*");
    let missing = client
        .get(format!("{}/nothing", running.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["access-control-allow-origin"], "*");
    running.stop().await;
}
