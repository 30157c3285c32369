//! The one task that talks to the broker, and the tasks that follow the things.
//!
//! The connection task polls rumqttc's event loop (MQTT 5, manual acknowledgements): on every
//! CONNACK it subscribes to the request topics and queues every TD and every current value as
//! retained state (a broker that restarted without persistence gets it all back); each
//! incoming request runs in its own task, through the servient, and is acknowledged only once
//! performed, so a request the broker saw acknowledged was applied. While the broker is away
//! it retries with backoff and everything waits in the bounded `Outbox`.
//!
//! A follower per thing turns the thing's notifications into outbox messages (values retained,
//! events not); a thing that goes away has its retained topics cleared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::outbox::{Message, Outbox};
use super::topics::{Request, Topics};
use super::{Broker, MqttConfig};
use crate::binding::problem::Problem;
use crate::core::{Error, ErrorKind, ExposedThing, Operation, Received, Reply, Servient, Target, Topic};
use crate::td::{Origins, TdPublisher};

/// The first wait before reconnecting; it doubles up to the configured ceiling.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Requests performed at once; one more waits (and with it the reading of the connection, so
/// the broker holds the rest: for QoS 1 it may not send more than this unacknowledged anyway).
const MAX_REQUESTS: usize = 64;

/// The running binding.
#[derive(Debug)]
pub(crate) struct Mqtt {
    connection: JoinHandle<()>,
    followers: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Mqtt {
    /// Disconnects from the broker (briefly waiting for the DISCONNECT to go out) and stops.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        self.followers.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connection).await;
    }
}

/// What the tasks share.
struct Shared {
    servient: Arc<Servient>,
    publisher: Arc<TdPublisher>,
    /// The origins the TDs published over MQTT name (the runtime's own).
    origins: Origins,
    topics: Topics,
    outbox: Mutex<Outbox>,
    /// Rung when the outbox has something new.
    queued: Notify,
}

impl Shared {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a thing's TD and every readable value as retained state.
    fn publish_state(&self, thing: &Arc<ExposedThing>) {
        let td = self.publisher.td_bytes(thing, &self.origins);
        {
            let mut outbox = self.outbox();
            match td {
                Ok(td) => outbox.retain(self.topics.td(&thing.slug), td),
                Err(e) => tracing::warn!(thing = %thing.slug, "no TD for MQTT: {e}"),
            }
            for (name, property) in thing.properties.iter().filter(|(_, p)| !p.write_only) {
                outbox.retain(self.topics.property(&thing.slug, name), property.bytes());
            }
        }
        self.queued.notify_one();
    }

    /// Clears a thing's retained topics (an empty retained message deletes one).
    fn clear_state(&self, slug: &str, properties: &[String]) {
        {
            let mut outbox = self.outbox();
            outbox.retain(self.topics.td(slug), Bytes::new());
            for name in properties {
                outbox.retain(self.topics.property(slug, name), Bytes::new());
            }
        }
        self.queued.notify_one();
    }

    fn push(&self, message: Message) {
        let dropped = {
            let mut outbox = self.outbox();
            outbox.push(message).then(|| outbox.dropped())
        };
        if let Some(n) = dropped.filter(|n| *n == 1 || n % 1000 == 0) {
            tracing::warn!("MQTT: {n} events or replies dropped so far, the broker being slow or away");
        }
        self.queued.notify_one();
    }
}

/// Connects to the broker in the background and follows the servient's things.
pub(crate) fn start(
    config: &MqttConfig,
    broker: &Broker,
    servient: Arc<Servient>,
    publisher: Arc<TdPublisher>,
    origins: Origins,
) -> Mqtt {
    let options = options(config, broker);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let shared = Arc::new(Shared {
        servient,
        publisher,
        origins,
        topics: Topics::new(&config.prefix),
        outbox: Mutex::new(Outbox::new(config.queue)),
        queued: Notify::new(),
    });
    let (stop, stopped) = watch::channel(false);
    let connection = tokio::spawn(connection(
        shared.clone(),
        client,
        eventloop,
        config.max_backoff,
        broker.origin(),
        stopped,
    ));
    let followers = tokio::spawn(follow_things(shared));
    Mqtt {
        connection,
        followers,
        stop,
    }
}

