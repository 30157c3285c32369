//! The legacy WebThings API (Mozilla Web Thing API) that the WebThings Gateway and openHAB speak,
//! at `/webthing/` on the HTTP port: descriptions with `links`, `{name: value}` payloads, the
//! action queue, an event log with unique timestamps, and its WebSocket (HUBS.md §3).
//!
//! A thin adapter over the same `Servient` as the W3C bindings: a write from a hub is a core
//! write that W3C clients see, and the other way round. It keeps only protocol state of its
//! own (the queue of actions requested here, a bounded event log, a timestamp clock), serves
//! nothing under `/things/`, and never reaches into another binding: the runtime mounts
//! [`Legacy::configure`] on the HTTP server.

pub(crate) mod capability;
pub(crate) mod describe;
pub(crate) mod error;
pub(crate) mod queue;
pub(crate) mod routes;
pub(crate) mod socket;
mod table;
pub(crate) mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use actix_web::web;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::core::{EncodingSlot, Error, ExposedThing, Notification, Servient, Topic};
use queue::{ActionQueue, Record, Runner};

/// Event occurrences kept per thing for `GET .../events` (the Gateway polls it every 5 s).
pub(crate) const EVENT_LOG: usize = 64;
/// Action requests kept per thing for `GET .../actions`.
pub(crate) const ACTION_QUEUE: usize = 128;
/// Synchronous actions this adapter may run at once per thing.
pub(crate) const MAX_ADAPTER_RUNS: usize = 64;
/// Largest WebSocket message and request body accepted.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Buffered `actionStatus` messages per thing before a slow legacy socket lags.
const STATUS_BUFFER: usize = 256;

/// The adapter's view of one thing.
///
/// What only a hub's request needs is made by the first one (the description template, the
/// `actionStatus` channel): a bridge's thousands of things cost little until a hub looks at
/// them. The event log is kept from the start, through a tap on the thing rather than a
/// subscription, so it holds no broadcast buffer or task either.
pub(crate) struct LegacyThing {
    pub(crate) thing: Arc<ExposedThing>,
    template: OnceLock<Value>,
    clock: wire::StampClock,
    events: Mutex<VecDeque<(Arc<str>, Bytes)>>,
    queue: Mutex<ActionQueue>,
    /// `actionStatus` messages of actions requested here (to every legacy socket of the thing),
    /// made when the first socket subscribes.
    statuses: OnceLock<broadcast::Sender<Bytes>>,
}

impl LegacyThing {
    fn new(thing: Arc<ExposedThing>) -> Arc<Self> {
        let legacy = Arc::new(LegacyThing {
            template: OnceLock::new(),
            thing,
            clock: wire::StampClock::default(),
            events: Mutex::new(VecDeque::new()),
            queue: Mutex::new(ActionQueue::new(ACTION_QUEUE)),
            statuses: OnceLock::new(),
        });
        if !legacy.thing.events.is_empty() {
            // Weak: the thing owns the tap, and the adapter owns the thing.
            let log = Arc::downgrade(&legacy);
            legacy.thing.tap(Box::new(move |n| keep_event_log(&log, n)));
        }
        legacy
    }

    pub(crate) fn slug(&self) -> &str {
        &self.thing.slug
    }

