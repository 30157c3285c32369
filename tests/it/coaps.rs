//! `coaps://` (CoAP over DTLS 1.2 with pre-shared keys, issue #20) over real loopback UDP, with a
//! DTLS client built on dimpl in the client role and CoAP messages from coap-lite: under `--auth`
//! a session with a key may read, write, invoke and observe while plain `coap://` is still
//! refused a write; the TD's coaps forms state `psk_sc` and the TD validates; a wrong key or
//! identity fails the handshake (at once: the server answers with a fatal alert); the key
//! derived from `--auth` works; certificate mode presents the HTTPS certificate and serves an
//! anonymous client what plain CoAP serves; a bounded garbage-datagram fuzz on the coaps port
//! (`FUZZ_SECONDS`, else `FUZZ_DATAGRAMS`) leaves it serving.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use dimpl::crypto::{Dtls12CipherSuite, rust_crypto};
use dimpl::{Dtls, DtlsCertificate, Output, PskResolver};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use wot_runtime::runtime::{Config, Running};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "coaps-test-token";

struct FixedKey(Vec<u8>);

impl PskResolver for FixedKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// A DTLS 1.2 client (PSK or certificate mode) on a tokio UDP socket, speaking CoAP inside the
/// session. `discovery` uses it to follow a `_wot._udp` coaps record.
pub(crate) struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    dtls: Dtls,
    buf: Vec<u8>,
    connected: bool,
    inbox: std::collections::VecDeque<Vec<u8>>,
    mid: u16,
    token: u32,
    /// The certificate the server presented (DER), in certificate mode.
    peer_certificate: Option<Vec<u8>>,
}

impl Client {
    /// Handshakes with `server`; an error when it does not complete within `WAIT`.
    pub(crate) async fn connect(server: SocketAddr, identity: &str, key: &[u8]) -> Result<Client, String> {
        let config = dimpl::Config::builder()
            .with_crypto_provider(rust_crypto::default_provider())
            .with_psk_client(identity.as_bytes().to_vec(), Arc::new(FixedKey(key.to_vec())))
            .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
            .dtls13_cipher_suites(&[])
            .build()
            .map_err(|e| e.to_string())?;
        Client::handshake(server, Dtls::new_12_psk(Arc::new(config), Instant::now())).await
    }

    /// A certificate-mode handshake (ECDHE-ECDSA): the client offers no key and, not being
    /// asked for one, presents no certificate of its own.
    async fn connect_with_certificate(server: SocketAddr) -> Result<Client, String> {
        let config = dimpl::Config::builder()
            .with_crypto_provider(rust_crypto::default_provider())
            .dtls12_cipher_suites(&[
                Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
                Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384,
            ])
            .dtls13_cipher_suites(&[])
            .build()
            .map_err(|e| e.to_string())?;
        // dimpl's client role needs a certificate of its own even when none is asked for.
        let own = rcgen::generate_simple_self_signed(vec!["client".to_owned()]).map_err(|e| e.to_string())?;
        let own = DtlsCertificate {
            certificate: own.cert.der().to_vec(),
            private_key: own.signing_key.serialize_der(),
        };
        Client::handshake(server, Dtls::new_12(Arc::new(config), own, Instant::now())).await
    }

    async fn handshake(server: SocketAddr, mut dtls: Dtls) -> Result<Client, String> {
        dtls.set_active(true);
        let mut client = Client {
            socket: UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?,
            server,
            dtls,
            buf: vec![0u8; 4096],
            connected: false,
            inbox: Default::default(),
            mid: 100,
            token: 1,
            peer_certificate: None,
        };
        let deadline = Instant::now() + WAIT;
        while !client.connected {
            if Instant::now() > deadline {
                return Err("no handshake in time".into());
            }
            client.pump(Duration::from_millis(200)).await?;
        }
        Ok(client)
    }

