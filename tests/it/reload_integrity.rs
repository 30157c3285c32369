//! Integrity under change, over the wire: what a reload of a thing file or its removal does to
//! every kind of open connection (a Web Thing Protocol WebSocket, the legacy `/webthing/`
//! socket, an SSE stream, a CoAP observation), and SSE `Last-Event-ID` resumption under
//! concurrent writers. The behaviour checked here is the one spec-notes/reload.md documents.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wot_runtime::runtime::{Config, Running};

const WAIT: Duration = Duration::from_secs(10);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn bundled(name: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("things").join(name))
        .expect("bundled thing");
    serde_json::from_str(&text).expect("bundled JSON")
}

/// A fresh things directory holding these files.
fn things_dir(tag: &str, files: &[(&str, &Value)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, content) in files {
        std::fs::write(dir.join(name), content.to_string()).expect("write thing file");
    }
    dir
}

/// A runtime serving `dir` with hot reload (and CoAP when asked), on free loopback ports.
async fn serve(dir: &Path, coap: bool) -> Running {
    let config = Config {
        watch_period: Duration::from_millis(100),
        no_coap: !coap,
        coap_port: 0,
        ..Config::loopback()
    };
    common::serve_dir(dir, config).await
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::eventually(what, WAIT, check).await;
}

/// Rewrites a thing file and waits until the served TD shows `description`.
async fn edit_and_wait(running: &Running, dir: &Path, slug: &str, thing: &Value) {
    std::fs::write(dir.join(format!("{slug}.json")), thing.to_string()).expect("edit thing file");
    let client = common::client();
    let url = format!("{}/things/{slug}", running.http_url());
    let want = thing["description"].clone();
    eventually("the reload", || {
        let (client, url, want) = (client.clone(), url.clone(), want.clone());
        async move {
            let td: Value = common::get_json(&client, url).await;
            td["description"] == want
        }
    })
    .await;
}

async fn put(running: &Running, path: &str, value: Value) -> u16 {
    common::client()
        .put(format!("{}{path}", running.http_url()))
        .json(&value)
        .send()
        .await
        .expect("PUT answered")
        .status()
        .as_u16()
}

async fn get(running: &Running, path: &str) -> Value {
    common::get_json(&common::client(), format!("{}{path}", running.http_url())).await
}

async fn open_sse(running: &Running, path: &str, last_event_id: Option<&str>) -> common::SseReader {
    let mut request = common::client()
        .get(format!("{}{path}", running.http_url()))
        .header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut reader = common::SseReader::new(request.send().await.expect("SSE answered"));
    reader.wait_for_text(": subscribed", WAIT).await;
    reader
}

/// Reads an SSE response until the server ends it; true when it ended within the wait.
async fn sse_ends(reader: common::SseReader) -> bool {
    let mut response = reader.into_response();
    tokio::time::timeout(WAIT, async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if chunk.starts_with(b":") => continue,
                Ok(Some(chunk)) => panic!("unexpected frame before the end: {chunk:?}"),
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await
    .is_ok()
}

async fn websocket(running: &Running, path: &str, subprotocol: Option<&str>) -> Socket {
    let mut request = format!("ws://{}{path}", running.http_addr)
        .into_client_request()
        .expect("request");
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("handshake")
        .0
}

/// The next JSON message of a socket (pings and pongs skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("readable");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// A Web Thing Protocol request; returns its response (notifications before it are skipped).
async fn wtp(socket: &mut Socket, thing_id: &str, operation: &str, members: Value) -> Value {
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
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
    loop {
        let v = next_json(socket).await;
        if v["correlationID"] == correlation && v["messageType"] == "response" {
            return v;
        }
    }
}

/// The next Web Thing Protocol notification about `name`.
async fn wtp_notification(socket: &mut Socket, name: &str) -> Value {
    loop {
        let v = next_json(socket).await;
        if v["messageType"] == "notification" && v["name"] == name {
            return v;
        }
    }
}

/// Reads until the server's close frame; returns its code and reason.
async fn close_of(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("a close without a code"),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => panic!("the socket ended without a close frame"),
        }
    }
}

/// A CoAP observer of one resource, on coap-lite and a tokio UDP socket.
struct Observer {
    socket: UdpSocket,
    server: SocketAddr,
    token: Vec<u8>,
}

