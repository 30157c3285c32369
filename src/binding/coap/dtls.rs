//! `coaps://` (RFC 7252 §9): the DTLS 1.2 sessions between the coaps port's socket and its CoAP
//! [`Engine`](super::Engine), sans-IO. Datagrams from the socket and the engine's plaintext to
//! send go in, with `now`; DTLS records for the socket, decrypted CoAP datagrams for the engine
//! (each marked authenticated or not) and the next wake-up come out. One dimpl state machine per
//! peer address; this module owns the peer map so it can bound it:
//!
//! - a session is created only for a datagram that starts with a ClientHello (content type 22,
//!   epoch 0, handshake type 1): other strays, plaintext CoAP included, create nothing;
//! - handshakes are bounded in total and per IP address; when the table is full, the oldest
//!   handshake whose peer never sent a second datagram (a spoofed ClientHello never answers the
//!   HelloVerifyRequest cookie) makes room, else the new ClientHello is dropped;
//! - sessions in total are bounded; a handshake that has not finished in time is dropped, an idle
//!   session is closed (close_notify);
//! - a ClientHello from an address that has a session (a client restarted on the same port,
//!   RFC 6347 §4.2.8) starts a second handshake beside it; the old session is replaced only when
//!   the new one completes, so a spoofed ClientHello cannot end an association.
//!
//! Certificate mode (RFC 7252 §9.1.3.3) runs beside PSK when there is a [`ServerCertificate`]
//! (the HTTPS one, when dimpl can sign with its key: ECDSA P-256 or P-384). A dimpl DTLS 1.2
//! server is either PSK or certificate from its construction on, so the mode is chosen per
//! handshake from the ClientHello: the first suite the client offers that the port allows
//! decides, as dimpl's own auto-sensing server decides it (`Dtls::new_auto`, which is not used:
//! it starts as a DTLS 1.3 server and would refuse a client offering 1.3 and 1.2, since coaps
//! enables no 1.3 suite). A ClientHello whose suites cannot be read gets a PSK server, which
//! costs no key parse.
//!
//! A PSK session is authenticated: its plaintext is served as an HTTP request with credentials
//! would be. A certificate-mode session (the server proves itself, the client stays anonymous:
//! no CertificateRequest is sent) is not. It must not touch sockets, read the clock or know
//! CoAP: the engine decides what a datagram asks for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dimpl::crypto::{Dtls12CipherSuite, rust_crypto};
use dimpl::{Dtls, DtlsCertificate, Output, PskResolver};

/// One pre-shared key: the identity a client sends and the key it proves.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    /// The PSK identity (RFC 4279), as the client sends it.
    pub identity: String,
    /// The key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        write!(f, "Psk({})", self.identity)
    }
}

/// Why a `--coap-psk` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// No `:` between identity and key.
    #[error("--coap-psk takes IDENTITY:KEY")]
    Syntax,
    /// An empty identity or key.
    #[error("--coap-psk takes a non-empty IDENTITY and KEY")]
    Empty,
    /// An identity longer than a DTLS PSK identity may be (RFC 4279 §5.3: 128 bytes).
    #[error("a PSK identity is at most 128 bytes")]
    IdentityTooLong,
}

impl Psk {
    /// `IDENTITY:KEY`: the key is the text after the first `:`, as bytes.
    pub fn parse(spec: &str) -> Result<Psk, PskError> {
        let (identity, key) = spec.split_once(':').ok_or(PskError::Syntax)?;
        if identity.is_empty() || key.is_empty() {
            return Err(PskError::Empty);
        }
        if identity.len() > 128 {
            return Err(PskError::IdentityTooLong);
        }
        Ok(Psk {
            identity: identity.to_owned(),
            key: key.as_bytes().to_vec(),
        })
    }
}

/// Bounds and timings of the DTLS sessions of one coaps socket loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsLimits {
    /// Handshakes in progress at once.
    pub handshakes: usize,
    /// Handshakes in progress at once from one IP address.
    pub handshakes_per_ip: usize,
    /// Sessions (handshaking or established) at once.
    pub sessions: usize,
    /// A handshake not finished after this long is dropped.
    pub handshake_timeout: Duration,
    /// An established session that neither sent nor received for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for DtlsLimits {
    fn default() -> Self {
        DtlsLimits {
            handshakes: 256,
            handshakes_per_ip: 8,
            sessions: 4096,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// The certificate coaps presents in certificate mode: the HTTPS certificate's leaf and its
/// private key. dimpl sends the leaf alone (no intermediates) and signs only with ECDSA P-256
/// or P-384 keys ([`ServerCertificate::check`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The leaf certificate (DER).
    pub certificate: Vec<u8>,
    /// Its private key (DER: PKCS#8, or SEC1 for an EC key).
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        write!(f, "ServerCertificate({} bytes)", self.certificate.len())
    }
}

/// Why a certificate cannot serve certificate-mode DTLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// No certificate bytes.
    #[error("the certificate is empty")]
    Empty,
    /// A key dimpl cannot sign with (RSA, Ed25519, another curve, or not a key at all).
    #[error("its key is not an ECDSA P-256 or P-384 key, the only ones the DTLS library signs with")]
    KeyType,
}

