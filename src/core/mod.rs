//! The protocol-agnostic core: the servient and its exposed things, the operations bindings
//! perform on them, DataSchema validation, the action registry and the event hub.
//!
//! Nothing in here may import actix, coap-lite, mdns-sd or any socket type (ARCHITECTURE.md,
//! invariants); bindings depend on the core, never the reverse.

pub mod actions;
pub mod clock;
pub mod error;
pub mod events;
pub mod operation;
pub mod schema;
pub mod servient;
pub mod store;
pub mod thing;

pub use actions::{ActionLimits, ActionStatus, Status};
pub use error::{AffordanceKind, Error, ErrorKind, Result, SchemaViolation};
pub use events::{
    Continues, EncodingSlot, Ended, Notification, Received, SeenUpTo, Subscription, Target, Topic,
};
pub use operation::{Operation, Reply};
pub use servient::Servient;
pub use thing::{ActionContext, ActionHandler, ExposedThing, ThingBuilder};
