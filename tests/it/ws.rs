//! The WebSocket binding (W3C Web Thing Protocol) over real loopback sockets, with
//! tokio-tungstenite as the consumer: every operation, cross-protocol observation, events, the
//! async action lifecycle, bad input, keepalive, shutdown, fan-out to 1,000 sockets and a slow
//! consumer. The operation scenarios run twice: over ws:// and over wss:// (a generated
//! certificate the client trusts). No timing is asserted; timeouts only bound a hang.

use crate::common;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use wot_runtime::runtime::{Config, Running};

const WAIT: Duration = Duration::from_secs(20);

/// A byte stream under a WebSocket: plain TCP, or TLS for the wss runs.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// The generated certificate of the wss runs and the server configuration holding it, made
/// once per test process; `open` trusts exactly this certificate.
fn tls() -> &'static (std::path::PathBuf, std::sync::Arc<rustls::ServerConfig>) {
    static TLS: std::sync::OnceLock<(std::path::PathBuf, std::sync::Arc<rustls::ServerConfig>)> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wot-ws-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = wot_runtime::security::self_signed(&dir, wot_runtime::security::local_names())
            .expect("a self-signed certificate");
        (dir.join("tls/cert.pem"), made.config)
    })
}

/// A runtime with the bundled things, serving ws:// or (with `tls`) wss://.
async fn start(tls_on: bool) -> Running {
    let mut config = Config::loopback();
    if tls_on {
        config.security.tls = Some(tls().1.clone());
    }
    common::start_with(config).await
}

/// An HTTP client for the runtime: it trusts the generated certificate under TLS.
fn http(running: &Running) -> reqwest::Client {
    if running.http_url().starts_with("https://") {
        common::trusting_client(&tls().0)
    } else {
        common::client()
    }
}

/// Runs one scenario over ws:// and again over wss://.
macro_rules! over_ws_and_wss {
    ($scenario:ident, $plain:ident, $secure:ident) => {
        #[tokio::test]
        async fn $plain() {
            $scenario(false).await
        }

        #[tokio::test]
        async fn $secure() {
            $scenario(true).await
        }
    };
}

/// A Web Thing Protocol consumer: requests with fresh correlationIDs, responses matched by
/// them, notifications kept in arrival order.
struct Wtp {
    ws: Socket,
    thing_id: String,
    inbox: VecDeque<Value>,
    next: u64,
}

fn ws_url(running: &Running, slug: &str) -> String {
    let scheme = if running.http_url().starts_with("https://") {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{}/things/{slug}", running.http_addr)
}

async fn open(url: &str, subprotocol: Option<&str>) -> (Socket, Option<String>) {
    let mut request = url.into_client_request().expect("request");
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
    }
    let authority = request.uri().authority().expect("authority").to_string();
    let tcp = TcpStream::connect(&authority).await.expect("connect");
    let io: Box<dyn Io> = if url.starts_with("wss://") {
        let host = authority.rsplit_once(':').expect("port").0.to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(common::trusting_tls(&tls().0)));
        Box::new(connector.connect(name, tcp).await.expect("TLS handshake"))
    } else {
        Box::new(tcp)
    };
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, io))
        .await
        .expect("connect in time")
        .expect("handshake");
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (ws, chosen)
}

impl Wtp {
    async fn connect(running: &Running, slug: &str) -> Wtp {
        let (ws, chosen) = open(&ws_url(running, slug), Some("webthingprotocol")).await;
        assert_eq!(chosen.as_deref(), Some("webthingprotocol"));
        let thing_id = running.servient.thing(slug).expect("thing").id.clone();
        Wtp {
            ws,
            thing_id,
            inbox: VecDeque::new(),
            next: 0,
        }
    }

