//! Benchmark of the WebSocket binding (not a test): event fan-out latency to many subscribers and
//! read round-trips per second.
//!
//!     cargo run --release --example ws_bench -- [--subscribers 10000] [--events 20]
//!         [--readers 64] [--read-secs 5] [--url http://127.0.0.1:8080] [--workers N]
//!         [--client-threads N] [--reader-threads N] [--tungstenite-reader]
//!         [--reader-priority idle|normal] [--warmup 1]
//!
//! Without `--url` it starts the runtime (bundled things, loopback, default workers) in a child
//! process of its own binary. Both processes raise their soft open-file limit to the hard one.
//! The client and the server each hold one descriptor per subscriber, so 10,000 subscribers need
//! a hard limit of at least 10,400 (`ulimit -n 20000`). The bench checks the limit and says so
//! rather than failing halfway.
//!
//! Latency: for each event the bench POSTs `fade` (duration 0) to the lamp, which emits `faded`
//! with the requested level. Each subscriber's latency is reported three ways:
//! - from the emit (the event's `timestamp`, taken by the server when the thing emitted it; same
//!   machine, same clock) to the notification's arrival in the subscriber's socket (the kernel's
//!   `SO_TIMESTAMPNS` receive stamp: on loopback the moment of the server's `send`, which the
//!   load generator's own scheduling does not move). This is the fan-out itself.
//! - from just before the POST to that arrival (adds the HTTP request that triggers the event);
//! - from just before the POST to the moment the load generator read it.
//!
//! p50/p99 are over all (event, subscriber) pairs; "last" is the slowest subscriber per event
//! (the time until everyone had it). The `--warmup` rounds (default 1) run first and are left out
//! of every figure: the first event after 10,000 subscriptions also pays for the kernel growing
//! its socket-buffer caches and the relay building its routing table.
//!
//! The client side is kept lean so that it does not eat the CPU the server needs (both share the
//! machine). Each subscriber is a tokio task that connects, negotiates `webthingprotocol` and
//! subscribes through tungstenite (4 KiB read buffer: its default of 128 KiB is zero-filled on
//! every read, which cost the client more CPU than the server spent); then it takes the TCP stream
//! back, hands it to a reader thread and ends. The reader threads (`--reader-threads`, default 1)
//! read raw WebSocket frames from all their sockets in one epoll loop each (mio), as wrk does: no
//! task wake-up and poll per notification, just one `recvmsg` (a read shorter than the buffer
//! means the socket is drained, and edge-triggered epoll reports the next data, so there is no
//! second read that only returns EAGAIN). The read time is taken right after the read that
//! completed a frame, i.e. when the client has the whole frame (the UTF-8 check and JSON decoding
//! a real client would do next are not included); the receive stamp comes with that read.
//! `--tungstenite-reader` keeps each subscriber task reading through tungstenite instead (read
//! time = the decoded text message; no receive stamps), the reference path. Readers answer the
//! server's pings (it closes a socket that stays silent for 60 s) and write each time into a
//! preallocated slot instead of messaging a collector.
//!
//! The reader threads run under `SCHED_IDLE` (`--reader-priority idle`, the default): they get only
//! CPU time the server leaves unused, as subscribers on other machines would take none of it.
//! They still read every notification, after the fan-out rather than during it, which the
//! receive stamps do not depend on; so the third figure, the read, is late by design there. The
//! kernel still charges the server's `send` with the subscriber side's TCP receive on loopback,
//! about a third of its cost. `--reader-priority normal` lets the readers compete for the two
//! cores as equals instead.
//!
//! The bench also reports the CPU time (user + system, all threads) that the server process and
//! the client process spent per event, from the POST until every subscriber had read it, and the
//! server's for each event: an event that reached its subscribers late is one for which the same
//! 10,000 sends cost the server more CPU.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

