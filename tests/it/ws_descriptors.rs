//! A WebSocket holds one descriptor: that of the connection it was upgraded from, which its
//! outbound queue writes to (plain TCP here) and nothing duplicates. The server is a `wot serve`
//! child whose descriptors the test counts: the table is per process, and this test shares its
//! process with every other test of the binary, running in parallel.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common;

const WAIT: Duration = Duration::from_secs(20);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// Under the default share of one client address (64).
const SOCKETS: usize = 48;

/// A `wot serve` process, killed when dropped.
struct Serve {
    child: Child,
    http: String,
    /// Kept open: the server's stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wot"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--no-coap",
                "--no-mdns",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wot serve starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a ready line");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        let http = ready["http"].as_str().expect("http").to_owned();
        Serve {
            child,
            http,
            _stdout: stdout,
        }
    }

    /// The descriptors the server holds open: number → what it refers to (`socket:[inode]`, ...).
    fn descriptors(&self) -> std::collections::BTreeMap<u64, String> {
        let dir = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(&dir)
            .expect("the server's /proc/PID/fd")
            .filter_map(|entry| {
                let entry = entry.expect("an fd entry");
                let fd = entry.file_name().to_str()?.parse().ok()?;
                // A descriptor closed meanwhile has no link any more.
                let target = std::fs::read_link(entry.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// For each of the server's ends of the connections from these client ports, how many of
    /// its descriptors refer to it (a duplicate refers to the same socket).
    fn descriptors_per_connection(&self, client_ports: &[u16]) -> Vec<usize> {
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
        let server_port = self.http.rsplit(':').next().and_then(|p| p.parse().ok());
        let tcp = std::fs::read_to_string(format!("/proc/{}/net/tcp", self.child.id())).expect("net/tcp");
        let inodes: std::collections::HashMap<u16, String> = tcp
            .lines()
            .skip(1)
            .filter_map(|row| {
                let fields: Vec<&str> = row.split_whitespace().collect();
                let client = port(fields[2]).filter(|p| client_ports.contains(p))?;
                (port(fields[1]) == server_port).then(|| (client, format!("socket:[{}]", fields[9])))
            })
            .collect();
        let held = self.descriptors();
        client_ports
            .iter()
            .map(|client| {
                let inode = inodes.get(client).expect("the server's end of the connection");
                held.values().filter(|target| *target == inode).count()
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Opens `count` Web Thing Protocol sockets observing brightness, numbered from `first`.
async fn observers(url: &str, thing_id: &str, first: usize, count: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(count);
    for i in first..first + count {
        let mut request = url.into_client_request().expect("request");
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
    sockets
}

fn client_port(socket: &Socket) -> u16 {
    match socket.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
        _ => panic!("plain TCP"),
    }
}

#[tokio::test]
async fn a_websocket_holds_only_the_descriptor_of_its_connection() {
    let serve = Serve::start();
    let url = format!("{}/things/lamp", serve.http.replacen("http", "ws", 1));
    // A TD URL names the socket's thing.
    let thing_id = format!("{}/things/lamp", serve.http);
    let mut sockets = observers(&url, &thing_id, 0, SOCKETS).await;

    let ports: Vec<u16> = sockets.iter().map(client_port).collect();
    let held = serve.descriptors_per_connection(&ports);
    assert_eq!(held, vec![1; SOCKETS], "descriptors per connection");

    // Every socket delivers, and the server still answers plain requests.
    let response = common::client()
        .put(format!("{}/things/lamp/properties/brightness", serve.http))
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
        .get(format!("{}/things/lamp", serve.http))
        .send()
        .await
        .expect("GET");
    assert_eq!(td.status(), 200);
}
