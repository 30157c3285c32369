//! The CoAP message layer of the consumer's client: one request in, one response out, over a
//! UDP socket connected to the server. Requests are confirmable and retransmitted with
//! exponential back-off (RFC 7252 §4.2: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4),
//! bounded by the consumer's timeout; a separate response (an empty ACK, then the response as
//! CON) is awaited and acknowledged; a large answer is fetched block by block (RFC 7959 Block2)
//! and a large body sent so (Block1). Option numbers and Block values are the CoAP binding's;
//! responses are read here, since the binding's `message` classifies what a server receives
//! and its `Block1Store` reassembles a server's uploads, neither of which a client does.
//! It must not know operations, forms or payload formats.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use reqwest::Url;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::super::{Consumer, ConsumerError};
use crate::binding::coap::block::Block;
use crate::binding::coap::message::option;

const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const ACK_RANDOM_FACTOR: f64 = 1.5;
const MAX_RETRANSMIT: u32 = 4;
/// Largest answer assembled from blocks.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Request bodies beyond one 1024-byte block (RFC 7252 §4.6's safe size) go in Block1 blocks.
const BLOCK1_SZX: u8 = 6;
const BLOCK1_SIZE: usize = 1024;

/// A request, before it is cut into messages.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) method: RequestType,
    pub(super) url: Url,
    pub(super) payload: Vec<u8>,
    pub(super) content_format: Option<u16>,
    pub(super) accept: Option<u16>,
    pub(super) observe: Option<u32>,
}

/// A response (all of its blocks, when it had several).
#[derive(Debug, Clone)]
pub(super) struct Response {
    pub(super) code: ResponseType,
    pub(super) code_text: String,
    pub(super) content_format: Option<u16>,
    pub(super) payload: Vec<u8>,
    pub(super) observe: Option<u32>,
    pub(super) location: Vec<String>,
}

/// Endpoints whose last exchange ended with an answer, kept for the next request to the same
/// server (by host and port): a bridge forwarding many requests does not open, bind and
/// register a socket and zero a buffer for each. An endpoint whose exchange failed is dropped.
#[derive(Default)]
pub(crate) struct IdleEndpoints(std::sync::Mutex<HashMap<(String, u16), Vec<Endpoint>>>);

/// How many idle endpoints are kept per server.
const IDLE_PER_SERVER: usize = 64;

impl std::fmt::Debug for IdleEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleEndpoints")
    }
}

fn server_of(url: &Url) -> (String, u16) {
    (
        url.host_str().unwrap_or_default().to_owned(),
        url.port().unwrap_or(5683),
    )
}

impl IdleEndpoints {
    fn take(&self, url: &Url) -> Option<Endpoint> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut endpoint = idle.get_mut(&server_of(url))?.pop()?;
        endpoint.url = url.clone();
        Some(endpoint)
    }

    /// Keeps an endpoint whose exchange ended with an answer.
    pub(super) fn put(&self, endpoint: Endpoint) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(server_of(&endpoint.url)).or_default();
        if kept.len() < IDLE_PER_SERVER {
            kept.push(endpoint);
        }
    }
}

/// One client endpoint: a UDP socket connected to the server.
pub(super) struct Endpoint {
    socket: UdpSocket,
    url: Url,
    next_mid: u16,
    buffer: Vec<u8>,
}

