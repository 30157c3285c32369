//! The MQTT binding over a real broker (Mosquitto, started on a free loopback port): retained
//! values and TDs, writes from MQTT read back over HTTP and the reverse, bad input answered with
//! problem details, actions with an MQTT 5 response topic and with the documented reply topic,
//! events, and a broker restart in the middle. The test client is rumqttc (MQTT 5).
//!
//! They run where `mosquitto` is installed; with WOT_MQTT_TESTS=1 (CI's mqtt step, which
//! installs it) a missing broker fails them instead.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use wot_runtime::binding::mqtt::MqttConfig;
use wot_runtime::runtime::{Config, Running};

use crate::common;

const WAIT: Duration = Duration::from_secs(10);

/// A Mosquitto on a loopback port, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_installed() -> bool {
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("WOT_MQTT_TESTS").is_some() {
        panic!("WOT_MQTT_TESTS is set but mosquitto is not installed");
    }
    if !found {
        eprintln!("mosquitto is not installed: MQTT tests skipped (CI's mqtt step runs them)");
    }
    found
}

/// Starts Mosquitto on `port` (0: a free one) and waits until it accepts connections.
fn broker(port: u16) -> Broker {
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port()
    } else {
        port
    };
    let broker = Broker {
        child: Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts"),
        port,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not listen on {port}");
}

/// The bundled things (at test speed) and a `safe` whose `code` is write-only.
async fn runtime(broker: &Broker, prefix: &str) -> Running {
    let config = Config {
        mqtt: Some(MqttConfig {
            broker: format!("mqtt://127.0.0.1:{}", broker.port),
            prefix: prefix.into(),
            max_backoff: Duration::from_millis(500),
            ..MqttConfig::default()
        }),
        ..Config::loopback()
    };
    let safe = wot_runtime::core::ThingBuilder::new(
        "safe",
        json!({"title": "Safe", "properties": {"code": {"type": "integer", "writeOnly": true}}}),
    )
    .build()
    .expect("builds");
    let mut things = common::bundled_things_every(Duration::from_millis(50));
    things.push(wot_runtime::things::Hosted {
        thing: safe,
        behaviors: Default::default(),
    });
    Running::start(config, things).await.expect("runtime starts")
}

/// A test client: its event loop runs in a task and hands every publication to `rx`.
struct Client {
    client: AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Bytes, Option<Bytes>)>,
    /// Messages received while waiting for another: the next `expect` looks here first.
    backlog: Vec<(String, Bytes, Option<Bytes>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    async fn connect(broker: &Broker, id: &str) -> Client {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let correlation = p.properties.and_then(|pr| pr.correlation_data);
                        let _ = tx.send((topic, p.payload, correlation));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Client {
            client,
            rx,
            backlog: Vec::new(),
            task,
        }
    }

    async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }

    async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("publish");
    }

    /// The first message on `topic` whose payload satisfies `want`; others are kept for later.
    async fn expect(&mut self, topic: &str, want: impl Fn(&[u8]) -> bool) -> (Bytes, Option<Bytes>) {
        if let Some(i) = self.backlog.iter().position(|(t, p, _)| t == topic && want(p)) {
            let (_, payload, correlation) = self.backlog.remove(i);
            return (payload, correlation);
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let (t, payload, correlation) = self.rx.recv().await.expect("client runs");
                if t == topic && want(&payload) {
                    return (payload, correlation);
                }
                self.backlog.push((t, payload, correlation));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing wanted on {topic}"))
    }
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or(Value::Null)
}