impl Observer {
    async fn register(running: &Running, path: &str) -> (Observer, Value) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
        let observer = Observer {
            socket,
            server: running.coap_addr.expect("CoAP runs"),
            token: uuid::Uuid::new_v4().as_bytes()[..4].to_vec(),
        };
        let mut p = observer.request(RequestType::Get, path);
        p.add_option(CoapOption::Observe, vec![]);
        observer.send(&p).await;
        let first = observer.next().await;
        assert_eq!(first.header.code.to_string(), "2.05");
        assert!(
            first.get_first_option(CoapOption::Observe).is_some(),
            "registered"
        );
        let body = serde_json::from_slice(&first.payload).expect("JSON");
        (observer, body)
    }

    fn request(&self, method: RequestType, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = rand_mid();
        p.set_token(self.token.clone());
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        p
    }

    async fn send(&self, p: &Packet) {
        let bytes = p.to_bytes().expect("encodable");
        self.socket.send_to(&bytes, self.server).await.expect("send");
    }

    /// The next message for this observer's token; CON messages are acknowledged.
    async fn next(&self) -> Packet {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
                .await
                .expect("a CoAP message in time")
                .expect("readable");
            let p = Packet::from_bytes(&buf[..n]).expect("valid CoAP");
            if p.header.get_type() == MessageType::Confirmable {
                let id = p.header.message_id.to_be_bytes();
                let ack = [0x60, 0, id[0], id[1]];
                self.socket.send_to(&ack, self.server).await.expect("ack");
            }
            if p.get_token() == self.token.as_slice() {
                return p;
            }
        }
    }

    /// A plain GET of `path` from a socket of its own: the value CoAP serves now.
    async fn read(running: &Running, path: &str) -> Value {
        let reader = Observer {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("client socket"),
            server: running.coap_addr.expect("CoAP runs"),
            token: vec![7, 7],
        };
        reader.send(&reader.request(RequestType::Get, path)).await;
        let answer = reader.next().await;
        assert_eq!(answer.header.code.to_string(), "2.05");
        serde_json::from_slice(&answer.payload).expect("JSON")
    }
}

fn rand_mid() -> u16 {
    let bytes = uuid::Uuid::new_v4();
    u16::from_be_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]])
}

