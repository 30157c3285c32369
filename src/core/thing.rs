//! An exposed thing: its properties (current value kept next to its serialised bytes), its
//! actions (handlers + registry) and its events, plus the hub that tells subscribers about
//! changes. Also the builder that the library API and the things/ loader both use.
//!
//! The thing's descriptive model (the TD without forms) is carried as opaque JSON for the `td`
//! module; this module only reads the DataSchemas out of it. No protocol type appears here.
//! The model is kept as compact JSON text, not as a value tree: it is read only when a TD or a
//! description is built (both cached) and at reload, never per request, and as a tree of maps
//! and strings it was half of an idle thing's memory (4.8 KB of a lamp's 9.8 KB).
//!
//! Replacement (hot reload): [`Servient::expose`](super::Servient::expose) hands a replaced thing
//! over to its successor (`hand_over`): writable values carry over, the successor continues the
//! event sequence and shares the action registry, and from then on the old thing *forwards*:
//! a write, invocation, emission or status change that reaches it (from a caller that still
//! holds it, or one that was in flight) is applied to the successor or refused with an error,
//! never acknowledged and lost. A removed thing refuses everything.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::actions::{ActionLimits, ActionRegistry, ActionStatus, Failure};
use super::error::{Error, SchemaViolation};
use super::events::{Continues, Ended, EventHub, SeenUpTo, Subscription, Target, Topic};
use super::remote::Remote;
use super::schema::DataSchema;
use super::store::Persistence;
use tokio::sync::oneshot;

/// What an action handler returns: its output (if any) or an error.
pub type ActionFuture = Pin<Box<dyn Future<Output = Result<Option<Value>, Error>> + Send>>;
/// An action's behaviour. It gets the (validated) input and the thing it acts on.
pub type ActionHandler = Arc<dyn Fn(ActionContext) -> ActionFuture + Send + Sync>;

/// Handed to an action handler.
pub struct ActionContext {
    /// The invocation's input, validated against the action's input schema.
    pub input: Option<Value>,
    /// The thing the action belongs to (after a reload: the one serving now, through forwarding).
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
    /// The property's name.
    pub name: Arc<str>,
    /// Its DataSchema, compiled.
    pub schema: DataSchema,
    /// `readOnly`: clients cannot write it (the thing's own behaviours can).
    pub read_only: bool,
    /// `writeOnly`: clients cannot read or observe it.
    pub write_only: bool,
    /// `observable` in the TD.
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

