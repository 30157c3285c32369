//! Shared test harness: a real runtime on loopback (port 0) with the bundled things, and helpers
//! to talk to it. Nothing here mocks the runtime.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::{self, Hosted, IdStore};

/// Exposes the bundled things.
pub fn bundled_things() -> Vec<Hosted> {
    let mut ids = IdStore::new(None);
    things::bundled()
        .into_iter()
        .map(|d| things::expose(d.expect("bundled thing parses"), &mut ids).expect("bundled thing builds"))
        .collect()
}

/// The bundled things with every behaviour period (`periodMs` of drift and simulated sources,
/// `pollMs` of file and command sources) cut to at most `period`: the same TDs and the same
/// behaviours, at test speed. The thermostat's temperature drifts every 1 s as bundled, so a
/// test waiting for it to pass 25 °C would wait seconds.
pub fn bundled_things_every(period: Duration) -> Vec<Hosted> {
    fn cap(value: &mut Value, ms: u64) {
        match value {
            Value::Object(members) => {
                for (key, member) in members.iter_mut() {
                    match member.as_u64() {
                        Some(current) if key == "periodMs" || key == "pollMs" => {
                            *member = current.min(ms).into()
                        }
                        _ => cap(member, ms),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| cap(item, ms)),
            _ => {}
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("things");
    let mut ids = IdStore::new(None);
    ["lamp.json", "thermostat.json", "host.json"]
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
            let mut model: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("bundled thing file"))
                    .expect("JSON");
            cap(&mut model, period.as_millis() as u64);
            let definition = wot_runtime::td::definition::parse(&path, &model.to_string())
                .unwrap_or_else(|p| panic!("{name}: {p:?}"));
            things::expose(definition, &mut ids).expect("bundled thing builds")
        })
        .collect()
}

/// Starts a runtime with [`bundled_things_every`] 50 ms.
pub async fn start_at_test_speed(config: Config) -> Running {
    Running::start(config, bundled_things_every(Duration::from_millis(50)))
        .await
        .expect("runtime starts")
}

/// Starts a runtime on the thing files of `dir`, watching it for changes (hot reload) with
/// `config`'s period; `config.watch_dir` is set to `dir`.
pub async fn serve_dir(dir: &std::path::Path, config: Config) -> Running {
    let mut ids = IdStore::new(None);
    let hosted = wot_runtime::td::definition::load_dir(dir)
        .expect("things dir")
        .into_iter()
        .map(|d| things::expose(d.expect("thing file loads"), &mut ids).expect("thing builds"))
        .collect();
    let config = Config {
        watch_dir: Some(dir.to_owned()),
        ..config
    };
    Running::start_with_ids(config, hosted, ids)
        .await
        .expect("runtime starts")
}

/// Polls `check` every 50 ms until it holds; fails the test after `wait`.
pub async fn eventually<F, Fut>(what: &str, wait: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(wait, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen"));
}

/// Multicast tests (mDNS, CoAP multicast) run only when asked, and `.ci` asks only inside
/// netns-run. They run one at a time, across modules too: two runtimes announcing the same
/// bundled things at once would (rightly) rename each other's instances. Hold the guard for the
/// whole test; `None` means skip. For a test outside any runtime; see [`mdns_allowed_async`].
pub fn mdns_allowed() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    mdns_tests_enabled().then(|| ONE_MULTICAST_TEST_AT_A_TIME.blocking_lock())
}

/// [`mdns_allowed`] for an async test.
pub async fn mdns_allowed_async() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    match mdns_tests_enabled() {
        true => Some(ONE_MULTICAST_TEST_AT_A_TIME.lock().await),
        false => None,
    }
}

static ONE_MULTICAST_TEST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn mdns_tests_enabled() -> bool {
    let enabled = std::env::var("WOT_MDNS_TESTS").as_deref() == Ok("1");
    if !enabled {
        eprintln!("skipped: multicast test; run under ../shared/tools/netns-run with WOT_MDNS_TESTS=1");
    }
    enabled
}

/// Starts a runtime with the bundled things on a free loopback port.
pub async fn start() -> Running {
    start_with(Config::loopback()).await
}

pub async fn start_with(config: Config) -> Running {
    Running::start(config, bundled_things())
        .await
        .expect("runtime starts")
}

