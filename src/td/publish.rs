//! TD publication: an exposed thing's model + the forms of every enabled binding → a W3C TD 1.1,
//! built through wot-td's typed model and serialised once per (thing, origins). Served bytes
//! come from the cache; nothing is rebuilt per request.
//!
//! A cached TD belongs to the very `ExposedThing` it was built from: a thing replaced under the
//! same slug (hot reload) never gets its predecessor's bytes, even from a request that fetched the
//! old thing before the replacement and built its TD after the invalidation.
//!
//! It must not know any binding's URL scheme: forms come from the [`FormProvider`]s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::forms::{Form, FormProvider, Origins, Thing};
use crate::core::ExposedThing;

pub(crate) const TD_CONTEXT: &str = "https://www.w3.org/2022/wot/td/v1.1";
/// The TD 1.0 context URI. Every TD starts `[TD_CONTEXT_1_0, TD_CONTEXT, ...]`, the order TD 1.1
/// gives for documents TD 1.0 consumers may read (`td-context-ns-td10-namespace`): node-wot 0.9
/// validates against a schema that wants the 1.0 URI first, and rejects a TD without it.
pub(crate) const TD_CONTEXT_1_0: &str = "https://www.w3.org/2019/wot/td/v1";
/// The media type of a TD.
pub const TD_MEDIA_TYPE: &str = "application/td+json";
/// The URI variable naming an action instance in query and cancel forms (`.../{actionID}`).
pub const ACTION_ID_VARIABLE: &str = "actionID";
/// Distinct origins cached per thing; beyond it TDs are built per request, so a client that
/// sends random Host headers costs CPU but never memory.
const MAX_CACHED_ORIGINS: usize = 16;

/// Builds and caches TDs.
pub struct TdPublisher {
    providers: Vec<Arc<dyn FormProvider>>,
    /// `securityDefinitions` and `security`: what the runtime enforces.
    security: (Value, Value),
    cache: RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Counts invalidations. A build stores its bytes only if no invalidation happened since
    /// its lookup missed: it may have been built from the thing just replaced.
    epoch: u64,
    things: HashMap<String, Built>,
}

/// The TDs of one thing, by origins.
struct Built {
    /// The thing they were built from. Weak, so a replaced thing is freed (and its subscribers'
    /// streams end) as usual; but its allocation stays while the entry does, so its address
    /// cannot be reused by a later thing that would then pass for it.
    from: Weak<ExposedThing>,
    tds: HashMap<Origins, Bytes>,
}

impl Built {
    fn is_of(&self, thing: &Arc<ExposedThing>) -> bool {
        std::ptr::eq(self.from.as_ptr(), Arc::as_ptr(thing))
    }
}

/// What a cache lookup found.
enum Lookup {
    Hit(Bytes),
    /// Not cached; a build may store its bytes if the epoch is still this one.
    Miss {
        epoch: u64,
    },
}

/// `securityDefinitions` and `security` when nothing is enforced.
pub(crate) fn nosec() -> (Value, Value) {
    (json!({"nosec_sc": {"scheme": "nosec"}}), json!("nosec_sc"))
}

impl TdPublisher {
    /// A publisher whose TDs carry the forms of `providers`, in this order, and no security
    /// (`nosec`) until [`TdPublisher::with_security`].
    pub fn new(providers: Vec<Arc<dyn FormProvider>>) -> Self {
        TdPublisher {
            providers,
            security: nosec(),
            cache: RwLock::default(),
        }
    }

    /// States the security the runtime enforces (default: nosec).
    pub fn with_security(mut self, definitions: Value, security: Value) -> Self {
        self.security = (definitions, security);
        self
    }

    /// The `securityDefinitions` and `security` every TD of this runtime carries.
    pub(crate) fn security(&self) -> (&Value, &Value) {
        (&self.security.0, &self.security.1)
    }

