//! The consumer: the client side of the Web of Things. It fetches a Thing Description (http,
//! https or coap), picks a form per operation by protocol preference (`form`), and performs
//! read/write/readall/writemultiple/invoke (following an asynchronous action's status to its
//! end)/observe/subscribe over HTTP (`http`), CoAP (`coap`) or the Web Thing Protocol (`ws`),
//! decoding JSON or CBOR. Like the server's core, the API here knows no protocol: a remote
//! Thing's operations are async methods returning JSON values, and observations are streams
//! ([`Observation`]), which is what a bridge re-exposing a remote Thing needs.
//!
//! Wire code is the bindings': WTP envelopes from `binding::ws::protocol`, CoAP option numbers,
//! Block values and Content-Format decoding from `binding::coap`. The arrow goes one way only
//! (consumer → binding's wire modules, which are sans-IO): a binding must never use the consumer,
//! and what the consumer needs from a binding stays in those pure modules, never in a server's
//! connection or engine code. Values are validated here, before sending, with the core's
//! [`DataSchema`]. It must not keep state about remote Things beyond one [`ConsumedThing`].

mod coap;
mod error;
mod form;
mod http;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::core::DataSchema;
pub use error::{ConsumerError, ConsumerErrorKind};
pub(crate) use form::Chosen;

/// A protocol the consumer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP or HTTPS (plain JSON; SSE or longpoll for observations).
    Http,
    /// CoAP over UDP (RFC 7252, 7641, 7959).
    Coap,
    /// The W3C Web Thing Protocol over WebSocket (`ws:`).
    Ws,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Protocol::Http),
            "coap" => Ok(Protocol::Coap),
            "ws" => Ok(Protocol::Ws),
            other => Err(format!("{other:?} is not a protocol: http, coap or ws")),
        }
    }
}

/// The content format CoAP requests ask for and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoapFormat {
    /// application/json (50).
    #[default]
    Json,
    /// application/cbor (60).
    Cbor,
}

/// How a [`Consumer`] talks to Things.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The longest one request (or connecting an observation) may take.
    pub timeout: Duration,
    /// A bearer token sent on HTTP and WebSocket (CoAP here has no security to carry it).
    pub token: Option<String>,
    /// Only forms of this protocol are used; None takes the first usable form in TD order.
    pub via: Option<Protocol>,
    /// The CoAP content format.
    pub coap_format: CoapFormat,
    /// PEM certificates that are the only roots trusted for https (a self-signed server's
    /// certificate); empty means the platform's roots.
    pub roots_pem: Vec<Vec<u8>>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            timeout: Duration::from_secs(10),
            token: None,
            via: None,
            coap_format: CoapFormat::Json,
            roots_pem: Vec::new(),
        }
    }
}

/// A client for remote Things: fetches TDs and hands out [`ConsumedThing`]s.
#[derive(Debug, Clone)]
pub struct Consumer {
    config: ConsumerConfig,
    http: reqwest::Client,
    /// CoAP endpoints kept between requests (shared by the clones of this consumer).
    coap_idle: Arc<coap::IdleEndpoints>,
}

