//! Bounded fuzzing of the CoAP request path, sans-IO: at least 100k random and mutated
//! datagrams go through the engine (and every core operation it asks for is performed, as the
//! socket loop would), with no panic; then a flood of distinct message IDs keeps the dedup
//! cache within its bound. Deterministic (seeded xorshift), so a failure reproduces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use super::engine::{Effects, Engine, EngineConfig};
use super::forms::CoapForms;
use super::message;
use crate::core::{Error, Operation, Servient};
use crate::td::{Origins, TdPublisher};
use crate::things::{self, IdStore};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn engine(config: EngineConfig) -> (Engine, Arc<Servient>) {
    let servient = Arc::new(Servient::new());
    let mut ids = IdStore::new(None);
    for definition in things::bundled() {
        let hosted = things::expose(definition.expect("bundled thing parses"), &mut ids)
            .expect("bundled thing builds");
        servient.expose(hosted.thing);
    }
    let publisher = Arc::new(TdPublisher::new(vec![Arc::new(CoapForms::default())]));
    let origins = Origins {
        http: Some("http://127.0.0.1:8080".into()),
        coap: Some("coap://127.0.0.1:5683".into()),
        coaps: None,
    };
    (
        Engine::new(
            config,
            servient.clone(),
            publisher,
            origins,
            "urn:uuid:fuzz".into(),
        ),
        servient,
    )
}

const PATHS: &[&str] = &[
    "/things/lamp",
    "/things/lamp/properties/brightness",
    "/things/lamp/properties/on",
    "/things/lamp/properties",
    "/things/lamp/actions/toggle",
    "/things/lamp/actions/fade",
    "/things/lamp/actions/fade/x",
    "/things/lamp/events/faded",
    "/things/thermostat/properties/target",
    "/.well-known/core",
    "/.well-known/wot",
    "/things",
];

/// A well-formed request the mutator starts from.
fn seed(rng: &mut Rng) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(if rng.below(2) == 0 {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    });
    p.header.code = MessageClass::Request(match rng.below(4) {
        0 => RequestType::Get,
        1 => RequestType::Put,
        2 => RequestType::Post,
        _ => RequestType::Delete,
    });
    p.header.message_id = rng.next() as u16;
    p.set_token((0..rng.below(9)).map(|_| rng.byte()).collect());
    for s in PATHS[rng.below(PATHS.len())].split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    let extras = [
        CoapOption::Observe,
        CoapOption::Accept,
        CoapOption::ContentFormat,
        CoapOption::Block2,
        CoapOption::Block1,
        CoapOption::Size1,
        CoapOption::Size2,
        CoapOption::UriQuery,
        CoapOption::ETag,
    ];
    for _ in 0..rng.below(4) {
        let option = extras[rng.below(extras.len())];
        p.add_option(option, (0..rng.below(4)).map(|_| rng.byte()).collect());
    }
    let payloads: &[&[u8]] = &[
        b"",
        b"42",
        b"true",
        b"{\"level\":5,\"duration\":0}",
        b"{",
        b"\"x\"",
        &[0x18, 0x2a],
    ];
    p.payload = payloads[rng.below(payloads.len())].to_vec();
    p.to_bytes().unwrap_or_default()
}

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.byte();
            }
            2 => {
                let at = rng.below(bytes.len() + 1);
                bytes.truncate(at);
            }
            3 => {
                let at = rng.below(bytes.len() + 1);
                bytes.insert(at, rng.byte());
            }
            _ => bytes.extend((0..rng.below(16)).map(|_| rng.byte())),
        }
    }
    bytes
}

