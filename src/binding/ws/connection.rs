//! Drives one Web Thing Protocol socket: reads messages, performs them on the thing through the
//! core, writes the answers, keeps the connection alive and closes it on shutdown.
//!
//! One task per socket, on the worker thread that serves the socket. Everything it sends goes
//! through the socket's [`Outbound`] queue, which writes to the connection at once; the task
//! writes what the connection could not take at once. Property and event notifications do not pass through here: this thread's
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

use actix_http::ws::CloseCode;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::WsConfig;
use super::fanout::{self, Inbox};
use super::protocol::{self, Decoded, Frame, Rejection, Request};
use super::session::{Interests, names_thing};
use crate::binding::keepalive::{Keepalive, Tick};
use crate::binding::upgrade::ReadSide;
use crate::binding::ws_inbound::{self, InboundError, Incoming, Messages};
use crate::binding::ws_outbound::Outbound;
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

/// What an observe or subscribe operation (or its undoing) is about.
enum Interest {
    Property(String),
    AllProperties,
    Event(String),
    AllEvents,
}

impl Interest {
    /// The response: the affordance's name, when there is one.
    fn frame(&self, respond: &Respond<'_>) -> protocol::Frame {
        match self {
            Interest::Property(name) | Interest::Event(name) => respond.frame(32).str("name", name),
            Interest::AllProperties | Interest::AllEvents => respond.frame(0),
        }
    }
}

/// Why the loop ended.
enum End {
    /// Send this close frame (none: echo a close that had no status).
    Close(Option<CloseCode>, String),
    /// The peer is gone or stuck; just drop the connection.
    Drop,
}

/// What one turn of the socket's loop leads to.
enum Step {
    /// Send this frame.
    Send(Bytes),
    /// A synchronous action's answer, sent when it ends.
    Later(Pending),
    /// Nothing to send.
    Nothing,
    End(End),
}

/// Since when the client has left the outbound queue full: past `send_timeout`, it is stuck.
#[derive(Default)]
struct FullSince(Option<tokio::time::Instant>);

impl FullSince {
    /// When the connection counts as stuck, if the queue is full now.
    fn deadline(
        &mut self,
        has_room: bool,
        send_timeout: std::time::Duration,
    ) -> Option<tokio::time::Instant> {
        if has_room {
            self.0 = None;
            return None;
        }
        let since = *self.0.get_or_insert_with(tokio::time::Instant::now);
        Some(since + send_timeout)
    }
}

/// Serves one socket of the thing under `slug` (whose id was `opened_id` when it opened).
pub(crate) async fn run(
    servient: Arc<Servient>,
    (slug, opened_id): (String, String),
    outbound: Outbound,
    mut stream: Messages<ReadSide>,
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
    let mut full_since = FullSince::default();
    // Made once: a new one per turn of the loop would register with the watch every time.
    let shutting_down = shutdown.wait_for(|down| *down);
    tokio::pin!(shutting_down);
    let removed = thing_removed(servient, conn.slug.clone());
    tokio::pin!(removed);
    let end = loop {
        let has_room = outbound.has_room();
        let stuck_at = full_since.deadline(has_room, config.send_timeout);
        let step = tokio::select! {
            biased;
            _ = &mut shutting_down => Step::End(End::Close(Some(CloseCode::Away), "server shutting down".into())),
            _ = &mut removed => Step::End(conn.removed()),
            // Frames the connection could not take at once.
            _ = outbound.write_backlog() => Step::Nothing,
            room = tokio::time::timeout_at(stuck_at.unwrap_or_else(tokio::time::Instant::now), outbound.room()),
                if !has_room => stuck_or_not(room.is_err()),
            message = stream.recv(), if has_room && pending.len() < config.max_in_flight => {
                keepalive.heard(Instant::now());
                conn.on_message(message, &config).await
            }
            Some(frame) = pending.next(), if !pending.is_empty() => Step::Send(frame),
            received = next_notification(&mut conn.subscription) => conn.on_notification(received),
            _ = ticker.tick() => on_tick(&mut keepalive, &outbound),
        };
        match step {
            Step::Send(frame) => outbound.text(&frame),
            Step::Later(answer) => pending.push(answer),
            Step::Nothing => {}
            Step::End(end) => break end,
        }
    };
    // Notifications stop before the close goes out.
    conn.subscription = None;
    finish(&outbound, stream, end, &config).await;
}

