//! An exposed thing: its properties (current value kept next to its serialised bytes), its
//! actions (handlers + registry) and its events, plus the hub that tells subscribers about
//! changes. Also the builder that the library API and the things/ loader both use.
//!
//! The thing's descriptive model (the TD without forms) is carried as opaque JSON for the `td`
//! module; this module only reads the DataSchemas out of it. No protocol type appears here.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::actions::{ActionLimits, ActionRegistry, ActionStatus, Failure};
use super::error::{Error, SchemaViolation};
use super::events::{EventHub, Subscription, Target, Topic};
use super::schema::DataSchema;
use super::store::Persistence;
use tokio::sync::oneshot;

/// What an action handler returns: its output (if any) or an error.
pub type ActionFuture = Pin<Box<dyn Future<Output = Result<Option<Value>, Error>> + Send>>;
/// An action's behaviour. It gets the (validated) input and the thing it acts on.
pub type ActionHandler = Arc<dyn Fn(ActionContext) -> ActionFuture + Send + Sync>;

/// Handed to an action handler.
pub struct ActionContext {
    pub input: Option<Value>,
    pub thing: Arc<ExposedThing>,
}

#[derive(Debug)]
struct Stored {
    value: Value,
    bytes: Bytes,
}

/// One property: its schema and its current value.
#[derive(Debug)]
pub struct Property {
    pub name: Arc<str>,
    pub schema: DataSchema,
    pub read_only: bool,
    pub write_only: bool,
    pub observable: bool,
    /// Written values go through the thing's persistence (client-writable properties).
    pub durable: bool,
    current: RwLock<Stored>,
}

impl Property {
    fn stored(&self) -> std::sync::RwLockReadGuard<'_, Stored> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The serialised current value (what a read returns), with nested writeOnly members hidden.
    pub fn bytes(&self) -> Bytes {
        self.stored().bytes.clone()
    }

    pub fn value(&self) -> Value {
        self.stored().value.clone()
    }

    /// Stores a value that already passed validation; returns the serialised form.
    fn store(&self, value: Value) -> Bytes {
        let mut visible = value.clone();
        if self.schema.has_write_only_members() {
            self.schema.strip_write_only(&mut visible);
        }
        let bytes = Bytes::from(serde_json::to_vec(&visible).unwrap_or_default());
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        guard.value = value;
        guard.bytes = bytes.clone();
        bytes
    }
}

pub struct Action {
    pub name: Arc<str>,
    pub input: Option<DataSchema>,
    pub output: Option<DataSchema>,
    pub synchronous: bool,
    handler: ActionHandler,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("name", &self.name)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

#[derive(Debug)]
pub struct Event {
    pub name: Arc<str>,
    pub data: Option<DataSchema>,
}

/// A thing served by the runtime.
#[derive(Debug)]
pub struct ExposedThing {
    /// URL slug (file name in things/).
    pub slug: String,
    /// Stable `urn:uuid:` identifier.
    pub id: String,
    /// The TD without forms, security, base or id: what the `td` module publishes from.
    pub model: Value,
    pub properties: IndexMap<String, Property>,
    pub actions: IndexMap<String, Action>,
    pub events: IndexMap<String, Event>,
    hub: EventHub,
    registry: ActionRegistry,
    persistence: Option<Arc<dyn Persistence>>,
}

impl ExposedThing {
    pub fn title(&self) -> &str {
        self.model
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or(&self.slug)
    }

    pub fn property(&self, name: &str) -> Result<&Property, Error> {
        self.properties
            .get(name)
            .ok_or_else(|| Error::property_not_found(name))
    }

    pub fn action(&self, name: &str) -> Result<&Action, Error> {
        self.actions
            .get(name)
            .ok_or_else(|| Error::action_not_found(name))
    }

    pub fn event(&self, name: &str) -> Result<&Event, Error> {
        self.events.get(name).ok_or_else(|| Error::event_not_found(name))
    }

    /// readproperty: the serialised value.
    pub fn read_property(&self, name: &str) -> Result<Bytes, Error> {
        let property = self.property(name)?;
        if property.write_only {
            return Err(Error::WriteOnly(name.into()));
        }
        Ok(property.bytes())
    }