impl ServerCertificate {
    /// Whether dimpl can serve certificate-mode handshakes with it: a certificate and an ECDSA
    /// P-256 or P-384 key. (That the key is the certificate's is for the caller: `wot serve`
    /// takes both from its HTTPS configuration, which checked it.)
    pub fn check(&self) -> Result<(), CertificateError> {
        if self.certificate.is_empty() {
            return Err(CertificateError::Empty);
        }
        rust_crypto::default_provider()
            .key_provider
            .load_private_key(&self.private_key)
            .map(|_| ())
            .map_err(|_| CertificateError::KeyType)
    }
}

/// What the coaps port accepts.
#[derive(Debug, Clone, Default)]
pub struct DtlsConfig {
    /// The pre-shared keys (at least one, or coaps does not run).
    pub keys: Vec<Psk>,
    /// Certificate mode beside PSK (ECDHE-ECDSA with AES-GCM or ChaCha20-Poly1305; dimpl has no
    /// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8): the HTTPS certificate. One that fails
    /// [`ServerCertificate::check`] is left out by `coap::bind` with a warning (PSK only).
    pub certificate: Option<ServerCertificate>,
    /// Bounds and timings.
    pub limits: DtlsLimits,
}

/// Why the DTLS layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DtlsSetupError {
    /// No pre-shared key: a DTLS server without one would accept no CoAP client with credentials.
    #[error("coaps needs at least one pre-shared key")]
    NoKeys,
    /// dimpl refused the configuration.
    #[error("DTLS configuration: {0}")]
    Config(String),
    /// The certificate cannot serve certificate mode.
    #[error("the coaps certificate: {0}")]
    Certificate(#[from] CertificateError),
}

/// The PSK lookup dimpl calls during a handshake. It also notes the identity it resolved, so
/// the session being fed can record it (dimpl does not expose the negotiated identity).
struct Keys {
    by_identity: HashMap<Vec<u8>, Vec<u8>>,
    resolved: Arc<Mutex<Option<Vec<u8>>>>,
}

impl PskResolver for Keys {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let key = self.by_identity.get(identity).cloned();
        if key.is_some() {
            let mut slot = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(identity.to_vec());
        }
        // An unknown identity gets a dummy key from dimpl (no oracle) and fails at Finished.
        key
    }
}

/// A plaintext CoAP datagram out of a session, for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plain {
    pub(crate) peer: SocketAddr,
    pub(crate) bytes: Bytes,
    /// The session proved a pre-shared key (certificate-mode clients are anonymous).
    pub(crate) authenticated: bool,
}

/// What the sessions want done: records to send, plaintext for the engine. Reused; the loop
/// drains it.
#[derive(Debug, Default)]
pub(crate) struct Io {
    pub(crate) wire: Vec<(SocketAddr, Bytes)>,
    pub(crate) plain: Vec<Plain>,
}

/// One DTLS association (or a handshake towards one).
struct Conn {
    dtls: Dtls,
    wake: Option<Instant>,
    started: Instant,
    last: Instant,
    /// Datagrams received: a second one proves the peer saw our first answer (the cookie).
    datagrams: u32,
    connected: bool,
    /// A replacement handshake has seen the client's ChangeCipherSpec: its epoch-1 records
    /// are its own from then on.
    past_ccs: bool,
    identity: Option<Vec<u8>>,
}

/// What one record header says, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    content_type: u8,
    epoch: u16,
}

const HANDSHAKE: u8 = 22;
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const HEADER: usize = 13;

/// The record headers of a datagram (RFC 6347 §4.1), until one does not parse.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = Record> + '_ {
    std::iter::from_fn(move || {
        if bytes.len() < HEADER || !matches!(bytes[1..3], [0xFE, 0xFD] | [0xFE, 0xFF]) {
            return None;
        }
        let record = Record {
            content_type: bytes[0],
            epoch: u16::from_be_bytes([bytes[3], bytes[4]]),
        };
        let len = usize::from(u16::from_be_bytes([bytes[11], bytes[12]]));
        bytes = bytes.get(HEADER + len..).unwrap_or(&[]);
        Some(record)
    })
}

/// Whether a datagram starts with a ClientHello: a plaintext handshake record at epoch 0 whose
/// message type is ClientHello.
fn starts_with_client_hello(bytes: &[u8]) -> bool {
    bytes.len() > HEADER
        && records(bytes)
            .next()
            .is_some_and(|r| r.content_type == HANDSHAKE && r.epoch == 0)
        && bytes[HEADER] == CLIENT_HELLO
}

/// Whether a ClientHello carries a cookie (the answer to our HelloVerifyRequest), read from its
/// first fragment: handshake header (12 bytes), client_version (2), random (32), session_id
/// (1 + n), cookie (1 + n). A datagram that does not reach the cookie's length counts as none.
fn hello_has_cookie(bytes: &[u8]) -> bool {
    let session_id = HEADER + 12 + 2 + 32;
    let Some(&sid_len) = bytes.get(session_id) else {
        return false;
    };
    bytes
        .get(session_id + 1 + usize::from(sid_len))
        .is_some_and(|&cookie_len| cookie_len > 0)
}

