//! The action registry of one thing: every asynchronous action instance with its status, output,
//! error and times, a way to cancel it, and a bounded history of the ones that ended.
//!
//! It keeps state and enforces limits; it does not run handlers (the exposed thing does) and it
//! does not know how a binding names or renders a status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use super::clock::now_rfc3339;
use super::error::Error;

/// ActionStatus `status` values of the WoT Profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted, not started yet.
    Pending,
    /// Started, not ended.
    Running,
    /// Ended with its output.
    Completed,
    /// Ended with an error, or cancelled.
    Failed,
}

impl Status {
    /// The WoT Profile's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }
    /// Whether the instance has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }
}

/// Why an action failed, kept as the parts of a problem-details object.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The problem type: a path under the runtime's `/problems/`.
    pub type_uri: &'static str,
    /// A short summary of the kind of failure.
    pub title: String,
    /// What happened to this instance.
    pub detail: String,
    /// The HTTP status the failure would have had as an answer of its own.
    pub status: u16,
}

impl Failure {
    pub(crate) fn cancelled() -> Self {
        Failure {
            type_uri: "/problems/cancelled",
            title: "Action cancelled".into(),
            detail: "the action was cancelled before it completed".into(),
            status: 409,
        }
    }
    pub(crate) fn from_error(error: &Error) -> Self {
        Failure {
            type_uri: error.type_uri(),
            title: error.title().into(),
            detail: error.to_string(),
            status: 500,
        }
    }
}

/// A snapshot of one action instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionStatus {
    /// The instance's id (a UUID).
    pub id: Arc<str>,
    /// The action's name.
    pub action: Arc<str>,
    /// Where the instance stands.
    pub status: Status,
    /// The handler's output, once completed.
    pub output: Option<Value>,
    /// Why it failed, once failed.
    pub error: Option<Failure>,
    /// When it was invoked (RFC 3339).
    pub time_requested: Arc<str>,
    /// When it ended (RFC 3339), once it has.
    pub time_ended: Option<String>,
}

impl ActionStatus {
    /// The WoT Profile ActionStatus object; `href` is the binding's URL of this instance.
    pub fn to_json(&self, href: Option<&str>) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("status".into(), json!(self.status.as_str()));
        if let Some(output) = &self.output {
            object.insert("output".into(), output.clone());
        }
        if let Some(f) = &self.error {
            object.insert(
                "error".into(),
                json!({"type": f.type_uri, "title": f.title, "status": f.status, "detail": f.detail}),
            );
        }
        if let Some(href) = href {
            object.insert("href".into(), json!(href));
        }
        object.insert("timeRequested".into(), json!(&*self.time_requested));
        if let Some(ended) = &self.time_ended {
            object.insert("timeEnded".into(), json!(ended));
        }
        Value::Object(object)
    }
}

#[derive(Debug)]
struct Instance {
    status: ActionStatus,
    abort: Option<AbortHandle>,
}

/// Limits of one registry.
#[derive(Debug, Clone, Copy)]
pub struct ActionLimits {
    /// Instances that may be pending or running at once.
    pub max_running: usize,
    /// Ended instances kept for queries; older ones are forgotten.
    pub max_history: usize,
}