fn unreachable_at(url: &Url, reason: impl ToString) -> ConsumerError {
    ConsumerError::Unreachable {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

impl Endpoint {
    async fn open(url: &Url) -> Result<Endpoint, ConsumerError> {
        let host = url.host_str().ok_or_else(|| ConsumerError::BadUrl {
            url: url.to_string(),
            reason: "a coap URL needs a host".into(),
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port().unwrap_or(5683);
        let peer: SocketAddr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| unreachable_at(url, e))?
            .next()
            .ok_or_else(|| unreachable_at(url, "the host name has no address"))?;
        let local: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(|e| unreachable_at(url, e))?;
        socket.connect(peer).await.map_err(|e| unreachable_at(url, e))?;
        Ok(Endpoint {
            socket,
            url: url.clone(),
            next_mid: rand::random(),
            buffer: vec![0; 65_536],
        })
    }

    pub(super) fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    pub(super) async fn send(&self, packet: &Packet) -> Result<(), ConsumerError> {
        let bytes = packet.to_bytes().map_err(|e| ConsumerError::BadUrl {
            url: self.url.to_string(),
            reason: format!("the request does not fit a CoAP message: {e:?}"),
        })?;
        self.socket
            .send(&bytes)
            .await
            .map_err(|e| unreachable_at(&self.url, e))?;
        Ok(())
    }

    /// The next datagram that parses as CoAP. A refused port (ICMP) is Unreachable.
    pub(super) async fn recv(&mut self) -> Result<Packet, ConsumerError> {
        loop {
            let n = match self.socket.recv(&mut self.buffer).await {
                Ok(n) => n,
                Err(e) => return Err(unreachable_at(&self.url, e)),
            };
            if let Ok(packet) = Packet::from_bytes(&self.buffer[..n]) {
                return Ok(packet);
            }
        }
    }

    pub(super) async fn empty(&self, kind: MessageType, mid: u16) -> Result<(), ConsumerError> {
        let mut packet = Packet::new();
        packet.header.set_type(kind);
        packet.header.message_id = mid;
        packet.header.code = MessageClass::Empty;
        self.send(&packet).await
    }

    /// One confirmable exchange: sends, retransmits until acknowledged, waits for a separate
    /// response after an empty ACK; the answer is the response with our token.
    async fn exchange(
        &mut self,
        packet: &mut Packet,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Packet, ConsumerError> {
        let mid = self.mid();
        packet.header.message_id = mid;
        let token = packet.get_token().to_vec();
        let mut wait = ACK_TIMEOUT.mul_f64(1.0 + rand::random::<f64>() * (ACK_RANDOM_FACTOR - 1.0));
        let mut sent = 0;
        let mut acknowledged = false;
        self.send(packet).await?;
        let mut retransmit_at = Instant::now() + wait;
        loop {
            let until = if acknowledged {
                deadline
            } else {
                retransmit_at.min(deadline)
            };
            let received = tokio::time::timeout_at(until, self.recv()).await;
            let answer = match received {
                Ok(answer) => answer?,
                Err(_) if Instant::now() >= deadline => {
                    return Err(ConsumerError::Timeout {
                        url: self.url.to_string(),
                        after: timeout,
                    });
                }
                Err(_) => {
                    if sent == MAX_RETRANSMIT {
                        return Err(ConsumerError::Timeout {
                            url: self.url.to_string(),
                            after: timeout,
                        });
                    }
                    sent += 1;
                    wait *= 2;
                    retransmit_at = Instant::now() + wait;
                    self.send(packet).await?;
                    continue;
                }
            };
            match answer.header.get_type() {
                MessageType::Acknowledgement if answer.header.message_id == mid => {
                    if answer.header.code == MessageClass::Empty {
                        acknowledged = true;
                    } else if answer.get_token() == token.as_slice() {
                        return Ok(answer);
                    }
                }
                MessageType::Reset if answer.header.message_id == mid => {
                    return Err(ConsumerError::Refused {
                        url: self.url.to_string(),
                        status: "RST".into(),
                        detail: Some("the server reset the request".into()),
                    });
                }
                MessageType::Confirmable | MessageType::NonConfirmable
                    if answer.get_token() == token.as_slice() =>
                {
                    if answer.header.get_type() == MessageType::Confirmable {
                        self.empty(MessageType::Acknowledgement, answer.header.message_id)
                            .await?;
                    }
                    return Ok(answer);
                }
                MessageType::Confirmable => {
                    self.empty(MessageType::Reset, answer.header.message_id).await?;
                }
                _ => {}
            }
        }
    }
}

fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

pub(super) fn packet(request: &Request, token: &[u8], block2: Option<Block>) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(request.method);
    p.set_token(token.to_vec());
    if let Some(observe) = request.observe {
        p.add_option(
            CoapOption::from(option::OBSERVE),
            crate::binding::coap::block::encode_uint(observe),
        );
    }
    for segment in request
        .url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        p.add_option(CoapOption::from(option::URI_PATH), percent_decode(segment));
    }
    if let Some(cf) = request.content_format {
        p.add_option(
            CoapOption::from(option::CONTENT_FORMAT),
            crate::binding::coap::block::encode_uint(cf.into()),
        );
    }
    for query in request.url.query().into_iter().flat_map(|q| q.split('&')) {
        p.add_option(CoapOption::from(option::URI_QUERY), percent_decode(query));
    }
    if let Some(accept) = request.accept {
        p.add_option(
            CoapOption::from(option::ACCEPT),
            crate::binding::coap::block::encode_uint(accept.into()),
        );
    }
    if let Some(block) = block2 {
        p.add_option(CoapOption::from(option::BLOCK2), block.encode());
    }
    p.payload = request.payload.clone();
    p
}

pub(super) fn uint(packet: &Packet, number: u16) -> Option<u32> {
    packet
        .get_first_option(CoapOption::from(number))
        .and_then(|v| crate::binding::coap::block::decode_uint(v, 4))
}

pub(super) fn response_of(packet: Packet, url: &Url) -> Result<Response, ConsumerError> {
    let MessageClass::Response(code) = packet.header.code else {
        return Err(ConsumerError::Malformed {
            url: url.to_string(),
            reason: format!("the answer is not a response ({})", packet.header.get_code()),
        });
    };
    let location = packet
        .get_option(CoapOption::from(option::LOCATION_PATH))
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Ok(Response {
        code,
        code_text: packet.header.get_code(),
        content_format: uint(&packet, option::CONTENT_FORMAT).and_then(|v| u16::try_from(v).ok()),
        observe: uint(&packet, option::OBSERVE),
        location,
        payload: packet.payload,
    })
}

/// Performs a request (all blocks of its answer), on a fresh endpoint.
pub(super) async fn perform(
    consumer: &Consumer,
    request: &Request,
) -> Result<(Endpoint, Response, Vec<u8>), ConsumerError> {
    let timeout = consumer.config.timeout;
    let deadline = Instant::now() + timeout;
    let mut endpoint = match consumer.coap_idle.take(&request.url) {
        Some(endpoint) => endpoint,
        None => Endpoint::open(&request.url).await?,
    };
    let token: [u8; 8] = rand::random();
    let answer = if request.payload.len() > BLOCK1_SIZE {
        upload(&mut endpoint, request, &token, deadline, timeout).await?
    } else {
        let mut p = packet(request, &token, None);
        endpoint.exchange(&mut p, deadline, timeout).await?
    };
    let block = answer
        .get_first_option(CoapOption::from(option::BLOCK2))
        .and_then(|v| Block::decode(v));
    let mut response = response_of(answer, &request.url)?;
    let mut body = std::mem::take(&mut response.payload);
    if let Some(mut block) = block {
        // The server chose the block size of its first answer; later blocks ask for the same.
        while block.more {
            let size = block.size();
            let next = Block {
                num: block.num + 1,
                more: false,
                szx: block.szx,
            };
            let mut p = packet(request, &rand::random::<[u8; 8]>(), Some(next));
            let answer = endpoint.exchange(&mut p, deadline, timeout).await?;
            let got = answer
                .get_first_option(CoapOption::from(option::BLOCK2))
                .and_then(|v| Block::decode(v))
                .ok_or_else(|| ConsumerError::Malformed {
                    url: request.url.to_string(),
                    reason: format!("block {} came back without Block2", next.num),
                })?;
            let part = response_of(answer, &request.url)?;
            if part.code.is_error() {
                // The error is the answer: the caller reports it like any other.
                return Ok((endpoint, part, token.to_vec()));
            }
            if got.num != next.num || (got.num as usize) * got.size() != body.len() {
                return Err(ConsumerError::Malformed {
                    url: request.url.to_string(),
                    reason: format!(
                        "asked for block {} of {size} bytes, got block {}",
                        next.num, got.num
                    ),
                });
            }
            if body.len() + part.payload.len() > MAX_BODY {
                return Err(ConsumerError::Malformed {
                    url: request.url.to_string(),
                    reason: format!("the answer is larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&part.payload);
            block = got;
        }
    }
    Ok((endpoint, response, token.to_vec())).map(|(e, mut r, t)| {
        r.payload = body;
        (e, r, t)
    })
}

/// Sends a body larger than one block in Block1 blocks (RFC 7959 §2.5): each intermediate block
/// is answered 2.31 Continue (whose Block1 may ask for smaller blocks); the last block's answer
/// is the response. An error answer on the way is returned as the response.
async fn upload(
    endpoint: &mut Endpoint,
    request: &Request,
    token: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<Packet, ConsumerError> {
    let body = &request.payload;
    let mut szx = BLOCK1_SZX;
    let mut offset = 0;
    loop {
        let size = 1usize << (szx + 4);
        let end = (offset + size).min(body.len());
        let block = Block {
            num: u32::try_from(offset / size).unwrap_or(u32::MAX),
            more: end < body.len(),
            szx,
        };
        let mut part = request.clone();
        part.payload = body[offset..end].to_vec();
        let mut p = packet(&part, token, None);
        p.add_option(CoapOption::from(option::BLOCK1), block.encode());
        if block.num == 0 {
            p.add_option(
                CoapOption::from(option::SIZE1),
                crate::binding::coap::block::encode_uint(u32::try_from(body.len()).unwrap_or(u32::MAX)),
            );
        }
        let answer = endpoint.exchange(&mut p, deadline, timeout).await?;
        if !block.more || answer.header.code != MessageClass::Response(ResponseType::Continue) {
            return Ok(answer);
        }
        if let Some(asked) = answer
            .get_first_option(CoapOption::from(option::BLOCK1))
            .and_then(|v| Block::decode(v))
            && asked.szx < szx
        {
            // Smaller blocks still start at a multiple of their size: `end` is one.
            szx = asked.szx;
        }
        offset = end;
    }
}

/// The message layer against a raw UDP peer on loopback, which answers the way RFC 7252 lets a
/// server answer: late (the client must retransmit) or separately (the client must wait, and
/// acknowledge the confirmable response).
#[cfg(test)]
mod exchange_tests {
    use super::*;

    async fn peer() -> (UdpSocket, Url) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("coap://{}/p", socket.local_addr().unwrap())).unwrap();
        (socket, url)
    }

    async fn receive(socket: &UdpSocket) -> (Packet, SocketAddr) {
        let mut buf = [0; 2048];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        (Packet::from_bytes(&buf[..n]).unwrap(), from)
    }

    fn answer(to: &Packet, kind: MessageType, mid: u16, body: &[u8]) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(kind);
        p.header.message_id = mid;
        p.header.code = MessageClass::Response(ResponseType::Content);
        p.set_token(to.get_token().to_vec());
        p.add_option(CoapOption::ContentFormat, vec![50]);
        p.payload = body.to_vec();
        p.to_bytes().unwrap()
    }

    fn get(url: &Url) -> Request {
        Request {
            method: RequestType::Get,
            url: url.clone(),
            payload: Vec::new(),
            content_format: None,
            accept: None,
            observe: None,
        }
    }

    #[tokio::test]
    async fn an_endpoint_that_got_its_answer_serves_the_next_request_and_a_failed_one_does_not() {
        let (server, url) = peer().await;
        let consumer = Consumer::new(super::super::super::ConsumerConfig::default()).unwrap();
        let mut seen_from = Vec::new();
        for body in [&b"1"[..], b"2"] {
            let client = {
                let (consumer, url) = (consumer.clone(), url.clone());
                tokio::spawn(async move {
                    let (endpoint, response, _) = perform(&consumer, &get(&url)).await?;
                    consumer.coap_idle.put(endpoint);
                    Ok::<_, ConsumerError>(response.payload)
                })
            };
            let (request, from) = receive(&server).await;
            seen_from.push(from);
            let ack = answer(
                &request,
                MessageType::Acknowledgement,
                request.header.message_id,
                body,
            );
            server.send_to(&ack, from).await.unwrap();
            assert_eq!(client.await.unwrap().unwrap(), body);
        }
        // One socket (one source port) for both requests, with a new message id each time.
        assert_eq!(seen_from[0], seen_from[1]);
        // A request whose server has gone (ICMP port unreachable) fails, and its endpoint is not
        // kept: the next request opens a fresh one.
        drop(server);
        assert!(perform(&consumer, &get(&url)).await.is_err());
        assert!(consumer.coap_idle.take(&url).is_none());
    }

    #[tokio::test]
    async fn an_unanswered_request_is_retransmitted_with_the_same_message_id() {
        let (server, url) = peer().await;
        let consumer = Consumer::new(super::super::super::ConsumerConfig::default()).unwrap();
        let client =
            tokio::spawn(async move { perform(&consumer, &get(&url)).await.map(|(_, r, _)| r.payload) });
        let (first, _) = receive(&server).await;
        let sent = Instant::now();
        let (again, from) = receive(&server).await;
        let waited = sent.elapsed();
        assert_eq!(first.header.get_type(), MessageType::Confirmable);
        assert_eq!(again.header.message_id, first.header.message_id);
        assert_eq!(again.get_token(), first.get_token());
        // ACK_TIMEOUT to ACK_TIMEOUT * ACK_RANDOM_FACTOR.
        assert!(
            waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(3200),
            "{waited:?}"
        );
        let ack = answer(
            &again,
            MessageType::Acknowledgement,
            again.header.message_id,
            b"7",
        );
        server.send_to(&ack, from).await.unwrap();
        assert_eq!(client.await.unwrap().unwrap(), b"7");
    }

    #[tokio::test]
    async fn a_separate_response_is_awaited_and_acknowledged() {
        let (server, url) = peer().await;
        let consumer = Consumer::new(super::super::super::ConsumerConfig::default()).unwrap();
        let client =
            tokio::spawn(async move { perform(&consumer, &get(&url)).await.map(|(_, r, _)| r.payload) });
        let (request, from) = receive(&server).await;
        let mut empty = Packet::new();
        empty.header.set_type(MessageType::Acknowledgement);
        empty.header.message_id = request.header.message_id;
        server.send_to(&empty.to_bytes().unwrap(), from).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = answer(&request, MessageType::Confirmable, 4242, b"\"late\"");
        server.send_to(&response, from).await.unwrap();
        let (ack, _) = receive(&server).await;
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(ack.header.message_id, 4242);
        assert_eq!(ack.header.code, MessageClass::Empty);
        assert_eq!(client.await.unwrap().unwrap(), b"\"late\"");
    }

    #[tokio::test]
    async fn silence_ends_in_a_timeout_within_the_consumers_limit() {
        let (_server, url) = peer().await;
        let config = super::super::super::ConsumerConfig {
            timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let consumer = Consumer::new(config).unwrap();
        let started = Instant::now();
        let err = perform(&consumer, &get(&url)).await.err().expect("a timeout");
        assert!(matches!(err, ConsumerError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    fn notification(to: &Packet, kind: MessageType, mid: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut p = Packet::from_bytes(&answer(to, kind, mid, body)).unwrap();
        p.add_option(CoapOption::Observe, crate::binding::coap::block::encode_uint(seq));
        p.to_bytes().unwrap()
    }

    #[tokio::test]
    async fn an_observation_acks_notifications_drops_stale_ones_and_deregisters_on_close() {
        let (server, url) = peer().await;
        let td = serde_json::json!({
            "@context": "https://www.w3.org/2022/wot/td/v1.1", "title": "x",
            "properties": {"p": {"type": "integer", "observable": true, "forms": [
                {"op": "observeproperty", "href": url.as_str(), "subprotocol": "cov:observe"}
            ]}}
        });
        let thing = Consumer::new(super::super::super::ConsumerConfig::default())
            .unwrap()
            .consume(td, Url::parse("http://127.0.0.1:1/").unwrap())
            .unwrap();
        let observing = tokio::spawn(async move { thing.observe_property("p").await });
        let (register, from) = receive(&server).await;
        assert_eq!(uint(&register, option::OBSERVE), Some(0));
        let mid = register.header.message_id;
        server
            .send_to(
                &notification(&register, MessageType::Acknowledgement, mid, 5, b"1"),
                from,
            )
            .await
            .unwrap();
        let mut observation = observing.await.unwrap().expect("registered");

        // A confirmable notification is acknowledged and passed on; a stale one (4 after 6) is not.
        for (mid, seq, body) in [(900, 6, &b"2"[..]), (901, 4, b"3"), (902, 7, b"4")] {
            server
                .send_to(
                    &notification(&register, MessageType::Confirmable, mid, seq, body),
                    from,
                )
                .await
                .unwrap();
            let (ack, _) = receive(&server).await;
            assert_eq!(
                (ack.header.get_type(), ack.header.message_id),
                (MessageType::Acknowledgement, mid)
            );
        }
        let values: Vec<serde_json::Value> = vec![
            observation.next().await.unwrap().unwrap().value,
            observation.next().await.unwrap().unwrap().value,
        ];
        assert_eq!(
            values,
            vec![serde_json::json!(2), serde_json::json!(4)],
            "the registration's own value and the stale one are not changes"
        );

        observation.close().await;
        let (deregister, _) = receive(&server).await;
        assert_eq!(uint(&deregister, option::OBSERVE), Some(1));
        assert_eq!(deregister.get_token(), register.get_token());
    }

    #[tokio::test]
    async fn a_large_body_goes_in_block1_blocks_of_the_size_the_server_asks() {
        let (server, url) = peer().await;
        let consumer = Consumer::new(super::super::super::ConsumerConfig::default()).unwrap();
        let body: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 26) as u8).collect();
        let sent = body.clone();
        let client = tokio::spawn(async move {
            let mut request = get(&url);
            request.method = RequestType::Post;
            request.payload = sent;
            perform(&consumer, &request).await.map(|(_, r, _)| r.payload)
        });
        let mut received = Vec::new();
        let mut blocks = Vec::new();
        loop {
            let (part, from) = receive(&server).await;
            let block = Block::decode(part.get_first_option(CoapOption::Block1).unwrap()).unwrap();
            blocks.push((block.num, block.szx, part.payload.len()));
            received.extend_from_slice(&part.payload);
            let mut reply = Packet::from_bytes(&answer(
                &part,
                MessageType::Acknowledgement,
                part.header.message_id,
                b"",
            ))
            .unwrap();
            if !block.more {
                reply.payload = b"\"done\"".to_vec();
                server.send_to(&reply.to_bytes().unwrap(), from).await.unwrap();
                break;
            }
            reply.header.code = MessageClass::Response(ResponseType::Continue);
            // After the first block, the server asks for 512-byte blocks.
            let asked = Block {
                num: block.num,
                more: true,
                szx: 5,
            };
            reply.add_option(CoapOption::Block1, asked.encode());
            server.send_to(&reply.to_bytes().unwrap(), from).await.unwrap();
        }
        assert_eq!(client.await.unwrap().unwrap(), b"\"done\"");
        assert_eq!(received, body);
        assert_eq!(blocks, vec![(0, 6, 1024), (2, 5, 512), (3, 5, 512), (4, 5, 452)]);
    }
}
