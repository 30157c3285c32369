//! The HTTP binding's one mapping of errors to responses: RFC 9457 `application/problem+json`
//! (built by `binding::problem`) with the status each kind of core error gets on HTTP, plus the
//! binding's own request errors (unsupported media type, body too large, wrong method, unknown
//! route). Core errors are mapped by their `ErrorKind`, never variant by variant.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::binding::problem::Problem;
use crate::core::{Error, ErrorKind};

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Anything a handler can fail with.
#[derive(Debug)]
pub(crate) enum HttpError {
    Core(Error),
    UnsupportedMediaType(String),
    PayloadTooLarge(usize),
    MethodNotAllowed(&'static str),
    NotFound(String),
    /// Query arguments that cannot be used (TDD `additionalResponses`: 400).
    BadQuery(String),
    /// The Host header names none of the device's names (DNS rebinding): 403.
    HostNotAllowed,
    Unauthorized(crate::security::Denied),
    TooManySubscriptions(crate::limits::LimitHit),
    /// The port holds its maximum of open connections: 503, and this connection closes.
    TooManyConnections(usize),
    /// The body did not arrive in time (slow client).
    BodyTimeout,
}

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        HttpError::Core(e)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Core(e) => write!(f, "{e}"),
            HttpError::UnsupportedMediaType(t) => {
                write!(f, "Content-Type '{t}' is not supported; send application/json")
            }
            HttpError::PayloadTooLarge(limit) => {
                write!(f, "the body is larger than the limit of {limit} bytes")
            }
            HttpError::MethodNotAllowed(allow) => write!(f, "method not allowed here; allowed: {allow}"),
            HttpError::NotFound(path) => write!(f, "no resource at '{path}'"),
            HttpError::HostNotAllowed => write!(
                f,
                "this Host is not one of the device's names (DNS rebinding protection); allow it with --allow-host"
            ),
            HttpError::Unauthorized(crate::security::Denied::Missing) => {
                write!(f, "credentials are required")
            }
            HttpError::Unauthorized(crate::security::Denied::Wrong) => {
                write!(f, "the credentials are not valid")
            }
            HttpError::BadQuery(what) => write!(f, "invalid query arguments: {what}"),
            HttpError::TooManySubscriptions(hit) => write!(f, "{hit}"),
            HttpError::TooManyConnections(n) => {
                write!(
                    f,
                    "the server already holds {n} open connections; try again later"
                )
            }
            HttpError::BodyTimeout => write!(f, "the request body did not arrive in time"),
        }
    }
}

/// The HTTP status of each kind of core error. Writing a read-only property (or reading a
/// write-only one) stays the 400 clients of this binding have always had; its problem names the
/// `rule`. A 405 would also need an `Allow` header per property.
pub(crate) fn kind_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BadRequest | ErrorKind::WrongDirection => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