impl Default for ActionLimits {
    fn default() -> Self {
        ActionLimits {
            max_running: 64,
            max_history: 256,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    instances: IndexMap<Arc<str>, Instance>,
    ended: VecDeque<Arc<str>>,
    running: usize,
}

#[derive(Debug)]
pub(crate) struct ActionRegistry {
    inner: Mutex<Inner>,
    limits: ActionLimits,
}

impl ActionRegistry {
    pub(crate) fn new(limits: ActionLimits) -> Self {
        ActionRegistry {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new pending instance, or refuses when too many are running.
    pub(crate) fn create(&self, action: &Arc<str>) -> Result<ActionStatus, Error> {
        let mut inner = self.lock();
        if inner.running >= self.limits.max_running {
            return Err(Error::Busy(self.limits.max_running));
        }
        let id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let status = ActionStatus {
            id: id.clone(),
            action: action.clone(),
            status: Status::Pending,
            output: None,
            error: None,
            time_requested: now_rfc3339().into(),
            time_ended: None,
        };
        inner.running += 1;
        inner.instances.insert(
            id,
            Instance {
                status: status.clone(),
                abort: None,
            },
        );
        Ok(status)
    }

    pub(crate) fn attach_abort(&self, id: &str, abort: AbortHandle) {
        if let Some(instance) = self.lock().instances.get_mut(id) {
            instance.abort = Some(abort);
        }
    }

    /// Moves an instance to `running`; returns None if it already ended (cancelled early).
    pub(crate) fn start(&self, id: &str) -> Option<ActionStatus> {
        let mut inner = self.lock();
        let instance = inner.instances.get_mut(id)?;
        if instance.status.status != Status::Pending {
            return None;
        }
        instance.status.status = Status::Running;
        Some(instance.status.clone())
    }

    /// Ends an instance. Returns the final status, or None if it had already ended.
    pub(crate) fn finish(&self, id: &str, result: Result<Option<Value>, Failure>) -> Option<ActionStatus> {
        let mut inner = self.lock();
        let instance = inner.instances.get_mut(id)?;
        if instance.status.status.is_final() {
            return None;
        }
        match result {
            Ok(output) => {
                instance.status.status = Status::Completed;
                instance.status.output = output;
            }
            Err(failure) => {
                instance.status.status = Status::Failed;
                instance.status.error = Some(failure);
            }
        }
        instance.status.time_ended = Some(now_rfc3339());
        instance.abort = None;
        let snapshot = instance.status.clone();
        let key: Arc<str> = snapshot.id.clone();
        inner.running = inner.running.saturating_sub(1);
        inner.ended.push_back(key);
        while inner.ended.len() > self.limits.max_history {
            if let Some(old) = inner.ended.pop_front() {
                inner.instances.shift_remove(&old);
            }
        }
        Some(snapshot)
    }

    /// Cancels a pending or running instance: aborts its task and marks it failed.
    pub(crate) fn cancel(&self, action: &str, id: &str) -> Result<ActionStatus, Error> {
        let abort = {
            let mut inner = self.lock();
            let instance = inner
                .instances
                .get_mut(id)
                .filter(|i| &*i.status.action == action)
                .ok_or_else(|| Error::ActionInstanceNotFound {
                    action: action.into(),
                    id: id.into(),
                })?;
            if instance.status.status.is_final() {
                return Err(Error::AlreadyEnded(id.into()));
            }
            instance.abort.take()
        };
        if let Some(abort) = abort {
            abort.abort();
        }
        self.finish(id, Err(Failure::cancelled()))
            .ok_or_else(|| Error::AlreadyEnded(id.into()))
    }

    pub(crate) fn get(&self, action: &str, id: &str) -> Result<ActionStatus, Error> {
        self.lock()
            .instances
            .get(id)
            .filter(|i| &*i.status.action == action)
            .map(|i| i.status.clone())
            .ok_or_else(|| Error::ActionInstanceNotFound {
                action: action.into(),
                id: id.into(),
            })
    }

    /// Every known instance, newest first.
    pub(crate) fn all(&self) -> Vec<ActionStatus> {
        self.lock()
            .instances
            .values()
            .rev()
            .map(|i| i.status.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_history_bound() {
        let registry = ActionRegistry::new(ActionLimits {
            max_running: 2,
            max_history: 2,
        });
        let name: Arc<str> = "fade".into();
        let a = registry.create(&name).unwrap();
        let b = registry.create(&name).unwrap();
        assert!(matches!(registry.create(&name), Err(Error::Busy(2))));
        assert_eq!(registry.start(&a.id).unwrap().status, Status::Running);
        let done = registry.finish(&a.id, Ok(Some(serde_json::json!(7)))).unwrap();
        assert_eq!(done.status, Status::Completed);
        assert!(done.time_ended.is_some());
        let cancelled = registry.cancel("fade", &b.id).unwrap();
        assert_eq!(cancelled.status, Status::Failed);
        assert!(matches!(
            registry.cancel("fade", &b.id),
            Err(Error::AlreadyEnded(_))
        ));
        for _ in 0..3 {
            let c = registry.create(&name).unwrap();
            registry.finish(&c.id, Ok(None));
        }
        assert_eq!(registry.all().len(), 2);
        assert!(registry.get("fade", &a.id).is_err());
    }
}
