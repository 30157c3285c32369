//! The servient: the set of exposed things and the single entry point through which every
//! binding performs operations and subscribes. Bindings decode their wire format into an
//! [`Operation`], call [`Servient::handle`], and encode the [`Reply`] or [`Error`] back.

use std::sync::{Arc, RwLock};

use indexmap::IndexMap;
use tokio::sync::watch;

use super::error::Error;
use super::events::{Subscription, Target};
use super::operation::{Operation, Reply};
use super::thing::ExposedThing;

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
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a thing under its slug. Returns the thing it replaced.
    pub fn expose(&self, thing: Arc<ExposedThing>) -> Option<Arc<ExposedThing>> {
        let old = self
            .things
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(thing.slug.clone(), thing);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Takes a thing away; its subscribers' streams end once nothing else holds it.
    pub fn remove(&self, slug: &str) -> Option<Arc<ExposedThing>> {
        let old = self
            .things
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .shift_remove(slug);
        if old.is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
        old
    }

    /// A receiver that changes whenever a thing is added, replaced or removed.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

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

    pub fn slugs(&self) -> Vec<String> {
        self.things
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub async fn handle(&self, slug: &str, op: Operation) -> Result<Reply, Error> {
        let thing = self.thing(slug)?;
        perform(&thing, op).await
    }

    pub fn subscribe(&self, slug: &str, target: Target) -> Result<Subscription, Error> {
        self.thing(slug)?.subscribe(target)
    }
}

/// Performs one operation on one thing.
pub async fn perform(thing: &Arc<ExposedThing>, op: Operation) -> Result<Reply, Error> {
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