    /// The serialised TD of a thing for these origins.
    pub fn td_bytes(&self, thing: &Arc<ExposedThing>, origins: &Origins) -> Result<Bytes, BuildError> {
        let epoch = match self.lookup(thing, origins) {
            Lookup::Hit(bytes) => return Ok(bytes),
            Lookup::Miss { epoch } => epoch,
        };
        let bytes = self.serialise(thing, origins)?;
        self.store(thing, origins, epoch, bytes.clone());
        Ok(bytes)
    }

    /// Forgets the cached TDs of a thing (after it changed or went away), and keeps builds that
    /// are under way from storing theirs.
    pub fn invalidate(&self, slug: &str) {
        let mut cache = self.write();
        cache.epoch += 1;
        cache.things.remove(slug);
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, thing: &Arc<ExposedThing>, origins: &Origins) -> Lookup {
        let cache = self.read();
        let hit = cache
            .things
            .get(&thing.slug)
            .filter(|built| built.is_of(thing))
            .and_then(|built| built.tds.get(origins));
        match hit {
            Some(bytes) => Lookup::Hit(bytes.clone()),
            None => Lookup::Miss { epoch: cache.epoch },
        }
    }

    fn serialise(&self, thing: &ExposedThing, origins: &Origins) -> Result<Bytes, BuildError> {
        let td = self.build(thing, origins)?;
        Ok(Bytes::from(serde_json::to_vec(&td)?))
    }

    /// Caches a TD built after a lookup that missed at `epoch`, unless an invalidation came
    /// in between.
    fn store(&self, thing: &Arc<ExposedThing>, origins: &Origins, epoch: u64, bytes: Bytes) {
        let mut cache = self.write();
        if cache.epoch != epoch {
            return;
        }
        // TDs of things that are gone can never be served again; misses are rare enough to pay
        // for the sweep.
        cache.things.retain(|_, built| built.from.strong_count() > 0);
        let built = cache.things.entry(thing.slug.clone()).or_insert_with(|| Built {
            from: Arc::downgrade(thing),
            tds: HashMap::new(),
        });
        if !built.is_of(thing) {
            // Another thing under this slug since the last invalidation: a request that fetched
            // the old thing before it was replaced built its TD afterwards. Which of the two is
            // current cannot be told here, so the latest build wins; a lookup only ever answers
            // for the thing its entry was built from, so the current thing's next miss puts its
            // own TDs back.
            *built = Built {
                from: Arc::downgrade(thing),
                tds: HashMap::new(),
            };
        }
        if built.tds.len() < MAX_CACHED_ORIGINS {
            built.tds.insert(origins.clone(), bytes);
        }
    }

    /// The TD as JSON: the model with the members the runtime writes, checked as a TD by
    /// wot-td, with every binding's forms; members keep the model's order.
    pub fn build(&self, thing: &ExposedThing, origins: &Origins) -> Result<Value, BuildError> {
        let mut doc = thing.model();
        let root = doc.as_object_mut().ok_or(BuildError::NotAnObject)?;
        self.add_td_members(root, thing, origins);
        prepare_affordances(root, thing);
        let mut typed: Thing =
            serde_path_to_error::deserialize(doc.clone()).map_err(|e| BuildError::NotATd {
                slug: thing.slug.clone(),
                path: e.path().to_string(),
                source: e.into_inner(),
            })?;
        self.add_forms(&mut typed, thing, origins);
        let mut out = serde_json::to_value(&typed)?;
        order_like(&mut out, &doc, 0);
        Ok(out)
    }

