//! The bridge (issue #18): a `wot serve` child serving the bundled things (the upstream, used
//! over CoAP only: its TD is fetched from a coap:// URL and the proxy file says `via: coap`) is
//! proxied by a second `wot serve` child whose things/ holds one proxy file. curl's requests
//! (reqwest), an SSE stream, a Web Thing Protocol socket and a CoAP client (`wot`) read, write,
//! invoke and observe the bridged lamp; the upstream is stopped and started again on the same
//! port while the bridge keeps running. Proxy files that cannot be used are one error each, and
//! one whose remote is not up yet is served once it is.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::common;

const WOT: &str = env!("CARGO_BIN_EXE_wot");
const WAIT: Duration = Duration::from_secs(10);

use common::WotServe as Server;

/// Serves `things` with the given CoAP port ("0": any; "off": no CoAP), logging to a file in
/// `logs`.
fn serve(things: &Path, coap_port: &str, logs: &Path, name: &str) -> Server {
    let coap = match coap_port {
        "off" => vec!["--no-coap"],
        port => vec!["--coap-port", port],
    };
    Server::start(things, &coap, Some(&logs.join(format!("{name}.log"))))
}

/// A directory for one test's thing files and logs, removed at the end.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wot-bridge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bundled() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/things"))
}

/// An upstream on any ports, and a bridge proxying its lamp over CoAP.
fn upstream_and_bridge(dir: &Path) -> (Server, Server) {
    let upstream = serve(bundled(), "0", dir, "upstream");
    let bridge = bridge_of(&upstream, dir);
    (upstream, bridge)
}

fn bridge_of(upstream: &Server, dir: &Path) -> Server {
    let things = dir.join("things");
    std::fs::create_dir_all(&things).expect("things dir");
    let proxy = json!({"proxy": {"td": format!("{}/things/lamp", upstream.coap_url()), "via": "coap", "probe": 0.5, "timeout": 2}});
    std::fs::write(things.join("lamp.json"), proxy.to_string()).expect("proxy file");
    serve(&things, "0", dir, "bridge")
}

async fn value(server: &Server, name: &str) -> Value {
    common::get_json(
        &common::client(),
        format!("{}/things/lamp/properties/{name}", server.http),
    )
    .await
}

async fn put(server: &Server, name: &str, body: Value) -> reqwest::Response {
    common::client()
        .put(format!("{}/things/lamp/properties/{name}", server.http))
        .json(&body)
        .send()
        .await
        .expect("PUT answered")
}

async fn sse(server: &Server, path: &str) -> common::SseReader {
    let response = common::client()
        .get(format!("{}/things/lamp/{path}", server.http))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE answered");
    assert_eq!(response.status(), 200);
    common::SseReader::new(response)
}

