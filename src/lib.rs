//! wot-runtime: a W3C Web of Things device runtime. It serves things (properties, actions,
//! events) with a W3C TD 1.1 Thing Description each, over HTTP (WoT Profile: HTTP Basic + SSE),
//! the Web Thing Protocol on WebSocket, CoAP and the legacy WebThings API, and announces them
//! over mDNS. The `wot` binary is one user of this library.
//!
//! # The API
//!
//! What is public is what three kinds of user need; everything else is private to the crate.
//!
//! To serve things:
//! - [`core`]: the thing model. [`core::ThingBuilder`] makes an [`core::ExposedThing`] from a TD
//!   without forms and async action handlers; one [`core::Error`] type, classified once
//!   ([`core::ErrorKind`]).
//! - [`things`]: thing files turned into [`things::Hosted`] things (with their behaviours and
//!   stable ids), and the bundled things.
//! - [`runtime`]: [`runtime::Config`] (each binding's part is its own type, in [`binding`]),
//!   [`runtime::Running::start`] on a set of hosted things, [`runtime::Running::stop`].
//! - [`security`], [`state`], [`fd_limit`], [`discovery`]: TLS and credentials, the durable
//!   state store, the open-file limit, mDNS announcing and browsing; what `wot serve` sets up
//!   around a runtime.
//!
//! To use things: [`consumer::Consumer`] fetches a TD (http, https, coap) and hands out a
//! [`consumer::ConsumedThing`], whose operations run over HTTP, CoAP or the Web Thing Protocol
//! by the TD's forms; observations are [`consumer::Observation`] streams.
//!
//! To check documents: [`td::definition`] reads thing files (each mistake a [`td::Problem`]);
//! [`td::validate`] checks TDs and Thing Models against the W3C JSON Schemas.
//!
//! To add a binding from another crate: it performs [`core::Operation`]s through
//! [`core::Servient::handle`] and follows changes through [`core::Servient::subscribe`]; a
//! [`td::FormProvider`] adds its forms to every TD (for the [`td::Origins`] a client sees); and a
//! [`runtime::Adapter`] in [`runtime::Config::adapters`] mounts its routes on the HTTP port
//! ([`binding::http::Mount`]), behind the same checks as every other request there.
//!
//! # Example
//!
//! A thing defined in Rust, served on loopback (any free port) until SIGINT or SIGTERM:
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
pub mod bridge;
pub mod consumer;
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