    async fn send_raw(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next JSON message from the socket (pings and pongs skipped).
    async fn read(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("socket open")
                .expect("readable");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a request and returns the response with the same correlationID; anything else
    /// that arrives meanwhile is kept for `notification`.
    async fn request(&mut self, operation: &str, members: Value) -> Value {
        self.next += 1;
        let correlation = format!("c-{}-{}", self.next, uuid::Uuid::new_v4());
        let mut message = json!({
            "thingID": self.thing_id,
            "messageID": uuid::Uuid::new_v4().to_string(),
            "messageType": "request",
            "operation": operation,
            "correlationID": correlation,
        });
        for (k, v) in members.as_object().expect("members object") {
            message[k] = v.clone();
        }
        self.send_raw(Message::text(message.to_string())).await;
        self.response_to(&correlation).await
    }

    async fn response_to(&mut self, correlation: &str) -> Value {
        loop {
            let v = self.read().await;
            if v["messageType"] == "response" && v["correlationID"] == correlation {
                return v;
            }
            self.inbox.push_back(v);
        }
    }

    /// Sends raw text and returns the next response (for messages without a correlationID).
    async fn send_text_expect_response(&mut self, text: &str) -> Value {
        self.send_raw(Message::text(text.to_owned())).await;
        self.next_response().await
    }

    async fn next_response(&mut self) -> Value {
        loop {
            let v = self.read().await;
            if v["messageType"] == "response" {
                return v;
            }
            self.inbox.push_back(v);
        }
    }

    async fn notification(&mut self) -> Value {
        if let Some(v) = self.inbox.pop_front() {
            return v;
        }
        let v = self.read().await;
        assert_eq!(v["messageType"], "notification", "expected a notification: {v}");
        v
    }

    async fn ok(&mut self, operation: &str, members: Value) -> Value {
        let r = self.request(operation, members.clone()).await;
        assert!(r.get("error").is_none(), "{operation} {members} failed: {r}");
        assert_eq!(r["operation"], operation);
        assert_eq!(r["thingID"], self.thing_id);
        r
    }

    async fn error(&mut self, operation: &str, members: Value, status: u16) -> Value {
        let r = self.request(operation, members.clone()).await;
        assert_eq!(r["error"]["status"], status, "{operation} {members}: {r}");
        assert_eq!(
            r["error"]["type"],
            format!("https://w3c.github.io/web-thing-protocol/errors#{status}")
        );
        assert!(r["error"]["title"].is_string() && r["error"]["detail"].is_string());
        r
    }

    /// Reads until a close frame; returns it with the notifications seen before.
    async fn until_close(&mut self) -> (Option<(CloseCode, String)>, usize) {
        let mut notifications = 0;
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Close(frame))) => {
                    return (frame.map(|f| (f.code, f.reason.to_string())), notifications);
                }
                Some(Ok(Message::Text(_))) => notifications += 1,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (None, notifications),
            }
        }
    }
}

async fn http_put(running: &Running, path: &str, body: &Value) {
    let response = http(running)
        .put(format!("{}{path}", running.http_url()))
        .json(body)
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), 204, "PUT {path}");
}