    /// The members the runtime writes into every TD: `@context` (with the prefixes the
    /// bindings' forms need, then the thing file's own entries), `id`, the security, `base` and the bindings' profiles.
    fn add_td_members(&self, root: &mut Map<String, Value>, thing: &ExposedThing, origins: &Origins) {
        let mut context = vec![json!(TD_CONTEXT_1_0), json!(TD_CONTEXT)];
        let mut prefixes = Map::new();
        prefixes.insert("@language".into(), json!("en"));
        for provider in &self.providers {
            for (prefix, iri) in provider.context_prefixes() {
                prefixes.insert((*prefix).into(), json!(iri));
            }
        }
        // The thing file's own vocabularies (for its `@type` terms) come after the runtime's;
        // terms the runtime already maps to the same IRI are not repeated (a bridged remote's
        // TD carries the same `cov` and `@language` as ours).
        // The model's own `@context`, still in `root` until it is replaced below.
        if let Some(Value::Array(extra)) = root.get("@context").cloned() {
            let mut own = Vec::with_capacity(extra.len());
            for entry in extra {
                match entry {
                    Value::Object(terms) => {
                        let new: Map<String, Value> = terms
                            .iter()
                            .filter(|(term, iri)| prefixes.get(*term) != Some(iri))
                            .map(|(term, iri)| (term.clone(), iri.clone()))
                            .collect();
                        if !new.is_empty() {
                            own.push(Value::Object(new));
                        }
                    }
                    other => own.push(other),
                }
            }
            context.push(Value::Object(prefixes));
            context.extend(own);
        } else {
            context.push(Value::Object(prefixes));
        }
        root.insert("@context".into(), Value::Array(context));
        root.insert("id".into(), json!(thing.id));
        root.insert("securityDefinitions".into(), self.security.0.clone());
        root.insert("security".into(), self.security.1.clone());
        if let Some(http) = &origins.http {
            root.insert("base".into(), json!(format!("{http}/")));
        }
        let profiles: Vec<&str> = self
            .providers
            .iter()
            .flat_map(|p| p.profiles().iter().copied())
            .collect();
        if !profiles.is_empty() {
            root.insert("profile".into(), json!(profiles));
        }
    }

    /// Every provider's forms, for the thing and for each of its affordances.
    fn add_forms(&self, typed: &mut Thing, thing: &ExposedThing, origins: &Origins) {
        let mut thing_forms = Vec::new();
        for provider in &self.providers {
            provider.thing_forms(thing, origins, &mut thing_forms);
        }
        if !thing_forms.is_empty() {
            typed.forms = Some(thing_forms);
        }
        let fill = |forms: &mut Vec<Form>, f: &dyn Fn(&dyn FormProvider, &mut Vec<Form>)| {
            for provider in &self.providers {
                f(provider.as_ref(), forms);
            }
        };
        for (name, p) in typed.properties.iter_mut().flatten() {
            fill(&mut p.interaction.forms, &|b, out| {
                b.property_forms(thing, name, origins, out)
            });
        }
        for (name, a) in typed.actions.iter_mut().flatten() {
            fill(&mut a.interaction.forms, &|b, out| {
                b.action_forms(thing, name, origins, out)
            });
        }
        for (name, e) in typed.events.iter_mut().flatten() {
            fill(&mut e.interaction.forms, &|b, out| {
                b.event_forms(thing, name, origins, out)
            });
        }
    }
}

/// Every affordance needs a forms array before wot-td accepts it; actions also state
/// `synchronous` explicitly (WoT Profile invokeaction-24), and an asynchronous one declares the
/// URI variable its query and cancel forms address an instance by.
fn prepare_affordances(root: &mut Map<String, Value>, thing: &ExposedThing) {
    for kind in ["properties", "actions", "events"] {
        let Some(Value::Object(affordances)) = root.get_mut(kind) else {
            continue;
        };
        for (name, affordance) in affordances.iter_mut() {
            let Value::Object(a) = affordance else {
                continue;
            };
            a.insert("forms".into(), json!([]));
            if kind != "actions" {
                continue;
            }
            let sync = thing.actions.get(name).is_some_and(|x| x.synchronous);
            a.insert("synchronous".into(), json!(sync));
            if !sync {
                let vars = a.entry("uriVariables").or_insert_with(|| json!({}));
                if let Value::Object(vars) = vars {
                    vars.insert(
                        ACTION_ID_VARIABLE.into(),
                        json!({"type": "string", "format": "uuid"}),
                    );
                }
            }
        }
    }
}

