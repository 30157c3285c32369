//! The WebSocket binding: the W3C Web Thing Protocol (Community Group draft) on each thing's URL,
//! `GET /things/{id}` with `Upgrade: websocket`, subprotocol `webthingprotocol` (a client that
//! offers no subprotocol is accepted too). One socket carries every operation of its thing and
//! pushes property changes, events and action status.
//!
//! `protocol` decodes and encodes messages (sans-IO), `session` keeps per-connection state
//! (sans-IO), `connection` drives one socket, `fanout` fans a thing's notifications out to the
//! sockets of one worker thread, `outbound` writes a socket's frames (itself on plain TCP,
//! through the HTTP dispatcher under TLS), `forms` describes the endpoint in TDs. actix-ws does
//! the handshake and decodes incoming frames; outgoing frames bypass its session (see
//! `outbound` for why). The binding turns messages into core operations and subscriptions; it
//! must not keep thing state, reach into another binding, or let one client's socket hold up the
//! thing or other clients.

pub(crate) mod connection;
pub(crate) mod fanout;
pub(crate) mod forms;
pub(crate) mod outbound;
pub(crate) mod protocol;
pub(crate) mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use tokio::sync::watch;

use super::ConnectionSocket;
use super::problem::Problem;
use crate::core::Servient;
use crate::limits::Subscribers;
pub use forms::WsForms;
use outbound::Outbound;
pub use protocol::SUBPROTOCOL;

/// Limits and clocks of the binding.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// A ping goes out after this much silence from the client; after twice this the
    /// connection is closed (1008) as dead. Zero switches keepalive off.
    pub ping_interval: Duration,
    /// Largest message (after joining continuation frames) that is processed; a larger one is
    /// answered with a 413 error and the socket stays open.
    pub max_message: usize,
    /// Largest single frame the codec accepts; a larger one ends the connection with 1009,
    /// because its payload cannot be skipped.
    pub max_frame: usize,
    /// Bytes that may wait for a client that does not read before notifications are refused
    /// (the socket then closes with 1013) and no further request is read.
    pub max_queued: usize,
    /// How long the outgoing queue may stay full before the client is considered stuck and the
    /// connection is dropped; also how long a close frame may take to go out.
    pub send_timeout: Duration,
    /// Synchronous action invocations running at once per socket; further messages wait.
    pub max_in_flight: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            ping_interval: Duration::from_secs(30),
            max_message: 64 * 1024,
            max_frame: 1024 * 1024,
            max_queued: 256 * 1024,
            send_timeout: Duration::from_secs(60),
            max_in_flight: 16,
        }
    }
}

/// What every socket of the binding shares.
pub(crate) struct WsState {
    pub(crate) servient: Arc<Servient>,
    /// Turns true when the runtime shuts down; every socket then closes with 1001.
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) config: WsConfig,
    /// The pool of long-lived subscriptions shared with SSE: each socket holds one slot.
    pub(crate) subscribers: Subscribers,
}

/// Whether a request asks for a WebSocket upgrade (`Upgrade: websocket`, any case).
fn wants_upgrade(ctx: &guard::GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get_all(header::UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Registers the endpoint: `GET /things/{id}` guarded on `Upgrade: websocket`, so it must be
/// configured before the HTTP binding's own `/things/{id}` (which then still serves the TD).
pub(crate) fn service(state: WsState) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
    let data = web::Data::new(state);
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/things/{id}")
                .guard(guard::Get())
                .guard(guard::fn_guard(wants_upgrade))
                .app_data(data.clone())
                .route(web::get().to(upgrade)),
        );
    }
}

/// Whether an I/O error from the message stream is the message (its fragments joined) growing
/// past `max_message`, which is answered with a 413 while the socket stays open; any other is
/// the end of the connection. actix-ws reports that limit as a bare `io::Error` of kind `Other`
/// with no type of its own. Of the others it reports as I/O, a text frame that is not UTF-8 and
/// a frame with reserved bits set are `InvalidData`, and a failing connection is `Other` around
/// the HTTP layer's `PayloadError`: that source is what tells the two `Other`s apart. A test
/// drives actix-ws through all of them, so that a release that reports them differently fails
/// it rather than closing sockets it should keep.
fn exceeds_message_limit(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other
        && e.get_ref()
            .is_some_and(|source| !source.is::<actix_web::error::PayloadError>())
}