    /// readallproperties / readmultipleproperties: an object of the readable properties,
    /// assembled from the stored bytes without re-serialising any value.
    pub fn read_properties<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<Bytes, Error> {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        let mut first = true;
        for name in names {
            let property = self.property(name)?;
            if property.write_only {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // A property name serialises as a JSON string; this cannot fail.
            serde_json::to_writer(&mut out, name).map_err(|e| Error::Internal(e.to_string()))?;
            out.push(b':');
            out.extend_from_slice(&property.bytes());
        }
        out.push(b'}');
        Ok(Bytes::from(out))
    }

    pub fn read_all_properties(&self) -> Result<Bytes, Error> {
        self.read_properties(self.properties.keys().map(String::as_str))
    }

    /// writeproperty from a client: checks readOnly and the schema, then stores (durably when
    /// the thing persists) and notifies. Returns once readers see the new value.
    pub async fn write_property(self: &Arc<Self>, name: &str, value: Value) -> Result<(), Error> {
        let property = self.property(name)?;
        if property.read_only {
            return Err(Error::ReadOnly(name.into()));
        }
        let value = property.schema.check_write(value)?;
        self.apply(vec![(property.name.clone(), value)]).await
    }

    /// writemultipleproperties: every value is checked before any is stored, so a rejected
    /// request changes nothing; the accepted ones are stored in one batch.
    pub async fn write_properties(self: &Arc<Self>, values: Map<String, Value>) -> Result<(), Error> {
        let mut checked = Vec::with_capacity(values.len());
        for (name, value) in values {
            let property = self.property(&name)?;
            if property.read_only {
                return Err(Error::ReadOnly(name));
            }
            let value = property
                .schema
                .check_write(value)
                .map_err(|e| prefix_pointer(e, &name))?;
            checked.push((property.name.clone(), value));
        }
        self.apply(checked).await
    }

    /// Sets a property from inside the thing (an action's effect) and waits until readers see it.
    /// readOnly does not apply; the schema still does.
    pub async fn set_property(self: &Arc<Self>, name: &str, value: Value) -> Result<(), Error> {
        let (property, value) = self.internal_value(name, value)?;
        self.apply(vec![(property, value)]).await
    }

    /// Sets a property from inside the thing without waiting (a sensor reading). readOnly does
    /// not apply; the schema still does, so a bad reading never becomes visible. An unchanged
    /// value is not a change.
    pub fn update_property(self: &Arc<Self>, name: &str, value: Value) -> Result<(), Error> {
        let (property, value) = self.internal_value(name, value)?;
        if self
            .properties
            .get(&*property)
            .is_some_and(|p| p.stored().value == value)
        {
            return Ok(());
        }
        // Durable values apply once stored; the caller does not wait for that.
        drop(self.queue(vec![(property, value)]));
        Ok(())
    }

    fn internal_value(&self, name: &str, value: Value) -> Result<(Arc<str>, Value), Error> {
        let property = self.property(name)?;
        if !property.schema.is_valid(&value) {
            return Err(Error::Internal(format!(
                "value {value} for '{name}' violates its schema"
            )));
        }
        Ok((property.name.clone(), property.schema.normalise(value)))
    }

    /// Stores values (durable ones through the persistence, applied after their commit) and
    /// notifies. `None` when everything was applied at once.
    fn queue(
        self: &Arc<Self>,
        values: Vec<(Arc<str>, Value)>,
    ) -> Option<oneshot::Receiver<Result<(), super::store::PersistError>>> {
        let durable: Vec<(Arc<str>, Bytes)> = values
            .iter()
            .filter(|(name, _)| self.properties.get(&**name).is_some_and(|p| p.durable))
            .map(|(name, value)| {
                (
                    name.clone(),
                    Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
                )
            })
            .collect();
        match &self.persistence {
            Some(persistence) if !durable.is_empty() => {
                let thing = self.clone();
                Some(persistence.persist(&self.id, durable, Box::new(move || thing.commit_all(values))))
            }
            _ => {
                self.commit_all(values);
                None
            }
        }
    }

    async fn apply(self: &Arc<Self>, values: Vec<(Arc<str>, Value)>) -> Result<(), Error> {
        if let Some(stored) = self.queue(values) {
            stored
                .await
                .map_err(|_| Error::Internal("the state store stopped".into()))?
                .map_err(|e| Error::Internal(format!("the value could not be stored: {e}")))?;
        }
        Ok(())
    }

    fn commit_all(&self, values: Vec<(Arc<str>, Value)>) {
        for (name, value) in values {
            if let Some(property) = self.properties.get(&*name) {
                let bytes = property.store(value);
                self.hub.publish(Topic::Property(property.name.clone()), bytes);
            }
        }
    }

    /// Emits an event with the given data (validated against the event's data schema).
    pub fn emit_event(&self, name: &str, data: Option<Value>) -> Result<(), Error> {
        let event = self.event(name)?;
        let bytes = match (&data, &event.data) {
            (None, _) => Bytes::new(),
            (Some(value), schema) => {
                if let Some(schema) = schema
                    && !schema.is_valid(value)
                {
                    return Err(Error::Internal(format!(
                        "data {value} for event '{name}' violates its schema"
                    )));
                }
                Bytes::from(serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?)
            }
        };
        self.hub.publish(Topic::Event(event.name.clone()), bytes);
        Ok(())
    }

    pub fn subscribe(&self, target: Target) -> Result<Subscription, Error> {
        self.subscribe_after(target, None)
    }

    /// Subscribes; with `last_id` (the timestamp of the last notification a client saw), the
    /// recent notifications after it are replayed first.
    pub fn subscribe_after(&self, target: Target, last_id: Option<&str>) -> Result<Subscription, Error> {
        match &target {
            Target::Property(name) if self.property(name)?.write_only => {
                return Err(Error::WriteOnly(name.clone()));
            }
            Target::Event(name) => {
                self.event(name)?;
            }
            Target::Action { name, id } => {
                self.action_status(name, id)?;
            }
            _ => {}
        }
        Ok(match last_id {
            Some(id) => self.hub.subscribe_after(target, id),
            None => self.hub.subscribe(target),
        })
    }

    pub fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }

