//! Durability of property values as the core sees it. A [`Persistence`] takes serialised values
//! and runs a callback once they are stored; the core decides what is persisted and applies a
//! write to memory only in that callback, so what clients read is always in commit order and
//! an acknowledged write is durable. How values are stored (the `state` module, on redb) is not
//! this module's business: no storage engine type appears here.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// Runs after a batch is durable, in the order batches were queued.
pub(crate) type Apply = Box<dyn FnOnce() + Send>;

/// Why a batch was not stored, and so not applied. Clone, because one failed commit answers every
/// write folded into it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PersistError {
    /// The storage tried and failed. The source is the storage's own error, kept opaque here so
    /// that no storage engine type reaches the core.
    #[error(transparent)]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
    /// The storage takes no more writes (its writer has ended); nothing was tried.
    #[error("the state writer has stopped")]
    Stopped,
}

/// Where durable property values go.
pub(crate) trait Persistence: Send + Sync + std::fmt::Debug {
    /// Queues the values of one thing's properties for storage. `apply` runs once they are
    /// stored; the receiver then resolves (an `Err` means nothing was stored or applied).
    fn persist(
        &self,
        thing_id: &str,
        values: Vec<(Arc<str>, Bytes)>,
        apply: Apply,
    ) -> oneshot::Receiver<Result<(), PersistError>>;

    /// The stored value of a property, if any.
    fn load(&self, thing_id: &str, property: &str) -> Option<Bytes>;
}
