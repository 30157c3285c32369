//! TD publication: an exposed thing's model + the forms of every enabled binding → a W3C TD 1.1,
//! built through wot-td's typed model and serialised once per (thing, origins). Served bytes
//! come from the cache; nothing is rebuilt per request.
//!
//! It must not know any binding's URL scheme: forms come from the [`FormProvider`]s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::forms::{Form, FormProvider, Origins, Thing};
use crate::core::ExposedThing;

pub const TD_CONTEXT: &str = "https://www.w3.org/2022/wot/td/v1.1";
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
    cache: RwLock<HashMap<(String, Origins), Bytes>>,
}

/// `securityDefinitions` and `security` when nothing is enforced.
pub fn nosec() -> (Value, Value) {
    (json!({"nosec_sc": {"scheme": "nosec"}}), json!("nosec_sc"))
}

impl TdPublisher {
    pub fn new(providers: Vec<Arc<dyn FormProvider>>) -> Self {
        TdPublisher {
            providers,
            security: nosec(),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// States the security the runtime enforces (default: nosec).
    pub fn with_security(mut self, definitions: Value, security: Value) -> Self {
        self.security = (definitions, security);
        self
    }

    /// The `securityDefinitions` and `security` every TD of this runtime carries.
    pub fn security(&self) -> (&Value, &Value) {
        (&self.security.0, &self.security.1)
    }

    /// The serialised TD of a thing for these origins.
    pub fn td_bytes(&self, thing: &ExposedThing, origins: &Origins) -> Result<Bytes, BuildError> {
        let key = (thing.slug.clone(), origins.clone());
        if let Some(bytes) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(bytes.clone());
        }
        let td = self.build(thing, origins)?;
        let bytes = Bytes::from(serde_json::to_vec(&td)?);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let cached_for_thing = cache.keys().filter(|(slug, _)| slug == &thing.slug).count();
        if cached_for_thing < MAX_CACHED_ORIGINS {
            cache.insert(key, bytes.clone());
        }
        Ok(bytes)
    }

    /// Forgets the cached TDs of a thing (after it changed or went away).
    pub fn invalidate(&self, slug: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| s != slug);
    }

    /// The TD as JSON.
    pub fn build(&self, thing: &ExposedThing, origins: &Origins) -> Result<Value, BuildError> {
        let mut doc = thing.model.clone();
        let root = doc.as_object_mut().ok_or(BuildError::NotAnObject)?;
        let mut context = vec![json!(TD_CONTEXT)];
        let mut prefixes = Map::new();
        prefixes.insert("@language".into(), json!("en"));
        for provider in &self.providers {
            for (prefix, iri) in provider.context_prefixes() {
                prefixes.insert((*prefix).into(), json!(iri));
            }
        }
        context.push(Value::Object(prefixes));
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
        // Every affordance needs a forms array before wot-td accepts it; actions also state
        // `synchronous` explicitly (WoT Profile invokeaction-24).
        for kind in ["properties", "actions", "events"] {
            if let Some(Value::Object(affordances)) = root.get_mut(kind) {
                for (name, affordance) in affordances.iter_mut() {
                    if let Value::Object(a) = affordance {
                        a.insert("forms".into(), json!([]));
                        if kind == "actions" {
                            let sync = thing.actions.get(name).is_some_and(|x| x.synchronous);
                            a.insert("synchronous".into(), json!(sync));
                            if !sync {
                                // Query and cancel forms address one instance by this variable.
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
            }
        }
        let mut typed: Thing =
            serde_path_to_error::deserialize(doc.clone()).map_err(|e| BuildError::NotATd {
                slug: thing.slug.clone(),
                path: e.path().to_string(),
                source: e.into_inner(),
            })?;
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
        let mut out = serde_json::to_value(&typed)?;
        order_like(&mut out, &doc, 0);
        Ok(out)
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
    #[error("a thing model must be an object")]
    NotAnObject,
    /// wot-td refused the model with its forms: `path` is where, in the TD.
    #[error("the model of '{slug}' is not a TD at {path}: {source}")]
    NotATd {
        slug: String,
        path: String,
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