/// Performs what the engine asks, as the socket loop does, until it asks nothing more; an
/// action that takes longer than 50 ms is answered as failed instead of waited for.
async fn perform(engine: &mut Engine, servient: &Arc<Servient>, now: Instant, fx: &mut Effects) {
    while !fx.perform.is_empty() {
        for pending in std::mem::take(&mut fx.perform) {
            let result = match pending.op {
                op @ Operation::InvokeAction { .. } => {
                    let servient = servient.clone();
                    let slug = pending.slug.clone();
                    match tokio::time::timeout(Duration::from_millis(50), async move {
                        servient.handle(&slug, op).await
                    })
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(Error::Internal("slow".into())),
                    }
                }
                op => servient.handle(&pending.slug, op).await,
            };
            engine.on_done(pending.exchange, result, now, fx);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_hostile_datagrams_cause_no_panic() {
    let (mut engine, servient) = engine(EngineConfig::default());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut fx = Effects::default();
    let start = Instant::now();
    let mut now = Instant::now();
    let mut answered = 0usize;
    let mut format_errors = 0usize;
    // At least N datagrams; with FUZZ_SECONDS set (CI), keep going until that much time passed.
    const N: usize = 120_000;
    let budget = Duration::from_secs(
        std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let mut sent = 0usize;
    for i in 0.. {
        if i >= N && start.elapsed() >= budget {
            break;
        }
        sent = i + 1;
        let datagram = match i % 3 {
            0 => (0..rng.below(64)).map(|_| rng.byte()).collect(),
            1 => {
                let s = seed(&mut rng);
                mutate(&mut rng, s)
            }
            _ => seed(&mut rng),
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 1000 + rng.below(64) as u16));
        now += Duration::from_millis(1);
        engine.on_datagram(peer, &datagram, i % 97 == 0, now, &mut fx);
        if datagram.len() >= 4 && datagram[0] >> 6 == 1 && message::check_format(&datagram).is_err() {
            // A message format error is rejected: at most an RST of its own MID, nothing done.
            let rst = message::empty(MessageType::Reset, u16::from_be_bytes([datagram[2], datagram[3]]));
            assert!(fx.perform.is_empty(), "{datagram:x?}");
            assert!(fx.send.iter().all(|(_, b)| b[..] == rst[..]), "{datagram:x?}");
            format_errors += 1;
        }
        perform(&mut engine, &servient, now, &mut fx).await;
        answered += fx.send.len();
        fx.clear();
        if i % 1000 == 0 {
            engine.on_tick(now, &mut fx);
            fx.clear();
        }
        assert!(engine.dedup_len() <= engine.dedup_capacity());
        assert!(engine.observer_count() <= 4096);
    }
    assert!(answered > sent / 4, "most seeds are answered ({answered})");
    assert!(
        format_errors > sent / 10,
        "mutations reach the format checks ({format_errors})"
    );
    eprintln!("{sent} datagrams in {:?}, {answered} answers", start.elapsed());
    // The engine still serves a plain request afterwards.
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 1;
    p.add_option(CoapOption::UriPath, b".well-known".to_vec());
    p.add_option(CoapOption::UriPath, b"core".to_vec());
    engine.on_datagram(
        SocketAddr::from(([127, 0, 0, 2], 9)),
        &p.to_bytes().unwrap(),
        false,
        now,
        &mut fx,
    );
    let reply = Packet::from_bytes(&fx.send.pop().expect("answered").1).unwrap();
    assert_eq!(reply.header.code.to_string(), "2.05");
}

#[tokio::test]
async fn dedup_cache_stays_bounded_under_a_flood_of_message_ids() {
    let config = EngineConfig {
        dedup_capacity: 1000,
        ..EngineConfig::default()
    };
    let (mut engine, _servient) = engine(config);
    let mut fx = Effects::default();
    let now = Instant::now();
    let mut peak = 0;
    for i in 0..200_000u32 {
        // A ping-free flood of distinct (endpoint, MID) GETs of a missing resource.
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Get);
        p.header.message_id = i as u16;
        p.add_option(CoapOption::UriPath, b"things".to_vec());
        p.add_option(CoapOption::UriPath, b"nope".to_vec());
        let peer = SocketAddr::from(([10, 0, (i >> 24) as u8, (i >> 16) as u8], 5683));
        engine.on_datagram(peer, &p.to_bytes().unwrap(), false, now, &mut fx);
        assert_eq!(fx.send.len(), 1, "every new message is answered");
        fx.clear();
        peak = peak.max(engine.dedup_len());
    }
    assert_eq!(peak, 1000, "the cache fills to its bound and no further");
}
