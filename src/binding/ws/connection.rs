//! Drives one Web Thing Protocol socket: reads messages, performs them on the thing through the
//! core, writes the answers, keeps the connection alive and closes it on shutdown.
//!
//! One task per socket, on the worker thread that serves the socket. Everything it sends goes
//! through the socket's [`Outbound`] queue (written to the socket at once on plain TCP, drained
//! by the HTTP dispatcher under TLS); on plain TCP the task also writes what the socket could
//! not take at once. Property and event notifications do not pass through here: this thread's
//! `fanout` relay queues them directly. The task handles what changes its state (action status
//! notifications, lag, the thing going away). A client that stops reading fills its queue; the
//! task then reads no further request, notifications overflow, and the socket is closed with
//! 1013 (with the count) rather than silently missing changes. The thing and the other sockets
//! never wait for it. No protocol decision is made here that `protocol` or `session` could make
//! without IO.
//!
//! The socket names its thing by slug and looks it up in the servient for every request, so a
//! reload never leaves it talking to a replaced thing. Its notifications follow a reload that
//! leaves the thing's affordances as they were; otherwise the socket is closed with 1012
//! (Service Restart: read the new TD and reconnect), and with 1001 (Going Away) when the thing
//! is removed, whether or not it was subscribed to anything.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, ProtocolError};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::WsConfig;
use super::fanout::{self, Inbox};
use super::outbound::Outbound;
use super::protocol::{self, Decoded, Frame, Rejection, Request};
use super::session::{Interests, names_thing};
use crate::binding::keepalive::{Keepalive, Tick};
use crate::core::servient::perform;
use crate::core::{Ended, Error, ExposedThing, Notification, Operation, Received, Reply, Servient, Topic};

type Pending = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// The socket's thing and what its consumer listens to.
struct Connection {
    servient: Arc<Servient>,
    /// The thing's slug: the thing itself is looked up for each request.
    slug: String,
    /// The thing's id when the socket opened, for answers when the thing is gone.
    opened_id: String,
    /// Shared with this thread's fan-out relay, which routes notifications by it.
    interests: Rc<RefCell<Interests>>,
    subscription: Option<Inbox>,
    outbound: Outbound,
}

/// The answer to one message: now, or when a synchronous action ends.
enum Answer {
    Now(Bytes),
    Later(Pending),
}

/// Why the loop ended.
enum End {
    /// Send this close frame (none: echo a close that had no status).
    Close(Option<CloseCode>, String),
    /// The peer is gone or stuck; just drop the connection.
    Drop,
}

