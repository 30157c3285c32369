//! Thing Descriptions: thing definitions read from `things/` (`definition`), the contract through
//! which bindings contribute forms (`forms`), TD publication with its byte cache (`publish`), and
//! validation against the W3C schemas (`validate`).
//!
//! It depends on the core (to read exposed things) and on `behavior::spec` (runtime keys of a
//! thing file); it never depends on a binding.

pub mod definition;
pub mod directory;
pub mod forms;
pub mod model;
pub mod problem;
pub mod publish;
pub mod validate;

pub use definition::ThingDefinition;
pub use forms::{FormProvider, Origins};
pub use problem::Problem;
pub use publish::{TD_MEDIA_TYPE, TdPublisher};