#[tokio::test]
async fn handshake_td_forms_and_plain_get() {
    let running = common::start().await;
    // The subprotocol is echoed; a client that offers none is served too.
    let (offered, chosen) = open(&ws_url(&running, "lamp"), Some("webthingprotocol")).await;
    assert_eq!(chosen.as_deref(), Some("webthingprotocol"));
    let (ws, chosen) = open(&ws_url(&running, "lamp"), None).await;
    assert_eq!(chosen, None);
    let mut bare = Wtp {
        ws,
        thing_id: running.servient.thing("lamp").unwrap().id.clone(),
        inbox: VecDeque::new(),
        next: 0,
    };
    assert_eq!(
        bare.ok("readproperty", json!({"name": "on"})).await["value"],
        false
    );

    // An unknown thing is refused before the upgrade.
    let mut request = ws_url(&running, "nope").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "webthingprotocol".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }

    // A plain GET still returns the TD, which describes the socket and validates.
    let td: Value = common::get_json(&common::client(), format!("{}/things/lamp", running.http_url())).await;
    common::assert_valid_td(&td);
    let href = format!("ws://{}/things/lamp", running.http_addr);
    let ws_forms = |forms: &Value| -> Vec<Value> {
        forms
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["subprotocol"] == "webthingprotocol")
            .cloned()
            .collect()
    };
    let thing_forms = ws_forms(&td["forms"]);
    assert_eq!(thing_forms.len(), 1);
    assert_eq!(thing_forms[0]["href"], href);
    let ops: Vec<&str> = thing_forms[0]["op"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    for op in [
        "readallproperties",
        "readmultipleproperties",
        "writemultipleproperties",
        "observeallproperties",
        "unobserveallproperties",
        "queryallactions",
        "subscribeallevents",
        "unsubscribeallevents",
    ] {
        assert!(ops.contains(&op), "thing-level op {op} missing: {ops:?}");
    }
    let on = ws_forms(&td["properties"]["on"]["forms"]);
    assert_eq!(on[0]["href"], href);
    assert_eq!(
        on[0]["op"],
        json!([
            "readproperty",
            "writeproperty",
            "observeproperty",
            "unobserveproperty"
        ])
    );
    assert_eq!(
        ws_forms(&td["actions"]["fade"]["forms"])[0]["op"],
        json!(["invokeaction", "queryaction", "cancelaction"])
    );
    assert_eq!(
        ws_forms(&td["actions"]["toggle"]["forms"])[0]["op"],
        json!(["invokeaction"])
    );
    assert_eq!(
        ws_forms(&td["events"]["faded"]["forms"])[0]["op"],
        json!(["subscribeevent", "unsubscribeevent"])
    );
    // Every bundled TD still validates.
    for slug in running.servient.slugs() {
        let td: Value =
            common::get_json(&common::client(), format!("{}/things/{slug}", running.http_url())).await;
        common::assert_valid_td(&td);
    }
    common::hang_up_then_stop(running, [offered, bare.ws]).await;
}

over_ws_and_wss!(
    property_operations,
    property_operations_over_ws,
    property_operations_over_wss
);

async fn property_operations(tls: bool) {
    let running = start(tls).await;
    let mut c = Wtp::connect(&running, "lamp").await;

    let r = c.ok("readproperty", json!({"name": "brightness"})).await;
    assert_eq!(r["name"], "brightness");
    assert_eq!(r["value"], 50);
    assert_eq!(r["messageType"], "response");
    assert!(uuid::Uuid::parse_str(r["messageID"].as_str().unwrap()).is_ok());

    let r = c
        .ok("writeproperty", json!({"name": "brightness", "value": 70}))
        .await;
    assert_eq!(r["name"], "brightness");
    assert_eq!(r["value"], 70, "a confirmed write echoes the value");
    assert_eq!(
        c.ok("readproperty", json!({"name": "brightness"})).await["value"],
        70
    );

    let r = c.ok("readallproperties", json!({})).await;
    assert_eq!(r["values"], json!({"on": false, "brightness": 70}));

    let r = c
        .ok("readmultipleproperties", json!({"names": ["brightness"]}))
        .await;
    assert_eq!(r["values"], json!({"brightness": 70}));

    let r = c
        .ok(
            "writemultipleproperties",
            json!({"values": {"on": true, "brightness": 10}}),
        )
        .await;
    assert_eq!(r["values"], json!({"on": true, "brightness": 10}));
    assert_eq!(
        c.ok("readallproperties", json!({})).await["values"],
        json!({"on": true, "brightness": 10})
    );

    // writeallproperties needs every writable property.
    c.error("writeallproperties", json!({"values": {"on": false}}), 400)
        .await;
    let r = c
        .ok(
            "writeallproperties",
            json!({"values": {"on": false, "brightness": 20}}),
        )
        .await;
    assert_eq!(r["values"], json!({"on": false, "brightness": 20}));

    // Unknown names: 404 for single-property operations, 400 for readmultipleproperties (draft).
    let r = c.error("readproperty", json!({"name": "nope"}), 404).await;
    assert_eq!(r["name"], "nope");
    c.error("writeproperty", json!({"name": "nope", "value": 1}), 404)
        .await;
    c.error("readmultipleproperties", json!({"names": ["on", "nope"]}), 400)
        .await;
    c.error("observeproperty", json!({"name": "nope"}), 404).await;

    // Read-only property (thermostat temperature) cannot be written.
    let mut t = Wtp::connect(&running, "thermostat").await;
    let r = t
        .error("writeproperty", json!({"name": "temperature", "value": 3}), 400)
        .await;
    assert_eq!(r["error"]["rule"], "readOnly");
    common::hang_up_then_stop(running, [c.ws, t.ws]).await;
}

