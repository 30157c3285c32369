//! Bindings: thin adapters between a wire protocol and the core. Each decodes requests into
//! `core::Operation`s, encodes replies and errors back, and contributes its forms to TDs through
//! `td::FormProvider`. No binding imports another.

pub mod coap;
pub mod http;
pub mod keepalive;
pub mod legacy;
pub mod ws;

/// The descriptor of a plain TCP connection, recorded by the HTTP server when it accepts one
/// (TLS connections have none), for an endpoint that takes over the connection after an
/// upgrade: the WebSocket binding writes frames to it directly. Valid while a request of that
/// connection is being handled.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(pub std::os::fd::RawFd);