/// What `wot` printed on stdout (and that it succeeded).
async fn wot(args: &[&str]) -> String {
    common::ok(&common::wot(args).await).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coap_thing_is_served_again_over_http_sse_websocket_and_coap() {
    let dir = TempDir::new("a");
    let (upstream, bridge) = upstream_and_bridge(dir.path());
    let client = common::client();

    // The bridged TD: the remote's description, the bridge's own id and forms, valid TD 1.1.
    let td: Value = common::get_json(&client, format!("{}/things/lamp", bridge.http)).await;
    let remote: Value = common::get_json(&client, format!("{}/things/lamp", upstream.http)).await;
    common::assert_valid_td(&td);
    assert_eq!(td["title"], remote["title"]);
    assert_eq!(td["@type"], remote["@type"]);
    assert_eq!(td["properties"]["brightness"]["maximum"], 100);
    assert_ne!(td["id"], remote["id"]);
    let hrefs = td.to_string();
    assert!(
        !hrefs.contains(upstream.coap_url()) && !hrefs.contains(&upstream.http),
        "{td:#}"
    );

    // Read and write through the bridge; the upstream holds the value.
    assert_eq!(
        value(&bridge, "brightness").await,
        value(&upstream, "brightness").await
    );
    assert_eq!(put(&bridge, "brightness", json!(42)).await.status(), 204);
    assert_eq!(value(&upstream, "brightness").await, 42);
    let all: Value = common::get_json(&client, format!("{}/things/lamp/properties", bridge.http)).await;
    assert_eq!(all["brightness"], 42);

    // A value that breaks the schema is refused by the bridge, precisely; nothing changes.
    let refused = put(&bridge, "brightness", json!(420)).await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.expect("problem+json");
    assert_eq!(
        (problem["rule"].as_str(), problem["pointer"].as_str()),
        (Some("maximum"), Some(""))
    );
    assert_eq!(value(&upstream, "brightness").await, 42);

    // A synchronous action, then an asynchronous one followed to its end on the bridge.
    let before = value(&upstream, "on").await;
    let toggled = client
        .post(format!("{}/things/lamp/actions/toggle", bridge.http))
        .send()
        .await
        .expect("toggle answered");
    assert!(toggled.status().is_success(), "{toggled:?}");
    assert_eq!(
        value(&upstream, "on").await,
        json!(!before.as_bool().expect("bool"))
    );
    let started = client
        .post(format!("{}/things/lamp/actions/fade", bridge.http))
        .json(&json!({"level": 7, "duration": 200}))
        .send()
        .await
        .expect("fade answered");
    assert_eq!(started.status(), 201);
    let status_url = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    common::eventually("the bridged fade completes", WAIT, || {
        let client = client.clone();
        let url = status_url.clone();
        async move {
            let status: Value = common::get_json(&client, url).await;
            status["status"] == "completed" && status["output"] == 7
        }
    })
    .await;
    assert_eq!(value(&upstream, "brightness").await, 7);

    // Observers on the bridge: SSE for a property and for an event, a WTP socket, CoAP.
    let mut property = sse(&bridge, "properties/brightness").await;
    let mut faded = sse(&bridge, "events/faded").await;
    let mut socket = wtp_observe(&bridge, &td["id"], "brightness").await;
    let coap_url = format!("{}/things/lamp", bridge.coap_url());
    let coap_observer = tokio::spawn(async move {
        wot(&[
            "observe",
            &coap_url,
            "brightness",
            "--count",
            "1",
            "--json",
            "--timeout",
            "20",
        ])
        .await
    });
    // The CoAP observer registers some time after it starts: change until it has seen one.
    let mut level = 10;
    while !coap_observer.is_finished() {
        level += 1;
        assert!(level < 60, "the CoAP observer of the bridge saw nothing");
        assert_eq!(put(&upstream, "brightness", json!(level)).await.status(), 204);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen: Value = serde_json::from_str(&coap_observer.await.expect("joined")).expect("JSON line");
    assert_eq!(seen["name"], "brightness");
    assert_eq!(property.next(WAIT).await.data, "11");
    assert_eq!(wtp_value(&mut socket, "brightness").await, 11);

    // An event on the upstream reaches the bridge's subscribers.
    let fade = client
        .post(format!("{}/things/lamp/actions/fade", upstream.http))
        .json(&json!({"level": 3, "duration": 100}))
        .send()
        .await
        .expect("fade on the upstream");
    assert_eq!(fade.status(), 201);
    let frame = faded.next(WAIT).await;
    assert_eq!(frame.event.as_deref(), Some("faded"));

    // CoAP on the bridge reads what the upstream holds.
    let coap = format!("{}/things/lamp", bridge.coap_url());
    common::eventually("the bridge's CoAP read follows", WAIT, || {
        let coap = coap.clone();
        async move { wot(&["read", &coap, "brightness"]).await == "3" }
    })
    .await;
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_upstream_gives_502_or_503_and_its_restart_restores_observations() {
    let dir = TempDir::new("b");
    let (mut upstream, bridge) = upstream_and_bridge(dir.path());
    let client = common::client();
    let mut property = sse(&bridge, "properties/brightness").await;
    assert_eq!(put(&upstream, "brightness", json!(21)).await.status(), 204);
    assert_eq!(property.next(WAIT).await.data, "21");

    let coap_port = upstream.coap_url().rsplit(':').next().expect("port").to_owned();
    upstream.stop();

    // The first request may find out (502); once the bridge knows, it answers 503 at once.
    let first = client
        .get(format!("{}/things/lamp/properties/brightness", bridge.http))
        .send()
        .await
        .expect("answered");
    assert!([502, 503].contains(&first.status().as_u16()), "{first:?}");
    common::eventually("the bridge answers 503 while the upstream is away", WAIT, || {
        let client = client.clone();
        let url = format!("{}/things/lamp/properties/brightness", bridge.http);
        async move {
            let r = client.get(url).send().await.expect("answered");
            r.status() == 503 && r.headers().contains_key("retry-after")
        }
    })
    .await;
    let problem: Value =
        common::json_of(client.get(format!("{}/things/lamp/properties/brightness", bridge.http))).await;
    assert_eq!(problem["type"], "/problems/upstream-away");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable")),
        "{problem}"
    );
    let write = put(&bridge, "brightness", json!(5)).await;
    assert_eq!(write.status(), 503);
    let invoke = client
        .post(format!("{}/things/lamp/actions/toggle", bridge.http))
        .send()
        .await
        .expect("answered");
    assert_eq!(invoke.status(), 503);
    // The TD stays served; so does CoAP, with 5.03.
    let td = client
        .get(format!("{}/things/lamp", bridge.http))
        .send()
        .await
        .expect("TD");
    assert_eq!(td.status(), 200);

    // The upstream comes back on the same port: the open SSE stream carries its changes again.
    let upstream = serve(bundled(), &coap_port, dir.path(), "upstream-again");
    common::eventually("the bridge reads again", Duration::from_secs(15), || {
        let client = client.clone();
        let url = format!("{}/things/lamp/properties/brightness", bridge.http);
        async move { client.get(url).send().await.expect("answered").status() == 200 }
    })
    .await;
    assert_eq!(put(&upstream, "brightness", json!(64)).await.status(), 204);
    loop {
        // Values the restart brought (the upstream starts from its defaults) come first.
        if property.next(WAIT).await.data == "64" {
            break;
        }
    }
    assert_eq!(put(&bridge, "brightness", json!(65)).await.status(), 204);
    assert_eq!(value(&upstream, "brightness").await, 65);
    let log = bridge.logged();
    assert!(
        log.contains("the remote is away") && log.contains("the remote is back"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_cannot_be_used_is_one_clear_error_and_the_rest_serves() {
    let dir = TempDir::new("c");
    let upstream = serve(bundled(), "0", dir.path(), "upstream");
    let http_only = serve(bundled(), "off", dir.path(), "http-only");
    let things = dir.path().join("things");
    std::fs::create_dir_all(&things).expect("things dir");
    // Nothing listens there: the port of a socket just closed.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let gone = closed.local_addr().expect("addr").port();
    drop(closed);
    let files = [
        (
            "gone",
            json!({"proxy": {"td": format!("coap://127.0.0.1:{gone}/things/lamp"), "timeout": 1}}),
        ),
        (
            "nota",
            json!({"proxy": {"td": format!("{}/things/lamp/properties/on", upstream.http)}}),
        ),
        ("typo", json!({"proxy": {"tdd": "coap://127.0.0.1/things/lamp"}})),
        (
            "noform",
            json!({"proxy": {"td": format!("{}/things/lamp", http_only.http), "via": "coap"}}),
        ),
    ];
    for (name, doc) in &files {
        std::fs::write(things.join(format!("{name}.json")), doc.to_string()).expect("write");
    }
    std::fs::copy(bundled().join("thermostat.json"), things.join("thermostat.json")).expect("copy");
    let bridge = serve(&things, "0", dir.path(), "bridge");
    let slugs: Vec<String> = common::get_json::<Value>(&common::client(), format!("{}/things", bridge.http))
        .await
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|td| td["title"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(slugs, ["Thermostat"]);
    let log = bridge.logged();
    let line = |file: &str| {
        log.lines()
            .find(|l| l.contains(&format!("{file}.json")))
            .unwrap_or_else(|| panic!("no line names {file}.json:\n{log}"))
            .to_owned()
    };
    assert!(
        line("gone").contains("/proxy/td") && line("gone").contains("unreachable"),
        "{log}"
    );
    assert!(line("nota").contains("is not a Thing Description"), "{log}");
    assert!(line("typo").contains("/proxy/tdd"), "{log}");
    assert!(
        line("noform").contains("/proxy/via") && line("noform").contains("no form of the remote TD"),
        "{log}"
    );

    // `wot validate` checks a proxy file as the bridge would load it.
    let validated = Command::new(WOT)
        .arg("validate")
        .args(["gone", "typo"].map(|f| things.join(format!("{f}.json"))))
        .output()
        .expect("wot validate runs");
    let said =
        String::from_utf8_lossy(&validated.stdout).into_owned() + &String::from_utf8_lossy(&validated.stderr);
    assert!(!validated.status.success(), "{said}");
    assert!(
        said.contains("gone.json: at /proxy/td") && said.contains("typo.json: at /proxy/tdd"),
        "{said}"
    );
    let good = dir.path().join("good.json");
    let proxy = json!({"proxy": {"td": format!("{}/things/lamp", upstream.coap_url())}});
    std::fs::write(&good, proxy.to_string()).expect("write");
    let validated = Command::new(WOT)
        .arg("validate")
        .arg(&good)
        .output()
        .expect("runs");
    assert!(validated.status.success(), "{validated:?}");
    assert!(
        String::from_utf8_lossy(&validated.stdout).contains("its remote TD fetched"),
        "{validated:?}"
    );

    // The unreachable one waits for its remote: once something serves there, it is served too.
    let _late = serve(bundled(), &gone.to_string(), dir.path(), "late-upstream");
    common::eventually(
        "the waiting proxy is served once its remote is up",
        Duration::from_secs(15),
        || {
            let url = format!("{}/things/gone/properties/brightness", bridge.http);
            async move {
                let r = common::client().get(url).send().await.expect("answered");
                r.status() == 200
            }
        },
    )
    .await;
}

async fn wtp_observe(
    bridge: &Server,
    thing_id: &Value,
    name: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/things/lamp", bridge.http.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "webthingprotocol".parse().expect("header"),
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("in time")
        .expect("handshake");
    let observe = json!({
        "thingID": thing_id,
        "messageID": uuid::Uuid::new_v4().to_string(),
        "messageType": "request",
        "operation": "observeproperty",
        "name": name,
        "correlationID": "observe-1",
    });
    ws.send(Message::text(observe.to_string())).await.expect("send");
    loop {
        let message = wtp_next(&mut ws).await;
        if message["correlationID"] == "observe-1" {
            assert_eq!(message["messageType"], "response", "{message}");
            return ws;
        }
    }
}

async fn wtp_next(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn wtp_value(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    name: &str,
) -> Value {
    loop {
        let message = wtp_next(ws).await;
        if message["messageType"] == "notification" && message["name"] == name {
            return message["value"].clone();
        }
    }
}
