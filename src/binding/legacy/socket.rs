//! The legacy WebSocket at `/webthing/{id}` (HUBS.md §3 items 8-11): accepted with or without a
//! subprotocol (`webthing` or `webthingprotocol` echoed only when offered); `setProperty`,
//! `requestAction` and `addEventSubscription` in; `propertyStatus` (to every socket),
//! `actionStatus`, `event` (to subscribers only) and `error` out; pings answered, and a silent
//! peer pinged and then closed (1008) by the shared keepalive clock, as on the Web Thing
//! Protocol's socket: a hub that vanished without a FIN gives its socket and permit back.
//!
//! One task per socket. Its state is bounded: the event subscriptions are a subset of the
//! thing's event names, incoming messages are capped at `MAX_MESSAGE`, and a socket that reads
//! too slowly lags on the core's broadcast channel instead of holding anything back. A socket
//! that takes no frame for the keepalive timeout is ended (see `in_time`).
//!
//! A socket serves the thing it opened on. When that thing is replaced (hot reload) the socket
//! is closed with 1012 (Service Restart), and with 1001 (Going Away) when it is removed: the
//! adapter's per-thing state (description, action queue, event log) is rebuilt for the new
//! thing, and a hub reconnects to it. A message that raced the reload is forwarded to the new
//! thing by the core or refused, never acknowledged and lost.
//!
//! Outgoing frames go through actix-ws's session and the HTTP dispatcher; unlike the Web Thing
//! Protocol's socket there is no byte budget per socket, so what a stuck hub is owed waits in
//! their buffers until the timeout ends it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::Session;
use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::error::{LegacyError, core_status};
use super::wire::{self, Incoming};
use super::{LegacyThing, MAX_MESSAGE};
use crate::binding::keepalive::{Keepalive, Tick};
use crate::core::{Ended, Operation, Received, Target, Topic};

/// Subprotocols echoed when a client offers them; none is required.
pub(crate) const SUBPROTOCOLS: &[&str] = &["webthing", "webthingprotocol"];

