//! The CoAP message layer (RFC 7252 §3–§5) as plain data: classifying a datagram (request,
//! ping, ACK/RST of ours, or something to reset or ignore), checking options (unknown critical
//! → 4.02, repeated or malformed options), building responses (piggybacked ACK, NON for NON,
//! separate CON), and the deduplication cache keyed by (endpoint, message ID), bounded in size
//! and age.
//!
//! The §3 message format errors are found on the bytes by its own walk over token and options
//! before coap-lite parses them, since coap-lite takes some of them (a payload marker with no
//! payload). It keeps no sockets and no clock: callers pass `now`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};

use super::block::{Block, decode_uint, encode_uint};

/// RFC 7252 §4.8.2.
pub(crate) const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
pub(crate) const NON_LIFETIME: Duration = Duration::from_secs(145);

pub(crate) mod option {
    pub(crate) const URI_HOST: u16 = 3;
    pub(crate) const ETAG: u16 = 4;
    pub(crate) const OBSERVE: u16 = 6;
    pub(crate) const URI_PORT: u16 = 7;
    pub(crate) const LOCATION_PATH: u16 = 8;
    pub(crate) const URI_PATH: u16 = 11;
    pub(crate) const CONTENT_FORMAT: u16 = 12;
    pub(crate) const MAX_AGE: u16 = 14;
    pub(crate) const URI_QUERY: u16 = 15;
    pub(crate) const ACCEPT: u16 = 17;
    pub(crate) const BLOCK2: u16 = 23;
    pub(crate) const BLOCK1: u16 = 27;
    pub(crate) const SIZE2: u16 = 28;
    pub(crate) const PROXY_URI: u16 = 35;
    pub(crate) const PROXY_SCHEME: u16 = 39;
    pub(crate) const SIZE1: u16 = 60;
}

/// A decoded request: what the router and the engine need, nothing protocol-internal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) confirmable: bool,
    pub(crate) mid: u16,
    pub(crate) token: Vec<u8>,
    /// The method code (0.01 GET = 1, POST = 2, PUT = 3, DELETE = 4, ...).
    pub(crate) method: u8,
    pub(crate) path: Vec<String>,
    pub(crate) query: Vec<String>,
    pub(crate) observe: Option<u32>,
    pub(crate) content_format: Option<u16>,
    pub(crate) accept: Option<u16>,
    pub(crate) block1: Option<Block>,
    pub(crate) block2: Option<Block>,
    pub(crate) size1: Option<u32>,
    /// The request carried Size2 (usually 0): the client wants the total size.
    pub(crate) size2: bool,
    pub(crate) payload: Vec<u8>,
}

pub(crate) const GET: u8 = 1;
pub(crate) const POST: u8 = 2;
pub(crate) const PUT: u8 = 3;
pub(crate) const DELETE: u8 = 4;

impl Request {
    pub(crate) fn uri(&self) -> String {
        let mut uri = String::with_capacity(32);
        for s in &self.path {
            uri.push('/');
            uri.push_str(s);
        }
        if uri.is_empty() {
            uri.push('/');
        }
        uri
    }
}

/// What a datagram is, and what the message layer says to do with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Silence: not CoAP, a wrong version, or a non-confirmable message we cannot process.
    Ignore,
    /// Send an RST with this message ID: a ping, or a confirmable message we cannot process.
    Reset(u16),
    /// The peer acknowledged or reset one of our messages.
    Ack(u16),
    Rst(u16),
    Request(Request),
    /// A request with a critical option we do not understand (or a malformed one): 4.02 when
    /// confirmable, rejected (RST) when not.
    BadOption {
        request: Request,
        option: u16,
    },
    /// Proxy-Uri / Proxy-Scheme: 5.05 Proxying Not Supported.
    NoProxy(Request),
}

struct OptionRule {
    repeatable: bool,
    min: usize,
    max: usize,
}

fn rule(number: u16) -> Option<OptionRule> {
    use option::*;
    let r = |repeatable, min, max| Some(OptionRule { repeatable, min, max });
    match number {
        URI_HOST => r(false, 1, 255),
        ETAG => r(true, 1, 8),
        OBSERVE => r(false, 0, 3),
        URI_PORT => r(false, 0, 2),
        URI_PATH | URI_QUERY => r(true, 0, 255),
        CONTENT_FORMAT | ACCEPT => r(false, 0, 2),
        BLOCK2 | BLOCK1 => r(false, 0, 3),
        SIZE2 | SIZE1 => r(false, 0, 4),
        PROXY_URI => r(false, 1, 1034),
        PROXY_SCHEME => r(false, 1, 255),
        _ => None,
    }
}

fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// Classifies one datagram. Never panics, whatever the bytes.
pub(crate) fn classify(bytes: &[u8]) -> Inbound {
    let (packet, header) = match message_layer(bytes) {
        Layer::Request(packet, header) => (packet, header),
        Layer::Settled(inbound) => return inbound,
    };
    let mut request = Request {
        confirmable: header.confirmable,
        mid: header.mid,
        token: packet.get_token().to_vec(),
        method: header.code,
        path: Vec::new(),
        query: Vec::new(),
        observe: None,
        content_format: None,
        accept: None,
        block1: None,
        block2: None,
        size1: None,
        size2: false,
        payload: Vec::new(),
    };
    let options = read_options(&packet, &mut request);
    // A trailing empty path segment from "coap://host/" is the root.
    if request.path.len() == 1 && request.path[0].is_empty() {
        request.path.clear();
    }
    request.payload = packet.payload;
    if let Some(option) = options.bad {
        return Inbound::BadOption { request, option };
    }
    if options.proxy {
        return Inbound::NoProxy(request);
    }
    Inbound::Request(request)
}

/// The fixed header's fields a request keeps.
struct Header {
    confirmable: bool,
    mid: u16,
    code: u8,
}

/// What the message layer (§3, §4.2, §4.3) makes of a datagram.
enum Layer {
    /// It carries a request: parsed, with the header fields the request keeps.
    Request(Packet, Header),
    /// Anything else, settled here: ignore it, reset it, or take it as the ACK or RST of one of
    /// ours.
    Settled(Inbound),
}

/// The message layer's decision on a datagram.
fn message_layer(bytes: &[u8]) -> Layer {
    // Fewer than 4 bytes, or not version 1: silently ignored (§3, §4.2).
    if bytes.len() < 4 || bytes[0] >> 6 != 1 {
        return Layer::Settled(Inbound::Ignore);
    }
    let kind = (bytes[0] >> 4) & 0x3;
    let code = bytes[1];
    let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
    let confirmable = kind == 0;
    let reject = || {
        Layer::Settled(if confirmable {
            Inbound::Reset(mid)
        } else {
            Inbound::Ignore
        })
    };
    // A message format error: a confirmable message is rejected with RST (§4.2), anything
    // else is silently ignored (§4.3 leaves the RST to a NON optional; §4.2 forbids it for an
    // ACK or RST). Checked on the bytes first, because coap-lite accepts some of them.
    if check_format(bytes).is_err() {
        return reject();
    }
    let packet = match Packet::from_bytes(bytes) {
        Ok(p) => p,
        Err(_) => return reject(),
    };
    if code == 0 {
        return Layer::Settled(match kind {
            0 => Inbound::Reset(mid),
            2 => Inbound::Ack(mid),
            3 => Inbound::Rst(mid),
            _ => Inbound::Ignore,
        });
    }
    if matches!(kind, 2 | 3) {
        // ACK or RST carrying a code: we send no requests, so nothing to match.
        return Layer::Settled(Inbound::Ignore);
    }
    if !matches!(packet.header.code, MessageClass::Request(_)) && code >> 5 != 0 {
        // A response or a reserved class in a CON/NON: we cannot process it.
        return reject();
    }
    let header = Header {
        confirmable,
        mid,
        code,
    };
    Layer::Request(packet, header)
}

/// The message format errors of RFC 7252 §3 and §4.1, found on the bytes of a datagram whose
/// 4-byte header is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FormatError {
    /// Token Length 9–15 (reserved), or a token longer than the datagram.
    TokenLength,
    /// An option delta or length nibble of 15 in a byte that is not the payload marker.
    ReservedNibble,
    /// An option's extended delta/length bytes or its value run past the datagram.
    TruncatedOption,
    /// Option numbers add up past 65535.
    OptionNumber,
    /// A payload marker with nothing after it.
    EmptyPayload,
    /// An Empty message (code 0.00) with a token, options or payload.
    EmptyWithContent,
}