over_ws_and_wss!(
    observation_with_correlation_last_wins_and_unobserve,
    observation_with_correlation_last_wins_and_unobserve_over_ws,
    observation_with_correlation_last_wins_and_unobserve_over_wss
);

async fn observation_with_correlation_last_wins_and_unobserve(tls: bool) {
    let running = start(tls).await;
    let mut c = Wtp::connect(&running, "lamp").await;
    let mut writer = Wtp::connect(&running, "lamp").await;

    let r = c.ok("observeproperty", json!({"name": "on"})).await;
    assert_eq!(r["name"], "on");
    // A write on another socket reaches this one; brightness is not observed and is skipped.
    writer
        .ok("writeproperty", json!({"name": "brightness", "value": 1}))
        .await;
    writer
        .ok("writeproperty", json!({"name": "on", "value": true}))
        .await;
    let n = c.notification().await;
    assert_eq!(n["operation"], "observeproperty");
    assert_eq!(n["name"], "on");
    assert_eq!(n["value"], true);
    assert_eq!(n["thingID"], c.thing_id);
    assert!(n["timestamp"].is_string());
    // The notification echoes the observe request's correlationID.
    assert_eq!(n["correlationID"], r["correlationID"]);

    // Observing again replaces the subscription: notifications carry the new correlationID.
    let again = c.ok("observeproperty", json!({"name": "on"})).await;
    writer
        .ok("writeproperty", json!({"name": "on", "value": false}))
        .await;
    let n = c.notification().await;
    assert_eq!(n["correlationID"], again["correlationID"]);
    assert_eq!(n["value"], false);

    // Unobserve on, observe brightness: the next notification is about brightness only.
    c.ok("unobserveproperty", json!({"name": "on"})).await;
    c.ok("unobserveproperty", json!({"name": "on"})).await; // on nothing: still fine
    c.ok("observeproperty", json!({"name": "brightness"})).await;
    writer
        .ok("writeproperty", json!({"name": "on", "value": true}))
        .await;
    writer
        .ok("writeproperty", json!({"name": "brightness", "value": 2}))
        .await;
    let n = c.notification().await;
    assert_eq!(
        (n["name"].as_str(), n["value"].as_i64()),
        (Some("brightness"), Some(2))
    );

    // observeallproperties delivers every property, labelled as such.
    c.ok("unobserveproperty", json!({"name": "brightness"})).await;
    let all = c.ok("observeallproperties", json!({})).await;
    writer
        .ok("writeproperty", json!({"name": "on", "value": false}))
        .await;
    let n = c.notification().await;
    assert_eq!(n["operation"], "observeallproperties");
    assert_eq!(n["name"], "on");
    assert_eq!(n["correlationID"], all["correlationID"]);
    c.ok("unobserveallproperties", json!({})).await;
    c.ok("subscribeevent", json!({"name": "faded"})).await;
    writer
        .ok("writeproperty", json!({"name": "on", "value": true}))
        .await;
    writer
        .ok(
            "invokeaction",
            json!({"name": "fade", "input": {"level": 3, "duration": 0}}),
        )
        .await;
    let n = c.notification().await;
    assert_eq!(n["operation"], "subscribeevent", "property changes stopped: {n}");
    common::hang_up_then_stop(running, [c.ws, writer.ws]).await;
}

over_ws_and_wss!(
    cross_protocol_http_write_reaches_socket_observers,
    cross_protocol_http_write_reaches_socket_observers_over_ws,
    cross_protocol_http_write_reaches_socket_observers_over_wss
);

