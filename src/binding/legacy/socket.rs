//! The legacy WebSocket at `/webthing/{id}` (HUBS.md §3 items 8-11): accepted with or without a
//! subprotocol (`webthing` or `webthingprotocol` echoed only when offered); `setProperty`,
//! `requestAction` and `addEventSubscription` in; `propertyStatus` (to every socket),
//! `actionStatus`, `event` (to subscribers only) and `error` out; pings answered.
//!
//! One task per socket. Its state is bounded: the event subscriptions are a subset of the
//! thing's event names, incoming messages are capped at `MAX_MESSAGE`, and a socket that reads
//! too slowly lags on the core's broadcast channel instead of holding anything back.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::Session;
use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::error::{LegacyError, core_status};
use super::wire::{self, Incoming};
use super::{LegacyThing, MAX_MESSAGE};
use crate::core::{Operation, Received, Target, Topic};

/// Subprotocols echoed when a client offers them; none is required.
pub const SUBPROTOCOLS: &[&str] = &["webthing", "webthingprotocol"];

pub fn open(
    req: &HttpRequest,
    body: web::Payload,
    legacy: Arc<LegacyThing>,
    permit: crate::limits::Permit,
    shutdown: watch::Receiver<bool>,
) -> Result<HttpResponse, LegacyError> {
    let subscription = legacy.thing.subscribe(Target::Everything)?;
    let (response, session, stream) = actix_ws::handle_with_protocols(req, body, SUBPROTOCOLS)
        .map_err(|e| LegacyError::bad_request(format!("WebSocket handshake failed: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let statuses = legacy.subscribe_statuses();
    let socket = run(legacy, session, stream, subscription, statuses, shutdown);
    actix_web::rt::spawn(async move {
        socket.await;
        drop(permit);
    });
    Ok(response)
}

async fn send(session: &mut Session, frame: &Bytes) -> bool {
    if frame.is_empty() {
        return true;
    }
    match std::str::from_utf8(frame) {
        Ok(text) => session.text(text.to_owned()).await.is_ok(),
        Err(_) => true,
    }
}

async fn run(
    legacy: Arc<LegacyThing>,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    mut subscription: crate::core::Subscription,
    mut statuses: broadcast::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events: HashSet<String> = HashSet::new();
    loop {
        // Biased: an action's `created` (adapter channel) goes out before the core's later
        // statuses of the same instance, and shutdown is noticed first.
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            status = statuses.recv() => {
                match status {
                    Ok(frame) => {
                        if !send(&mut session, &frame).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
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
                    Received::Closed => break,
                };
                if !send(&mut session, &frame).await {
                    return;
                }
            }
            incoming = stream.recv() => {
                let Some(incoming) = incoming else { break };
                let ok = match incoming {
                    Ok(actix_ws::AggregatedMessage::Text(text)) => {
                        let reply = handle(&legacy, &text, &mut events).await;
                        match reply {
                            Some(frame) => send(&mut session, &frame).await,
                            None => true,
                        }
                    }
                    Ok(actix_ws::AggregatedMessage::Binary(_)) => {
                        send(&mut session, &wire::error_message(400, "send text messages, not binary")).await
                    }
                    Ok(actix_ws::AggregatedMessage::Ping(p)) => session.pong(&p).await.is_ok(),
                    Ok(actix_ws::AggregatedMessage::Pong(_)) => true,
                    Ok(actix_ws::AggregatedMessage::Close(_)) => break,
                    Err(e) => {
                        tracing::debug!(thing = legacy.slug(), "legacy socket protocol error: {e}");
                        break;
                    }
                };
                if !ok {
                    return;
                }
            }
        }
    }
    let _ = session.close(None).await;
}

fn error_frame(e: &crate::core::Error) -> Bytes {
    wire::error_message(core_status(e).as_u16(), &e.to_string())
}

/// Acts on one text message; returns the frame to answer with, if any.
async fn handle(legacy: &Arc<LegacyThing>, text: &str, events: &mut HashSet<String>) -> Option<Bytes> {
    let message = match wire::parse_incoming(text) {
        Ok(m) => m,
        Err(e) => return Some(wire::error_message(400, &e)),
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
