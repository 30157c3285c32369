//! Per-thread fan-out of a thing's notifications to the WebSocket connections this thread serves.
//!
//! Each worker thread runs at most one relay task per thing. Only the relay holds a receiver of
//! the thing's broadcast hub; for every notification it looks at the interests of each local
//! connection. A property or event notification that a connection wants is framed for it right
//! here, from the notification's shared prefix and the connection's ending (operation and
//! correlationID, encoded once per topic in the routing table), and queued on the connection's
//! [`Outbound`], which writes it to the connection at once: the connection's own task sleeps
//! through the fan-out. Action status
//! changes, which change the connection's state, go to its inbox instead and wake its task; so
//! does anything routed while the inbox still holds entries, so that a socket sees its
//! notifications in the order they were published.
//!
//! Nothing here waits for a client. A connection whose outbound queue is full (its client stops
//! reading) or whose inbox overflows (bounded by the thing's notification capacity; the oldest
//! entries go) misses notifications; its task is told how many and closes with 1013. The relay
//! ends when its thread has no connection to the thing left, or when its subscription ends (the
//! thing was removed, or reloaded with changed affordances; a reload that changes none is
//! followed by the core subscription, and the relay goes on).
//!
//! Everything here is confined to one thread (`Rc`, `RefCell`); connections must be spawned on
//! the thread that serves their socket (actix-web's `rt::spawn` does this). Routing is
//! `session::Interests::route`; frames are encoded by `protocol` and framed by `binding::ws_outbound`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

use super::protocol;
use super::session::Interests;
use crate::binding::ws_outbound::Outbound;
use crate::core::{Ended, Error, ExposedThing, Notification, Received, Subscription, Target, Topic};