/// wot-td keeps affordances in hash maps; put every object's keys back in the order the thing
/// file gave them, so a TD reads like its source and is identical from run to run. wot-td also
/// writes `readOnly: false` / `writeOnly: false` into every nested DataSchema; those defaults
/// are dropped below the affordance level (depth 3) to keep TDs small for constrained clients.
fn order_like(value: &mut Value, template: &Value, depth: usize) {
    let (Value::Object(map), Value::Object(tmpl)) = (value, template) else {
        return;
    };
    let mut old = std::mem::take(map);
    if depth > 2 {
        for key in ["readOnly", "writeOnly"] {
            if !tmpl.contains_key(key) && old.get(key) == Some(&Value::Bool(false)) {
                old.shift_remove(key);
            }
        }
    }
    for key in tmpl.keys() {
        if let Some(v) = old.shift_remove(key) {
            map.insert(key.clone(), v);
        }
    }
    let mut rest: Vec<(String, Value)> = old.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    map.extend(rest);
    for (key, v) in map.iter_mut() {
        if let Some(t) = tmpl.get(key) {
            order_like(v, t, depth + 1);
        }
    }
}

/// Why a TD could not be built from a thing's model.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model is not a JSON object.
    #[error("a thing model must be an object")]
    NotAnObject,
    /// wot-td refused the model with its forms: `path` is where, in the TD.
    #[error("the model of '{slug}' is not a TD at {path}: {source}")]
    NotATd {
        /// The thing.
        slug: String,
        /// Where in the TD.
        path: String,
        /// What wot-td said.
        source: serde_json::Error,
    },
    /// The typed TD did not serialise.
    #[error(transparent)]
    Serialize(#[from] serde_json::Error),
}