/// A refused upgrade: problem+json (`binding::problem`) with the draft's error type and the
/// status's reason phrase as title.
fn refuse(status: StatusCode, detail: String) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Refused");
    let problem = Problem::new(
        &protocol::error_type(status.as_u16()),
        title,
        status.as_u16(),
        detail,
    );
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(problem.into_json())
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<WsState>,
) -> HttpResponse {
    let thing = match state.servient.thing(&path) {
        Ok(thing) => thing,
        Err(e) => {
            let status = StatusCode::from_u16(protocol::kind_status(e.kind()))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return refuse(status, e.to_string());
        }
    };
    if *state.shutdown.borrow() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        );
    }
    let client = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let permit = match state.subscribers.try_open(client) {
        Ok(permit) => permit,
        Err(hit) => {
            tracing::warn!(%client, "WebSocket refused: {hit}");
            let status = StatusCode::from_u16(hit.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = refuse(status, hit.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            return response;
        }
    };
    match actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL]) {
        Ok((response, session, stream)) => {
            let config = state.config.clone();
            let stream = stream
                .max_frame_size(config.max_frame)
                .aggregate_continuations()
                .max_continuation_size(config.max_message);
            // Frames go out through our queue instead of actix-ws's session and body. Its body is
            // kept (never polled) because dropping it is how the message stream learns that the
            // connection is over.
            drop(session);
            let (response, actix_ws_body) = response.into_parts();
            let socket = req.conn_data::<ConnectionSocket>().map(|s| s.0);
            let (outbound, body) = Outbound::new(config.max_queued, socket);
            let run = connection::run(
                state.servient.clone(),
                (thing.slug.clone(), thing.id.clone()),
                outbound,
                stream,
                state.shutdown.clone(),
                config,
            );
            actix_web::rt::spawn(async move {
                run.await;
                drop(permit);
            });
            response
                .set_body(body.keeping(actix_ws_body))
                .map_into_boxed_body()
        }
        Err(e) => e.error_response(),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::FromRequest;
    use actix_web::body::MessageBody;
    use actix_web::error::PayloadError;
    use actix_ws::ProtocolError;
    use bytes::Bytes;

    use super::*;

    /// A client frame (masked with a zero key, so the payload goes as it is).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    }

    /// The first error actix-ws's aggregated stream (with a message limit of 4 bytes) reports
    /// for these incoming chunks.
    async fn first_error(chunks: Vec<Result<Bytes, PayloadError>>) -> ProtocolError {
        let req = actix_web::test::TestRequest::get()
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header((header::CONNECTION, "upgrade"))
            .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
            .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_request();
        let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(futures_util::stream::iter(chunks));
        let mut payload = actix_web::dev::Payload::from(stream);
        let body = web::Payload::from_request(&req, &mut payload)
            .await
            .expect("a payload is always extracted");
        // The response is kept until the end: dropping it tells the stream the connection closed.
        let (_response, _session, stream) = actix_ws::handle(&req, body).expect("a valid handshake");
        let mut stream = stream.aggregate_continuations().max_continuation_size(4);
        loop {
            match stream.recv().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the stream ended without an error"),
            }
        }
    }

    fn io(e: ProtocolError) -> std::io::Error {
        match e {
            ProtocolError::Io(e) => e,
            other => panic!("not an I/O error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn only_a_message_over_the_limit_keeps_the_socket() {
        // A text message in two fragments, 8 bytes in all: over the limit of 4.
        let over = [frame(0x01, b"1234"), frame(0x80, b"5678")].concat();
        let not_utf8 = frame(0x81, &[0xff, 0xfe]);
        let reserved_bits = frame(0xc1, b"x");
        let cases = [
            ("over the limit", vec![Ok(over.into())], true),
            ("not UTF-8", vec![Ok(not_utf8.into())], false),
            ("reserved bits", vec![Ok(reserved_bits.into())], false),
            (
                "connection failed",
                vec![Err(PayloadError::Incomplete(None))],
                false,
            ),
        ];
        for (what, chunks, keeps_socket) in cases {
            let error = io(first_error(chunks).await);
            assert_eq!(exceeds_message_limit(&error), keeps_socket, "{what}: {error:?}");
        }
    }

    #[test]
    fn a_refused_upgrade_is_problem_json() {
        let response = refuse(StatusCode::NOT_FOUND, "no thing named 'x'".into());
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        let body = response
            .into_body()
            .try_into_bytes()
            .expect("a problem body is in memory");
        assert_eq!(
            &body[..],
            br#"{"type":"https://w3c.github.io/web-thing-protocol/errors#404","title":"Not Found","status":404,"detail":"no thing named 'x'"}"#
        );
    }
}