    /// The current value.
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

/// One action: its schemas, whether it is synchronous, and its handler.
pub struct Action {
    /// The action's name.
    pub name: Arc<str>,
    /// The input schema, if it takes input.
    pub input: Option<DataSchema>,
    /// The output schema, if it declares one.
    pub output: Option<DataSchema>,
    /// Whether an invocation answers with the output (else with a status to query).
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

/// One event and the schema of its data.
#[derive(Debug)]
pub struct Event {
    /// The event's name.
    pub name: Arc<str>,
    /// The data schema, if the event carries data.
    pub data: Option<DataSchema>,
}

/// A thing served by the runtime.
#[derive(Debug)]
pub struct ExposedThing {
    /// URL slug (file name in things/).
    pub slug: String,
    /// Stable `urn:uuid:` identifier.
    pub id: String,
    /// The TD without forms, security, base or id, as compact JSON text: see [`Self::model`].
    model: Box<str>,
    /// The model's `title` (the slug when it has none).
    title: Box<str>,
    /// The properties, in the model's order.
    pub properties: IndexMap<String, Property>,
    /// The actions, in the model's order.
    pub actions: IndexMap<String, Action>,
    /// The events, in the model's order.
    pub events: IndexMap<String, Event>,
    hub: Arc<EventHub>,
    /// Shared with the things that replace this one, so that instances outlive a reload.
    registry: RwLock<Arc<ActionRegistry>>,
    persistence: Option<Arc<dyn Persistence>>,
    /// Where a proxied thing's reads and writes go (None: its values are its own).
    remote: Option<Arc<dyn Remote>>,
    /// Whether this thing still serves, and where to forward once it does not. Changes (read)
    /// are applied under the read lock; the hand-over takes the write lock, so a change is
    /// either in the values handed over or forwarded, never in between.
    lifecycle: RwLock<Lifecycle>,
}

/// Where a thing stands.
#[derive(Debug, Clone)]
enum Lifecycle {
    Serving,
    /// Replaced by this thing (hot reload): everything is forwarded to it.
    Replaced(Arc<ExposedThing>),
    /// Taken away: everything is refused.
    Removed,
}

/// What became of values handed to `queue`.
enum Queued {
    /// Applied (or refused) at once.
    Applied(Result<(), Error>),
    /// On their way to the store; `applied` holds the outcome of applying them once stored.
    Storing {
        stored: oneshot::Receiver<Result<(), super::store::PersistError>>,
        applied: Arc<OnceLock<Result<(), Error>>>,
    },
}

/// Who asked for a change of values: a client is subject to `readOnly`, the thing itself is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Client,
    Thing,
}

impl ExposedThing {
    fn lifecycle(&self) -> std::sync::RwLockReadGuard<'_, Lifecycle> {
        self.lifecycle.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The thing that serves in this one's place now: `None` while this one serves.
    fn forward_to(&self) -> Option<Result<Arc<ExposedThing>, Error>> {
        match &*self.lifecycle() {
            Lifecycle::Serving => None,
            Lifecycle::Replaced(next) => Some(Ok(next.clone())),
            Lifecycle::Removed => Some(Err(Error::ThingNotFound(self.slug.clone()))),
        }
    }

    /// Whether this thing still serves (it was neither replaced nor removed).
    pub fn is_serving(&self) -> bool {
        matches!(&*self.lifecycle(), Lifecycle::Serving)
    }

    /// `None` while this thing serves; else whether it was replaced (`Changed`) or removed.
    pub(crate) fn standing(&self) -> Option<Ended> {
        match &*self.lifecycle() {
            Lifecycle::Serving => None,
            Lifecycle::Replaced(_) => Some(Ended::Changed),
            Lifecycle::Removed => Some(Ended::Removed),
        }
    }

    fn registry(&self) -> Arc<ActionRegistry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The model's `title` (the slug when it has none).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The TD without forms, security, base or id: what the `td` module publishes from. Parsed
    /// from the text kept (a few microseconds): callers build something they cache from it.
    pub fn model(&self) -> Value {
        // The text is serde_json's own serialisation of a value: it always parses back.
        serde_json::from_str(&self.model).unwrap_or(Value::Null)
    }

    /// The property `name`.
    pub fn property(&self, name: &str) -> Result<&Property, Error> {
        self.properties
            .get(name)
            .ok_or_else(|| Error::property_not_found(name))
    }

    /// The action `name`.
    pub fn action(&self, name: &str) -> Result<&Action, Error> {
        self.actions
            .get(name)
            .ok_or_else(|| Error::action_not_found(name))
    }

    /// The event `name`.
    pub fn event(&self, name: &str) -> Result<&Event, Error> {
        self.events.get(name).ok_or_else(|| Error::event_not_found(name))
    }

    /// readproperty: the serialised value.
    pub fn read_property(&self, name: &str) -> Result<Bytes, Error> {
        Ok(self.readable(name)?.bytes())
    }

    /// The property `name`, if a client may read it.
    pub(crate) fn readable(&self, name: &str) -> Result<&Property, Error> {
        let property = self.property(name)?;
        if property.write_only {
            return Err(Error::WriteOnly(name.into()));
        }
        Ok(property)
    }

