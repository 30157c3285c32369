//! Bindings: thin adapters between a wire protocol and the core. Each decodes requests into
//! `core::Operation`s, encodes replies and errors back, and contributes its forms to TDs through
//! `td::FormProvider`. No binding imports another.

pub mod coap;
pub mod http;
pub mod legacy;
pub mod ws;
