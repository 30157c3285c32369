//! wot-runtime: a W3C Web of Things device runtime.
//!
//! Layers, arrows pointing down only (see ARCHITECTURE.md): `binding` → `td` → `behavior` →
//! `core`. The `runtime` module wires them together for `wot serve`.

pub mod behavior;
pub mod binding;
pub mod core;
pub mod discovery;
pub mod fd_limit;
pub mod limits;
pub mod reload;
pub mod runtime;
pub mod security;
pub mod state;
pub mod td;
pub mod things;
