//! Thing Descriptions: thing definitions read from `things/` (`definition`), the contract through
//! which bindings contribute forms (`forms`), TD publication with its byte cache (`publish`), and
//! validation against the W3C schemas (`validate`).
//!
//! It depends on the core (to read exposed things) and on `behavior::spec` (runtime keys of a
//! thing file); it never depends on a binding. Inside, `definition` uses `model` (Thing Model
//! instances) and both report [`Problem`]s from `problem`; `model` never uses `definition`.
//!
//! As library API: read thing files with [`definition::load_dir`], [`definition::load_file`] or
//! [`definition::parse`] (each mistake a [`Problem`]); publish TDs with a [`TdPublisher`] fed by
//! [`FormProvider`]s (a binding implements one to add its [`Form`]s, made with [`form`], for the
//! [`Origins`] a client sees); check documents against the W3C schemas with [`validate`]. The
//! directory TD and Thing Model instantiation are internal.

pub mod definition;
pub(crate) mod directory;
mod forms;
mod model;
mod problem;
mod proxy;
mod publish;
pub mod validate;

pub use definition::ThingDefinition;
pub use forms::{Form, FormProvider, MqttProtocol, MqvForm, Origins, TdExt, form, path_segment};
pub use problem::Problem;
pub use proxy::Proxy;
pub(crate) use publish::nosec;
pub use publish::{ACTION_ID_VARIABLE, BuildError, TD_MEDIA_TYPE, TdPublisher};
/// The TD operation types a [`form`] names (wot-td's).
pub use wot_td::thing::FormOperation;