/// Walks the token and options of a datagram (at least 4 bytes) without building anything.
pub(super) fn check_format(bytes: &[u8]) -> Result<(), FormatError> {
    let tkl = usize::from(bytes.first().map_or(0, |b| b & 0x0f));
    if tkl > 8 || bytes.len() < 4 + tkl {
        return Err(FormatError::TokenLength);
    }
    if bytes.get(1) == Some(&0) && bytes.len() > 4 {
        return Err(FormatError::EmptyWithContent);
    }
    let mut at = 4 + tkl;
    let mut number: u32 = 0;
    while let Some(&byte) = bytes.get(at) {
        at += 1;
        if byte == 0xff {
            // Everything after the marker is payload, and there must be some.
            return if at == bytes.len() {
                Err(FormatError::EmptyPayload)
            } else {
                Ok(())
            };
        }
        let delta = extended(byte >> 4, bytes, &mut at)?;
        let length = extended(byte & 0x0f, bytes, &mut at)?;
        number += delta;
        if number > u32::from(u16::MAX) {
            return Err(FormatError::OptionNumber);
        }
        at = at.saturating_add(length as usize);
        if at > bytes.len() {
            return Err(FormatError::TruncatedOption);
        }
    }
    Ok(())
}

/// An option delta or length from its nibble and the extended bytes at `at` (§3.1), moving
/// `at` past them.
fn extended(nibble: u8, bytes: &[u8], at: &mut usize) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let b = bytes.get(*at).ok_or(FormatError::TruncatedOption)?;
            *at += 1;
            Ok(u32::from(*b) + 13)
        }
        14 => {
            let b: [u8; 2] = bytes
                .get(*at..*at + 2)
                .and_then(|b| b.try_into().ok())
                .ok_or(FormatError::TruncatedOption)?;
            *at += 2;
            Ok(u32::from(u16::from_be_bytes(b)) + 269)
        }
        _ => Err(FormatError::ReservedNibble),
    }
}

/// What a request's options say beyond its fields.
#[derive(Default)]
struct OptionFindings {
    /// The first critical option that is unknown, repeated, of a wrong length or undecodable.
    bad: Option<u16>,
    /// Proxy-Uri or Proxy-Scheme was present.
    proxy: bool,
}

/// Reads the options into the request's fields. Unknown or malformed elective options are
/// skipped (§5.4.1); critical ones are reported.
fn read_options(packet: &Packet, request: &mut Request) -> OptionFindings {
    let mut findings = OptionFindings::default();
    for (&number, values) in packet.options() {
        let Some(r) = rule(number) else {
            if is_critical(number) {
                findings.bad.get_or_insert(number);
            }
            continue;
        };
        let malformed =
            (!r.repeatable && values.len() > 1) || values.iter().any(|v| v.len() < r.min || v.len() > r.max);
        if malformed {
            if is_critical(number) {
                findings.bad.get_or_insert(number);
            }
            continue;
        }
        read_option(number, values, request, &mut findings);
    }
    findings
}

/// One known, well-formed option into the request's fields.
fn read_option(
    number: u16,
    values: &std::collections::LinkedList<Vec<u8>>,
    request: &mut Request,
    findings: &mut OptionFindings,
) {
    use option::*;
    let Some(first) = values.front() else {
        return;
    };
    match number {
        URI_PATH | URI_QUERY => {
            for v in values {
                match std::str::from_utf8(v) {
                    Ok(s) if number == URI_PATH => request.path.push(s.to_owned()),
                    Ok(s) => request.query.push(s.to_owned()),
                    Err(_) => {
                        findings.bad.get_or_insert(number);
                    }
                }
            }
        }
        OBSERVE => request.observe = decode_uint(first, 3),
        CONTENT_FORMAT => request.content_format = decode_uint(first, 2).map(|v| v as u16),
        ACCEPT => request.accept = decode_uint(first, 2).map(|v| v as u16),
        BLOCK1 | BLOCK2 => match Block::decode(first) {
            Some(b) if number == BLOCK1 => request.block1 = Some(b),
            Some(b) => request.block2 = Some(b),
            None => {
                findings.bad.get_or_insert(number);
            }
        },
        SIZE1 => request.size1 = decode_uint(first, 4),
        SIZE2 => request.size2 = true,
        PROXY_URI | PROXY_SCHEME => findings.proxy = true,
        _ => {}
    }
}

/// An RST (or an empty ACK) with this message ID.
pub(crate) fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let t = match kind {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let id = mid.to_be_bytes();
    vec![0x40 | (t << 4), 0, id[0], id[1]]
}

/// A response under construction. Options are given by number and kept sorted by coap-lite.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) code: ResponseType,
    pub(crate) options: Vec<(u16, Vec<u8>)>,
    pub(crate) payload: Vec<u8>,
}