fn observe_option(p: &Packet) -> Option<u32> {
    p.get_first_option(CoapOption::Observe)
        .map(|v| v.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_every_connection_current_or_ends_it_as_documented() {
    let lamp = bundled("lamp.json");
    let dir = things_dir(
        "reload-integrity",
        &[
            ("lamp.json", &lamp),
            ("thermostat.json", &bundled("thermostat.json")),
        ],
    );
    let running = serve(&dir, true).await;
    let thing_id = running.servient.thing("lamp").expect("lamp").id.clone();
    let brightness = "/things/lamp/properties/brightness";

    let mut w3c = websocket(&running, "/things/lamp", Some("webthingprotocol")).await;
    let r = wtp(
        &mut w3c,
        &thing_id,
        "observeproperty",
        json!({"name": "brightness"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let mut first_hub = websocket(&running, "/webthing/lamp", None).await;
    let mut sse = open_sse(&running, brightness, None).await;
    let (coap, first) = Observer::register(&running, brightness).await;
    assert_eq!(first, json!(50));

    // 1. Only descriptive text changes: every subscription goes on with the new thing.
    let mut edited = lamp.clone();
    edited["description"] = json!("The same lamp, described anew");
    edited["properties"]["brightness"]["description"] = json!("How bright, in percent");
    edit_and_wait(&running, &dir, "lamp", &edited).await;
    assert_eq!(put(&running, brightness, json!(22)).await, 204);
    assert_eq!(wtp_notification(&mut w3c, "brightness").await["value"], 22);
    let frame = sse.next(WAIT).await;
    assert_eq!(
        (frame.event.as_deref(), frame.data.as_str()),
        (Some("brightness"), "22")
    );
    let notification = coap.next().await;
    assert_eq!(notification.header.code.to_string(), "2.05");
    assert!(observe_option(&notification).is_some(), "still observing");
    assert_eq!(
        serde_json::from_slice::<Value>(&notification.payload).expect("JSON"),
        json!(22)
    );
    // The legacy socket's adapter state belongs to the old thing: it is closed for the hub to
    // reconnect (1012, Service Restart).
    let (code, reason) = close_of(&mut first_hub).await;
    assert_eq!(u16::from(code), 1012, "{reason}");

    // A write on the socket opened before the reload is acknowledged and served everywhere.
    let r = wtp(
        &mut w3c,
        &thing_id,
        "writeproperty",
        json!({"name": "brightness", "value": 33}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(get(&running, brightness).await, json!(33));
    assert_eq!(Observer::read(&running, brightness).await, json!(33));
    assert_eq!(wtp_notification(&mut w3c, "brightness").await["value"], 33);
    assert_eq!(sse.next(WAIT).await.data, "33");
    assert_eq!(
        serde_json::from_slice::<Value>(&coap.next().await.payload).expect("JSON"),
        json!(33)
    );

    // A reconnected hub is served by the new thing.
    let mut hub = websocket(&running, "/webthing/lamp", None).await;
    hub.send(Message::text(
        json!({"messageType": "setProperty", "data": {"brightness": 44}}).to_string(),
    ))
    .await
    .expect("send");
    loop {
        let v = next_json(&mut hub).await;
        if v["messageType"] == "propertyStatus" && v["data"]["brightness"] == 44 {
            break;
        }
    }
    assert_eq!(get(&running, brightness).await, json!(44));
    assert_eq!(sse.next(WAIT).await.data, "44");
    assert_eq!(wtp_notification(&mut w3c, "brightness").await["value"], 44);
    assert_eq!(
        serde_json::from_slice::<Value>(&coap.next().await.payload).expect("JSON"),
        json!(44)
    );

    // 2. The observed property's schema changes: each subscription ends in its protocol's way.
    let mut narrowed = edited.clone();
    narrowed["description"] = json!("A lamp that never goes above 80");
    narrowed["properties"]["brightness"]["maximum"] = json!(80);
    edit_and_wait(&running, &dir, "lamp", &narrowed).await;
    let (code, reason) = close_of(&mut w3c).await;
    assert_eq!(u16::from(code), 1012, "{reason}");
    assert!(reason.contains("reloaded"), "{reason}");
    assert!(sse_ends(sse).await, "the SSE stream ends");
    let last = coap.next().await;
    assert_eq!(
        last.header.code.to_string(),
        "5.03",
        "{:?}",
        String::from_utf8_lossy(&last.payload)
    );
    assert_eq!(
        observe_option(&last),
        None,
        "a final notification carries no Observe"
    );
    let (code, _) = close_of(&mut hub).await;
    assert_eq!(u16::from(code), 1012);
    // The value still fits the new schema, so it was kept.
    assert_eq!(get(&running, brightness).await, json!(44));
    common::hang_up_then_stop(running, [w3c, first_hub, hub]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_thing_ends_each_of_its_connections() {
    let dir = things_dir(
        "remove-integrity",
        &[
            ("lamp.json", &bundled("lamp.json")),
            ("thermostat.json", &bundled("thermostat.json")),
        ],
    );
    let running = serve(&dir, true).await;
    let thing_id = running.servient.thing("lamp").expect("lamp").id.clone();
    let mut observing = websocket(&running, "/things/lamp", Some("webthingprotocol")).await;
    let r = wtp(
        &mut observing,
        &thing_id,
        "observeproperty",
        json!({"name": "on"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    // A socket that subscribed to nothing is ended as well.
    let mut idle = websocket(&running, "/things/lamp", Some("webthingprotocol")).await;
    let r = wtp(&mut idle, &thing_id, "readproperty", json!({"name": "on"})).await;
    assert_eq!(r["value"], false);
    let mut hub = websocket(&running, "/webthing/lamp", None).await;
    let sse = open_sse(&running, "/things/lamp/events", None).await;
    let (coap, _) = Observer::register(&running, "/things/lamp/properties/on").await;
    let mut other = open_sse(&running, "/things/thermostat/properties/target", None).await;

    std::fs::remove_file(dir.join("lamp.json")).expect("remove lamp");
    for socket in [&mut observing, &mut idle, &mut hub] {
        let (code, reason) = close_of(socket).await;
        assert_eq!(u16::from(code), 1001, "{reason}");
    }
    assert!(sse_ends(sse).await, "the SSE stream ends");
    let last = coap.next().await;
    assert_eq!(last.header.code.to_string(), "4.04");
    assert_eq!(observe_option(&last), None);

    // The other thing's stream is untouched.
    assert_eq!(
        put(&running, "/things/thermostat/properties/target", json!(23)).await,
        204
    );
    assert_eq!(other.next(WAIT).await.data, "23");
    common::hang_up_then_stop(running, [observing, idle, hub]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thing with one writable number and nothing else that changes it: every notification of
/// its hub is one acknowledged write.
fn counter_thing() -> Value {
    json!({
        "title": "Counter",
        "description": "One writable number",
        "properties": {"n": {"type": "integer", "observable": true}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_gap_or_duplicate_under_concurrent_writers() {
    const WRITERS: i64 = 3;
    const WRITES: i64 = 120;
    let counter = counter_thing();
    let dir = things_dir("last-event-id", &[("counter.json", &counter)]);
    let running = serve(&dir, false).await;
    let path = "/things/counter/properties/n";
    // Never reconnects: what every subscriber should see.
    let mut reference = open_sse(&running, path, None).await;
    let mut reconnecting = open_sse(&running, path, None).await;

    // The writers stay at most this far ahead of the reconnecting reader, so that where it left
    // off is always among the notifications the server keeps for replay (64).
    let ahead = std::sync::Arc::new(tokio::sync::Semaphore::new(24));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = format!("{}{path}", running.http_url());
            let ahead = ahead.clone();
            tokio::spawn(async move {
                let client = common::client();
                for i in 0..WRITES {
                    ahead.acquire().await.expect("open").forget();
                    let status = client
                        .put(&url)
                        .json(&json!(w * 1000 + i))
                        .send()
                        .await
                        .expect("PUT")
                        .status();
                    assert_eq!(status.as_u16(), 204);
                }
            })
        })
        .collect();
    let total = (WRITERS * WRITES) as usize;
    let mut expected = Vec::with_capacity(total);
    let mut seen = Vec::with_capacity(total);
    let mut reconnects = 0;
    while seen.len() < total {
        let frame = reconnecting.next(WAIT).await;
        ahead.add_permits(1);
        seen.push((frame.id.clone().expect("an id"), frame.data));
        // Every 17 frames the client goes away and comes back where it left off.
        if seen.len() % 17 == 0 {
            drop(reconnecting);
            reconnecting = open_sse(&running, path, frame.id.as_deref()).await;
            reconnects += 1;
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    while expected.len() < total {
        let frame = reference.next(WAIT).await;
        expected.push((frame.id.expect("an id"), frame.data));
    }
    assert!(reconnects >= 20, "{reconnects}");
    assert_eq!(
        seen, expected,
        "the resumed stream differs from the uninterrupted one"
    );
    // Ids carry the thing's sequence numbers: increasing, one per write.
    let seqs: Vec<u64> = seen
        .iter()
        .map(|(id, _)| {
            id.rsplit_once('/')
                .expect("time/seq")
                .1
                .parse()
                .expect("a number")
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // Nothing was published that the streams did not carry.
    assert_eq!(
        running
            .servient
            .thing("counter")
            .expect("counter")
            .last_notification_seq(),
        *seqs.last().expect("frames")
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_reconnecting_across_a_reload_misses_nothing() {
    let counter = counter_thing();
    let dir = things_dir("sse-across-reload", &[("counter.json", &counter)]);
    let running = serve(&dir, false).await;
    let path = "/things/counter/properties/n";
    let mut sse = open_sse(&running, path, None).await;
    assert_eq!(put(&running, path, json!(1)).await, 204);
    let before = sse.next(WAIT).await;
    // The property changes its schema: the stream ends; writes happen before the client is back.
    let mut changed = counter.clone();
    changed["description"] = json!("Bounded now");
    changed["properties"]["n"]["maximum"] = json!(1000);
    edit_and_wait(&running, &dir, "counter", &changed).await;
    assert!(sse_ends(sse).await);
    assert_eq!(put(&running, path, json!(2)).await, 204);
    assert_eq!(put(&running, path, json!(3)).await, 204);
    let mut again = open_sse(&running, path, before.id.as_deref()).await;
    assert_eq!(again.next(WAIT).await.data, "2");
    assert_eq!(again.next(WAIT).await.data, "3");
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
