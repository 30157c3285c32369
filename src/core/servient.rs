//! The servient: the set of exposed things and the single entry point through which every
//! binding performs operations and subscribes. Bindings decode their wire format into an
//! [`Operation`], call [`Servient::handle`], and encode the [`Reply`] or [`Error`] back.
//!
//! Bindings address a thing by its slug at each operation and do not keep an `ExposedThing`
//! across awaits: a thing may be replaced (hot reload) or removed at any moment, and only the
//! servient knows which one serves now.

use std::sync::{Arc, RwLock};

use indexmap::IndexMap;
use tokio::sync::watch;

use super::error::Error;
use super::events::{Subscription, Target};
use super::operation::{Operation, Reply};
use super::thing::ExposedThing;

/// The things a runtime serves, by slug: where every binding performs operations
/// ([`Servient::handle`]) and subscribes ([`Servient::subscribe`]).
#[derive(Debug)]
pub struct Servient {
    things: RwLock<IndexMap<String, Arc<ExposedThing>>>,
    /// Counts changes to the set of things (added, replaced, removed), so that announcers and
    /// caches outside the core can follow without polling.
    changes: watch::Sender<u64>,
}

impl Default for Servient {
    fn default() -> Self {
        Servient {
            things: RwLock::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl Servient {
    /// A servient with no things.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a thing under its slug. Returns the thing it replaced, which has been
    /// handed over to the new one (see [`ExposedThing`]'s replacement rules): its values carry
    /// over, its subscriptions follow where their target is unchanged and end otherwise, and
    /// whatever still reaches it is forwarded.
    pub fn expose(&self, thing: Arc<ExposedThing>) -> Option<Arc<ExposedThing>> {
        let mut things = self.things.write().unwrap_or_else(|p| p.into_inner());
        let old = things.insert(thing.slug.clone(), thing.clone());
        // Under the map's lock: no one can look the new thing up before it holds the old one's
        // values.
        if let Some(old) = old.as_ref().filter(|old| !Arc::ptr_eq(old, &thing)) {
            old.hand_over(&thing);
        }
        drop(things);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Takes a thing away: its subscriptions end, and whatever still reaches it is refused.
    pub fn remove(&self, slug: &str) -> Option<Arc<ExposedThing>> {
        let old = self
            .things
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .shift_remove(slug);
        if let Some(old) = &old {
            old.retire();
            self.changes.send_modify(|n| *n += 1);
        }
        old
    }

    /// A receiver that changes whenever a thing is added, replaced or removed.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The thing served under `slug`. Hold it for one operation, not across requests: a reload
    /// replaces it.
    pub fn thing(&self, slug: &str) -> Result<Arc<ExposedThing>, Error> {
        self.things
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(slug)
            .cloned()
            .ok_or_else(|| Error::ThingNotFound(slug.to_owned()))
    }

    /// Every thing, in the order they were exposed.
    pub fn things(&self) -> Vec<Arc<ExposedThing>> {
        self.things
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every thing's slug, in the order they were exposed.
    pub fn slugs(&self) -> Vec<String> {
        self.things
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Performs one operation on the thing under `slug`.
    pub async fn handle(&self, slug: &str, op: Operation) -> Result<Reply, Error> {
        let thing = self.thing(slug)?;
        perform(&thing, op).await
    }

    /// Subscribes to the notifications of the thing under `slug` that `target` selects; the
    /// subscription follows the thing across reloads (see [`Subscription::recv`]).
    pub fn subscribe(&self, slug: &str, target: Target) -> Result<Subscription, Error> {
        self.thing(slug)?.subscribe(target)
    }
}

/// Performs one operation on one thing: a proxied thing's reads and writes go to its remote.
pub(crate) async fn perform(thing: &Arc<ExposedThing>, op: Operation) -> Result<Reply, Error> {
    match thing.remote() {
        Some(remote) => super::remote::perform(thing, remote.clone(), op).await,
        None => perform_locally(thing, op).await,
    }
}

/// Performs one operation on a thing's own values and action registry.
pub(crate) async fn perform_locally(thing: &Arc<ExposedThing>, op: Operation) -> Result<Reply, Error> {
    match op {
        Operation::ReadProperty(name) => thing.read_property(&name).map(Reply::Value),
        Operation::WriteProperty(name, value) => {
            thing.write_property(&name, value).await.map(|_| Reply::Written)
        }
        Operation::ReadAllProperties => thing.read_all_properties().map(Reply::Value),
        Operation::ReadMultipleProperties(names) => thing
            .read_properties(names.iter().map(String::as_str))
            .map(Reply::Value),
        Operation::WriteMultipleProperties(values) => {
            thing.write_properties(values).await.map(|_| Reply::Written)
        }
        Operation::InvokeAction { name, input } => {
            if thing.action(&name)?.synchronous {
                thing.invoke_sync(&name, input).await.map(Reply::Output)
            } else {
                thing.invoke_async(&name, input).map(Reply::Started)
            }
        }
        Operation::QueryAction { name, id } => thing.action_status(&name, &id).map(Reply::Status),
        Operation::CancelAction { name, id } => thing.cancel_action(&name, &id).map(Reply::Cancelled),
        Operation::QueryAllActions => Ok(Reply::AllStatuses(thing.all_action_statuses())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::core::events::{Ended, Received};
    use crate::core::{Status, ThingBuilder};

    fn thing(model: Value) -> Arc<ExposedThing> {
        ThingBuilder::new("t", model)
            .id("urn:uuid:t")
            .build()
            .expect("builds")
    }

    fn level(max: u64) -> Value {
        json!({
            "title": "T",
            "properties": {
                "level": {"type": "integer", "maximum": max, "observable": true},
                "spare": {"type": "integer"}
            },
            "events": {"tick": {"data": {"type": "integer"}}}
        })
    }

    fn value(servient: &Servient, name: &str) -> Value {
        servient
            .thing("t")
            .expect("served")
            .property(name)
            .expect("property")
            .value()
    }

    #[tokio::test]
    async fn a_replaced_thing_forwards_what_fits_and_refuses_the_rest() {
        let servient = Servient::new();
        let old = thing(level(100));
        servient.expose(old.clone());
        old.write_property("level", json!(7)).await.expect("write");
        let mut narrower = level(10);
        narrower["properties"]
            .as_object_mut()
            .expect("object")
            .remove("spare");
        servient.expose(thing(narrower));
        // The value carried over, and a write through the stale handle lands on the new thing.
        assert_eq!(value(&servient, "level"), json!(7));
        old.write_property("level", json!(9)).await.expect("forwarded");
        assert_eq!(value(&servient, "level"), json!(9));
        // Valid for the old schema, not for the new one: refused, nothing changes.
        assert!(matches!(
            old.write_property("level", json!(50)).await,
            Err(Error::Schema(_))
        ));
        assert!(matches!(
            old.write_property("spare", json!(1)).await,
            Err(Error::AffordanceNotFound { .. })
        ));
        assert_eq!(value(&servient, "level"), json!(9));
        // Nothing is served by the stale handle any more: its reads are not what clients get.
        assert!(!old.is_serving());
    }

    #[tokio::test]
    async fn a_removed_thing_refuses_everything_and_ends_its_subscriptions() {
        let servient = Servient::new();
        let old = thing(level(100));
        servient.expose(old.clone());
        let mut subscription = old.subscribe(Target::Everything).expect("subscribe");
        servient.remove("t");
        assert!(matches!(
            subscription.recv().await,
            Received::Closed(Ended::Removed)
        ));
        assert!(matches!(
            old.write_property("level", json!(1)).await,
            Err(Error::ThingNotFound(_))
        ));
        assert!(matches!(
            old.emit_event("tick", Some(json!(1))),
            Err(Error::ThingNotFound(_))
        ));
        assert!(matches!(
            old.subscribe(Target::AllEvents),
            Err(Error::ThingNotFound(_))
        ));
    }

    /// A writer keeps using the handle it started with while the thing is replaced again and
    /// again: every acknowledged write is the value served afterwards, in order.
    async fn writes_racing_replacements(persistence: Option<Arc<crate::state::Store>>) {
        const WRITES: u64 = 400;
        let build = move |max: u64| {
            let mut builder = ThingBuilder::new("t", level(max)).id("urn:uuid:t");
            if let Some(store) = &persistence {
                builder = builder.persistence(store.clone());
            }
            builder.build().expect("builds")
        };
        let servient = Arc::new(Servient::new());
        let first = build(1_000_000);
        servient.expose(first.clone());
        let mut observer = first
            .subscribe(Target::Property("level".into()))
            .expect("subscribe");
        // Reads while the writes and replacements go on: it sees every acknowledged value in
        // order, or is told exactly how many it missed (a subscriber that falls far behind
        // during replacements may lag), never a silent gap or a duplicate.
        let reader = tokio::spawn(async move {
            let mut next = 1;
            let mut delivered = 0;
            while next <= WRITES {
                match observer.recv().await {
                    Received::Notification(n) => {
                        let v: u64 = serde_json::from_slice(&n.data).expect("number");
                        assert_eq!(v, next, "a gap or a duplicate");
                        next += 1;
                        delivered += 1;
                    }
                    Received::Lagged(missed) => next += missed,
                    other => panic!("at {next}: {other:?}"),
                }
            }
            assert_eq!(next, WRITES + 1, "lag reported beyond what was published");
            delivered
        });
        let writer = tokio::spawn(async move {
            for n in 1..=WRITES {
                first
                    .write_property("level", json!(n))
                    .await
                    .expect("acknowledged");
            }
        });
        let replacer = {
            let servient = servient.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    // Same affordances: subscriptions follow every replacement.
                    servient.expose(build(1_000_000));
                    tokio::task::yield_now().await;
                }
            })
        };
        writer.await.expect("writer");
        replacer.await.expect("replacer");
        assert_eq!(value(&servient, "level"), json!(WRITES));
        let delivered = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the reader reaches the last write")
            .expect("reader");
        assert!(delivered > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_racing_replacements_are_never_lost() {
        writes_racing_replacements(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_writes_racing_replacements_are_never_lost() {
        let dir = std::env::temp_dir().join(format!("wot-servient-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::state::Store::open(&dir, crate::state::Durability::Periodic).expect("store");
        writes_racing_replacements(Some(store)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn action_instances_outlive_a_replacement() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let model = json!({
            "title": "T",
            "actions": {"work": {"synchronous": false, "output": {"type": "integer"}}}
        });
        let build = |gate: Arc<tokio::sync::Notify>| {
            ThingBuilder::new("t", model.clone())
                .on_action("work", move |_| {
                    let gate = gate.clone();
                    async move {
                        gate.notified().await;
                        Ok(Some(json!(42)))
                    }
                })
                .build()
                .expect("builds")
        };
        let servient = Servient::new();
        let old = build(gate.clone());
        servient.expose(old.clone());
        let started = old.invoke_async("work", None).expect("started");
        servient.expose(build(Arc::new(tokio::sync::Notify::new())));
        let new = servient.thing("t").expect("served");
        let target = Target::Action {
            name: "work".into(),
            id: started.id.to_string(),
        };
        let mut status = new
            .subscribe(target)
            .expect("the instance is known to the new thing");
        gate.notify_one();
        loop {
            match status.recv().await {
                Received::Notification(n) => {
                    let s: Value = serde_json::from_slice(&n.data).expect("status");
                    if s["status"] == "completed" {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        let done = new
            .action_status("work", &started.id)
            .expect("queried on the new thing");
        assert_eq!((done.status, done.output), (Status::Completed, Some(json!(42))));
    }
}
