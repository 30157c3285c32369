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

/// Serves one socket until it closes: biased, so an action's `created` (adapter channel) goes
/// out before the core's later statuses of the same instance, and shutdown is noticed first.
async fn run(
    legacy: Arc<LegacyThing>,
    session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    (mut subscription, mut statuses): (crate::core::Subscription, broadcast::Receiver<Bytes>),
    (mut shutdown, changes): (watch::Receiver<bool>, watch::Receiver<u64>),
    keepalive: Keepalive,
) {
    let mut ticker = keepalive.ticker();
    // Made once, not per turn of the loop: it registers with the watch only when it fires.
    let retired = retired(legacy.clone(), changes);
    tokio::pin!(retired);
    let mut socket = Socket {
        legacy,
        session,
        keepalive,
        events: HashSet::new(),
    };
    let ended = loop {
        let flow = tokio::select! {
            biased;
            _ = shutdown.changed() => Flow::Close(None),
            ended = &mut retired => Flow::Close(Some(ended)),
            status = statuses.recv() => socket.on_status(status).await,
            received = subscription.recv() => socket.on_received(received).await,
            incoming = stream.recv() => socket.on_incoming(incoming).await,
            _ = ticker.tick() => socket.on_tick().await,
        };
        match flow {
            Flow::Continue => {}
            Flow::Close(ended) => break ended,
            Flow::Dead => return socket.close_dead().await,
            Flow::Drop => return,
        }
    };
    socket.close(ended).await;
}

/// What the socket does after one event.
enum Flow {
    /// Goes on serving.
    Continue,
    /// Closes: 1001 or 1012 when the thing was removed or replaced, a plain close otherwise.
    Close(Option<Ended>),
    /// The peer fell silent: closes with 1008 (Policy), waiting for it only so long.
    Dead,
    /// Ends without a close frame: the peer does not take frames in time, or the socket is
    /// closed already.
    Drop,
}

/// One socket's state.
struct Socket {
    legacy: Arc<LegacyThing>,
    session: Session,
    keepalive: Keepalive,
    /// The events this socket subscribed to (`addEventSubscription`).
    events: HashSet<String>,
}

impl Socket {
    /// Sends one frame; a peer that does not take it in time is dropped.
    async fn send(&mut self, frame: &Bytes) -> Flow {
        if send(&mut self.session, frame, &self.keepalive).await {
            Flow::Continue
        } else {
            Flow::Drop
        }
    }

    /// An action status from the adapter's own channel.
    async fn on_status(&mut self, status: Result<Bytes, broadcast::error::RecvError>) -> Flow {
        match status {
            Ok(frame) => self.send(&frame).await,
            Err(broadcast::error::RecvError::Lagged(_)) => Flow::Continue,
            Err(broadcast::error::RecvError::Closed) => Flow::Close(None),
        }
    }

    /// What the core published on the thing: property changes and actions for every socket,
    /// events for their subscribers only.
    async fn on_received(&mut self, received: Received) -> Flow {
        let frame = match received {
            Received::Notification(n) => match &n.topic {
                Topic::Event(name) if !self.events.contains(&**name) => return Flow::Continue,
                // The core announces asynchronous actions (whoever requested them); actions
                // this adapter runs itself announce through `statuses`.
                Topic::Action { .. } | Topic::Property(_) | Topic::Event(_) => self.legacy.frame(&n),
            },
            Received::Lagged(missed) => {
                tracing::warn!(thing = self.legacy.slug(), missed, "legacy socket fell behind");
                return Flow::Continue;
            }
            Received::Closed(ended) => return Flow::Close(Some(ended)),
        };
        self.send(&frame).await
    }

    /// A frame from the peer (which proves it alive): text messages are acted on, pings
    /// answered, binary refused.
    async fn on_incoming(
        &mut self,
        incoming: Option<Result<actix_ws::AggregatedMessage, actix_ws::ProtocolError>>,
    ) -> Flow {
        let Some(incoming) = incoming else {
            return Flow::Close(None);
        };
        self.keepalive.heard(Instant::now());
        match incoming {
            Ok(actix_ws::AggregatedMessage::Text(text)) => {
                match handle(&self.legacy, &text, &mut self.events).await {
                    Some(frame) => self.send(&frame).await,
                    None => Flow::Continue,
                }
            }
            Ok(actix_ws::AggregatedMessage::Binary(_)) => {
                let refusal = wire::error_message(400, "send text messages, not binary");
                self.send(&refusal).await
            }
            Ok(actix_ws::AggregatedMessage::Ping(p)) => {
                if in_time(self.session.pong(&p), &self.keepalive).await {
                    Flow::Continue
                } else {
                    Flow::Drop
                }
            }
            Ok(actix_ws::AggregatedMessage::Pong(_)) => Flow::Continue,
            Ok(actix_ws::AggregatedMessage::Close(_)) => Flow::Close(None),
            Err(e) => {
                tracing::debug!(thing = self.legacy.slug(), "legacy socket protocol error: {e}");
                Flow::Close(None)
            }
        }
    }

    /// The keepalive clock: ping a silent peer; a dead one is closed (see [`Socket::close_dead`]).
    async fn on_tick(&mut self) -> Flow {
        match self.keepalive.tick(Instant::now()) {
            Tick::Nothing => Flow::Continue,
            Tick::Ping if in_time(self.session.ping(b"wot"), &self.keepalive).await => Flow::Continue,
            Tick::Ping => Flow::Drop,
            Tick::Dead => Flow::Dead,
        }
    }

    /// Closes a socket whose peer fell silent with 1008, waiting no longer than the keepalive
    /// timeout for the close frame to go in.
    async fn close_dead(self) {
        let reason = actix_ws::CloseReason {
            code: actix_ws::CloseCode::Policy,
            description: Some(self.keepalive.dead_reason()),
        };
        tracing::debug!(thing = self.legacy.slug(), "legacy socket peer silent; closing");
        let _ = tokio::time::timeout(self.keepalive.timeout(), self.session.close(Some(reason))).await;
    }

    /// Closes the socket, saying why when its thing was removed (1001) or replaced (1012).
    async fn close(self, ended: Option<Ended>) {
        let slug = self.legacy.slug();
        let reason = ended.map(|ended| match ended {
            Ended::Removed => actix_ws::CloseReason {
                code: actix_ws::CloseCode::Away,
                description: Some(format!("thing '{slug}' was removed")),
            },
            Ended::Changed => actix_ws::CloseReason {
                code: actix_ws::CloseCode::Restart,
                description: Some(format!("thing '{slug}' was reloaded; reconnect")),
            },
        });
        let _ = self.session.close(reason).await;
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