struct Args {
    subscribers: usize,
    events: usize,
    readers: usize,
    read_secs: u64,
    url: Option<String>,
    serve: bool,
    /// Server HTTP workers (default: one per core, as `wot serve`).
    workers: Option<usize>,
    /// Client runtime worker threads (default: one per core).
    client_threads: Option<usize>,
    /// Threads reading the subscribers' sockets, each with its own epoll loop.
    reader_threads: usize,
    /// Subscribers read notifications through tungstenite instead of parsing raw frames.
    tungstenite_reader: bool,
    /// The reader threads run at normal priority instead of `SCHED_IDLE`.
    readers_compete: bool,
    /// Rounds run before the measured ones and left out of the figures.
    warmup: usize,
}

fn args() -> Args {
    let mut a = Args {
        subscribers: 10_000,
        events: 20,
        readers: 64,
        read_secs: 5,
        url: None,
        serve: false,
        workers: None,
        client_threads: None,
        reader_threads: 1,
        tungstenite_reader: false,
        readers_compete: false,
        warmup: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--subscribers" => a.subscribers = value().parse().expect("number"),
            "--events" => a.events = value().parse().expect("number"),
            "--readers" => a.readers = value().parse().expect("number"),
            "--read-secs" => a.read_secs = value().parse().expect("number"),
            "--url" => a.url = Some(value()),
            "--serve" => a.serve = true,
            "--workers" => a.workers = Some(value().parse().expect("number")),
            "--client-threads" => a.client_threads = Some(value().parse().expect("number")),
            "--reader-threads" => a.reader_threads = value().parse().expect("number"),
            "--tungstenite-reader" => a.tungstenite_reader = true,
            "--reader-priority" => match value().as_str() {
                "idle" => a.readers_compete = false,
                "normal" => a.readers_compete = true,
                other => panic!("--reader-priority is idle or normal, not {other}"),
            },
            "--warmup" => a.warmup = value().parse().expect("number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.reader_threads >= 1, "--reader-threads must be at least 1");
    // Each round's event carries its own level (1..=100), which identifies the round.
    assert!(
        a.events >= 1 && a.warmup + a.events <= 100,
        "--events must be at least 1 and --warmup + --events at most 100"
    );
    a
}

/// The clock of the CPU time (user + system, all threads) that a process has used: the
/// server's by its pid, or this process's. Nanosecond resolution, where `/proc/<pid>/stat` has
/// 10 ms ticks, too coarse for one round.
#[derive(Clone, Copy)]
struct CpuClock(libc::clockid_t);

impl CpuClock {
    fn of(pid: Option<u32>) -> Option<Self> {
        let Some(pid) = pid else {
            return Some(CpuClock(libc::CLOCK_PROCESS_CPUTIME_ID));
        };
        let mut clock: libc::clockid_t = 0;
        // SAFETY: writes one clockid_t into `clock`, which lives across the call.
        let result = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
        (result == 0).then_some(CpuClock(clock))
    }

    fn now(self) -> Duration {
        let mut at = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec into `at`, which lives across the call.
        if unsafe { libc::clock_gettime(self.0, &mut at) } != 0 {
            return Duration::ZERO;
        }
        Duration::new(at.tv_sec as u64, at.tv_nsec as u32)
    }
}

/// One complete unmasked frame from the server at the start of `buf`: (opcode, payload, frame
/// length), or `None` until all of it has arrived. Only final frames are expected.
fn server_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    assert!(b0 & 0x80 != 0 && b1 & 0x80 == 0, "final, unmasked frames only");
    let (header, len) = match b1 & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]))),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(bytes)).ok()?)
        }
        short => (2, usize::from(short)),
    };
    let payload = buf.get(header..header + len)?;
    Some((b0 & 0x0f, payload, header + len))
}

/// Arrival times (ns since the bench's base instant, +1 so that 0 means "not yet") per (round,
/// subscriber), and per round how many subscribers have it. `at` is when the load generator read
/// the frame; `received` is when the kernel put its last segment into the subscriber's socket
/// (`SO_TIMESTAMPNS`), which the load generator's own scheduling does not move.
struct Arrivals {
    subscribers: usize,
    at: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    delivered: Vec<AtomicUsize>,
    /// Per round, when the server emitted the event (its `timestamp`, ns since the Unix epoch;
    /// 0: not seen yet), from the first notification of the round that arrived.
    emitted: Vec<AtomicU64>,
}