/// The outbound queue stayed full for the whole send timeout: the client stopped reading.
fn stuck_or_not(timed_out: bool) -> Step {
    if timed_out {
        tracing::debug!("websocket client stopped reading; dropping the connection");
        return Step::End(End::Drop);
    }
    Step::Nothing
}

/// A keepalive tick: ping a silent client, or give up on a dead one (1008).
fn on_tick(keepalive: &mut Keepalive, outbound: &Outbound) -> Step {
    match keepalive.tick(Instant::now()) {
        Tick::Nothing => Step::Nothing,
        Tick::Ping => {
            outbound.ping(b"wot");
            Step::Nothing
        }
        Tick::Dead => Step::End(End::Close(Some(CloseCode::Policy), keepalive.dead_reason())),
    }
}

/// Sends the close (waiting at most the send timeout for it to go out) and lets the client
/// close its side, or drops the socket.
async fn finish(outbound: &Outbound, stream: Messages<ReadSide>, end: End, config: &WsConfig) {
    match end {
        End::Close(code, description) => {
            outbound
                .close_within(code.map(u16::from), &description, config.send_timeout)
                .await;
            stream.discard_until_closed(ws_inbound::LINGER).await;
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
    /// One message (or the end of the stream) from the client.
    async fn on_message(
        &mut self,
        message: Option<Result<Incoming, InboundError>>,
        config: &WsConfig,
    ) -> Step {
        let rejection = match message {
            None => return Step::End(End::Drop),
            Some(Ok(Incoming::Text(text))) if text.len() > config.max_message => {
                Rejection::too_large_message(&text, config.max_message)
            }
            Some(Ok(Incoming::Text(text))) => {
                return match self.handle(&text).await {
                    Answer::Now(frame) => Step::Send(frame),
                    Answer::Later(answer) => Step::Later(answer),
                };
            }
            Some(Ok(Incoming::Binary(_))) => Rejection::binary(),
            Some(Ok(Incoming::Ping(payload))) => {
                self.outbound.pong(&payload);
                return Step::Nothing;
            }
            Some(Ok(Incoming::Pong(_))) => return Step::Nothing,
            Some(Ok(Incoming::Close(reason))) => {
                // Echo the client's close and stop.
                let (code, description) = reason.map_or((None, None), |r| (Some(r.code), r.description));
                return Step::End(End::Close(code, description.unwrap_or_default()));
            }
            Some(Err(InboundError::MessageTooLarge(_))) => Rejection::too_large(config.max_message),
            Some(Err(InboundError::FrameTooLarge(_))) => {
                let refusal = Rejection::too_large(config.max_frame);
                self.outbound
                    .text(&protocol::rejection_response(&self.thing_id(), &refusal));
                let reason = format!("frame larger than {} bytes", config.max_frame);
                return Step::End(End::Close(Some(CloseCode::Size), reason));
            }
            Some(Err(e)) => {
                tracing::debug!("websocket protocol error: {e}");
                return Step::End(End::Close(
                    Some(CloseCode::Protocol),
                    format!("protocol error: {e}"),
                ));
            }
        };
        Step::Send(protocol::rejection_response(&self.thing_id(), &rejection))
    }

    /// What the fan-out relay handed this socket's task: an action status, lag, or the end.
    fn on_notification(&mut self, received: Received) -> Step {
        match received {
            Received::Notification(n) => self.notification(&n).map_or(Step::Nothing, Step::Send),
            Received::Lagged(missed) => Step::End(End::Close(
                Some(CloseCode::Again),
                format!(
                    "lagged: {missed} notifications dropped because this socket was not read; reconnect and read again"
                ),
            )),
            Received::Closed(Ended::Removed) => Step::End(self.removed()),
            Received::Closed(Ended::Changed) => Step::End(End::Close(
                Some(CloseCode::Restart),
                format!(
                    "thing '{}' was reloaded with changed affordances; read its TD and reconnect",
                    self.slug
                ),
            )),
        }
    }

    /// The close for a socket whose thing was removed.
    fn removed(&self) -> End {
        End::Close(
            Some(CloseCode::Away),
            format!("thing '{}' was removed", self.slug),
        )
    }

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

    /// Performs one decoded request on the thing served now.
    async fn perform(&mut self, decoded: Decoded) -> Result<Answer, Error> {
        let Decoded {
            correlation_id,
            request,
            ..
        } = decoded;
        let thing = self.thing()?;
        let respond = Respond {
            thing_id: &thing.id,
            operation: request.operation(),
            correlation_id: correlation_id.as_deref(),
        };
        match request {
            Request::ReadProperty { name } => read_property(&thing, name, &respond).await,
            Request::WriteProperty { name, value } => {
                self.write_property(&thing, name, value, &respond).await
            }
            Request::ReadAllProperties => {
                let values = expect_value(perform(&thing, Operation::ReadAllProperties).await?)?;
                respond.done(respond.frame(values.len()).raw("values", &values))
            }
            Request::ReadMultipleProperties { names } => {
                let values = perform(&thing, Operation::ReadMultipleProperties(names))
                    .await
                    .map_err(unknown_name_is_bad_request)?;
                let values = expect_value(values)?;
                respond.done(respond.frame(values.len()).raw("values", &values))
            }
            Request::WriteAllProperties { values } => {
                require_every_writable(&thing, &values)?;
                self.write_multiple(&thing, values, &respond).await
            }
            Request::WriteMultipleProperties { values } => {
                self.write_multiple(&thing, values, &respond).await
            }
            Request::ObserveProperty { name } => self.listen(&thing, Interest::Property(name), &respond),
            Request::UnobserveProperty { name } => {
                self.stop_listening(&thing, Interest::Property(name), &respond)
            }
            Request::ObserveAllProperties => self.listen(&thing, Interest::AllProperties, &respond),
            Request::UnobserveAllProperties => self.stop_listening(&thing, Interest::AllProperties, &respond),
            Request::SubscribeEvent { name } => self.listen(&thing, Interest::Event(name), &respond),
            Request::UnsubscribeEvent { name } => {
                self.stop_listening(&thing, Interest::Event(name), &respond)
            }
            Request::SubscribeAllEvents => self.listen(&thing, Interest::AllEvents, &respond),
            Request::UnsubscribeAllEvents => self.stop_listening(&thing, Interest::AllEvents, &respond),
            Request::InvokeAction { name, input } => self.invoke_action(&thing, name, input, &respond).await,
            Request::QueryAction { name, action_id } => {
                action_instance(&thing, (name, action_id), OnInstance::Query, &respond).await
            }
            Request::CancelAction { name, action_id } => {
                action_instance(&thing, (name, action_id), OnInstance::Cancel, &respond).await
            }
            Request::QueryAllActions => query_all_actions(&thing, &respond).await,
        }
    }

    /// observeproperty, observeallproperties, subscribeevent, subscribeallevents: notifications
    /// of `interest` from now on, tagged with this request's correlationID.
    fn listen(
        &mut self,
        thing: &ExposedThing,
        interest: Interest,
        respond: &Respond<'_>,
    ) -> Result<Answer, Error> {
        match &interest {
            Interest::Property(name) if thing.property(name)?.write_only => {
                return Err(Error::WriteOnly(name.clone()));
            }
            Interest::Event(name) => {
                thing.event(name)?;
            }
            _ => {}
        }
        self.ensure_subscribed()?;
        let correlation = respond.owned_correlation();
        let mut interests = self.interests_mut();
        match &interest {
            Interest::Property(name) => interests.observe_property(name, correlation),
            Interest::AllProperties => interests.observe_all_properties(correlation),
            Interest::Event(name) => interests.subscribe_event(name, correlation),
            Interest::AllEvents => interests.subscribe_all_events(correlation),
        }
        drop(interests);
        respond.done(interest.frame(respond))
    }

    /// The unobserve and unsubscribe operations: no more notifications of `interest`.
    fn stop_listening(
        &mut self,
        thing: &ExposedThing,
        interest: Interest,
        respond: &Respond<'_>,
    ) -> Result<Answer, Error> {
        match &interest {
            Interest::Property(name) => {
                thing.property(name)?;
                self.interests_mut().unobserve_property(name);
            }
            Interest::AllProperties => self.interests_mut().unobserve_all_properties(),
            Interest::Event(name) => {
                thing.event(name)?;
                self.interests_mut().unsubscribe_event(name);
            }
            Interest::AllEvents => self.interests_mut().unsubscribe_all_events(),
        }
        self.release_if_idle();
        respond.done(interest.frame(respond))
    }

    /// writeproperty, answered with the value now stored (none for a write-only property: the
    /// draft forbids it).
    async fn write_property(
        &mut self,
        thing: &Arc<ExposedThing>,
        name: String,
        value: Value,
        respond: &Respond<'_>,
    ) -> Result<Answer, Error> {
        perform(thing, Operation::WriteProperty(name.clone(), value)).await?;
        let frame = respond.frame(64).str("name", &name);
        match self.thing().and_then(|now| now.read_property(&name)) {
            Ok(stored) => respond.done(frame.raw("value", &stored)),
            Err(_) => respond.done(frame),
        }
    }

    /// writeallproperties / writemultipleproperties, answered with the confirmed values of what
    /// was written (write-only ones are left out), as served now.
    async fn write_multiple(
        &mut self,
        thing: &Arc<ExposedThing>,
        values: Map<String, Value>,
        respond: &Respond<'_>,
    ) -> Result<Answer, Error> {
        let names: Vec<String> = values.keys().cloned().collect();
        perform(thing, Operation::WriteMultipleProperties(values)).await?;
        let confirmed = self.thing()?.read_properties(names.iter().map(String::as_str))?;
        respond.done(respond.frame(confirmed.len()).raw("values", &confirmed))
    }

    /// invokeaction: a synchronous action is answered when it ends, while the socket keeps
    /// serving; an asynchronous one is answered with its status at once and then tracked.
    async fn invoke_action(
        &mut self,
        thing: &Arc<ExposedThing>,
        name: String,
        input: Option<Value>,
        respond: &Respond<'_>,
    ) -> Result<Answer, Error> {
        if thing.action(&name)?.synchronous {
            let answer = invoke_sync(thing.clone(), name, input, respond.owned_correlation());
            return Ok(Answer::Later(Box::pin(answer)));
        }
        // Subscribed before starting, so that no status change can slip past this socket.
        self.ensure_subscribed()?;
        let reply = perform(
            thing,
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
            .track_action(&status.id, respond.owned_correlation());
        let status = protocol::action_status(&status);
        respond.done(respond.frame(128).str("name", &name).json("status", &status))
    }
}

/// How the answer to one request is framed: its thing, operation and correlationID.
struct Respond<'a> {
    thing_id: &'a str,
    operation: &'static str,
    correlation_id: Option<&'a str>,
}

impl Respond<'_> {
    /// A response envelope with room for `capacity` more bytes.
    fn frame(&self, capacity: usize) -> Frame {
        protocol::response(self.thing_id, self.operation, capacity)
    }

    /// The finished response, with the request's correlationID.
    fn done(&self, frame: Frame) -> Result<Answer, Error> {
        Ok(Answer::Now(
            frame.opt_str("correlationID", self.correlation_id).finish(),
        ))
    }

    fn owned_correlation(&self) -> Option<String> {
        self.correlation_id.map(str::to_owned)
    }
}

async fn read_property(
    thing: &Arc<ExposedThing>,
    name: String,
    respond: &Respond<'_>,
) -> Result<Answer, Error> {
    let value = expect_value(perform(thing, Operation::ReadProperty(name.clone())).await?)?;
    respond.done(
        respond
            .frame(value.len() + 64)
            .str("name", &name)
            .raw("value", &value),
    )
}

/// writeallproperties needs a value for every writable property.
fn require_every_writable(thing: &ExposedThing, values: &Map<String, Value>) -> Result<(), Error> {
    let missing: Vec<&str> = thing
        .properties
        .iter()
        .filter(|(name, p)| !p.read_only && !values.contains_key(*name))
        .map(|(name, _)| name.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MalformedPayload(format!(
        "writeallproperties needs a value for every writable property; missing: {}",
        missing.join(", ")
    )))
}

/// A synchronous action's answer, once it ends: its output or its error.
async fn invoke_sync(
    thing: Arc<ExposedThing>,
    name: String,
    input: Option<Value>,
    correlation_id: Option<String>,
) -> Bytes {
    let operation = Operation::InvokeAction {
        name: name.clone(),
        input,
    };
    let error = match perform(&thing, operation).await {
        Ok(Reply::Output(output)) => {
            let frame = protocol::response(&thing.id, "invokeaction", 64).str("name", &name);
            let frame = match &output {
                Some(output) => frame.json("output", output),
                None => frame,
            };
            return frame.opt_str("correlationID", correlation_id.as_deref()).finish();
        }
        Ok(other) => Error::Internal(format!("unexpected reply {other:?}")),
        Err(e) => e,
    };
    error_frame(
        &thing.id,
        "invokeaction",
        Some(&name),
        correlation_id.as_deref(),
        &error,
    )
}

/// What an instance of an action does on queryaction or cancelaction: the two differ only in
/// the operation performed and in the cancellation answer naming the `actionID` it ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnInstance {
    Query,
    Cancel,
}

