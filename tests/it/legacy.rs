//! The legacy WebThings API against HUBS.md §3, point by point, over real loopback sockets with
//! reqwest and tokio-tungstenite. First the points a hub breaks on: the string `@context`, the
//! absolute `alternate` ws link, PUT `{name: value}` → 200 `{name: value}`, a WebSocket
//! setProperty seen over the W3C API, and unique event timestamps; then the capability types
//! hubs key their UI on and action inputs a strict Ajv compiles.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, thing: &str) -> Socket {
    let url = format!("{}/webthing/{thing}", base.replacen("http://", "ws://", 1));
    let (socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket opens");
    assert!(
        response.headers().get("sec-websocket-protocol").is_none(),
        "no subprotocol offered, none chosen"
    );
    socket
}

/// The next text message whose messageType is `kind` (others are skipped).
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let message = socket.next().await.expect("socket open").expect("frame");
            if let Message::Text(text) = message {
                let v: Value = serde_json::from_str(&text).expect("JSON message");
                if v["messageType"] == kind {
                    return v;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a '{kind}' message in time"))
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// Sets properties over the socket (`setProperty`) and waits for the `propertyStatus` that
/// confirms exactly those values.
async fn set_and_see(socket: &mut Socket, data: Value) {
    send(socket, json!({"messageType": "setProperty", "data": data})).await;
    assert_eq!(next_of(socket, "propertyStatus").await["data"], data);
}

#[tokio::test]
async fn context_is_the_webthings_string_and_alternate_is_an_absolute_ws_link_from_host() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    // Any Accept gets the JSON description (item 1); the Host header builds the ws link (item 2).
    let response = client
        .get(format!("{base}/webthing/lamp"))
        .header("Accept", "text/html")
        .header("Host", "hub-sees-me.example:8123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let d: Value = response.json().await.unwrap();
    assert_eq!(d["@context"], json!("https://webthings.io/schemas"));
    assert!(d["@context"].is_string());
    let links = d["links"].as_array().unwrap();
    let alternate: Vec<&Value> = links.iter().filter(|l| l["rel"] == "alternate").collect();
    assert_eq!(alternate.len(), 1);
    assert_eq!(
        alternate[0]["href"],
        "ws://hub-sees-me.example:8123/webthing/lamp"
    );
    for (rel, href) in [
        ("properties", "/webthing/lamp/properties"),
        ("actions", "/webthing/lamp/actions"),
        ("events", "/webthing/lamp/events"),
    ] {
        assert!(
            links.iter().any(|l| l["rel"] == rel && l["href"] == href),
            "{rel} link in {links:?}"
        );
    }
    // Item 1: the fields a hub reads.
    let td: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    assert_eq!(d["id"], td["id"], "one thing, one id in both representations");
    assert_eq!(d["title"], "Lamp");
    assert!(d["@type"].is_array());
    assert_eq!(d["security"], "nosec_sc");
    assert_eq!(d["securityDefinitions"]["nosec_sc"]["scheme"], "nosec");
    assert!(d.get("forms").is_none());
    // Item 3: every property carries its link and its DataSchema terms.
    let on = &d["properties"]["on"];
    assert_eq!(
        on["links"],
        json!([{"rel": "property", "href": "/webthing/lamp/properties/on"}])
    );
    assert_eq!(on["type"], "boolean");
    let brightness = &d["properties"]["brightness"];
    assert_eq!(
        (brightness["minimum"].clone(), brightness["maximum"].clone()),
        (json!(0), json!(100))
    );
    assert_eq!(brightness["unit"], "percent");
    let temperature: Value = get_json(&client, &format!("{base}/webthing/thermostat")).await.1;
    assert_eq!(temperature["properties"]["temperature"]["readOnly"], true);
    assert_eq!(
        d["actions"]["fade"]["links"][0]["href"],
        "/webthing/lamp/actions/fade"
    );
    assert_eq!(
        d["events"]["faded"]["links"][0]["href"],
        "/webthing/lamp/events/faded"
    );
    running.stop().await;
}

/// JSON Schema draft-07 keywords (what a strict Ajv compiles without plug-ins; `format` needs
/// ajv-formats, which the Gateway does not load).
const JSON_SCHEMA: &[&str] = &[
    "type",
    "const",
    "enum",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "items",
    "additionalItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "maxProperties",
    "minProperties",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "dependencies",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// Every keyword of a schema and its subschemas that is not JSON Schema, as `pointer/keyword`.
fn foreign_keywords(schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (key, value) in map {
        if !JSON_SCHEMA.contains(&key.as_str()) {
            out.push(format!("{at}/{key}"));
        }
        let here = format!("{at}/{key}");
        match (key.as_str(), value) {
            ("properties" | "patternProperties" | "dependencies", Value::Object(subs)) => {
                for (name, sub) in subs {
                    foreign_keywords(sub, &format!("{here}/{name}"), out);
                }
            }
            (_, Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    foreign_keywords(sub, &format!("{here}/{i}"), out);
                }
            }
            (_, sub) => foreign_keywords(sub, &here, out),
        }
    }
}

/// HUBS.md §3 item 1: the capability types hubs key on, from the thing files' `@type` (the W3C
/// TD keeps the files' own terms and validates), and action inputs that a strict Ajv compiles.
#[tokio::test]
async fn capabilities_from_semantic_types_and_action_inputs_in_plain_json_schema() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let d = |thing: &'static str| {
        let (client, base) = (&client, &base);
        async move { get_json(client, &format!("{base}/webthing/{thing}")).await.1 }
    };
    let lamp = d("lamp").await;
    assert_eq!(lamp["@context"], "https://webthings.io/schemas");
    assert_eq!(lamp["@type"], json!(["Light", "OnOffSwitch"]));
    assert_eq!(lamp["properties"]["on"]["@type"], "OnOffProperty");
    assert_eq!(lamp["properties"]["brightness"]["@type"], "BrightnessProperty");
    assert_eq!(
        lamp["properties"]["brightness"]["unit"], "percent",
        "a property keeps its unit"
    );
    assert_eq!(lamp["actions"]["toggle"]["@type"], "ToggleAction");
    assert_eq!(lamp["actions"]["fade"]["@type"], "FadeAction");
    let thermostat = d("thermostat").await;
    assert_eq!(thermostat["@type"], json!(["Thermostat"]));
    assert_eq!(
        thermostat["properties"]["temperature"]["@type"],
        "TemperatureProperty"
    );
    assert_eq!(
        thermostat["properties"]["target"]["@type"],
        "TargetTemperatureProperty"
    );
    assert_eq!(thermostat["events"]["overheating"]["@type"], "OverheatedEvent");
    let host = d("host").await;
    assert_eq!(host["@type"], json!(["MultiLevelSensor"]));
    assert_eq!(host["properties"]["loadAverage"]["@type"], "LevelProperty");
    assert!(host["properties"]["uptime"].get("@type").is_none());
    // No TD term in any action input of any thing on the bridge list.
    let (status, list) = get_json(&client, &format!("{base}/webthing/")).await;
    assert_eq!(status, 200);
    let mut inputs = 0;
    for thing in list.as_array().expect("the bridge list") {
        for (name, action) in thing["actions"].as_object().into_iter().flatten() {
            if let Some(input) = action.get("input") {
                inputs += 1;
                let mut foreign = Vec::new();
                foreign_keywords(
                    input,
                    &format!("{}/actions/{name}/input", thing["href"]),
                    &mut foreign,
                );
                assert!(foreign.is_empty(), "not JSON Schema: {foreign:?}");
            }
        }
    }
    assert!(inputs >= 1, "the lamp's fade has an input");
    // The W3C TD carries the file's terms as written, with its vocabulary, and validates.
    let td: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    common::assert_valid_td(&td);
    assert_eq!(td["@type"], json!(["webthings:Light", "webthings:OnOffSwitch"]));
    assert_eq!(td["@context"][0], "https://www.w3.org/2019/wot/td/v1");
    assert_eq!(td["@context"][1], "https://www.w3.org/2022/wot/td/v1.1");
    assert!(
        td["@context"]
            .as_array()
            .unwrap()
            .contains(&json!({"webthings": "https://webthings.io/schemas#"})),
        "{}",
        td["@context"]
    );
    assert_eq!(
        td["properties"]["brightness"]["@type"],
        "webthings:BrightnessProperty"
    );
    assert_eq!(
        td["actions"]["fade"]["input"]["properties"]["level"]["unit"], "percent",
        "the TD keeps its units"
    );
    // The input the hub pre-checks with is looser, never the one enforced: the core still
    // refuses a level out of range.
    let response = client
        .post(format!("{base}/webthing/lamp/actions"))
        .json(&json!({"fade": {"input": {"level": 101, "duration": 0}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    running.stop().await;
}

/// A thing file's own vocabulary: any prefix bound to the WebThings IRI, full IRIs, and terms of
/// other vocabularies (kept in the TD, left out of the legacy view), with an input that uses
/// `format` and `@type`.
#[tokio::test]
async fn types_resolve_through_the_files_context() {
    let dir = std::env::temp_dir().join(format!("wot-legacy-types-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let context = json!(["https://www.w3.org/2022/wot/td/v1.1",
        {"wt": "https://webthings.io/schemas#", "saref": "https://saref.etsi.org/core/"}]);
    let file = json!({
        "@context": context,
        "@type": ["saref:Switch", "wt:OnOffSwitch"],
        "title": "Plug",
        "properties": {
            "power": {"@type": ["saref:OnOffState", "https://webthings.io/schemas#OnOffProperty"], "type": "boolean"}
        },
        "actions": {
            "schedule": {
                "@type": "saref:Command",
                "input": {"type": "object", "properties": {
                    "at": {"type": "string", "format": "date-time", "@type": "saref:Time"},
                    "level": {"type": "integer", "minimum": 0, "maximum": 100, "unit": "percent"}
                }}
            }
        }
    });
    std::fs::write(dir.join("plug.json"), file.to_string()).unwrap();
    let running = common::serve_dir(&dir, wot_runtime::runtime::Config::loopback()).await;
    let client = common::client();
    let base = running.http_url();
    let (_, d) = get_json(&client, &format!("{base}/webthing/plug")).await;
    assert_eq!(d["@type"], json!(["OnOffSwitch"]));
    assert_eq!(d["properties"]["power"]["@type"], "OnOffProperty");
    assert!(
        d["actions"]["schedule"].get("@type").is_none(),
        "not a WebThings action type"
    );
    assert_eq!(
        d["actions"]["schedule"]["input"],
        json!({"type": "object", "properties": {
            "at": {"type": "string"},
            "level": {"type": "integer", "minimum": 0, "maximum": 100}
        }})
    );
    let td: Value = common::get_json(&client, format!("{base}/things/plug")).await;
    common::assert_valid_td(&td);
    assert_eq!(td["@type"], file["@type"]);
    assert_eq!(
        td["properties"]["power"]["@type"],
        file["properties"]["power"]["@type"]
    );
    assert_eq!(
        td["@context"].as_array().unwrap().last(),
        Some(&context[1]),
        "the file's entries follow the runtime's; its TD URI is not repeated: {}",
        td["@context"]
    );
    assert_eq!(
        td["@context"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| **c == context[0])
            .count(),
        1
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn trailing_slash_and_the_bridge_list() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    // openHAB always appends '/'.
    let (status, slash) = get_json(&client, &format!("{base}/webthing/lamp/")).await;
    assert_eq!(status, 200);
    assert_eq!(slash["title"], "Lamp");
    // Item 13: GET /webthing/ lists every thing, each with an href.
    let (status, list) = get_json(&client, &format!("{base}/webthing/")).await;
    assert_eq!(status, 200);
    let hrefs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["href"].as_str().unwrap())
        .collect();
    assert_eq!(
        hrefs,
        ["/webthing/lamp", "/webthing/thermostat", "/webthing/host"]
    );
    let (status, unknown) = get_json(&client, &format!("{base}/webthing/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(unknown["messageType"], "error");
    running.stop().await;
}

#[tokio::test]
async fn put_name_value_answers_200_name_value_and_w3c_sees_it() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let url = format!("{base}/webthing/lamp/properties/brightness");
    let response = client
        .put(&url)
        .json(&json!({"brightness": 73}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"brightness": 73}));
    // Item 4: {name: value}, never null.
    assert_eq!(get_json(&client, &url).await, (200, json!({"brightness": 73})));
    let all = get_json(&client, &format!("{base}/webthing/lamp/properties"))
        .await
        .1;
    assert_eq!(all, json!({"on": false, "brightness": 73}));
    // The same core: the W3C API reads the bare value.
    let w3c = get_json(&client, &format!("{base}/things/lamp/properties/brightness"))
        .await
        .1;
    assert_eq!(w3c, json!(73));
    // And the other way round.
    let w = client
        .put(format!("{base}/things/lamp/properties/on"))
        .json(&json!(true))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 204);
    assert_eq!(
        get_json(&client, &format!("{base}/webthing/lamp/properties/on"))
            .await
            .1,
        json!({"on": true})
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_writes_are_refused_precisely_and_change_nothing() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let url = format!("{base}/webthing/lamp/properties/brightness");
    // Item 5: a missing key is 400 with Mozilla's error body.
    let r = client.put(&url).json(&json!({"on": true})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["messageType"], "error");
    assert_eq!(body["data"]["status"], "400 Bad Request");
    assert!(body["data"]["message"].as_str().unwrap().contains("brightness"));
    // Unknown property: 404.
    let r = client
        .put(format!("{base}/webthing/lamp/properties/nope"))
        .json(&json!({"nope": 1}))
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 404);
    // Out of range, wrong type, not JSON, read-only: 400.
    for body in [json!({"brightness": 101}), json!({"brightness": "x"}), json!(5)] {
        let r = client.put(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let r = client.put(&url).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .put(format!("{base}/webthing/thermostat/properties/temperature"))
        .json(&json!({"temperature": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(&url)
        .json(&json!({"brightness": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        get_json(&client, &url).await.1,
        json!({"brightness": 50}),
        "nothing changed"
    );
    running.stop().await;
}

#[tokio::test]
async fn actions_queue_created_pending_completed_and_delete() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    // Item 6: POST {name: {input}} → 201 with status "created" and an href.
    let r = client
        .post(format!("{base}/webthing/lamp/actions"))
        .json(&json!({"fade": {"input": {"level": 80, "duration": 300}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let fade = &created["fade"];
    assert_eq!(fade["status"], "created");
    assert_eq!(fade["input"], json!({"level": 80, "duration": 300}));
    assert!(fade["timeRequested"].is_string());
    let href = fade["href"].as_str().unwrap().to_owned();
    assert!(href.starts_with("/webthing/lamp/actions/fade/"), "{href}");
    // It runs to completion; the same href keeps answering.
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let (status, v) = get_json(&client, &format!("{base}{href}")).await;
            assert_eq!(status, 200);
            if v["fade"]["status"] == "completed" {
                return v;
            }
            assert_eq!(v["fade"]["status"], "pending");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the fade completes");
    assert!(done["fade"]["timeCompleted"].is_string());
    assert_eq!(done["fade"]["href"], href.as_str());
    // The effect is visible through the W3C API.
    assert_eq!(
        get_json(&client, &format!("{base}/things/lamp/properties/brightness"))
            .await
            .1,
        json!(80)
    );
    // A synchronous core action is queued as well: POST on its own URL.
    let r = client
        .post(format!("{base}/webthing/lamp/actions/toggle"))
        .json(&json!({"toggle": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let toggle: Value = r.json().await.unwrap();
    let toggle_href = toggle["toggle"]["href"].as_str().unwrap().to_owned();
    // GET …/actions lists both, oldest first.
    let (_, list) = get_json(&client, &format!("{base}/webthing/lamp/actions")).await;
    let names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_object().unwrap().keys().next().unwrap().clone())
        .collect();
    assert_eq!(names, ["fade", "toggle"]);
    let (_, only) = get_json(&client, &format!("{base}/webthing/lamp/actions/toggle")).await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    // DELETE → 204, and it is gone.
    let r = client
        .delete(format!("{base}{toggle_href}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = get_json(&client, &format!("{base}{toggle_href}")).await;
    assert_eq!(status, 404);
    // A long fade cancelled by DELETE stops in the core too.
    let r = client
        .post(format!("{base}/webthing/lamp/actions/fade"))
        .json(&json!({"fade": {"input": {"level": 0, "duration": 600000}}}))
        .send()
        .await
        .unwrap();
    let long: Value = r.json().await.unwrap();
    let long_href = long["fade"]["href"].as_str().unwrap().to_owned();
    let core_id = long_href.rsplit('/').next().unwrap();
    assert_eq!(
        client
            .delete(format!("{base}{long_href}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (_, w3c) = get_json(&client, &format!("{base}/things/lamp/actions/fade/{core_id}")).await;
    assert_eq!(w3c["status"], "failed", "cancelled in the core: {w3c}");
    running.stop().await;
}

#[tokio::test]
async fn bad_action_requests_are_refused_before_queueing() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let url = format!("{base}/webthing/lamp/actions");
    for (body, status) in [
        (json!({"fade": {"input": {"level": 500, "duration": 1}}}), 400),
        (json!({"fade": {"input": {"level": 5}}}), 400),
        (json!({"toggle": {"input": 3}}), 400),
        (json!({"fly": {}}), 404),
        (json!({}), 400),
        (json!({"toggle": {}, "fade": {}}), 400),
        (json!({"toggle": 7}), 400),
    ] {
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["messageType"], "error", "{body}");
    }
    let r = client
        .post(format!("{url}/toggle"))
        .json(&json!({"fade": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "URL and body disagree");
    assert_eq!(get_json(&client, &url).await.1, json!([]), "nothing was queued");
    running.stop().await;
}

#[tokio::test]
async fn events_are_logged_from_the_start_without_any_listener() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let lamp = running.servient.thing("lamp").unwrap();
    // No hub has asked for anything yet: the log still has every event, at once, in order.
    for level in [3, 1, 2] {
        lamp.emit_event("faded", Some(json!(level))).unwrap();
    }
    let (_, log) = get_json(&client, &format!("{base}/webthing/lamp/events")).await;
    let levels: Vec<Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["faded"]["data"].clone())
        .collect();
    assert_eq!(levels, [json!(3), json!(1), json!(2)]);
    // Bounded: the oldest go first.
    for level in 0..100 {
        lamp.emit_event("faded", Some(json!(level))).unwrap();
    }
    let (_, log) = get_json(&client, &format!("{base}/webthing/lamp/events")).await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 64);
    assert_eq!(log[0]["faded"]["data"], json!(36));
    running.stop().await;
}

#[tokio::test]
async fn event_timestamps_are_unique_even_in_one_millisecond() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let lamp = running.servient.thing("lamp").unwrap();
    let mut socket = connect(&base, "lamp").await;
    send(
        &mut socket,
        json!({"messageType": "addEventSubscription", "data": {"faded": {}}}),
    )
    .await;
    // The subscription is in place once a later message has been handled: a setProperty round trip.
    send(
        &mut socket,
        json!({"messageType": "setProperty", "data": {"on": true}}),
    )
    .await;
    next_of(&mut socket, "propertyStatus").await;
    for level in 0..40 {
        lamp.emit_event("faded", Some(json!(level))).unwrap();
    }
    let mut seen_ws = Vec::new();
    for _ in 0..40 {
        let m = next_of(&mut socket, "event").await;
        seen_ws.push((
            m["data"]["faded"]["data"].clone(),
            m["data"]["faded"]["timestamp"].clone(),
        ));
    }
    // Item 7: the log the Gateway polls has the same occurrences with the same timestamps.
    let log = tokio::time::timeout(WAIT, async {
        loop {
            let (_, log) = get_json(&client, &format!("{base}/webthing/lamp/events")).await;
            if log.as_array().unwrap().len() == 40 {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every event logged");
    let logged: Vec<(Value, Value)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["faded"]["data"].clone(), e["faded"]["timestamp"].clone()))
        .collect();
    assert_eq!(logged, seen_ws);
    let stamps: HashSet<String> = logged
        .iter()
        .map(|(_, t)| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stamps.len(), 40, "every name-timestamp pair is unique");
    let (_, filtered) = get_json(&client, &format!("{base}/webthing/lamp/events/faded")).await;
    assert_eq!(filtered.as_array().unwrap().len(), 40);
    let (status, _) = get_json(&client, &format!("{base}/webthing/lamp/events/nope")).await;
    assert_eq!(status, 404);
    common::hang_up_then_stop(running, [socket]).await;
}

#[tokio::test]
async fn websocket_set_property_is_seen_over_the_w3c_api_and_back() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let mut socket = connect(&base, "lamp").await;
    // Item 9: the Gateway writes over the socket.
    set_and_see(&mut socket, json!({"brightness": 12})).await;
    assert_eq!(
        get_json(&client, &format!("{base}/things/lamp/properties/brightness"))
            .await
            .1,
        json!(12)
    );
    // A W3C write reaches the hub's socket as propertyStatus (item 10).
    client
        .put(format!("{base}/things/lamp/properties/on"))
        .json(&json!(true))
        .send()
        .await
        .unwrap();
    assert_eq!(
        next_of(&mut socket, "propertyStatus").await["data"],
        json!({"on": true})
    );
    // A bad write is an error message and changes nothing.
    send(
        &mut socket,
        json!({"messageType": "setProperty", "data": {"brightness": 1000}}),
    )
    .await;
    let error = next_of(&mut socket, "error").await;
    assert_eq!(error["data"]["status"], "400 Bad Request");
    send(&mut socket, json!({"messageType": "teleport", "data": {}})).await;
    assert_eq!(
        next_of(&mut socket, "error").await["data"]["status"],
        "400 Bad Request"
    );
    socket.send(Message::text("not json")).await.unwrap();
    next_of(&mut socket, "error").await;
    assert_eq!(
        get_json(&client, &format!("{base}/things/lamp/properties/brightness"))
            .await
            .1,
        json!(12)
    );
    // Item 11: pings are answered.
    socket.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            if let Message::Pong(p) = socket.next().await.unwrap().unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"hi");
    common::hang_up_then_stop(running, [socket]).await;
}

#[tokio::test]
async fn websocket_request_action_reports_action_status_with_the_same_href() {
    let running = common::start().await;
    let base = running.http_url();
    let client = common::client();
    let mut socket = connect(&base, "lamp").await;
    send(
        &mut socket,
        json!({"messageType": "requestAction", "data": {"fade": {"input": {"level": 30, "duration": 200}}}}),
    )
    .await;
    let first = next_of(&mut socket, "actionStatus").await;
    assert_eq!(first["data"]["fade"]["status"], "created");
    let href = first["data"]["fade"]["href"].as_str().unwrap().to_owned();
    let last = tokio::time::timeout(WAIT, async {
        loop {
            let m = next_of(&mut socket, "actionStatus").await;
            assert_eq!(
                m["data"]["fade"]["href"],
                href.as_str(),
                "one href for one instance"
            );
            if m["data"]["fade"]["status"] == "completed" {
                return m;
            }
        }
    })
    .await
    .expect("completed");
    assert!(last["data"]["fade"]["timeCompleted"].is_string());
    // The same instance over HTTP.
    let (_, polled) = get_json(&client, &format!("{base}{href}")).await;
    assert_eq!(polled["fade"]["href"], href.as_str());
    // Events reach subscribers only.
    let mut quiet = connect(&base, "lamp").await;
    send(
        &mut socket,
        json!({"messageType": "addEventSubscription", "data": {"faded": {}}}),
    )
    .await;
    send(
        &mut socket,
        json!({"messageType": "requestAction", "data": {"fade": {"input": {"level": 31, "duration": 0}}}}),
    )
    .await;
    let event = next_of(&mut socket, "event").await;
    assert_eq!(event["data"]["faded"]["data"], 31);
    // The quiet socket saw the property change but no event before it.
    let quiet_msgs = tokio::time::timeout(WAIT, async {
        let mut kinds = Vec::new();
        loop {
            if let Message::Text(t) = quiet.next().await.unwrap().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                kinds.push(v["messageType"].as_str().unwrap().to_owned());
                if v["messageType"] == "actionStatus" && v["data"]["fade"]["status"] == "completed" {
                    return kinds;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(!quiet_msgs.iter().any(|k| k == "event"), "{quiet_msgs:?}");
    send(
        &mut socket,
        json!({"messageType": "addEventSubscription", "data": {"nope": {}}}),
    )
    .await;
    assert_eq!(
        next_of(&mut socket, "error").await["data"]["status"],
        "404 Not Found"
    );
    common::hang_up_then_stop(running, [socket, quiet]).await;
}

#[tokio::test]
async fn subprotocols_are_echoed_only_when_offered_and_cors_is_open() {
    let running = common::start().await;
    let base = running.http_url();
    let mut request = format!("{}/webthing/lamp", base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "webthing".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("opens");
    assert_eq!(response.headers()["sec-websocket-protocol"], "webthing");
    // Not offered, none is chosen (`connect` offers none and checks that).
    let unoffered = connect(&base, "lamp").await;
    // Item 14.
    let client = common::client();
    let r = client
        .get(format!("{base}/webthing/lamp/properties"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/webthing/lamp/properties/on"),
        )
        .header("Origin", "http://ui.example")
        .header("Access-Control-Request-Method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let methods = r.headers()["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "PUT", "POST", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    common::hang_up_then_stop(running, [socket, unoffered]).await;
}

#[tokio::test]
async fn websocket_keepalive_pings_and_closes_silent_hubs() {
    let mut config = wot_runtime::runtime::Config::loopback();
    config.ws.ping_interval = Duration::from_millis(200);
    let running = common::start_with(config).await;
    let base = running.http_url();
    // A hub that answers pings (tungstenite does, while it reads) stays connected through many
    // timeouts and keeps getting updates.
    let mut hub = connect(&base, "lamp").await;
    let mut pinged = false;
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(message) = tokio::time::timeout_at(quiet_until, hub.next()).await {
        match message.expect("socket open").expect("frame") {
            Message::Ping(_) => pinged = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pinged, "the server pings a quiet hub");
    set_and_see(&mut hub, json!({"brightness": 33})).await;
    // A hub that vanished without a FIN answers nothing: it gets pings, then a 1008 close.
    // Meanwhile the live hub goes on reading, and so answering its pings.
    let silent = tokio::spawn(common::until_server_closes(
        common::silent_websocket(running.http_addr, "/webthing/lamp", "", None).await,
    ));
    while !silent.is_finished() {
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(20), hub.next()).await {
            let message = message.expect("socket open").expect("frame");
            assert!(matches!(message, Message::Ping(_)), "{message:?}");
        }
    }
    let (head, frames) = silent.await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"));
    common::assert_pinged_then_closed_as_dead(&frames);
    // The live hub is still served.
    set_and_see(&mut hub, json!({"brightness": 34})).await;
    common::hang_up_then_stop(running, [hub]).await;
}

#[tokio::test]
async fn a_hub_that_stops_reading_under_a_flood_of_updates_is_dropped_and_holds_nothing_back() {
    // A thing with a free-text property: each write sends every socket a 32 KiB propertyStatus,
    // so the stuck socket's kernel buffers (some MiB on loopback) fill after a hundred writes.
    let description = json!({
        "title": "Notes",
        "properties": {"text": {"type": "string", "observable": true}}
    });
    let definition =
        wot_runtime::td::definition::parse(std::path::Path::new("notes.json"), &description.to_string())
            .unwrap_or_else(|p| panic!("{p:?}"));
    let notes =
        wot_runtime::things::expose(definition, &mut wot_runtime::things::IdStore::new(None)).unwrap();
    // Two sockets per client: a third is accepted only once the stuck one has given its permit
    // back.
    let mut config = wot_runtime::runtime::Config::loopback();
    config.ws.ping_interval = Duration::from_secs(1);
    config.subscribers.per_client = 2;
    let running = wot_runtime::runtime::Running::start(config, vec![notes])
        .await
        .unwrap();
    let base = running.http_url();
    let client = common::client();
    let stuck = common::silent_websocket(running.http_addr, "/webthing/notes", "", Some(4096)).await;
    let mut hub = connect(&base, "notes").await;
    // Each write is read back by the live hub, which answers its pings meanwhile; the writes
    // and the hub never wait on the stuck socket.
    for i in 0..300u32 {
        let text = format!("{i:05}").repeat(32 * 1024 / 5);
        let response = client
            .put(format!("{base}/things/notes/properties/text"))
            .json(&json!(text))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(
            next_of(&mut hub, "propertyStatus").await["data"]["text"],
            json!(text)
        );
    }
    // The stuck socket, which answers no ping, is closed by keepalive and gives its permit back
    // without anyone reading it; nothing else would end it, as TCP keeps a peer that advertises
    // a zero window.
    let url = format!("{}/webthing/notes", base.replacen("http://", "ws://", 1));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let third = tokio::select! {
            third = tokio_tungstenite::connect_async(url.as_str()) => third,
            // The live hub goes on answering pings while it waits.
            message = hub.next() => {
                let message = message.expect("socket open").expect("frame");
                assert!(matches!(message, Message::Ping(_)), "{message:?}");
                continue;
            }
        };
        match third {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the stuck socket kept its permit: {e}"),
        }
    }
    let (head, frames) = common::until_server_closes(stuck).await;
    assert!(head.starts_with(b"HTTP/1.1 101"));
    assert!(
        frames.iter().any(|(op, _)| *op == 0x1),
        "it had updates before it stopped"
    );
    // The live hub is still served.
    set_and_see(&mut hub, json!({"text": "still here"})).await;
    common::hang_up_then_stop(running, [hub]).await;
}

/// A hub that queues more actions than may run at once is told to come back (503 with
/// Retry-After, as on the W3C API), in Mozilla's error body with the right reason phrase.
#[tokio::test]
async fn too_many_running_actions_answer_503_with_retry_after() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let long_fade = json!({"fade": {"input": {"level": 1, "duration": 600_000}}});
    let mut refused = None;
    for _ in 0..200 {
        let r = client
            .post(format!("{base}/webthing/lamp/actions"))
            .json(&long_fade)
            .send()
            .await
            .unwrap();
        if r.status() != 201 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the running actions are limited");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["messageType"], "error", "{body}");
    assert_eq!(body["data"]["status"], "503 Service Unavailable", "{body}");
    running.stop().await;
}

#[tokio::test]
async fn every_url_takes_its_methods_and_refuses_the_others_with_its_allow() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let created: Value = client
        .post(format!("{base}/webthing/lamp/actions"))
        .json(&json!({"fade": {"input": {"level": 10, "duration": 60000}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status_path = created["fade"]["href"].as_str().unwrap().to_owned();
    // (path, the methods it takes); each is sent every method it does not take, and GET.
    let table = [
        ("/webthing", "GET"),
        ("/webthing/", "GET"),
        ("/webthing/lamp", "GET"),
        ("/webthing/lamp/", "GET"),
        ("/webthing/lamp/properties", "GET"),
        ("/webthing/lamp/properties/brightness", "GET, PUT"),
        ("/webthing/lamp/actions", "GET, POST"),
        ("/webthing/lamp/actions/fade", "GET, POST"),
        (status_path.as_str(), "GET, DELETE"),
        ("/webthing/lamp/events", "GET"),
        ("/webthing/lamp/events/faded", "GET"),
    ];
    for (path, allow) in table {
        for method in ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"] {
            let taken = allow.split(", ").any(|m| m == method);
            if taken && method != "GET" {
                continue;
            }
            let res = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{base}{path}"),
                )
                .send()
                .await
                .unwrap();
            if taken {
                assert_eq!(res.status(), 200, "{method} {path}");
                continue;
            }
            assert_eq!(res.status(), 405, "{method} {path}");
            assert_eq!(res.headers()["allow"], allow, "{method} {path}");
            if method != "HEAD" {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["messageType"], "error", "{method} {path}");
                assert_eq!(
                    body["data"]["status"], "405 Method Not Allowed",
                    "{method} {path}"
                );
            }
        }
    }
    let cancelled = client
        .delete(format!("{base}{status_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    // Paths that name nothing are 404 with the error body; parameters are percent-decoded.
    for path in [
        "/webthing//",
        "/webthing/lamp//",
        "/webthing/lamp/properties/",
        "/webthing/lamp/properties/on/extra",
        "/webthing/lamp/props",
        "/webthing/lamp/actions/fade/1/extra",
        "/webthing/%FF",
    ] {
        let res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["messageType"], "error", "{path}");
    }
    assert_eq!(
        get_json(
            &client,
            &format!("{base}/webthing/l%61mp/properties/%62rightness")
        )
        .await,
        (200, json!({"brightness": 50}))
    );
    running.stop().await;
}
