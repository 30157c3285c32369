//! The protocol-agnostic core: the servient and its exposed things, the operations bindings
//! perform on them, DataSchema validation, the action registry and the event hub.
//!
//! Nothing in here may import actix, coap-lite, mdns-sd or any socket type (ARCHITECTURE.md,
//! invariants); bindings depend on the core, never the reverse.
//!
//! As library API this is the thing model:
//! - a thing is built with [`ThingBuilder`] (a TD without forms, plus async action handlers
//!   that get an [`ActionContext`]) and served as an [`ExposedThing`];
//! - the [`Servient`] holds the things; a binding decodes its wire format into an
//!   [`Operation`], calls [`Servient::handle`] and encodes the [`Reply`] or [`Error`]
//!   (classified once by [`Error::kind`]);
//! - changes arrive through [`Servient::subscribe`]: a [`Subscription`] to a [`Target`]
//!   receives [`Notification`]s (payload already serialised) until it is told it lagged or
//!   [`Ended`].

pub(crate) mod actions;
pub(crate) mod clock;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod operation;
pub(crate) mod remote;
pub(crate) mod schema;
pub(crate) mod servient;
pub(crate) mod store;
pub(crate) mod thing;

pub use actions::{ActionLimits, ActionStatus, Failure, Status};
pub use error::{AffordanceKind, Error, ErrorKind, Result, SchemaViolation};
pub(crate) use events::{EncodingSlot, Tap};
pub use events::{Ended, Notification, Received, SeenUpTo, Subscription, Target, Topic};
pub use operation::{Operation, Reply};
pub use remote::{Remote, RemoteFuture};
pub use schema::DataSchema;
pub use servient::Servient;
pub use thing::{
    Action, ActionContext, ActionFuture, ActionHandler, Event, ExposedThing, Property, ThingBuilder,
};