impl Response {
    pub(crate) fn new(code: ResponseType) -> Self {
        Response {
            code,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub(crate) fn with_payload(code: ResponseType, payload: Vec<u8>) -> Self {
        Response {
            code,
            options: Vec::new(),
            payload,
        }
    }

    /// A UTF-8 diagnostic payload (§5.5.2), without Content-Format.
    pub(crate) fn diagnostic(code: ResponseType, text: impl Into<String>) -> Self {
        Response::with_payload(code, text.into().into_bytes())
    }

    pub(crate) fn uint(&mut self, number: u16, value: u32) -> &mut Self {
        self.options.push((number, encode_uint(value)));
        self
    }

    pub(crate) fn option(&mut self, number: u16, value: Vec<u8>) -> &mut Self {
        self.options.push((number, value));
        self
    }

    pub(crate) fn is_success(&self) -> bool {
        !self.code.is_error()
    }

    /// Encodes the response with the given header fields.
    pub(crate) fn encode(&self, kind: MessageType, mid: u16, token: &[u8]) -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.set_type(kind);
        packet.header.code = MessageClass::Response(self.code);
        packet.header.message_id = mid;
        // Tokens come from parsed requests (at most 8 bytes).
        packet.set_token(token[..token.len().min(8)].to_vec());
        for (number, value) in &self.options {
            packet.add_option(CoapOption::from(*number), value.clone());
        }
        packet.payload = self.payload.clone();
        // Block-wise keeps our messages small; the limit only guards against misuse.
        packet.to_bytes_with_limit(65_000).unwrap_or_else(|_| {
            let mut p = Packet::new();
            p.header.set_type(kind);
            p.header.code = MessageClass::Response(ResponseType::InternalServerError);
            p.header.message_id = mid;
            p.set_token(token[..token.len().min(8)].to_vec());
            p.to_bytes().unwrap_or_default()
        })
    }
}

/// The answer for the request's message: piggybacked in an ACK for a CON (same MID), a NON
/// with a fresh MID for a NON (§5.2.3).
pub(crate) fn reply(request: &Request, response: &Response, fresh_mid: u16) -> Vec<u8> {
    if request.confirmable {
        response.encode(MessageType::Acknowledgement, request.mid, &request.token)
    } else {
        response.encode(MessageType::NonConfirmable, fresh_mid, &request.token)
    }
}

/// What the dedup cache knows about a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time: process it.
    New,
    /// A duplicate of a message still being processed: say nothing yet.
    InProgress,
    /// A duplicate of a message already answered: send these bytes again.
    Replay(Bytes),
}

#[derive(Debug)]
enum Answer {
    Pending,
    Sent(Bytes),
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    answer: Answer,
}

pub(crate) type DedupKey = (SocketAddr, u16);

/// Duplicate detection (§4.5) by (endpoint, message ID) within EXCHANGE_LIFETIME (CON) or
/// NON_LIFETIME (NON), with the answer kept for replay. Bounded: beyond `capacity` entries
/// the oldest go first, so a flood of distinct IDs costs a fixed amount of memory.
#[derive(Debug)]
pub(crate) struct DedupCache {
    capacity: usize,
    map: HashMap<DedupKey, Entry>,
    order: VecDeque<(DedupKey, Instant)>,
}