fn options(config: &MqttConfig, broker: &Broker) -> MqttOptions {
    let id = config.client_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("wot-{}-{}", host.trim(), std::process::id())
    });
    let mut options = MqttOptions::new(id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    // A value or a reply goes out at once, not after Nagle's wait for the broker's ACK.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    options.set_manual_acks(true);
    options.set_receive_maximum(Some(MAX_REQUESTS as u16));
    // A session the broker keeps for an hour: requests published while the connection is down
    // (a network blip, not a broker restart without persistence) wait there for this client.
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if broker.tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = match &config.ca_pem {
            Some(ca) => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: config.client_auth.clone(),
            }),
            None => rumqttc::Transport::tls_with_default_config(),
        };
        options.set_transport(transport);
    }
    options
}

/// Polls the event loop until stopped: requests in, the outbox out, reconnection with backoff.
async fn connection(
    shared: Arc<Shared>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    max_backoff: Duration,
    origin: String,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connected = false;
    let mut backoff = FIRST_BACKOFF;
    let requests = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS));
    let (writes, mut queued_writes) = tokio::sync::mpsc::channel::<Publish>(MAX_REQUESTS);
    let writer = {
        let (shared, client) = (shared.clone(), client.clone());
        tokio::spawn(async move {
            while let Some(publish) = queued_writes.recv().await {
                request(shared.clone(), client.clone(), publish).await;
            }
        })
    };
    let _stop_writer = AbortOnDrop(writer);
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = FIRST_BACKOFF;
                    tracing::info!(broker = %origin, "MQTT connected");
                    let filters = shared.topics.request_filters();
                    for filter in filters {
                        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                            tracing::warn!("MQTT subscribe: {e}");
                        }
                    }
                    for thing in shared.servient.things() {
                        shared.publish_state(&thing);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let topic = String::from_utf8_lossy(&publish.topic);
                    if matches!(shared.topics.request(&topic), Some(Request::Write { .. })) {
                        // Writes are applied in the order they arrived, as MQTT delivered them.
                        if writes.send(publish).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let Ok(permit) = requests.clone().acquire_owned().await else {
                        return;
                    };
                    let (shared, client) = (shared.clone(), client.clone());
                    tokio::spawn(async move {
                        request(shared, client, publish).await;
                        drop(permit);
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(broker = %origin, "MQTT connection lost ({e}); reconnecting");
                    } else {
                        tracing::debug!(broker = %origin, "MQTT connect failed: {e}");
                    }
                    connected = false;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => return,
                    }
                    backoff = (backoff * 2).min(max_backoff.max(FIRST_BACKOFF));
                }
            },
            () = shared.queued.notified(), if connected => {}
            _ = stopped.changed() => {
                let _ = client.try_disconnect();
                // Let the DISCONNECT go out.
                let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                return;
            }
        }
        if connected {
            drain(&shared, &client);
        }
    }
}

/// Ends the write worker with the connection task.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands queued messages to the client until its channel is full (the rest waits, bounded).
fn drain(shared: &Shared, client: &AsyncClient) {
    loop {
        let Some(message) = shared.outbox().pop() else {
            return;
        };
        let properties = PublishProperties {
            correlation_data: message.correlation.clone(),
            ..Default::default()
        };
        let sent = client.try_publish_with_properties(
            message.topic.clone(),
            QoS::AtLeastOnce,
            message.retain,
            message.payload.clone(),
            properties,
        );
        if sent.is_err() {
            shared.outbox().unpop(message);
            return;
        }
    }
}