impl HttpError {
    fn problem(&self, status: StatusCode) -> Problem {
        let (type_uri, title) = match self {
            HttpError::Core(e) => return Problem::of_error(e, e.type_uri(), status.as_u16()),
            HttpError::UnsupportedMediaType(_) => {
                ("/problems/unsupported-media-type", "Unsupported media type")
            }
            HttpError::PayloadTooLarge(_) => ("/problems/payload-too-large", "Payload too large"),
            HttpError::MethodNotAllowed(_) => ("/problems/method-not-allowed", "Method not allowed"),
            HttpError::NotFound(_) => ("/problems/not-found", "Not found"),
            HttpError::HostNotAllowed => ("/problems/host-not-allowed", "Host not allowed"),
            HttpError::Unauthorized(_) => ("/problems/unauthorized", "Unauthorized"),
            HttpError::TooManySubscriptions(_) => ("/problems/too-many-streams", "Too many open streams"),
            HttpError::TooManyConnections(_) => ("/problems/too-many-connections", "Too many connections"),
            HttpError::BodyTimeout => ("/problems/body-timeout", "Request body timeout"),
            HttpError::BadQuery(_) => ("/problems/bad-query", "Invalid query arguments"),
        };
        Problem::new(type_uri, title, status.as_u16(), self.to_string())
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::Core(e) => kind_status(e.kind()),
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::HostNotAllowed => StatusCode::FORBIDDEN,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::TooManySubscriptions(crate::limits::LimitHit::PerClient(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            HttpError::TooManySubscriptions(crate::limits::LimitHit::Total(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::TooManyConnections(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::BadQuery(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        match self {
            HttpError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            HttpError::Core(e) if e.kind() == ErrorKind::Unavailable => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            HttpError::TooManySubscriptions(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            HttpError::TooManyConnections(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
                response.insert_header((header::CONNECTION, HeaderValue::from_static("close")));
            }
            _ => {}
        }
        // Server errors and every limit hit get one log line; other client errors are the
        // client's business.
        let limit_hit = matches!(
            self,
            HttpError::TooManySubscriptions(_) | HttpError::PayloadTooLarge(_) | HttpError::BodyTimeout
        );
        if status.is_server_error() || limit_hit {
            tracing::warn!(status = status.as_u16(), "{self}");
        }
        response.body(self.problem(status).into_json())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body(e: HttpError) -> String {
        let bytes = e
            .error_response()
            .into_body()
            .try_into_bytes()
            .expect("a problem body is in memory");
        String::from_utf8(bytes.to_vec()).expect("a problem body is UTF-8")
    }

    /// The exact bytes of every core error's problem+json body: clients and tests compare them.
    #[test]
    fn problem_bodies_are_byte_stable() {
        let want = [
            r#"{"type":"/problems/thing-not-found","title":"Thing not found","status":404,"detail":"no thing named 'nothing'"}"#,
            r#"{"type":"/problems/affordance-not-found","title":"Affordance not found","status":404,"detail":"thing has no property named 'p'","kind":"property","name":"p"}"#,
            r#"{"type":"/problems/action-instance-not-found","title":"Action instance not found","status":404,"detail":"no instance 'a1' of action 'fade'"}"#,
            r#"{"type":"/problems/read-only","title":"Property is read-only","status":400,"detail":"property 'temperature' is read-only","name":"temperature","rule":"readOnly"}"#,
            r#"{"type":"/problems/write-only","title":"Property is write-only","status":400,"detail":"property 'secret' is write-only","name":"secret","rule":"writeOnly"}"#,
            r#"{"type":"/problems/unexpected-input","title":"Action takes no input","status":400,"detail":"action 'toggle' takes no input"}"#,
            r#"{"type":"/problems/malformed-payload","title":"Malformed payload","status":400,"detail":"payload is not valid JSON: expected value at line 1 column 1"}"#,
            r#"{"type":"/problems/schema-violation","title":"Schema violation","status":400,"detail":"500 is greater than the maximum of 100 (at /level, rule 'maximum')","pointer":"/level","rule":"maximum"}"#,
            r#"{"type":"/problems/not-queryable","title":"Action is synchronous","status":400,"detail":"action 'toggle' is synchronous and cannot be queried or cancelled"}"#,
            r#"{"type":"/problems/already-ended","title":"Action already ended","status":409,"detail":"action instance 'a1' has already ended"}"#,
            r#"{"type":"/problems/busy","title":"Too many running actions","status":503,"detail":"too many running actions (64); try again later"}"#,
            r#"{"type":"/problems/action-failed","title":"Action failed","status":500,"detail":"action failed: the command exited with 3"}"#,
            r#"{"type":"/problems/internal","title":"Internal error","status":500,"detail":"internal error: the state writer stopped"}"#,
            r#"{"type":"/problems/upstream-failed","title":"Remote thing failed","status":502,"detail":"the remote thing failed: coap://device/things/lamp answered 4.04"}"#,
            r#"{"type":"/problems/upstream-timeout","title":"Remote thing timed out","status":504,"detail":"the remote thing did not answer: coap://device/things/lamp did not answer within 5 s"}"#,
            r#"{"type":"/problems/upstream-away","title":"Remote thing unreachable","status":503,"detail":"the remote thing is unreachable: coap://device/things/lamp since 12:00:00Z"}"#,
        ];
        for e in Error::one_of_each() {
            let ordinal = e.ordinal();
            assert_eq!(body(HttpError::Core(e)), want[ordinal]);
        }
        assert_eq!(
            body(HttpError::PayloadTooLarge(10)),
            r#"{"type":"/problems/payload-too-large","title":"Payload too large","status":413,"detail":"the body is larger than the limit of 10 bytes"}"#
        );
    }

    #[test]
    fn a_busy_server_says_when_to_retry() {
        let response = HttpError::Core(Error::Busy(1)).error_response();
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let response = HttpError::Core(Error::AlreadyEnded("a".into())).error_response();
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
