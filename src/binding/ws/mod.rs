//! The WebSocket binding: the W3C Web Thing Protocol (Community Group draft) on each thing's URL,
//! `GET /things/{id}` with `Upgrade: websocket`, subprotocol `webthingprotocol` (a client that
//! offers no subprotocol is accepted too). One socket carries every operation of its thing and
//! pushes property changes, events and action status.
//!
//! `protocol` decodes and encodes messages (sans-IO), `session` keeps per-connection state
//! (sans-IO), `connection` drives one socket, `fanout` fans a thing's notifications out to the
//! sockets of one worker thread, `forms` describes the endpoint in TDs. The handshake
//! is actix-http's (`ws::handshake`); the connection is then taken over (`binding::upgrade`):
//! incoming messages are decoded by `binding::ws_inbound` from its reading side, and outgoing
//! frames go through `binding::ws_outbound` to its writing side, plain TCP or TLS alike. The binding turns messages into core operations and subscriptions; it
//! must not keep thing state, reach into another binding, or let one client's socket hold up the
//! thing or other clients.

pub(crate) mod connection;
pub(crate) mod fanout;
pub(crate) mod forms;
pub(crate) mod protocol;
pub(crate) mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, guard, web};
use tokio::sync::watch;

use super::problem::Problem;
use super::upgrade::UpgradeSlot;
use super::ws_inbound::{Inbound, Messages};
use super::ws_outbound::Outbound;
use crate::core::Servient;
use crate::limits::Subscribers;
pub use forms::WsForms;
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
/// The guards sit on a `/things` scope and the path is read without a pattern (the router would
/// compile a regex per worker): a request that does not upgrade costs a prefix comparison and a
/// header lookup here, and an upgrade to any other URL under `/things` falls through to the
/// app's default service, the HTTP binding.
pub(crate) fn service(state: WsState) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
    let data = web::Data::new(state);
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/things")
                .guard(guard::Get())
                .guard(guard::fn_guard(wants_upgrade))
                .guard(guard::fn_guard(|ctx| thing_id(ctx.head().uri.path()).is_some()))
                .app_data(data.clone())
                .default_service(web::to(upgrade)),
        );
    }
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

/// The thing a WebSocket URL names: `/things/{id}`, one segment, percent-decoded; None for any
/// other path (the scope's guard sends those on to the HTTP binding).
fn thing_id(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let id = path.strip_prefix("/things/")?;
    if id.contains('/') {
        return None;
    }
    crate::binding::path::param(id)
}

async fn upgrade(req: HttpRequest, state: web::Data<WsState>) -> HttpResponse {
    let found = thing_id(req.path()).map(|id| state.servient.thing(&id));
    let thing = match found {
        Some(Ok(thing)) => thing,
        None => return refuse(StatusCode::NOT_FOUND, format!("no thing at '{}'", req.path())),
        Some(Err(e)) => {
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
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(response) => response,
        Err(e) => return e.error_response(),
    };
    let Some(slot) = UpgradeSlot::of(&req) else {
        return refuse(StatusCode::BAD_REQUEST, NOT_UPGRADABLE.into());
    };
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
    if offers_subprotocol(&req) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    }
    let (servient, shutdown, config) = (
        state.servient.clone(),
        state.shutdown.clone(),
        state.config.clone(),
    );
    let names = (thing.slug.clone(), thing.id.clone());
    slot.take_over(move |upgraded| async move {
        let (reader, writer) = upgraded.split();
        let messages = Messages::new(reader, Inbound::new(config.max_frame, config.max_message));
        let outbound = Outbound::new(config.max_queued, writer);
        connection::run(servient, names, outbound, messages, shutdown, config).await;
        drop(permit);
    });
    HttpResponse::from(response.finish()).map_into_boxed_body()
}

/// Why a WebSocket handshake that is otherwise right cannot be accepted: its connection cannot be
/// taken over (it came over HTTP/2, or with a body).
pub(crate) const NOT_UPGRADABLE: &str =
    "this request cannot open a WebSocket: send the handshake over HTTP/1.1, without a body";

/// Whether the client offers the Web Thing Protocol's subprotocol (RFC 6455 §4.2.2: the
/// server echoes one it offered, or none).
fn offers_subprotocol(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}