/// Hangs up `sockets`, as clients that are done leave, then stops the runtime. A WebSocket
/// still open when the stop begins is closed by the server (1001) and holds the stop for the
/// grace it gives open connections (1 s), whether or not its client reads on and answers;
/// `ws::shutdown_closes_sockets_with_1001` looks at that close.
pub async fn hang_up_then_stop<S>(
    running: Running,
    sockets: impl IntoIterator<Item = tokio_tungstenite::WebSocketStream<S>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    futures_util::future::join_all(sockets.into_iter().map(hang_up)).await;
    running.stop().await;
}

/// Ends the client's side of a WebSocket connection (TCP FIN; close_notify first under TLS) and
/// reads until the stream ends, normally at the server's end of the connection: then the server
/// holds nothing of it.
pub async fn hang_up<S>(mut socket: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let _ = socket.get_mut().shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = socket.next().await {}
    });
    ended
        .await
        .expect("the server ends a connection its client hung up");
}

/// An HTTP client for the runtime's plain-HTTP port. It trusts no certificate at all (HTTPS tests
/// use [`trusting_client`]), so building one is cheap: with the platform's roots, each build
/// would read and parse them again (some 30 ms in a debug build), and tests build many.
pub fn client() -> reqwest::Client {
    static NO_ROOTS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    let tls = NO_ROOTS.get_or_init(|| {
        // rustls uses ring, as the server does.
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
    });
    // The process's default provider too, for the TLS configurations that take it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(CLIENT_IDLE)
        .build()
        .expect("client")
}

/// Pooled connections are dropped by the client well before the server's idle timeout (15 s),
/// so a request never races the server closing its connection.
const CLIENT_IDLE: Duration = Duration::from_secs(5);

/// Sends a request and parses the JSON answer, failing the test on any error.
pub async fn json_of<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("a JSON answer")
}

/// GETs a URL and parses the JSON answer, failing the test on any error.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    json_of(client.get(url)).await
}

/// A TLS client configuration that trusts exactly the certificates in `cert_pem`.
pub fn trusting_tls(cert_pem: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem).expect("PEM file") {
        roots.add(cert.expect("certificate")).expect("a usable root");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS client that trusts exactly the certificates in `cert_pem`.
pub fn trusting_client(cert_pem: &std::path::Path) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(trusting_tls(cert_pem))
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(CLIENT_IDLE)
        .build()
        .expect("client")
}

/// Asserts a TD validates against the W3C TD 1.1 schema.
pub fn assert_valid_td(td: &Value) {
    let violations = wot_runtime::td::validate::td_violations(td);
    assert!(
        violations.is_empty(),
        "TD does not validate: {violations:#?}\n{td:#}"
    );
}

/// Reads SSE frames from a streaming response until `want` frames with data have arrived.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame that carries data (comments are skipped). Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> SseFrame {
        tokio::time::timeout(timeout, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut frame = SseFrame {
                        event: None,
                        id: None,
                        data: String::new(),
                    };
                    let mut has_data = false;
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            frame.event = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("id: ") {
                            frame.id = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            frame.data.push_str(v);
                            has_data = true;
                        }
                    }
                    if has_data {
                        return frame;
                    }
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .expect("stream readable")
                    .expect("stream still open");
                self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            }
        })
        .await
        .expect("an SSE frame within the timeout")
    }

    /// The response underneath, to read to its end.
    pub fn into_response(self) -> reqwest::Response {
        self.response
    }

    /// Reads raw text until `needle` appears (used for comments such as keep-alives).
    pub async fn wait_for_text(&mut self, needle: &str, timeout: Duration) {
        tokio::time::timeout(timeout, async {
            while !self.buffer.contains(needle) {
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .expect("stream readable")
                    .expect("stream still open");
                self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            }
        })
        .await
        .expect("text within the timeout");
    }
}

/// Opens a WebSocket at `path` over a raw TCP stream that then answers nothing, as a peer that
/// vanished would (a WebSocket library would answer pings): sends the handshake, with
/// `extra_headers` (each ending in CRLF), and returns. `receive_buffer` shrinks the socket's
/// receive buffer, so that the server's frames back up soon.
pub async fn silent_websocket(
    addr: std::net::SocketAddr,
    path: &str,
    extra_headers: &str,
    receive_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        tcp.set_recv_buffer_size(bytes).unwrap();
    }
    let mut raw = tcp.connect(addr).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    raw
}

