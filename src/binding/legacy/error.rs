//! The legacy adapter's one mapping of errors to HTTP responses: the status each kind of core
//! error gets (by its `ErrorKind`, never variant by variant) and Mozilla's error body
//! `{"messageType":"error","data":{"status","message"}}` (HUBS.md §3 item 5), which is also what
//! its WebSocket sends.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::wire;
use crate::core::{Error, ErrorKind};

#[derive(Debug)]
pub(crate) enum LegacyError {
    Core(Error),
    /// A request the legacy API cannot take, with the status to answer.
    Request(StatusCode, String),
    /// A method the resource does not take: 405 with the `Allow` header listing those it does.
    MethodNotAllowed(&'static str),
    /// The shared stream and socket limit was hit (429 or 503, with Retry-After).
    Limit(crate::limits::LimitHit),
}

impl From<Error> for LegacyError {
    fn from(e: Error) -> Self {
        LegacyError::Core(e)
    }
}

impl LegacyError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        LegacyError::Request(StatusCode::BAD_REQUEST, message.into())
    }
}

impl std::fmt::Display for LegacyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegacyError::Core(e) => write!(f, "{e}"),
            LegacyError::Request(_, m) => f.write_str(m),
            LegacyError::MethodNotAllowed(allow) => write!(f, "method not allowed here; allowed: {allow}"),
            LegacyError::Limit(hit) => write!(f, "{hit}"),
        }
    }
}

/// The status code of a core error on the legacy API.
pub(crate) fn core_status(e: &Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BadRequest | ErrorKind::WrongDirection => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

impl ResponseError for LegacyError {
    fn status_code(&self) -> StatusCode {
        match self {
            LegacyError::Core(e) => core_status(e),
            LegacyError::Request(status, _) => *status,
            LegacyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            LegacyError::Limit(hit) => {
                StatusCode::from_u16(hit.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "legacy API: {self}");
        }
        let mut response = HttpResponse::build(status);
        // A refusal that passes with time (a limit, the thing busy or unavailable) says when to
        // try again, as on the W3C API.
        let unavailable = matches!(self, LegacyError::Core(e) if e.kind() == ErrorKind::Unavailable);
        if matches!(self, LegacyError::Limit(_)) || unavailable {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        if let LegacyError::MethodNotAllowed(allow) = self {
            response.insert_header((actix_web::http::header::ALLOW, *allow));
        }
        response
            .content_type("application/json")
            .body(wire::error_message(status.as_u16(), &self.to_string()))
    }
}