async fn cross_protocol_http_write_reaches_socket_observers(tls: bool) {
    let running = start(tls).await;
    let mut a = Wtp::connect(&running, "lamp").await;
    let mut b = Wtp::connect(&running, "lamp").await;
    a.ok("observeproperty", json!({"name": "brightness"})).await;
    b.ok("observeallproperties", json!({})).await;
    http_put(&running, "/things/lamp/properties/brightness", &json!(33)).await;
    for c in [&mut a, &mut b] {
        let n = c.notification().await;
        assert_eq!(n["name"], "brightness");
        assert_eq!(n["value"], 33);
    }
    // And a socket write is visible over HTTP.
    a.ok("writeproperty", json!({"name": "on", "value": true})).await;
    let on: Value = common::get_json(
        &http(&running),
        format!("{}/things/lamp/properties/on", running.http_url()),
    )
    .await;
    assert_eq!(on, json!(true));
    let n = b.notification().await;
    assert_eq!(
        (n["name"].as_str(), n["value"].as_bool()),
        (Some("on"), Some(true))
    );
    common::hang_up_then_stop(running, [a.ws, b.ws]).await;
}

over_ws_and_wss!(
    events_and_async_action_lifecycle,
    events_and_async_action_lifecycle_over_ws,
    events_and_async_action_lifecycle_over_wss
);