    /// A client's value for property `name`, checked (readOnly, schema) and normalised.
    pub(crate) fn client_value(&self, name: &str, value: Value) -> Result<(Arc<str>, Value), Error> {
        let property = self.property(name)?;
        if property.read_only {
            return Err(Error::ReadOnly(name.into()));
        }
        Ok((property.name.clone(), property.schema.check_write(value)?))
    }

    /// Where this thing's reads and writes go when it is a proxy.
    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref()
    }

    /// readallproperties / readmultipleproperties: an object of the readable properties,
    /// assembled from the stored bytes without re-serialising any value.
    pub(crate) fn read_properties<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Bytes, Error> {
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

    /// readallproperties: an object of every readable property.
    pub fn read_all_properties(&self) -> Result<Bytes, Error> {
        self.read_properties(self.properties.keys().map(String::as_str))
    }

    /// writeproperty from a client: checks readOnly and the schema, then stores (durably when
    /// the thing persists) and notifies. Returns once readers see the new value.
    pub async fn write_property(self: &Arc<Self>, name: &str, value: Value) -> Result<(), Error> {
        let checked = self.client_value(name, value)?;
        self.apply(vec![checked], Writer::Client).await
    }

    /// writemultipleproperties: every value is checked before any is stored, so a rejected
    /// request changes nothing; the accepted ones are stored in one batch.
    pub(crate) async fn write_properties(self: &Arc<Self>, values: Map<String, Value>) -> Result<(), Error> {
        let checked = self.client_values(values)?;
        self.apply(checked, Writer::Client).await
    }

    /// Every value of a writemultipleproperties, checked as [`Self::client_value`] does, before
    /// any is used.
    pub(crate) fn client_values(&self, values: Map<String, Value>) -> Result<Vec<(Arc<str>, Value)>, Error> {
        let mut checked = Vec::with_capacity(values.len());
        for (name, value) in values {
            let value = self
                .client_value(&name, value)
                .map_err(|e| prefix_pointer(e, &name))?;
            checked.push(value);
        }
        Ok(checked)
    }

    /// Sets a property from inside the thing (an action's effect) and waits until readers see it.
    /// readOnly does not apply; the schema still does.
    pub async fn set_property(self: &Arc<Self>, name: &str, value: Value) -> Result<(), Error> {
        let (property, value) = self.internal_value(name, value)?;
        self.apply(vec![(property, value)], Writer::Thing).await
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
        match self.queue(vec![(property, value)], Writer::Thing) {
            Queued::Applied(result) => result,
            Queued::Storing { .. } => Ok(()),
        }
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
    /// notifies.
    fn queue(self: &Arc<Self>, values: Vec<(Arc<str>, Value)>, writer: Writer) -> Queued {
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
                let applied = Arc::new(OnceLock::new());
                let outcome = applied.clone();
                let stored = persistence.persist(
                    &self.id,
                    durable,
                    Box::new(move || {
                        let _ = outcome.set(thing.commit_all(values, writer));
                    }),
                );
                Queued::Storing { stored, applied }
            }
            _ => Queued::Applied(self.commit_all(values, writer)),
        }
    }

    async fn apply(self: &Arc<Self>, values: Vec<(Arc<str>, Value)>, writer: Writer) -> Result<(), Error> {
        match self.queue(values, writer) {
            Queued::Applied(result) => result,
            Queued::Storing { stored, applied } => {
                stored
                    .await
                    .map_err(|_| Error::Internal("the state store stopped".into()))?
                    .map_err(|e| Error::Internal(format!("the value could not be stored: {e}")))?;
                // The store resolves only after running the apply callback, which set this.
                match applied.get() {
                    Some(result) => result.clone(),
                    None => Err(Error::Internal("the stored value was not applied".into())),
                }
            }
        }
    }

