//! The legacy WebSocket at `/webthing/{id}` (HUBS.md §3 items 8-11): accepted with or without a
//! subprotocol (`webthing` or `webthingprotocol` echoed only when offered); `setProperty`,
//! `requestAction` and `addEventSubscription` in; `propertyStatus` (to every socket),
//! `actionStatus`, `event` (to subscribers only) and `error` out; pings answered, and a silent
//! peer pinged and then closed (1008) by the shared keepalive clock, as on the Web Thing
//! Protocol's socket: a hub that vanished without a FIN gives its socket and permit back.
//!
//! One task per socket. Its state is bounded: the event subscriptions are a subset of the
//! thing's event names, incoming messages are capped at `MAX_MESSAGE`, and a socket that reads
//! too slowly lags on the core's broadcast channel instead of holding anything back. Frames go
//! out through `binding::ws_outbound`, as on the Web Thing Protocol's socket, with a byte budget:
//! a hub that leaves `MAX_QUEUED` bytes unread misses the next update, and its socket is closed
//! (1013, Try Again Later); one whose queue stays full for the keepalive timeout is dropped.
//!
//! A socket serves the thing it opened on. When that thing is replaced (hot reload) the socket
//! is closed with 1012 (Service Restart), and with 1001 (Going Away) when it is removed: the
//! adapter's per-thing state (description, action queue, event log) is rebuilt for the new
//! thing, and a hub reconnects to it. A message that raced the reload is forwarded to the new
//! thing by the core or refused, never acknowledged and lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::error::{LegacyError, core_status};
use super::wire::{self, Incoming};
use super::{LegacyThing, MAX_MESSAGE};
use crate::binding::keepalive::{Keepalive, Tick};
use crate::binding::upgrade::{ReadSide, UpgradeSlot};
use crate::binding::ws_inbound::{self, Inbound, Messages};
use crate::binding::ws_outbound::Outbound;
use crate::core::{Ended, Operation, Received, Target, Topic};

/// Subprotocols echoed when a client offers them; none is required.
pub(crate) const SUBPROTOCOLS: &[&str] = &["webthing", "webthingprotocol"];

/// Bytes that may wait for a hub that does not read before updates are refused.
pub(crate) const MAX_QUEUED: usize = 256 * 1024;

/// RFC 6455 close codes this socket sends.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const RESTART: u16 = 1012;
const TRY_AGAIN_LATER: u16 = 1013;

pub(crate) fn open(
    req: &HttpRequest,
    legacy: Arc<LegacyThing>,
    permit: crate::limits::Permit,
    (shutdown, changes): (watch::Receiver<bool>, watch::Receiver<u64>),
    ping_interval: Duration,
) -> Result<HttpResponse, LegacyError> {
    let subscription = legacy.thing.subscribe(Target::Everything)?;
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(response) => response,
        Err(e) => return Ok(e.error_response()),
    };
    let Some(slot) = UpgradeSlot::of(req) else {
        return Err(LegacyError::bad_request(NOT_UPGRADABLE));
    };
    if let Some(protocol) = offered_subprotocol(req) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let statuses = legacy.subscribe_statuses();
    let keepalive = Keepalive::new(ping_interval, Instant::now());
    slot.take_over(move |upgraded| async move {
        let (reader, writer) = upgraded.split();
        let messages = Messages::new(reader, Inbound::new(MAX_MESSAGE, MAX_MESSAGE));
        let outbound = Outbound::new(MAX_QUEUED, writer);
        run(
            legacy,
            (outbound, messages),
            (subscription, statuses),
            (shutdown, changes),
            keepalive,
        )
        .await;
        drop(permit);
    });
    Ok(HttpResponse::from(response.finish()).map_into_boxed_body())
}

/// Why a WebSocket handshake that is otherwise right cannot be accepted: its connection cannot be
/// taken over (it came over HTTP/2, or with a body).
const NOT_UPGRADABLE: &str =
    "this request cannot open a WebSocket: send the handshake over HTTP/1.1, without a body";

