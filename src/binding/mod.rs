//! Bindings: thin adapters between a wire protocol and the core. Each decodes requests into
//! `core::Operation`s, encodes replies and errors back, and contributes its forms to TDs through
//! `td::FormProvider`. No binding imports another; what several share without a wire of their
//! own lives next to them (`keepalive`, `path`, `problem`, `upgrade`, `ws_inbound`,
//! `ws_outbound`).
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
pub mod mqtt;
pub(crate) mod path;
pub(crate) mod problem;
pub(crate) mod upgrade;
pub mod ws;
pub(crate) mod ws_inbound;
pub(crate) mod ws_outbound;

/// The HTTP port's own scheme and address, registered with its routes: the origin of links in a
/// request that names none (no `Host`, no forwarding headers). Every adapter on the port reads it
/// through [`request_origin`].
#[derive(Debug, Clone)]
pub(crate) struct PortOrigin {
    /// Whether the port speaks TLS.
    pub(crate) secure: bool,
    /// The listener's address (`host:port`).
    pub(crate) address: String,
}

/// The origin (`scheme://host[:port]`) a request was sent to: what its forwarding headers
/// (`Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Host`) or its `Host` name, else the port's own.
pub(crate) fn request_origin(req: &actix_web::HttpRequest) -> String {
    use actix_web::http::header::{self, HeaderName};
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    let port = req.app_data::<PortOrigin>();
    let has = |name: &HeaderName| req.headers().contains_key(name);
    let forwarded = has(&header::FORWARDED);
    let scheme_named = forwarded || has(&X_FORWARDED_PROTO) || req.uri().scheme().is_some();
    let host_named = forwarded || has(&X_FORWARDED_HOST) || req.uri().authority().is_some();
    let scheme = match port {
        _ if scheme_named => None,
        Some(port) if port.secure => Some("https"),
        _ => Some("http"),
    };
    let host = match (host_named, port, req.headers().get(header::HOST)) {
        (false, Some(port), None) => Some(port.address.as_str()),
        (false, _, Some(host)) => host.to_str().ok(),
        _ => None,
    };
    match (scheme, host) {
        (Some(scheme), Some(host)) => format!("{scheme}://{host}"),
        // Only a proxy's headers, an absolute request target or an unreadable Host need actix's
        // `ConnectionInfo`, which allocates every field it parses; most requests never build it.
        _ => {
            let info = req.connection_info();
            format!(
                "{}://{}",
                scheme.unwrap_or(info.scheme()),
                host.unwrap_or(info.host())
            )
        }
    }
}

/// What each binding answers for one error of every `core::Error` variant, side by side. The
/// core classifies (`Error::kind`) and each binding maps the kind on its own (none imports
/// another), so this is the one place that shows the answers for every variant. MQTT has no
/// status codes: its problem details carry HTTP's number, checked here too.
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
            Error::Upstream(_) => (502, "5.02", 502, 502),
            Error::UpstreamTimeout(_) => (504, "5.04", 504, 504),
            Error::UpstreamAway(_) => (503, "5.03", 503, 503),
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

            let mqtt = json(&super::mqtt::problem(&e));
            assert_eq!(
                (mqtt["status"].as_u64(), mqtt["type"].as_str()),
                (Some(u64::from(http)), Some(e.type_uri())),
                "MQTT: {e:?}"
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
