//! The integration tests, in one test binary so that the crate is linked once for all of them.
//! Each module is one area, with its own module doc saying what it covers; spec-notes cite its
//! tests as `module::test_name`. `common` is the harness they share: a real runtime on loopback
//! and clients to talk to it.
//!
//! The tests of every module run in parallel in this one process, so none may change
//! process-wide state (the open-file limit, environment variables, the working directory), and
//! temporary directories are named per module and test. Run one area with a filter, e.g.
//! `cargo test --test it coap::`.

mod common;

mod behaviours;
mod bridge;
mod cli;
mod coap;
mod coap_multicast;
mod coaps;
mod consumer_cli;
mod discovery;
mod durable;
mod explorer;
mod fuzz;
mod http_bad_input;
mod http_consumers;
mod http_forms;
mod http_routes;
mod http_sse_actions;
mod legacy;
mod library_api;
mod limits;
mod mqtt;
mod readme;
mod reload;
mod reload_integrity;
mod scale;
mod security;
mod thing_models;
mod upgrade;
mod ws;
mod ws_descriptors;