    /// How many notifications a subscriber may fall behind before it lags.
    pub fn notification_capacity(&self) -> usize {
        self.hub.capacity()
    }

    /// The sequence number of the latest notification (see [`EventHub::last_seq`]).
    pub fn last_notification_seq(&self) -> u64 {
        self.hub.last_seq()
    }

    /// Validates an action's input against its schema (or that it has none).
    fn check_input(&self, action: &Action, input: Option<Value>) -> Result<Option<Value>, Error> {
        match (&action.input, input) {
            (None, Some(Value::Null) | None) => Ok(None),
            (None, Some(_)) => Err(Error::UnexpectedInput(action.name.to_string())),
            (Some(schema), Some(value)) => schema.check_write(value).map(Some),
            (Some(schema), None) => schema.check_write(Value::Null).map(Some),
        }
    }

    /// Validates an action's input without running it, for bindings that accept an action
    /// into a queue and must refuse bad input before answering.
    pub fn check_action_input(&self, name: &str, input: Option<Value>) -> Result<Option<Value>, Error> {
        let action = self.action(name)?;
        self.check_input(action, input)
    }

    /// Runs a synchronous action to its end and returns its output.
    pub async fn invoke_sync(
        self: &Arc<Self>,
        name: &str,
        input: Option<Value>,
    ) -> Result<Option<Value>, Error> {
        let action = self.action(name)?;
        let input = self.check_input(action, input)?;
        let handler = action.handler.clone();
        handler(ActionContext {
            input,
            thing: self.clone(),
        })
        .await
    }

    /// Starts an asynchronous action; returns its pending status at once.
    pub fn invoke_async(self: &Arc<Self>, name: &str, input: Option<Value>) -> Result<ActionStatus, Error> {
        let action = self.action(name)?;
        let input = self.check_input(action, input)?;
        let status = self.registry.create(&action.name)?;
        let handler = action.handler.clone();
        let thing = self.clone();
        let id = status.id.clone();
        let task = tokio::spawn(async move {
            if let Some(running) = thing.registry.start(&id) {
                thing.publish_status(&running);
            } else {
                return;
            }
            let result = handler(ActionContext {
                input,
                thing: thing.clone(),
            })
            .await;
            let result = result.map_err(|e| Failure::from_error(&e));
            if let Some(done) = thing.registry.finish(&id, result) {
                thing.publish_status(&done);
            }
        });
        self.registry.attach_abort(&status.id, task.abort_handle());
        Ok(status)
    }

