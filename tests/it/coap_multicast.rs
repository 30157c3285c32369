//! CoAP multicast discovery (RFC 7252 §8): the server joins 224.0.1.187 (and ff02::fd) and
//! answers only `GET /.well-known/core` there, never with an error. Joining a group must not
//! happen on a real network, so this runs only when WOT_MDNS_TESTS=1, which `.ci/run` sets
//! inside `../shared/tools/netns-run` (a namespace with only loopback):
//!
//!     cargo test --test it --no-run
//!     WOT_MDNS_TESTS=1 ../shared/tools/netns-run cargo test --offline --test it coap_multicast::

use crate::common;

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use wot_runtime::runtime::Config;

fn get(mid: u16, path: &[&str], query: Option<&str>) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::NonConfirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(vec![7, mid as u8]);
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    if let Some(q) = query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.to_bytes().unwrap()
}

async fn replies(socket: &UdpSocket, wait: Duration) -> Vec<(SocketAddr, Packet)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        out.push((from, Packet::from_bytes(&buf[..n]).expect("valid CoAP")));
    }
    out
}

#[tokio::test]
async fn multicast_discovery_answers_only_well_known_core() {
    // One multicast test at a time: this runtime announces the bundled things over mDNS too.
    let Some(_one) = common::mdns_allowed_async().await else {
        return;
    };
    let config = Config {
        no_coap: false,
        coap_port: 0,
        no_mdns: false,
        ..Config::loopback()
    };
    let running = common::start_with(config).await;
    let port = running.coap_addr.expect("CoAP runs").port();
    let client = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let group = SocketAddr::from(([224, 0, 1, 187], port));

    client
        .send_to(&get(1, &[".well-known", "core"], Some("rt=wot.thing")), group)
        .await
        .unwrap();
    let got = replies(&client, Duration::from_secs(4)).await;
    assert_eq!(got.len(), 1, "one answer: {got:?}");
    let (from, reply) = &got[0];
    assert_eq!(from.port(), port, "answered from our unicast socket");
    assert!(!from.ip().is_multicast());
    assert_eq!(reply.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(reply.header.code.to_string(), "2.05");
    let links = String::from_utf8(reply.payload.clone()).unwrap();
    assert!(
        links.contains("</things/lamp>;rt=\"wot.thing\";ct=432"),
        "{links}"
    );

    // Anything else sent to the group gets silence: no error, no RST.
    client
        .send_to(&get(2, &["things", "lamp"], None), group)
        .await
        .unwrap();
    client.send_to(&get(3, &["nope"], None), group).await.unwrap();
    client
        .send_to(&get(4, &[".well-known", "core"], Some("rt=nothing")), group)
        .await
        .unwrap();
    client.send_to(b"garbage", group).await.unwrap();
    client.send_to(&[0x40, 0, 0, 9], group).await.unwrap(); // a ping: no RST on multicast
    assert!(
        replies(&client, Duration::from_secs(3)).await.is_empty(),
        "silence"
    );

    // IPv6 ff02::fd on loopback, where the namespace allows it.
    if let Ok(v6) = UdpSocket::bind("[::1]:0").await {
        let group6 = SocketAddr::from((Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfd), port));
        if v6
            .send_to(&get(5, &[".well-known", "core"], None), group6)
            .await
            .is_ok()
        {
            let got = replies(&v6, Duration::from_secs(4)).await;
            eprintln!("IPv6 multicast answers: {}", got.len());
        }
    }
    running.stop().await;
}
