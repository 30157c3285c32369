//! coaps load generator: property GETs (CON, piggybacked answers) over DTLS 1.2 sessions that
//! are already established (PSK, TLS_PSK_WITH_AES_128_CCM_8), beside the same GETs over plain
//! CoAP against the same `wot serve`, closed loop at a given concurrency (one socket and one
//! session per worker); reports req/s, p50 and p99 latency. The handshakes are timed apart. A
//! benchmark, not a test: nothing here is asserted.
//!
//!     cargo build --release --bin wot
//!     cargo run --release --example coaps_bench -- [--concurrency 64] [--requests 200000]
//!         [--server target/release/wot] [--path /things/lamp/properties/brightness]

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use dimpl::crypto::{Dtls12CipherSuite, rust_crypto};
use dimpl::{Dtls, Output, PskResolver};
use tokio::net::UdpSocket;

const IDENTITY: &str = "bench";
const KEY: &str = "bench-key";

struct Key;

impl PskResolver for Key {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(KEY.as_bytes().to_vec())
    }
}

fn request(path: &str, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    for s in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p.to_bytes().expect("encodable")
}

/// A worker's connection: plain UDP, or a DTLS session on it.
struct Conn {
    socket: UdpSocket,
    dtls: Option<Dtls>,
    buf: Vec<u8>,
    plain: Vec<Vec<u8>>,
}

impl Conn {
    async fn open(server: SocketAddr, secure: bool) -> Conn {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(server).await.expect("connect");
        let dtls = secure.then(|| {
            let config = dimpl::Config::builder()
                .with_crypto_provider(rust_crypto::default_provider())
                .with_psk_client(IDENTITY.as_bytes().to_vec(), Arc::new(Key))
                .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
                .dtls13_cipher_suites(&[])
                .build()
                .expect("config");
            let mut d = Dtls::new_12_psk(Arc::new(config), Instant::now());
            d.set_active(true);
            d
        });
        let mut conn = Conn {
            socket,
            dtls,
            buf: vec![0u8; 2048],
            plain: Vec::new(),
        };
        if let Some(d) = &mut conn.dtls {
            // The ClientHello comes out once the clock has been given.
            d.handle_timeout(Instant::now()).expect("start");
            let mut connected = false;
            while !connected {
                connected = conn.flush().await;
                if connected {
                    break;
                }
                let mut rx = [0u8; 2048];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), conn.socket.recv(&mut rx)).await
                    && let Some(d) = &mut conn.dtls
                {
                    d.handle_packet(&rx[..n]).expect("handshake");
                }
                if let Some(d) = &mut conn.dtls {
                    d.handle_timeout(Instant::now()).expect("handshake");
                }
                connected = conn.flush().await;
            }
        }
        conn
    }

    /// Sends dimpl's records; true once connected.
    async fn flush(&mut self) -> bool {
        let mut connected = false;
        let Some(d) = &mut self.dtls else {
            return true;
        };
        loop {
            match d.poll_output(&mut self.buf) {
                Output::Packet(p) => {
                    let _ = self.socket.send(p).await;
                }
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(_) => break,
                Output::Connected => connected = true,
                Output::ApplicationData(data) => self.plain.push(data.to_vec()),
                _ => {}
            }
        }
        connected
    }

    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.dtls {
            Some(d) => {
                d.send_application_data(bytes).expect("send");
                self.flush().await;
            }
            None => {
                let _ = self.socket.send(bytes).await;
            }
        }
    }

    /// The next CoAP datagram, within `wait`.
    async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        loop {
            if !self.plain.is_empty() {
                return Some(self.plain.remove(0));
            }
            let mut rx = [0u8; 2048];
            let n = tokio::time::timeout(wait, self.socket.recv(&mut rx))
                .await
                .ok()?
                .ok()?;
            match &mut self.dtls {
                Some(d) => {
                    d.handle_packet(&rx[..n]).ok()?;
                    self.flush().await;
                }
                None => return Some(rx[..n].to_vec()),
            }
        }
    }
}

async fn worker(mut conn: Conn, path: Arc<String>, budget: Arc<AtomicU64>, lost: Arc<AtomicU64>) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut mid: u16 = rand::random();
    let mut bytes = request(&path, mid);
    while budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        mid = mid.wrapping_add(1);
        bytes[2..4].copy_from_slice(&mid.to_be_bytes());
        let started = Instant::now();
        conn.send(&bytes).await;
        loop {
            match conn.recv(Duration::from_millis(500)).await {
                Some(b) if b.len() >= 4 && u16::from_be_bytes([b[2], b[3]]) == mid => {
                    latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    break;
                }
                Some(_) => continue,
                None => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    latencies
}

async fn run(server: SocketAddr, secure: bool, path: &str, concurrency: usize, requests: u64) -> String {
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        conns.push(Conn::open(server, secure).await);
    }
    let handshakes = started.elapsed();
    let budget = Arc::new(AtomicU64::new(requests));
    let lost = Arc::new(AtomicU64::new(0));
    let path = Arc::new(path.to_owned());
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(worker(c, path.clone(), budget.clone(), lost.clone())))
        .collect();
    let mut all = Vec::with_capacity(requests as usize);
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    format!(
        "{:<6} c={concurrency:<3} {:>8.0} req/s  p50 {} µs  p99 {} µs  lost {}  ({} sessions set up in {:.0} ms)",
        if secure { "coaps" } else { "coap" },
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lost.load(Ordering::Relaxed),
        concurrency,
        handshakes.as_secs_f64() * 1000.0
    )
}

fn main() {
    let mut concurrency = 64usize;
    let mut requests = 200_000u64;
    let mut server = "target/release/wot".to_owned();
    let mut path = "/things/lamp/properties/brightness".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--concurrency" | "-c" => concurrency = value.parse().expect("a number"),
            "--requests" | "-n" => requests = value.parse().expect("a number"),
            "--server" => server = value,
            "--path" => path = value,
            other => panic!("unknown flag {other}"),
        }
    }
    let psk = format!("{IDENTITY}:{KEY}");
    let mut child = Command::new(&server)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--coap-port",
            "0",
            "--coaps-port",
            "0",
            "--no-mdns",
            "--coap-psk",
            &psk,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wot serve (build it with cargo build --release --bin wot)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("ready JSON");
    let addr = |key: &str, scheme: &str| -> SocketAddr {
        ready[key]
            .as_str()
            .expect("in the ready line")
            .trim_start_matches(scheme)
            .parse()
            .expect("IP:PORT")
    };
    let (coap, coaps) = (addr("coap", "coap://"), addr("coaps", "coaps://"));
    // The client gets one thread, so the server keeps the other core of a 2-core machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(coap, false, &path, 8, 20_000).await; // warm-up
        run(coaps, true, &path, 8, 20_000).await;
        for c in [1, concurrency] {
            let n = if c == 1 {
                (requests / 10).max(10_000)
            } else {
                requests
            };
            println!("{}", run(coap, false, &path, c, n).await);
            println!("{}", run(coaps, true, &path, c, n).await);
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}