pub(crate) fn open(
    req: &HttpRequest,
    body: web::Payload,
    legacy: Arc<LegacyThing>,
    permit: crate::limits::Permit,
    (shutdown, changes): (watch::Receiver<bool>, watch::Receiver<u64>),
    ping_interval: Duration,
) -> Result<HttpResponse, LegacyError> {
    let subscription = legacy.thing.subscribe(Target::Everything)?;
    let (response, session, stream) = actix_ws::handle_with_protocols(req, body, SUBPROTOCOLS)
        .map_err(|e| LegacyError::bad_request(format!("WebSocket handshake failed: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let statuses = legacy.subscribe_statuses();
    let keepalive = Keepalive::new(ping_interval, Instant::now());
    let socket = run(
        legacy,
        session,
        stream,
        (subscription, statuses),
        (shutdown, changes),
        keepalive,
    );
    actix_web::rt::spawn(async move {
        socket.await;
        drop(permit);
    });
    Ok(response)
}

/// Sends one text frame; false when the socket is closed or the peer does not take it in time.
async fn send(session: &mut Session, frame: &Bytes, keepalive: &Keepalive) -> bool {
    if frame.is_empty() {
        return true;
    }
    match std::str::from_utf8(frame) {
        Ok(text) => in_time(session.text(text.to_owned()), keepalive).await,
        Err(_) => true,
    }
}

/// Whether a frame handed to actix-ws went in before the keepalive timeout. A peer that stops
/// reading fills actix-ws's channel; without the bound this task would wait on it, and not see
/// its keepalive clock, for as long as TCP takes to give up.
async fn in_time(sent: impl Future<Output = Result<(), actix_ws::Closed>>, keepalive: &Keepalive) -> bool {
    if keepalive.interval().is_zero() {
        return sent.await.is_ok();
    }
    matches!(tokio::time::timeout(keepalive.timeout(), sent).await, Ok(Ok(())))
}

async fn run(
    legacy: Arc<LegacyThing>,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    (mut subscription, mut statuses): (crate::core::Subscription, broadcast::Receiver<Bytes>),
    (mut shutdown, changes): (watch::Receiver<bool>, watch::Receiver<u64>),
    mut keepalive: Keepalive,
) {
    let mut events: HashSet<String> = HashSet::new();
    let mut ticker = keepalive.ticker();
    // Made once, not per turn of the loop: it registers with the watch only when it fires.
    let retired = retired(legacy.clone(), changes);
    tokio::pin!(retired);
    let ended = loop {
        // Biased: an action's `created` (adapter channel) goes out before the core's later
        // statuses of the same instance, and shutdown is noticed first.
        tokio::select! {
            biased;
            _ = shutdown.changed() => break None,
            ended = &mut retired => break Some(ended),
            status = statuses.recv() => {
                match status {
                    Ok(frame) => {
                        if !send(&mut session, &frame, &keepalive).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break None,
                }
            }
            received = subscription.recv() => {
                let frame = match received {
                    Received::Notification(n) => match &n.topic {
                        Topic::Event(name) if !events.contains(&**name) => continue,
                        // The core announces asynchronous actions (whoever requested them);
                        // actions this adapter runs itself announce through `statuses`.
                        Topic::Action { .. } | Topic::Property(_) | Topic::Event(_) => legacy.frame(&n),
                    },
                    Received::Lagged(missed) => {
                        tracing::warn!(thing = legacy.slug(), missed, "legacy socket fell behind");
                        continue;
                    }
                    Received::Closed(ended) => break Some(ended),
                };
                if !send(&mut session, &frame, &keepalive).await {
                    return;
                }
            }
            incoming = stream.recv() => {
                let Some(incoming) = incoming else { break None };
                keepalive.heard(Instant::now());
                let ok = match incoming {
                    Ok(actix_ws::AggregatedMessage::Text(text)) => {
                        let reply = handle(&legacy, &text, &mut events).await;
                        match reply {
                            Some(frame) => send(&mut session, &frame, &keepalive).await,
                            None => true,
                        }
                    }
                    Ok(actix_ws::AggregatedMessage::Binary(_)) => {
                        let refusal = wire::error_message(400, "send text messages, not binary");
                        send(&mut session, &refusal, &keepalive).await
                    }
                    Ok(actix_ws::AggregatedMessage::Ping(p)) => in_time(session.pong(&p), &keepalive).await,
                    Ok(actix_ws::AggregatedMessage::Pong(_)) => true,
                    Ok(actix_ws::AggregatedMessage::Close(_)) => break None,
                    Err(e) => {
                        tracing::debug!(thing = legacy.slug(), "legacy socket protocol error: {e}");
                        break None;
                    }
                };
                if !ok {
                    return;
                }
            }
            _ = ticker.tick() => match keepalive.tick(Instant::now()) {
                Tick::Nothing => {}
                Tick::Ping => {
                    if !in_time(session.ping(b"wot"), &keepalive).await {
                        return;
                    }
                }
                Tick::Dead => {
                    let reason = actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Policy,
                        description: Some(keepalive.dead_reason()),
                    };
                    tracing::debug!(thing = legacy.slug(), "legacy socket peer silent; closing");
                    let _ = tokio::time::timeout(keepalive.timeout(), session.close(Some(reason))).await;
                    return;
                }
            },
        }
    };
    let reason = ended.map(|ended| match ended {
        Ended::Removed => actix_ws::CloseReason {
            code: actix_ws::CloseCode::Away,
            description: Some(format!("thing '{}' was removed", legacy.slug())),
        },
        Ended::Changed => actix_ws::CloseReason {
            code: actix_ws::CloseCode::Restart,
            description: Some(format!("thing '{}' was reloaded; reconnect", legacy.slug())),
        },
    });
    let _ = session.close(reason).await;
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