    pub fn action_status(&self, name: &str, id: &str) -> Result<ActionStatus, Error> {
        let action = self.action(name)?;
        if action.synchronous {
            return Err(Error::NotQueryable(name.into()));
        }
        self.registry.get(name, id)
    }

    pub fn cancel_action(&self, name: &str, id: &str) -> Result<ActionStatus, Error> {
        let action = self.action(name)?;
        if action.synchronous {
            return Err(Error::NotQueryable(name.into()));
        }
        let status = self.registry.cancel(name, id)?;
        self.publish_status(&status);
        Ok(status)
    }

    /// Every known action instance, grouped by action name, newest first.
    pub fn all_action_statuses(&self) -> IndexMap<String, Vec<ActionStatus>> {
        let mut grouped: IndexMap<String, Vec<ActionStatus>> = self
            .actions
            .values()
            .filter(|a| !a.synchronous)
            .map(|a| (a.name.to_string(), Vec::new()))
            .collect();
        for status in self.registry.all() {
            grouped.entry(status.action.to_string()).or_default().push(status);
        }
        grouped
    }

    fn publish_status(&self, status: &ActionStatus) {
        let bytes = Bytes::from(serde_json::to_vec(&status.to_json(None)).unwrap_or_default());
        self.hub.publish(
            Topic::Action {
                name: status.action.clone(),
                id: status.id.clone(),
            },
            bytes,
        );
    }
}

fn prefix_pointer(error: Error, name: &str) -> Error {
    match error {
        Error::Schema(mut v) => {
            v.pointer = format!("/{}{}", super::schema::escape_pointer(name), v.pointer);
            Error::Schema(v)
        }
        other => other,
    }
}

/// Builds an [`ExposedThing`] from a TD-shaped model (no forms needed) and handlers.
pub struct ThingBuilder {
    slug: String,
    id: String,
    model: Value,
    handlers: IndexMap<String, ActionHandler>,
    limits: ActionLimits,
    hub_capacity: usize,
    persistence: Option<Arc<dyn Persistence>>,
}

impl ThingBuilder {
    /// `model` is a TD without forms: title, properties, actions, events with DataSchemas.
    pub fn new(slug: impl Into<String>, model: Value) -> Self {
        let slug = slug.into();
        ThingBuilder {
            id: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            slug,
            model,
            handlers: IndexMap::new(),
            limits: ActionLimits::default(),
            hub_capacity: 1024,
            persistence: None,
        }
    }

