//! CoAP load generator: property GETs (CON, piggybacked answers) against `wot serve`, closed
//! loop at a given concurrency; reports req/s, p50 and p99 latency, and the server's RSS
//! before and after. A benchmark, not a test: nothing here is asserted.
//!
//!     cargo build --release --bin wot
//!     cargo run --release --example coap_bench -- [--concurrency 64] [--requests 1000000]
//!         [--server target/release/wot] [--path /things/lamp/properties/brightness]
//!         [--target coap://127.0.0.1:5683]   (use a running server instead of starting one)

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;

struct Args {
    concurrency: usize,
    requests: u64,
    server: String,
    path: String,
    target: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        concurrency: 64,
        requests: 1_000_000,
        server: "target/release/wot".into(),
        path: "/things/lamp/properties/brightness".into(),
        target: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--concurrency" | "-c" => a.concurrency = value.parse().expect("a number"),
            "--requests" | "-n" => a.requests = value.parse().expect("a number"),
            "--server" => a.server = value,
            "--path" => a.path = value,
            "--target" => a.target = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn request(path: &str, mid: u16, token: u32) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(token.to_be_bytes().to_vec());
    for s in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p.to_bytes().expect("encodable")
}

/// One closed-loop worker: send, wait for the matching ACK, record the latency in µs.
async fn worker(
    server: SocketAddr,
    path: Arc<String>,
    budget: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
) -> Vec<u32> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    let mut latencies = Vec::new();
    let mut buf = [0u8; 1500];
    let mut mid: u16 = rand_seed();
    // One encoded request, re-used with a fresh message ID each time.
    let mut bytes = request(&path, mid, u32::from(mid));
    while budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        mid = mid.wrapping_add(1);
        bytes[2..4].copy_from_slice(&mid.to_be_bytes());
        let started = Instant::now();
        socket.send(&bytes).await.expect("send");
        loop {
            match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 4 && u16::from_be_bytes([buf[2], buf[3]]) == mid => {
                    latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    latencies
}

fn rand_seed() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

async fn run(server: SocketAddr, path: &str, concurrency: usize, requests: u64) -> (f64, u32, u32, u64) {
    let budget = Arc::new(AtomicU64::new(requests));
    let lost = Arc::new(AtomicU64::new(0));
    let path = Arc::new(path.to_owned());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(server, path.clone(), budget.clone(), lost.clone())))
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
    (
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lost.load(Ordering::Relaxed),
    )
}

fn main() {
    let a = args();
    let mut child = None;
    let (target, pid) = match &a.target {
        Some(t) => (t.clone(), None),
        None => {
            let mut c = Command::new(&a.server)
                .args([
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--http-port",
                    "0",
                    "--coap-port",
                    "0",
                    "--no-mdns",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start wot serve (build it with cargo build --release --bin wot)");
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("ready line");
            let ready: serde_json::Value = serde_json::from_str(&line).expect("ready JSON");
            let coap = ready["coap"].as_str().expect("coap in the ready line").to_owned();
            let pid = c.id();
            child = Some(c);
            (coap, Some(pid))
        }
    };
    let server: SocketAddr = target
        .trim_start_matches("coap://")
        .parse()
        .expect("coap://IP:PORT");
    // The client gets one thread, so the server keeps the other core of a 2-core machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(server, &a.path, 8, 20_000).await; // warm-up
        let rss_before = pid.and_then(rss_kib);
        let (rate1, p50, p99, lost) = run(server, &a.path, 1, (a.requests / 10).max(10_000)).await;
        println!("c=1   {rate1:>9.0} req/s  p50 {p50} µs  p99 {p99} µs  lost {lost}");
        let (rate, p50, p99, lost) = run(server, &a.path, a.concurrency, a.requests).await;
        println!(
            "c={:<3} {rate:>9.0} req/s  p50 {p50} µs  p99 {p99} µs  lost {lost}  ({} requests)",
            a.concurrency, a.requests
        );
        let rss_after = pid.and_then(rss_kib);
        let (rate, p50, p99, lost) = run(server, &a.path, a.concurrency, a.requests).await;
        println!(
            "c={:<3} {rate:>9.0} req/s  p50 {p50} µs  p99 {p99} µs  lost {lost}  (again)",
            a.concurrency
        );
        if let (Some(before), Some(after), Some(again)) = (rss_before, rss_after, pid.and_then(rss_kib)) {
            println!(
                "server RSS: {before} KiB before, {after} KiB after {} requests, {again} KiB after {} more",
                a.requests, a.requests
            );
        }
    });
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}