impl Consumer {
    /// A consumer with this configuration. Fails only when the HTTP client cannot be built.
    pub fn new(config: ConsumerConfig) -> Result<Self, ConsumerError> {
        // reqwest carries no TLS provider of its own (it would panic without one); ring, as the
        // rest of the runtime uses. A provider the process installed first is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(config.timeout);
        if !config.roots_pem.is_empty() {
            let mut roots = Vec::new();
            for pem in &config.roots_pem {
                let certs =
                    reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ConsumerError::BadUrl {
                        url: String::new(),
                        reason: format!("the trusted certificates are not PEM: {e}"),
                    })?;
                roots.extend(certs);
            }
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().map_err(|e| ConsumerError::BadUrl {
            url: String::new(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Consumer {
            config,
            http,
            coap_idle: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Fetches the TD at `url` (http, https or coap) and consumes it.
    pub async fn fetch(&self, url: &str) -> Result<ConsumedThing, ConsumerError> {
        let parsed = Url::parse(url).map_err(|e| ConsumerError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let td = match parsed.scheme() {
            "http" | "https" => http::fetch_td(self, &parsed).await?,
            "coap" => coap::fetch_td(self, &parsed).await?,
            other => {
                return Err(ConsumerError::BadUrl {
                    url: url.to_owned(),
                    reason: format!("a TD is fetched over http, https or coap, not {other}"),
                });
            }
        };
        self.consume(td, parsed)
    }

    /// Consumes a TD already at hand; `source` is where it came from (the base of relative
    /// hrefs when the TD has no `base`).
    pub fn consume(&self, td: Value, source: Url) -> Result<ConsumedThing, ConsumerError> {
        check_td(&td, &source)?;
        let base = match td.get("base").and_then(Value::as_str) {
            Some(base) => source.join(base).map_err(|e| ConsumerError::NotATd {
                url: source.to_string(),
                reason: format!("its base {base:?} is not a URL: {e}"),
            })?,
            None => source.clone(),
        };
        Ok(ConsumedThing {
            consumer: self.clone(),
            td,
            base,
            source,
        })
    }
}

/// What makes a document a TD for this consumer: a JSON object with `@context`, a string
/// `title`, and affordance maps (when present) that are objects.
fn check_td(td: &Value, source: &Url) -> Result<(), ConsumerError> {
    let not = |reason: &str| ConsumerError::NotATd {
        url: source.to_string(),
        reason: reason.to_owned(),
    };
    let Some(object) = td.as_object() else {
        return Err(not("it is not a JSON object"));
    };
    if !object.contains_key("@context") {
        return Err(not("it has no @context"));
    }
    if !object.get("title").is_some_and(Value::is_string) {
        return Err(not("it has no title string"));
    }
    for kind in ["properties", "actions", "events"] {
        if object.get(kind).is_some_and(|v| !v.is_object()) {
            return Err(ConsumerError::NotATd {
                url: source.to_string(),
                reason: format!("its {kind} is not an object"),
            });
        }
    }
    Ok(())
}

/// One property change or event occurrence from an [`Observation`].
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The property or event.
    pub name: String,
    /// The property's value or the event's data (Null when an event has none).
    pub value: Value,
}

/// An observation or subscription: notices until the remote ends it or it is dropped. Dropping
/// it ends its task, which cancels on the wire where the protocol can (CoAP Observe 1, WTP
/// unobserve/unsubscribe; an HTTP stream is closed); [`Observation::close`] waits for that.
#[derive(Debug)]
pub struct Observation {
    rx: mpsc::Receiver<Result<Notice, ConsumerError>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How long [`Observation::close`] waits for the cancellation to be sent.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Observation {
    /// The next notice; None once the observation is over (after an error, or when ended).
    pub async fn next(&mut self) -> Option<Result<Notice, ConsumerError>> {
        self.rx.recv().await
    }

    /// Ends the observation and waits (briefly) until its cancellation has been sent: for a
    /// process about to exit, where a dropped task would never get to send it.
    pub async fn close(mut self) {
        self.rx.close();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, task).await;
        }
    }

    fn merge(observations: Vec<Observation>) -> Observation {
        observation(move |tx: NoticeSender| async move {
            let mut set = tokio::task::JoinSet::new();
            for mut o in observations {
                let tx = tx.clone();
                set.spawn(async move {
                    loop {
                        tokio::select! {
                            notice = o.next() => {
                                let Some(n) = notice else { break };
                                if tx.send(n).await.is_err() {
                                    break;
                                }
                            }
                            () = tx.closed() => break,
                        }
                    }
                    o.close().await;
                });
            }
            while set.join_next().await.is_some() {}
        })
    }
}

/// The channel an observation task writes into.
pub(crate) type NoticeSender = mpsc::Sender<Result<Notice, ConsumerError>>;

fn observation<F>(run: impl FnOnce(NoticeSender) -> F) -> Observation
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(run(tx));
    Observation { rx, task: Some(task) }
}

/// A remote Thing, from its TD: its operations over the forms the TD offers.
#[derive(Debug, Clone)]
pub struct ConsumedThing {
    consumer: Consumer,
    td: Value,
    base: Url,
    source: Url,
}

/// The thing an operation acts on, for the protocol clients.
#[derive(Debug)]
pub(crate) struct Op<'a> {
    pub(crate) thing: &'a ConsumedThing,
    pub(crate) op: &'static str,
    pub(crate) name: Option<&'a str>,
    pub(crate) form: Chosen,
}

impl ConsumedThing {
    /// The TD, as fetched.
    pub fn td(&self) -> &Value {
        &self.td
    }

    /// The URL the TD was fetched from.
    pub fn source(&self) -> &Url {
        &self.source
    }

    /// The TD's `title`.
    pub fn title(&self) -> &str {
        self.td.get("title").and_then(Value::as_str).unwrap_or_default()
    }

    pub(crate) fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The TD's `id`, or None.
    pub(crate) fn id(&self) -> Option<&str> {
        self.td.get("id").and_then(Value::as_str)
    }

    /// The names of the affordances of a kind (`properties`, `actions`, `events`).
    pub fn names(&self, kind: &str) -> Vec<String> {
        self.td
            .get(kind)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn affordance(&self, kind: &'static str, name: &str) -> Result<&Map<String, Value>, ConsumerError> {
        self.td
            .get(kind)
            .and_then(|m| m.get(name))
            .and_then(Value::as_object)
            .ok_or_else(|| ConsumerError::UnknownAffordance {
                kind: singular(kind),
                name: name.to_owned(),
                known: self.names(kind),
            })
    }

    /// Whether some form of the affordance can perform `op` with the protocols allowed (nothing
    /// is sent): the bridge checks a remote TD with it before serving it.
    pub(crate) fn usable(
        &self,
        kind: &'static str,
        name: &str,
        op: &'static str,
    ) -> Result<(), ConsumerError> {
        self.choose(kind, name, op).map(|_| ())
    }

    fn choose(&self, kind: &'static str, name: &str, op: &'static str) -> Result<Chosen, ConsumerError> {
        let affordance = self.affordance(kind, name)?;
        self.choose_in(affordance.get("forms"), form::default_ops(kind), op, Some(name))
    }

    fn choose_in(
        &self,
        forms: Option<&Value>,
        default: &[&'static str],
        op: &'static str,
        name: Option<&str>,
    ) -> Result<Chosen, ConsumerError> {
        form::choose(forms, default, op, name, &self.base, self.consumer.config.via)
    }

    fn op<'a>(&'a self, op: &'static str, name: Option<&'a str>, form: Chosen) -> Op<'a> {
        Op {
            thing: self,
            op,
            name,
            form,
        }
    }

    /// Reads a property.
    pub async fn read_property(&self, name: &str) -> Result<Value, ConsumerError> {
        let property = self.affordance("properties", name)?;
        if property.get("writeOnly").and_then(Value::as_bool) == Some(true) {
            return Err(ConsumerError::NotAllowed {
                affordance: name.to_owned(),
                reason: "the property is writeOnly and cannot be read".into(),
            });
        }
        let form = self.choose("properties", name, "readproperty")?;
        self.one_shot(self.op("readproperty", Some(name), form), None)
            .await?
            .ok_or_else(|| ConsumerError::Malformed {
                url: self.base.to_string(),
                reason: format!("reading '{name}' returned no value"),
            })
    }

    /// Writes a property, after checking the value against its schema.
    pub async fn write_property(&self, name: &str, value: Value) -> Result<(), ConsumerError> {
        let property = self.affordance("properties", name)?;
        if property.get("readOnly").and_then(Value::as_bool) == Some(true) {
            return Err(ConsumerError::NotAllowed {
                affordance: name.to_owned(),
                reason: "the property is readOnly and cannot be written".into(),
            });
        }
        let value = check(name, &Value::Object(property.clone()), value)?;
        let form = self.choose("properties", name, "writeproperty")?;
        self.one_shot(self.op("writeproperty", Some(name), form), Some(value))
            .await?;
        Ok(())
    }

    /// Reads every property at once (the Thing's readallproperties form).
    pub async fn read_all_properties(&self) -> Result<Map<String, Value>, ConsumerError> {
        let form = self.choose_in(self.td.get("forms"), &[], "readallproperties", None)?;
        match self
            .one_shot(self.op("readallproperties", None, form), None)
            .await?
        {
            Some(Value::Object(values)) => Ok(values),
            other => Err(ConsumerError::Malformed {
                url: self.base.to_string(),
                reason: format!("readallproperties answered {other:?}, not an object"),
            }),
        }
    }

    /// Writes several properties at once, each checked against its schema first.
    pub async fn write_multiple_properties(&self, values: Map<String, Value>) -> Result<(), ConsumerError> {
        let mut checked = Map::with_capacity(values.len());
        for (name, value) in values {
            let property = self.affordance("properties", &name)?;
            let value = check(&name, &Value::Object(property.clone()), value)?;
            checked.insert(name, value);
        }
        let form = self.choose_in(self.td.get("forms"), &[], "writemultipleproperties", None)?;
        self.one_shot(
            self.op("writemultipleproperties", None, form),
            Some(Value::Object(checked)),
        )
        .await?;
        Ok(())
    }

    /// Invokes an action, after checking its input against the schema. A synchronous action's
    /// output is returned as answered; an asynchronous one (the answer is an ActionStatus) is
    /// followed through its queryaction form until it completes or fails.
    pub async fn invoke_action(
        &self,
        name: &str,
        input: Option<Value>,
    ) -> Result<Option<Value>, ConsumerError> {
        let action = self.affordance("actions", name)?;
        let input = match (input, action.get("input")) {
            (Some(input), Some(schema)) => Some(check(name, schema, input)?),
            (Some(input), None) => Some(input),
            (None, Some(schema)) if schema.get("type").is_some() && !accepts_null(schema) => {
                return Err(ConsumerError::NotAllowed {
                    affordance: name.to_owned(),
                    reason: "the action needs an input".into(),
                });
            }
            (None, _) => None,
        };
        let form = self.choose("actions", name, "invokeaction")?;
        match form.protocol {
            Protocol::Http | Protocol::Coap => {
                let protocol = form.protocol;
                let answer = match protocol {
                    Protocol::Http => http::invoke(self, &form, input).await?,
                    _ => coap::invoke(self, &form, input).await?,
                };
                match answer {
                    Invoked::Output(output) => Ok(output),
                    Invoked::Started { status, href } => self.follow(name, protocol, status, href).await,
                }
            }
            Protocol::Ws => ws::invoke(self, &form, name, input).await,
        }
    }

    /// Follows an asynchronous action until it ends: polls the queryaction form (the status's
    /// actionID expanded into it), or the status's own href when the TD has no such form.
    async fn follow(
        &self,
        name: &str,
        protocol: Protocol,
        mut status: Value,
        href: Option<Url>,
    ) -> Result<Option<Value>, ConsumerError> {
        let query = match &href {
            Some(href) => {
                let id = href
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .unwrap_or_default()
                    .to_owned();
                let action = self.affordance("actions", name)?;
                let forms = action.get("forms").cloned();
                let via_protocol = form::choose(
                    forms.as_ref(),
                    &[],
                    "queryaction",
                    Some(name),
                    &self.base,
                    Some(protocol),
                );
                match via_protocol {
                    Ok(form) if !id.is_empty() => form::expand(&form.url, "actionID", &id)?,
                    _ => href.clone(),
                }
            }
            None => {
                return Err(ConsumerError::Malformed {
                    url: self.base.to_string(),
                    reason: format!("the status of '{name}' names no href to follow"),
                });
            }
        };
        let mut wait = Duration::from_millis(50);
        loop {
            match status.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(status.get("output").cloned()),
                Some("failed") => {
                    return Err(ConsumerError::ActionFailed {
                        name: name.to_owned(),
                        detail: status.get("error").map(problem_detail),
                    });
                }
                _ => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
            status = match protocol {
                Protocol::Http => http::get_json(self, &query).await?,
                _ => coap::get_json(self, &query).await?,
            };
        }
    }

    /// Observes a property: a notice per change (the current value is not sent first).
    pub async fn observe_property(&self, name: &str) -> Result<Observation, ConsumerError> {
        let form = self.choose("properties", name, "observeproperty")?;
        self.stream(self.op("observeproperty", Some(name), form)).await
    }

    /// Subscribes to an event, or to every event of the Thing when `name` is None (one
    /// subscription per event, merged).
    pub async fn subscribe_event(&self, name: Option<&str>) -> Result<Observation, ConsumerError> {
        let Some(name) = name else {
            let names = self.names("events");
            if names.is_empty() {
                return Err(ConsumerError::UnknownAffordance {
                    kind: "event",
                    name: "*".into(),
                    known: names,
                });
            }
            let mut all = Vec::with_capacity(names.len());
            for name in &names {
                all.push(Box::pin(self.subscribe_event(Some(name))).await?);
            }
            return Ok(Observation::merge(all));
        };
        let form = self.choose("events", name, "subscribeevent")?;
        self.stream(self.op("subscribeevent", Some(name), form)).await
    }

    async fn one_shot(&self, op: Op<'_>, body: Option<Value>) -> Result<Option<Value>, ConsumerError> {
        match op.form.protocol {
            Protocol::Http => http::one_shot(&op, body).await,
            Protocol::Coap => coap::one_shot(&op, body).await,
            Protocol::Ws => ws::one_shot(&op, body).await,
        }
    }

    async fn stream(&self, op: Op<'_>) -> Result<Observation, ConsumerError> {
        match op.form.protocol {
            Protocol::Http => http::stream(&op).await,
            Protocol::Coap => coap::stream(&op).await,
            Protocol::Ws => ws::stream(&op).await,
        }
    }
}

/// What an invocation over HTTP or CoAP answered.
pub(crate) enum Invoked {
    /// A synchronous action's output.
    Output(Option<Value>),
    /// An asynchronous action's first status, and where it can be queried.
    Started { status: Value, href: Option<Url> },
}

fn singular(kind: &str) -> &'static str {
    match kind {
        "properties" => "property",
        "actions" => "action",
        _ => "event",
    }
}

fn accepts_null(schema: &Value) -> bool {
    DataSchema::compile(schema).is_ok_and(|s| s.is_valid(&Value::Null))
}

/// Validates a value against a DataSchema from the TD, the way the core validates writes.
fn check(name: &str, schema: &Value, value: Value) -> Result<Value, ConsumerError> {
    let schema = DataSchema::compile(schema).map_err(|violation| ConsumerError::Schema {
        affordance: name.to_owned(),
        violation,
    })?;
    schema.check_write(value).map_err(|e| match e {
        crate::core::Error::Schema(violation) => ConsumerError::Schema {
            affordance: name.to_owned(),
            violation,
        },
        other => ConsumerError::NotAllowed {
            affordance: name.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A problem+json (or WTP error) object's most telling sentence.
pub(crate) fn problem_detail(problem: &Value) -> String {
    match problem {
        Value::Object(o) => o
            .get("detail")
            .or_else(|| o.get("title"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| problem.to_string()),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn thing(td: Value) -> Result<ConsumedThing, ConsumerError> {
        let consumer = Consumer::new(ConsumerConfig::default()).unwrap();
        consumer.consume(td, Url::parse("http://127.0.0.1:1/things/x").unwrap())
    }

    #[test]
    fn documents_that_are_not_tds_are_refused_with_a_reason() {
        let err = thing(json!([1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "http://127.0.0.1:1/things/x is not a Thing Description: it is not a JSON object"
        );
        let err = thing(json!({"title": "x"})).unwrap_err();
        assert!(err.to_string().ends_with("it has no @context"), "{err}");
        let err = thing(json!({"@context": "c", "title": "x", "properties": []})).unwrap_err();
        assert!(
            err.to_string().ends_with("its properties is not an object"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn values_are_checked_against_the_schema_before_anything_is_sent() {
        // Port 1 on loopback: were anything sent, the error would be Unreachable.
        let t = thing(json!({
            "@context": "https://www.w3.org/2022/wot/td/v1.1", "title": "x",
            "properties": {
                "level": {"type": "integer", "maximum": 10, "forms": [{"href": "p"}]},
                "state": {"type": "string", "readOnly": true, "forms": [{"href": "s"}]}
            },
            "actions": {"go": {"input": {"type": "integer"}, "forms": [{"href": "a"}]}}
        }))
        .unwrap();
        let err = t.write_property("level", json!(11)).await.unwrap_err();
        assert_eq!(err.kind(), ConsumerErrorKind::BadInput);
        assert!(
            matches!(&err, ConsumerError::Schema { violation, .. } if violation.rule == "maximum"),
            "{err}"
        );
        let err = t.write_property("state", json!("x")).await.unwrap_err();
        assert!(matches!(err, ConsumerError::NotAllowed { .. }), "{err}");
        let err = t.invoke_action("go", Some(json!("fast"))).await.unwrap_err();
        assert!(matches!(err, ConsumerError::Schema { .. }), "{err}");
        let err = t.invoke_action("go", None).await.unwrap_err();
        assert!(matches!(err, ConsumerError::NotAllowed { .. }), "{err}");
        let err = t.read_property("nope").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Thing has no property named 'nope' (it has: level, state)"
        );
        let err = t.read_property("level").await.unwrap_err();
        assert_eq!(err.kind(), ConsumerErrorKind::Unreachable, "{err}");
    }
}