/// The first subprotocol the client offers that this socket speaks (RFC 6455 §4.2.2).
fn offered_subprotocol(req: &HttpRequest) -> Option<&'static str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|offered| SUBPROTOCOLS.iter().copied().find(|p| *p == offered.trim()))
}

/// Why the socket ends: a close frame to send, or nothing to say (the peer is gone or stuck).
enum End {
    Close(u16, String),
    Drop,
}

async fn run(
    legacy: Arc<LegacyThing>,
    (outbound, mut messages): (Outbound, Messages<ReadSide>),
    (mut subscription, mut statuses): (crate::core::Subscription, broadcast::Receiver<Bytes>),
    (mut shutdown, changes): (watch::Receiver<bool>, watch::Receiver<u64>),
    mut keepalive: Keepalive,
) {
    let mut events: HashSet<String> = HashSet::new();
    let mut ticker = keepalive.ticker();
    // Made once, not per turn of the loop: it registers with the watch only when it fires.
    let retired = retired(legacy.clone(), changes);
    tokio::pin!(retired);
    // How long the queue may stay full, and a close take to go out: the keepalive timeout, or
    // a minute when keepalive is off.
    let patience = match keepalive.timeout() {
        t if t.is_zero() => Duration::from_secs(60),
        t => t,
    };
    let mut full_since: Option<tokio::time::Instant> = None;
    let end = loop {
        let has_room = outbound.has_room();
        if has_room {
            full_since = None;
        }
        let stuck_at = *full_since.get_or_insert_with(tokio::time::Instant::now) + patience;
        // Biased: an action's `created` (adapter channel) goes out before the core's later
        // statuses of the same instance, and shutdown is noticed first.
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break End::Close(GOING_AWAY, "server shutting down".into()),
            ended = &mut retired => break closing(ended, legacy.slug()),
            // Frames the connection could not take at once.
            _ = outbound.write_backlog() => continue,
            room = tokio::time::timeout_at(stuck_at, outbound.room()), if !has_room => {
                if room.is_err() {
                    tracing::debug!(thing = legacy.slug(), "legacy socket peer stopped reading; dropping it");
                    break End::Drop;
                }
                continue;
            }
            status = statuses.recv() => match status {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break End::Drop,
            },
            received = subscription.recv() => match update(&legacy, received, &events) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(end) => break end,
            },
            incoming = messages.recv(), if has_room => {
                keepalive.heard(Instant::now());
                match on_incoming(&legacy, &outbound, incoming, &mut events).await {
                    Some(end) => break end,
                    None => continue,
                }
            }
            _ = ticker.tick() => match keepalive.tick(Instant::now()) {
                Tick::Nothing => continue,
                Tick::Ping => {
                    outbound.ping(b"wot");
                    continue;
                }
                Tick::Dead => {
                    tracing::debug!(thing = legacy.slug(), "legacy socket peer silent; closing");
                    break End::Close(POLICY, keepalive.dead_reason());
                }
            },
        };
        // An update the hub has no room for: it missed it, which it must not do silently.
        if !frame.is_empty() && outbound.notification(&frame).is_err() {
            break End::Close(
                TRY_AGAIN_LATER,
                "updates were dropped because this socket was not read; reconnect".into(),
            );
        }
    };
    finish(&outbound, messages, end, patience).await;
}

/// Sends the close (waiting at most `patience` for it to go out) and lets the hub close its
/// side, or drops the socket.
async fn finish(outbound: &Outbound, messages: Messages<ReadSide>, end: End, patience: Duration) {
    match end {
        End::Close(code, reason) => {
            outbound.close_within(Some(code), &reason, patience).await;
            messages.discard_until_closed(ws_inbound::LINGER).await;
        }
        End::Drop => outbound.abort(),
    }
}

