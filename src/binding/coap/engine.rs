//! The CoAP server's protocol engine, sans-IO: datagrams, core replies, notifications and
//! clock ticks go in; datagrams to send, core operations to perform and subscriptions to
//! forward come out (`Effects`). It ties together the message layer (dedup, piggybacked and
//! separate responses), the router, content negotiation, block-wise transfers and observe.
//!
//! It owns no socket and no task and never waits: the socket loop (`server`) performs the
//! operations it asks for and feeds the results back. Tests drive it with plain bytes and `now`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageType, ResponseType};
use serde_json::{Value, json};

use super::access::{Access, Kind as AccessKind};
use super::block::{self, Block, Block1Limits, Block1Step, Block1Store, TransferKey};
use super::content::{self, BodyError, Format, Kind};
use super::link_format;
use super::message::{self, DELETE, DedupCache, GET, Inbound, POST, PUT, Request, Response, Seen, option};
use super::observe::{Due, Observer, ObserverId, ObserverLimits, Observers, Outbox, Owner};
use super::router::{self, Resource};
use crate::core::{
    ActionStatus, EncodingSlot, Ended, Error, ErrorKind, Notification, Operation, Received, Reply, Servient,
    Subscription, Target,
};
use crate::td::{Origins, TdPublisher};

/// The engine's limits and timings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Messages remembered for deduplication (oldest dropped beyond it).
    pub dedup_capacity: usize,
    /// Largest payload in one message; bigger bodies go block-wise (RFC 7252 §4.6: 1024).
    pub block_limit: usize,
    /// Limits of block-wise request bodies.
    pub block1: Block1Limits,
    /// Limits of observations.
    pub observers: ObserverLimits,
    /// Confirmable messages of ours awaiting an ACK at once.
    pub outbox_capacity: usize,
    /// Longest random delay before answering a multicast request (RFC 7252 §8.2 Leisure).
    pub leisure: Duration,
    /// What unauthenticated clients may do (everything unless `--auth` is on).
    pub(crate) access: Access,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dedup_capacity: 8192,
            block_limit: 1024,
            block1: Block1Limits::default(),
            observers: ObserverLimits::default(),
            outbox_capacity: 4096,
            leisure: Duration::from_secs(2),
            access: Access::Open,
        }
    }
}

/// What a request does, for the access policy: any Observe option or event resource is an
/// observation, any other GET a read, every other method a change.
fn access_kind(resource: &Resource, request: &Request) -> AccessKind {
    match request.method {
        GET if request.observe.is_some() || matches!(resource, Resource::Event(..) | Resource::Events(_)) => {
            AccessKind::Observe
        }
        GET => AccessKind::Read,
        _ => AccessKind::Change,
    }
}

/// How a core reply is turned into a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Read,
    Write,
    Invoke,
    Query,
    Cancel,
    QueryAll,
}

/// What is needed to answer a request after the core replied.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) peer: SocketAddr,
    request: Request,
    answer: Answer,
    format: Format,
    slug: String,
    block1: Option<Block>,
    observe: Option<(ObserverId, Subscription)>,
    /// An empty ACK was sent: the response goes out as a separate CON.
    acked: bool,
    /// What the request's sender may do.
    access: Access,
}

impl Exchange {
    pub(crate) fn confirmable(&self) -> bool {
        self.request.confirmable
    }
    pub(crate) fn mid(&self) -> u16 {
        self.request.mid
    }
    pub(crate) fn mark_acked(&mut self) {
        if self.request.confirmable {
            self.acked = true;
        }
    }
}

/// A core operation the engine needs performed.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) slug: String,
    pub(crate) op: Operation,
    pub(crate) exchange: Exchange,
}

/// Everything the engine wants done. Reused across calls; the loop drains it.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) send: Vec<(SocketAddr, Bytes)>,
    /// Multicast answers, each after its random delay.
    pub(crate) send_later: Vec<(Duration, SocketAddr, Bytes)>,
    pub(crate) perform: Vec<Pending>,
    pub(crate) watch: Vec<(ObserverId, Subscription)>,
    pub(crate) unwatch: Vec<ObserverId>,
}

impl Effects {
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        self.send.clear();
        self.send_later.clear();
        self.perform.clear();
        self.watch.clear();
        self.unwatch.clear();
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.send.is_empty()
            && self.send_later.is_empty()
            && self.perform.is_empty()
            && self.watch.is_empty()
            && self.unwatch.is_empty()
    }
}

/// The CoAP protocol engine of one socket.
pub(crate) struct Engine {
    cfg: EngineConfig,
    servient: Arc<Servient>,
    publisher: Arc<TdPublisher>,
    origins: Origins,
    directory_id: String,
    dedup: DedupCache,
    block1: Block1Store,
    observers: Observers,
    outbox: Outbox,
    mid: u16,
}

/// The response code of each kind of core error. A property is a resource here and its methods
/// are its operations, so writing a read-only one (or reading a write-only one) is 4.05, as the
/// router answers for any method a resource does not have.
fn code_of(kind: ErrorKind) -> ResponseType {
    match kind {
        ErrorKind::NotFound => ResponseType::NotFound,
        ErrorKind::BadRequest => ResponseType::BadRequest,
        ErrorKind::WrongDirection => ResponseType::MethodNotAllowed,
        ErrorKind::Conflict => ResponseType::Conflict,
        ErrorKind::Unavailable => ResponseType::ServiceUnavailable,
        ErrorKind::Internal => ResponseType::InternalServerError,
        ErrorKind::BadGateway => ResponseType::BadGateway,
        ErrorKind::GatewayTimeout => ResponseType::GatewayTimeout,
    }
}

/// The one mapping of core errors to CoAP: a response code and a diagnostic payload that says
/// what was wrong and where (the JSON pointer and rule for schema violations).
pub(crate) fn error_response(e: &Error) -> Response {
    let mut response = Response::diagnostic(code_of(e.kind()), format!("{}: {e}", e.title()));
    if e.kind() == ErrorKind::Unavailable {
        // RFC 7252 §5.9.3.4: a 5.03 says when to try again, as HTTP's Retry-After does here.
        response.uint(option::MAX_AGE, RETRY_AFTER_SECONDS);
    }
    response
}

/// How long a client told 5.03 waits before trying again (the HTTP binding's `Retry-After`).
const RETRY_AFTER_SECONDS: u32 = 1;

fn method_name(code: u8) -> &'static str {
    match code {
        GET => "GET",
        POST => "POST",
        PUT => "PUT",
        DELETE => "DELETE",
        5 => "FETCH",
        6 => "PATCH",
        7 => "iPATCH",
        _ => "this method",
    }
}

enum Step {
    Respond(Response),
    Perform(Operation),
}