/// Whether a ClientHello (first fragment) asks for certificate mode: the first suite it offers
/// that `allowed` holds is not a PSK suite. A ClientHello whose suite list cannot be read (a
/// later fragment, a truncated or mutated datagram) counts as PSK.
fn wants_certificate(bytes: &[u8], allowed: &[Dtls12CipherSuite]) -> bool {
    let suites = || -> Option<&[u8]> {
        let record_len = usize::from(u16::from_be_bytes([*bytes.get(11)?, *bytes.get(12)?]));
        let record = bytes.get(HEADER..)?;
        let record = record.get(..record_len).unwrap_or(record);
        // Handshake header: type (1), length (3), message_seq (2), fragment_offset (3),
        // fragment_length (3); then client_version (2) and random (32).
        if record.get(6..9)? != [0, 0, 0] {
            return None;
        }
        let mut at = 12 + 2 + 32;
        at += 1 + usize::from(*record.get(at)?); // session_id
        at += 1 + usize::from(*record.get(at)?); // cookie
        let len = usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
        record.get(at + 2..at + 2 + len)
    };
    let Some(suites) = suites() else {
        return false;
    };
    suites
        .chunks_exact(2)
        .map(|c| Dtls12CipherSuite::from_u16(u16::from_be_bytes([c[0], c[1]])))
        .find(|s| allowed.contains(s))
        .is_some_and(|s| !s.is_psk())
}

/// A fatal alert's description (RFC 5246 §7.2): `handshake_failure`.
const HANDSHAKE_FAILURE: u8 = 40;
/// `decrypt_error`.
const DECRYPT_ERROR: u8 = 51;

/// A plaintext fatal alert at epoch 0 (RFC 5246 §7.2.2) for a handshake dimpl gave up on: it
/// sends none itself, e.g. when the client's Finished does not decrypt (a wrong key). The
/// client has not switched its read epoch yet, so it reads this one and fails at once instead
/// of retransmitting until its own timeout. The sequence number lies beyond anything the
/// handshake used. `handshake_failure` when no offered suite fits (a certificate-mode client
/// where coaps has no certificate), `decrypt_error` otherwise.
fn fatal_alert(error: &dimpl::Error) -> Bytes {
    let description = match error {
        dimpl::Error::SecurityError(dimpl::SecurityError::NoMutuallyAcceptableCipherSuite) => {
            HANDSHAKE_FAILURE
        }
        _ => DECRYPT_ERROR,
    };
    let mut alert = vec![ALERT, 0xFE, 0xFD, 0, 0];
    alert.extend_from_slice(&(1u64 << 40).to_be_bytes()[2..]);
    alert.extend_from_slice(&[0, 2, 2, description]);
    Bytes::from(alert)
}

/// The DTLS sessions of one coaps socket loop.
pub(crate) struct Sessions {
    config: Arc<dimpl::Config>,
    /// The suites offered: PSK, and ECDHE-ECDSA with a certificate.
    suites: Vec<Dtls12CipherSuite>,
    /// Checked ([`ServerCertificate::check`]): dimpl panics on a key it cannot load.
    certificate: Option<DtlsCertificate>,
    resolved: Arc<Mutex<Option<Vec<u8>>>>,
    limits: DtlsLimits,
    peers: HashMap<SocketAddr, Conn>,
    /// Handshakes from addresses that have an established session (client restarts).
    replacements: HashMap<SocketAddr, Conn>,
    buf: Vec<u8>,
}

/// How a conn's feeding ended.
enum Fed {
    Alive,
    /// A fatal error (with an alert when a handshake failed on a datagram) or close_notify.
    Over {
        /// The alert for a handshake that failed on a datagram.
        alert: Option<Bytes>,
    },
}

impl Sessions {
    pub(crate) fn new(cfg: &DtlsConfig) -> Result<Sessions, DtlsSetupError> {
        if cfg.keys.is_empty() {
            return Err(DtlsSetupError::NoKeys);
        }
        if let Some(certificate) = &cfg.certificate {
            certificate.check()?;
        }
        let resolved = Arc::new(Mutex::new(None));
        let keys = Keys {
            by_identity: cfg
                .keys
                .iter()
                .map(|k| (k.identity.as_bytes().to_vec(), k.key.clone()))
                .collect(),
            resolved: resolved.clone(),
        };
        let mut suites = vec![Dtls12CipherSuite::PSK_AES128_CCM_8];
        if cfg.certificate.is_some() {
            suites.extend([
                Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
                Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384,
                Dtls12CipherSuite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256,
            ]);
        }
        let config = dimpl::Config::builder()
            .with_crypto_provider(rust_crypto::default_provider())
            .with_psk_server(None, Arc::new(keys))
            .dtls12_cipher_suites(&suites)
            .dtls13_cipher_suites(&[])
            // No CertificateRequest: a certificate-mode client stays anonymous (dimpl does no
            // PKI validation of a client's certificate, and HTTPS asks for none either).
            .require_client_certificate(false)
            .use_server_cookie(true)
            .handshake_timeout(cfg.limits.handshake_timeout)
            .build()
            .map_err(|e| DtlsSetupError::Config(e.to_string()))?;
        Ok(Sessions {
            config: Arc::new(config),
            suites,
            certificate: cfg.certificate.clone().map(|c| DtlsCertificate {
                certificate: c.certificate,
                private_key: c.private_key,
            }),
            resolved,
            limits: cfg.limits,
            peers: HashMap::new(),
            replacements: HashMap::new(),
            buf: vec![0u8; 2048],
        })
    }

