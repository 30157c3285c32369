//! MQTT load: notifications from 1,000 things through a Mosquitto broker to one subscriber, and
//! write round-trips (publish to a write topic, wait for the retained value to come back). A
//! benchmark, not a test: nothing here is asserted. Needs `mosquitto` on PATH (Debian package
//! `mosquitto`); it starts one on a free loopback port and the runtime in this process.
//!
//!     cargo run --release --example mqtt_bench -- [--things 1000] [--rounds 20] [--writes 2000] [--nagle]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::json;
use wot_runtime::binding::mqtt::MqttConfig;
use wot_runtime::core::{ExposedThing, ThingBuilder};
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::Hosted;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn thing(i: usize) -> Arc<ExposedThing> {
    let model = json!({
        "title": format!("Sensor {i}"),
        "properties": {"level": {"type": "integer", "observable": true}},
        "events": {"alarm": {"data": {"type": "integer"}}}
    });
    ThingBuilder::new(format!("t{i}"), model).build().expect("builds")
}

#[tokio::main]
async fn main() {
    let (n_things, rounds, writes) = (arg("--things", 1000), arg("--rounds", 20), arg("--writes", 2000));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    // Mosquitto leaves Nagle on by default: each small publication it forwards would wait for
    // the previous one's ACK (about 40 ms on Linux). A broker tuned for small messages sets
    // `set_tcp_nodelay true`; the bench runs both ways when asked (--nagle).
    let conf = std::env::temp_dir().join(format!("mqtt-bench-{port}.conf"));
    let nodelay = !std::env::args().any(|a| a == "--nagle");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay {nodelay}\n"),
    )
    .expect("config");
    println!("mosquitto with set_tcp_nodelay {nodelay}");
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on PATH");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let things: Vec<Arc<ExposedThing>> = (0..n_things).map(thing).collect();
    let hosted = things
        .iter()
        .map(|t| Hosted {
            thing: t.clone(),
            behaviors: Default::default(),
        })
        .collect();
    let config = Config {
        mqtt: Some(MqttConfig {
            broker: format!("mqtt://127.0.0.1:{port}"),
            prefix: "bench/".into(),
            queue: 100_000,
            ..MqttConfig::default()
        }),
        ..Config::loopback()
    };
    let running = Running::start(config, hosted).await.expect("runtime");

    let mut options = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bytes::Bytes, Instant)>();
    tokio::spawn(async move {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                let _ = tx.send((
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    p.payload,
                    Instant::now(),
                ));
            }
        }
    });
    client
        .subscribe("bench/+/properties/level", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .subscribe("bench/+/events/alarm", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    // The retained values of every thing first.
    let mut seen = 0;
    while seen < n_things {
        if tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            break;
        }
        seen += 1;
    }
    println!("{seen} retained values received after subscribing ({n_things} things)");

    // Events (never coalesced): `rounds` per thing, emitted as fast as the core takes them.
    let total = n_things * rounds;
    let start = Instant::now();
    for round in 0..rounds {
        for t in &things {
            t.emit_event("alarm", Some(json!(round))).expect("emit");
        }
    }
    let mut got = 0;
    let mut last = start;
    while got < total {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((topic, _, at))) if topic.ends_with("/events/alarm") => {
                got += 1;
                last = at;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let secs = last.duration_since(start).as_secs_f64();
    println!(
        "events: {got} of {total} delivered to one subscriber in {secs:.2} s: {:.0} notifications/s",
        got as f64 / secs
    );

    // Property changes: retained, coalesced per topic while the broker is behind.
    let start = Instant::now();
    for round in 0..rounds {
        for t in &things {
            t.update_property("level", json!(round + 1)).expect("update");
        }
    }
    let mut finals = 0;
    let mut got = 0;
    let mut last = start;
    while finals < n_things {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((topic, payload, at))) if topic.ends_with("/properties/level") => {
                got += 1;
                last = at;
                if payload.as_ref() == rounds.to_string().as_bytes() {
                    finals += 1;
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let secs = last.duration_since(start).as_secs_f64();
    println!(
        "property changes: {total} made, {got} publications received ({} coalesced), every thing's last value after {secs:.2} s: {:.0} publications/s",
        total - got.min(total),
        got as f64 / secs
    );

    // Write round-trips: publish to the write topic, wait for the retained value.
    let mut latencies = Vec::with_capacity(writes);
    let begin = Instant::now();
    for i in 0..writes {
        let value = (1_000_000 + i).to_string();
        let sent = Instant::now();
        client
            .publish(
                "bench/t0/properties/level/write",
                QoS::AtLeastOnce,
                false,
                value.clone(),
            )
            .await
            .expect("publish");
        loop {
            let Some((topic, payload, at)) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .ok()
                .flatten()
            else {
                panic!("write {i} did not come back");
            };
            if topic == "bench/t0/properties/level" && payload.as_ref() == value.as_bytes() {
                latencies.push(at.duration_since(sent));
                break;
            }
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "write round-trips: {writes} sequential in {elapsed:.2} s: {:.0}/s, p50 {:?}, p99 {:?}",
        writes as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    running.stop().await;
    let _ = broker.kill();
    let _ = broker.wait();
}