impl Arrivals {
    fn new(subscribers: usize, events: usize) -> Self {
        Arrivals {
            subscribers,
            at: (0..subscribers * events).map(|_| AtomicU64::new(0)).collect(),
            received: (0..subscribers * events).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..events).map(|_| AtomicUsize::new(0)).collect(),
            emitted: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that subscriber `i` got the notification `text`: read at `at`, received by its
    /// socket at `received` (0: unknown).
    fn record(&self, i: usize, text: &[u8], at: u64, received: u64) {
        // `"data":<level>` identifies the event round.
        let Some(pos) = text.windows(7).position(|w| w == b"\"data\":") else {
            return;
        };
        let digits = text[pos + 7..].iter().take_while(|c| c.is_ascii_digit());
        let level = digits.fold(0usize, |l, d| l * 10 + usize::from(d - b'0'));
        if !(1..=self.delivered.len()).contains(&level) {
            return;
        }
        let slot = (level - 1) * self.subscribers + i;
        if self.at[slot]
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.received[slot].store(received, Ordering::Relaxed);
            if self.emitted[level - 1].load(Ordering::Relaxed) == 0
                && let Some(emitted) = event_time(text)
            {
                self.emitted[level - 1].store(emitted, Ordering::Relaxed);
            }
            self.delivered[level - 1].fetch_add(1, Ordering::Release);
        }
    }
}

/// A notification's `timestamp` (when the thing emitted it), in ns since the Unix epoch.
fn event_time(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let start = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = text[start..].iter().position(|&c| c == b'"')?;
    let value = std::str::from_utf8(&text[start..start + len]).ok()?;
    let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos()).ok()
}

/// Records the complete frames at the start of `buf` for subscriber `i`: how many bytes they
/// took, or `None` if the server closed the WebSocket. Pings (the server sends one after 30 s
/// of silence, and closes a socket that does not answer) get their pong appended to `pongs`.
fn frames(buf: &[u8], i: usize, at: (u64, u64), arrivals: &Arrivals, pongs: &mut Vec<u8>) -> Option<usize> {
    let mut used = 0;
    while let Some((opcode, payload, len)) = server_frame(&buf[used..]) {
        match opcode {
            0x1 => arrivals.record(i, payload, at.0, at.1),
            0x8 => return None,
            0x9 => {
                // A client masks what it sends (RFC 6455 §5.3); the key need not be secret here.
                const MASK: [u8; 4] = [0x5a, 0xa5, 0x3c, 0xc3];
                pongs.extend_from_slice(&[0x8a, 0x80 | payload.len() as u8]);
                pongs.extend_from_slice(&MASK);
                pongs.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
            }
            // Continuations do not occur (the server does not fragment).
            _ => {}
        }
        used += len;
    }
    Some(used)
}

/// A subscriber's socket in a reader thread, with the start of a frame that has not fully arrived.
struct Subscriber {
    tcp: TcpStream,
    partial: Vec<u8>,
}