/// What an observer is sent for what its subscription received.
enum Notify {
    /// The resource's new state.
    State(Vec<u8>),
    /// A final non-2.xx notification, which ends the observation.
    End(ResponseType, String),
    /// Nothing: the observer lagged and its resource has no current state to send.
    Nothing,
}

impl Engine {
    pub(crate) fn new(
        cfg: EngineConfig,
        servient: Arc<Servient>,
        publisher: Arc<TdPublisher>,
        origins: Origins,
        directory_id: String,
    ) -> Self {
        Engine {
            dedup: DedupCache::new(cfg.dedup_capacity),
            block1: Block1Store::new(cfg.block1),
            observers: Observers::new(cfg.observers),
            outbox: Outbox::new(cfg.outbox_capacity),
            mid: rand::random(),
            cfg,
            servient,
            publisher,
            origins,
            directory_id,
        }
    }

    #[cfg(test)]
    pub(crate) fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    #[cfg(test)]
    pub(crate) fn dedup_capacity(&self) -> usize {
        self.dedup.capacity()
    }

    #[cfg(test)]
    pub(crate) fn observer_count(&self) -> usize {
        self.observers.len()
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// One datagram from `peer`. `multicast`: it arrived on a group address, where only
    /// `/.well-known/core` is answered and never with an error or RST (RFC 7252 §8.1).
    pub(crate) fn on_datagram(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
        multicast: bool,
        now: Instant,
        fx: &mut Effects,
    ) {
        self.receive(peer, bytes, multicast, self.cfg.access, now, fx);
    }

    /// One datagram that came through a session whose client proved a credential (coaps with
    /// a pre-shared key): it may do everything an HTTP request with credentials may.
    pub(crate) fn on_authenticated_datagram(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
        now: Instant,
        fx: &mut Effects,
    ) {
        self.receive(peer, bytes, false, Access::Open, now, fx);
    }

    fn receive(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
        multicast: bool,
        access: Access,
        now: Instant,
        fx: &mut Effects,
    ) {
        match message::classify(bytes) {
            Inbound::Ignore => {}
            Inbound::Reset(mid) => {
                if !multicast {
                    fx.send
                        .push((peer, Bytes::from(message::empty(MessageType::Reset, mid))));
                }
            }
            Inbound::Ack(mid) => self.on_ack(peer, mid, now),
            Inbound::Rst(mid) => self.on_rst(peer, mid, fx),
            Inbound::BadOption { request, option } => {
                if multicast {
                } else if request.confirmable {
                    let r = Response::diagnostic(
                        ResponseType::BadOption,
                        format!("critical option {option} is not supported"),
                    );
                    self.respond_plain(peer, &request, &r, fx);
                } else {
                    fx.send
                        .push((peer, Bytes::from(message::empty(MessageType::Reset, request.mid))));
                }
            }
            Inbound::NoProxy(request) => {
                if !multicast {
                    let r =
                        Response::diagnostic(ResponseType::ProxyingNotSupported, "this server is no proxy");
                    self.respond_plain(peer, &request, &r, fx);
                }
            }
            Inbound::Request(request) => {
                if multicast {
                    self.on_multicast(peer, request, fx);
                } else {
                    self.on_request(peer, request, access, now, fx);
                }
            }
        }
    }

    fn respond_plain(&mut self, peer: SocketAddr, request: &Request, response: &Response, fx: &mut Effects) {
        let mid = self.next_mid();
        fx.send
            .push((peer, Bytes::from(message::reply(request, response, mid))));
    }

    fn on_multicast(&mut self, peer: SocketAddr, request: Request, fx: &mut Effects) {
        if request.method != GET
            || router::resource(&request.path) != Some(Resource::WellKnownCore)
            || !self.cfg.access.allows(AccessKind::Read)
        {
            return;
        }
        if content::negotiate(Kind::Links, request.accept).is_err() {
            return;
        }
        let doc = link_format::document(&self.servient.things(), &request.query);
        if doc.is_empty() {
            return;
        }
        let mut response = Response::with_payload(ResponseType::Content, doc.into_bytes());
        response.uint(option::CONTENT_FORMAT, u32::from(content::LINK_FORMAT));
        // A multicast request is answered by unicast NON (RFC 7252 §8.1); block 0 only.
        let body = std::mem::take(&mut response.payload);
        let want = Block {
            num: 0,
            more: false,
            szx: block::szx_for(self.cfg.block_limit),
        };
        if let Some((part, got)) = block::slice(&body, request.block2.unwrap_or(want)) {
            response.payload = part.to_vec();
            if got.more || got.num > 0 {
                response.option(option::BLOCK2, got.encode());
            }
        }
        let mid = self.next_mid();
        let bytes = response.encode(MessageType::NonConfirmable, mid, &request.token);
        let spread = self.cfg.leisure.as_millis().max(1) as u64;
        let delay = Duration::from_millis(u64::from(mid).wrapping_mul(7919) % spread);
        fx.send_later.push((delay, peer, Bytes::from(bytes)));
    }

    fn on_ack(&mut self, peer: SocketAddr, mid: u16, now: Instant) {
        if let Some(Owner::Observer(id)) = self.outbox.settle(peer, mid)
            && let Some(o) = self.observers.get_mut(id)
        {
            o.outstanding = None;
            o.last_con = now;
        }
    }

    fn on_rst(&mut self, peer: SocketAddr, mid: u16, fx: &mut Effects) {
        let observer = match self.outbox.settle(peer, mid) {
            Some(Owner::Observer(id)) => Some(id),
            Some(Owner::Separate) => None,
            None => self.outbox.non_owner(peer, mid),
        };
        // A reset notification ends the observation (RFC 7641 §3.6, passive).
        if let Some(id) = observer
            && self.observers.remove(id).is_some()
        {
            fx.unwatch.push(id);
        }
    }

    fn on_request(
        &mut self,
        peer: SocketAddr,
        request: Request,
        access: Access,
        now: Instant,
        fx: &mut Effects,
    ) {
        let key = (peer, request.mid);
        match self.dedup.check(key, request.confirmable, now) {
            Seen::New => {}
            Seen::InProgress => return,
            Seen::Replay(bytes) => {
                fx.send.push((peer, bytes));
                return;
            }
        }
        let mut exchange = Exchange {
            peer,
            request,
            answer: Answer::Read,
            format: Format::Json,
            slug: String::new(),
            block1: None,
            observe: None,
            acked: false,
            access,
        };
        match self.dispatch(&mut exchange, now, fx) {
            Step::Respond(response) => self.complete(exchange, response, now, fx),
            Step::Perform(op) => {
                let slug = exchange.slug.clone();
                fx.perform.push(Pending { slug, op, exchange });
            }
        }
    }

    /// Decides what a request does. Anything that fails here changes nothing.
    fn dispatch(&mut self, x: &mut Exchange, now: Instant, fx: &mut Effects) -> Step {
        match self.admit(x, now) {
            Ok(resource) => self.route(resource, x, now, fx),
            Err(response) => Step::Respond(response),
        }
    }

    /// What every request passes before its resource acts, in this order: the resource exists
    /// and has the method, access allows it, the thing and affordance exist (before a body is
    /// judged), a PUT or POST body has arrived whole and within the limit, and a Content-Format
    /// the client accepts can be produced (`x.format`). An `Err` is answered at once: a refusal,
    /// or 2.31 Continue asking for the body's next block.
    fn admit(&mut self, x: &mut Exchange, now: Instant) -> Result<Resource, Response> {
        let resource = resource_of(&x.request)?;
        let kind = access_kind(&resource, &x.request);
        if !x.access.allows(kind) {
            return Err(Response::diagnostic(
                ResponseType::Unauthorized,
                x.access.refusal(kind),
            ));
        }
        self.find_affordance(&resource, x)?;
        if matches!(x.request.method, PUT | POST) {
            self.receive_body(x, now)?;
        }
        x.format = negotiate(&resource, x.request.accept)?;
        Ok(resource)
    }

    /// Reports an unknown thing or affordance (4.04); a found thing's slug goes to `x.slug`.
    fn find_affordance(&self, resource: &Resource, x: &mut Exchange) -> Result<(), Response> {
        let Some(slug) = resource.slug() else {
            return Ok(());
        };
        let thing = self.servient.thing(slug).map_err(|e| error_response(&e))?;
        let exists = match resource {
            Resource::Property(_, n) => thing.property(n).map(|_| ()),
            Resource::Action(_, n) | Resource::ActionInstance(_, n, _) => thing.action(n).map(|_| ()),
            Resource::Event(_, n) => thing.event(n).map(|_| ()),
            _ => Ok(()),
        };
        exists.map_err(|e| error_response(&e))?;
        x.slug = slug.to_owned();
        Ok(())
    }

    /// The whole body of a PUT or POST, within the limit: sent at once, or put together from
    /// its blocks (Block1, RFC 7959 §2.5), each but the last answered with 2.31 Continue.
    fn receive_body(&mut self, x: &mut Exchange, now: Instant) -> Result<(), Response> {
        let max = self.block1.limits().max_body;
        let Some(b1) = x.request.block1 else {
            if x.request.payload.len() > max {
                return Err(too_large(max));
            }
            return Ok(());
        };
        let key = TransferKey {
            peer: x.peer,
            method: x.request.method,
            uri: x.request.uri(),
        };
        let payload = std::mem::take(&mut x.request.payload);
        match self.block1.accept(key, b1, &payload, x.request.size1, now) {
            Block1Step::Continue(b) => {
                let mut r = Response::new(ResponseType::Continue);
                r.option(option::BLOCK1, b.encode());
                Err(r)
            }
            Block1Step::Complete(body, b) => {
                x.request.payload = body;
                x.block1 = Some(b);
                Ok(())
            }
            Block1Step::Incomplete => Err(Response::diagnostic(
                ResponseType::RequestEntityIncomplete,
                format!(
                    "block {} of '{}' is missing or out of order",
                    b1.num,
                    x.request.uri()
                ),
            )),
            Block1Step::TooLarge => Err(too_large(max)),
            Block1Step::Busy => Err(Response::diagnostic(
                ResponseType::ServiceUnavailable,
                "too many block-wise transfers in progress; try again later",
            )),
        }
    }

    /// What an admitted request does: an answer of the engine's own (links, TDs, event
    /// observations) or a core operation to perform, with `x.answer` saying how to encode its
    /// reply.
    fn route(&mut self, resource: Resource, x: &mut Exchange, now: Instant, fx: &mut Effects) -> Step {
        use Step::{Perform, Respond};
        let get = x.request.method == GET;
        match resource {
            Resource::WellKnownCore => Respond(self.links(x)),
            Resource::WellKnownWot => Respond(self.well_known_wot(x.format)),
            Resource::Things => Respond(self.all_tds(x.format)),
            Resource::Td(slug) => Respond(self.td(&slug, x.format)),
            Resource::Property(_, name) if get => {
                let target = Target::Property(name.clone());
                self.read_observed(x, target, Operation::ReadProperty(name), now, fx)
            }
            Resource::Property(_, name) => {
                x.answer = Answer::Write;
                match self.required_body(x) {
                    Ok(value) => Perform(Operation::WriteProperty(name, value)),
                    Err(r) => Respond(r),
                }
            }
            Resource::Properties(_) if get => {
                self.read_observed(x, Target::AllProperties, Operation::ReadAllProperties, now, fx)
            }
            Resource::Properties(_) => {
                x.answer = Answer::Write;
                match self.required_body(x).and_then(property_values) {
                    Ok(values) => Perform(Operation::WriteMultipleProperties(values)),
                    Err(r) => Respond(r),
                }
            }
            Resource::Actions(_) => {
                x.answer = Answer::QueryAll;
                Perform(Operation::QueryAllActions)
            }
            Resource::Action(_, name) => {
                x.answer = Answer::Invoke;
                match self.body(x) {
                    Ok(input) => Perform(Operation::InvokeAction { name, input }),
                    Err(r) => Respond(r),
                }
            }
            Resource::ActionInstance(_, name, id) if get => {
                x.answer = Answer::Query;
                let target = Target::Action {
                    name: name.clone(),
                    id: id.clone(),
                };
                self.read_observed(x, target, Operation::QueryAction { name, id }, now, fx)
            }
            Resource::ActionInstance(_, name, id) => {
                x.answer = Answer::Cancel;
                Perform(Operation::CancelAction { name, id })
            }
            Resource::Event(_, name) => Respond(self.observe_events(x, Target::Event(name), now, fx)),
            Resource::Events(_) => Respond(self.observe_events(x, Target::AllEvents, now, fx)),
        }
    }

    /// `/.well-known/core`: the links of every thing, filtered by the query.
    fn links(&self, x: &Exchange) -> Response {
        let doc = link_format::document(&self.servient.things(), &x.request.query);
        self.content(doc.into_bytes(), x.format)
    }

    /// `/.well-known/wot`: the one thing's TD, or the directory TD when there are several.
    fn well_known_wot(&self, format: Format) -> Response {
        let things = self.servient.things();
        let bytes = if let [only] = things.as_slice() {
            self.publisher.td_bytes(only, &self.origins).map_err(Error::from)
        } else {
            let td = crate::td::directory::directory_td(&self.directory_id, &things, &self.origins);
            Ok(Bytes::from(td.to_string()))
        };
        self.td_response(bytes, format)
    }

    /// `/things`: every thing's TD in one array, ordered by id.
    fn all_tds(&self, format: Format) -> Response {
        let mut things = self.servient.things();
        things.sort_by(|a, b| a.id.cmp(&b.id));
        let mut body = vec![b'['];
        for (i, t) in things.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            match self.publisher.td_bytes(t, &self.origins) {
                Ok(b) => body.extend_from_slice(&b),
                Err(e) => return error_response(&Error::from(e)),
            }
        }
        body.push(b']');
        self.json_response(ResponseType::Content, &body, format)
    }