    /// The origin-independent description (see `describe::for_origin`).
    pub(crate) fn template(&self, security: &(Value, Value)) -> &Value {
        self.template
            .get_or_init(|| describe::template(&self.thing, security))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, ActionQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn event_log(&self) -> std::sync::MutexGuard<'_, VecDeque<(Arc<str>, Bytes)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The legacy WebSocket frame of a core notification, made once per notification and shared
    /// by every legacy socket and the event log (so an event has one timestamp everywhere).
    pub(crate) fn frame(&self, n: &Notification) -> Bytes {
        n.encoded(EncodingSlot::Legacy, |n| match &n.topic {
            Topic::Property(name) => wire::message("propertyStatus", &wire::keyed(name, &n.data)),
            Topic::Event(name) => {
                wire::event_message(&wire::event_object(name, &n.data, &self.clock.stamp()))
            }
            Topic::Action { name, id } => {
                let record = match serde_json::from_slice::<Value>(&n.data) {
                    Ok(status) => self.core_status_record(name, id, &status),
                    Err(_) => None,
                };
                match record {
                    Some(r) => wire::message("actionStatus", r.describe(self.slug()).to_string().as_bytes()),
                    None => Bytes::new(),
                }
            }
        })
    }

    /// A record for a core ActionStatus notification, with the input if it was requested here.
    fn core_status_record(&self, name: &str, id: &str, status: &Value) -> Option<Record> {
        let core = match status.get("status")?.as_str()? {
            "pending" => crate::core::Status::Pending,
            "running" => crate::core::Status::Running,
            "completed" => crate::core::Status::Completed,
            _ => crate::core::Status::Failed,
        };
        let input = self.queue().get(name, id).and_then(|r| r.input.clone());
        Some(Record {
            id: id.into(),
            name: name.into(),
            input,
            status: queue::mozilla_status(core),
            time_requested: status.get("timeRequested")?.as_str()?.to_owned(),
            time_completed: status.get("timeEnded").and_then(Value::as_str).map(str::to_owned),
            runner: Runner::Core,
            abort: None,
        })
    }

    fn log_event(&self, name: Arc<str>, object: Bytes) {
        let mut log = self.event_log();
        if log.len() >= EVENT_LOG {
            log.pop_front();
        }
        log.push_back((name, object));
    }

    /// `[{name: {data, timestamp}}, ...]`, oldest first, optionally of one event only.
    pub(crate) fn events_json(&self, name: Option<&str>) -> Bytes {
        let log = self.event_log();
        let mut out = Vec::with_capacity(64 * log.len() + 2);
        out.push(b'[');
        for (i, (_, object)) in log
            .iter()
            .filter(|(n, _)| name.is_none_or(|w| &**n == w))
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(object);
        }
        out.push(b']');
        Bytes::from(out)
    }

    fn announce(&self, record: &Record) {
        // No socket has ever subscribed: nobody to tell.
        let Some(statuses) = self.statuses.get() else {
            return;
        };
        let frame = wire::message(
            "actionStatus",
            record.describe(self.slug()).to_string().as_bytes(),
        );
        // Nobody listening is fine.
        let _ = statuses.send(frame);
    }

    /// Queues an action request (`POST .../actions` or WebSocket `requestAction`); `params` is
    /// the `{"input": ...}` object. Bad input is refused here, before anything is queued.
    pub(crate) fn request_action(self: &Arc<Self>, name: &str, params: &Value) -> Result<Record, Error> {
        let input = match params {
            Value::Object(p) => p.get("input").cloned(),
            Value::Null => None,
            _ => {
                return Err(Error::MalformedPayload(format!(
                    "the request for '{name}' must be an object such as {{\"input\": ...}}"
                )));
            }
        };
        let action = self.thing.action(name)?;
        let record = if !action.synchronous {
            let status = self.thing.invoke_async(name, input.clone())?;
            let record = Record {
                id: status.id.clone(),
                name: status.action.clone(),
                input,
                status: queue::CREATED,
                time_requested: status.time_requested.to_string(),
                time_completed: None,
                runner: Runner::Core,
                abort: None,
            };
            self.queue().push(record.clone());
            self.announce(&record);
            record
        } else {
            let checked = self.thing.check_action_input(name, input.clone())?;
            let record = Record {
                id: uuid::Uuid::new_v4().to_string().into(),
                name: action.name.clone(),
                input,
                status: queue::CREATED,
                time_requested: self.clock.stamp(),
                time_completed: None,
                runner: Runner::Adapter,
                abort: None,
            };
            {
                let mut q = self.queue();
                if q.unfinished_adapter_runs() >= MAX_ADAPTER_RUNS {
                    return Err(Error::Busy(MAX_ADAPTER_RUNS));
                }
                q.push(record.clone());
            }
            self.announce(&record);
            let me = self.clone();
            let id = record.id.clone();
            let action_name = record.name.clone();
            let task = tokio::spawn(async move {
                me.set_status(&id, queue::PENDING, None);
                let result = me.thing.invoke_sync(&action_name, checked).await;
                let status = if result.is_ok() {
                    queue::COMPLETED
                } else {
                    queue::FAILED
                };
                if let Err(e) = result {
                    tracing::info!("legacy action {id} failed: {e}");
                }
                me.set_status(&id, status, Some(me.clock.stamp()));
            });
            if let Some(r) = self.queue().get_mut(&record.id) {
                r.abort = Some(task.abort_handle());
            }
            record
        };
        Ok(record)
    }