async fn http_value(running: &Running, name: &str) -> Value {
    common::get_json(
        &common::client(),
        format!("{}/things/lamp/properties/{name}", running.http_url()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_writes_actions_and_events_through_mosquitto() {
    if !mosquitto_installed() {
        return;
    }
    let broker = broker(0);
    let running = runtime(&broker, "t1/").await;
    let mut c = Client::connect(&broker, "test-1").await;
    c.subscribe("t1/#").await;

    // The TD is retained, valid, with MQTT forms whose href path and mqv topic agree.
    let (td, _) = c.expect("t1/lamp/td", |p| !p.is_empty()).await;
    let td = json_of(&td);
    common::assert_valid_td(&td);
    let forms = td["properties"]["brightness"]["forms"]
        .as_array()
        .expect("forms")
        .clone();
    let read = forms
        .iter()
        .find(|f| f["mqv:filter"] == "t1/lamp/properties/brightness")
        .unwrap_or_else(|| panic!("no MQTT read form: {forms:#?}"));
    assert_eq!(
        read["href"],
        format!("mqtt://127.0.0.1:{}/t1/lamp/properties/brightness", broker.port)
    );
    assert_eq!(
        (read["mqv:controlPacket"].as_str(), read["mqv:retain"].as_bool()),
        (Some("subscribe"), Some(true))
    );
    let write = forms
        .iter()
        .find(|f| f["mqv:topic"] == "t1/lamp/properties/brightness/write")
        .expect("write form");
    assert_eq!(write["mqv:controlPacket"], "publish");

    // The retained value, then a write through MQTT read back over HTTP and published back.
    c.expect("t1/lamp/properties/brightness", |p| json_of(p) == json!(50))
        .await;
    c.publish("t1/lamp/properties/brightness/write", b"42").await;
    c.expect("t1/lamp/properties/brightness", |p| json_of(p) == json!(42))
        .await;
    assert_eq!(http_value(&running, "brightness").await, 42);
    // A write over HTTP is published to MQTT.
    let put = common::client()
        .put(format!(
            "{}/things/lamp/properties/brightness",
            running.http_url()
        ))
        .json(&json!(43))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 204);
    c.expect("t1/lamp/properties/brightness", |p| json_of(p) == json!(43))
        .await;

    // Bad input is answered with problem details on the reply topic and changes nothing.
    for (payload, rule_or_status) in [(&b"420"[..], json!("maximum")), (b"{oops", json!(400))] {
        c.publish("t1/lamp/properties/brightness/write", payload).await;
        let (reply, _) = c
            .expect("t1/lamp/properties/brightness/write/reply", |p| !p.is_empty())
            .await;
        let problem = json_of(&reply);
        assert!(
            problem["rule"] == rule_or_status || problem["status"] == rule_or_status,
            "{problem}"
        );
    }
    c.publish("t1/lamp/properties/nope/write", b"1").await;
    let (reply, _) = c
        .expect("t1/lamp/properties/nope/write/reply", |p| !p.is_empty())
        .await;
    assert_eq!(json_of(&reply)["status"], 404);
    assert_eq!(http_value(&running, "brightness").await, 43);

    // A synchronous action with an MQTT 5 response topic and correlation data.
    let before = http_value(&running, "on").await;
    let properties = PublishProperties {
        response_topic: Some("replies/test-1".into()),
        correlation_data: Some(Bytes::from_static(b"c-1")),
        ..Default::default()
    };
    c.subscribe("replies/test-1").await;
    c.client
        .publish_with_properties(
            "t1/lamp/actions/toggle",
            QoS::AtLeastOnce,
            false,
            Vec::new(),
            properties,
        )
        .await
        .expect("invoke");
    let (output, correlation) = c.expect("replies/test-1", |_| true).await;
    assert_eq!(correlation.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(json_of(&output), json!(!before.as_bool().expect("bool")));

    // An asynchronous action without a response topic (as an MQTT 3.1.1 client sends it): its
    // statuses on the documented reply topic, to completion; the event it emits.
    c.publish("t1/lamp/actions/fade", br#"{"level": 7, "duration": 200}"#)
        .await;
    let (first, _) = c.expect("t1/lamp/actions/fade/reply", |_| true).await;
    let first = json_of(&first);
    assert!(
        first["id"].is_string() && ["pending", "running"].contains(&first["status"].as_str().unwrap_or("")),
        "{first}"
    );
    // The fade emits `faded` as it ends, before its final status.
    c.expect("t1/lamp/events/faded", |p| json_of(p) == json!(7)).await;
    let (done, _) = c
        .expect("t1/lamp/actions/fade/reply", |p| {
            json_of(p)["status"] == "completed"
        })
        .await;
    assert_eq!(
        (json_of(&done)["output"].clone(), json_of(&done)["id"].clone()),
        (json!(7), first["id"].clone())
    );
    assert_eq!(http_value(&running, "brightness").await, 7);

    // Writes published in a burst are applied in their order: the last one stays.
    for level in 51..=100 {
        c.publish(
            "t1/lamp/properties/brightness/write",
            level.to_string().as_bytes(),
        )
        .await;
    }
    c.expect("t1/lamp/properties/brightness", |p| json_of(p) == json!(100))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http_value(&running, "brightness").await, 100);

    // A write-only property takes writes over MQTT but its value is never published.
    c.publish("t1/safe/properties/code/write", b"1234").await;
    c.publish("t1/lamp/properties/brightness/write", b"8").await;
    c.expect("t1/lamp/properties/brightness", |p| json_of(p) == json!(8))
        .await;
    c.expect("t1/safe/td", |p| !p.is_empty()).await;
    // Taken (its reply is empty: success), and nothing on the value's own topic.
    c.expect("t1/safe/properties/code/write/reply", |p| p.is_empty())
        .await;
    let published: Vec<&String> = c.backlog.iter().map(|(t, _, _)| t).collect();
    assert!(
        !published.iter().any(|t| *t == "t1/safe/properties/code"),
        "a write-only value was published: {published:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing_acknowledged() {
    if !mosquitto_installed() {
        return;
    }
    let first = broker(0);
    let port = first.port;
    let running = runtime(&first, "t2/").await;
    let mut c = Client::connect(&first, "test-2").await;
    c.subscribe("t2/lamp/properties/brightness").await;
    c.expect("t2/lamp/properties/brightness", |p| json_of(p) == json!(50))
        .await;
    drop(c);
    drop(first);

    // Written (and acknowledged) over HTTP while the broker is away: HTTP keeps serving.
    let put = common::client()
        .put(format!(
            "{}/things/lamp/properties/brightness",
            running.http_url()
        ))
        .json(&json!(61))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 204);

    // A new broker (no persistence: it knows nothing) on the same port: the runtime reconnects
    // and publishes its state again, so the retained value is the one written meanwhile.
    let second = broker(port);
    let mut c = Client::connect(&second, "test-2b").await;
    c.subscribe("t2/lamp/properties/brightness").await;
    c.expect("t2/lamp/properties/brightness", |p| json_of(p) == json!(61))
        .await;
    c.subscribe("t2/lamp/td").await;
    c.expect("t2/lamp/td", |p| !p.is_empty()).await;
    // And requests work again.
    c.publish("t2/lamp/properties/brightness/write", b"62").await;
    c.expect("t2/lamp/properties/brightness", |p| json_of(p) == json!(62))
        .await;
    assert_eq!(http_value(&running, "brightness").await, 62);
    running.stop().await;
}
