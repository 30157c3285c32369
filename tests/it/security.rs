//! Security of the HTTP port: HTTPS with a generated certificate that the client trusts,
//! bearer and basic credentials on HTTP, SSE and WebSocket, and the Host allow-list.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::binding::http::Security;
use wot_runtime::runtime::{Config, Running};
use wot_runtime::security::{self, Auth, HostPolicy};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wot-security-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(security: Security) -> Running {
    common::start_with(Config {
        security,
        ..Config::loopback()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_generated_certificate() {
    let state = temp("tls");
    let tls = security::self_signed(&state, security::local_names()).unwrap();
    let running = start(Security {
        tls: Some(tls.config),
        ..Security::default()
    })
    .await;
    let base = running.http_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let client = common::trusting_client(&state.join("tls/cert.pem"));
    let td: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    common::assert_valid_td(&td);
    assert_eq!(td["base"], format!("{base}/"));
    assert!(
        td["forms"].to_string().contains("wss://127.0.0.1:"),
        "WebSocket forms switch to wss: {}",
        td["forms"]
    );
    // Operations over https: write, read back, invoke, observe.
    let res = client
        .put(format!("{base}/things/lamp/properties/brightness"))
        .json(&json!(33))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let v: Value = common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    assert_eq!(v, json!(33));
    let toggled: Value = common::json_of(client.post(format!("{base}/things/lamp/actions/toggle"))).await;
    assert_eq!(toggled, json!(true));
    let mut sse = common::SseReader::new(
        client
            .get(format!("{base}/things/lamp/properties/on"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    sse.wait_for_text(": subscribed", Duration::from_secs(5)).await;
    client
        .put(format!("{base}/things/lamp/properties/on"))
        .json(&json!(false))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.next(Duration::from_secs(5)).await.data, "false");
    // A client that does not trust the certificate is refused by TLS itself.
    assert!(
        common::client()
            .get(format!("{base}/things/lamp"))
            .send()
            .await
            .is_err()
    );

    // The same over wss, with the Web Thing Protocol: the TD's wss form is where it connects.
    let wss = td["forms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["href"].as_str())
        .find(|h| h.starts_with("wss://"))
        .unwrap()
        .to_owned();
    let mut socket = wss_connect(&wss, &state.join("tls/cert.pem")).await;
    let thing_id = td["id"].clone();
    let read = wtp(
        &mut socket,
        &thing_id,
        "readproperty",
        json!({"name": "brightness"}),
    )
    .await;
    assert_eq!(read["value"], json!(33), "{read}");
    let observed = wtp(
        &mut socket,
        &thing_id,
        "observeproperty",
        json!({"name": "brightness"}),
    )
    .await;
    assert_eq!(observed["messageType"], "response", "{observed}");
    let written = wtp(
        &mut socket,
        &thing_id,
        "writeproperty",
        json!({"name": "brightness", "value": 44}),
    )
    .await;
    assert_eq!(written["messageType"], "response", "{written}");
    let note = next_json(&mut socket, |m| m["messageType"] == "notification").await;
    assert_eq!(
        (note["name"].clone(), note["value"].clone()),
        (json!("brightness"), json!(44))
    );
    let invoked = wtp(&mut socket, &thing_id, "invokeaction", json!({"name": "toggle"})).await;
    assert_eq!(invoked["output"], json!(true), "{invoked}");
    let all = wtp(&mut socket, &thing_id, "readallproperties", json!({})).await;
    assert_eq!(all["values"]["brightness"], json!(44), "{all}");
    assert_eq!(all["values"]["on"], json!(true), "{all}");
    common::hang_up_then_stop(running, [socket]).await;
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A Web Thing Protocol socket over TLS that trusts only `cert_pem`.
async fn wss_connect(url: &str, cert_pem: &std::path::Path) -> Wss {
    let authority = url.trim_start_matches("wss://").split('/').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let host = authority.rsplit_once(':').unwrap().0.to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(common::trusting_tls(cert_pem)));
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "webthingprotocol".parse().unwrap());
    let (socket, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "webthingprotocol");
    socket
}

async fn next_json(socket: &mut Wss, wanted: impl Fn(&Value) -> bool) -> Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("a frame");
        let Ok(text) = message.to_text() else { continue };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if wanted(&value) {
            return value;
        }
    }
}

/// Sends one request and returns its response (matched by correlationID).
async fn wtp(socket: &mut Wss, thing_id: &Value, operation: &str, members: Value) -> Value {
    use futures_util::SinkExt;
    let correlation = format!("{operation}-{}", uuid::Uuid::new_v4());
    let mut message = json!({"thingID": thing_id, "messageID": uuid::Uuid::new_v4().to_string(),
        "messageType": "request", "operation": operation, "correlationID": correlation});
    for (k, v) in members.as_object().unwrap() {
        message[k] = v.clone();
    }
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(message.to_string()))
        .await
        .unwrap();
    next_json(socket, |m| {
        m["correlationID"] == correlation.as_str() && m["messageType"] != "notification"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_http_sse_and_websocket() {
    let auth = Arc::new(Auth::parse("bearer:open-sesame").unwrap());
    let running = start(Security {
        auth: Some(auth),
        ..Security::default()
    })
    .await;
    let base = running.http_url();
    let client = common::client();
    let url = format!("{base}/things/lamp/properties/brightness");
    for (what, request) in [
        ("no token", client.get(&url)),
        ("wrong token", client.get(&url).bearer_auth("nope")),
        (
            "SSE without token",
            client.get(&url).header("Accept", "text/event-stream"),
        ),
        ("write without token", client.put(&url).json(&json!(1))),
        ("TD without token", client.get(format!("{base}/things/lamp"))),
        (
            "query token on a write",
            client
                .put(format!("{url}?access_token=open-sesame"))
                .json(&json!(1)),
        ),
    ] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        // A page on another origin can read the refusal and its challenge.
        assert_eq!(res.headers()["access-control-allow-origin"], "*", "{what}");
        let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.contains("WWW-Authenticate"), "{what}: {exposed}");
    }
    // The TD says what the token is: opaque, not a signed JWT (the TD defaults).
    let td: Value = common::json_of(
        client
            .get(format!("{base}/things/lamp"))
            .bearer_auth("open-sesame"),
    )
    .await;
    let scheme = &td["securityDefinitions"]["bearer_sc"];
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(scheme["format"], "opaque", "{scheme}");
    assert_eq!(scheme["alg"], "none", "{scheme}");
    common::assert_valid_td(&td);
    let v: Value = common::json_of(client.get(&url).bearer_auth("open-sesame")).await;
    assert_eq!(v, json!(50), "nothing was written by the refused requests");
    // Browsers' EventSource and WebSocket cannot set headers: a GET may carry the token.
    let res = client
        .get(format!("{url}?access_token=open-sesame"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Preflights need no credentials.
    let pre = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://app")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    // The TD says exactly what is enforced.
    let td: Value = common::json_of(
        client
            .get(format!("{base}/things/lamp"))
            .bearer_auth("open-sesame"),
    )
    .await;
    common::assert_valid_td(&td);
    assert_eq!(td["security"], "bearer_sc");
    assert_eq!(td["securityDefinitions"]["bearer_sc"]["scheme"], "bearer");
    // So does the WebThings description hubs read, which sits behind the same check.
    let legacy = client.get(format!("{base}/webthing/lamp")).send().await.unwrap();
    assert_eq!(legacy.status(), StatusCode::UNAUTHORIZED);
    let legacy: Value = common::json_of(
        client
            .get(format!("{base}/webthing/lamp"))
            .bearer_auth("open-sesame"),
    )
    .await;
    assert_eq!(legacy["security"], "bearer_sc");
    assert_eq!(legacy["securityDefinitions"]["bearer_sc"]["scheme"], "bearer");
    // WebSocket: refused without a token, accepted with one in the query.
    let ws = base.replace("http://", "ws://");
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}/things/lamp"))
            .await
            .is_err()
    );
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{ws}/things/lamp?access_token=open-sesame"))
            .await
            .unwrap();
    use futures_util::{SinkExt, StreamExt};
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"thingID": td["id"], "messageID": "1", "messageType": "request", "operation": "readproperty", "name": "on"}).to_string().into(),
        ))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reply.to_text().unwrap().contains("\"value\""), "{reply}");
    common::hang_up_then_stop(running, [socket]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_and_the_host_allow_list() {
    let auth = Arc::new(Auth::parse("basic:admin:correct horse").unwrap());
    let hosts = HostPolicy::local(&["lamp.example".into()], None);
    let running = start(Security {
        auth: Some(auth),
        hosts,
        ..Security::default()
    })
    .await;
    let base = running.http_url();
    let client = common::client();
    let url = format!("{base}/things/lamp/properties/on");
    let res = client
        .get(&url)
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let res = client
        .get(&url)
        .basic_auth("admin", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let td: Value = common::json_of(
        client
            .get(format!("{base}/things/lamp"))
            .basic_auth("admin", Some("correct horse")),
    )
    .await;
    assert_eq!(td["securityDefinitions"]["basic_sc"]["scheme"], "basic");
    common::assert_valid_td(&td);
    // A page on another site whose name resolves to this device (DNS rebinding) is refused.
    let res = client
        .get(&url)
        .header("Host", "evil.example")
        .basic_auth("admin", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        res.json::<Value>().await.unwrap()["type"],
        "/problems/host-not-allowed"
    );
    // An absolute-form target names the host instead of the Host header (RFC 9112 §3.2.2).
    let (head, _) = raw_request(
        running.http_addr,
        "GET http://evil.example/things/lamp/properties/on HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Basic YWRtaW46Y29ycmVjdCBob3JzZQ==\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let res = client
        .get(&url)
        .header("Host", "lamp.example:8080")
        .basic_auth("admin", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    running.stop().await;
}

/// Sends `request` as it is on a new connection; the answer's head and body once the server
/// closes it.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP head");
    (head.to_owned(), body.to_owned())
}

/// Over HTTPS a client may speak HTTP/2, whose requests name their host in `:authority`, not
/// in a Host header: the allow-list holds there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_allow_list_holds_over_http2() {
    let state = temp("h2-hosts");
    let tls = security::self_signed(&state, security::local_names()).unwrap();
    let running = start(Security {
        tls: Some(tls.config),
        hosts: HostPolicy::local(&[], None),
        ..Security::default()
    })
    .await;
    let mut config = common::trusting_tls(&state.join("tls/cert.pem"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.http_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 negotiated"
    );
    let (h2, connection) = h2::client::handshake(stream).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let port = running.http_addr.port();
    for (authority, expected) in [
        ("evil.example".to_owned(), 403),
        (format!("evil.example:{port}"), 403),
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
    ] {
        let mut h2 = h2.clone().ready().await.expect("ready");
        let request = http02::Request::get(format!("https://{authority}/things/lamp/properties/on"))
            .body(())
            .unwrap();
        let (response, _) = h2.send_request(request, true).expect("request sent");
        let response = response.await.expect("a response");
        assert_eq!(response.status().as_u16(), expected, "{authority}");
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}