    /// Makes values visible and notifies, or forwards them to the thing that replaced this one.
    fn commit_all(&self, values: Vec<(Arc<str>, Value)>, writer: Writer) -> Result<(), Error> {
        let next = match &*self.lifecycle() {
            Lifecycle::Serving => {
                for (name, value) in values {
                    if let Some(property) = self.properties.get(&*name) {
                        let bytes = property.store(value);
                        self.hub.publish(Topic::Property(property.name.clone()), bytes);
                    }
                }
                return Ok(());
            }
            Lifecycle::Replaced(next) => next.clone(),
            Lifecycle::Removed => return Err(Error::ThingNotFound(self.slug.clone())),
        };
        next.commit_forwarded(values, writer)
    }

    /// Values that were checked against a predecessor's schemas: checked again against this
    /// thing's (all before any is applied), then committed here.
    fn commit_forwarded(&self, values: Vec<(Arc<str>, Value)>, writer: Writer) -> Result<(), Error> {
        let mut checked = Vec::with_capacity(values.len());
        for (name, value) in values {
            let property = self.property(&name)?;
            if writer == Writer::Client && property.read_only {
                return Err(Error::ReadOnly(name.to_string()));
            }
            let value = match writer {
                Writer::Client => property
                    .schema
                    .check_write(value)
                    .map_err(|e| prefix_pointer(e, &name))?,
                Writer::Thing => self.internal_value(&name, value)?.1,
            };
            checked.push((property.name.clone(), value));
        }
        self.commit_all(checked, writer)
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
        let next = match &*self.lifecycle() {
            Lifecycle::Serving => {
                self.hub.publish(Topic::Event(event.name.clone()), bytes);
                return Ok(());
            }
            Lifecycle::Replaced(next) => next.clone(),
            Lifecycle::Removed => return Err(Error::ThingNotFound(self.slug.clone())),
        };
        next.emit_event(name, data)
    }

    /// Subscribes to what `target` selects, from now on (see [`Self::subscribe_after`]).
    pub fn subscribe(&self, target: Target) -> Result<Subscription, Error> {
        self.subscribe_after(target, None)
    }

    /// Subscribes; with `after` (where a client left off, e.g. from SSE `Last-Event-ID`), the
    /// recent notifications after it are replayed first. On a thing that was replaced, the
    /// subscription is made on its successor.
    pub fn subscribe_after(&self, target: Target, after: Option<&SeenUpTo>) -> Result<Subscription, Error> {
        if let Some(next) = self.forward_to() {
            return next?.subscribe_after(target, after);
        }
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
        // Replaced between the check above and here: the subscription follows the hand-over.
        Ok(match after {
            Some(after) => self.hub.subscribe_after(target, after),
            None => self.hub.subscribe(target),
        })
    }

    /// Calls `tap` with every notification this thing publishes from now on, in sequence order,
    /// without a subscription (see `core::events`, taps). It ends with the thing: a tap does not
    /// follow a replacement, and one put on a thing already replaced or removed is never called.
    pub(crate) fn tap(&self, tap: crate::core::Tap) {
        self.hub.tap(tap);
    }

    /// How many notifications a subscriber may fall behind before it lags.
    pub(crate) fn notification_capacity(&self) -> usize {
        self.hub.capacity()
    }

    /// The sequence number of the latest notification published on this thing (0 before the
    /// first): a subscriber that has seen it has seen everything (see [`Self::subscribe_after`]).
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
    pub(crate) fn check_action_input(
        &self,
        name: &str,
        input: Option<Value>,
    ) -> Result<Option<Value>, Error> {
        let action = self.action(name)?;
        self.check_input(action, input)
    }

    /// Runs a synchronous action to its end and returns its output. On a thing that was
    /// replaced, the successor's action runs.
    pub(crate) async fn invoke_sync(
        self: &Arc<Self>,
        name: &str,
        input: Option<Value>,
    ) -> Result<Option<Value>, Error> {
        if let Some(next) = self.forward_to() {
            return Box::pin(next?.invoke_sync(name, input)).await;
        }
        let action = self.action(name)?;
        let input = self.check_input(action, input)?;
        let handler = action.handler.clone();
        handler(ActionContext {
            input,
            thing: self.clone(),
        })
        .await
    }