/// Serving a TD that cannot be built is the runtime's failure, not the client's: every binding
/// answers it as an internal error (500, 5.00), with the build error's message.
impl From<BuildError> for crate::core::Error {
    fn from(e: BuildError) -> Self {
        crate::core::Error::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::core::ThingBuilder;

    fn lamp(title: &str) -> Arc<ExposedThing> {
        ThingBuilder::new(
            "lamp",
            json!({"title": title, "properties": {"on": {"type": "boolean"}}}),
        )
        .id("urn:uuid:7f6c1a52-0000-4000-8000-000000000001")
        .build()
        .expect("a valid thing")
    }

    fn title(bytes: &Bytes) -> String {
        let td: Value = serde_json::from_slice(bytes).expect("a TD is JSON");
        td["title"].as_str().unwrap_or_default().to_owned()
    }

    fn here() -> Origins {
        Origins {
            http: Some("http://127.0.0.1:8080".into()),
            coap: None,
            coaps: None,
        }
    }

    fn cached_title(publisher: &TdPublisher, thing: &Arc<ExposedThing>, origins: &Origins) -> Option<String> {
        match publisher.lookup(thing, origins) {
            Lookup::Hit(bytes) => Some(title(&bytes)),
            Lookup::Miss { .. } => None,
        }
    }

    /// The reload race, step by step: a request misses with the old thing and builds its TD;
    /// the host replaces the thing and invalidates; then the build would be stored.
    #[test]
    fn a_build_that_overlaps_an_invalidation_is_not_stored() {
        let publisher = TdPublisher::new(Vec::new());
        let (v1, v2, origins) = (lamp("v1"), lamp("v2"), here());
        let Lookup::Miss { epoch } = publisher.lookup(&v1, &origins) else {
            panic!("nothing is cached yet");
        };
        let stale = publisher.serialise(&v1, &origins).expect("a TD");
        publisher.invalidate("lamp");
        publisher.store(&v1, &origins, epoch, stale.clone());
        // The request that built it still answers with it: its thing was current when it came.
        assert_eq!(title(&stale), "v1");
        assert_eq!(cached_title(&publisher, &v1, &origins), None);
        assert_eq!(title(&publisher.td_bytes(&v2, &origins).expect("a TD")), "v2");
        assert_eq!(cached_title(&publisher, &v2, &origins).as_deref(), Some("v2"));
    }

    /// A request that fetched the old thing before the replacement, but looks its TD up only
    /// after the invalidation: its build is stored, yet never answers for the new thing.
    #[test]
    fn a_td_answers_only_for_the_thing_it_was_built_from() {
        let publisher = TdPublisher::new(Vec::new());
        let (v1, v2, origins) = (lamp("v1"), lamp("v2"), here());
        publisher.td_bytes(&v1, &origins).expect("a TD");
        publisher.invalidate("lamp");
        assert_eq!(title(&publisher.td_bytes(&v1, &origins).expect("a TD")), "v1");
        assert_eq!(cached_title(&publisher, &v2, &origins), None);
        assert_eq!(title(&publisher.td_bytes(&v2, &origins).expect("a TD")), "v2");
        assert_eq!(cached_title(&publisher, &v2, &origins).as_deref(), Some("v2"));
        assert_eq!(cached_title(&publisher, &v1, &origins), None);
        // The same after a removal: TDs nobody can be served any more go at the next store.
        publisher.invalidate("lamp");
        publisher.td_bytes(&v2, &origins).expect("a TD");
        drop((v1, v2));
        let other = ThingBuilder::new("other", json!({"title": "other"}))
            .build()
            .expect("a valid thing");
        publisher.td_bytes(&other, &origins).expect("a TD");
        assert_eq!(publisher.read().things.keys().collect::<Vec<_>>(), ["other"]);
    }

    #[test]
    fn at_most_a_bounded_number_of_origins_is_cached_per_thing() {
        let publisher = TdPublisher::new(Vec::new());
        let thing = lamp("v1");
        let origins = |i: usize| Origins {
            http: Some(format!("http://host-{i}")),
            coap: None,
            coaps: None,
        };
        for i in 0..MAX_CACHED_ORIGINS + 4 {
            publisher.td_bytes(&thing, &origins(i)).expect("a TD");
        }
        let cached = (0..MAX_CACHED_ORIGINS + 4)
            .filter(|i| cached_title(&publisher, &thing, &origins(*i)).is_some())
            .count();
        assert_eq!(cached, MAX_CACHED_ORIGINS);
    }

    /// Threads serve the TD of whatever thing is current while it is replaced over and over.
    /// After each replacement, once every thread has finished a request that began after it,
    /// the current thing's TD must be its own.
    #[test]
    fn replacing_a_thing_while_its_td_is_served_never_leaves_the_old_td_cached() {
        const THREADS: usize = 3;
        const ROUNDS: u64 = 200;
        let publisher = TdPublisher::new(Vec::new());
        let origins = here();
        let current = RwLock::new(lamp("v0"));
        let round = AtomicU64::new(0);
        let finished: Vec<AtomicU64> = (0..THREADS).map(|_| AtomicU64::new(0)).collect();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for done in &finished {
                let (publisher, origins, current, round, stop) =
                    (&publisher, &origins, &current, &round, &stop);
                s.spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let started = round.load(Ordering::Acquire);
                        let thing = current.read().unwrap_or_else(|p| p.into_inner()).clone();
                        publisher.td_bytes(&thing, origins).expect("a TD");
                        done.store(started, Ordering::Release);
                    }
                });
            }
            for n in 1..=ROUNDS {
                let thing = lamp(&format!("v{n}"));
                *current.write().unwrap_or_else(|p| p.into_inner()) = thing.clone();
                publisher.invalidate("lamp");
                round.store(n, Ordering::Release);
                while finished.iter().any(|done| done.load(Ordering::Acquire) < n) {
                    std::thread::yield_now();
                }
                let served = publisher.td_bytes(&thing, &origins).expect("a TD");
                if title(&served) != format!("v{n}") {
                    stop.store(true, Ordering::Release);
                    panic!("round {n} served the TD of {}", title(&served));
                }
            }
            stop.store(true, Ordering::Release);
        });
    }
}
