//! From thing definitions to exposed things: builds each thing with its behaviours' action
//! handlers and gives it a stable `urn:uuid:` id. Ids persist in `--state-dir` when one is given
//! (random v4, changeable by deleting the file); without one they are derived from the
//! machine's id and the slug, so they still survive restarts.
//!
//! It also carries the bundled `things/` files, so `wot serve` works with no setup.
//!
//! As library API: [`expose`] turns a [`ThingDefinition`] into a [`Hosted`] thing (with ids from
//! an [`IdStore`]), [`bundled`] parses the bundled files, and a [`Hosted`] made by hand from a
//! [`crate::core::ThingBuilder`] needs no [`Behaviors`]. Inside the crate, `Host` adds,
//! replaces and removes things while the runtime serves.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

pub use crate::behavior::Behaviors;
use crate::core::{ExposedThing, ThingBuilder};
use crate::state::{Store, StoreError};
use crate::td::Problem;
use crate::td::definition::{self, ThingDefinition};

/// The bundled thing files, embedded in the binary.
pub(crate) const BUNDLED: &[(&str, &str)] = &[
    ("lamp.json", include_str!("../things/lamp.json")),
    ("thermostat.json", include_str!("../things/thermostat.json")),
    ("host.json", include_str!("../things/host.json")),
];

/// An exposed thing with the behaviours that drive it.
pub struct Hosted {
    /// The thing.
    pub thing: Arc<ExposedThing>,
    /// Its behaviours, started with it (`Behaviors::default()`: none).
    pub behaviors: Behaviors,
}

/// Hands out stable ids: kept in the state store when there is one (random v4, changeable by
/// deleting the state), else derived from the machine's id and the slug (v5), which is stable
/// across restarts too.
pub struct IdStore {
    store: Option<Arc<Store>>,
    machine: String,
}

impl IdStore {
    /// Ids kept in `store`, or derived from the machine's id without one.
    pub fn new(store: Option<Arc<Store>>) -> Self {
        let machine = std::fs::read_to_string("/etc/machine-id")
            .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "wot-runtime".into());
        IdStore { store, machine }
    }

    /// The id for a key (a thing's slug, or "directory").
    pub(crate) fn id_for(&mut self, key: &str) -> Result<String, StoreError> {
        let Some(store) = &self.store else {
            let name = format!("{}/{key}", self.machine);
            return Ok(format!(
                "urn:uuid:{}",
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
            ));
        };
        let meta = format!("id:{key}");
        if let Some(id) = store.get_meta(&meta) {
            return Ok(id);
        }
        let id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        store.set_meta(&meta, &id)?;
        Ok(id)
    }

    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }
}

/// Builds the exposed thing of a definition.
pub fn expose(definition: ThingDefinition, ids: &mut IdStore) -> Result<Hosted, Problem> {
    let path = definition.path.clone();
    // A proxy's id is its own, not its remote's; keyed by the remote too, so that a bridge and
    // the thing it bridges on one machine (same slug) do not derive the same id.
    let key = match &definition.proxy {
        Some(proxy) => format!("{} proxy of {}", definition.slug, proxy.td),
        None => definition.slug.clone(),
    };
    let id = match definition.model.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => ids
            .id_for(&key)
            .map_err(|e| Problem::new(&path, "", "state", e.to_string()))?,
    };
    let mut builder = ThingBuilder::new(definition.slug.clone(), definition.model).id(id);
    if let Some(store) = ids.store() {
        builder = builder.persistence(store.clone());
    }
    if definition.proxy.is_some() && definition.behaviors.remote().is_none() {
        return Err(Problem::new(
            &path,
            "/proxy",
            "proxy",
            "the remote TD has not been fetched (crate::bridge::resolve)",
        ));
    }
    for (name, handler) in definition.behaviors.action_handlers() {
        builder = builder.on_action_handler(&name, handler);
    }
    if let Some(remote) = definition.behaviors.remote() {
        builder = builder.remote(remote);
    }
    let thing = builder.build().map_err(|v| Problem::from_violation(&path, v))?;
    Ok(Hosted {
        thing,
        behaviors: definition.behaviors,
    })
}

/// Parses the bundled thing files.
pub fn bundled() -> Vec<Result<ThingDefinition, Vec<Problem>>> {
    BUNDLED
        .iter()
        .map(|(name, text)| definition::parse(Path::new(name), text))
        .collect()
}

/// The things a runtime hosts, with their behaviour tasks: adds, replaces and removes things
/// while the runtime serves (hot reload), so that one thing's change never touches another's
/// tasks or connections.
pub(crate) struct Host {
    pub(crate) servient: Arc<crate::core::Servient>,
    pub(crate) publisher: Arc<crate::td::TdPublisher>,
    tasks: std::sync::Mutex<std::collections::HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    pub(crate) ids: std::sync::Mutex<IdStore>,
}

impl Host {
    pub(crate) fn new(
        servient: Arc<crate::core::Servient>,
        publisher: Arc<crate::td::TdPublisher>,
        ids: IdStore,
    ) -> Self {
        Host {
            servient,
            publisher,
            tasks: Default::default(),
            ids: std::sync::Mutex::new(ids),
        }
    }

    fn tasks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<tokio::task::JoinHandle<()>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exposes a thing and starts its behaviours; a thing with the same slug is replaced: its
    /// behaviours stop, it is handed over to the new one in the core (values, subscriptions,
    /// action instances; see `core::thing`), and its cached TDs are dropped.
    pub(crate) fn add(&self, hosted: Hosted) {
        let slug = hosted.thing.slug.clone();
        // The old behaviours stop first, so they do not race the new ones; whatever they were
        // still doing is forwarded to the new thing by the core.
        if let Some(old) = self.tasks().remove(&slug) {
            old.iter().for_each(|t| t.abort());
        }
        self.servient.expose(hosted.thing.clone());
        self.publisher.invalidate(&slug);
        // Started once exposed: the new thing's first notifications continue the old one's
        // sequence.
        let started = hosted.behaviors.start(&hosted.thing);
        self.tasks().insert(slug, started);
    }

    pub(crate) fn remove(&self, slug: &str) {
        if let Some(old) = self.tasks().remove(slug) {
            old.iter().for_each(|t| t.abort());
        }
        self.servient.remove(slug);
        self.publisher.invalidate(slug);
    }

    /// Stops every behaviour (at shutdown).
    pub(crate) fn stop(&self) {
        for (_, tasks) in self.tasks().drain() {
            tasks.iter().for_each(|t| t.abort());
        }
    }

    /// Builds a thing from its definition with this host's ids and state.
    pub(crate) fn expose(&self, definition: ThingDefinition) -> Result<Hosted, Problem> {
        expose(
            definition,
            &mut self.ids.lock().unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub(crate) fn store(&self) -> Option<Arc<Store>> {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store()
            .cloned()
    }
}