    /// Starts an asynchronous action; returns its pending status at once. On a thing that was
    /// replaced, the successor's action starts.
    pub(crate) fn invoke_async(
        self: &Arc<Self>,
        name: &str,
        input: Option<Value>,
    ) -> Result<ActionStatus, Error> {
        let lifecycle = self.lifecycle();
        let next = match &*lifecycle {
            Lifecycle::Serving => None,
            Lifecycle::Replaced(next) => Some(next.clone()),
            Lifecycle::Removed => return Err(Error::ThingNotFound(self.slug.clone())),
        };
        if let Some(next) = next {
            drop(lifecycle);
            return next.invoke_async(name, input);
        }
        // Created under the lifecycle lock: a hand-over cannot come between the check above and
        // the instance being in the registry that the successor shares.
        let action = self.action(name)?;
        let input = self.check_input(action, input)?;
        let registry = self.registry();
        let status = registry.create(&action.name)?;
        let handler = action.handler.clone();
        let thing = self.clone();
        let id = status.id.clone();
        let task_registry = registry.clone();
        let task = tokio::spawn(async move {
            if let Some(running) = task_registry.start(&id) {
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
            if let Some(done) = task_registry.finish(&id, result) {
                thing.publish_status(&done);
            }
        });
        registry.attach_abort(&status.id, task.abort_handle());
        Ok(status)
    }

    /// queryaction: the status of an instance of an asynchronous action.
    pub fn action_status(&self, name: &str, id: &str) -> Result<ActionStatus, Error> {
        let action = self.action(name)?;
        if action.synchronous {
            return Err(Error::NotQueryable(name.into()));
        }
        self.registry().get(name, id)
    }

    /// cancelaction: ends a running instance and publishes its final status.
    pub fn cancel_action(&self, name: &str, id: &str) -> Result<ActionStatus, Error> {
        let action = self.action(name)?;
        if action.synchronous {
            return Err(Error::NotQueryable(name.into()));
        }
        let status = self.registry().cancel(name, id)?;
        self.publish_status(&status);
        Ok(status)
    }

    /// Every known action instance of this thing's asynchronous actions, grouped by action
    /// name, newest first.
    pub(crate) fn all_action_statuses(&self) -> IndexMap<String, Vec<ActionStatus>> {
        let mut grouped: IndexMap<String, Vec<ActionStatus>> = self
            .actions
            .values()
            .filter(|a| !a.synchronous)
            .map(|a| (a.name.to_string(), Vec::new()))
            .collect();
        // The registry may hold instances of actions a predecessor had and this thing lacks.
        for status in self.registry().all() {
            if let Some(group) = grouped.get_mut(&*status.action) {
                group.push(status);
            }
        }
        grouped
    }

    /// An action's status change, told on the hub of the thing that serves now.
    fn publish_status(&self, status: &ActionStatus) {
        let next = match &*self.lifecycle() {
            Lifecycle::Serving => {
                let bytes = Bytes::from(serde_json::to_vec(&status.to_json(None)).unwrap_or_default());
                self.hub.publish(
                    Topic::Action {
                        name: status.action.clone(),
                        id: status.id.clone(),
                    },
                    bytes,
                );
                return;
            }
            Lifecycle::Replaced(next) => next.clone(),
            Lifecycle::Removed => return,
        };
        next.publish_status(status);
    }

    /// Hands this thing over to the one that replaces it: the successor takes the writable
    /// values that still fit its schemas, continues the event sequence and shares the action
    /// registry; subscriptions whose target is described the same on the successor follow it,
    /// the others end; from now on this thing forwards every change to the successor.
    pub(crate) fn hand_over(&self, next: &Arc<ExposedThing>) {
        let mut lifecycle = self.lifecycle.write().unwrap_or_else(|p| p.into_inner());
        if !matches!(*lifecycle, Lifecycle::Serving) {
            return;
        }
        next.hub.continue_from(&self.hub);
        *next.registry.write().unwrap_or_else(|p| p.into_inner()) = self.registry();
        for (name, property) in &next.properties {
            let Some(before) = self.properties.get(name) else {
                continue;
            };
            let value = before.value();
            if !property.read_only && property.schema.is_valid(&value) {
                // What subscribers last heard: no notification.
                property.store(property.schema.normalise(value));
            } else if property.value() != value {
                // Subscribers that follow the hand-over last heard the old value.
                next.hub
                    .publish(Topic::Property(property.name.clone()), property.bytes());
            }
        }
        let continues: Continues = if self.id == next.id {
            continuity(&self.model(), &next.model())
        } else {
            // Subscribers know the thing by its id: a new id is a new thing.
            Arc::new(|_: &Target| false)
        };
        self.hub.close(Some((next.hub.clone(), continues)));
        *lifecycle = Lifecycle::Replaced(next.clone());
    }

    /// Takes this thing out of service: every subscription ends, every change is refused.
    pub(crate) fn retire(&self) {
        let mut lifecycle = self.lifecycle.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*lifecycle, Lifecycle::Serving) {
            self.hub.close(None);
            *lifecycle = Lifecycle::Removed;
        }
    }
}

