//! Every case of bad input gets a precise 4xx problem+json answer that names the field and the
//! rule, nothing changes, and the server keeps serving.

use crate::common;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    /// (member of the problem body, expected value)
    expect: &'static [(&'static str, &'static str)],
}

fn case(what: &'static str, method: Method, path: &'static str, body: &str, status: StatusCode) -> Case {
    Case {
        what,
        method,
        path,
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        expect: &[],
    }
}

impl Case {
    fn expect(mut self, expect: &'static [(&'static str, &'static str)]) -> Self {
        self.expect = expect;
        self
    }
    fn content_type(mut self, ct: Option<&'static str>) -> Self {
        self.content_type = ct;
        self
    }
}

async fn snapshot(client: &reqwest::Client, base: &str) -> Value {
    let mut all = serde_json::Map::new();
    for slug in ["lamp", "thermostat"] {
        let v: Value = common::get_json(client, format!("{base}/things/{slug}/properties")).await;
        // The simulated temperature drifts by itself; compare only what clients can write.
        let v = match slug {
            "thermostat" => json!({"target": v["target"]}),
            _ => v,
        };
        all.insert(slug.into(), v);
    }
    let actions: Value = common::get_json(client, format!("{base}/things/lamp/actions")).await;
    all.insert("actions".into(), actions);
    Value::Object(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_changes_nothing() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    use Method as M;
    use StatusCode as S;
    let cases = vec![
        case(
            "malformed JSON",
            M::PUT,
            "/things/lamp/properties/brightness",
            "{nope",
            S::BAD_REQUEST,
        )
        .expect(&[("type", "/problems/malformed-payload")]),
        case(
            "empty body",
            M::PUT,
            "/things/lamp/properties/brightness",
            "",
            S::BAD_REQUEST,
        )
        .expect(&[("type", "/problems/malformed-payload")]),
        case(
            "wrong type",
            M::PUT,
            "/things/lamp/properties/brightness",
            "\"bright\"",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "type"), ("pointer", "")]),
        case(
            "wrong type (boolean)",
            M::PUT,
            "/things/lamp/properties/on",
            "1",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "type")]),
        case(
            "above maximum",
            M::PUT,
            "/things/lamp/properties/brightness",
            "101",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "maximum")]),
        case(
            "below minimum",
            M::PUT,
            "/things/lamp/properties/brightness",
            "-1",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "minimum")]),
        case(
            "fraction for an integer",
            M::PUT,
            "/things/lamp/properties/brightness",
            "5.5",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "type")]),
        case(
            "out of range target",
            M::PUT,
            "/things/thermostat/properties/target",
            "99",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "maximum")]),
        case(
            "missing required field",
            M::POST,
            "/things/lamp/actions/fade",
            r#"{"level": 5}"#,
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "required")]),
        case(
            "out-of-range member",
            M::POST,
            "/things/lamp/actions/fade",
            r#"{"level": 500, "duration": 1}"#,
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "maximum"), ("pointer", "/level")]),
        case(
            "no input at all",
            M::POST,
            "/things/lamp/actions/fade",
            "",
            S::BAD_REQUEST,
        )
        .expect(&[("type", "/problems/schema-violation")]),
        case(
            "input to an action that takes none",
            M::POST,
            "/things/lamp/actions/toggle",
            r#"{"x":1}"#,
            S::BAD_REQUEST,
        )
        .expect(&[("type", "/problems/unexpected-input")]),
        case(
            "write to a readOnly property",
            M::PUT,
            "/things/thermostat/properties/temperature",
            "30",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "readOnly"), ("name", "temperature")]),
        case(
            "writemultiple with one bad value",
            M::PUT,
            "/things/lamp/properties",
            r#"{"on": true, "brightness": 300}"#,
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "maximum"), ("pointer", "/brightness")]),
        case(
            "writemultiple with an unknown name",
            M::PUT,
            "/things/lamp/properties",
            r#"{"on": true, "colour": 1}"#,
            S::NOT_FOUND,
        )
        .expect(&[("name", "colour")]),
        case(
            "writemultiple with a non-object",
            M::PUT,
            "/things/lamp/properties",
            "[1]",
            S::BAD_REQUEST,
        )
        .expect(&[("rule", "type")]),
        case("unknown thing", M::GET, "/things/toaster", "", S::NOT_FOUND)
            .expect(&[("type", "/problems/thing-not-found")]),
        case(
            "unknown property",
            M::GET,
            "/things/lamp/properties/colour",
            "",
            S::NOT_FOUND,
        )
        .expect(&[("kind", "property"), ("name", "colour")]),
        case(
            "unknown property write",
            M::PUT,
            "/things/lamp/properties/colour",
            "1",
            S::NOT_FOUND,
        )
        .expect(&[("kind", "property")]),
        case(
            "unknown action",
            M::POST,
            "/things/lamp/actions/explode",
            "",
            S::NOT_FOUND,
        )
        .expect(&[("kind", "action")]),
        case(
            "unknown event",
            M::GET,
            "/things/lamp/events/exploded",
            "",
            S::NOT_FOUND,
        )
        .expect(&[("kind", "event")]),
        case(
            "unknown action instance",
            M::GET,
            "/things/lamp/actions/fade/0000",
            "",
            S::NOT_FOUND,
        )
        .expect(&[("type", "/problems/action-instance-not-found")]),
        case(
            "query of a synchronous action",
            M::GET,
            "/things/lamp/actions/toggle/0000",
            "",
            S::BAD_REQUEST,
        )
        .expect(&[("type", "/problems/not-queryable")]),
        case("unknown route", M::GET, "/nowhere", "", S::NOT_FOUND)
            .expect(&[("type", "/problems/not-found")]),
        case(
            "unsupported media type",
            M::PUT,
            "/things/lamp/properties/brightness",
            "7",
            S::UNSUPPORTED_MEDIA_TYPE,
        )
        .content_type(Some("text/plain")),
        case(
            "form-encoded body",
            M::POST,
            "/things/lamp/actions/fade",
            "level=5",
            S::UNSUPPORTED_MEDIA_TYPE,
        )
        .content_type(Some("application/x-www-form-urlencoded")),
        case(
            "wrong method on a property",
            M::DELETE,
            "/things/lamp/properties/on",
            "",
            S::METHOD_NOT_ALLOWED,
        ),
        case(
            "wrong method on an action",
            M::GET,
            "/things/lamp/actions/toggle",
            "",
            S::METHOD_NOT_ALLOWED,
        ),
        case(
            "wrong method on a TD",
            M::POST,
            "/things/lamp",
            "{}",
            S::METHOD_NOT_ALLOWED,
        ),
    ];
    let before = snapshot(&client, &base).await;
    for c in cases {
        let mut req = client
            .request(c.method.clone(), format!("{base}{}", c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("Content-Type", ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), c.status, "{}", c.what);
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{}",
            c.what
        );
        if c.status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = res.headers()["allow"].to_str().unwrap().to_owned();
            assert!(
                !allow.contains(c.method.as_str()) && !allow.is_empty(),
                "{}: Allow {allow}",
                c.what
            );
        }
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], c.status.as_u16(), "{}", c.what);
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{}: {problem}",
            c.what
        );
        for (key, want) in c.expect {
            assert_eq!(problem[key], *want, "{}: {problem}", c.what);
        }
        assert_eq!(snapshot(&client, &base).await, before, "{} changed state", c.what);
    }
    // Still serving, and a good write still works.
    let ok = client
        .put(format!("{base}/things/lamp/properties/brightness"))
        .header("Content-Type", "application/json")
        .body("42")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_change_nothing() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let huge = format!("\"{}\"", "x".repeat(2 * 1024 * 1024));
    let res = client
        .put(format!("{base}/things/lamp/properties/brightness"))
        .header("Content-Type", "application/json")
        .body(huge.clone())
        .send()
        .await;
    // The server judges the declared Content-Length before reading the body.
    let res = res.expect("an answer to an oversized body");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/payload-too-large");
    // A chunked body (no Content-Length) is cut off at the limit too.
    let stream = futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let res = client
        .post(format!("{base}/things/lamp/actions/fade"))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert_eq!(
        res.expect("an answer to an oversized chunked body").status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let v: Value = common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    assert_eq!(v, json!(50));
    let actions: Value = common::get_json(&client, format!("{base}/things/lamp/actions")).await;
    assert_eq!(actions, json!({"fade": []}));
    running.stop().await;
}
