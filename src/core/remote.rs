//! Where a proxied thing's reads and writes go: a [`Remote`] given to the
//! [`ThingBuilder`](super::ThingBuilder) makes the core check every request against the local
//! model (names, directions, DataSchemas) and then hand it to the remote instead of the local
//! values. The bridge implements it over the consumer; the core knows no protocol, only that a
//! remote can be away ([`Remote::available`]) or fail ([`Error::Upstream`] and friends).
//!
//! Actions need no hook here: a proxied thing's action handlers forward the invocation, so the
//! local registry keeps the instances, statuses and limits as for any other thing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::Error;
use super::operation::{Operation, Reply};
use super::servient::perform_locally;
use super::thing::ExposedThing;

/// What a [`Remote`] call returns.
pub type RemoteFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// The far side of a proxied thing. Calls arrive already checked against the local model.
pub trait Remote: Send + Sync + fmt::Debug {
    /// `Ok` while the remote is believed reachable; the error (usually
    /// [`Error::UpstreamAway`]) refuses a request at once, without trying the remote.
    fn available(&self) -> Result<(), Error>;
    /// readproperty on the remote.
    fn read_property(&self, name: &str) -> RemoteFuture<Value>;
    /// writeproperty on the remote (the value is already checked).
    fn write_property(&self, name: &str, value: Value) -> RemoteFuture<()>;
}

/// Performs one operation on a proxied thing: checked here, then sent to the remote (reads and
/// writes) or run by the local registry, whose handlers forward (actions). Nothing is sent
/// while the remote is away.
pub(crate) async fn perform(
    thing: &Arc<ExposedThing>,
    remote: Arc<dyn Remote>,
    op: Operation,
) -> Result<Reply, Error> {
    match op {
        Operation::ReadProperty(name) => {
            thing.readable(&name)?;
            remote.available()?;
            let value = read(thing, &*remote, &name).await?;
            Ok(Reply::Value(to_bytes(&value)?))
        }
        Operation::ReadAllProperties => {
            let names: Vec<String> = thing.properties.keys().cloned().collect();
            read_many(thing, remote, names, true).await
        }
        Operation::ReadMultipleProperties(names) => read_many(thing, remote, names, false).await,
        Operation::WriteProperty(name, value) => {
            let (name, value) = thing.client_value(&name, value)?;
            remote.available()?;
            remote.write_property(&name, value).await?;
            Ok(Reply::Written)
        }
        Operation::WriteMultipleProperties(values) => {
            let checked = thing.client_values(values)?;
            remote.available()?;
            // One write per property, in order: a remote failure part-way leaves the earlier
            // ones written (the remote, not this runtime, holds the values).
            for (name, value) in checked {
                remote.write_property(&name, value).await?;
            }
            Ok(Reply::Written)
        }
        Operation::InvokeAction { .. } => {
            remote.available()?;
            perform_locally(thing, op).await
        }
        Operation::QueryAction { .. } | Operation::CancelAction { .. } | Operation::QueryAllActions => {
            perform_locally(thing, op).await
        }
    }
}

/// One remote read, checked against the local schema: the local TD promises it.
async fn read(thing: &ExposedThing, remote: &dyn Remote, name: &str) -> Result<Value, Error> {
    let value = remote.read_property(name).await?;
    let property = thing.property(name)?;
    if !property.schema.is_valid(&value) {
        return Err(Error::Upstream(format!(
            "the remote's value {value} for '{name}' breaks the property's schema"
        )));
    }
    Ok(value)
}

/// readallproperties (write-only ones skipped) or readmultipleproperties (a write-only one
/// named is an error, as locally): the remote reads run at once.
async fn read_many(
    thing: &Arc<ExposedThing>,
    remote: Arc<dyn Remote>,
    names: Vec<String>,
    skip_write_only: bool,
) -> Result<Reply, Error> {
    let mut wanted = Vec::with_capacity(names.len());
    for name in names {
        match thing.readable(&name) {
            Ok(_) => wanted.push(name),
            Err(Error::WriteOnly(_)) if skip_write_only => {}
            Err(e) => return Err(e),
        }
    }
    remote.available()?;
    let reads = wanted.iter().map(|name| read(thing, &*remote, name));
    let values = futures_util::future::try_join_all(reads).await?;
    let object: Map<String, Value> = wanted.into_iter().zip(values).collect();
    Ok(Reply::Value(to_bytes(&Value::Object(object))?))
}

fn to_bytes(value: &Value) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}
