//! Ten thousand things (issue #19): `wot serve` on a directory of 10,000 lamp-like thing files
//! (the shape `benches/scale.sh` measures), and a sample of them walked over HTTP, CoAP and the
//! Web Thing Protocol: each serves a valid TD of its own, takes writes over one protocol that the
//! others read back, and runs its action. Not timed: what it proves is that every thing is whole
//! when there are many, not how fast they come up (the benchmark says that).

use std::path::Path;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::common::{self, WotServe};

const THINGS: usize = 10_000;
const WAIT: Duration = Duration::from_secs(10);

fn slug(i: usize) -> String {
    format!("lamp-{i:05}")
}

/// Writes the thing files: every one has its own title, slug and defaults.
fn generate(dir: &Path) {
    std::fs::create_dir_all(dir).expect("things dir");
    for i in 0..THINGS {
        let thing = json!({
            "title": format!("Lamp {i}"),
            "description": "A dimmable lamp",
            "properties": {
                "on": {"type": "boolean", "default": false, "observable": true},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100, "unit": "percent",
                               "default": i % 101, "observable": true},
            },
            "actions": {
                "toggle": {"synchronous": true, "output": {"type": "boolean"},
                           "runtime": {"effect": {"toggle": "on"}}},
            },
            "events": {
                "overheated": {"data": {"type": "integer", "minimum": 0, "maximum": 100}},
            },
        });
        std::fs::write(dir.join(format!("{}.json", slug(i))), thing.to_string()).expect("thing file");
    }
}

/// One confirmable CoAP request over its own socket; the answer's code and payload.
async fn coap(server: &str, method: RequestType, path: &str, payload: &[u8]) -> (String, Vec<u8>) {
    static MESSAGE_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut request = Packet::new();
    request.header.set_type(MessageType::Confirmable);
    request.header.code = MessageClass::Request(method);
    request.header.message_id = MESSAGE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    request.set_token(vec![7, 7]);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        request.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    if !payload.is_empty() {
        request.add_option(CoapOption::ContentFormat, vec![50]);
        request.payload = payload.to_vec();
    }
    socket
        .send_to(&request.to_bytes().expect("encodes"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("a CoAP answer in time")
        .expect("recv");
    let answer = Packet::from_bytes(&buf[..n]).expect("a CoAP message");
    assert_eq!(answer.header.message_id, request.header.message_id);
    (answer.header.code.to_string(), answer.payload)
}

/// Sends one Web Thing Protocol request and returns its response.
async fn wtp<S>(ws: &mut S, thing_id: &str, operation: &str, members: Value) -> Value
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let correlation = uuid::Uuid::new_v4().to_string();
    let mut message = json!({
        "thingID": thing_id,
        "messageID": uuid::Uuid::new_v4().to_string(),
        "messageType": "request",
        "operation": operation,
        "correlationID": correlation,
    });
    for (k, v) in members.as_object().expect("members") {
        message[k] = v.clone();
    }
    ws.send(Message::text(message.to_string())).await.expect("send");
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).expect("JSON");
            if v["correlationID"] == correlation.as_str() {
                assert_eq!(v["messageType"], "response", "{operation}: {v}");
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_ten_thousand_things_works_over_http_coap_and_websocket() {
    let dir = std::env::temp_dir().join(format!("wot-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let things = dir.join("things");
    generate(&things);
    let server = WotServe::start(&things, &["--coap-port", "0", "--no-coaps"], None);
    let coap_server = server
        .coap_url()
        .strip_prefix("coap://")
        .expect("coap URL")
        .to_owned();
    let http = common::client();

    // The directory pages through all of them (the whole listing is 18 MB of TDs).
    let tail: Value = common::get_json(
        &http,
        format!("{}/things?offset={}&limit=5", server.http, THINGS - 2),
    )
    .await;
    assert_eq!(
        tail.as_array().map(Vec::len),
        Some(2),
        "the last page of the directory"
    );

    // The ends, the middle, and a stride through the rest.
    let mut sample: Vec<usize> = vec![0, 1, THINGS / 2, THINGS - 2, THINGS - 1];
    sample.extend((1..=8).map(|k| (k * 1_237) % THINGS));
    for (n, &i) in sample.iter().enumerate() {
        let slug = slug(i);
        let base = format!("{}/things/{slug}", server.http);

        // HTTP: its own TD, valid, with its own title and id; its own default.
        let td: Value = common::get_json(&http, base.clone()).await;
        assert_eq!(td["title"], format!("Lamp {i}"), "{slug}");
        if n < 3 {
            common::assert_valid_td(&td);
        }
        let id = td["id"].as_str().expect("an id").to_owned();
        let brightness: Value = common::get_json(&http, format!("{base}/properties/brightness")).await;
        assert_eq!(brightness, json!(i % 101), "{slug}: its own default");

        // A write over HTTP is read back over CoAP; a bad one is refused and changes nothing.
        let level = (i * 7) % 101;
        let put = http
            .put(format!("{base}/properties/brightness"))
            .json(&json!(level))
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 204, "{slug}");
        let refused = http
            .put(format!("{base}/properties/brightness"))
            .json(&json!(101))
            .send()
            .await
            .expect("PUT");
        assert_eq!(refused.status(), 400, "{slug}");
        let path = format!("/things/{slug}/properties/brightness");
        let (code, payload) = coap(&coap_server, RequestType::Get, &path, b"").await;
        assert_eq!(
            code,
            MessageClass::Response(ResponseType::Content).to_string(),
            "{slug}"
        );
        assert_eq!(payload, level.to_string().as_bytes(), "{slug}");

        // A write over CoAP is read back over the Web Thing Protocol; the action runs there.
        let on_path = format!("/things/{slug}/properties/on");
        let (code, _) = coap(&coap_server, RequestType::Put, &on_path, b"true").await;
        assert_eq!(
            code,
            MessageClass::Response(ResponseType::Changed).to_string(),
            "{slug}"
        );
        let mut request = format!("{}/things/{slug}", server.http.replace("http://", "ws://"))
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "webthingprotocol".parse().expect("header"),
        );
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let read = wtp(&mut ws, &id, "readallproperties", json!({})).await;
        assert_eq!(read["values"], json!({"on": true, "brightness": level}), "{slug}");
        let toggled = wtp(&mut ws, &id, "invokeaction", json!({"name": "toggle"})).await;
        assert_eq!(toggled["output"], json!(false), "{slug}: {toggled}");

        // And HTTP sees what the action did.
        let on: Value = common::get_json(&http, format!("{base}/properties/on")).await;
        assert_eq!(on, json!(false), "{slug}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
