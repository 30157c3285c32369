//! The HTTP port's upgrade path (`binding::upgrade`, `binding::http::server`): a request that
//! asks to switch protocols runs through the same routes and checks as any other; only an
//! accepted WebSocket handshake takes the connection over, with whatever the client sent right
//! behind its request, and keeps its slot in the connection limit while it is open.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wot_runtime::runtime::Config;

use crate::common;

const HANDSHAKE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// The HTTP head and body the server sent before closing the connection.
async fn answer_then_close(mut raw: TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection after its answer")
        .expect("read");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    (head.to_owned(), body.to_owned())
}

/// A chunked body's data (the server streams answers it writes itself).
fn dechunk(body: &str) -> String {
    let mut data = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        data.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    data
}

fn body_of(head: &str, body: &str) -> String {
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_elsewhere_is_answered_like_any_request_then_closed() {
    let running = common::start().await;
    let addr = running.http_addr;

    // A resource that speaks no WebSocket: its usual answer, and the connection ends.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /things HTTP/1.1\r\nHost: {addr}\r\n{HANDSHAKE}\r\n");
    raw.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = answer_then_close(raw).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    let list: Value = serde_json::from_str(&body_of(&head, &body)).expect("the thing list");
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");

    // A handshake for a thing that is not there: problem+json, then the end.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /things/nothing HTTP/1.1\r\nHost: {addr}\r\n{HANDSHAKE}\r\n");
    raw.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = answer_then_close(raw).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    let problem: Value = serde_json::from_str(&body_of(&head, &body)).expect("problem+json");
    assert_eq!(problem["status"], 404, "{problem}");

    // The port goes on serving.
    let res = common::client()
        .get(format!("{}/things/lamp", running.http_url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_right_behind_the_handshake_is_read() {
    let running = common::start().await;
    let addr = running.http_addr;
    let thing_id = format!("{}/things/lamp", running.http_url());
    let read = serde_json::json!({"thingID": thing_id, "messageID": "early", "messageType": "request",
        "operation": "readproperty", "name": "brightness"})
    .to_string();
    // One write: the handshake and a masked text frame (RFC 6455 §5.3) with the request.
    let mut bytes = format!("GET /things/lamp HTTP/1.1\r\nHost: {addr}\r\n{HANDSHAKE}\r\n").into_bytes();
    let key = [1u8, 2, 3, 4];
    bytes.extend([0x81, 0x80 | 126]);
    bytes.extend((read.len() as u16).to_be_bytes());
    bytes.extend(key);
    bytes.extend(read.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(&bytes).await.expect("write");

    // Read until the head and one whole frame are in.
    let mut got = Vec::new();
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = raw.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = &got[end + 4..];
            if rest.len() < 2 {
                continue;
            }
            let (len, header) = match rest[1] {
                126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                126 => continue,
                short => (usize::from(short), 2),
            };
            if rest.len() >= header + len {
                assert_eq!(rest[0], 0x81, "a text frame");
                return String::from_utf8(rest[header..header + len].to_vec()).expect("UTF-8");
            }
        }
    })
    .await
    .expect("an answer in time");
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let answer: Value = serde_json::from_str(&frame).expect("JSON");
    assert_eq!(answer["messageType"], "response", "{answer}");
    assert_eq!(answer["name"], "brightness", "{answer}");
    assert!(answer["value"].is_number(), "{answer}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_keeps_its_slot_in_the_connection_limit() {
    let running = common::start_with(Config {
        http_timeouts: wot_runtime::binding::http::Timeouts {
            max_connections: 2,
            ..Default::default()
        },
        ..Config::loopback()
    })
    .await;
    let ws = format!("{}/things/lamp", running.http_url().replace("http://", "ws://"));
    let url = format!("{}/things/lamp/properties/brightness", running.http_url());
    let (first, _) = tokio_tungstenite::connect_async(&ws).await.expect("first socket");
    let (second, _) = tokio_tungstenite::connect_async(&ws)
        .await
        .expect("second socket");
    // Both sockets are open and hold their connections' slots: a third connection is over.
    let res = common::client().get(&url).send().await.expect("GET");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // One socket ends; its slot comes back once the server has let go of the connection.
    common::hang_up(first).await;
    common::eventually(
        "the closed socket's slot is free",
        Duration::from_secs(10),
        || async { common::client().get(&url).send().await.expect("GET").status() == StatusCode::OK },
    )
    .await;
    let mut second = second;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.next())
            .await
            .is_err(),
        "the other socket stays open"
    );
    common::hang_up_then_stop(running, [second]).await;
}