    fn set_status(&self, id: &str, status: &'static str, completed: Option<String>) {
        let snapshot = {
            let mut q = self.queue();
            let Some(r) = q.get_mut(id) else { return };
            r.status = status;
            r.time_completed = completed;
            r.clone()
        };
        self.announce(&snapshot);
    }

    /// One action instance, requested here or (for asynchronous actions) by any binding.
    pub(crate) fn action(&self, name: &str, id: &str) -> Result<Record, Error> {
        let local = self.queue().get(name, id).cloned();
        match local {
            Some(mut r) if r.runner == Runner::Core && !queue::is_final(r.status) => {
                if let Ok(status) = self.thing.action_status(name, id) {
                    r.absorb(&status);
                    if let Some(q) = self.queue().get_mut(id) {
                        q.absorb(&status);
                    }
                }
                Ok(r)
            }
            Some(r) => Ok(r),
            None => self
                .thing
                .action_status(name, id)
                .map(|s| queue::record_of_core(&s))
                .map_err(|e| not_queued(e, name, id)),
        }
    }

    /// Every queued request, oldest first, with current statuses.
    pub(crate) fn actions(&self, name: Option<&str>) -> Vec<Record> {
        let list = self.queue().list(name);
        list.into_iter()
            .map(|r| self.action(&r.name, &r.id).unwrap_or(r))
            .collect()
    }

