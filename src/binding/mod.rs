//! Bindings: thin adapters between a wire protocol and the core. Each decodes requests into
//! `core::Operation`s, encodes replies and errors back, and contributes its forms to TDs through
//! `td::FormProvider`. No binding imports another; what several share without a wire of their
//! own lives next to them (`keepalive`, `problem`, `ws_inbound`, `ws_outbound`).
//!
//! As library API each binding shows only its configuration (part of
//! [`crate::runtime::Config`]) and its [`crate::td::FormProvider`], for building the TDs the
//! runtime serves outside of it: [`http`], [`coap`] and [`ws`]; and the HTTP port takes other
//! adapters' routes ([`http::Mount`]). How they serve is internal; the legacy WebThings adapter
//! is configured through the runtime only.

pub mod coap;
pub mod http;
pub(crate) mod keepalive;
pub(crate) mod legacy;
pub(crate) mod problem;
pub mod ws;
pub(crate) mod ws_inbound;
pub(crate) mod ws_outbound;

/// The socket of a plain TCP connection, recorded by the HTTP server when it accepts one (TLS
/// connections have none), for an endpoint that takes over the connection after an upgrade: the
/// WebSocket binding writes frames to it directly. It can only be made from an accepted stream,
/// and is only handed out by reference from the request's connection data, so whoever holds one
/// holds a request of that connection, which keeps the socket open.
#[derive(Debug)]
pub(crate) struct ConnectionSocket(std::os::fd::RawFd);

impl ConnectionSocket {
    /// Records the socket of a connection the HTTP server just accepted.
    pub(crate) fn of(stream: &impl std::os::fd::AsFd) -> Self {
        use std::os::fd::AsRawFd;
        ConnectionSocket(stream.as_fd().as_raw_fd())
    }

    /// The descriptor, for `ws_outbound`, which duplicates it while the request is handled.
    pub(crate) fn raw(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// What each binding answers for one error of every `core::Error` variant, side by side. The
/// core classifies (`Error::kind`) and each binding maps the kind on its own (none imports
/// another), so this is the one place that shows the four answers for every variant.
#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use actix_web::body::MessageBody;
    use coap_lite::MessageClass;
    use serde_json::Value;

    use crate::core::Error;

    /// (HTTP status, CoAP code, Web Thing Protocol error status, legacy API status). The match
    /// has no wildcard: a new variant does not compile until it has its row.
    fn expected(e: &Error) -> (u16, &'static str, u16, u16) {
        match e {
            Error::ThingNotFound(_)
            | Error::AffordanceNotFound { .. }
            | Error::ActionInstanceNotFound { .. } => (404, "4.04", 404, 404),
            // CoAP: each property is a resource, and a write-only one has no GET (a read-only one
            // no PUT), as its router answers for any method a resource lacks.
            Error::ReadOnly(_) | Error::WriteOnly(_) => (400, "4.05", 400, 400),
            Error::UnexpectedInput(_)
            | Error::MalformedPayload(_)
            | Error::Schema(_)
            | Error::NotQueryable(_) => (400, "4.00", 400, 400),
            Error::AlreadyEnded(_) => (409, "4.09", 409, 409),
            Error::Busy(_) => (503, "5.03", 503, 503),
            Error::ActionFailed(_) | Error::Internal(_) => (500, "5.00", 500, 500),
        }
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("an error body is JSON")
    }

    #[test]
    fn every_error_has_one_answer_per_binding() {
        for e in Error::one_of_each() {
            let (http, coap, wtp, legacy) = expected(&e);

            let response = super::http::problem::HttpError::Core(e.clone()).error_response();
            assert_eq!(response.status().as_u16(), http, "HTTP: {e:?}");
            let body = response
                .into_body()
                .try_into_bytes()
                .expect("a problem body is in memory");
            let body = json(&body);
            assert_eq!(body["status"], http, "HTTP body: {e:?}");
            assert_eq!(body["type"], e.type_uri(), "HTTP body: {e:?}");

            let response = super::coap::engine::error_response(&e);
            assert_eq!(
                MessageClass::Response(response.code).to_string(),
                coap,
                "CoAP: {e:?}"
            );

            let problem = super::ws::protocol::core_problem(&e);
            assert_eq!(problem["status"], wtp, "WTP: {e:?}");
            assert_eq!(
                problem["type"],
                format!("{}{wtp}", super::ws::protocol::ERROR_TYPE_BASE),
                "WTP: {e:?}"
            );

            let response = super::legacy::error::LegacyError::Core(e.clone()).error_response();
            assert_eq!(response.status().as_u16(), legacy, "legacy: {e:?}");
            let body = response
                .into_body()
                .try_into_bytes()
                .expect("an error body is in memory");
            assert_eq!(
                json(&body)["data"]["status"]
                    .as_str()
                    .and_then(|s| s.split(' ').next()),
                Some(legacy.to_string().as_str()),
                "legacy body: {e:?}"
            );
        }
    }
}
