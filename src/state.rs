//! Durable state under `--state-dir`: property values and the runtime's ids, in one redb file
//! (`state.redb`). redb is an embedded, pure-Rust ACID key-value store: no C toolchain, one
//! file, crash-safe commits.
//!
//! Writes go through one writer thread that groups every write waiting in its queue into one
//! transaction (group commit), so a burst of 64 concurrent writes costs one fsync, not 64. A
//! write's `apply` callback (which makes it visible to readers) runs after its commit, in queue
//! order. This module knows nothing of things, schemas or protocols.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability as RedbDurability, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use crate::core::store::{Apply, Persistence};

const VALUES: TableDefinition<&str, &[u8]> = TableDefinition::new("property_values");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Largest number of queued writes folded into one transaction.
const MAX_BATCH: usize = 4096;

/// How hard each commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// fsync before a write is acknowledged (group-committed).
    #[default]
    Immediate,
    /// Acknowledge without fsync; fsync at most every second and at a clean shutdown. A crash
    /// (of the process or the machine) can lose the last second of acknowledged writes.
    Periodic,
}

struct Job {
    entries: Vec<(String, Bytes)>,
    apply: Apply,
    done: oneshot::Sender<Result<(), String>>,
}

enum Message {
    Write(Job),
    Flush(oneshot::Sender<()>),
}

/// The state store.
pub struct Store {
    db: Arc<Database>,
    queue: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn key(thing_id: &str, property: &str) -> String {
    format!("{thing_id}\u{0}{property}")
}

impl Store {
    pub fn open(dir: &Path, durability: Durability) -> Result<Arc<Store>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let db = Arc::new(db);
        {
            // Create the tables up front so readers never meet a missing table.
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(VALUES).map_err(|e| e.to_string())?;
            txn.open_table(META).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())?;
        }
        let (queue, receiver) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("wot-state-writer".into())
            .spawn(move || writer(writer_db, receiver, durability))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Store { db, queue }))
    }

    pub fn get_meta(&self, name: &str) -> Option<String> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(META).ok()?;
        table.get(name).ok().flatten().map(|v| v.value().to_owned())
    }

    /// Writes one metadata entry durably, at once (ids are rare and must never be lost).
    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), String> {
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(RedbDurability::Immediate)
            .map_err(|e| e.to_string())?;
        txn.open_table(META)
            .map_err(|e| e.to_string())?
            .insert(name, value)
            .map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    }

    /// Waits until everything queued so far is on disk (used at shutdown).
    pub fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Message::Flush(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Async form of [`Store::flush`].
    pub async fn flush_async(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Persistence for Store {
    fn persist(
        &self,
        thing_id: &str,
        values: Vec<(Arc<str>, Bytes)>,
        apply: Apply,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, receiver) = oneshot::channel();
        let entries = values
            .into_iter()
            .map(|(name, bytes)| (key(thing_id, &name), bytes))
            .collect();
        if let Err(mpsc::SendError(Message::Write(job))) =
            self.queue.send(Message::Write(Job { entries, apply, done }))
        {
            let _ = job.done.send(Err("the state writer has stopped".into()));
        }
        receiver
    }

    fn load(&self, thing_id: &str, property: &str) -> Option<Bytes> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(VALUES).ok()?;
        let value = table.get(key(thing_id, property).as_str()).ok().flatten()?;
        Some(Bytes::copy_from_slice(value.value()))
    }
}

fn commit(db: &Database, jobs: &[Job], durability: RedbDurability) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(durability).map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(VALUES).map_err(|e| e.to_string())?;
        for job in jobs {
            for (k, v) in &job.entries {
                table.insert(k.as_str(), &v[..]).map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Commits an empty transaction with fsync, which makes every earlier non-durable commit durable.
fn sync(db: &Database) {
    if let Err(e) = commit(db, &[], RedbDurability::Immediate) {
        tracing::error!("state store: sync failed: {e}");
    }
}

fn writer(db: Arc<Database>, queue: mpsc::Receiver<Message>, durability: Durability) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let wait = if unsynced {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(3600)
        };
        let first = match queue.recv_timeout(wait) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if unsynced && last_sync.elapsed() >= Duration::from_secs(1) {
                    sync(&db);
                    unsynced = false;
                    last_sync = Instant::now();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write(job) => jobs.push(job),
                Message::Flush(ack) => flushes.push(ack),
            }
            if jobs.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            let level = match durability {
                Durability::Immediate => RedbDurability::Immediate,
                Durability::Periodic => RedbDurability::None,
            };
            let result = commit(&db, &jobs, level);
            if let Err(e) = &result {
                tracing::error!("state store: commit failed: {e}");
            } else if durability == Durability::Periodic {
                unsynced = true;
            }
            for job in jobs {
                if result.is_ok() {
                    (job.apply)();
                }
                let _ = job.done.send(result.clone());
            }
        }
        if durability == Durability::Periodic
            && unsynced
            && (last_sync.elapsed() >= Duration::from_secs(1) || !flushes.is_empty())
        {
            sync(&db);
            unsynced = false;
            last_sync = Instant::now();
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
    if unsynced {
        sync(&db);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopening_and_apply_runs_after_commit() {
        let dir = std::env::temp_dir().join(format!("wot-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A dropped store's writer thread releases the file a moment later; wait for it.
        let open = |durability| loop {
            match Store::open(&dir, durability) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        for durability in [Durability::Immediate, Durability::Periodic] {
            let store = open(durability);
            let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = applied.clone();
            let rx = store.persist(
                "urn:t",
                vec![("p".into(), Bytes::from_static(b"41"))],
                Box::new(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }),
            );
            rx.blocking_recv().unwrap().unwrap();
            assert_eq!(applied.load(std::sync::atomic::Ordering::SeqCst), 1);
            store.set_meta("id:lamp", "urn:uuid:x").unwrap();
            store.flush();
            drop(store);
            let reopened = open(durability);
            assert_eq!(reopened.load("urn:t", "p").as_deref(), Some(&b"41"[..]));
            assert_eq!(reopened.get_meta("id:lamp").as_deref(), Some("urn:uuid:x"));
        }
    }
}