    /// Makes the client-writable properties durable: their stored values are restored now
    /// (a value that no longer fits the schema falls back to the default, with a warning) and
    /// every write is acknowledged only once stored.
    pub fn persistence(mut self, persistence: Arc<dyn Persistence>) -> Self {
        self.persistence = Some(persistence);
        self
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn action_limits(mut self, limits: ActionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How many notifications a subscriber may fall behind before it lags.
    pub fn notification_capacity(mut self, capacity: usize) -> Self {
        self.hub_capacity = capacity;
        self
    }

    /// Sets the behaviour of an action.
    pub fn on_action<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, Error>> + Send + 'static,
    {
        self.handlers
            .insert(name.to_owned(), Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    pub fn on_action_handler(mut self, name: &str, handler: ActionHandler) -> Self {
        self.handlers.insert(name.to_owned(), handler);
        self
    }

    /// Fails with the JSON pointer (into the model) of a DataSchema that does not compile, or of
    /// a handler given for an action the model lacks.
    pub fn build(mut self) -> Result<Arc<ExposedThing>, SchemaViolation> {
        let at = |prefix: String| {
            move |mut v: SchemaViolation| {
                v.pointer = format!("{prefix}{}", v.pointer);
                v
            }
        };
        let mut properties = IndexMap::new();
        for (name, affordance) in affordances(&self.model, "properties") {
            let schema = DataSchema::compile(affordance).map_err(at(format!("/properties/{name}")))?;
            let flag = |key: &str| affordance.get(key).and_then(Value::as_bool).unwrap_or(false);
            let initial = affordance
                .get("default")
                .cloned()
                .or_else(|| zero_value(affordance))
                .unwrap_or(Value::Null);
            let read_only = flag("readOnly");
            let restored = match (&self.persistence, read_only) {
                (Some(p), false) => p.load(&self.id, name).and_then(|bytes| {
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(v) if schema.is_valid(&v) => Some(v),
                        Ok(v) => {
                            tracing::warn!(thing = %self.slug, property = %name,
                                "stored value {v} no longer fits the schema; using the default");
                            None
                        }
                        Err(e) => {
                            tracing::warn!(thing = %self.slug, property = %name, "stored value unreadable: {e}");
                            None
                        }
                    }
                }),
                _ => None,
            };
            let initial = restored.unwrap_or(initial);
            let property = Property {
                name: name.as_str().into(),
                read_only,
                write_only: flag("writeOnly"),
                observable: flag("observable"),
                durable: !read_only,
                current: RwLock::new(Stored {
                    value: Value::Null,
                    bytes: Bytes::from_static(b"null"),
                }),
                schema,
            };
            let initial = property.schema.normalise(initial);
            property.store(initial);
            properties.insert(name.clone(), property);
        }
        let mut actions = IndexMap::new();
        for (name, affordance) in affordances(&self.model, "actions") {
            let compile = |key: &str| -> Result<Option<DataSchema>, SchemaViolation> {
                affordance
                    .get(key)
                    .map(|s| DataSchema::compile(s).map_err(at(format!("/actions/{name}/{key}"))))
                    .transpose()
            };
            let handler = self.handlers.shift_remove(name).unwrap_or_else(|| {
                let name = name.clone();
                Arc::new(move |_| {
                    let name = name.clone();
                    Box::pin(
                        async move { Err(Error::ActionFailed(format!("action '{name}' has no behaviour"))) },
                    )
                })
            });
            actions.insert(
                name.clone(),
                Action {
                    name: name.as_str().into(),
                    input: compile("input")?,
                    output: compile("output")?,
                    synchronous: affordance
                        .get("synchronous")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    handler,
                },
            );
        }
        if let Some(orphan) = self.handlers.keys().next() {
            return Err(SchemaViolation {
                pointer: format!("/actions/{orphan}"),
                rule: "handler".into(),
                message: format!("a handler was given for '{orphan}', which is not an action of the thing"),
            });
        }
        let mut events = IndexMap::new();
        for (name, affordance) in affordances(&self.model, "events") {
            let data = affordance
                .get("data")
                .map(|s| DataSchema::compile(s).map_err(at(format!("/events/{name}/data"))))
                .transpose()?;
            events.insert(
                name.clone(),
                Event {
                    name: name.as_str().into(),
                    data,
                },
            );
        }
        Ok(Arc::new(ExposedThing {
            slug: self.slug,
            id: self.id,
            model: self.model,
            properties,
            actions,
            events,
            hub: EventHub::new(self.hub_capacity),
            registry: ActionRegistry::new(self.limits),
            persistence: self.persistence,
        }))
    }
}

fn affordances<'a>(model: &'a Value, kind: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    model
        .get(kind)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
}

/// A starting value for a property without a `default`, so reads never return `null` for a
/// schema that does not allow it.
fn zero_value(schema: &Value) -> Option<Value> {
    if let Some(c) = schema.get("const") {
        return Some(c.clone());
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return Some(first.clone());
    }
    let minimum = schema.get("minimum").cloned();
    Some(match schema.get("type").and_then(Value::as_str)? {
        "boolean" => Value::Bool(false),
        "integer" | "number" => minimum.unwrap_or(Value::from(0)),
        "string" => Value::String(String::new()),
        "array" => Value::Array(Vec::new()),
        "object" => Value::Object(Map::new()),
        _ => Value::Null,
    })
}