/// Performs one request (a write or an invocation) and answers it: on the MQTT 5 response
/// topic with its correlation data when the client gave one, else on `{topic}/reply`. The
/// request is acknowledged once performed.
async fn request(shared: Arc<Shared>, client: AsyncClient, publish: Publish) {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let Some(request) = shared.topics.request(&topic) else {
        let _ = client.ack(&publish).await;
        return;
    };
    let properties = publish.properties.clone().unwrap_or_default();
    let reply = Answer {
        topic: properties
            .response_topic
            .clone()
            .unwrap_or_else(|| Topics::reply(&topic)),
        correlation: properties.correlation_data.clone(),
    };
    match request {
        Request::Write { thing, property } => {
            let answer = match value(&publish.payload) {
                Ok(Some(v)) => shared
                    .servient
                    .handle(&thing, Operation::WriteProperty(property, v))
                    .await
                    .map(|_| Bytes::new()),
                Ok(None) => Err(Error::MalformedPayload("a write needs a value".into())),
                Err(e) => Err(e),
            };
            reply.send(&shared, answer);
        }
        Request::Invoke { thing, action } => invoke(&shared, &reply, &thing, &action, &publish.payload).await,
    }
    let _ = client.ack(&publish).await;
}

/// Where an answer goes.
struct Answer {
    topic: String,
    correlation: Option<Bytes>,
}

impl Answer {
    fn send(&self, shared: &Shared, answer: Result<Bytes, Error>) {
        let payload = answer.unwrap_or_else(|e| problem(&e));
        shared.push(Message {
            topic: self.topic.clone(),
            payload,
            retain: false,
            correlation: self.correlation.clone(),
        });
    }
}

/// An invocation: a synchronous action's output, or an asynchronous one's ActionStatus at once
/// and then each change of it until it ends.
async fn invoke(shared: &Shared, reply: &Answer, thing: &str, action: &str, payload: &[u8]) {
    let input = match value(payload) {
        Ok(input) => input,
        Err(e) => return reply.send(shared, Err(e)),
    };
    let op = Operation::InvokeAction {
        name: action.to_owned(),
        input,
    };
    match shared.servient.handle(thing, op).await {
        Ok(Reply::Output(output)) => reply.send(shared, Ok(json_bytes(&output.unwrap_or(Value::Null)))),
        Ok(Reply::Started(status)) => {
            let id = status.id.to_string();
            let target = Target::Action {
                name: action.to_owned(),
                id: id.clone(),
            };
            let subscription = shared.servient.subscribe(thing, target);
            reply.send(shared, Ok(status_bytes(&status.to_json(None), &id)));
            if let Ok(mut subscription) = subscription {
                follow_status(shared, reply, thing, action, &id, &mut subscription).await;
            }
        }
        Ok(other) => reply.send(
            shared,
            Err(Error::Internal(format!("unexpected reply {other:?}"))),
        ),
        Err(e) => reply.send(shared, Err(e)),
    }
}

/// Publishes an asynchronous instance's status changes until it ends (one that ended before
/// the subscription began is read back once).
async fn follow_status(
    shared: &Shared,
    reply: &Answer,
    thing: &str,
    action: &str,
    id: &str,
    subscription: &mut crate::core::Subscription,
) {
    let query = Operation::QueryAction {
        name: action.to_owned(),
        id: id.to_owned(),
    };
    if let Ok(Reply::Status(now)) = shared.servient.handle(thing, query).await
        && now.status.is_final()
    {
        return reply.send(shared, Ok(status_bytes(&now.to_json(None), id)));
    }
    loop {
        match subscription.recv().await {
            Received::Notification(n) => {
                let Ok(status) = serde_json::from_slice::<Value>(&n.data) else {
                    continue;
                };
                let done = matches!(
                    status["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                );
                reply.send(shared, Ok(status_bytes(&status, id)));
                if done {
                    return;
                }
            }
            Received::Lagged(_) => continue,
            Received::Closed(_) => return,
        }
    }
}

fn status_bytes(status: &Value, id: &str) -> Bytes {
    let mut status = status.clone();
    if let Some(object) = status.as_object_mut() {
        object.insert("id".into(), json!(id));
    }
    json_bytes(&status)
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A request's JSON payload; empty is no value (an error for a write, no input for an action).
fn value(payload: &[u8]) -> Result<Option<Value>, Error> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| Error::MalformedPayload(e.to_string()))
}

/// The status number of each kind of core error in an MQTT answer's problem details: the
/// binding's one mapping of them (MQTT has no status codes of its own; these are HTTP's).
pub(crate) fn kind_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::BadRequest | ErrorKind::WrongDirection => 400,
        ErrorKind::Conflict => 409,
        ErrorKind::Unavailable => 503,
        ErrorKind::Internal => 500,
        ErrorKind::BadGateway => 502,
        ErrorKind::GatewayTimeout => 504,
    }
}

