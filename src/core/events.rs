//! The event hub: one broadcast channel per thing that carries every property change, event
//! emission and action status change as an `Arc<Notification>`, and the subscriptions that
//! read it.
//!
//! A notification's payload is serialised once, by whoever emits it; each binding may also cache
//! its own wire frame on the notification (`encoded`), so a thousand SSE subscribers share one
//! frame. Slow receivers lag (tokio broadcast drops the oldest for them) and are told how much they
//! missed; they never block the sender. This module knows nothing of any wire format.
//!
//! Order and replay: a notification's sequence number is assigned, the replay ring appended and
//! the broadcast sent in one critical section, so the order of sequence numbers is the order in
//! which every subscriber receives them, and a subscriber that resumes after a sequence number
//! (SSE `Last-Event-ID`) gets exactly what came after it: no gap, no duplicate.
//!
//! Memory: a hub allocates its broadcast buffer (`capacity` slots) only when the first subscriber
//! comes, and gives it back when a publication finds nobody listening, so the thousands of things
//! of a bridge that nobody watches cost a sequence number and a replay ring each. Creating the
//! channel under the hub's lock keeps the sequence rules: a subscriber's position is taken under
//! the same lock, and every number published after it goes through the channel it reads.
//!
//! Taps: a binding that must see every notification of every thing from the start, such as the
//! legacy adapter's event log, registers a [`Tap`] instead of subscribing, so that a thing nobody
//! subscribes to keeps no buffer and no task. A tap runs inside the hub's critical section (it sees
//! notifications in sequence order, none twice, none missed), so it only copies.
//!
//! Reload: when a thing is replaced, its hub is *handed over* to the new thing's hub (which
//! continues the sequence and starts with the old replay ring) and then closed. A subscription
//! that reaches the end of a closed hub follows the hand-over when its target still means the
//! same thing on the new thing, and ends with [`Received::Closed`] otherwise; a hub closed without
//! a successor (the thing was removed) ends every subscription.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A property's value changed; the data is the new value.
    Property(Arc<str>),
    /// An event was emitted; the data is its payload.
    Event(Arc<str>),
    /// An action instance's status changed; the data is its status.
    Action {
        /// The action.
        name: Arc<str>,
        /// The instance.
        id: Arc<str>,
    },
}

impl Topic {
    /// The property, event or action name.
    pub fn name(&self) -> &str {
        match self {
            Topic::Property(n) | Topic::Event(n) | Topic::Action { name: n, .. } => n,
        }
    }
}

/// Slots in which bindings cache their encoding of a notification. Each binding owns one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EncodingSlot {
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
    /// What changed.
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
    pub(crate) fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&Notification) -> Bytes) -> Bytes {
        self.encodings[slot as usize].get_or_init(|| encode(self)).clone()
    }
}

/// What a subscriber wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One property's changes.
    Property(String),
    /// Every property's changes.
    AllProperties,
    /// One event.
    Event(String),
    /// Every event.
    AllEvents,
    /// One action instance's status changes.
    Action {
        /// The action.
        name: String,
        /// The instance.
        id: String,
    },
    /// Everything the thing emits (used by sockets that multiplex several subscriptions).
    Everything,
}

impl Target {
    /// Whether a notification about `topic` is for this subscriber.
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

/// How many recent notifications a hub keeps for subscribers that resume after the last one they
/// saw (SSE `Last-Event-ID`, a subscription following a reload).
const REPLAY_DEPTH: usize = 64;

/// Where a subscriber left off: the sequence number of the last notification it saw and, when
/// known, that notification's timestamp (which tells a notification of this run from one of an
/// earlier run with the same number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenUpTo {
    /// The sequence number of the last notification seen.
    pub seq: u64,
    /// Its timestamp, when known.
    pub timestamp: Option<String>,
}

/// Decides, when a thing is replaced, whether a subscription's target still means the same thing
/// on the new thing (the affordance exists with the same description), so that the subscription
/// may follow the hand-over.
pub(crate) type Continues = Arc<dyn Fn(&Target) -> bool + Send + Sync>;

/// Where the subscriptions of a closed hub go on.
#[derive(Clone)]
struct Handover {
    hub: Arc<EventHub>,
    continues: Continues,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover").finish_non_exhaustive()
    }
}