    /// `/things/{slug}`: the thing's TD. The thing was found on admission, so only a
    /// concurrent removal answers 4.04 here.
    fn td(&self, slug: &str, format: Format) -> Response {
        let bytes = self
            .servient
            .thing(slug)
            .and_then(|t| self.publisher.td_bytes(&t, &self.origins).map_err(Error::from));
        self.td_response(bytes, format)
    }

    /// A read (`op`) whose GET may also register or end an observation of `target`.
    fn read_observed(
        &mut self,
        x: &mut Exchange,
        target: Target,
        op: Operation,
        now: Instant,
        fx: &mut Effects,
    ) -> Step {
        match self.observe_request(x, target, now, fx) {
            Ok(()) => Step::Perform(op),
            Err(r) => Step::Respond(r),
        }
    }

    /// Events come by observation only: Observe 0 registers (confirmed with an empty 2.05, the
    /// events follow), 1 deregisters; a GET without either is a 4.00.
    fn observe_events(
        &mut self,
        x: &mut Exchange,
        target: Target,
        now: Instant,
        fx: &mut Effects,
    ) -> Response {
        match x.request.observe {
            Some(0) => {
                if let Err(r) = self.observe_request(x, target, now, fx) {
                    return r;
                }
                if x.observe.is_none() {
                    return Response::diagnostic(
                        ResponseType::ServiceUnavailable,
                        "too many observations from this endpoint",
                    );
                }
                Response::new(ResponseType::Content)
            }
            Some(1) => {
                let _ = self.observe_request(x, target, now, fx);
                Response::new(ResponseType::Content)
            }
            _ => Response::diagnostic(
                ResponseType::BadRequest,
                format!(
                    "events of '{}' are delivered by observation: send GET with Observe: 0",
                    x.slug
                ),
            ),
        }
    }