thread_local! {
    /// This thread's relays, by the address of their thing.
    static RELAYS: RefCell<HashMap<usize, Rc<Relay>>> = RefCell::new(HashMap::new());
    /// Bumped whenever a connection on this thread comes, goes or changes its interests: the
    /// relays' routing tables from an older generation are stale.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// To be called before a connection changes its interests (or right after, with no await in
/// between): the relays on this thread will recompute whom a topic goes to.
pub(crate) fn interests_changed() {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// Whom a relay's notifications may go to, computed per topic on first use and reused until
/// the thread's generation moves on. Without it every notification would look at every local
/// connection's interests, which for a topic nobody follows is all cost (cold memory, one
/// lookup per connection) and delays the notifications behind it.
#[derive(Default)]
struct Routes {
    generation: u64,
    /// Per property or event: the connections whose interests route it.
    by_topic: HashMap<Topic, Rc<[Route]>>,
    /// The connections that follow at least one action instance (action topics are unique per
    /// instance, so they are not worth a table entry each).
    action_followers: Option<Rc<[Rc<Slot>]>>,
}

/// A connection a property or event goes to, and how its frames of it end.
struct Route {
    slot: Rc<Slot>,
    /// What follows a notification's shared prefix for this connection (the operation that
    /// subscribed and its correlationID): encoded when the table is built, as it stays the same
    /// until the connection changes its interests, which starts a new generation.
    ending: Box<[u8]>,
}

struct Relay {
    /// Held weakly so that the address (the key) cannot be reused by another thing while this
    /// relay exists.
    thing: Weak<ExposedThing>,
    /// The id notifications name the thing by. Kept here, not read through `thing`: once the
    /// thing is replaced by one with the same affordances (and id), nobody may hold the old
    /// one, yet its subscription goes on with the new one.
    thing_id: String,
    inboxes: RefCell<HashMap<u64, Rc<Slot>>>,
    routes: RefCell<Routes>,
    next_id: Cell<u64>,
    /// Signalled when the last inbox goes, so that the relay can end.
    emptied: Notify,
}

/// One connection's side of the relay.
struct Slot {
    interests: Rc<RefCell<Interests>>,
    /// Where this connection's property and event notifications go directly.
    outbound: Outbound,
    /// Notifications for the connection's task: action status, and whatever must wait behind it.
    queue: RefCell<VecDeque<Arc<Notification>>>,
    capacity: usize,
    /// Dropped (oldest first) because the queue was full, not yet reported.
    missed: Cell<u64>,
    /// Set when the thing's subscription ended, with why.
    closed: Cell<Option<Ended>>,
    /// Notifications up to this sequence number were published before the connection
    /// subscribed.
    after: u64,
    waker: RefCell<Option<Waker>>,
}

/// A connection's subscription to its thing through this thread's relay; dropping it
/// unsubscribes.
pub(crate) struct Inbox {
    id: u64,
    slot: Rc<Slot>,
    relay: Rc<Relay>,
}

/// Subscribes a connection, whose current interests are `interests` and whose socket is written
/// through `outbound` (`binding::ws_outbound`), to everything `thing` emits from now on that those interests route. Must
/// be called on the connection's thread.
pub(crate) fn subscribe(
    thing: &Arc<ExposedThing>,
    interests: Rc<RefCell<Interests>>,
    outbound: Outbound,
) -> Result<Inbox, Error> {
    let key = Arc::as_ptr(thing) as usize;
    let existing = RELAYS.with(|relays| {
        relays
            .borrow()
            .get(&key)
            .filter(|r| r.thing.strong_count() > 0)
            .cloned()
    });
    let relay = match existing {
        Some(relay) => relay,
        None => {
            // Subscribed now, before any connection is registered, so that nothing published
            // after `after` below can be missed.
            let subscription = thing.subscribe(Target::Everything)?;
            let relay = Rc::new(Relay {
                thing: Arc::downgrade(thing),
                thing_id: thing.id.clone(),
                inboxes: RefCell::new(HashMap::new()),
                routes: RefCell::new(Routes::default()),
                next_id: Cell::new(0),
                emptied: Notify::new(),
            });
            RELAYS.with(|relays| relays.borrow_mut().insert(key, relay.clone()));
            actix_web::rt::spawn(pump(key, relay.clone(), subscription));
            relay
        }
    };
    let slot = Rc::new(Slot {
        interests,
        outbound,
        queue: RefCell::new(VecDeque::new()),
        capacity: thing.notification_capacity(),
        missed: Cell::new(0),
        closed: Cell::new(None),
        after: thing.last_notification_seq(),
        waker: RefCell::new(None),
    });
    let id = relay.next_id.get();
    relay.next_id.set(id + 1);
    relay.inboxes.borrow_mut().insert(id, slot.clone());
    interests_changed();
    Ok(Inbox { id, slot, relay })
}

impl Inbox {
    /// The next notification the connection's interests route, or how many it missed, or that
    /// the thing went away.
    pub(crate) async fn recv(&mut self) -> Received {
        poll_fn(|cx| {
            let slot = &self.slot;
            let missed = slot.missed.replace(0);
            if missed > 0 {
                return Poll::Ready(Received::Lagged(missed));
            }
            if let Some(n) = slot.queue.borrow_mut().pop_front() {
                return Poll::Ready(Received::Notification(n));
            }
            if let Some(ended) = slot.closed.get() {
                return Poll::Ready(Received::Closed(ended));
            }
            let mut waker = slot.waker.borrow_mut();
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut inboxes = self.relay.inboxes.borrow_mut();
        inboxes.remove(&self.id);
        interests_changed();
        if inboxes.is_empty() {
            self.relay.emptied.notify_one();
        }
    }
}

impl Slot {
    /// Counts a notification the connection did not get; the first one wakes its task, which
    /// reports the lag and closes the socket.
    fn miss(&self) {
        let missed = self.missed.get() + 1;
        self.missed.set(missed);
        if missed == 1 {
            self.wake();
        }
    }

    /// Puts `n` in the connection's inbox for its task (dropping the oldest entry if full) and
    /// wakes the task.
    fn enqueue(&self, n: &Arc<Notification>) {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= self.capacity {
            queue.pop_front();
            self.missed.set(self.missed.get() + 1);
        }
        queue.push_back(n.clone());
        drop(queue);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// How many connections the relay serves before it lets other tasks of its thread run.
const BATCH: usize = 128;

/// What a connection that wants a property or event notification gets of it.
#[derive(Clone, Copy)]
enum Plan {
    /// Its inbox, behind the entries there.
    Inbox,
    /// Its socket.
    Socket,
    /// Nothing: it lags already (its task is about to close it) or its outbound queue is full.
    Missed,
}

impl Relay {
    /// Hands `n` to every local connection that wants it. Yields after each batch of served
    /// connections: the scheduler runs tasks in wake order, so without this no socket write would
    /// start before every local connection had its frame.
    async fn deliver(&self, n: &Arc<Notification>) {
        match n.topic {
            Topic::Action { .. } => self.deliver_to_tasks(n).await,
            _ => {
                let prefix = protocol::notification_prefix(&self.thing_id, n);
                self.deliver_to_sockets(n, &prefix).await;
            }
        }
    }

    /// A property or event notification: framed here for each connection (shared `prefix`, the
    /// connection's ending) and queued on its socket, unless its inbox holds entries it must
    /// follow.
    async fn deliver_to_sockets(&self, n: &Arc<Notification>, prefix: &[u8]) {
        // A snapshot, as connections may come and go while the relay yields. One that joins
        // meanwhile subscribed after `n` was published (its `after` excludes `n`); one that
        // leaves gets nothing or an entry nobody reads; one that changes its interests starts a
        // new generation, after which its cached ending is checked against `route` again.
        let (routes, generation) = self.topic_routes(&n.topic);
        let mut frame = Vec::with_capacity(prefix.len() + 128);
        let mut fresh_ending = Vec::new();
        let mut plans = Vec::with_capacity(BATCH);
        for batch in routes.chunks(BATCH) {
            let fresh = GENERATION.with(Cell::get) == generation;
            // First what each connection of the batch gets, then the sends. A connection's state
            // is spread over a few allocations that are rarely in the cache; read back to back,
            // the processor waits for them together, while between two sends each would wait
            // on its own.
            plans.clear();
            plans.extend(batch.iter().map(|route| {
                let slot = &route.slot;
                if n.seq <= slot.after {
                    // It subscribed after the notification was published.
                    None
                } else if slot.missed.get() > 0 {
                    Some(Plan::Missed)
                } else if !slot.queue.borrow().is_empty() {
                    Some(Plan::Inbox)
                } else if !slot.outbound.has_room() {
                    Some(Plan::Missed)
                } else {
                    Some(Plan::Socket)
                }
            }));
            for (route, plan) in batch.iter().zip(&plans) {
                let slot = &route.slot;
                let Some(plan) = plan else {
                    continue;
                };
                let ending: &[u8] = if fresh {
                    &route.ending
                } else {
                    let interests = slot.interests.borrow();
                    let Some(delivery) = interests.route(&n.topic) else {
                        continue;
                    };
                    fresh_ending.clear();
                    protocol::append_notification_ending(
                        &mut fresh_ending,
                        delivery.operation,
                        delivery.correlation_id,
                    );
                    &fresh_ending
                };
                match plan {
                    Plan::Missed => slot.miss(),
                    Plan::Inbox => slot.enqueue(n),
                    Plan::Socket => {
                        frame.clear();
                        frame.extend_from_slice(prefix);
                        frame.extend_from_slice(ending);
                        if slot.outbound.notification(&frame).is_err() {
                            slot.miss();
                        }
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    }

    /// An action's status: to the inbox of every connection that follows the action, for its
    /// task to answer (it changes the connection's state).
    async fn deliver_to_tasks(&self, n: &Arc<Notification>) {
        let slots = self.action_followers();
        let mut served = 0;
        for slot in slots.iter() {
            if n.seq <= slot.after || slot.interests.borrow().route(&n.topic).is_none() {
                continue;
            }
            if slot.missed.get() > 0 {
                slot.miss();
            } else {
                slot.enqueue(n);
            }
            served += 1;
            if served % BATCH == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// The routing tables, emptied first if the thread's generation has moved on since they were
    /// filled.
    fn current_routes(&self) -> std::cell::RefMut<'_, Routes> {
        let mut routes = self.routes.borrow_mut();
        let generation = GENERATION.with(Cell::get);
        if routes.generation != generation {
            *routes = Routes {
                generation,
                ..Routes::default()
            };
        }
        routes
    }

    /// The connections whose interests route the property or event `topic`, with their endings,
    /// from this generation's table; and the generation.
    fn topic_routes(&self, topic: &Topic) -> (Rc<[Route]>, u64) {
        let mut routes = self.current_routes();
        let generation = routes.generation;
        let table = routes
            .by_topic
            .entry(topic.clone())
            .or_insert_with(|| {
                let inboxes = self.inboxes.borrow();
                let mut ending = Vec::new();
                inboxes
                    .values()
                    .filter_map(|slot| {
                        let interests = slot.interests.borrow();
                        let delivery = interests.route(topic)?;
                        ending.clear();
                        protocol::append_notification_ending(
                            &mut ending,
                            delivery.operation,
                            delivery.correlation_id,
                        );
                        Some(Route {
                            slot: slot.clone(),
                            ending: ending.as_slice().into(),
                        })
                    })
                    .collect()
            })
            .clone();
        (table, generation)
    }

    /// The connections that follow at least one action instance, from this generation's table.
    fn action_followers(&self) -> Rc<[Rc<Slot>]> {
        let mut routes = self.current_routes();
        routes
            .action_followers
            .get_or_insert_with(|| {
                let inboxes = self.inboxes.borrow();
                inboxes
                    .values()
                    .filter(|slot| slot.interests.borrow().tracked_actions() > 0)
                    .cloned()
                    .collect()
            })
            .clone()
    }

    fn lagged(&self, missed: u64) {
        for slot in self.inboxes.borrow().values() {
            slot.missed.set(slot.missed.get() + missed);
            slot.wake();
        }
    }

    fn close(&self, ended: Ended) {
        for slot in self.inboxes.borrow().values() {
            slot.closed.set(Some(ended));
            slot.wake();
        }
    }
}

async fn pump(key: usize, relay: Rc<Relay>, mut subscription: Subscription) {
    loop {
        tokio::select! {
            received = subscription.recv() => match received {
                Received::Notification(n) => relay.deliver(&n).await,
                Received::Lagged(missed) => relay.lagged(missed),
                Received::Closed(ended) => {
                    relay.close(ended);
                    break;
                }
            },
            _ = relay.emptied.notified() => {
                if relay.inboxes.borrow().is_empty() {
                    break;
                }
            }
        }
    }
    // No await between the checks above and this: no connection can have joined meanwhile.
    RELAYS.with(|relays| {
        let mut relays = relays.borrow_mut();
        if relays.get(&key).is_some_and(|r| Rc::ptr_eq(r, &relay)) {
            relays.remove(&key);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ThingBuilder;
    use serde_json::json;

    fn thing(capacity: usize) -> Arc<ExposedThing> {
        let model = json!({"title": "T", "events": {"e": {"data": {"type": "integer"}}, "other": {}}});
        ThingBuilder::new("t", model)
            .notification_capacity(capacity)
            .build()
            .expect("thing")
    }

    fn interested_in(event: &str) -> Rc<RefCell<Interests>> {
        let interests = Rc::new(RefCell::new(Interests::default()));
        interests.borrow_mut().subscribe_event(event, None);
        interests
    }

    /// Everything queued on `out` so far, as text (frames under 64 KiB).
    fn written(out: &Outbound) -> Vec<String> {
        let mut bytes = out.take_queued().freeze();
        let mut frames = Vec::new();
        while bytes.len() >= 2 {
            let (header, len) = match bytes[1] {
                126 => (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
                127 => panic!("frames under 64 KiB only in this test"),
                short => (2, usize::from(short)),
            };
            let payload = bytes[header..header + len].to_vec();
            frames.push(String::from_utf8(payload).expect("utf-8"));
            bytes = bytes.slice(header + len..);
        }
        frames
    }

    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn routes_by_interest_from_subscription_on_and_ends_with_its_sockets() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(8);
                thing.emit_event("e", Some(json!(0))).expect("emit");
                let out_a = Outbound::detached(1024);
                let body_a = out_a.clone();
                let out_b = Outbound::detached(1024);
                let body_b = out_b.clone();
                let a = subscribe(&thing, interested_in("e"), out_a).expect("subscribe");
                let b = subscribe(&thing, interested_in("other"), out_b).expect("subscribe");
                thing.emit_event("e", Some(json!(1))).expect("emit");
                thing.emit_event("other", None).expect("emit");
                settle().await;
                // `a` gets only what it wants, and nothing from before it subscribed, straight
                // into its outbound queue; its inbox stays empty.
                let frames = written(&body_a);
                assert_eq!(frames.len(), 1, "{frames:?}");
                assert!(frames[0].contains(r#""data":1"#), "{}", frames[0]);
                assert!(
                    frames[0].contains(r#""operation":"subscribeevent""#),
                    "{}",
                    frames[0]
                );
                let frames = written(&body_b);
                assert_eq!(frames.len(), 1, "{frames:?}");
                assert!(frames[0].contains(r#""name":"other""#), "{}", frames[0]);
                assert!(a.slot.queue.borrow().is_empty());
                let key = Arc::as_ptr(&thing) as usize;
                assert!(RELAYS.with(|r| r.borrow().contains_key(&key)));
                drop((a, b));
                tokio::task::yield_now().await;
                assert!(!RELAYS.with(|r| r.borrow().contains_key(&key)), "relay ended");
            })
            .await;
    }

    /// Routes are cached per topic; a connection that joins or changes its interests afterwards
    /// must still be served by what it wants now.
    #[tokio::test]
    async fn cached_routes_follow_joins_and_interest_changes() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(8);
                let interests = interested_in("e");
                let out_a = Outbound::detached(4096);
                let body_a = out_a.clone();
                let _a = subscribe(&thing, interests.clone(), out_a).expect("subscribe");
                thing.emit_event("e", Some(json!(1))).expect("emit");
                settle().await;
                assert_eq!(written(&body_a).len(), 1);

                // A newcomer is routed `e` although `e`'s route was computed without it.
                let out_b = Outbound::detached(4096);
                let body_b = out_b.clone();
                let _b = subscribe(&thing, interested_in("e"), out_b).expect("subscribe");
                thing.emit_event("e", Some(json!(2))).expect("emit");
                settle().await;
                assert_eq!(written(&body_a).len(), 1);
                assert_eq!(written(&body_b).len(), 1, "the newcomer got e");

                // `a` moves from `e` to `other` and back, the way the connection does it: `e`'s
                // cached route must not leave it out.
                interests_changed();
                interests.borrow_mut().unsubscribe_event("e");
                interests.borrow_mut().subscribe_event("other", None);
                thing.emit_event("e", Some(json!(3))).expect("emit");
                thing.emit_event("other", None).expect("emit");
                settle().await;
                let frames = written(&body_a);
                assert_eq!(frames.len(), 1, "{frames:?}");
                assert!(frames[0].contains(r#""name":"other""#), "{}", frames[0]);
                assert_eq!(written(&body_b).len(), 1, "b still gets e");
                interests_changed();
                interests.borrow_mut().subscribe_event("e", None);
                thing.emit_event("e", Some(json!(4))).expect("emit");
                settle().await;
                let frames = written(&body_a);
                assert_eq!(frames.len(), 1, "{frames:?}");
                assert!(frames[0].contains(r#""data":4"#), "{}", frames[0]);
                assert_eq!(written(&body_b).len(), 1, "b still gets e, not other");
            })
            .await;
    }

    /// The relay yields between batches of connections; a connection that changes its interests
    /// meanwhile must be routed by what it wants now, not by the ending cached for the table.
    #[tokio::test]
    async fn interests_changed_during_a_fan_out_route_the_rest_of_it() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(8);
                let count = BATCH + 72;
                let mut connections = Vec::new();
                for _ in 0..count {
                    let interests = Rc::new(RefCell::new(Interests::default()));
                    interests.borrow_mut().subscribe_event("e", Some("before".into()));
                    let outbound = Outbound::detached(4096);
                    let body = outbound.clone();
                    let inbox = subscribe(&thing, interests.clone(), outbound).expect("subscribe");
                    connections.push((interests, body, inbox));
                }
                thing.emit_event("e", Some(json!(1))).expect("emit");
                // The relay runs once: it serves the first batch and yields.
                tokio::task::yield_now().await;
                interests_changed();
                for (i, (interests, ..)) in connections.iter().enumerate() {
                    if i % 2 == 0 {
                        interests.borrow_mut().unsubscribe_event("e");
                    } else {
                        interests.borrow_mut().subscribe_event("e", Some("after".into()));
                    }
                }
                settle().await;
                let (mut before, mut after) = (0, 0);
                for (i, (_, body, _)) in connections.iter_mut().enumerate() {
                    let frames = written(body);
                    match frames.as_slice() {
                        [] => assert_eq!(i % 2, 0, "only those that unsubscribed miss it"),
                        [frame] if frame.contains(r#""correlationID":"before""#) => before += 1,
                        [frame] if frame.contains(r#""correlationID":"after""#) => {
                            assert_eq!(i % 2, 1, "{frame}");
                            after += 1;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(before, BATCH, "the first batch was served before the change");
                assert!(
                    after > 0,
                    "some of the rest were served with their new correlationID"
                );
            })
            .await;
    }

    #[tokio::test]
    async fn a_full_outbound_queue_makes_the_connection_lag() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(16);
                // Room for one notification only.
                let out = Outbound::detached(1);
                let body = out.clone();
                let mut slow = subscribe(&thing, interested_in("e"), out).expect("subscribe");
                for i in 0..5 {
                    thing.emit_event("e", Some(json!(i))).expect("emit");
                    settle().await;
                }
                assert!(matches!(slow.recv().await, Received::Lagged(4)));
                let frames = written(&body);
                assert_eq!(frames.len(), 1, "only the first was queued: {frames:?}");
                assert!(frames[0].contains(r#""data":0"#), "{}", frames[0]);
            })
            .await;
    }
}