/// Everything the server sent on `raw` until it closed the connection: the HTTP head, then the
/// whole frames as (opcode, payload) (a last frame cut short by a dropped connection is left out). Fails if the server does not close it within 10 s.
pub async fn until_server_closes(mut raw: tokio::net::TcpStream) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut bytes))
        .await
        .expect("the server closes the socket in time")
        .unwrap();
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head")
        + 4;
    // Server frames are unmasked: [FIN|opcode, len (126: 16-bit length follows), payload].
    let mut frames = Vec::new();
    let mut rest = &bytes[head_end..];
    while rest.len() >= 2 {
        let (opcode, len, header) = match rest[1] & 0x7f {
            126 => (rest[0] & 0x0f, u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => panic!("no frame this large is expected"),
            len => (rest[0] & 0x0f, len as usize, 2),
        };
        if rest.len() < header + len {
            // The server cut the connection in the middle of a frame: it dropped a peer that
            // had stopped reading, after the socket took part of the frame.
            break;
        }
        frames.push((opcode, rest[header..header + len].to_vec()));
        rest = &rest[header + len..];
    }
    (bytes[..head_end].to_vec(), frames)
}

/// `frames` (from [`until_server_closes`]) hold at least one ping and end with a 1008 close whose
/// reason names keepalive: the server gave up on a peer that answered nothing.
pub fn assert_pinged_then_closed_as_dead(frames: &[(u8, Vec<u8>)]) {
    assert!(frames.iter().any(|(op, _)| *op == 0x9), "no ping in {frames:?}");
    let (opcode, close) = frames.last().expect("a close frame");
    assert_eq!(*opcode, 0x8, "{frames:?}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
    assert!(String::from_utf8_lossy(&close[2..]).contains("keepalive"));
}

/// What one run of the `wot` CLI printed and how it ended.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `wot` binary (library logs off) to its end.
pub async fn wot(args: &[&str]) -> CliRun {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wot"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("wot runs");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The stdout of a run that succeeded without a word on stderr.
pub fn ok(run: &CliRun) -> &str {
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    &run.stdout
}

/// A `wot serve` child process on loopback, killed when dropped: for what only the binary
/// shows (its ready line, its logs, a restart on the same port, thousands of thing files).
pub struct WotServe {
    child: std::process::Child,
    /// The `http` URL of the ready line.
    pub http: String,
    /// The `coap` URL of the ready line, if CoAP runs.
    pub coap: Option<String>,
    /// The whole ready line.
    pub ready: Value,
    /// Where its stderr went (logged at `info`), if anywhere.
    pub log: Option<std::path::PathBuf>,
}

impl WotServe {
    /// Runs `wot serve THINGS --host 127.0.0.1 --http-port 0 --no-mdns ARGS...` and waits for its
    /// ready line. Its stderr goes to `log` (at `RUST_LOG=info`) when given, else nowhere.
    pub fn start(things: &std::path::Path, args: &[&str], log: Option<&std::path::Path>) -> WotServe {
        let local: Vec<&str> = ["--host", "127.0.0.1", "--no-mdns"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        Self::run(things, &local, log)
    }

    /// Runs `wot serve THINGS --http-port 0 ARGS...` (mDNS on unless ARGS say otherwise: only
    /// inside netns-run) and waits for its ready line; an `http` URL on 0.0.0.0 is given as
    /// 127.0.0.1.
    pub fn run(things: &std::path::Path, args: &[&str], log: Option<&std::path::Path>) -> WotServe {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wot"));
        command
            .arg("serve")
            .arg(things)
            .args(["--http-port", "0"])
            .args(args)
            .stdout(Stdio::piped());
        match log {
            Some(path) => command
                .env("RUST_LOG", "info")
                .stderr(std::fs::File::create(path).expect("log file")),
            None => command.env_remove("RUST_LOG").stderr(Stdio::null()),
        };
        let mut child = command.spawn().expect("wot serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a ready line");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let logged = log.map(|p| std::fs::read_to_string(p).unwrap_or_default());
            panic!("ready line {line:?}: {e}\n{}", logged.unwrap_or_default())
        });
        WotServe {
            child,
            http: ready["http"]
                .as_str()
                .expect("an http URL")
                .replace("0.0.0.0", "127.0.0.1"),
            coap: ready["coap"].as_str().map(str::to_owned),
            ready,
            log: log.map(std::path::Path::to_path_buf),
        }
    }

    /// The `coap` URL of the ready line (the test started it with CoAP).
    pub fn coap_url(&self) -> &str {
        self.coap.as_deref().expect("wot serve runs CoAP")
    }

    /// Kills it and waits for it to end.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn logged(&self) -> String {
        let path = self.log.as_ref().expect("started with a log file");
        std::fs::read_to_string(path).expect("log file")
    }
}

impl Drop for WotServe {
    fn drop(&mut self) {
        self.stop();
    }
}