/// queryaction / cancelaction: the instance's status after the operation.
async fn action_instance(
    thing: &Arc<ExposedThing>,
    (name, action_id): (Option<String>, String),
    what: OnInstance,
    respond: &Respond<'_>,
) -> Result<Answer, Error> {
    let name = action_of(thing, name, &action_id)?;
    let (instance_of, id) = (name.clone(), action_id.clone());
    let operation = match what {
        OnInstance::Query => Operation::QueryAction {
            name: instance_of,
            id,
        },
        OnInstance::Cancel => Operation::CancelAction {
            name: instance_of,
            id,
        },
    };
    let status = match perform(thing, operation).await? {
        Reply::Status(s) | Reply::Cancelled(s) => s,
        other => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
    };
    let mut frame = respond.frame(128).str("name", &name);
    if what == OnInstance::Cancel {
        frame = frame.str("actionID", &action_id);
    }
    respond.done(frame.json("status", &protocol::action_status(&status)))
}

async fn query_all_actions(thing: &Arc<ExposedThing>, respond: &Respond<'_>) -> Result<Answer, Error> {
    let all = match perform(thing, Operation::QueryAllActions).await? {
        Reply::AllStatuses(all) => all,
        other => return Err(Error::Internal(format!("unexpected reply {other:?}"))),
    };
    let statuses: Map<String, Value> = all
        .into_iter()
        .map(|(name, list)| {
            let list = list.iter().map(protocol::action_status).collect();
            (name, Value::Array(list))
        })
        .collect();
    respond.done(respond.frame(256).json("statuses", &Value::Object(statuses)))
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