/// Serves one socket of the thing under `slug` (whose id was `opened_id` when it opened).
pub(crate) async fn run(
    servient: Arc<Servient>,
    (slug, opened_id): (String, String),
    outbound: Outbound,
    mut stream: AggregatedMessageStream,
    mut shutdown: watch::Receiver<bool>,
    config: WsConfig,
) {
    let mut conn = Connection {
        servient: servient.clone(),
        slug,
        opened_id,
        interests: Rc::new(RefCell::new(Interests::default())),
        subscription: None,
        outbound: outbound.clone(),
    };
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut keepalive = Keepalive::new(config.ping_interval, Instant::now());
    let mut ticker = keepalive.ticker();
    // Since when the client has left the outbound queue full.
    let mut full_since: Option<tokio::time::Instant> = None;

    // Made once: a new one per turn of the loop would register with the watch every time.
    let shutting_down = shutdown.wait_for(|down| *down);
    tokio::pin!(shutting_down);
    let removed = thing_removed(servient, conn.slug.clone());
    tokio::pin!(removed);
    let end = loop {
        let has_room = outbound.has_room();
        let stuck_at = match (has_room, full_since) {
            (true, _) => {
                full_since = None;
                None
            }
            (false, Some(since)) => Some(since + config.send_timeout),
            (false, None) => {
                let now = tokio::time::Instant::now();
                full_since = Some(now);
                Some(now + config.send_timeout)
            }
        };
        let frame: Bytes = tokio::select! {
            biased;
            _ = &mut shutting_down => {
                break End::Close(Some(CloseCode::Away), "server shutting down".into());
            }
            _ = &mut removed => {
                break End::Close(Some(CloseCode::Away), format!("thing '{}' was removed", conn.slug));
            }
            // Frames the socket could not take at once (direct writes only).
            _ = outbound.write_backlog() => continue,
            room = tokio::time::timeout_at(stuck_at.unwrap_or_else(tokio::time::Instant::now), outbound.room()),
                if !has_room =>
            {
                if room.is_err() {
                    tracing::debug!("websocket client stopped reading; dropping the connection");
                    break End::Drop;
                }
                continue;
            }
            message = stream.recv(), if has_room && pending.len() < config.max_in_flight => {
                keepalive.heard(Instant::now());
                match message {
                    None => break End::Drop,
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if text.len() > config.max_message {
                            let rejection = Rejection::too_large_message(&text, config.max_message);
                            protocol::rejection_response(&conn.thing_id(), &rejection)
                        } else {
                            match conn.handle(&text).await {
                                Answer::Now(frame) => frame,
                                Answer::Later(future) => {
                                    pending.push(future);
                                    continue;
                                }
                            }
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        protocol::rejection_response(&conn.thing_id(), &Rejection::binary())
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        outbound.pong(&payload);
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        // Echo the client's close and stop.
                        let (code, description) = reason.map_or((None, None), |r| (Some(r.code), r.description));
                        break End::Close(code, description.unwrap_or_default());
                    }
                    Some(Err(ProtocolError::Io(e))) if super::exceeds_message_limit(&e) => {
                        protocol::rejection_response(&conn.thing_id(), &Rejection::too_large(config.max_message))
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        outbound.text(&protocol::rejection_response(&conn.thing_id(), &Rejection::too_large(config.max_frame)));
                        break End::Close(Some(CloseCode::Size), format!("frame larger than {} bytes", config.max_frame));
                    }
                    Some(Err(e)) => {
                        tracing::debug!("websocket protocol error: {e}");
                        break End::Close(Some(CloseCode::Protocol), format!("protocol error: {e}"));
                    }
                }
            }
            Some(frame) = pending.next(), if !pending.is_empty() => frame,
            received = next_notification(&mut conn.subscription) => match received {
                Received::Notification(n) => match conn.notification(&n) {
                    Some(frame) => frame,
                    None => continue,
                },
                Received::Lagged(missed) => {
                    break End::Close(
                        Some(CloseCode::Again),
                        format!("lagged: {missed} notifications dropped because this socket was not read; reconnect and read again"),
                    );
                }
                Received::Closed(Ended::Removed) => {
                    break End::Close(Some(CloseCode::Away), format!("thing '{}' was removed", conn.slug));
                }
                Received::Closed(Ended::Changed) => {
                    break End::Close(
                        Some(CloseCode::Restart),
                        format!("thing '{}' was reloaded with changed affordances; read its TD and reconnect", conn.slug),
                    );
                }
            },
            _ = ticker.tick() => match keepalive.tick(Instant::now()) {
                Tick::Nothing => continue,
                Tick::Ping => {
                    outbound.ping(b"wot");
                    continue;
                }
                Tick::Dead => {
                    break End::Close(
                        Some(CloseCode::Policy),
                        keepalive.dead_reason(),
                    );
                }
            },
        };
        outbound.text(&frame);
    };
    // Notifications stop before the close goes out.
    conn.subscription = None;
    match end {
        End::Close(code, description) => {
            outbound.close(code.map(u16::from), &description);
            if tokio::time::timeout(config.send_timeout, outbound.drained())
                .await
                .is_err()
            {
                outbound.abort();
            }
        }
        End::Drop => outbound.abort(),
    }
}

