//! A WebSocket on plain TCP is written through a second descriptor of its socket only while the
//! top of the descriptor table stays free for accepting connections (`fd_limit::RESERVE`). The
//! sockets upgraded past that point are written through the HTTP dispatcher and work the same.
//! A test binary of its own, outside `tests/it`: it lowers the process's open-file limit and
//! counts the process's descriptors, which the tests there, running in parallel in one process,
//! would break and disturb.

#[path = "it/common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wot_runtime::fd_limit::{RESERVE, limits};

const WAIT: Duration = Duration::from_secs(20);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// Under the default share of one client address (64).
const SOCKETS: usize = 48;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

fn lower_soft_limit(soft: u64) {
    let (_, hard) = limits().expect("getrlimit");
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from the struct it is given, which lives for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// The next JSON text message (pings skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

#[tokio::test]
async fn websockets_leave_the_top_of_the_descriptor_table_to_new_connections() {
    let running = common::start().await;
    let url = format!("ws://{}/things/lamp", running.http_addr);
    let thing_id = running.servient.thing("lamp").expect("lamp").id.clone();

    // Descriptors are numbered lowest free first. With the limit set here, a second descriptor
    // is kept only while its number stays under `lowest_free + 60`: about the first 20 sockets
    // (3 descriptors each: ours, the server's, its duplicate) are written directly, the rest
    // through the dispatcher. The table itself never runs out (48 sockets need about 120).
    let lowest_free = std::fs::File::open("/dev/null").expect("probe").as_raw_fd() as u64;
    lower_soft_limit(lowest_free + RESERVE + 60);
    let before = open_descriptors();

    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let mut request = url.as_str().into_client_request().expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "webthingprotocol".parse().expect("header"),
        );
        let (mut socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("handshake");
        let observe = json!({"thingID": thing_id, "messageID": format!("m{i}"), "messageType": "request",
            "operation": "observeproperty", "name": "brightness", "correlationID": format!("c{i}")});
        socket
            .send(Message::text(observe.to_string()))
            .await
            .expect("send");
        let response = next_json(&mut socket).await;
        assert_eq!(response["messageType"], "response", "{response}");
        sockets.push(socket);
    }
    // Each socket holds ours and the server's descriptor; the rest are duplicates.
    let duplicates = open_descriptors() - before - 2 * SOCKETS;
    assert!(duplicates > 0, "no socket was written directly");
    assert!(
        duplicates < SOCKETS,
        "every socket kept a second descriptor, into the reserve"
    );

    // Both kinds of socket deliver, and the server still accepts connections.
    let response = common::client()
        .put(format!(
            "{}/things/lamp/properties/brightness",
            running.http_url()
        ))
        .json(&json!(37))
        .send()
        .await
        .expect("PUT");
    assert!(response.status().is_success(), "{}", response.status());
    for (i, socket) in sockets.iter_mut().enumerate() {
        let n = next_json(socket).await;
        assert_eq!(n["messageType"], "notification", "{n}");
        assert_eq!(n["name"], "brightness");
        assert_eq!(n["value"], 37);
        assert_eq!(n["correlationID"], format!("c{i}"));
    }
    let td = common::client()
        .get(format!("{}/things/lamp", running.http_url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(td.status(), 200);
    running.stop().await;
}