    /// Sends what dimpl has, waits up to `wait` for one datagram and feeds it in.
    async fn pump(&mut self, wait: Duration) -> Result<(), String> {
        self.dtls
            .handle_timeout(Instant::now())
            .map_err(|e| e.to_string())?;
        self.flush().await?;
        let mut rx = vec![0u8; 4096];
        if let Ok(Ok((n, _))) = tokio::time::timeout(wait, self.socket.recv_from(&mut rx)).await {
            self.dtls
                .handle_packet(&rx[..n])
                .map_err(|e| format!("handshake failed: {e}"))?;
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        loop {
            match self.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => {
                    self.socket
                        .send_to(p, self.server)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(_) => return Ok(()),
                Output::Connected => self.connected = true,
                Output::PeerCert(c) => self.peer_certificate = Some(c.to_vec()),
                Output::ApplicationData(d) => self.inbox.push_back(d.to_vec()),
                Output::CloseNotify => return Err("closed by the server".into()),
                _ => {}
            }
        }
    }

    async fn send(&mut self, packet: &Packet) {
        let bytes = packet.to_bytes().expect("encodes");
        self.dtls.send_application_data(&bytes).expect("session open");
        self.flush().await.expect("sent");
    }

    /// The next CoAP message from the server, within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        while self.inbox.is_empty() && Instant::now() < deadline {
            self.pump(Duration::from_millis(50)).await.ok()?;
        }
        let bytes = self.inbox.pop_front()?;
        Packet::from_bytes(&bytes).ok()
    }

    fn req(&mut self, method: RequestType, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        self.mid = self.mid.wrapping_add(1);
        self.token += 1;
        p.header.message_id = self.mid;
        p.set_token(self.token.to_be_bytes().to_vec());
        for seg in path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p
    }

    /// A request and its response (piggybacked, or separate: then ACKed).
    async fn call(&mut self, p: Packet) -> Packet {
        let token = p.get_token().to_vec();
        self.send(&p).await;
        loop {
            let r = self.next(WAIT).await.expect("a response");
            if r.get_token() != token.as_slice() {
                continue;
            }
            if r.header.code == MessageClass::Empty {
                continue;
            }
            if r.header.get_type() == MessageType::Confirmable {
                let mut ack = Packet::new();
                ack.header.set_type(MessageType::Acknowledgement);
                ack.header.message_id = r.header.message_id;
                self.send(&ack).await;
            }
            return r;
        }
    }

    /// A whole body fetched block-wise with blocks of 2^(szx+4) bytes.
    pub(crate) async fn get_blockwise(&mut self, path: &str, szx: u8) -> Vec<u8> {
        let mut body = Vec::new();
        for num in 0u32.. {
            let mut p = self.req(RequestType::Get, path);
            let v = (num << 4) | u32::from(szx);
            let bytes = v.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            p.add_option(CoapOption::Block2, bytes[skip..].to_vec());
            let r = self.call(p).await;
            assert_eq!(r.header.code.to_string(), "2.05", "{path} block {num}");
            body.extend_from_slice(&r.payload);
            let more = r
                .get_option(CoapOption::Block2)
                .and_then(|v| v.front().cloned())
                .is_some_and(|v| v.last().is_some_and(|b| b & 8 != 0));
            if !more {
                break;
            }
        }
        body
    }
}

fn code(p: &Packet) -> String {
    p.header.code.to_string()
}

fn json_body(p: &Packet) -> Value {
    serde_json::from_slice(&p.payload).unwrap_or(Value::Null)
}

async fn start() -> Running {
    let auth = wot_runtime::security::Auth::parse(&format!("bearer:{TOKEN}")).unwrap();
    let mut config = Config {
        no_coap: false,
        coap_port: 0,
        coaps_port: 0,
        ..Config::loopback()
    };
    config.security.auth = Some(Arc::new(auth));
    config.coap.dtls.keys = vec![wot_runtime::binding::coap::Psk::parse("device-1:device-key").unwrap()];
    common::start_with(config).await
}

