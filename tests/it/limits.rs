//! Limits that hold under abuse: SSE streams per client and in total, slow bodies, oversized
//! bodies, slowloris heads and thousands of idle connections, while a normal client keeps
//! being served.

use crate::common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wot_runtime::runtime::Config;
use wot_runtime::runtime::SubscriberLimits;

async fn open_stream(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_answer_429_and_503_and_free_their_slots() {
    // Keep-alives every 100 ms: a closed stream is noticed at the next write.
    let config = Config {
        subscribers: SubscriberLimits {
            per_client: 2,
            total: 3,
        },
        sse_keepalive: Duration::from_millis(100),
        ..Config::loopback()
    };
    let running = common::start_with(config).await;
    let url = format!("{}/things/lamp/properties/on", running.http_url());
    let client = common::client();
    let first = open_stream(&client, &url).await;
    let _second = open_stream(&client, &url).await;
    let third = open_stream(&client, &url).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    drop(first);
    // Refused attempts take no slot: try until the server has noticed.
    let mut again = open_stream(&client, &url).await;
    for _ in 0..100 {
        if again.status() != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = open_stream(&client, &url).await;
    }
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a closed stream gives its slot back"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_stream_limit_answers_503() {
    let config = Config {
        subscribers: SubscriberLimits {
            per_client: 10,
            total: 2,
        },
        ..Config::loopback()
    };
    let running = common::start_with(config).await;
    let url = format!("{}/things/lamp/events", running.http_url());
    let client = common::client();
    let _a = open_stream(&client, &url).await;
    let _b = open_stream(&client, &url).await;
    let c = open_stream(&client, &url).await;
    assert_eq!(c.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.headers()["retry-after"], "1");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    let config = Config {
        body_timeout: Duration::from_millis(500),
        ..Config::loopback()
    };
    let running = common::start_with(config).await;
    let mut socket = TcpStream::connect(running.http_addr).await.unwrap();
    socket
        .write_all(b"PUT /things/lamp/properties/brightness HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n4")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Hung up, as the client would: a connection left open holds the stop for its grace (1 s).
    drop(socket);
    let v: serde_json::Value = common::get_json(
        &common::client(),
        format!("{}/things/lamp/properties/brightness", running.http_url()),
    )
    .await;
    assert_eq!(v, json!(50));
    running.stop().await;
}

/// 2,000 idle connections, a slowloris client and oversized bodies at once, while a normal
/// client keeps getting 200s. Bounded: it ends after its requests, whatever happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_does_not_starve_a_normal_client() {
    // A request head must arrive within 2 s (5 s by default): the slowloris is cut off sooner,
    // and the idle connections still stand long after the normal client's requests are done.
    let running = common::start_with(Config {
        workers: 2,
        http_timeouts: wot_runtime::binding::http::Timeouts {
            head: Duration::from_secs(2),
            ..Default::default()
        },
        ..Config::loopback()
    })
    .await;
    let addr = running.http_addr;
    let base = running.http_url();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let slowloris = tokio::spawn(async move {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        for byte in b"GET /things/lamp HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
            .iter()
            .cycle()
            .take(80)
        {
            if socket.write_all(&[*byte]).await.is_err() {
                return true; // the server hung up on it, as it should
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let flood_base = base.clone();
    let oversized = tokio::spawn(async move {
        let client = common::client();
        let body = vec![b' '; 2 * 1024 * 1024];
        let mut refused = 0;
        for _ in 0..20 {
            if let Ok(res) = client
                .put(format!("{flood_base}/things/lamp/properties/brightness"))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                && res.status() == StatusCode::PAYLOAD_TOO_LARGE
            {
                refused += 1;
            }
        }
        refused
    });
    let client = common::client();
    for i in 0..200 {
        let res = client
            .get(format!("{base}/things/lamp/properties/brightness"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i} of the normal client");
    }
    assert_eq!(oversized.await.unwrap(), 20, "every oversized body got 413");
    assert!(
        slowloris.await.unwrap(),
        "the slowloris connection was closed by the server"
    );
    drop(idle);
    running.stop().await;
}

/// Opens a WebSocket from a chosen loopback address; Err carries the refusal's status and
/// Retry-After.
async fn websocket_from(
    source: [u8; 4],
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, (StatusCode, Option<String>)> {
    let authority = url.trim_start_matches("ws://").split('/').next().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((source, 0))).unwrap();
    let tcp = socket.connect(authority.parse().unwrap()).await.unwrap();
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            StatusCode::from_u16(response.status().as_u16()).unwrap(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_share_the_stream_limits() {
    let config = Config {
        subscribers: SubscriberLimits {
            per_client: 2,
            total: 3,
        },
        ..Config::loopback()
    };
    let running = common::start_with(config).await;
    let http = running.http_url();
    let ws = http.replace("http://", "ws://");
    let wtp = format!("{ws}/things/lamp");
    let legacy = format!("{ws}/webthing/lamp");
    // One SSE stream and one socket from 127.0.0.1 fill its share.
    let client = common::client();
    let stream = open_stream(&client, &format!("{http}/things/lamp/properties/on")).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let first = websocket_from([127, 0, 0, 1], &wtp).await.expect("first socket");
    let refused = [
        websocket_from([127, 0, 0, 1], &wtp).await.err(),
        websocket_from([127, 0, 0, 1], &legacy).await.err(),
    ];
    for r in refused {
        assert_eq!(r, Some((StatusCode::TOO_MANY_REQUESTS, Some("1".into()))));
    }
    let sse = open_stream(&client, &format!("{http}/things/lamp/events")).await;
    assert_eq!(
        sse.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "SSE counts the sockets too"
    );
    // Another address takes the last slot of the total, then the server is full.
    let other = websocket_from([127, 0, 0, 2], &legacy)
        .await
        .expect("legacy socket");
    assert_eq!(
        websocket_from([127, 0, 0, 3], &wtp).await.err(),
        Some((StatusCode::SERVICE_UNAVAILABLE, Some("1".into())))
    );
    // A closed socket gives its slot back.
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(ws) = websocket_from([127, 0, 0, 1], &wtp).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "the slot of a closed socket is freed");
    drop(stream);
    common::hang_up_then_stop(running, [other].into_iter().chain(reopened)).await;
}

/// What the server sends back on a raw connection until it closes or `wait` passes.
async fn read_until_closed(socket: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_answers_503_and_frees_slots() {
    let running = common::start_with(Config {
        http_timeouts: wot_runtime::binding::http::Timeouts {
            max_connections: 4,
            ..Default::default()
        },
        ..Config::loopback()
    })
    .await;
    let url = format!("{}/things/lamp/properties/brightness", running.http_url());
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(running.http_addr).await.unwrap());
    }
    // Until the server has accepted all four, a fifth may still be served; each try is a
    // connection of its own, closed after its answer.
    let mut res = common::client().get(&url).send().await.unwrap();
    for _ in 0..100 {
        if res.status() != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        res = common::client().get(&url).send().await.unwrap();
    }
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.text().await.unwrap().contains("open connections"));
    drop(idle);
    let mut served = false;
    for _ in 0..100 {
        if common::client().get(&url).send().await.unwrap().status() == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "closed connections give their slots back");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_idle_connections_and_huge_headers_are_cut_off() {
    let running = common::start_with(Config {
        http_timeouts: wot_runtime::binding::http::Timeouts {
            head: Duration::from_millis(500),
            idle: Duration::from_millis(500),
            ..Default::default()
        },
        ..Config::loopback()
    })
    .await;
    let addr = running.http_addr;
    // A head that never ends: 408, then the connection closes.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /things/lamp HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed);
    // An idle keep-alive connection is closed after one answered request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /things/lamp/properties/on HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "the idle connection was closed");
    // Headers beyond the limit: 431.
    let mut huge = TcpStream::connect(addr).await.unwrap();
    let filler = "a".repeat(200 * 1024);
    let request = format!("GET /things/lamp HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n");
    let _ = huge.write_all(request.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut huge, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The server still serves.
    let res = common::client()
        .get(format!("{}/things/lamp/properties/on", running.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_actions_are_limited_with_503() {
    let running = common::start().await;
    let client = common::client();
    let url = format!("{}/things/lamp/actions/fade", running.http_url());
    let mut instances = Vec::new();
    let refused = loop {
        let res = client
            .post(&url)
            .json(&json!({"level": 10, "duration": 600000}))
            .send()
            .await
            .unwrap();
        if res.status() != StatusCode::CREATED {
            break res;
        }
        instances.push(res.headers()["location"].to_str().unwrap().to_owned());
        assert!(instances.len() <= 64, "more than 64 fades ran at once");
    };
    assert_eq!(instances.len(), 64);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Cancelling one frees its place.
    let location = &instances[0];
    let cancel_url = if location.starts_with("http") {
        location.clone()
    } else {
        format!("{}{location}", running.http_url())
    };
    let cancelled = client.delete(&cancel_url).send().await.unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let again = client
        .post(&url)
        .json(&json!({"level": 10, "duration": 600000}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    running.stop().await;
}