    /// Sessions (handshaking or established), replacements included.
    pub(crate) fn len(&self) -> usize {
        self.peers.len() + self.replacements.len()
    }

    /// Handshakes in progress.
    pub(crate) fn handshakes(&self) -> usize {
        self.peers.values().filter(|c| !c.connected).count() + self.replacements.len()
    }

    /// Established sessions.
    #[cfg(test)]
    pub(crate) fn established(&self) -> usize {
        self.peers.values().filter(|c| c.connected).count()
    }

    fn handshakes_from(&self, ip: IpAddr) -> usize {
        self.peers
            .iter()
            .filter(|(a, c)| !c.connected && a.ip() == ip)
            .count()
            + self.replacements.keys().filter(|a| a.ip() == ip).count()
    }

    /// A conn for a ClientHello, in the mode it asks for.
    fn new_conn(&self, hello: &[u8], now: Instant) -> Conn {
        let dtls = match &self.certificate {
            Some(cert) if wants_certificate(hello, &self.suites) => {
                Dtls::new_12(self.config.clone(), cert.clone(), now)
            }
            _ => Dtls::new_12_psk(self.config.clone(), now),
        };
        Conn {
            dtls,
            wake: None,
            started: now,
            last: now,
            datagrams: 0,
            connected: false,
            past_ccs: false,
            identity: None,
        }
    }

    /// Makes room for one more handshake, or says there is none.
    fn admit_handshake(&mut self, peer: SocketAddr) -> bool {
        if self.handshakes_from(peer.ip()) >= self.limits.handshakes_per_ip {
            tracing::debug!("coaps: {peer}: too many handshakes from its address");
            return false;
        }
        if self.handshakes() < self.limits.handshakes && self.len() < self.limits.sessions {
            return true;
        }
        // The oldest handshake whose peer never answered makes room (spoofed ClientHellos).
        let unproven = self
            .peers
            .iter()
            .filter(|(_, c)| !c.connected && c.datagrams <= 1)
            .min_by_key(|(_, c)| c.started)
            .map(|(a, _)| *a);
        match unproven {
            Some(old) => {
                self.peers.remove(&old);
                true
            }
            None => {
                tracing::debug!("coaps: {peer}: no room for another handshake");
                false
            }
        }
    }

    /// A datagram from the socket.
    pub(crate) fn on_datagram(&mut self, peer: SocketAddr, bytes: &[u8], now: Instant, io: &mut Io) {
        let hello = starts_with_client_hello(bytes);
        let first = records(bytes).next();
        if hello && !hello_has_cookie(bytes) {
            // A first ClientHello starts a handshake afresh: one already under way from this
            // address (a restart, a lost HelloVerifyRequest) is dropped, an association is not.
            if self.replacements.remove(&peer).is_none()
                && self.peers.get(&peer).is_some_and(|c| !c.connected)
            {
                self.peers.remove(&peer);
            }
        }
        if let Some(mut conn) = self.replacements.remove(&peer) {
            let to_replacement = hello
                || first.is_some_and(|r| r.epoch == 0)
                || (conn.past_ccs && first.is_some_and(|r| r.epoch > 0));
            if to_replacement {
                if records(bytes).any(|r| r.content_type == CHANGE_CIPHER_SPEC && r.epoch == 0) {
                    conn.past_ccs = true;
                }
                match self.feed(&mut conn, peer, Some(bytes), now, io) {
                    Fed::Alive if conn.connected => {
                        tracing::debug!("coaps: {peer}: a new session replaces the old one");
                        self.peers.insert(peer, conn);
                    }
                    Fed::Alive => {
                        self.replacements.insert(peer, conn);
                    }
                    Fed::Over { alert } => io.wire.extend(alert.map(|a| (peer, a))),
                }
                return;
            }
            self.replacements.insert(peer, conn);
        }
        let established = self.peers.get(&peer).is_some_and(|c| c.connected);
        if hello && established {
            // A client restarted on the same port (or someone claims so): a second handshake.
            if !self.admit_handshake(peer) {
                return;
            }
            let mut conn = self.new_conn(bytes, now);
            if let Fed::Alive = self.feed(&mut conn, peer, Some(bytes), now, io) {
                self.replacements.insert(peer, conn);
            }
            return;
        }
        let mut conn = match self.peers.remove(&peer) {
            Some(conn) => conn,
            None if hello => {
                if !self.admit_handshake(peer) {
                    return;
                }
                self.new_conn(bytes, now)
            }
            // Not a ClientHello and no session: nothing is created for strays.
            None => return,
        };
        match self.feed(&mut conn, peer, Some(bytes), now, io) {
            Fed::Alive => {
                self.peers.insert(peer, conn);
            }
            Fed::Over { alert } => io.wire.extend(alert.map(|a| (peer, a))),
        }
    }

