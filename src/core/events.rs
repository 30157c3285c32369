//! The event hub: one broadcast channel per thing that carries every property change, event
//! emission and action status change as an `Arc<Notification>`.
//!
//! A notification's payload is serialised once, by whoever emits it; each binding may also cache
//! its own wire frame on the notification (`encoded`), so a thousand SSE subscribers share one
//! frame. Slow receivers lag (tokio broadcast drops the oldest for them) and are told how much they
//! missed; they never block the sender. This module knows nothing of any wire format.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Property(Arc<str>),
    Event(Arc<str>),
    /// An action instance's status changed.
    Action {
        name: Arc<str>,
        id: Arc<str>,
    },
}

impl Topic {
    pub fn name(&self) -> &str {
        match self {
            Topic::Property(n) | Topic::Event(n) | Topic::Action { name: n, .. } => n,
        }
    }
}

/// Slots in which bindings cache their encoding of a notification. Each binding owns one.
#[derive(Debug, Clone, Copy)]
pub enum EncodingSlot {
    Sse = 0,
    WebSocket = 1,
    Coap = 2,
    Legacy = 3,
}
const SLOTS: usize = 4;

/// One change, shared by every subscriber.
#[derive(Debug)]
pub struct Notification {
    /// Per-thing sequence number, strictly increasing.
    pub seq: u64,
    pub topic: Topic,
    /// JSON payload, serialised once. Empty for an event without data.
    pub data: Bytes,
    /// RFC 3339 time of the change.
    pub timestamp: Arc<str>,
    encodings: [OnceLock<Bytes>; SLOTS],
}

impl Notification {
    /// The binding's wire encoding of this notification, computed by the first subscriber that
    /// asks and shared by all others.
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&Notification) -> Bytes) -> Bytes {
        self.encodings[slot as usize].get_or_init(|| encode(self)).clone()
    }
}

/// What a subscriber wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Property(String),
    AllProperties,
    Event(String),
    AllEvents,
    Action {
        name: String,
        id: String,
    },
    /// Everything the thing emits (used by sockets that multiplex several subscriptions).
    Everything,
}

impl Target {
    pub fn matches(&self, topic: &Topic) -> bool {
        match (self, topic) {
            (Target::Everything, _) => true,
            (Target::Property(want), Topic::Property(got)) => want.as_str() == &**got,
            (Target::AllProperties, Topic::Property(_)) => true,
            (Target::Event(want), Topic::Event(got)) => want.as_str() == &**got,
            (Target::AllEvents, Topic::Event(_)) => true,
            (Target::Action { name, id }, Topic::Action { name: n, id: i }) => {
                name.as_str() == &**n && id.as_str() == &**i
            }
            _ => false,
        }
    }
}

/// How many recent notifications a hub keeps for subscribers that reconnect with the id of the
/// last one they saw (SSE `Last-Event-ID`).
const REPLAY_DEPTH: usize = 64;

/// The sending side, owned by an exposed thing.
#[derive(Debug)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Notification>>,
    capacity: usize,
    seq: AtomicU64,
    recent: Mutex<VecDeque<Arc<Notification>>>,
}

impl EventHub {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventHub {
            sender,
            capacity: capacity.max(1),
            seq: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(REPLAY_DEPTH)),
        }
    }

    pub fn publish(&self, topic: Topic, data: Bytes) -> Arc<Notification> {
        let notification = Arc::new(Notification {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            topic,
            data,
            timestamp: crate::core::clock::now_rfc3339().into(),
            encodings: Default::default(),
        });
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == REPLAY_DEPTH {
                recent.pop_front();
            }
            recent.push_back(notification.clone());
        }
        // No receivers is not an error: nobody is listening right now.
        let _ = self.sender.send(notification.clone());
        notification
    }

    pub fn subscribe(&self, target: Target) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
            target,
            backlog: VecDeque::new(),
            replayed_through: 0,
        }
    }

    /// Subscribes, first replaying the kept notifications that came after the one whose
    /// timestamp is `last_id` (unknown ids replay nothing).
    pub fn subscribe_after(&self, target: Target, last_id: &str) -> Subscription {
        let mut subscription = self.subscribe(target);
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = recent.iter().position(|n| &*n.timestamp == last_id) {
            subscription.backlog = recent
                .iter()
                .skip(at + 1)
                .filter(|n| subscription.target.matches(&n.topic))
                .cloned()
                .collect();
            subscription.replayed_through = recent.back().map_or(0, |n| n.seq);
        }
        subscription
    }

    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }

    /// How many notifications a subscriber may fall behind before it lags.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sequence number of the latest notification published (0: none yet). Everything
    /// published from now on has a larger one.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Received {
    Notification(Arc<Notification>),
    /// The subscriber fell behind and this many notifications were dropped for it.
    Lagged(u64),
    /// The thing went away.
    Closed,
}

/// A filtered receiver of a thing's notifications.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Notification>>,
    target: Target,
    /// Replayed notifications, delivered before live ones.
    backlog: VecDeque<Arc<Notification>>,
    /// Live notifications up to this sequence number were already in the replay.
    replayed_through: u64,
}

impl Subscription {
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The next notification that matches the target.
    pub async fn recv(&mut self) -> Received {
        if let Some(n) = self.backlog.pop_front() {
            return Received::Notification(n);
        }
        loop {
            match self.receiver.recv().await {
                Ok(n) if n.seq <= self.replayed_through => continue,
                Ok(n) if self.target.matches(&n.topic) => return Received::Notification(n),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => return Received::Lagged(missed),
                Err(broadcast::error::RecvError::Closed) => return Received::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filters_and_shares_encodings() {
        let hub = EventHub::new(8);
        let mut props = hub.subscribe(Target::Property("on".into()));
        let mut events = hub.subscribe(Target::AllEvents);
        hub.publish(Topic::Event("faded".into()), Bytes::from_static(b"5"));
        hub.publish(Topic::Property("on".into()), Bytes::from_static(b"true"));
        let Received::Notification(p) = props.recv().await else {
            panic!("no property")
        };
        assert_eq!(&p.data[..], b"true");
        let Received::Notification(e) = events.recv().await else {
            panic!("no event")
        };
        assert_eq!(e.topic, Topic::Event("faded".into()));
        let first = e.encoded(EncodingSlot::Sse, |n| Bytes::from(format!("x{}", n.seq)));
        let second = e.encoded(EncodingSlot::Sse, |_| Bytes::from_static(b"never"));
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn reconnecting_subscribers_get_what_they_missed_once() {
        let hub = EventHub::new(8);
        let first = hub.publish(Topic::Event("e".into()), Bytes::from_static(b"1"));
        hub.publish(Topic::Property("p".into()), Bytes::from_static(b"2"));
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"3"));
        let mut again = hub.subscribe_after(Target::AllEvents, &first.timestamp);
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"4"));
        for want in [&b"3"[..], b"4"] {
            let Received::Notification(n) = again.recv().await else {
                panic!("closed")
            };
            assert_eq!(&n.data[..], want);
        }
    }

    #[tokio::test]
    async fn slow_receivers_lag_instead_of_blocking() {
        let hub = EventHub::new(2);
        let mut slow = hub.subscribe(Target::Everything);
        for i in 0..5 {
            hub.publish(Topic::Event("e".into()), Bytes::from(i.to_string()));
        }
        assert!(matches!(slow.recv().await, Received::Lagged(3)));
    }
}