/// Resolves once the servient no longer has a thing under `slug`.
async fn thing_removed(servient: Arc<Servient>, slug: String) {
    let mut changes = servient.watch_changes();
    loop {
        if servient.thing(&slug).is_err() {
            return;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The next notification, or never when nothing is subscribed.
async fn next_notification(subscription: &mut Option<Inbox>) -> Received {
    match subscription {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// The thing that serves under this socket's slug now.
    fn thing(&self) -> Result<Arc<ExposedThing>, Error> {
        self.servient.thing(&self.slug)
    }

    /// The id answers name the thing by.
    fn thing_id(&self) -> String {
        self.thing()
            .map_or_else(|_| self.opened_id.clone(), |t| t.id.clone())
    }

    /// The interests, for a change: this thread's fan-out relays recompute their routes.
    fn interests_mut(&self) -> std::cell::RefMut<'_, Interests> {
        fanout::interests_changed();
        self.interests.borrow_mut()
    }

    fn ensure_subscribed(&mut self) -> Result<(), Error> {
        if self.subscription.is_none() {
            self.subscription = Some(fanout::subscribe(
                &self.thing()?,
                self.interests.clone(),
                self.outbound.clone(),
            )?);
        }
        Ok(())
    }

    fn release_if_idle(&mut self) {
        if self.interests.borrow().is_empty() {
            self.subscription = None;
        }
    }

    /// This socket's frame for a notification, if its consumer wants it.
    fn notification(&mut self, n: &Notification) -> Option<Bytes> {
        let (frame, ended) = {
            let interests = self.interests.borrow();
            let delivery = interests.route(&n.topic)?;
            match &n.topic {
                Topic::Property(_) | Topic::Event(_) => {
                    let prefix = protocol::notification_prefix(&self.thing_id(), n);
                    let frame = protocol::notification(&prefix, delivery.operation, delivery.correlation_id);
                    (frame, None)
                }
                Topic::Action { name, id } => {
                    let mut status: Value = serde_json::from_slice(&n.data).unwrap_or(Value::Null);
                    let ended = matches!(
                        status.get("status").and_then(Value::as_str),
                        Some("completed" | "failed")
                    );
                    protocol::from_profile_status(id, &mut status);
                    let frame = protocol::envelope(&self.thing_id(), "notification", n.data.len() + 64)
                        .str("operation", delivery.operation)
                        .str("name", name)
                        .json("status", &status)
                        .str("timestamp", &n.timestamp)
                        .opt_str("correlationID", delivery.correlation_id)
                        .finish();
                    (frame, ended.then_some(id))
                }
            }
        };
        if let Some(id) = ended {
            self.interests_mut().untrack_action(id);
            self.release_if_idle();
        }
        Some(frame)
    }

    /// Decodes and performs one message.
    async fn handle(&mut self, text: &str) -> Answer {
        let decoded = match protocol::decode(text) {
            Ok(d) => d,
            Err(rejection) => return Answer::Now(protocol::rejection_response(&self.thing_id(), &rejection)),
        };
        if let Some(id) = &decoded.thing_id
            && !self.thing().is_ok_and(|thing| names_thing(&thing, id))
        {
            let mut rejection = Rejection::unknown_thing(id);
            rejection.correlation_id = decoded.correlation_id.clone();
            rejection.operation = Some(decoded.request.operation().into());
            return Answer::Now(protocol::rejection_response(&self.thing_id(), &rejection));
        }
        let operation = decoded.request.operation();
        let name = decoded.request.name().map(str::to_owned);
        let correlation = decoded.correlation_id.clone();
        match self.perform(decoded).await {
            Ok(answer) => answer,
            Err(error) => Answer::Now(error_frame(
                &self.thing_id(),
                operation,
                name.as_deref(),
                correlation.as_deref(),
                &error,
            )),
        }
    }

    async fn perform(&mut self, decoded: Decoded) -> Result<Answer, Error> {
        let Decoded {
            correlation_id,
            request,
            ..
        } = decoded;
        let thing = self.thing()?;
        let op = request.operation();
        let respond = |capacity: usize| protocol::response(&thing.id, op, capacity);
        let done = |frame: Frame| {
            Ok(Answer::Now(
                frame.opt_str("correlationID", correlation_id.as_deref()).finish(),
            ))
        };
        match request {
            Request::ReadProperty { name } => {
                let value = expect_value(perform(&thing, Operation::ReadProperty(name.clone())).await?)?;
                done(respond(value.len() + 64).str("name", &name).raw("value", &value))
            }
            Request::WriteProperty { name, value } => {
                perform(&thing, Operation::WriteProperty(name.clone(), value)).await?;
                // The write is confirmed: answer with the value now stored, unless it is
                // write-only (then the draft forbids a value).
                let frame = respond(64).str("name", &name);
                match self.thing().and_then(|now| now.read_property(&name)) {
                    Ok(stored) => done(frame.raw("value", &stored)),
                    Err(_) => done(frame),
                }
            }
            Request::ReadAllProperties => {
                let values = expect_value(perform(&thing, Operation::ReadAllProperties).await?)?;
                done(respond(values.len()).raw("values", &values))
            }
            Request::ReadMultipleProperties { names } => {
                let values = perform(&thing, Operation::ReadMultipleProperties(names))
                    .await
                    .map_err(unknown_name_is_bad_request)?;
                let values = expect_value(values)?;
                done(respond(values.len()).raw("values", &values))
            }
            Request::WriteAllProperties { values } => {
                let missing: Vec<&str> = thing
                    .properties
                    .iter()
                    .filter(|(name, p)| !p.read_only && !values.contains_key(*name))
                    .map(|(name, _)| name.as_str())
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::MalformedPayload(format!(
                        "writeallproperties needs a value for every writable property; missing: {}",
                        missing.join(", ")
                    )));
                }
                self.write_multiple(&thing, values, op, correlation_id.as_deref())
                    .await
            }
            Request::WriteMultipleProperties { values } => {
                self.write_multiple(&thing, values, op, correlation_id.as_deref())
                    .await
            }
            Request::ObserveProperty { name } => {
                if thing.property(&name)?.write_only {
                    return Err(Error::WriteOnly(name));
                }
                self.ensure_subscribed()?;
                self.interests_mut()
                    .observe_property(&name, correlation_id.clone());
                done(respond(32).str("name", &name))
            }
            Request::UnobserveProperty { name } => {
                thing.property(&name)?;
                self.interests_mut().unobserve_property(&name);
                self.release_if_idle();
                done(respond(32).str("name", &name))
            }
            Request::ObserveAllProperties => {
                self.ensure_subscribed()?;
                self.interests_mut()
                    .observe_all_properties(correlation_id.clone());
                done(respond(0))
            }
            Request::UnobserveAllProperties => {
                self.interests_mut().unobserve_all_properties();
                self.release_if_idle();
                done(respond(0))
            }
            Request::SubscribeEvent { name } => {
                thing.event(&name)?;
                self.ensure_subscribed()?;
                self.interests_mut()
                    .subscribe_event(&name, correlation_id.clone());
                done(respond(32).str("name", &name))
            }
            Request::UnsubscribeEvent { name } => {
                thing.event(&name)?;
                self.interests_mut().unsubscribe_event(&name);
                self.release_if_idle();
                done(respond(32).str("name", &name))
            }
            Request::SubscribeAllEvents => {
                self.ensure_subscribed()?;
                self.interests_mut().subscribe_all_events(correlation_id.clone());
                done(respond(0))
            }
            Request::UnsubscribeAllEvents => {
                self.interests_mut().unsubscribe_all_events();
                self.release_if_idle();
                done(respond(0))
            }
            Request::InvokeAction { name, input } => {
                if thing.action(&name)?.synchronous {
                    // May take a while: answered when it ends, while the socket keeps serving.
                    let thing_id = thing.id.clone();
                    let thing = thing.clone();
                    return Ok(Answer::Later(Box::pin(async move {
                        let reply = perform(
                            &thing,
                            Operation::InvokeAction {
                                name: name.clone(),
                                input,
                            },
                        )
                        .await;
                        match reply {
                            Ok(Reply::Output(output)) => {
                                let frame =
                                    protocol::response(&thing_id, "invokeaction", 64).str("name", &name);
                                let frame = match &output {
                                    Some(output) => frame.json("output", output),
                                    None => frame,
                                };
                                frame.opt_str("correlationID", correlation_id.as_deref()).finish()
                            }
                            Ok(other) => error_frame(
                                &thing_id,
                                "invokeaction",
                                Some(&name),
                                correlation_id.as_deref(),
                                &Error::Internal(format!("unexpected reply {other:?}")),
                            ),
                            Err(e) => error_frame(
                                &thing_id,
                                "invokeaction",
                                Some(&name),
                                correlation_id.as_deref(),
                                &e,
                            ),
                        }
                    })));
                }
                // Subscribe before starting, so no status change can slip past this socket.
                self.ensure_subscribed()?;
                let reply = perform(
                    &thing,
                    Operation::InvokeAction {
                        name: name.clone(),
                        input,
                    },
                )
                .await;
                let status = match reply {
                    Ok(Reply::Started(status)) => status,
                    Ok(other) => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
                    Err(e) => {
                        self.release_if_idle();
                        return Err(e);
                    }
                };
                self.interests_mut()
                    .track_action(&status.id, correlation_id.clone());
                done(
                    respond(128)
                        .str("name", &name)
                        .json("status", &protocol::action_status(&status)),
                )
            }
            Request::QueryAction { name, action_id } => {
                let name = action_of(&thing, name, &action_id)?;
                let status = match perform(
                    &thing,
                    Operation::QueryAction {
                        name: name.clone(),
                        id: action_id,
                    },
                )
                .await?
                {
                    Reply::Status(s) => s,
                    other => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
                };
                done(
                    respond(128)
                        .str("name", &name)
                        .json("status", &protocol::action_status(&status)),
                )
            }
            Request::CancelAction { name, action_id } => {
                let name = action_of(&thing, name, &action_id)?;
                let op = Operation::CancelAction {
                    name: name.clone(),
                    id: action_id.clone(),
                };
                let status = match perform(&thing, op).await? {
                    Reply::Cancelled(s) => s,
                    other => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
                };
                done(
                    respond(128)
                        .str("name", &name)
                        .str("actionID", &action_id)
                        .json("status", &protocol::action_status(&status)),
                )
            }
            Request::QueryAllActions => {
                let all = match perform(&thing, Operation::QueryAllActions).await? {
                    Reply::AllStatuses(all) => all,
                    other => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
                };
                let statuses: Map<String, Value> = all
                    .into_iter()
                    .map(|(name, list)| {
                        (
                            name,
                            Value::Array(list.iter().map(protocol::action_status).collect()),
                        )
                    })
                    .collect();
                done(respond(256).json("statuses", &Value::Object(statuses)))
            }
        }
    }

    async fn write_multiple(
        &mut self,
        thing: &Arc<ExposedThing>,
        values: Map<String, Value>,
        op: &'static str,
        correlation_id: Option<&str>,
    ) -> Result<Answer, Error> {
        let names: Vec<String> = values.keys().cloned().collect();
        perform(thing, Operation::WriteMultipleProperties(values)).await?;
        // Confirmed values of what was written (write-only ones are left out), as served now.
        let confirmed = self.thing()?.read_properties(names.iter().map(String::as_str))?;
        Ok(Answer::Now(
            protocol::response(&thing.id, op, confirmed.len())
                .raw("values", &confirmed)
                .opt_str("correlationID", correlation_id)
                .finish(),
        ))
    }
}

/// The action an instance belongs to: the given name, or found among the thing's asynchronous
/// actions when the request names only the `actionID`.
fn action_of(thing: &ExposedThing, name: Option<String>, action_id: &str) -> Result<String, Error> {
    if let Some(name) = name {
        return Ok(name);
    }
    thing
        .actions
        .values()
        .filter(|a| !a.synchronous)
        .find(|a| thing.action_status(&a.name, action_id).is_ok())
        .map(|a| a.name.to_string())
        .ok_or_else(|| Error::ActionInstanceNotFound {
            action: "*".into(),
            id: action_id.into(),
        })
}

fn expect_value(reply: Reply) -> Result<Bytes, Error> {
    match reply {
        Reply::Value(bytes) => Ok(bytes),
        other => Err(Error::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// readmultipleproperties: the draft answers an unknown name with 400, not 404.
fn unknown_name_is_bad_request(error: Error) -> Error {
    match error {
        Error::AffordanceNotFound { name, .. } => Error::MalformedPayload(format!(
            "'names' lists '{name}', which is not a property of this thing"
        )),
        other => other,
    }
}

fn error_frame(
    thing_id: &str,
    operation: &str,
    name: Option<&str>,
    correlation_id: Option<&str>,
    error: &Error,
) -> Bytes {
    if matches!(error, Error::Internal(_)) {
        tracing::warn!(operation, "websocket request failed: {error}");
    }
    protocol::error_response(
        thing_id,
        Some(operation),
        name,
        correlation_id,
        &protocol::core_problem(error),
    )
}