/// A synchronous observer of every notification a hub publishes, called in sequence order inside
/// the hub's critical section: it must be short and must neither publish nor subscribe. It returns
/// whether it wants more (false: its owner is gone and the hub forgets it).
pub(crate) type Tap = Box<dyn Fn(&Arc<Notification>) -> bool + Send + Sync>;

/// Everything a publication changes, guarded by one lock.
struct HubState {
    /// `None` while nobody subscribes (created by the first subscriber), and for good once the
    /// hub is closed: receivers then drain what was sent and see `Closed`.
    sender: Option<broadcast::Sender<Arc<Notification>>>,
    closed: bool,
    seq: u64,
    recent: VecDeque<Arc<Notification>>,
    /// Set when the hub is closed because its thing was replaced.
    handover: Option<Handover>,
    taps: Vec<Tap>,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("subscribed", &self.sender.is_some())
            .field("closed", &self.closed)
            .field("seq", &self.seq)
            .field("recent", &self.recent.len())
            .field("taps", &self.taps.len())
            .finish_non_exhaustive()
    }
}

/// The sending side, owned by an exposed thing.
#[derive(Debug)]
pub(crate) struct EventHub {
    capacity: usize,
    state: Mutex<HubState>,
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        EventHub {
            capacity: capacity.max(1),
            state: Mutex::new(HubState {
                sender: None,
                closed: false,
                seq: 0,
                // Grows as notifications come, up to REPLAY_DEPTH: most things never publish.
                recent: VecDeque::new(),
                handover: None,
                taps: Vec::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a notification; `None` when the hub is closed (nobody can hear it any more).
    pub(crate) fn publish(&self, topic: Topic, data: Bytes) -> Option<Arc<Notification>> {
        // Formatted before taking the lock: the critical section stays a few pointer moves.
        let timestamp: Arc<str> = crate::core::clock::now_rfc3339().into();
        let mut state = self.state();
        if state.closed {
            return None;
        }
        state.seq += 1;
        let notification = Arc::new(Notification {
            seq: state.seq,
            topic,
            data,
            timestamp,
            encodings: Default::default(),
        });
        if state.recent.len() == REPLAY_DEPTH {
            state.recent.pop_front();
        }
        state.recent.push_back(notification.clone());
        state.taps.retain(|tap| tap(&notification));
        // Sent inside the lock so that receivers get notifications in sequence order. With no
        // receiver left the buffer goes (it holds up to `capacity` notifications nobody will
        // read); the next subscriber makes a new one.
        if let Some(sender) = &state.sender
            && sender.send(notification.clone()).is_err()
        {
            state.sender = None;
        }
        Some(notification)
    }

    /// Subscribes to everything published from now on.
    pub(crate) fn subscribe(self: &Arc<Self>, target: Target) -> Subscription {
        let mut state = self.state();
        let seen = state.seq;
        Subscription {
            receiver: self.receiver(&mut state),
            hub: self.clone(),
            target,
            backlog: VecDeque::new(),
            seen,
            missed_on_resume: 0,
        }
    }

    /// Subscribes, first replaying the kept notifications that came after `after` when the ring
    /// still holds that notification. A position older than the ring starts with
    /// [`Received::Lagged`] (how many cannot be replayed); an unknown one replays nothing.
    pub(crate) fn subscribe_after(self: &Arc<Self>, target: Target, after: &SeenUpTo) -> Subscription {
        let mut state = self.state();
        let position = state.recent.iter().position(|n| {
            n.seq == after.seq && after.timestamp.as_deref().is_none_or(|t| t == &*n.timestamp)
        });
        let missed = match (position, state.recent.front()) {
            (None, Some(first)) if after.seq < first.seq && evicted_from(after, first) => {
                Some(first.seq - after.seq - 1)
            }
            _ => None,
        };
        let replay_from = match (position, missed) {
            (Some(at), _) => Some(at + 1),
            // Everything kept came after it.
            (None, Some(_)) => Some(0),
            (None, None) => None,
        };
        let backlog = match replay_from {
            Some(from) => state
                .recent
                .iter()
                .skip(from)
                .filter(|n| target.matches(&n.topic))
                .cloned()
                .collect(),
            None => VecDeque::new(),
        };
        let missed = missed.unwrap_or(0);
        Subscription {
            receiver: self.receiver(&mut state),
            hub: self.clone(),
            target,
            backlog,
            seen: state.seq,
            missed_on_resume: missed,
        }
    }

    /// Makes this (new, not yet published-to) hub continue `old`: the sequence goes on from the
    /// old one's and the replay ring starts as the old one's, so that a subscriber resuming
    /// after a notification of the old hub finds it here.
    pub(crate) fn continue_from(&self, old: &EventHub) {
        let old_state = old.state();
        let mut state = self.state();
        if state.seq <= old_state.seq {
            state.seq = old_state.seq;
            state.recent = old_state.recent.clone();
        }
    }

    /// Closes the hub. With a successor, subscriptions whose target `continues` go on there;
    /// every other subscription ends with [`Received::Closed`] once it has received what was
    /// published before.
    pub(crate) fn close(&self, successor: Option<(Arc<EventHub>, Continues)>) {
        let mut state = self.state();
        state.handover = successor.map(|(hub, continues)| Handover { hub, continues });
        state.sender = None;
        state.closed = true;
        state.taps.clear();
    }

    /// Calls `tap` with every notification published from now on, until the hub closes or
    /// `tap` returns false. On a closed hub it is never called.
    pub(crate) fn tap(&self, tap: Tap) {
        let mut state = self.state();
        if !state.closed {
            state.taps.push(tap);
        }
    }

    /// A receiver of the hub's broadcast, made under the hub's lock (`state`); one that is
    /// already closed when the hub is.
    fn receiver(&self, state: &mut HubState) -> broadcast::Receiver<Arc<Notification>> {
        if state.closed {
            return broadcast::channel(1).1;
        }
        state
            .sender
            .get_or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// How many notifications a subscriber may fall behind before it lags.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sequence number of the latest notification published (0: none yet). Everything
    /// published from now on has a larger one.
    pub(crate) fn last_seq(&self) -> u64 {
        self.state().seq
    }
}

/// Whether `after` names a notification this hub published before `first` and no longer keeps
/// (rather than one of another run of the runtime): its time must not be later than `first`'s.
fn evicted_from(after: &SeenUpTo, first: &Notification) -> bool {
    let parse = crate::core::clock::parse_rfc3339;
    match after.timestamp.as_deref().map(parse) {
        Some(Some(at)) => parse(&first.timestamp).is_some_and(|first| at <= first),
        Some(None) => false,
        None => true,
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The thing was removed.
    Removed,
    /// The thing was replaced by one on which the subscription's target is gone or described
    /// differently: the client should read the new TD and subscribe again.
    Changed,
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Received {
    /// A notification for the target (shared with every other subscriber).
    Notification(Arc<Notification>),
    /// The subscriber fell behind and this many notifications were dropped for it.
    Lagged(u64),
    /// The subscription ended, and why.
    Closed(Ended),
}

/// A filtered receiver of a thing's notifications, which follows the thing across reloads.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Notification>>,
    /// The hub `receiver` reads (to follow its hand-over when it closes).
    hub: Arc<EventHub>,
    target: Target,
    /// Replayed notifications, delivered before live ones.
    backlog: VecDeque<Arc<Notification>>,
    /// The sequence number of the last notification this subscription has accounted for
    /// (delivered, filtered out, or published before it subscribed).
    seen: u64,
    /// Notifications lost across a hand-over because the new hub's ring no longer held them.
    missed_on_resume: u64,
}

impl Subscription {
    /// What the subscription was made for.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The next notification that matches the target.
    pub async fn recv(&mut self) -> Received {
        loop {
            if self.missed_on_resume > 0 {
                return Received::Lagged(std::mem::take(&mut self.missed_on_resume));
            }
            if let Some(n) = self.backlog.pop_front() {
                self.seen = self.seen.max(n.seq);
                return Received::Notification(n);
            }
            match self.receiver.recv().await {
                Ok(n) if n.seq <= self.seen => continue,
                Ok(n) => {
                    self.seen = n.seq;
                    if self.target.matches(&n.topic) {
                        return Received::Notification(n);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Every sequence number of a hub goes through its broadcast: the ones
                    // dropped are the next `missed`.
                    self.seen += missed;
                    return Received::Lagged(missed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    if let Err(closed) = self.follow_handover() {
                        return Received::Closed(closed);
                    }
                }
            }
        }
    }

    /// Moves to the hub that replaced this one, replaying what it published after the last
    /// notification this subscription accounted for.
    fn follow_handover(&mut self) -> Result<(), Ended> {
        let handover = self.hub.state().handover.clone().ok_or(Ended::Removed)?;
        if !(handover.continues)(&self.target) {
            return Err(Ended::Changed);
        }
        let mut state = handover.hub.state();
        let first = state.recent.front().map_or(state.seq + 1, |n| n.seq);
        if first > self.seen + 1 {
            self.missed_on_resume = first - self.seen - 1;
        }
        self.backlog = state
            .recent
            .iter()
            .filter(|n| n.seq > self.seen && self.target.matches(&n.topic))
            .cloned()
            .collect();
        // The backlog holds everything up to here that matters to this subscription.
        self.seen = state.seq;
        self.receiver = handover.hub.receiver(&mut state);
        drop(state);
        self.hub = handover.hub;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filters_and_shares_encodings() {
        let hub = Arc::new(EventHub::new(8));
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
        let hub = Arc::new(EventHub::new(8));
        let first = hub
            .publish(Topic::Event("e".into()), Bytes::from_static(b"1"))
            .expect("open");
        hub.publish(Topic::Property("p".into()), Bytes::from_static(b"2"));
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"3"));
        let after = SeenUpTo {
            seq: first.seq,
            timestamp: Some(first.timestamp.to_string()),
        };
        let mut again = hub.subscribe_after(Target::AllEvents, &after);
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
        let hub = Arc::new(EventHub::new(2));
        let mut slow = hub.subscribe(Target::Everything);
        for i in 0..5 {
            hub.publish(Topic::Event("e".into()), Bytes::from(i.to_string()));
        }
        assert!(matches!(slow.recv().await, Received::Lagged(3)));
    }

    fn next_data(received: Received) -> String {
        match received {
            Received::Notification(n) => String::from_utf8_lossy(&n.data).into_owned(),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_position_from_another_run_replays_nothing() {
        let hub = Arc::new(EventHub::new(8));
        let n = hub
            .publish(Topic::Event("e".into()), Bytes::from_static(b"1"))
            .expect("open");
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"2"));
        let elsewhere = SeenUpTo {
            seq: n.seq,
            timestamp: Some("1999-01-01T00:00:00Z".into()),
        };
        let mut sub = hub.subscribe_after(Target::AllEvents, &elsewhere);
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"3"));
        assert_eq!(next_data(sub.recv().await), "3");
    }

    #[tokio::test]
    async fn a_position_older_than_the_ring_is_reported_as_lag() {
        let hub = Arc::new(EventHub::new(1024));
        let first = hub
            .publish(Topic::Event("e".into()), Bytes::from_static(b"0"))
            .expect("open");
        for i in 1..(REPLAY_DEPTH + 5) {
            hub.publish(Topic::Event("e".into()), Bytes::from(i.to_string()));
        }
        let after = SeenUpTo {
            seq: first.seq,
            timestamp: Some(first.timestamp.to_string()),
        };
        let mut sub = hub.subscribe_after(Target::AllEvents, &after);
        // Notifications 2..=5 are gone; 6.. are replayed.
        assert!(matches!(sub.recv().await, Received::Lagged(4)));
        assert_eq!(next_data(sub.recv().await), "5");
    }

    #[tokio::test]
    async fn subscriptions_follow_a_handover_without_gap_or_duplicate() {
        let old = Arc::new(EventHub::new(8));
        let mut kept = old.subscribe(Target::Event("e".into()));
        let mut dropped = old.subscribe(Target::Event("gone".into()));
        old.publish(Topic::Event("e".into()), Bytes::from_static(b"1"));
        old.publish(Topic::Event("e".into()), Bytes::from_static(b"2"));
        let new = Arc::new(EventHub::new(8));
        new.continue_from(&old);
        let continues: Continues = Arc::new(|t: &Target| *t != Target::Event("gone".into()));
        old.close(Some((new.clone(), continues)));
        assert!(
            old.publish(Topic::Event("e".into()), Bytes::from_static(b"x"))
                .is_none()
        );
        // Published on the new hub before the subscription noticed the hand-over.
        new.publish(Topic::Event("e".into()), Bytes::from_static(b"3"));
        for want in ["1", "2", "3"] {
            assert_eq!(next_data(kept.recv().await), want);
        }
        new.publish(Topic::Event("e".into()), Bytes::from_static(b"4"));
        assert_eq!(next_data(kept.recv().await), "4");
        assert!(matches!(dropped.recv().await, Received::Closed(Ended::Changed)));
        // A second reload is followed too; a removal ends the subscription.
        let newer = Arc::new(EventHub::new(8));
        newer.continue_from(&new);
        new.close(Some((newer.clone(), Arc::new(|_: &Target| true))));
        newer.publish(Topic::Event("e".into()), Bytes::from_static(b"5"));
        assert_eq!(next_data(kept.recv().await), "5");
        newer.close(None);
        assert!(matches!(kept.recv().await, Received::Closed(Ended::Removed)));
    }

    fn has_buffer(hub: &EventHub) -> bool {
        hub.state().sender.is_some()
    }

    #[tokio::test]
    async fn the_buffer_comes_with_the_first_subscriber_and_goes_after_the_last() {
        let hub = Arc::new(EventHub::new(8));
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"1"));
        assert!(!has_buffer(&hub), "nobody subscribed: no buffer");
        let mut first = hub.subscribe(Target::AllEvents);
        assert!(has_buffer(&hub));
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"2"));
        let Received::Notification(two) = first.recv().await else {
            panic!("closed")
        };
        assert_eq!((two.seq, &two.data[..]), (2, &b"2"[..]));
        drop(first);
        // The publication that finds nobody listening gives the buffer back...
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"3"));
        assert!(!has_buffer(&hub));
        // ...and the sequence and the replay ring go on without it.
        let after = SeenUpTo {
            seq: two.seq,
            timestamp: Some(two.timestamp.to_string()),
        };
        let mut again = hub.subscribe_after(Target::AllEvents, &after);
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"4"));
        for (seq, data) in [(3, "3"), (4, "4")] {
            let Received::Notification(n) = again.recv().await else {
                panic!("closed")
            };
            assert_eq!((n.seq, String::from_utf8_lossy(&n.data).as_ref()), (seq, data));
        }
    }

    #[tokio::test]
    async fn a_subscriber_made_after_the_buffer_went_still_lags_by_the_right_count() {
        let hub = Arc::new(EventHub::new(2));
        drop(hub.subscribe(Target::Everything));
        hub.publish(Topic::Event("e".into()), Bytes::from_static(b"0"));
        let mut slow = hub.subscribe(Target::Everything);
        for i in 1..=5 {
            hub.publish(Topic::Event("e".into()), Bytes::from(i.to_string()));
        }
        assert!(matches!(slow.recv().await, Received::Lagged(3)));
        assert_eq!(next_data(slow.recv().await), "4");
    }

    #[tokio::test]
    async fn a_closed_hub_makes_no_buffer_and_ends_new_subscriptions() {
        let hub = Arc::new(EventHub::new(8));
        hub.close(None);
        let mut late = hub.subscribe(Target::Everything);
        assert!(!has_buffer(&hub));
        assert!(matches!(late.recv().await, Received::Closed(Ended::Removed)));
    }

    #[test]
    fn taps_see_every_notification_in_order_until_they_or_the_hub_stop() {
        let hub = EventHub::new(8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = seen.clone();
        hub.tap(Box::new(move |n| {
            all.lock().unwrap().push(n.seq);
            true
        }));
        let once = Arc::new(Mutex::new(0));
        let counted = once.clone();
        hub.tap(Box::new(move |_| {
            *counted.lock().unwrap() += 1;
            false
        }));
        for i in 0..3 {
            hub.publish(Topic::Property("p".into()), Bytes::from(i.to_string()));
        }
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        assert_eq!(*once.lock().unwrap(), 1, "a tap that said false is forgotten");
        assert!(!has_buffer(&hub), "a tap is no subscriber");
        hub.close(None);
        hub.tap(Box::new(|_| panic!("a closed hub calls no tap")));
        assert!(hub.publish(Topic::Property("p".into()), Bytes::new()).is_none());
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_handover_past_the_ring_reports_the_gap() {
        let old = Arc::new(EventHub::new(1024));
        let mut sub = old.subscribe(Target::AllEvents);
        old.publish(Topic::Event("e".into()), Bytes::from_static(b"1"));
        assert_eq!(next_data(sub.recv().await), "1");
        let new = Arc::new(EventHub::new(1024));
        new.continue_from(&old);
        old.close(Some((new.clone(), Arc::new(|_: &Target| true))));
        for i in 0..(REPLAY_DEPTH + 10) {
            new.publish(Topic::Event("e".into()), Bytes::from(i.to_string()));
        }
        assert!(matches!(sub.recv().await, Received::Lagged(10)));
        assert_eq!(next_data(sub.recv().await), "10");
    }
}