async fn events_and_async_action_lifecycle(tls: bool) {
    let running = start(tls).await;
    let mut c = Wtp::connect(&running, "lamp").await;
    let mut all = Wtp::connect(&running, "lamp").await;
    let sub = c.ok("subscribeevent", json!({"name": "faded"})).await;
    assert_eq!(sub["name"], "faded");
    all.ok("subscribeallevents", json!({})).await;

    // Synchronous action: the response carries the output.
    let r = c.ok("invokeaction", json!({"name": "toggle"})).await;
    assert_eq!(r["output"], true);
    assert_eq!(r["name"], "toggle");

    // Asynchronous action: pending status, then running and completed notifications.
    let r = c
        .ok(
            "invokeaction",
            json!({"name": "fade", "input": {"level": 80, "duration": 300}}),
        )
        .await;
    let status = &r["status"];
    assert_eq!(status["state"], "pending");
    let id = status["actionID"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert!(status["timeRequested"].is_string());
    let mut states = Vec::new();
    let mut event = None;
    while !states.contains(&"completed".to_owned()) {
        let n = c.notification().await;
        match n["operation"].as_str() {
            Some("invokeaction") => {
                assert_eq!(n["name"], "fade");
                assert_eq!(n["status"]["actionID"], id.as_str());
                assert_eq!(n["correlationID"], r["correlationID"]);
                states.push(n["status"]["state"].as_str().unwrap().to_owned());
                if n["status"]["state"] == "completed" {
                    assert_eq!(n["status"]["output"], 80);
                    assert!(n["status"]["timeEnded"].is_string());
                }
            }
            Some("subscribeevent") => event = Some(n),
            _ => panic!("unexpected notification {n}"),
        }
    }
    assert_eq!(states, ["running", "completed"]);
    let event = match event {
        Some(e) => e,
        None => c.notification().await,
    };
    assert_eq!(event["name"], "faded");
    assert_eq!(event["data"], 80);
    assert_eq!(event["correlationID"], sub["correlationID"]);
    let n = all.notification().await;
    assert_eq!(
        (n["operation"].as_str(), n["data"].as_i64()),
        (Some("subscribeallevents"), Some(80))
    );

    // queryaction, with and without the action name.
    let q = c.ok("queryaction", json!({"actionID": id})).await;
    assert_eq!(q["name"], "fade");
    assert_eq!(q["status"]["state"], "completed");
    let q = c.ok("queryaction", json!({"name": "fade", "actionID": id})).await;
    assert_eq!(q["status"]["output"], 80);
    c.error("queryaction", json!({"actionID": "no-such-id"}), 404)
        .await;
    c.error("queryaction", json!({"name": "toggle", "actionID": id}), 400)
        .await;

    // Cancel a long fade: the response says so, the status notification says failed.
    let started = c
        .ok(
            "invokeaction",
            json!({"name": "fade", "input": {"level": 0, "duration": 600000}}),
        )
        .await;
    let long_id = started["status"]["actionID"].as_str().unwrap().to_owned();
    let cancelled = c.ok("cancelaction", json!({"actionID": long_id})).await;
    assert_eq!(cancelled["actionID"], long_id.as_str());
    assert_eq!(cancelled["name"], "fade");
    assert_eq!(cancelled["status"]["state"], "failed");
    loop {
        let n = c.notification().await;
        if n["operation"] == "invokeaction" && n["status"]["state"] == "failed" {
            assert_eq!(n["status"]["actionID"], long_id.as_str());
            assert_eq!(n["correlationID"], started["correlationID"]);
            break;
        }
    }
    c.error("cancelaction", json!({"actionID": long_id}), 409).await;
    c.error("cancelaction", json!({"actionID": "no-such-id"}), 404)
        .await;

    // queryallactions: statuses by action name, newest first.
    let r = c.ok("queryallactions", json!({})).await;
    let fades = r["statuses"]["fade"].as_array().unwrap();
    assert_eq!(fades[0]["actionID"], long_id.as_str());
    assert_eq!(fades[1]["actionID"], id.as_str());
    assert!(fades.iter().all(|s| s["state"].is_string()));

    // Schema violations of the input change nothing.
    let r = c
        .error(
            "invokeaction",
            json!({"name": "fade", "input": {"level": 500, "duration": 1}}),
            400,
        )
        .await;
    assert_eq!(r["error"]["pointer"], "/level");
    assert_eq!(r["error"]["rule"], "maximum");
    c.error("invokeaction", json!({"name": "fade"}), 400).await;
    c.error("invokeaction", json!({"name": "toggle", "input": 5}), 400)
        .await;
    c.error("invokeaction", json!({"name": "nope"}), 404).await;
    c.error("subscribeevent", json!({"name": "nope"}), 404).await;
    assert_eq!(
        c.ok("queryallactions", json!({})).await["statuses"]["fade"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    c.ok("unsubscribeevent", json!({"name": "faded"})).await;
    c.ok("unsubscribeallevents", json!({})).await;
    common::hang_up_then_stop(running, [c.ws, all.ws]).await;
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_the_socket_stays_open() {
    let running = common::start().await;
    let mut c = Wtp::connect(&running, "lamp").await;
    let before = c.ok("readallproperties", json!({})).await["values"].clone();

    let r = c.send_text_expect_response("this is not json").await;
    assert_eq!(r["error"]["status"], 400);
    assert!(r["error"]["detail"].as_str().unwrap().contains("not valid JSON"));

    c.send_raw(Message::binary(Bytes::from_static(
        b"{\"operation\":\"readproperty\"}",
    )))
    .await;
    let r = c.next_response().await;
    assert_eq!(r["error"]["status"], 400);
    assert!(r["error"]["detail"].as_str().unwrap().contains("binary"));

    let r = c
        .send_text_expect_response(
            r#"{"messageType":"shout","operation":"readproperty","name":"on","correlationID":"k1"}"#,
        )
        .await;
    assert_eq!(
        (r["error"]["status"].as_u64(), r["correlationID"].as_str()),
        (Some(400), Some("k1"))
    );
    assert_eq!(r["error"]["member"], "messageType");

    let r = c
        .send_text_expect_response(r#"{"messageType":"request","operation":"dance","correlationID":"k2"}"#)
        .await;
    assert_eq!(
        (r["error"]["status"].as_u64(), r["correlationID"].as_str()),
        (Some(400), Some("k2"))
    );
    assert!(
        r["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("unknown operation 'dance'")
    );

    // Unknown thingID; a TD URL or a missing thingID name this socket's thing.
    let r = c
        .send_text_expect_response(r#"{"thingID":"urn:uuid:0000","messageType":"request","operation":"readproperty","name":"on","correlationID":"k3"}"#)
        .await;
    assert_eq!(
        (r["error"]["status"].as_u64(), r["correlationID"].as_str()),
        (Some(404), Some("k3"))
    );
    let td_url = format!("{}/things/lamp", running.http_url());
    let r = c
        .send_text_expect_response(
            &json!({"thingID": td_url, "messageType":"request","operation":"readproperty","name":"on"})
                .to_string(),
        )
        .await;
    assert_eq!(r["value"], false);
    let r = c
        .send_text_expect_response(
            r#"{"messageType":"request","operation":"readproperty","name":"brightness"}"#,
        )
        .await;
    assert_eq!(r["value"], 50);

    // Schema violations: precise pointer and rule, nothing changes.
    let r = c
        .error("writeproperty", json!({"name": "brightness", "value": 101}), 400)
        .await;
    assert_eq!(r["error"]["rule"], "maximum");
    let r = c
        .error("writeproperty", json!({"name": "on", "value": "yes"}), 400)
        .await;
    assert_eq!(r["error"]["rule"], "type");
    let r = c
        .error(
            "writemultipleproperties",
            json!({"values": {"on": true, "brightness": -1}}),
            400,
        )
        .await;
    assert_eq!(r["error"]["pointer"], "/brightness");
    c.error("writeproperty", json!({"name": "on"}), 400).await;

    // A message over the limit is refused; the socket stays open.
    let big = json!({"messageType":"request","operation":"writeproperty","name":"on","value":"x".repeat(70 * 1024),"correlationID":"big"});
    let r = c.send_text_expect_response(&big.to_string()).await;
    assert_eq!(r["error"]["status"], 413);
    // Its ids are still read, so the client can tell which request failed.
    assert_eq!(r["correlationID"], "big");
    assert_eq!(r["operation"], "writeproperty");
    assert_eq!(
        c.ok("readallproperties", json!({})).await["values"],
        before,
        "nothing changed"
    );

    // A fragmented message over the limit too.
    let text = big.to_string();
    let (first, rest) = text.as_bytes().split_at(text.len() / 2);
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let mut f1 = Frame::message(Bytes::copy_from_slice(first), OpCode::Data(Data::Text), false);
    f1.header_mut().is_final = false;
    c.send_raw(Message::Frame(f1)).await;
    c.send_raw(Message::Frame(Frame::message(
        Bytes::copy_from_slice(rest),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    let r = c.next_response().await;
    assert_eq!(r["error"]["status"], 413);
    assert_eq!(c.ok("readproperty", json!({"name": "on"})).await["value"], false);

    // A frame beyond the codec limit cannot be skipped: error, then close 1009.
    let huge = "x".repeat(1024 * 1024 + 16);
    c.send_raw(Message::text(huge)).await;
    let r = c.next_response().await;
    assert_eq!(r["error"]["status"], 413);
    let (close, _) = c.until_close().await;
    assert_eq!(close.expect("close frame").0, CloseCode::Size);

    // The server keeps serving others.
    let mut d = Wtp::connect(&running, "lamp").await;
    assert_eq!(d.ok("readallproperties", json!({})).await["values"], before);
    common::hang_up_then_stop(running, [c.ws, d.ws]).await;
}

#[tokio::test]
async fn keepalive_answers_pings_and_closes_silent_peers() {
    let mut config = Config::loopback();
    config.ws.ping_interval = Duration::from_millis(200);
    let running = common::start_with(config).await;
    let mut c = Wtp::connect(&running, "lamp").await;
    c.send_raw(Message::Ping(Bytes::from_static(b"hello"))).await;
    loop {
        match tokio::time::timeout(WAIT, c.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"hello");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A peer that answers nothing gets pings and is then closed as dead. A raw TCP client
    // plays it (a WebSocket library would answer the pings).
    let raw = common::silent_websocket(
        running.http_addr,
        "/things/lamp",
        "Sec-WebSocket-Protocol: webthingprotocol\r\n",
        None,
    )
    .await;
    let (head, frames) = common::until_server_closes(raw).await;
    assert!(head.starts_with(b"HTTP/1.1 101"));
    common::assert_pinged_then_closed_as_dead(&frames);
    common::hang_up_then_stop(running, [c.ws]).await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let running = common::start().await;
    let mut c = Wtp::connect(&running, "lamp").await;
    c.ok("observeallproperties", json!({})).await;
    let stop = tokio::spawn(running.stop());
    let (close, _) = c.until_close().await;
    let (code, reason) = close.expect("close frame");
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("shutting down"));
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_1000_sockets() {
    const SOCKETS: usize = 1000;
    // All from one address: lift the per-client share of the subscriber pool (64 by default).
    let running = common::start_with(wot_runtime::runtime::Config {
        subscribers: wot_runtime::runtime::SubscriberLimits {
            per_client: SOCKETS + 10,
            total: SOCKETS + 10,
        },
        ..wot_runtime::runtime::Config::loopback()
    })
    .await;
    let url = ws_url(&running, "lamp");
    let thing_id = running.servient.thing("lamp").unwrap().id.clone();
    let mut clients = Vec::with_capacity(SOCKETS);
    for chunk in 0..SOCKETS / 100 {
        let batch = futures_util::future::join_all((0..100).map(|i| {
            let url = url.clone();
            let thing_id = thing_id.clone();
            async move {
                let (ws, _) = open(&url, Some("webthingprotocol")).await;
                let mut c = Wtp {
                    ws,
                    thing_id,
                    inbox: VecDeque::new(),
                    next: (chunk * 100 + i) as u64 * 1000,
                };
                c.ok("subscribeevent", json!({"name": "faded"})).await;
                c
            }
        }))
        .await;
        clients.extend(batch);
    }
    assert_eq!(clients.len(), SOCKETS);
    let response = common::client()
        .post(format!("{}/things/lamp/actions/fade", running.http_url()))
        .json(&json!({"level": 42, "duration": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let received = futures_util::future::join_all(clients.iter_mut().map(|c| async move {
        let n = c.notification().await;
        (n["name"] == "faded" && n["data"] == 42) as usize
    }))
    .await;
    assert_eq!(received.iter().sum::<usize>(), SOCKETS);
    common::hang_up_then_stop(running, clients.into_iter().map(|c| c.ws)).await;
}

/// A socket whose client stops reading must neither stall the thing nor the other sockets,
/// and must not buffer without bound: it is told it lagged (close 1013) once it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_lags_without_stalling_others() {
    use wot_runtime::core::ThingBuilder;
    use wot_runtime::things::Behaviors;
    use wot_runtime::things::Hosted;
    const WRITES: usize = 300;
    const BLOB: usize = 60 * 1024;

    let thing = ThingBuilder::new(
        "blob",
        json!({"title": "Blob", "properties": {"blob": {"type": "string", "observable": true}}}),
    )
    .notification_capacity(32)
    .build()
    .unwrap();
    let running = Running::start(
        Config::loopback(),
        vec![Hosted {
            thing,
            behaviors: Behaviors::default(),
        }],
    )
    .await
    .unwrap();
    let thing_id = running.servient.thing("blob").unwrap().id.clone();
    let mut fast = Wtp::connect(&running, "blob").await;
    // The slow client's socket has a small receive buffer, so the server's side fills quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let stream = socket.connect(running.http_addr).await.unwrap();
    let mut request = ws_url(&running, "blob").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "webthingprotocol".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, Box::new(stream) as Box<dyn Io>)
        .await
        .unwrap();
    let mut slow = Wtp {
        ws,
        thing_id,
        inbox: VecDeque::new(),
        next: 0,
    };
    fast.ok("observeproperty", json!({"name": "blob"})).await;
    slow.ok("observeproperty", json!({"name": "blob"})).await;

    // The slow client now reads nothing. Each write goes through HTTP and reaches the fast one.
    for i in 0..WRITES {
        let value = format!("{i}:{}", "x".repeat(BLOB));
        http_put(&running, "/things/blob/properties/blob", &json!(value)).await;
        let n = fast.notification().await;
        let got = n["value"].as_str().unwrap();
        assert!(got.starts_with(&format!("{i}:")), "fast socket got write {i}");
    }
    // It reads again: what was in flight arrives, then the close that says it lagged.
    let (close, delivered) = slow.until_close().await;
    let (code, reason) = close.expect("close frame");
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(reason.contains("lagged"), "{reason}");
    assert!(
        delivered < WRITES,
        "the slow socket did not buffer everything: {delivered}"
    );
    // The fast socket and the thing are still fine.
    assert!(
        fast.ok("readproperty", json!({"name": "blob"})).await["value"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", WRITES - 1))
    );
    common::hang_up_then_stop(running, [fast.ws, slow.ws]).await;
}