    /// `DELETE .../actions/{name}/{id}`: cancels the instance if it still runs and forgets it.
    pub(crate) fn remove_action(&self, name: &str, id: &str) -> Result<(), Error> {
        self.thing.action(name)?;
        let removed = self.queue().remove(name, id);
        match removed {
            Some(r) => {
                if let Some(abort) = &r.abort {
                    abort.abort();
                }
                if r.runner == Runner::Core {
                    match self.thing.cancel_action(name, id) {
                        Ok(_) | Err(Error::AlreadyEnded(_) | Error::ActionInstanceNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            None => match self.thing.cancel_action(name, id) {
                Ok(_) | Err(Error::AlreadyEnded(_)) => Ok(()),
                Err(e) => Err(not_queued(e, name, id)),
            },
        }
    }

    pub(crate) fn subscribe_statuses(&self) -> broadcast::Receiver<Bytes> {
        self.statuses
            .get_or_init(|| broadcast::channel(STATUS_BUFFER).0)
            .subscribe()
    }
}

/// A synchronous action's instance that is not in the queue simply does not exist here.
fn not_queued(e: Error, name: &str, id: &str) -> Error {
    match e {
        Error::NotQueryable(_) => Error::ActionInstanceNotFound {
            action: name.into(),
            id: id.into(),
        },
        other => other,
    }
}

/// What the handlers share.
pub(crate) struct LegacyState {
    pub(crate) servient: Arc<Servient>,
    /// The adapter of each thing the servient exposes, kept in step with it (hot reload).
    things: RwLock<HashMap<String, Arc<LegacyThing>>>,
    /// `securityDefinitions` and `security` every description states.
    pub(crate) security: (Value, Value),
    /// `--base-url`; when None, the request's scheme and Host give the origin.
    pub(crate) base_url: Option<String>,
    /// The pool of SSE streams and sockets shared with the other bindings of the HTTP port.
    pub(crate) subscribers: crate::limits::Subscribers,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// A socket's peer is pinged after this much silence and dropped after twice it (zero: off).
    pub(crate) ping_interval: std::time::Duration,
}

impl LegacyState {
    pub(crate) fn thing(&self, slug: &str) -> Result<Arc<LegacyThing>, Error> {
        self.things
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(slug)
            .cloned()
            .ok_or_else(|| Error::ThingNotFound(slug.to_owned()))
    }

    /// Things in the order the servient exposes them.
    pub(crate) fn all(&self) -> Vec<Arc<LegacyThing>> {
        let things = self.things.read().unwrap_or_else(|p| p.into_inner());
        self.servient
            .slugs()
            .iter()
            .filter_map(|s| things.get(s).cloned())
            .collect()
    }

    /// Brings the adapters in line with the servient: a thing added gets an adapter (with its
    /// event log), a thing removed or replaced loses its own.
    fn sync(&self) {
        let current = self.servient.things();
        let mut things = self.things.write().unwrap_or_else(|p| p.into_inner());
        // By slug, not by scanning `current` per adapter: a bridge has tens of thousands.
        let live: HashMap<&str, &Arc<ExposedThing>> = current.iter().map(|t| (t.slug.as_str(), t)).collect();
        things.retain(|slug, legacy| {
            live.get(slug.as_str())
                .is_some_and(|t| Arc::ptr_eq(t, &legacy.thing))
        });
        for thing in &current {
            if !things.contains_key(&thing.slug) {
                things.insert(thing.slug.clone(), LegacyThing::new(thing.clone()));
            }
        }
    }
}

/// The running adapter: its state and the task that follows the servient's things.
pub(crate) struct Legacy {
    state: web::Data<LegacyState>,
    follower: JoinHandle<()>,
}

impl Legacy {
    /// Builds the adapter for every thing the servient exposes, and keeps it in step as things
    /// are added, replaced or removed. Must run inside a tokio runtime.
    /// `security`: the `securityDefinitions` and `security` the HTTP port enforces.
    /// `ping_interval`: the sockets' keepalive, as for the Web Thing Protocol's.
    pub(crate) fn start(
        servient: Arc<Servient>,
        base_url: Option<String>,
        security: &(Value, Value),
        subscribers: crate::limits::Subscribers,
        shutdown: watch::Receiver<bool>,
        ping_interval: std::time::Duration,
    ) -> Self {
        let mut changes = servient.watch_changes();
        let state = web::Data::new(LegacyState {
            servient,
            things: RwLock::default(),
            security: security.clone(),
            base_url: base_url.map(|b| b.trim_end_matches('/').to_owned()),
            subscribers,
            shutdown,
            ping_interval,
        });
        state.sync();
        let follower = {
            let state = state.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    state.sync();
                }
            })
        };
        Legacy { state, follower }
    }

    /// Registers `/webthing/...` on an actix app (the runtime hands this to the HTTP server).
    pub(crate) fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
        let state = self.state.clone();
        move |cfg: &mut web::ServiceConfig| routes::configure(cfg, state.clone())
    }

    /// Stops following the servient.
    pub(crate) fn stop(self) {
        self.follower.abort();
    }
}

/// The event log's tap: logs an event (its frame, made here, is the one the legacy sockets
/// send, so an event has one timestamp everywhere); false once the adapter is gone.
fn keep_event_log(legacy: &Weak<LegacyThing>, n: &Arc<Notification>) -> bool {
    let Some(legacy) = legacy.upgrade() else {
        return false;
    };
    if let Topic::Event(name) = &n.topic {
        let frame = legacy.frame(n);
        legacy.log_event(name.clone(), wire::event_object_of(&frame));
    }
    true
}
