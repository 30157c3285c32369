//! The legacy API's action queue of one thing: every action requested through `/webthing/...`
//! with its input, Mozilla status (`created` → `pending` → `completed` | `failed`), times and href,
//! in request order and bounded in size.
//!
//! Plain data: it runs nothing and knows no socket. Synchronous core actions are run by the
//! adapter (see `mod.rs`), asynchronous ones by the core's registry; the queue only records them.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use crate::core::{ActionStatus, Status};

/// Who runs an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// An asynchronous core action: the core's registry runs it under the same id.
    Core,
    /// A synchronous core action that this adapter runs in its own task so it can be queued.
    Adapter,
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) id: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) input: Option<Value>,
    pub(crate) status: &'static str,
    pub(crate) time_requested: String,
    pub(crate) time_completed: Option<String>,
    pub(crate) runner: Runner,
    pub(crate) abort: Option<AbortHandle>,
}

pub(crate) const CREATED: &str = "created";
pub(crate) const PENDING: &str = "pending";
pub(crate) const COMPLETED: &str = "completed";
pub(crate) const FAILED: &str = "failed";

pub(crate) fn is_final(status: &str) -> bool {
    status == COMPLETED || status == FAILED
}

/// The Mozilla status of a core ActionStatus.
pub(crate) fn mozilla_status(status: Status) -> &'static str {
    match status {
        Status::Pending | Status::Running => PENDING,
        Status::Completed => COMPLETED,
        Status::Failed => FAILED,
    }
}

/// `/webthing/{thing}/actions/{name}/{id}`: the same string in the POST answer, in GET and in
/// every WebSocket `actionStatus` (the Gateway's adapter keys its map on it).
pub(crate) fn href(thing: &str, name: &str, id: &str) -> String {
    format!("/webthing/{thing}/actions/{name}/{id}")
}

impl Record {
    /// `{"<name>": {"input", "href", "timeRequested", "status", "timeCompleted"}}`.
    pub(crate) fn describe(&self, thing: &str) -> Value {
        let mut inner = Map::new();
        if let Some(input) = &self.input {
            inner.insert("input".into(), input.clone());
        }
        inner.insert("href".into(), json!(href(thing, &self.name, &self.id)));
        inner.insert("timeRequested".into(), json!(self.time_requested));
        inner.insert("status".into(), json!(self.status));
        if let Some(done) = &self.time_completed {
            inner.insert("timeCompleted".into(), json!(done));
        }
        let mut outer = Map::new();
        outer.insert(self.name.to_string(), Value::Object(inner));
        Value::Object(outer)
    }

    /// Takes over what the core says about an instance it runs.
    pub(crate) fn absorb(&mut self, status: &ActionStatus) {
        self.status = mozilla_status(status.status);
        self.time_completed = status.time_ended.clone();
    }
}

/// A record for a core instance that was not requested through this adapter.
pub(crate) fn record_of_core(status: &ActionStatus) -> Record {
    Record {
        id: status.id.clone(),
        name: status.action.clone(),
        input: None,
        status: mozilla_status(status.status),
        time_requested: status.time_requested.to_string(),
        time_completed: status.time_ended.clone(),
        runner: Runner::Core,
        abort: None,
    }
}

#[derive(Debug)]
pub(crate) struct ActionQueue {
    records: IndexMap<Arc<str>, Record>,
    capacity: usize,
}

impl ActionQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        ActionQueue {
            records: IndexMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a record. When full, the oldest ended record is forgotten, or else the oldest one
    /// (it keeps running; it is only no longer listed here).
    pub(crate) fn push(&mut self, record: Record) {
        if self.records.len() >= self.capacity {
            let victim = self
                .records
                .iter()
                .find(|(_, r)| is_final(r.status))
                .or_else(|| self.records.first())
                .map(|(id, _)| id.clone());
            if let Some(id) = victim {
                self.records.shift_remove(&id);
            }
        }
        self.records.insert(record.id.clone(), record);
    }

    pub(crate) fn get(&self, name: &str, id: &str) -> Option<&Record> {
        self.records.get(id).filter(|r| &*r.name == name)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Record> {
        self.records.get_mut(id)
    }

    pub(crate) fn remove(&mut self, name: &str, id: &str) -> Option<Record> {
        if self.get(name, id).is_some() {
            self.records.shift_remove(id)
        } else {
            None
        }
    }

    /// Records in request order, optionally of one action only.
    pub(crate) fn list(&self, name: Option<&str>) -> Vec<Record> {
        self.records
            .values()
            .filter(|r| name.is_none_or(|n| &*r.name == n))
            .cloned()
            .collect()
    }

    pub(crate) fn unfinished_adapter_runs(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.runner == Runner::Adapter && !is_final(r.status))
            .count()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: &'static str) -> Record {
        Record {
            id: id.into(),
            name: "fade".into(),
            input: Some(json!({"level": 1})),
            status,
            time_requested: "t0".into(),
            time_completed: None,
            runner: Runner::Adapter,
            abort: None,
        }
    }

    #[test]
    fn bounded_and_evicts_ended_records_first() {
        let mut q = ActionQueue::new(2);
        q.push(record("a", PENDING));
        q.push(record("b", COMPLETED));
        q.push(record("c", CREATED));
        let ids: Vec<_> = q.list(None).iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["a", "c"]);
        q.push(record("d", CREATED));
        assert_eq!(q.len(), 2);
        assert!(q.get("fade", "a").is_none());
        assert!(q.get("other", "c").is_none());
        assert_eq!(q.unfinished_adapter_runs(), 2);
    }

    #[test]
    fn describes_with_the_href_used_everywhere() {
        let mut r = record("x", CREATED);
        r.time_completed = Some("t1".into());
        let d = r.describe("lamp");
        assert_eq!(d["fade"]["href"], "/webthing/lamp/actions/fade/x");
        assert_eq!(d["fade"]["input"]["level"], 1);
        assert_eq!(d["fade"]["timeCompleted"], "t1");
        assert_eq!(mozilla_status(Status::Running), PENDING);
    }
}