/// The problem-details answer of a core error.
pub(crate) fn problem(e: &Error) -> Bytes {
    json_bytes(&Problem::of_error(e, e.type_uri(), kind_status(e.kind())).into_value())
}

/// Follows the servient: a follower per thing; things added, replaced or removed (hot reload)
/// get their state published or cleared.
async fn follow_things(shared: Arc<Shared>) {
    let mut changes = shared.servient.watch_changes();
    let mut followed: HashMap<String, (Arc<ExposedThing>, JoinHandle<()>)> = HashMap::new();
    loop {
        let now = shared.servient.things();
        for thing in &now {
            let same = followed
                .get(&thing.slug)
                .is_some_and(|(t, _)| Arc::ptr_eq(t, thing));
            if same {
                continue;
            }
            if let Some((_, task)) = followed.remove(&thing.slug) {
                task.abort();
            }
            shared.publish_state(thing);
            let task = tokio::spawn(follow(shared.clone(), thing.slug.clone()));
            followed.insert(thing.slug.clone(), (thing.clone(), task));
        }
        let gone: Vec<String> = followed
            .keys()
            .filter(|slug| !now.iter().any(|t| &t.slug == *slug))
            .cloned()
            .collect();
        for slug in gone {
            if let Some((thing, task)) = followed.remove(&slug) {
                task.abort();
                let names: Vec<String> = thing.properties.keys().cloned().collect();
                shared.clear_state(&slug, &names);
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// One thing's notifications as outbox messages: values retained, events not.
async fn follow(shared: Arc<Shared>, slug: String) {
    let Ok(mut subscription) = shared.servient.subscribe(&slug, Target::Everything) else {
        return;
    };
    // Each topic is made once per follower (one per thing version: a replaced thing gets a new
    // follower). A write-only property has none: its value is never published.
    let Ok(thing) = shared.servient.thing(&slug) else {
        return;
    };
    let value_topics: HashMap<Arc<str>, String> = thing
        .properties
        .values()
        .filter(|p| !p.write_only)
        .map(|p| (p.name.clone(), shared.topics.property(&slug, &p.name)))
        .collect();
    let event_topics: HashMap<Arc<str>, String> = thing
        .events
        .values()
        .map(|e| (e.name.clone(), shared.topics.event(&slug, &e.name)))
        .collect();
    drop(thing);
    loop {
        match subscription.recv().await {
            Received::Notification(n) => match &n.topic {
                Topic::Property(name) => {
                    if let Some(topic) = value_topics.get(name) {
                        shared.outbox().retain(topic.clone(), n.data.clone());
                        shared.queued.notify_one();
                    }
                }
                Topic::Event(name) => {
                    let Some(topic) = event_topics.get(name) else {
                        continue;
                    };
                    let payload = if n.data.is_empty() {
                        Bytes::from_static(b"null")
                    } else {
                        n.data.clone()
                    };
                    shared.push(Message {
                        topic: topic.clone(),
                        payload,
                        retain: false,
                        correlation: None,
                    });
                }
                Topic::Action { .. } => {}
            },
            // Values are state: after a lag, the current ones are queued again.
            Received::Lagged(_) => {
                if let Ok(thing) = shared.servient.thing(&slug) {
                    shared.publish_state(&thing);
                }
            }
            // Replaced or removed: `follow_things` sees the change and acts.
            Received::Closed(_) => return,
        }
    }
}