impl DedupCache {
    pub(crate) fn new(capacity: usize) -> Self {
        // Grown as exchanges arrive, not reserved: reserving 4,096 entries made an idle
        // server carry 1.9 MB for the exchanges of a load it may never see.
        DedupCache {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Looks a message up; a new one is recorded as in progress.
    pub(crate) fn check(&mut self, key: DedupKey, confirmable: bool, now: Instant) -> Seen {
        if let Some(entry) = self.map.get(&key) {
            if entry.expires > now {
                return match &entry.answer {
                    Answer::Pending => Seen::InProgress,
                    Answer::Sent(b) => Seen::Replay(b.clone()),
                };
            }
            self.map.remove(&key);
        }
        self.evict(now);
        let lifetime = if confirmable {
            EXCHANGE_LIFETIME
        } else {
            NON_LIFETIME
        };
        let expires = now + lifetime;
        self.map.insert(
            key,
            Entry {
                expires,
                answer: Answer::Pending,
            },
        );
        self.order.push_back((key, expires));
        Seen::New
    }

    /// Records the answer sent for a message (if it is still remembered).
    pub(crate) fn answered(&mut self, key: DedupKey, bytes: Bytes) {
        if let Some(entry) = self.map.get_mut(&key) {
            entry.answer = Answer::Sent(bytes);
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&(key, expires)) = self.order.front() {
            let stale = self.map.get(&key).is_none_or(|e| e.expires != expires);
            if stale || expires <= now || self.map.len() >= self.capacity {
                self.order.pop_front();
                if !stale {
                    self.map.remove(&key);
                }
            } else {
                break;
            }
        }
        // `order` may hold stale keys of re-inserted entries; it never exceeds twice the map.
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order
                .retain(|(k, e)| map.get(k).is_some_and(|entry| entry.expires == *e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(mid: u16, con: bool, path: &[&str]) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.header.code = MessageClass::Request(coap_lite::RequestType::Get);
        p.header.message_id = mid;
        p.set_token(vec![1, 2]);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        p.to_bytes().unwrap()
    }

    #[test]
    fn requests_and_pings() {
        let Inbound::Request(r) = classify(&get(7, true, &["things", "lamp"])) else {
            panic!("not a request")
        };
        assert_eq!((r.mid, r.method, r.uri()), (7, GET, "/things/lamp".to_owned()));
        assert_eq!(classify(&[0x40, 0, 0, 9]), Inbound::Reset(9), "ping → RST");
        assert_eq!(classify(&[0x60, 0, 0, 9]), Inbound::Ack(9));
        assert_eq!(classify(&[0x70, 0, 0, 9]), Inbound::Rst(9));
        assert_eq!(classify(&[0x50, 0, 0, 9]), Inbound::Ignore, "NON empty");
    }

    #[test]
    fn garbage() {
        assert_eq!(classify(&[]), Inbound::Ignore);
        assert_eq!(classify(&[0x40, 1, 0]), Inbound::Ignore, "truncated header");
        assert_eq!(classify(&[0x80, 1, 0, 1]), Inbound::Ignore, "version 2");
        assert_eq!(classify(&[0x49, 1, 0, 3, 1]), Inbound::Reset(3), "TKL 9 in a CON");
        assert_eq!(classify(&[0x59, 1, 0, 3, 1]), Inbound::Ignore, "TKL 9 in a NON");
        assert_eq!(
            classify(&[0x40, 0, 0, 3, 0xff]),
            Inbound::Reset(3),
            "empty with payload marker"
        );
        assert_eq!(
            classify(&[0x40, 0x45, 0, 3]),
            Inbound::Reset(3),
            "a response in a CON"
        );
        assert_eq!(
            classify(&[0x40, 0xe1, 0, 3]),
            Inbound::Reset(3),
            "reserved class 7"
        );
        assert_eq!(
            classify(&[0x40, 1, 0, 3, 0xf0]),
            Inbound::Reset(3),
            "option delta 15"
        );
    }

    /// RFC 7252 §3 and §4.1: each message format error rejects a CON with RST and is silence
    /// for a NON, an ACK and an RST, also where coap-lite would parse the bytes.
    #[test]
    fn message_format_errors() {
        // Header 0x?1 0x01 (GET) MID 0x0007, token 0xaa, Uri-Path "x".
        let cases: [(&[u8], FormatError); 11] = [
            (
                &[0x41, 1, 0, 7, 0xaa, 0xb1, b'x', 0xff],
                FormatError::EmptyPayload,
            ),
            (&[0x40, 1, 0, 7, 0xff], FormatError::EmptyPayload),
            (
                &[0x4f, 1, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
                FormatError::TokenLength,
            ),
            (
                &[0x49, 1, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                FormatError::TokenLength,
            ),
            (&[0x44, 1, 0, 7, 1, 2], FormatError::TokenLength),
            (&[0x41, 1, 0, 7, 0xaa, 0xf1, b'x'], FormatError::ReservedNibble),
            (&[0x41, 1, 0, 7, 0xaa, 0xbf, b'x'], FormatError::ReservedNibble),
            (&[0x41, 1, 0, 7, 0xaa, 0xb3, b'x'], FormatError::TruncatedOption),
            (
                &[0x41, 1, 0, 7, 0xaa, 0xe0, 0xfe, 0xf2, 0x10],
                FormatError::OptionNumber,
            ),
            (&[0x41, 0, 0, 7, 0xaa], FormatError::EmptyWithContent),
            (&[0x40, 0, 0, 7, 0xb1, b'x'], FormatError::EmptyWithContent),
        ];
        for (bytes, error) in cases {
            assert_eq!(check_format(bytes), Err(error), "{bytes:x?}");
            assert_eq!(classify(bytes), Inbound::Reset(7), "CON {bytes:x?}");
            for kind in [0x10, 0x20, 0x30] {
                let mut other = bytes.to_vec();
                other[0] |= kind;
                assert_eq!(classify(&other), Inbound::Ignore, "type {kind:x} {bytes:x?}");
            }
        }
        // coap-lite alone takes a marker with no payload for a request without one.
        assert!(Packet::from_bytes(cases[0].0).is_ok());
        // Well-formed neighbours: a one-byte payload, a 13-byte option, an 8-byte token.
        for ok in [
            &[0x41, 1, 0, 7, 0xaa, 0xb1, b'x', 0xff, b'1'][..],
            &[
                0x40, 1, 0, 7, 0xbd, 0, b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h', b'i', b'j', b'k',
                b'l', b'm',
            ],
            &[0x48, 1, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8],
        ] {
            assert_eq!(check_format(ok), Ok(()), "{ok:x?}");
            assert!(matches!(classify(ok), Inbound::Request(_)), "{ok:x?}");
        }
    }

    #[test]
    fn options() {
        let mut p = Packet::from_bytes(&get(1, true, &["x"])).unwrap();
        p.add_option(CoapOption::Unknown(2049), vec![1]);
        let Inbound::BadOption { option, .. } = classify(&p.to_bytes().unwrap()) else {
            panic!("unknown critical option accepted")
        };
        assert_eq!(option, 2049);
        let mut p = Packet::from_bytes(&get(1, true, &["x"])).unwrap();
        p.add_option(CoapOption::Unknown(2048), vec![1]);
        assert!(
            matches!(classify(&p.to_bytes().unwrap()), Inbound::Request(_)),
            "elective ignored"
        );
        let mut p = Packet::from_bytes(&get(1, true, &["x"])).unwrap();
        p.add_option(CoapOption::Accept, vec![0]);
        p.add_option(CoapOption::Accept, vec![50]);
        assert!(matches!(
            classify(&p.to_bytes().unwrap()),
            Inbound::BadOption { option: 17, .. }
        ));
        let mut p = Packet::from_bytes(&get(1, true, &["x"])).unwrap();
        p.add_option(CoapOption::UriHost, b"example".to_vec());
        p.add_option(CoapOption::Block2, vec![0x16]);
        let Inbound::Request(r) = classify(&p.to_bytes().unwrap()) else {
            panic!("Uri-Host must be ignored")
        };
        assert_eq!(
            r.block2,
            Some(Block {
                num: 1,
                more: false,
                szx: 6
            })
        );
        let mut p = Packet::from_bytes(&get(1, true, &["x"])).unwrap();
        p.add_option(CoapOption::ProxyUri, b"coap://a/b".to_vec());
        assert!(matches!(classify(&p.to_bytes().unwrap()), Inbound::NoProxy(_)));
    }

    #[test]
    fn responses() {
        let Inbound::Request(r) = classify(&get(77, true, &["x"])) else {
            panic!()
        };
        let mut resp = Response::with_payload(ResponseType::Content, b"true".to_vec());
        resp.uint(option::CONTENT_FORMAT, 50);
        let bytes = reply(&r, &resp, 5);
        let p = Packet::from_bytes(&bytes).unwrap();
        assert_eq!(p.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(p.header.message_id, 77);
        assert_eq!(p.get_token(), &[1, 2]);
        let Inbound::Request(r) = classify(&get(77, false, &["x"])) else {
            panic!()
        };
        let p = Packet::from_bytes(&reply(&r, &resp, 5)).unwrap();
        assert_eq!(
            (p.header.get_type(), p.header.message_id),
            (MessageType::NonConfirmable, 5)
        );
    }

    #[test]
    fn dedup_replays_and_stays_bounded() {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut cache = DedupCache::new(100);
        assert_eq!(cache.check((peer, 1), true, now), Seen::New);
        assert_eq!(cache.check((peer, 1), true, now), Seen::InProgress);
        cache.answered((peer, 1), Bytes::from_static(b"a"));
        assert_eq!(
            cache.check((peer, 1), true, now),
            Seen::Replay(Bytes::from_static(b"a"))
        );
        let later = now + EXCHANGE_LIFETIME + Duration::from_secs(1);
        assert_eq!(cache.check((peer, 1), true, later), Seen::New, "expired");
        for mid in 0..=u16::MAX {
            cache.check((peer, mid), true, later);
            assert!(cache.len() <= 100);
        }
        assert!(cache.order.len() <= 200);
    }
}