/// One reader thread: registers the sockets that arrive on `sockets` (token = subscriber index)
/// with its own epoll instance and records the notifications they deliver, until `stop`.
fn read_loop(
    sockets: mpsc::Receiver<(usize, std::net::TcpStream)>,
    arrivals: &Arrivals,
    base: Base,
    stop: &AtomicBool,
    compete: bool,
) {
    if !compete {
        yield_to_everything_else().expect("SCHED_IDLE");
    }
    let mut poll = Poll::new().expect("epoll");
    let mut events = Events::with_capacity(1024);
    let mut subscribers: Vec<Option<Subscriber>> = (0..arrivals.subscribers).map(|_| None).collect();
    let mut scratch = [0u8; 4096];
    let mut pongs = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, tcp) in sockets.try_iter() {
            let mut tcp = TcpStream::from_std(tcp);
            stamp_receipts(tcp.as_raw_fd()).expect("SO_TIMESTAMPNS");
            // Data that came before the registration is reported by the first poll.
            poll.registry()
                .register(&mut tcp, Token(i), Interest::READABLE)
                .expect("register");
            subscribers[i] = Some(Subscriber {
                tcp,
                partial: Vec::new(),
            });
        }
        // The timeout bounds how late a new socket is registered and how late `stop` is seen.
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => result.expect("epoll_wait"),
        }
        for event in &events {
            let i = event.token().0;
            let Some(s) = subscribers[i].as_mut() else {
                continue;
            };
            let open = loop {
                let (read, received) = match read_stamped(s.tcp.as_raw_fd(), &mut scratch) {
                    Ok((0, _)) => break false,
                    Ok(read) => read,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                };
                let at = (
                    base.instant.elapsed().as_nanos() as u64 + 1,
                    received.map_or(0, |wall| wall.saturating_sub(base.wall) + 1),
                );
                // Usually the read holds whole frames and is parsed in place; only the start of
                // an incomplete frame is kept (copied) until the rest arrives.
                if s.partial.is_empty() {
                    let Some(used) = frames(&scratch[..read], i, at, arrivals, &mut pongs) else {
                        break false;
                    };
                    s.partial.extend_from_slice(&scratch[used..read]);
                } else {
                    s.partial.extend_from_slice(&scratch[..read]);
                    let Some(used) = frames(&s.partial, i, at, arrivals, &mut pongs) else {
                        break false;
                    };
                    s.partial.drain(..used);
                }
                if !pongs.is_empty() {
                    // A few bytes into an idle socket: they fit, or the socket is gone anyway.
                    let _ = s.tcp.write_all(&pongs);
                    pongs.clear();
                }
                // A short read drained the socket: edge-triggered epoll reports the next data, so
                // reading again would only return EAGAIN. A full buffer may have left more.
                if read < scratch.len() {
                    break true;
                }
            };
            if !open && let Some(mut s) = subscribers[i].take() {
                let _ = poll.registry().deregister(&mut s.tcp);
            }
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only on CPU time that no other thread
/// wants. A subscriber elsewhere would not take the server's CPU, and the receive stamps do not
/// depend on when the reader gets to run.
fn yield_to_everything_else() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` lives across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The bench's time origin, on the monotonic clock (read times) and on the wall clock (the
/// kernel's receive stamps), taken together.
#[derive(Clone, Copy)]
struct Base {
    instant: Instant,
    /// Nanoseconds since the Unix epoch.
    wall: u64,
}

impl Base {
    fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        Base {
            instant: Instant::now(),
            wall: wall.as_nanos() as u64,
        }
    }
}

/// Asks the kernel to stamp every segment this socket receives with the wall-clock time of its
/// arrival (`SO_TIMESTAMPNS`), handed out by [`read_stamped`].
fn stamp_receipts(fd: RawFd) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value is a c_int of the size given.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A `read` that also says when the kernel received the last segment it returned (ns since the
/// Unix epoch), if the socket stamps receipts.
fn read_stamped(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec control message; u64s keep the cmsghdr aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data, for which all zeroes is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `buf` and `control`, both alive and writable for the call.
    let read = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with well-formed control
    // messages; CMSG_* walk exactly those, and the data of an SCM_TIMESTAMPNS one is a timespec.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(at.tv_sec as u64 * 1_000_000_000 + at.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((read as usize, stamp))
}

fn serve(workers: Option<usize>) {
    // Started on its own (`--serve`), the server raises its limit itself.
    let _ = wot_runtime::fd_limit::raise_to_hard();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut ids = wot_runtime::things::IdStore::new(None);
        let hosted = wot_runtime::things::bundled()
            .into_iter()
            .map(|d| wot_runtime::things::expose(d.expect("bundled"), &mut ids).expect("expose"))
            .collect();
        let config = wot_runtime::runtime::Config {
            host: [127, 0, 0, 1].into(),
            http_port: 0,
            no_coap: true,
            no_mdns: true,
            // Every subscriber comes from 127.0.0.1: lift the subscriber pool's limits.
            subscribers: wot_runtime::runtime::SubscriberLimits {
                per_client: usize::MAX,
                total: usize::MAX,
            },
            ..Default::default()
        };
        let config = wot_runtime::runtime::Config {
            workers: workers.unwrap_or(config.workers),
            ..config
        };
        let running = wot_runtime::runtime::Running::start(config, hosted)
            .await
            .expect("start");
        println!("{}", running.ready_line());
        std::io::stdout().flush().expect("flush");
        // Runs until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .expect("stdin");
        running.stop().await;
    });
}

/// One way of timing deliveries: every (event, subscriber) latency, sorted, and per event the
/// fastest and slowest subscriber, in event order.
struct Latencies {
    all: Vec<Duration>,
    firsts: Vec<Duration>,
    lasts: Vec<Duration>,
}

impl Latencies {
    /// From a table of arrival times (ns since the base, +1; 0 = none), `n` per event, and the
    /// events' emit times.
    fn of(table: &[AtomicU64], emitted: &[Duration], n: usize) -> Self {
        let mut all = Vec::with_capacity(table.len());
        let mut firsts = Vec::with_capacity(emitted.len());
        let mut lasts = Vec::with_capacity(emitted.len());
        for (round, t0) in emitted.iter().enumerate() {
            let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
            for slot in &table[round * n..(round + 1) * n] {
                let at = slot.load(Ordering::Relaxed);
                if at > 0 {
                    let d = Duration::from_nanos(at - 1).saturating_sub(*t0);
                    all.push(d);
                    first = first.min(d);
                    last = last.max(d);
                }
            }
            firsts.push(first.min(last));
            lasts.push(last);
        }
        all.sort();
        Latencies { all, firsts, lasts }
    }

    fn print(&self, what: &str) {
        let mut lasts = self.lasts.clone();
        lasts.sort();
        println!(
            "- {what}: p50 {} p99 {} max {}; time to last delivery per event p50 {} max {}",
            ms(percentile(&self.all, 0.50)),
            ms(percentile(&self.all, 0.99)),
            ms(*self.all.last().unwrap_or(&Duration::ZERO)),
            ms(percentile(&lasts, 0.50)),
            ms(*lasts.last().unwrap_or(&Duration::ZERO)),
        );
        println!("    first delivery per event (ms): {}", per_round(&self.firsts));
        println!("    last delivery per event (ms):  {}", per_round(&self.lasts));
    }
}

/// Durations in whole milliseconds, one per round.
fn per_round(ds: &[Duration]) -> String {
    ds.iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let a = args();
    if a.serve {
        serve(a.workers);
        return;
    }
    // Children inherit the raised limit.
    match wot_runtime::fd_limit::raise_to_hard() {
        Ok(limit) => {
            let sockets = a.subscribers.max(a.readers) as u64;
            let needed = sockets + wot_runtime::fd_limit::RESERVE + 128;
            if limit < needed {
                eprintln!(
                    "open-file limit {limit} < {needed}: run `ulimit -n {}` first",
                    needed + 1024
                );
                std::process::exit(2);
            }
        }
        Err(e) => eprintln!("open-file limit unknown ({e}); going on"),
    }
    let mut child: Option<std::process::Child> = None;
    let http = match &a.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let exe = std::env::current_exe().expect("own path");
            let mut command = std::process::Command::new(exe);
            command.arg("--serve");
            if let Some(w) = a.workers {
                command.args(["--workers", &w.to_string()]);
            }
            let mut c = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("server child");
            let mut line = String::new();
            BufReader::new(c.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("ready line");
            let ready: Value = serde_json::from_str(&line).expect("ready JSON");
            child = Some(c);
            ready["http"].as_str().expect("http origin").to_owned()
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.client_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().expect("runtime");
    let server_cpu = child.as_ref().and_then(|c| CpuClock::of(Some(c.id())));
    rt.block_on(bench(&a, &http, server_cpu));
    if let Some(mut c) = child {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}

async fn bench(a: &Args, http: &str, server_cpu: Option<CpuClock>) {
    let ws = http.replacen("http", "ws", 1) + "/things/lamp";
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let td: Value = client
        .get(format!("{http}/things/lamp"))
        .send()
        .await
        .expect("TD")
        .json()
        .await
        .expect("TD JSON");
    let thing_id = td["id"].as_str().expect("TD id").to_owned();

    // ---- fan-out
    println!("connecting {} subscribers to {ws} ...", a.subscribers);
    let started = Instant::now();
    let base = Base::now();
    let n = a.subscribers;
    let rounds = a.warmup + a.events;
    let arrivals = Arc::new(Arrivals::new(n, rounds));
    let connected = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Without `--tungstenite-reader`, subscribers are dealt round-robin to the reader threads once
    // subscribed.
    let mut to_readers = Vec::new();
    let mut reader_threads = Vec::new();
    if !a.tungstenite_reader {
        for t in 0..a.reader_threads {
            let (sender, sockets) = mpsc::channel();
            let (arrivals, stop, compete) = (arrivals.clone(), stop.clone(), a.readers_compete);
            to_readers.push(sender);
            reader_threads.push(
                std::thread::Builder::new()
                    .name(format!("ws-reader-{t}"))
                    .spawn(move || read_loop(sockets, &arrivals, base, &stop, compete))
                    .expect("reader thread"),
            );
        }
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(256));
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (ws, thing_id, arrivals, connected, semaphore) = (
            ws.clone(),
            thing_id.clone(),
            arrivals.clone(),
            connected.clone(),
            semaphore.clone(),
        );
        let to_reader = to_readers.get(i % a.reader_threads).cloned();
        tasks.push(tokio::spawn(async move {
            let permit = semaphore.acquire_owned().await.expect("semaphore");
            let mut request = ws.into_client_request().expect("request");
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "webthingprotocol".parse().expect("header"),
            );
            let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .expect("connect");
            let subscribe = json!({"thingID": thing_id, "messageID": uuid::Uuid::new_v4().to_string(),
                "messageType": "request", "operation": "subscribeevent", "name": "faded",
                "correlationID": format!("s{i}")});
            socket
                .send(Message::text(subscribe.to_string()))
                .await
                .expect("subscribe");
            while let Some(Ok(m)) = socket.next().await {
                if let Message::Text(t) = m
                    && t.contains("\"response\"")
                {
                    break;
                }
            }
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            match to_reader {
                // `--tungstenite-reader`
                None => {
                    while let Some(Ok(m)) = socket.next().await {
                        if let Message::Text(t) = m {
                            arrivals.record(i, t.as_bytes(), base.instant.elapsed().as_nanos() as u64 + 1, 0);
                        }
                    }
                }
                Some(to_reader) => {
                    // Nothing is in flight now (events start once everyone is subscribed), so no
                    // buffered bytes are lost by taking the socket back from tungstenite.
                    let MaybeTlsStream::Plain(tcp) = socket.into_inner() else {
                        panic!("plain TCP expected")
                    };
                    // Leaves tokio's reactor; the socket stays nonblocking.
                    let tcp = tcp.into_std().expect("std socket");
                    to_reader.send((i, tcp)).expect("reader thread");
                }
            }
        }));
    }
    while (connected.load(Ordering::Relaxed) as usize) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{n} subscribed in {}", ms(started.elapsed()));

    let client_cpu = CpuClock::of(None);
    let mut emitted = Vec::with_capacity(rounds);
    // Per round, the CPU the server and the load generator spent from the POST until every
    // subscriber had read the event.
    let (mut server_spent, mut client_spent) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let level = (round + 1) as u64;
        let cpu0 = (server_cpu.map(CpuClock::now), client_cpu.map(CpuClock::now));
        let t0 = Instant::now();
        emitted.push(t0.duration_since(base.instant));
        let response = client
            .post(format!("{http}/things/lamp/actions/fade"))
            .json(&json!({"level": level, "duration": 0}))
            .send()
            .await
            .expect("invoke fade");
        assert_eq!(response.status(), 201, "fade accepted");
        // Arrival times are taken by the readers; this only waits for the round to end.
        let delivered = &arrivals.delivered[round];
        while delivered.load(Ordering::Acquire) < n && t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let (Some(clock), Some(before)) = (server_cpu, cpu0.0) {
            server_spent.push(clock.now() - before);
        }
        if let (Some(clock), Some(before)) = (client_cpu, cpu0.1) {
            client_spent.push(clock.now() - before);
        }
        let got = delivered.load(Ordering::Acquire);
        if got < n {
            println!("round {round}: only {got}/{n} delivered within 30 s");
        }
        // Let the fade's brightness and status notifications settle between rounds.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // When each event was emitted, by its timestamp; the POST's start where none arrived.
    let event_emitted: Vec<Duration> = arrivals
        .emitted
        .iter()
        .zip(&emitted)
        .map(|(wall, posted)| match wall.load(Ordering::Relaxed) {
            0 => *posted,
            wall => Duration::from_nanos(wall.saturating_sub(base.wall)),
        })
        .collect();
    println!(
        "fan-out: {n} subscribers x {} events (after {} warm-up), per-subscriber time; \
         readers at {} priority",
        a.events,
        a.warmup,
        // `--tungstenite-reader` reads in the runtime's tasks, which stay at normal priority.
        if a.readers_compete || a.tungstenite_reader {
            "normal"
        } else {
            "idle"
        }
    );
    // The warm-up rounds are left out of every figure.
    let skip = a.warmup * n;
    let (received_at, read_at) = (&arrivals.received[skip..], &arrivals.at[skip..]);
    let (event_emitted, emitted) = (&event_emitted[a.warmup..], &emitted[a.warmup..]);
    let received = Latencies::of(received_at, event_emitted, n);
    if received.all.is_empty() {
        println!("- arrival in its socket: not stamped (--tungstenite-reader)");
    } else {
        received.print("from emit (the event's timestamp) to arrival in its socket (kernel receive stamp)");
        Latencies::of(received_at, emitted, n).print("from the POST to arrival in its socket");
    }
    Latencies::of(read_at, emitted, n).print("from the POST to its read by the load generator");
    let mean = |spent: &[Duration]| match spent.get(a.warmup..) {
        Some(spent) if !spent.is_empty() => ms(spent.iter().sum::<Duration>() / spent.len() as u32),
        _ => "n/a".to_owned(),
    };
    println!(
        "cpu per event (user+system, from the POST until all had read it): server {} client {}",
        mean(&server_spent),
        mean(&client_spent)
    );
    if let Some(spent) = server_spent.get(a.warmup..) {
        println!("    server cpu per event (ms):     {}", per_round(spent));
    }
    // Subscriber tasks still run only with `--tungstenite-reader`; the reader threads drop their
    // sockets when they stop.
    for t in tasks {
        t.abort();
    }
    stop.store(true, Ordering::Relaxed);
    for t in reader_threads {
        t.join().expect("reader thread");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ---- read round-trips
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(a.read_secs);
    let mut readers = Vec::new();
    for r in 0..a.readers {
        let (ws, thing_id, count) = (ws.clone(), thing_id.clone(), count.clone());
        readers.push(tokio::spawn(async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str())
                .await
                .expect("connect");
            let mut n = 0u64;
            while Instant::now() < until {
                let request = json!({"thingID": thing_id, "messageID": "m", "messageType": "request",
                    "operation": "readproperty", "name": "brightness", "correlationID": format!("r{r}-{n}")});
                socket
                    .send(Message::text(request.to_string()))
                    .await
                    .expect("send");
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(t))) if t.contains("\"value\"") => break,
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                }
                n += 1;
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let t0 = Instant::now();
    for r in readers {
        let _ = r.await;
    }
    let total = count.load(Ordering::Relaxed);
    println!(
        "reads: {} sockets, sequential readproperty round-trips: {total} in {:.1} s = {:.0}/s",
        a.readers,
        t0.elapsed().as_secs_f64(),
        total as f64 / t0.elapsed().as_secs_f64()
    );
}