/// The frame of a core notification for this hub, if it wants it; or the end of the socket
/// when its thing no longer serves.
fn update(legacy: &LegacyThing, received: Received, events: &HashSet<String>) -> Result<Option<Bytes>, End> {
    match received {
        Received::Notification(n) => match &n.topic {
            Topic::Event(name) if !events.contains(&**name) => Ok(None),
            // The core announces asynchronous actions (whoever requested them); actions this
            // adapter runs itself announce through `statuses`.
            Topic::Action { .. } | Topic::Property(_) | Topic::Event(_) => Ok(Some(legacy.frame(&n))),
        },
        Received::Lagged(missed) => {
            tracing::warn!(thing = legacy.slug(), missed, "legacy socket fell behind");
            Ok(None)
        }
        Received::Closed(ended) => Err(closing(ended, legacy.slug())),
    }
}

/// One message (or the end of the stream) from the hub: answered on `outbound`, or the end of
/// the socket.
async fn on_incoming(
    legacy: &Arc<LegacyThing>,
    outbound: &Outbound,
    incoming: Option<Result<ws_inbound::Incoming, ws_inbound::InboundError>>,
    events: &mut HashSet<String>,
) -> Option<End> {
    match incoming {
        None => return Some(End::Drop),
        Some(Ok(ws_inbound::Incoming::Text(text))) => {
            if let Some(reply) = handle(legacy, &text, events).await {
                outbound.text(&reply);
            }
        }
        Some(Ok(ws_inbound::Incoming::Binary(_))) => {
            outbound.text(&wire::error_message(400, "send text messages, not binary"));
        }
        Some(Ok(ws_inbound::Incoming::Ping(p))) => outbound.pong(&p),
        Some(Ok(ws_inbound::Incoming::Pong(_))) => {}
        Some(Ok(ws_inbound::Incoming::Close(_))) => return Some(End::Close(1000, String::new())),
        Some(Err(e)) => {
            tracing::debug!(thing = legacy.slug(), "legacy socket protocol error: {e}");
            return Some(End::Drop);
        }
    }
    None
}

/// The close for a socket whose thing no longer serves.
fn closing(ended: Ended, slug: &str) -> End {
    match ended {
        Ended::Removed => End::Close(GOING_AWAY, format!("thing '{slug}' was removed")),
        Ended::Changed => End::Close(RESTART, format!("thing '{slug}' was reloaded; reconnect")),
    }
}

/// Resolves once the socket's thing no longer serves: replaced (`Changed`) or removed.
async fn retired(legacy: Arc<LegacyThing>, mut changes: watch::Receiver<u64>) -> Ended {
    loop {
        if let Some(ended) = legacy.thing.standing() {
            return ended;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn error_frame(e: &crate::core::Error) -> Bytes {
    wire::error_message(core_status(e).as_u16(), &e.to_string())
}

/// Acts on one text message; returns the frame to answer with, if any.
async fn handle(legacy: &Arc<LegacyThing>, text: &str, events: &mut HashSet<String>) -> Option<Bytes> {
    let message = match wire::parse_incoming(text) {
        Ok(m) => m,
        Err(e) => return Some(wire::error_message(400, &e.to_string())),
    };
    match message {
        Incoming::SetProperty(values) => {
            let op = if values.len() == 1 {
                let (name, value) = values.into_iter().next()?;
                Operation::WriteProperty(name, value)
            } else {
                Operation::WriteMultipleProperties(values)
            };
            // Success is reported by the propertyStatus every socket receives.
            match crate::core::servient::perform(&legacy.thing, op).await {
                Ok(_) => None,
                Err(e) => Some(error_frame(&e)),
            }
        }
        Incoming::RequestAction(requests) => {
            for (name, params) in requests {
                if let Err(e) = legacy.request_action(&name, &params) {
                    return Some(error_frame(&e));
                }
            }
            None
        }
        Incoming::AddEventSubscription(names) => {
            for name in names {
                if legacy.thing.event(&name).is_err() {
                    return Some(wire::error_message(
                        404,
                        &format!("thing has no event named '{name}'"),
                    ));
                }
                events.insert(name);
            }
            None
        }
    }
}