    /// Handles the Observe option of a GET: 0 registers (creating the subscription first, so
    /// no change between the read and the registration is missed), 1 deregisters. A client
    /// over the limits is answered without Observe (RFC 7641 §4.1).
    fn observe_request(
        &mut self,
        x: &mut Exchange,
        target: Target,
        now: Instant,
        fx: &mut Effects,
    ) -> Result<(), Response> {
        match x.request.observe {
            Some(0) => {
                let subscription = self
                    .servient
                    .subscribe(&x.slug, target.clone())
                    .map_err(|e| error_response(&e))?;
                match self
                    .observers
                    .register(x.peer, &x.request.token, &x.slug, target, x.format, now)
                {
                    Ok((id, replaced)) => {
                        if let Some(old) = replaced {
                            fx.unwatch.push(old);
                        }
                        x.observe = Some((id, subscription));
                    }
                    Err(_) => {
                        tracing::warn!(peer = %x.peer, "CoAP observer limit reached; answering without Observe");
                    }
                }
                Ok(())
            }
            Some(1) => {
                if let Some(id) = self.observers.find(x.peer, &x.request.token)
                    && self.observers.remove(id).is_some()
                {
                    fx.unwatch.push(id);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn body(&self, x: &Exchange) -> Result<Option<Value>, Response> {
        content::decode_body(x.request.content_format, &x.request.payload).map_err(|e| match e {
            BodyError::Unsupported(cf) => Response::diagnostic(
                ResponseType::UnsupportedContentFormat,
                format!("Content-Format {cf} is not supported; send 50 (JSON) or 60 (CBOR)"),
            ),
            BodyError::Malformed(m) => error_response(&Error::MalformedPayload(m)),
        })
    }

    /// The body of a write, which must not be empty.
    fn required_body(&self, x: &Exchange) -> Result<Value, Response> {
        self.body(x)?
            .ok_or_else(|| error_response(&Error::MalformedPayload("the body is empty".into())))
    }

    fn content(&self, body: Vec<u8>, format: Format) -> Response {
        let mut r = Response::with_payload(ResponseType::Content, body);
        r.uint(option::CONTENT_FORMAT, u32::from(format.number()));
        r
    }

    fn json_response(&self, code: ResponseType, json: &[u8], format: Format) -> Response {
        match content::encode_json(json, format) {
            Ok(body) => {
                let mut r = Response::with_payload(code, body);
                r.uint(option::CONTENT_FORMAT, u32::from(format.number()));
                r
            }
            Err(e) => error_response(&Error::Internal(e.to_string())),
        }
    }

    fn td_response(&self, bytes: Result<Bytes, Error>, format: Format) -> Response {
        match bytes {
            Ok(b) => self.json_response(ResponseType::Content, &b, format),
            Err(e) => error_response(&e),
        }
    }

    fn status_href(&self, slug: &str, status: &ActionStatus) -> String {
        format!(
            "{}/things/{slug}/actions/{}/{}",
            self.origins.coap.as_deref().unwrap_or(""),
            status.action,
            status.id
        )
    }

    /// The core's answer to a performed operation.
    pub(crate) fn on_done(
        &mut self,
        x: Exchange,
        result: Result<Reply, Error>,
        now: Instant,
        fx: &mut Effects,
    ) {
        let response = match result {
            Err(e) => error_response(&e),
            Ok(reply) => self.encode_reply(&x, reply),
        };
        self.complete(x, response, now, fx);
    }

    /// Confirms an observation (Observe option, forwarding starts) when the answer is a
    /// success, drops it otherwise, then sends the answer.
    fn complete(&mut self, mut x: Exchange, response: Response, now: Instant, fx: &mut Effects) {
        let seq = match x.observe.take() {
            Some((id, subscription)) if response.is_success() => {
                fx.watch.push((id, subscription));
                self.observers.get_mut(id).map(|o| o.next_seq())
            }
            Some((id, _)) => {
                self.observers.remove(id);
                None
            }
            None => None,
        };
        self.finish(x, response, seq, now, fx);
    }

    fn encode_reply(&self, x: &Exchange, reply: Reply) -> Response {
        let f = x.format;
        match reply {
            Reply::Value(bytes) => self.json_response(ResponseType::Content, &bytes, f),
            Reply::Written => Response::new(ResponseType::Changed),
            Reply::Output(Some(v)) => self.json_response(ResponseType::Changed, v.to_string().as_bytes(), f),
            Reply::Output(None) => Response::new(ResponseType::Changed),
            Reply::Started(status) => {
                let href = self.status_href(&x.slug, &status);
                let mut r = self.json_response(
                    ResponseType::Created,
                    status.to_json(Some(&href)).to_string().as_bytes(),
                    f,
                );
                for segment in ["things", &x.slug, "actions", &status.action, &status.id] {
                    r.option(option::LOCATION_PATH, segment.as_bytes().to_vec());
                }
                r
            }
            Reply::Status(status) => {
                let href = self.status_href(&x.slug, &status);
                self.json_response(
                    ResponseType::Content,
                    status.to_json(Some(&href)).to_string().as_bytes(),
                    f,
                )
            }
            Reply::Cancelled(_) => Response::new(if x.request.method == DELETE {
                ResponseType::Deleted
            } else {
                ResponseType::Changed
            }),
            Reply::AllStatuses(grouped) => {
                let body: serde_json::Map<String, Value> = grouped
                    .into_iter()
                    .map(|(name, statuses)| {
                        let list = statuses
                            .iter()
                            .map(|s| s.to_json(Some(&self.status_href(&x.slug, s))))
                            .collect();
                        (name, Value::Array(list))
                    })
                    .collect();
                self.json_response(
                    ResponseType::Content,
                    Value::Object(body).to_string().as_bytes(),
                    f,
                )
            }
        }
    }

    /// The request is taking long: acknowledge it now, answer later (RFC 7252 §5.2.2).
    pub(crate) fn on_slow(&mut self, peer: SocketAddr, mid: u16, confirmable: bool, fx: &mut Effects) {
        if !confirmable {
            return;
        }
        let ack = Bytes::from(message::empty(MessageType::Acknowledgement, mid));
        self.dedup.answered((peer, mid), ack.clone());
        fx.send.push((peer, ack));
    }

    /// Block2 slicing, Observe, Size2 and Block1 echo, then the message: piggybacked, NON, or
    /// a separate CON; remembered for duplicates.
    fn finish(
        &mut self,
        x: Exchange,
        mut response: Response,
        seq: Option<u32>,
        now: Instant,
        fx: &mut Effects,
    ) {
        let req = &x.request;
        if let Some(seq) = seq {
            response.uint(option::OBSERVE, seq);
        }
        if let Some(b1) = x.block1 {
            response.option(option::BLOCK1, b1.encode());
        }
        if response.is_success() && response.code != ResponseType::Continue {
            let limit_szx = block::szx_for(self.cfg.block_limit);
            let whole = response.payload.len();
            if req.block2.is_some() || whole > self.cfg.block_limit {
                let mut want = req.block2.unwrap_or(Block {
                    num: 0,
                    more: false,
                    szx: limit_szx,
                });
                if want.szx > limit_szx {
                    // A client asking for bigger blocks than we send gets ours (late negotiation).
                    want = Block {
                        num: (want.num * (1 << (want.szx - limit_szx))),
                        more: false,
                        szx: limit_szx,
                    };
                }
                match block::slice(&response.payload, want) {
                    Some((part, got)) => {
                        let tag = block::etag(&response.payload);
                        let part = part.to_vec();
                        response.payload = part;
                        response.option(option::BLOCK2, got.encode());
                        response.option(option::ETAG, tag.to_vec());
                    }
                    None => {
                        response = Response::diagnostic(
                            ResponseType::BadOption,
                            format!(
                                "block {} is past the end of the {whole}-byte representation",
                                want.num
                            ),
                        );
                    }
                }
            }
            if req.size2 && response.is_success() {
                response.uint(option::SIZE2, whole as u32);
            }
        }
        let key = (x.peer, req.mid);
        if x.acked {
            // Separate response: a new CON with the same token.
            let mid = self.next_mid();
            let bytes = Bytes::from(response.encode(MessageType::Confirmable, mid, &req.token));
            if self.outbox.has_room() {
                self.outbox
                    .track(mid, x.peer, bytes.clone(), Owner::Separate, now);
            }
            fx.send.push((x.peer, bytes));
            return;
        }
        let mid = self.next_mid();
        let bytes = Bytes::from(message::reply(req, &response, mid));
        self.dedup.answered(key, bytes.clone());
        fx.send.push((x.peer, bytes));
    }

    /// A notification for an observer: the resource's new state, block 0 only when it is
    /// large (RFC 7959 §2.6), CON now and then so a gone client is noticed.
    pub(crate) fn on_notification(
        &mut self,
        id: ObserverId,
        received: Received,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(observer) = self.observers.get(id).cloned() else {
            fx.unwatch.push(id);
            return;
        };
        match self.notification(&observer, received) {
            Notify::State(body) => self.notify(id, &observer, body, now, fx),
            Notify::End(code, reason) => self.end_observation(id, &observer, code, reason, fx),
            Notify::Nothing => {}
        }
    }

    /// What an observer is sent for what its subscription received.
    fn notification(&self, observer: &Observer, received: Received) -> Notify {
        // JSON bodies are converted for CBOR observers; event and status payloads come
        // already encoded (and cached on the notification).
        let json_to = |b: Vec<u8>| content::encode_json(&b, observer.format).unwrap_or(b);
        match received {
            Received::Notification(n) => match &observer.target {
                Target::AllProperties => match self.current_state(observer) {
                    Some(b) => Notify::State(json_to(b)),
                    None => Notify::End(ResponseType::NotFound, "gone".to_owned()),
                },
                Target::AllEvents => {
                    let data: Value = serde_json::from_slice(&n.data).unwrap_or(Value::Null);
                    Notify::State(json_to(json!({ n.topic.name(): data }).to_string().into_bytes()))
                }
                _ => Notify::State(encode_notification(&n, observer.format)),
            },
            Received::Lagged(_) => match self.current_state(observer) {
                Some(b) => Notify::State(json_to(b)),
                None => Notify::Nothing,
            },
            // The thing was removed, or replaced by one on which this resource is gone or
            // described differently (RFC 7641 §4.2: a non-2.xx notification ends it).
            Received::Closed(Ended::Removed) => {
                Notify::End(ResponseType::NotFound, "the thing was removed".into())
            }
            Received::Closed(Ended::Changed) => {
                let thing = self.servient.thing(&observer.slug);
                match thing.map(|t| t.subscribe(observer.target.clone())) {
                    Ok(Ok(_)) => Notify::End(
                        ResponseType::ServiceUnavailable,
                        "the thing was reloaded and this resource changed: read its TD and observe again"
                            .into(),
                    ),
                    _ => Notify::End(
                        ResponseType::NotFound,
                        "the thing was reloaded without this resource".into(),
                    ),
                }
            }
        }
    }

    /// The current JSON of an observed property or of all properties (None for other targets,
    /// or when the thing or property is gone).
    fn current_state(&self, observer: &Observer) -> Option<Vec<u8>> {
        let thing = self.servient.thing(&observer.slug).ok()?;
        match &observer.target {
            Target::Property(name) => thing.read_property(name).ok().map(|b| b.to_vec()),
            Target::AllProperties => thing.read_all_properties().ok().map(|b| b.to_vec()),
            _ => None,
        }
    }

    /// Ends an observation with a final non-2.xx notification (NON); after a 5.03 (the resource
    /// changed) Max-Age 0 says observing again may start at once.
    fn end_observation(
        &mut self,
        id: ObserverId,
        observer: &Observer,
        code: ResponseType,
        reason: String,
        fx: &mut Effects,
    ) {
        self.observers.remove(id);
        fx.unwatch.push(id);
        let mut r = Response::diagnostic(code, reason);
        if code == ResponseType::ServiceUnavailable {
            r.uint(option::MAX_AGE, 0);
        }
        let mid = self.next_mid();
        let bytes = r.encode(MessageType::NonConfirmable, mid, &observer.token);
        fx.send.push((observer.peer, Bytes::from(bytes)));
    }

    /// Sends the observer its resource's new state (2.05 with the next Observe value), block 0
    /// only when it is large: CON when one is due, else NON.
    fn notify(&mut self, id: ObserverId, observer: &Observer, body: Vec<u8>, now: Instant, fx: &mut Effects) {
        let con = self.observers.wants_con(id, now);
        let Some(o) = self.observers.get_mut(id) else {
            return;
        };
        let seq = o.next_seq();
        let previous = o.outstanding;
        let mut response = Response::with_payload(ResponseType::Content, body);
        response.uint(option::OBSERVE, seq);
        response.uint(option::CONTENT_FORMAT, u32::from(observer.format.number()));
        self.first_block_only(&mut response);
        let mid = self.next_mid();
        if con {
            self.send_con_notification(id, observer, &response, (mid, previous), now, fx);
        } else {
            self.send_non_notification(id, observer, &response, mid, fx);
        }
    }

    /// Cuts a payload larger than a block to its first block, with Block2 and ETag (RFC 7959
    /// §2.6: the observer fetches the rest).
    fn first_block_only(&self, response: &mut Response) {
        if response.payload.len() <= self.cfg.block_limit {
            return;
        }
        let tag = block::etag(&response.payload);
        let want = Block {
            num: 0,
            more: false,
            szx: block::szx_for(self.cfg.block_limit),
        };
        if let Some((part, got)) = block::slice(&response.payload, want) {
            let part = part.to_vec();
            response.payload = part;
            response.option(option::BLOCK2, got.encode());
            response.option(option::ETAG, tag.to_vec());
        }
    }

    /// A CON notification, tracked for retransmission; it takes over from the observer's
    /// `previous` unacknowledged one. With no room to track it, it goes as NON instead (a CON
    /// we could not retransmit is no better).
    fn send_con_notification(
        &mut self,
        id: ObserverId,
        observer: &Observer,
        response: &Response,
        (mid, previous): (u16, Option<u16>),
        now: Instant,
        fx: &mut Effects,
    ) {
        let bytes = Bytes::from(response.encode(MessageType::Confirmable, mid, &observer.token));
        let tracked = match previous {
            Some(old) => self.outbox.supersede(old, mid, bytes.clone(), now),
            None => false,
        };
        if !tracked {
            if !self.outbox.has_room() {
                self.send_non_notification(id, observer, response, mid, fx);
                return;
            }
            self.outbox
                .track(mid, observer.peer, bytes.clone(), Owner::Observer(id), now);
        }
        if let Some(o) = self.observers.get_mut(id) {
            o.outstanding = Some(mid);
        }
        fx.send.push((observer.peer, bytes));
    }

    /// A NON notification, remembered so a RST to it ends the observation.
    fn send_non_notification(
        &mut self,
        id: ObserverId,
        observer: &Observer,
        response: &Response,
        mid: u16,
        fx: &mut Effects,
    ) {
        let bytes = response.encode(MessageType::NonConfirmable, mid, &observer.token);
        self.outbox.sent_non(observer.peer, mid, id);
        fx.send.push((observer.peer, Bytes::from(bytes)));
    }

    /// Retransmissions, give-ups (a client that never acknowledges a CON notification is
    /// dropped) and expiry of idle block-wise transfers.
    pub(crate) fn on_tick(&mut self, now: Instant, fx: &mut Effects) {
        for due in self.outbox.tick(now) {
            match due {
                Due::Resend(peer, bytes) => fx.send.push((peer, bytes)),
                Due::GiveUp(Owner::Observer(id)) => {
                    if self.observers.remove(id).is_some() {
                        fx.unwatch.push(id);
                    }
                }
                Due::GiveUp(Owner::Separate) => {}
            }
        }
        self.block1.expire(now);
    }
}

/// The resource a request names, when it has the request's method (4.04 and 4.05 otherwise).
fn resource_of(request: &Request) -> Result<Resource, Response> {
    let Some(resource) = router::resource(&request.path) else {
        return Err(Response::diagnostic(
            ResponseType::NotFound,
            format!("no resource at '{}'", request.uri()),
        ));
    };
    if !resource.allows(request.method) {
        let allowed: Vec<&str> = resource.methods().iter().map(|m| method_name(*m)).collect();
        return Err(Response::diagnostic(
            ResponseType::MethodNotAllowed,
            format!(
                "{} is not allowed on '{}'; allowed: {}",
                method_name(request.method),
                request.uri(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(resource)
}

/// The Content-Format to answer in: one the client accepts of those the resource has (4.06
/// otherwise).
fn negotiate(resource: &Resource, accept: Option<u16>) -> Result<Format, Response> {
    let kind = match resource {
        Resource::WellKnownCore => Kind::Links,
        Resource::WellKnownWot | Resource::Td(_) => Kind::Td,
        _ => Kind::Json,
    };
    content::negotiate(kind, accept).map_err(|content::NotAcceptable| {
        Response::diagnostic(
            ResponseType::NotAcceptable,
            format!(
                "cannot produce Content-Format {} here; use {}",
                accept.unwrap_or_default(),
                match kind {
                    Kind::Links => "40",
                    Kind::Td => "432, 50 or 60",
                    Kind::Json => "50 or 60",
                }
            ),
        )
    })
}

/// The values of a writemultipleproperties body, which must be an object.
fn property_values(body: Value) -> Result<serde_json::Map<String, Value>, Response> {
    match body {
        Value::Object(values) => Ok(values),
        _ => Err(error_response(&Error::Schema(crate::core::SchemaViolation {
            pointer: String::new(),
            rule: "type".into(),
            message: "writemultipleproperties takes an object of property names and values".into(),
        }))),
    }
}

fn too_large(max: usize) -> Response {
    let mut r = Response::diagnostic(
        ResponseType::RequestEntityTooLarge,
        format!("the body is larger than {max} bytes"),
    );
    r.uint(option::SIZE1, max as u32);
    r
}

/// A notification's payload in the observer's format; the CBOR form is computed once per
/// notification and shared by every CoAP observer (the JSON form is the payload itself).
fn encode_notification(n: &Notification, format: Format) -> Vec<u8> {
    match format {
        Format::Cbor if !n.data.is_empty() => n
            .encoded(EncodingSlot::Coap, |n| {
                Bytes::from(content::encode_json(&n.data, Format::Cbor).unwrap_or_default())
            })
            .to_vec(),
        _ => n.data.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ThingBuilder;
    use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

    fn engine() -> (Engine, Arc<Servient>) {
        let servient = Arc::new(Servient::new());
        let thing = ThingBuilder::new(
            "lamp",
            json!({
                "title": "Lamp",
                "properties": {
                    "on": {"type": "boolean", "observable": true},
                    "level": {"type": "integer", "minimum": 0, "maximum": 100},
                    "note": {"type": "string"}
                },
                "actions": {"toggle": {"synchronous": true, "output": {"type": "boolean"}}},
                "events": {"faded": {"data": {"type": "integer"}}}
            }),
        )
        .on_action("toggle", |ctx| async move {
            let on = ctx.thing.property("on")?.value() == json!(true);
            ctx.thing.update_property("on", json!(!on))?;
            Ok(Some(json!(!on)))
        })
        .build()
        .unwrap();
        servient.expose(thing);
        let publisher = Arc::new(TdPublisher::new(vec![Arc::new(
            super::super::CoapForms::default(),
        )]));
        let origins = Origins {
            http: None,
            coap: Some("coap://127.0.0.1:5683".into()),
            coaps: None,
        };
        let engine = Engine::new(
            EngineConfig::default(),
            servient.clone(),
            publisher,
            origins,
            "urn:x".into(),
        );
        (engine, servient)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn request(method: RequestType, mid: u16, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = mid;
        p.set_token(vec![0xab, (mid & 0xff) as u8]);
        for s in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        p
    }

    /// Feeds one datagram and performs whatever core work it asks for, like the socket loop.
    async fn exchange(engine: &mut Engine, servient: &Servient, packet: &Packet) -> Vec<Packet> {
        let mut fx = Effects::default();
        let now = Instant::now();
        engine.on_datagram(peer(), &packet.to_bytes().unwrap(), false, now, &mut fx);
        let mut out = Vec::new();
        loop {
            out.extend(fx.send.drain(..).map(|(_, b)| Packet::from_bytes(&b).unwrap()));
            let perform: Vec<Pending> = fx.perform.drain(..).collect();
            if perform.is_empty() {
                break;
            }
            for p in perform {
                let result = servient.handle(&p.slug, p.op).await;
                engine.on_done(p.exchange, result, now, &mut fx);
            }
        }
        out
    }

    fn code(p: &Packet) -> String {
        p.header.code.to_string()
    }

    #[tokio::test]
    async fn read_write_and_errors() {
        let (mut e, s) = engine();
        let r = exchange(
            &mut e,
            &s,
            &request(RequestType::Get, 1, "/things/lamp/properties/on"),
        )
        .await;
        assert_eq!((code(&r[0]), &r[0].payload[..]), ("2.05".into(), &b"false"[..]));
        assert_eq!(r[0].header.get_type(), MessageType::Acknowledgement);
        assert_eq!(r[0].header.message_id, 1);

        let mut put = request(RequestType::Put, 2, "/things/lamp/properties/level");
        put.payload = b"150".to_vec();
        let r = exchange(&mut e, &s, &put).await;
        assert_eq!(code(&r[0]), "4.00");
        let diag = String::from_utf8(r[0].payload.clone()).unwrap();
        assert!(diag.contains("maximum"), "{diag}");
        assert_eq!(
            s.thing("lamp").unwrap().property("level").unwrap().value(),
            json!(0),
            "unchanged"
        );

        put.header.message_id = 3;
        put.payload = b"42".to_vec();
        assert_eq!(code(&exchange(&mut e, &s, &put).await[0]), "2.04");
        assert_eq!(
            s.thing("lamp").unwrap().property("level").unwrap().value(),
            json!(42)
        );

        put.header.message_id = 4;
        put.add_option(CoapOption::ContentFormat, vec![41]);
        assert_eq!(code(&exchange(&mut e, &s, &put).await[0]), "4.15");

        let mut cbor = request(RequestType::Put, 5, "/things/lamp/properties/level");
        cbor.add_option(CoapOption::ContentFormat, vec![60]);
        cbor.payload = content::to_cbor(&json!(7)).unwrap();
        assert_eq!(code(&exchange(&mut e, &s, &cbor).await[0]), "2.04");
        let mut get = request(RequestType::Get, 6, "/things/lamp/properties/level");
        get.add_option(CoapOption::Accept, vec![60]);
        let r = exchange(&mut e, &s, &get).await;
        assert_eq!(r[0].payload, content::to_cbor(&json!(7)).unwrap());
        get.header.message_id = 7;
        get.clear_option(CoapOption::Accept);
        get.add_option(CoapOption::Accept, vec![41]);
        assert_eq!(code(&exchange(&mut e, &s, &get).await[0]), "4.06");

        assert_eq!(
            code(&exchange(&mut e, &s, &request(RequestType::Get, 8, "/nope")).await[0]),
            "4.04"
        );
        assert_eq!(
            code(
                &exchange(
                    &mut e,
                    &s,
                    &request(RequestType::Get, 9, "/things/lamp/properties/x")
                )
                .await[0]
            ),
            "4.04"
        );
        assert_eq!(
            code(
                &exchange(
                    &mut e,
                    &s,
                    &request(RequestType::Post, 10, "/things/lamp/properties/on")
                )
                .await[0]
            ),
            "4.05"
        );
        assert_eq!(
            code(&exchange(&mut e, &s, &request(RequestType::Fetch, 11, "/things/lamp")).await[0]),
            "4.05"
        );
    }

    #[tokio::test]
    async fn duplicates_execute_once() {
        let (mut e, s) = engine();
        let toggle = request(RequestType::Post, 20, "/things/lamp/actions/toggle");
        let first = exchange(&mut e, &s, &toggle).await;
        let again = exchange(&mut e, &s, &toggle).await;
        assert_eq!(first, again, "the cached answer is replayed");
        assert_eq!(first[0].payload, b"true");
        assert_eq!(
            s.thing("lamp").unwrap().property("on").unwrap().value(),
            json!(true),
            "ran once"
        );
    }

    #[tokio::test]
    async fn td_block2_and_size2() {
        let (mut e, s) = engine();
        let whole = e
            .publisher
            .td_bytes(&s.thing("lamp").unwrap(), &e.origins)
            .unwrap();
        let mut assembled = Vec::new();
        let mut etag = None;
        for num in 0.. {
            let mut get = request(RequestType::Get, 100 + num as u16, "/things/lamp");
            get.add_option(
                CoapOption::Block2,
                Block {
                    num,
                    more: false,
                    szx: 0,
                }
                .encode(),
            );
            get.add_option(CoapOption::Size2, vec![]);
            let r = exchange(&mut e, &s, &get).await.remove(0);
            assert_eq!(code(&r), "2.05");
            let b = Block::decode(r.get_first_option(CoapOption::Block2).unwrap()).unwrap();
            assert_eq!((b.num, b.szx), (num, 0));
            let size2 = r.get_first_option(CoapOption::Size2).unwrap();
            assert_eq!(block::decode_uint(size2, 4), Some(whole.len() as u32));
            let tag = r.get_first_option(CoapOption::ETag).cloned();
            assert!(etag.is_none() || etag == tag);
            etag = tag;
            assembled.extend_from_slice(&r.payload);
            if !b.more {
                break;
            }
        }
        assert_eq!(assembled, whole.to_vec());
        // Random access past the end.
        let mut get = request(RequestType::Get, 999, "/things/lamp");
        get.add_option(
            CoapOption::Block2,
            Block {
                num: 4000,
                more: false,
                szx: 0,
            }
            .encode(),
        );
        assert_eq!(code(&exchange(&mut e, &s, &get).await[0]), "4.02");
    }

    #[tokio::test]
    async fn block1_write() {
        let (mut e, s) = engine();
        let text = "x".repeat(40);
        let body = serde_json::to_vec(&text).unwrap();
        let chunks: Vec<&[u8]> = body.chunks(16).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut put = request(RequestType::Put, 200 + i as u16, "/things/lamp/properties/note");
            let more = i + 1 < chunks.len();
            put.add_option(
                CoapOption::Block1,
                Block {
                    num: i as u32,
                    more,
                    szx: 0,
                }
                .encode(),
            );
            put.payload = chunk.to_vec();
            let r = exchange(&mut e, &s, &put).await.remove(0);
            assert_eq!(code(&r), if more { "2.31" } else { "2.04" });
        }
        assert_eq!(
            s.thing("lamp").unwrap().property("note").unwrap().value(),
            json!(text)
        );
        let mut put = request(RequestType::Put, 300, "/things/lamp/properties/note");
        put.add_option(
            CoapOption::Block1,
            Block {
                num: 0,
                more: true,
                szx: 0,
            }
            .encode(),
        );
        put.add_option(CoapOption::Size1, block::encode_uint(1 << 20));
        put.payload = vec![b' '; 16];
        let r = exchange(&mut e, &s, &put).await.remove(0);
        assert_eq!(code(&r), "4.13");
        assert!(r.get_first_option(CoapOption::Size1).is_some());
    }

    #[tokio::test]
    async fn observe_register_notify_and_cancel() {
        let (mut e, s) = engine();
        let mut obs = request(RequestType::Get, 400, "/things/lamp/properties/on");
        obs.add_option(CoapOption::Observe, vec![]);
        let mut fx = Effects::default();
        let now = Instant::now();
        e.on_datagram(peer(), &obs.to_bytes().unwrap(), false, now, &mut fx);
        let p = fx.perform.pop().unwrap();
        let result = s.handle(&p.slug, p.op).await;
        e.on_done(p.exchange, result, now, &mut fx);
        let first = Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap();
        let seq0 = block::decode_uint(first.get_first_option(CoapOption::Observe).unwrap(), 3).unwrap();
        let (id, mut sub) = fx.watch.pop().unwrap();
        assert_eq!(e.observer_count(), 1);
        s.thing("lamp")
            .unwrap()
            .write_property("on", json!(true))
            .await
            .unwrap();
        let received = sub.recv().await;
        e.on_notification(id, received, now, &mut fx);
        let n = Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap();
        assert_eq!(n.get_token(), obs.get_token());
        assert_eq!(n.payload, b"true");
        let seq1 = block::decode_uint(n.get_first_option(CoapOption::Observe).unwrap(), 3).unwrap();
        assert!(seq1 > seq0);
        // An RST to the notification ends the observation.
        e.on_datagram(
            peer(),
            &message::empty(MessageType::Reset, n.header.message_id),
            false,
            now,
            &mut fx,
        );
        assert_eq!(fx.unwatch, vec![id]);
        assert_eq!(e.observer_count(), 0);
    }

    #[tokio::test]
    async fn gone_observers_are_pruned() {
        let (mut e, s) = engine();
        let mut obs = request(RequestType::Get, 500, "/things/lamp/events/faded");
        obs.add_option(CoapOption::Observe, vec![]);
        let mut fx = Effects::default();
        let mut now = Instant::now();
        e.on_datagram(peer(), &obs.to_bytes().unwrap(), false, now, &mut fx);
        let (id, mut sub) = fx.watch.pop().unwrap();
        now += Duration::from_secs(3600);
        s.thing("lamp")
            .unwrap()
            .emit_event("faded", Some(json!(3)))
            .unwrap();
        let received = sub.recv().await;
        fx.send.clear();
        e.on_notification(id, received, now, &mut fx);
        let n = Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap();
        assert_eq!(
            n.header.get_type(),
            MessageType::Confirmable,
            "a CON after the interval"
        );
        for _ in 0..10 {
            now += Duration::from_secs(120);
            e.on_tick(now, &mut fx);
        }
        assert_eq!(e.observer_count(), 0, "never acknowledged → dropped");
        assert!(fx.unwatch.contains(&id));
    }

    #[tokio::test]
    async fn message_layer_answers() {
        let (mut e, _s) = engine();
        let mut fx = Effects::default();
        let now = Instant::now();
        e.on_datagram(peer(), &[0x40, 0, 0x12, 0x34], false, now, &mut fx);
        assert_eq!(
            &fx.send.pop().unwrap().1[..],
            &[0x70, 0, 0x12, 0x34],
            "ping → RST"
        );
        let mut p = request(RequestType::Get, 600, "/things/lamp");
        p.add_option(CoapOption::Unknown(9999), vec![1]);
        e.on_datagram(peer(), &p.to_bytes().unwrap(), false, now, &mut fx);
        assert_eq!(
            code(&Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap()),
            "4.02"
        );
        p.header.set_type(MessageType::NonConfirmable);
        e.on_datagram(peer(), &p.to_bytes().unwrap(), false, now, &mut fx);
        let r = Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap();
        assert_eq!(r.header.get_type(), MessageType::Reset, "a rejected NON");
        let mut non = request(RequestType::Get, 601, "/.well-known/core");
        non.header.set_type(MessageType::NonConfirmable);
        e.on_datagram(peer(), &non.to_bytes().unwrap(), false, now, &mut fx);
        let r = Packet::from_bytes(&fx.send.pop().unwrap().1).unwrap();
        assert_eq!(
            r.header.get_type(),
            MessageType::NonConfirmable,
            "NON answered NON"
        );
        assert_eq!(code(&r), "2.05");
        // Multicast: errors are never answered.
        e.on_datagram(
            peer(),
            &request(RequestType::Get, 602, "/nope").to_bytes().unwrap(),
            true,
            now,
            &mut fx,
        );
        assert!(fx.is_empty());
    }
}
