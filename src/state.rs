//! Durable state under `--state-dir`: property values and the runtime's ids, in one redb file
//! (`state.redb`). redb is an embedded, pure-Rust ACID key-value store: no C toolchain, one
//! file, crash-safe commits.
//!
//! Writes go through one writer thread that groups every write waiting in its queue into one
//! transaction (group commit), so a burst of 64 concurrent writes costs one fsync, not 64. A
//! write's `apply` callback (which makes it visible to readers) runs after its commit, in queue
//! order. This module knows nothing of things, schemas or protocols.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability as RedbDurability, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use crate::core::store::{Apply, PersistError, Persistence};

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

/// Why the state store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("{}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// The database file could not be created or opened (another process may hold it, or it
    /// is not a redb file of this format).
    #[error("{}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// A write transaction failed (begin, table, insert or commit); redb says which.
    #[error(transparent)]
    Write(#[from] redb::Error),
    /// The writer thread could not be started.
    #[error("cannot start the state writer thread: {0}")]
    Writer(std::io::Error),
}

struct Job {
    entries: Vec<(String, Bytes)>,
    apply: Apply,
    done: oneshot::Sender<Result<(), PersistError>>,
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
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("state.redb");
        let db = match Database::create(&path) {
            Ok(db) => Arc::new(db),
            Err(source) => return Err(StoreError::Open { path, source }),
        };
        // Create the tables up front so readers never meet a missing table.
        create_tables(&db)?;
        let (queue, receiver) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("wot-state-writer".into())
            .spawn(move || writer(writer_db, receiver, durability))
            .map_err(StoreError::Writer)?;
        Ok(Arc::new(Store { db, queue }))
    }

    pub(crate) fn get_meta(&self, name: &str) -> Option<String> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(META).ok()?;
        table.get(name).ok().flatten().map(|v| v.value().to_owned())
    }

    /// Writes one metadata entry durably, at once (ids are rare and must never be lost).
    pub(crate) fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        Ok(write_meta(&self.db, name, value)?)
    }

    /// Waits until everything queued so far is on disk (used at shutdown).
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Message::Flush(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Async form of [`Store::flush`].
    pub(crate) async fn flush_async(&self) {
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
    ) -> oneshot::Receiver<Result<(), PersistError>> {
        let (done, receiver) = oneshot::channel();
        let entries = values
            .into_iter()
            .map(|(name, bytes)| (key(thing_id, &name), bytes))
            .collect();
        if let Err(mpsc::SendError(Message::Write(job))) =
            self.queue.send(Message::Write(Job { entries, apply, done }))
        {
            let _ = job.done.send(Err(PersistError::Stopped));
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

// The transactions below return redb's superset error: each step fails with its own redb type
// and `?` turns them all into `redb::Error`, which `StoreError::Write` carries.

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(VALUES)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(())
}

fn write_meta(db: &Database, name: &str, value: &str) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(RedbDurability::Immediate)?;
    txn.open_table(META)?.insert(name, value)?;
    txn.commit()?;
    Ok(())
}

fn commit(db: &Database, jobs: &[Job], durability: RedbDurability) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    {
        let mut table = txn.open_table(VALUES)?;
        for job in jobs {
            for (k, v) in &job.entries {
                table.insert(k.as_str(), &v[..])?;
            }
        }
    }
    txn.commit()?;
    Ok(())
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
            let result =
                commit(&db, &jobs, level).map_err(|e| PersistError::Failed(Arc::new(StoreError::from(e))));
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
