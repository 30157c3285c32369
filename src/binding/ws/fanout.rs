//! Per-thread fan-out of a thing's notifications to the WebSocket connections this thread serves.
//!
//! Each worker thread runs at most one relay task per thing. Only the relay holds a receiver of
//! the thing's broadcast hub; for every notification it looks at the interests of each local
//! connection and puts the notification (shared, not copied) into the inbox of those that want
//! it, waking them. A connection that wants nothing of it is not woken, and no connection is woken
//! from another thread. Inboxes are bounded by the thing's notification capacity: a connection
//! that does not keep up loses the oldest entries and is told how many (it then closes with 1013);
//! the relay and the other connections never wait for it. The relay ends when its thread has no
//! connection to the thing left, or when the thing goes away.
//!
//! Everything here is confined to one thread (`Rc`, `RefCell`); connections must be spawned on
//! the thread that serves their socket (actix-web's `rt::spawn` does this). Routing is
//! `session::Interests::route`; wire frames are built by `connection`, not here.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

use super::session::Interests;
use crate::core::{Error, ExposedThing, Notification, Received, Subscription, Target};

thread_local! {
    /// This thread's relays, by the address of their thing.
    static RELAYS: RefCell<HashMap<usize, Rc<Relay>>> = RefCell::new(HashMap::new());
}

struct Relay {
    /// Held weakly so that the address (the key) cannot be reused by another thing while this
    /// relay exists.
    thing: Weak<ExposedThing>,
    inboxes: RefCell<HashMap<u64, Rc<Slot>>>,
    next_id: Cell<u64>,
    /// Signalled when the last inbox goes, so that the relay can end.
    emptied: Notify,
}

/// One connection's side of the relay.
struct Slot {
    interests: Rc<RefCell<Interests>>,
    queue: RefCell<VecDeque<Arc<Notification>>>,
    capacity: usize,
    /// Dropped (oldest first) because the queue was full, not yet reported.
    missed: Cell<u64>,
    closed: Cell<bool>,
    /// Notifications up to this sequence number were published before the connection
    /// subscribed.
    after: u64,
    waker: RefCell<Option<Waker>>,
}

/// A connection's subscription to its thing through this thread's relay; dropping it
/// unsubscribes.
pub struct Inbox {
    id: u64,
    slot: Rc<Slot>,
    relay: Rc<Relay>,
}

/// Subscribes a connection, whose current interests are `interests`, to everything `thing`
/// emits from now on that those interests route. Must be called on the connection's thread.
pub fn subscribe(thing: &Arc<ExposedThing>, interests: Rc<RefCell<Interests>>) -> Result<Inbox, Error> {
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
                inboxes: RefCell::new(HashMap::new()),
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
        queue: RefCell::new(VecDeque::new()),
        capacity: thing.notification_capacity(),
        missed: Cell::new(0),
        closed: Cell::new(false),
        after: thing.last_notification_seq(),
        waker: RefCell::new(None),
    });
    let id = relay.next_id.get();
    relay.next_id.set(id + 1);
    relay.inboxes.borrow_mut().insert(id, slot.clone());
    Ok(Inbox { id, slot, relay })
}

impl Inbox {
    /// The next notification the connection's interests route, or how many it missed, or that
    /// the thing went away.
    pub async fn recv(&mut self) -> Received {
        poll_fn(|cx| {
            let slot = &self.slot;
            let missed = slot.missed.replace(0);
            if missed > 0 {
                return Poll::Ready(Received::Lagged(missed));
            }
            if let Some(n) = slot.queue.borrow_mut().pop_front() {
                return Poll::Ready(Received::Notification(n));
            }
            if slot.closed.get() {
                return Poll::Ready(Received::Closed);
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
        if inboxes.is_empty() {
            self.relay.emptied.notify_one();
        }
    }
}

impl Slot {
    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// How many connections the relay wakes before it lets them (and the writes they queue) run.
const BATCH: usize = 128;

impl Relay {
    /// Hands `n` to every local connection that wants it. Yields after each batch of woken
    /// connections: the scheduler runs tasks in wake order, so without this no socket write would
    /// start before every local connection had built its frame.
    async fn deliver(&self, n: &Arc<Notification>) {
        // A snapshot, as connections may come and go while the relay yields. One that joins
        // meanwhile subscribed after `n` was published (its `after` excludes `n`); one that
        // leaves just gets an entry nobody reads.
        let slots: Vec<Rc<Slot>> = self.inboxes.borrow().values().cloned().collect();
        let mut woken = 0;
        for slot in slots {
            if n.seq <= slot.after || slot.interests.borrow().route(&n.topic).is_none() {
                continue;
            }
            {
                let mut queue = slot.queue.borrow_mut();
                if queue.len() >= slot.capacity {
                    queue.pop_front();
                    slot.missed.set(slot.missed.get() + 1);
                }
                queue.push_back(n.clone());
            }
            slot.wake();
            woken += 1;
            if woken % BATCH == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    fn lagged(&self, missed: u64) {
        for slot in self.inboxes.borrow().values() {
            slot.missed.set(slot.missed.get() + missed);
            slot.wake();
        }
    }

    fn close(&self) {
        for slot in self.inboxes.borrow().values() {
            slot.closed.set(true);
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
                Received::Closed => {
                    relay.close();
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

    #[tokio::test]
    async fn routes_by_interest_from_subscription_on_and_ends_with_its_sockets() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(8);
                thing.emit_event("e", Some(json!(0))).expect("emit");
                let mut a = subscribe(&thing, interested_in("e")).expect("subscribe");
                let mut b = subscribe(&thing, interested_in("other")).expect("subscribe");
                thing.emit_event("e", Some(json!(1))).expect("emit");
                thing.emit_event("other", None).expect("emit");
                // `a` gets only what it wants and nothing from before it subscribed.
                let Received::Notification(n) = a.recv().await else {
                    panic!("no notification")
                };
                assert_eq!(&n.data[..], b"1");
                let Received::Notification(n) = b.recv().await else {
                    panic!("no notification")
                };
                assert_eq!(n.topic.name(), "other");
                assert!(a.slot.queue.borrow().is_empty());
                let key = Arc::as_ptr(&thing) as usize;
                assert!(RELAYS.with(|r| r.borrow().contains_key(&key)));
                drop((a, b));
                tokio::task::yield_now().await;
                assert!(!RELAYS.with(|r| r.borrow().contains_key(&key)), "relay ended");
            })
            .await;
    }

    #[tokio::test]
    async fn a_full_inbox_drops_the_oldest_and_reports_the_count() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let thing = thing(4);
                let mut slow = subscribe(&thing, interested_in("e")).expect("subscribe");
                for i in 0..3 {
                    thing.emit_event("e", Some(json!(i))).expect("emit");
                    // Let the relay deliver each before the next, so the hub itself never lags.
                    tokio::task::yield_now().await;
                }
                for i in 3..10 {
                    thing.emit_event("e", Some(json!(i))).expect("emit");
                    tokio::task::yield_now().await;
                }
                assert!(matches!(slow.recv().await, Received::Lagged(6)));
                let Received::Notification(n) = slow.recv().await else {
                    panic!("no notification")
                };
                assert_eq!(&n.data[..], b"6", "the newest four are kept");
            })
            .await;
    }
}
