//! wot-runtime: a W3C Web of Things device runtime. It serves things (properties, actions,
//! events) with a W3C TD 1.1 Thing Description each, over HTTP (WoT Profile: HTTP Basic + SSE),
//! the Web Thing Protocol on WebSocket, CoAP and the legacy WebThings API, and announces them
//! over mDNS. The `wot` binary is one user of this library; the API below is what it, the
//! examples and the tests use.
//!
//! # The API
//!
//! - [`core`]: the thing model. [`core::ThingBuilder`] makes an [`core::ExposedThing`] from a TD
//!   without forms and async action handlers; the [`core::Servient`] performs
//!   [`core::Operation`]s on things and hands out [`core::Subscription`]s; one
//!   [`core::Error`] type.
//! - [`things`]: thing files turned into [`things::Hosted`] things (with their behaviours and
//!   stable ids), and the bundled things.
//! - [`runtime`]: [`runtime::Config`] and [`runtime::Running`]: start every binding on a set of
//!   hosted things, stop them in order.
//! - [`td`]: thing files ([`td::definition`]), TD publication ([`td::TdPublisher`]) from the
//!   forms of [`td::FormProvider`]s, and W3C schema checks ([`td::validate`]).
//! - [`binding`]: each binding's configuration and form provider.
//! - [`security`], [`state`], [`discovery`], [`fd_limit`]: TLS and credentials, the durable
//!   state store, mDNS announcing and browsing, the open-file limit; what `wot serve` sets up
//!   before it starts a runtime.
//!
//! # Example
//!
//! A thing defined in Rust, served next to nothing else until Ctrl-C:
//!
//! ```no_run
//! use serde_json::json;
//! use wot_runtime::core::{Error, ThingBuilder};
//! use wot_runtime::runtime::{self, Config, Running};
//! use wot_runtime::things::Hosted;
//!
//! # #[tokio::main] async fn main() {
//! let model = json!({
//!     "title": "Counter",
//!     "properties": {"count": {"type": "integer", "readOnly": true, "default": 0}},
//!     "actions": {"increment": {"output": {"type": "integer"}}}
//! });
//! let counter = ThingBuilder::new("counter", model)
//!     .on_action("increment", |ctx| async move {
//!         let next = ctx.thing.property("count")?.value().as_i64().unwrap_or(0) + 1;
//!         ctx.thing.update_property("count", json!(next))?;
//!         Ok::<_, Error>(Some(json!(next)))
//!     })
//!     .build()
//!     .expect("a valid model");
//! let hosted = vec![Hosted { thing: counter, behaviors: Default::default() }];
//! let running = Running::start(Config::loopback(), hosted).await.expect("started");
//! println!("{}", running.ready_line()); // POST {http}/things/counter/actions/increment
//! runtime::wait_for_signal().await;
//! running.stop().await;
//! # }
//! ```
//!
//! Layers, arrows pointing down only (see ARCHITECTURE.md): `runtime` → `binding` → `td` →
//! `behavior` → `core`.

// The API is what is `pub` from here down: everything else is `pub(crate)` or private, and
// every public item says what it is.
#![warn(missing_docs, unreachable_pub)]

mod behavior;
pub mod binding;
pub mod core;
pub mod discovery;
pub mod fd_limit;
mod limits;
mod reload;
pub mod runtime;
pub mod security;
pub mod state;
pub mod td;
pub mod things;