/// `start()` plus HTTPS with a self-signed (ECDSA P-256) certificate in a fresh state directory
/// named after `name`, handed to coaps as `wot serve` does, and `--coap-open read`.
async fn start_with_certificate(name: &str) -> (Running, std::path::PathBuf, wot_runtime::security::Tls) {
    let state = std::env::temp_dir().join(format!("wot-coaps-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let tls = wot_runtime::security::self_signed(&state, vec!["127.0.0.1".into()]).unwrap();
    let auth = wot_runtime::security::Auth::parse(&format!("bearer:{TOKEN}")).unwrap();
    let mut config = Config {
        no_coap: false,
        coap_port: 0,
        coaps_port: 0,
        ..Config::loopback()
    };
    config.security.auth = Some(Arc::new(auth));
    config.security.tls = Some(tls.config.clone());
    config.coap.open = wot_runtime::binding::coap::Opened::parse("read").unwrap();
    config.coap.dtls.keys = vec![wot_runtime::binding::coap::Psk::parse("device-1:device-key").unwrap()];
    config.coap.dtls.certificate = Some(wot_runtime::binding::coap::ServerCertificate {
        certificate: tls.certificate.to_vec(),
        private_key: tls.private_key.secret_der().to_vec(),
    });
    (common::start_with(config).await, state, tls)
}

/// A plain CoAP request over UDP, no DTLS.
async fn plain_call(server: SocketAddr, method: RequestType, path: &str, payload: &[u8]) -> Packet {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = 7;
    p.set_token(vec![7]);
    for seg in path.trim_start_matches('/').split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    socket.send_to(&p.to_bytes().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Packet::from_bytes(&buf[..n]).unwrap()
}

#[tokio::test]
async fn under_auth_a_psk_session_may_do_everything_and_plain_coap_still_may_not_write() {
    let running = start().await;
    let server = running.coaps_addr.expect("coaps runs");
    assert!(
        running
            .ready_line()
            .contains(&format!("\"coaps\":\"coaps://{server}\""))
    );
    let mut c = Client::connect(server, "device-1", b"device-key").await.unwrap();

    // The TD, block-wise: coaps forms with psk_sc, the scheme defined, the TD valid.
    let td: Value = serde_json::from_slice(&c.get_blockwise("/things/lamp", 2).await).unwrap();
    common::assert_valid_td(&td);
    assert_eq!(
        td["securityDefinitions"]["psk_sc"],
        json!({"scheme": "psk", "description": "CoAP over DTLS 1.2 with a pre-shared key (TLS_PSK_WITH_AES_128_CCM_8)"}),
        "two keys (given and derived from --auth): no single identity to name"
    );
    let forms = td["properties"]["brightness"]["forms"].as_array().unwrap();
    let secure: Vec<&Value> = forms
        .iter()
        .filter(|f| f["href"].as_str().unwrap().starts_with("coaps://"))
        .collect();
    assert_eq!(secure.len(), 3, "read, write, observe");
    assert!(secure.iter().all(|f| f["security"] == json!("psk_sc")));
    let write_form = secure
        .iter()
        .find(|f| f["op"] == json!(["writeproperty"]))
        .expect("a coaps write form");
    assert_eq!(
        write_form["href"],
        json!(format!("coaps://{server}/things/lamp/properties/brightness"))
    );

    // Observe, then write over coaps: the write is acknowledged and notified.
    let mut observe = c.req(RequestType::Get, "/things/lamp/properties/brightness");
    observe.add_option(CoapOption::Observe, vec![]);
    let first = c.call(observe).await;
    assert_eq!((code(&first), json_body(&first)), ("2.05".into(), json!(50)));
    let observe_token = first.get_token().to_vec();
    let mut put = c.req(RequestType::Put, "/things/lamp/properties/brightness");
    put.payload = b"42".to_vec();
    put.set_content_format(coap_lite::ContentFormat::ApplicationJSON);
    let r = c.call(put).await;
    assert_eq!(code(&r), "2.04");
    let deadline = Instant::now() + WAIT;
    loop {
        let n = c.next(WAIT).await.expect("a notification");
        if n.get_token() == observe_token.as_slice() && json_body(&n) == json!(42) {
            break;
        }
        assert!(Instant::now() < deadline, "no notification of 42");
    }
    // An invocation.
    let p = c.req(RequestType::Post, "/things/lamp/actions/toggle");
    let r = c.call(p).await;
    assert_eq!((code(&r), json_body(&r)), ("2.04".into(), json!(true)));

    // Plain coap:// is still refused a write, and the value is unchanged.
    let coap = running.coap_addr.unwrap();
    let r = plain_call(coap, RequestType::Put, "/things/lamp/properties/brightness", b"7").await;
    assert_eq!(code(&r), "4.01");
    let p = c.req(RequestType::Get, "/things/lamp/properties/brightness");
    let r = c.call(p).await;
    assert_eq!(json_body(&r), json!(42));
    running.stop().await;
}

#[tokio::test]
async fn the_key_derived_from_auth_works_and_wrong_keys_fail_the_handshake_at_once() {
    let running = start().await;
    let server = running.coaps_addr.unwrap();
    // --auth bearer:TOKEN → identity "wot", key: the hex SHA-256 of the token.
    let (_, key) = wot_runtime::security::Auth::parse(&format!("bearer:{TOKEN}"))
        .unwrap()
        .coaps_key();
    let mut c = Client::connect(server, "wot", &key).await.unwrap();
    let p = c.req(RequestType::Get, "/things/lamp/properties/on");
    let r = c.call(p).await;
    assert_eq!(code(&r), "2.05");
    for (identity, key) in [("device-1", &b"wrong-key"[..]), ("nobody", b"device-key")] {
        let started = Instant::now();
        let e = Client::connect(server, identity, key)
            .await
            .err()
            .expect("refused");
        assert!(e.starts_with("handshake failed"), "{identity}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the alert ends it at once"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn certificate_mode_presents_the_https_certificate_and_serves_an_anonymous_client_as_plain_coap() {
    let (running, state, tls) = start_with_certificate("cert").await;
    let server = running.coaps_addr.expect("coaps runs");

    // HTTPS presents the certificate in cert.pem (a client trusting only it gets through) ...
    let https = common::trusting_client(&state.join("tls/cert.pem"));
    let r = https
        .get(format!("{}/things/lamp/properties/on", running.http_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ... and the coaps port presents the same one.
    let mut c = Client::connect_with_certificate(server).await.unwrap();
    let presented = c.peer_certificate.clone().expect("the server's certificate");
    assert_eq!(presented, tls.certificate.to_vec());
    let fingerprint: Vec<String> = ring::digest::digest(&ring::digest::SHA256, &presented)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(fingerprint.join(":"), tls.fingerprint);

    // Anonymous: a GET as plain CoAP gets it under --coap-open read (the TD block-wise too) ...
    let p = c.req(RequestType::Get, "/things/lamp/properties/brightness");
    let r = c.call(p).await;
    assert_eq!((code(&r), json_body(&r)), ("2.05".into(), json!(50)));
    let td: Value = serde_json::from_slice(&c.get_blockwise("/things/lamp", 2).await).unwrap();
    assert_eq!(td["title"], "Lamp");
    // ... and a write is refused as on plain CoAP, changing nothing.
    let mut put = c.req(RequestType::Put, "/things/lamp/properties/brightness");
    put.payload = b"9".to_vec();
    put.set_content_format(coap_lite::ContentFormat::ApplicationJSON);
    let r = c.call(put).await;
    assert_eq!(code(&r), "4.01");
    let p = c.req(RequestType::Post, "/things/lamp/actions/toggle");
    assert_eq!(code(&c.call(p).await), "4.01");
    let p = c.req(RequestType::Get, "/things/lamp/properties/brightness");
    assert_eq!(json_body(&c.call(p).await), json!(50));

    // PSK beside it on the same port: the key's session may write.
    let mut keyed = Client::connect(server, "device-1", b"device-key").await.unwrap();
    assert_eq!(keyed.peer_certificate, None);
    let mut put = keyed.req(RequestType::Put, "/things/lamp/properties/brightness");
    put.payload = b"9".to_vec();
    assert_eq!(code(&keyed.call(put).await), "2.04");
    running.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

/// `wot serve --tls-cert/--tls-key` with a key DTLS cannot sign with (Ed25519, which rustls
/// serves over HTTPS): one warning line, coaps stays on with PSK only.
#[tokio::test]
async fn an_https_key_dtls_cannot_use_leaves_coaps_psk_only_with_one_warning() {
    use std::io::{BufRead, BufReader, Read};
    let dir = std::env::temp_dir().join(format!("wot-coaps-ed25519-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wot"))
        .args(["serve", "--host", "127.0.0.1", "--no-mdns", "--http-port", "0"])
        .args([
            "--coap-port",
            "0",
            "--coaps-port",
            "0",
            "--coap-psk",
            "device-1:device-key",
        ])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wot serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a ready line");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert!(ready["http"].as_str().unwrap().starts_with("https://"), "{ready}");
    let server: SocketAddr = ready["coaps"].as_str().expect("coaps runs")["coaps://".len()..]
        .parse()
        .unwrap();
    let refused = Client::connect_with_certificate(server).await.err();
    let keyed = Client::connect(server, "device-1", b"device-key").await;
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(refused.is_some(), "no certificate mode with an Ed25519 key");
    assert!(keyed.is_ok(), "PSK still works: {:?}", keyed.err());
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("coaps: PSK only, no certificate mode")
            && warnings[0].contains("not an ECDSA P-256 or P-384 key"),
        "{stderr}"
    );
}

/// The first datagram (the ClientHello) a dimpl client in this configuration sends.
fn client_hello(config: dimpl::Config, certificate: Option<DtlsCertificate>) -> Vec<u8> {
    let config = Arc::new(config);
    let mut d = match certificate {
        Some(c) => Dtls::new_12(config, c, Instant::now()),
        None => Dtls::new_12_psk(config, Instant::now()),
    };
    d.set_active(true);
    d.handle_timeout(Instant::now()).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    while let Output::Packet(p) = d.poll_output(&mut buf) {
        out = p.to_vec();
    }
    out
}

/// Bounded: at least `FUZZ_DATAGRAMS` (default 3000) random and mutated datagrams from a few
/// sockets to a coaps port that serves PSK and certificate mode; with `FUZZ_SECONDS` set (CI),
/// it keeps going until that much time has passed, checking every 5 s that a real client still
/// gets a session and a write through.
#[tokio::test]
async fn garbage_on_the_coaps_port_leaves_it_serving() {
    let (running, state, _tls) = start_with_certificate("fuzz").await;
    let server = running.coaps_addr.unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Real ClientHellos to mutate: PSK, and certificate mode.
    let psk_hello = client_hello(
        dimpl::Config::builder()
            .with_crypto_provider(rust_crypto::default_provider())
            .with_psk_client(b"x".to_vec(), Arc::new(FixedKey(b"y".to_vec())))
            .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
            .dtls13_cipher_suites(&[])
            .build()
            .unwrap(),
        None,
    );
    let own = rcgen::generate_simple_self_signed(vec!["client".to_owned()]).unwrap();
    let cert_hello = client_hello(
        dimpl::Config::builder()
            .with_crypto_provider(rust_crypto::default_provider())
            .dtls12_cipher_suites(&[
                Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
                Dtls12CipherSuite::PSK_AES128_CCM_8,
            ])
            .dtls13_cipher_suites(&[])
            .build()
            .unwrap(),
        Some(DtlsCertificate {
            certificate: own.cert.der().to_vec(),
            private_key: own.signing_key.serialize_der(),
        }),
    );
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let count = env("FUZZ_DATAGRAMS").unwrap_or(3000);
    let budget = Duration::from_secs(env("FUZZ_SECONDS").unwrap_or(0));
    let started = Instant::now();
    let mut checked = started;
    let mut checks = 0;
    let still_serving = |value: u64| async move {
        let mut c = Client::connect(server, "device-1", b"device-key").await.unwrap();
        let mut put = c.req(RequestType::Put, "/things/lamp/properties/brightness");
        put.payload = (value % 100).to_string().into_bytes();
        assert_eq!(code(&c.call(put).await), "2.04");
    };
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut sent = 0u64;
    while sent < count || started.elapsed() < budget {
        let r = next();
        let datagram = match sent % 5 {
            0 => (0..(r % 300) as usize).map(|_| next() as u8).collect::<Vec<u8>>(),
            1..=3 => {
                let mut d = if sent % 5 == 3 {
                    cert_hello.clone()
                } else {
                    psk_hello.clone()
                };
                for _ in 0..1 + r % 4 {
                    let at = (next() as usize) % d.len();
                    d[at] = next() as u8;
                }
                d.truncate(1 + (next() as usize) % d.len());
                d
            }
            _ => {
                // A record header that claims a handshake at epoch 0 and then garbage.
                let mut d = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1, 0, 40, 1];
                d.extend((0..40).map(|_| next() as u8));
                d
            }
        };
        let _ = sockets[(sent % 8) as usize].send_to(&datagram, server).await;
        sent += 1;
        if sent.is_multiple_of(256) {
            tokio::task::yield_now().await;
            if !budget.is_zero() && checked.elapsed() >= Duration::from_secs(5) {
                still_serving(sent).await;
                checks += 1;
                checked = Instant::now();
            }
        }
    }
    // Still serving: a real client handshakes and writes.
    still_serving(5).await;
    eprintln!(
        "coaps fuzz: {sent} datagrams in {:.1} s, {checks} checks on the way",
        started.elapsed().as_secs_f64()
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn no_coaps_keeps_it_off_under_auth_and_with_keys_and_plain_coap_on() {
    let auth = wot_runtime::security::Auth::parse(&format!("bearer:{TOKEN}")).unwrap();
    let mut config = Config {
        no_coap: false,
        coap_port: 0,
        coaps_port: 0,
        no_coaps: true,
        ..Config::loopback()
    };
    config.security.auth = Some(Arc::new(auth));
    config.coap.dtls.keys = vec![wot_runtime::binding::coap::Psk::parse("device-1:device-key").unwrap()];
    let running = common::start_with(config).await;
    assert_eq!(running.coaps_url(), None);
    assert!(running.coap_url().is_some());
    assert!(
        !running.ready_line().contains("coaps"),
        "{}",
        running.ready_line()
    );
    let td: serde_json::Value = common::json_of(
        common::client()
            .get(format!("{}/things/lamp", running.http_url()))
            .bearer_auth(TOKEN),
    )
    .await;
    assert!(!td.to_string().contains("coaps://"), "{td:#}");
    running.stop().await;
}