    /// Feeds a datagram (or just the clock) to a conn and drains its output.
    fn feed(
        &mut self,
        conn: &mut Conn,
        peer: SocketAddr,
        bytes: Option<&[u8]>,
        now: Instant,
        io: &mut Io,
    ) -> Fed {
        let handshaking = !conn.connected;
        let mut result = conn.dtls.handle_timeout(now);
        if let (Ok(()), Some(bytes)) = (&result, bytes) {
            conn.datagrams = conn.datagrams.saturating_add(1);
            conn.last = now;
            result = conn.dtls.handle_packet(bytes);
        }
        if let Some(identity) = self.resolved.lock().unwrap_or_else(|e| e.into_inner()).take() {
            conn.identity = Some(identity);
        }
        // Drain even after an error: an alert may be queued.
        let closed = self.drain(conn, peer, io);
        match result {
            Err(e) => {
                tracing::debug!("coaps: {peer}: {e}");
                Fed::Over {
                    alert: (handshaking && bytes.is_some()).then(|| fatal_alert(&e)),
                }
            }
            Ok(()) if closed => Fed::Over { alert: None },
            Ok(()) => Fed::Alive,
        }
    }

    /// Takes everything a conn has to say; true when the peer closed it.
    fn drain(&mut self, conn: &mut Conn, peer: SocketAddr, io: &mut Io) -> bool {
        let mut closed = false;
        loop {
            match conn.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => io.wire.push((peer, Bytes::copy_from_slice(p))),
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(t) => {
                    conn.wake = Some(t);
                    break;
                }
                Output::Connected => {
                    conn.connected = true;
                    match &conn.identity {
                        Some(id) => tracing::debug!(
                            "coaps: {peer}: session with PSK identity {:?}",
                            String::from_utf8_lossy(id)
                        ),
                        None => tracing::debug!("coaps: {peer}: anonymous certificate-mode session"),
                    }
                }
                Output::ApplicationData(data) if conn.connected => io.plain.push(Plain {
                    peer,
                    bytes: Bytes::copy_from_slice(data),
                    authenticated: conn.identity.is_some(),
                }),
                Output::CloseNotify => closed = true,
                _ => {}
            }
        }
        closed
    }

    /// The engine's datagram for `peer`, encrypted into `io.wire`. False when `peer` has no
    /// established session (the datagram is dropped).
    pub(crate) fn seal(&mut self, peer: SocketAddr, bytes: &[u8], now: Instant, io: &mut Io) -> bool {
        let Some(mut conn) = self.peers.remove(&peer) else {
            return false;
        };
        if !conn.connected {
            self.peers.insert(peer, conn);
            return false;
        }
        conn.last = now;
        let sent = conn.dtls.send_application_data(bytes);
        let closed = self.drain(&mut conn, peer, io);
        match sent {
            Ok(_) if !closed => {
                self.peers.insert(peer, conn);
                true
            }
            Ok(_) => false,
            Err(dimpl::Error::TransmitQueueFull) => {
                self.peers.insert(peer, conn);
                false
            }
            Err(e) => {
                tracing::debug!("coaps: {peer}: {e}");
                false
            }
        }
    }

    /// Retransmission timers, handshake timeouts and idle sessions.
    pub(crate) fn on_tick(&mut self, now: Instant, io: &mut Io) {
        let limits = self.limits;
        let expired = |c: &Conn| {
            if c.connected {
                now.saturating_duration_since(c.last) >= limits.idle_timeout
            } else {
                now.saturating_duration_since(c.started) >= limits.handshake_timeout
            }
        };
        let due: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, c)| expired(c) || c.wake.is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for peer in due {
            let Some(mut conn) = self.peers.remove(&peer) else {
                continue;
            };
            if expired(&conn) {
                if conn.connected {
                    tracing::debug!("coaps: {peer}: idle, closed");
                    if conn.dtls.close().is_ok() {
                        self.drain(&mut conn, peer, io);
                    }
                } else {
                    tracing::debug!("coaps: {peer}: handshake timed out");
                }
                continue;
            }
            if let Fed::Alive = self.feed(&mut conn, peer, None, now, io) {
                self.peers.insert(peer, conn);
            }
        }
        let due: Vec<SocketAddr> = self
            .replacements
            .iter()
            .filter(|(_, c)| expired(c) || c.wake.is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for peer in due {
            let Some(mut conn) = self.replacements.remove(&peer) else {
                continue;
            };
            if expired(&conn) {
                continue;
            }
            if let Fed::Alive = self.feed(&mut conn, peer, None, now, io) {
                self.replacements.insert(peer, conn);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A dimpl client with a fixed key, for tests: sans-IO like the server.
    pub(crate) struct Client {
        dtls: Dtls,
        buf: Vec<u8>,
        pub(crate) connected: bool,
        pub(crate) received: Vec<Vec<u8>>,
        /// The server's certificate (DER), in certificate mode.
        pub(crate) peer_certificate: Option<Vec<u8>>,
    }

    /// A self-signed ECDSA P-256 certificate and its PKCS#8 key (rcgen's default).
    pub(crate) fn ecdsa_certificate() -> ServerCertificate {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        ServerCertificate {
            certificate: made.cert.der().to_vec(),
            private_key: made.signing_key.serialize_der(),
        }
    }

    struct FixedKey(Vec<u8>);
    impl PskResolver for FixedKey {
        fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
            Some(self.0.clone())
        }
    }

    impl Client {
        pub(crate) fn new(identity: &str, key: &[u8], now: Instant) -> Client {
            let config = dimpl::Config::builder()
                .with_crypto_provider(rust_crypto::default_provider())
                .with_psk_client(identity.as_bytes().to_vec(), Arc::new(FixedKey(key.to_vec())))
                .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
                .dtls13_cipher_suites(&[])
                .build()
                .unwrap();
            Client::started(Dtls::new_12_psk(Arc::new(config), now))
        }

        /// A certificate-mode client offering the ECDHE-ECDSA suites dimpl has (its own
        /// certificate is never asked for).
        pub(crate) fn certificate(now: Instant) -> Client {
            let config = dimpl::Config::builder()
                .with_crypto_provider(rust_crypto::default_provider())
                .dtls12_cipher_suites(&[
                    Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
                    Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384,
                ])
                .dtls13_cipher_suites(&[])
                .build()
                .unwrap();
            let own = ecdsa_certificate();
            let own = DtlsCertificate {
                certificate: own.certificate,
                private_key: own.private_key,
            };
            Client::started(Dtls::new_12(Arc::new(config), own, now))
        }

        fn started(mut dtls: Dtls) -> Client {
            dtls.set_active(true);
            Client {
                dtls,
                buf: vec![0u8; 2048],
                connected: false,
                received: Vec::new(),
                peer_certificate: None,
            }
        }

        /// What the client has to send.
        pub(crate) fn output(&mut self, now: Instant) -> Vec<Vec<u8>> {
            let _ = self.dtls.handle_timeout(now);
            let mut out = Vec::new();
            loop {
                match self.dtls.poll_output(&mut self.buf) {
                    Output::Packet(p) => out.push(p.to_vec()),
                    Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                    Output::Timeout(_) => break,
                    Output::Connected => self.connected = true,
                    Output::ApplicationData(d) => self.received.push(d.to_vec()),
                    Output::PeerCert(c) => self.peer_certificate = Some(c.to_vec()),
                    _ => {}
                }
            }
            out
        }

        pub(crate) fn input(&mut self, datagram: &[u8]) -> bool {
            self.dtls.handle_packet(datagram).is_ok()
        }

        pub(crate) fn send(&mut self, data: &[u8]) {
            self.dtls.send_application_data(data).unwrap();
        }
    }

    fn config(limits: DtlsLimits) -> DtlsConfig {
        DtlsConfig {
            keys: vec![Psk::parse("wot:secretkey").unwrap()],
            certificate: None,
            limits,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Runs datagrams between a client and the server until neither has anything to say.
    fn exchange(server: &mut Sessions, client: &mut Client, peer: SocketAddr, now: Instant) -> Vec<Plain> {
        let mut plain = Vec::new();
        for _ in 0..20 {
            let out = client.output(now);
            if out.is_empty() {
                break;
            }
            let mut io = Io::default();
            for d in out {
                server.on_datagram(peer, &d, now, &mut io);
            }
            for (to, d) in io.wire {
                assert_eq!(to, peer);
                client.input(&d);
            }
            plain.extend(io.plain);
        }
        plain
    }

    #[test]
    fn a_psk_handshake_carries_authenticated_plaintext_both_ways() {
        let now = Instant::now();
        let mut server = Sessions::new(&config(DtlsLimits::default())).unwrap();
        let mut client = Client::new("wot", b"secretkey", now);
        let peer = addr(1000);
        exchange(&mut server, &mut client, peer, now);
        assert!(client.connected);
        assert_eq!(server.established(), 1);
        client.send(b"hello");
        let plain = exchange(&mut server, &mut client, peer, now);
        assert_eq!(
            plain,
            vec![Plain {
                peer,
                bytes: Bytes::from_static(b"hello"),
                authenticated: true
            }]
        );
        let mut io = Io::default();
        assert!(server.seal(peer, b"answer", now, &mut io));
        for (_, d) in io.wire {
            client.input(&d);
        }
        client.output(now);
        assert_eq!(client.received, vec![b"answer".to_vec()]);
        // Nothing is sealed for a peer without a session.
        assert!(!server.seal(addr(2), b"x", now, &mut Io::default()));
    }

    #[test]
    fn a_wrong_key_fails_and_leaves_nothing_behind() {
        let now = Instant::now();
        let mut server = Sessions::new(&config(DtlsLimits::default())).unwrap();
        for (identity, key) in [("wot", &b"wrongkey"[..]), ("nobody", b"secretkey")] {
            let mut client = Client::new(identity, key, now);
            let peer = addr(1001);
            exchange(&mut server, &mut client, peer, now);
            assert!(!client.connected);
            assert_eq!(server.len(), 0, "{identity}");
        }
    }

    #[test]
    fn one_port_serves_psk_and_certificate_mode_each_by_its_client_hello() {
        let now = Instant::now();
        let certificate = ecdsa_certificate();
        let mut server = Sessions::new(&DtlsConfig {
            certificate: Some(certificate.clone()),
            ..config(DtlsLimits::default())
        })
        .unwrap();
        // Certificate mode: the server presents its certificate; the client is anonymous.
        let mut anonymous = Client::certificate(now);
        let peer = addr(1003);
        exchange(&mut server, &mut anonymous, peer, now);
        assert!(anonymous.connected);
        assert_eq!(
            anonymous.peer_certificate.as_ref(),
            Some(&certificate.certificate)
        );
        anonymous.send(b"get");
        let plain = exchange(&mut server, &mut anonymous, peer, now);
        assert_eq!(plain.len(), 1);
        assert!(!plain[0].authenticated);
        let mut io = Io::default();
        assert!(server.seal(peer, b"answer", now, &mut io));
        for (_, d) in io.wire {
            anonymous.input(&d);
        }
        anonymous.output(now);
        assert_eq!(anonymous.received, vec![b"answer".to_vec()]);
        // PSK on the same port, beside it: authenticated, no certificate shown.
        let mut keyed = Client::new("wot", b"secretkey", now);
        let peer = addr(1004);
        exchange(&mut server, &mut keyed, peer, now);
        assert!(keyed.connected);
        assert_eq!(keyed.peer_certificate, None);
        keyed.send(b"put");
        let plain = exchange(&mut server, &mut keyed, peer, now);
        assert!(plain.len() == 1 && plain[0].authenticated);
        assert_eq!(server.established(), 2);
        // Without a certificate, a certificate-mode client finds no common suite and is told
        // so (handshake_failure) after the cookie exchange.
        let mut psk_only = Sessions::new(&config(DtlsLimits::default())).unwrap();
        let mut refused = Client::certificate(now);
        let mut last = Vec::new();
        for _ in 0..2 {
            let mut io = Io::default();
            for d in refused.output(now) {
                psk_only.on_datagram(addr(1005), &d, now, &mut io);
            }
            for (_, d) in io.wire {
                refused.input(&d);
                last = d.to_vec();
            }
        }
        assert!(!refused.connected);
        assert_eq!(last[0], ALERT);
        assert_eq!(last[last.len() - 2..], [2, HANDSHAKE_FAILURE]);
        assert_eq!(psk_only.len(), 0);
    }

    #[test]
    fn the_mode_follows_the_first_allowed_suite_and_an_unreadable_hello_is_psk() {
        let now = Instant::now();
        let allowed = [
            Dtls12CipherSuite::PSK_AES128_CCM_8,
            Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
        ];
        let psk = Client::new("wot", b"k", now).output(now).remove(0);
        let cert = Client::certificate(now).output(now).remove(0);
        assert!(!wants_certificate(&psk, &allowed));
        assert!(wants_certificate(&cert, &allowed));
        // Only PSK allowed: a certificate-mode hello is PSK (and will find no suite).
        assert!(!wants_certificate(&cert, &allowed[..1]));
        // Cut anywhere, or a later fragment: PSK, and no panic.
        for cut in 0..cert.len() {
            let _ = wants_certificate(&cert[..cut], &allowed);
        }
        assert!(!wants_certificate(&cert[..HEADER + 40], &allowed));
        let mut later = cert.clone();
        later[HEADER + 8] = 1;
        assert!(!wants_certificate(&later, &allowed));
    }

    #[test]
    fn only_ecdsa_p256_or_p384_keys_serve_certificate_mode() {
        assert_eq!(ecdsa_certificate().check(), Ok(()));
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&p384)
            .unwrap();
        let p384 = ServerCertificate {
            certificate: cert.der().to_vec(),
            private_key: p384.serialize_der(),
        };
        assert_eq!(p384.check(), Ok(()));
        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&ed25519)
            .unwrap();
        let ed25519 = ServerCertificate {
            certificate: cert.der().to_vec(),
            private_key: ed25519.serialize_der(),
        };
        assert_eq!(ed25519.check(), Err(CertificateError::KeyType));
        assert!(matches!(
            Sessions::new(&DtlsConfig {
                certificate: Some(ed25519),
                ..config(DtlsLimits::default())
            }),
            Err(DtlsSetupError::Certificate(CertificateError::KeyType))
        ));
        let empty = ServerCertificate {
            certificate: Vec::new(),
            ..ecdsa_certificate()
        };
        assert_eq!(empty.check(), Err(CertificateError::Empty));
        assert!(!format!("{:?}", ecdsa_certificate()).contains("key"));
    }

    #[test]
    fn strays_create_no_session() {
        let now = Instant::now();
        let mut server = Sessions::new(&config(DtlsLimits::default())).unwrap();
        let mut io = Io::default();
        // A plaintext CoAP GET, an application-data record, a handshake that is no ClientHello.
        server.on_datagram(
            addr(1),
            &[0x40, 1, 0, 1, 0xb4, b't', b'e', b's', b't'],
            now,
            &mut io,
        );
        let mut record = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4];
        server.on_datagram(addr(1), &record, now, &mut io);
        record[0] = HANDSHAKE;
        record[3] = 0;
        record[13] = 16;
        server.on_datagram(addr(1), &record, now, &mut io);
        assert_eq!(server.len(), 0);
        assert!(io.wire.is_empty() && io.plain.is_empty());
    }

    #[test]
    fn handshakes_are_bounded_per_address_and_in_total_and_time_out() {
        let now = Instant::now();
        let limits = DtlsLimits {
            handshakes: 4,
            handshakes_per_ip: 2,
            ..DtlsLimits::default()
        };
        let mut server = Sessions::new(&config(limits)).unwrap();
        let hello = |port| {
            let mut c = Client::new("wot", b"secretkey", now);
            (c.output(now), addr(port))
        };
        let mut io = Io::default();
        // One address: the third ClientHello gets nothing.
        for port in 1..=3 {
            let (out, peer) = hello(port);
            server.on_datagram(peer, &out[0], now, &mut io);
        }
        assert_eq!(server.handshakes(), 2);
        // A flood from many addresses: the table stays at its bound, newest replacing oldest.
        for i in 0..50u8 {
            let mut c = Client::new("wot", b"secretkey", now);
            let out = c.output(now);
            let peer = SocketAddr::from(([10, 0, 0, i], 5000));
            server.on_datagram(peer, &out[0], now, &mut io);
            assert!(server.handshakes() <= 4);
        }
        assert_eq!(server.handshakes(), 4);
        // A real client still gets through: its second datagram (the cookie) proves it, and
        // the flood cannot push it out any more.
        let now2 = now + Duration::from_millis(10);
        let mut client = Client::new("wot", b"secretkey", now2);
        let peer = SocketAddr::from(([192, 168, 1, 1], 4000));
        let first = client.output(now2);
        let mut io = Io::default();
        server.on_datagram(peer, &first[0], now2, &mut io);
        for (_, d) in io.wire.drain(..) {
            client.input(&d);
        }
        let second = client.output(now2);
        for d in &second {
            server.on_datagram(peer, d, now2, &mut io);
        }
        for i in 50..100u8 {
            let mut c = Client::new("wot", b"secretkey", now2);
            let out = c.output(now2);
            server.on_datagram(
                SocketAddr::from(([10, 0, 0, i], 5000)),
                &out[0],
                now2,
                &mut Io::default(),
            );
        }
        for (_, d) in io.wire.drain(..) {
            client.input(&d);
        }
        exchange(&mut server, &mut client, peer, now2);
        assert!(client.connected);
        // Half-done handshakes end after the timeout; the established session stays.
        server.on_tick(now2 + limits.handshake_timeout, &mut Io::default());
        assert_eq!(server.handshakes(), 0);
        assert_eq!(server.established(), 1);
        // Idle sessions are closed (close_notify sent).
        let mut io = Io::default();
        server.on_tick(now2 + limits.idle_timeout + Duration::from_secs(1), &mut io);
        assert_eq!(server.len(), 0);
        assert!(!io.wire.is_empty());
    }

    #[test]
    fn a_client_restarting_on_the_same_port_replaces_its_session_and_a_stray_hello_does_not() {
        let now = Instant::now();
        let mut server = Sessions::new(&config(DtlsLimits::default())).unwrap();
        let peer = addr(1002);
        let mut first = Client::new("wot", b"secretkey", now);
        exchange(&mut server, &mut first, peer, now);
        assert_eq!(server.established(), 1);
        // A lone ClientHello from the address (spoofed): the old session keeps serving.
        let mut stray = Client::new("wot", b"secretkey", now);
        let hello = stray.output(now);
        server.on_datagram(peer, &hello[0], now, &mut Io::default());
        first.send(b"still here");
        let plain = exchange(&mut server, &mut first, peer, now);
        assert_eq!(plain.len(), 1);
        // A real restart: the new handshake completes and takes over.
        let mut second = Client::new("wot", b"secretkey", now);
        exchange(&mut server, &mut second, peer, now);
        assert!(second.connected);
        second.send(b"new");
        let plain = exchange(&mut server, &mut second, peer, now);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].bytes, Bytes::from_static(b"new"));
        assert_eq!(server.len(), 1);
    }

    #[test]
    fn psk_parsing() {
        assert_eq!(
            Psk::parse("wot:se:cret").unwrap(),
            Psk {
                identity: "wot".into(),
                key: b"se:cret".to_vec()
            }
        );
        assert_eq!(Psk::parse("wot"), Err(PskError::Syntax));
        assert_eq!(Psk::parse(":k"), Err(PskError::Empty));
        assert_eq!(
            Psk::parse(&format!("{}:k", "a".repeat(129))),
            Err(PskError::IdentityTooLong)
        );
        assert_eq!(format!("{:?}", Psk::parse("wot:secret").unwrap()), "Psk(wot)");
        assert!(matches!(
            Sessions::new(&DtlsConfig::default()),
            Err(DtlsSetupError::NoKeys)
        ));
    }
}