/// Which subscription targets mean the same on a thing described by `new` as on one described by
/// `old`: those whose affordances (or, for the `All*` targets, every affordance of the kind)
/// are the same apart from their human-readable text.
fn continuity(old: &Value, new: &Value) -> Continues {
    let kind = |name: &str| Unchanged::of(old.get(name), new.get(name));
    let properties = kind("properties");
    let actions = kind("actions");
    let events = kind("events");
    Arc::new(move |target: &Target| match target {
        Target::Property(name) => properties.names.contains(name),
        Target::AllProperties => properties.all,
        Target::Event(name) => events.names.contains(name),
        Target::AllEvents => events.all,
        Target::Action { name, .. } => actions.names.contains(name),
        Target::Everything => properties.all && actions.all && events.all,
    })
}

/// The affordances of one kind that two models describe the same.
struct Unchanged {
    names: std::collections::HashSet<String>,
    /// Every affordance of the kind is the same, and none was added or removed.
    all: bool,
}

impl Unchanged {
    fn of(old: Option<&Value>, new: Option<&Value>) -> Self {
        let empty = Map::new();
        let old = old.and_then(Value::as_object).unwrap_or(&empty);
        let new = new.and_then(Value::as_object).unwrap_or(&empty);
        let names: std::collections::HashSet<String> = old
            .iter()
            .filter(|(name, before)| new.get(*name).is_some_and(|after| same_affordance(before, after)))
            .map(|(name, _)| name.clone())
            .collect();
        let all = names.len() == old.len() && old.len() == new.len();
        Unchanged { names, all }
    }
}

/// Whether two affordances differ only in text meant for people.
fn same_affordance(a: &Value, b: &Value) -> bool {
    const TEXT: [&str; 4] = ["title", "titles", "description", "descriptions"];
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let meaningful = |m: &Map<String, Value>| {
                m.iter()
                    .filter(|(k, _)| !TEXT.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Map<String, Value>>()
            };
            meaningful(a) == meaningful(b)
        }
        _ => a == b,
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
    remote: Option<Arc<dyn Remote>>,
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
            remote: None,
        }
    }

    /// Makes the thing a proxy: reads and writes, once checked against the model, go to
    /// `remote` instead of the local values (which then only mirror what the remote reports).
    pub fn remote(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Makes the client-writable properties durable: their stored values are restored now
    /// (a value that no longer fits the schema falls back to the default, with a warning) and
    /// every write is acknowledged only once stored.
    pub(crate) fn persistence(mut self, persistence: Arc<dyn Persistence>) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// The thing's `id` (default: a random `urn:uuid:`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// How many actions may run at once, and how many ended instances are kept.
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

    /// Sets the behaviour of an action, as an [`ActionHandler`] already made.
    pub fn on_action_handler(mut self, name: &str, handler: ActionHandler) -> Self {
        self.handlers.insert(name.to_owned(), handler);
        self
    }

    /// Fails with the JSON pointer (into the model) of a DataSchema that does not compile, or of
    /// a handler given for an action the model lacks.
    pub fn build(mut self) -> Result<Arc<ExposedThing>, SchemaViolation> {
        let properties = self.properties()?;
        let actions = self.actions()?;
        if let Some(orphan) = self.handlers.keys().next() {
            return Err(SchemaViolation {
                pointer: format!("/actions/{orphan}"),
                rule: "handler".into(),
                message: format!("a handler was given for '{orphan}', which is not an action of the thing"),
            });
        }
        let events = events(&self.model)?;
        let title = match self.model.get("title").and_then(Value::as_str) {
            Some(title) => title.into(),
            None => self.slug.as_str().into(),
        };
        Ok(Arc::new(ExposedThing {
            model: self.model.to_string().into_boxed_str(),
            title,
            slug: self.slug,
            id: self.id,
            properties,
            actions,
            events,
            hub: Arc::new(EventHub::new(self.hub_capacity)),
            registry: RwLock::new(Arc::new(ActionRegistry::new(self.limits))),
            persistence: self.persistence,
            remote: self.remote,
            lifecycle: RwLock::new(Lifecycle::Serving),
        }))
    }

    /// The model's properties with their compiled schemas and first values: a durable one's
    /// stored value, else the `default`, else a zero value of the schema.
    fn properties(&self) -> Result<IndexMap<String, Property>, SchemaViolation> {
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
            let restored = if read_only {
                None
            } else {
                self.restored(name, &schema)
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
        Ok(properties)
    }

    /// The stored value of a durable property, when there is one that still fits its schema
    /// (otherwise a warning says why the default is used).
    fn restored(&self, name: &str, schema: &DataSchema) -> Option<Value> {
        let bytes = self.persistence.as_ref()?.load(&self.id, name)?;
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
    }

    /// The model's actions with their compiled schemas, each taking its handler out of the
    /// builder (an action without one fails every invocation).
    fn actions(&mut self) -> Result<IndexMap<String, Action>, SchemaViolation> {
        let mut actions = IndexMap::new();
        for (name, affordance) in affordances(&self.model, "actions") {
            let compile = |key: &str| -> Result<Option<DataSchema>, SchemaViolation> {
                affordance
                    .get(key)
                    .map(|s| DataSchema::compile(s).map_err(at(format!("/actions/{name}/{key}"))))
                    .transpose()
            };
            let handler = self
                .handlers
                .shift_remove(name)
                .unwrap_or_else(|| no_behaviour(name.clone()));
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
        Ok(actions)
    }
}

/// The model's events with their compiled data schemas.
fn events(model: &Value) -> Result<IndexMap<String, Event>, SchemaViolation> {
    let mut events = IndexMap::new();
    for (name, affordance) in affordances(model, "events") {
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
    Ok(events)
}

/// Puts `prefix` (where in the model the schema is) in front of a violation's pointer.
fn at(prefix: String) -> impl Fn(SchemaViolation) -> SchemaViolation {
    move |mut v: SchemaViolation| {
        v.pointer = format!("{prefix}{}", v.pointer);
        v
    }
}

/// The handler of an action given none: every invocation fails.
fn no_behaviour(name: String) -> ActionHandler {
    Arc::new(move |_| {
        let name = name.clone();
        Box::pin(async move { Err(Error::ActionFailed(format!("action '{name}' has no behaviour"))) })
    })
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
