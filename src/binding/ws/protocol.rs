//! The Web Thing Protocol wire format, sans-IO: one text message in → a [`Decoded`] request (or a
//! precise [`Rejection`]); replies, errors and notifications out → JSON bytes.
//!
//! It knows the draft's envelope (`thingID`, `messageID`, `messageType`, `operation`,
//! `correlationID`) and the members of each operation; it does not know sockets, sessions or the
//! servient, and it never panics on input. Readings the draft leaves open are recorded in
//! `spec-notes/ws.md`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::binding::problem::Problem;
use crate::core::{ActionStatus, EncodingSlot, Error, ErrorKind, Notification, Topic};

/// The WebSocket subprotocol name of the Web Thing Protocol.
pub const SUBPROTOCOL: &str = "webthingprotocol";
/// The (placeholder) base of the draft's error types.
pub(crate) const ERROR_TYPE_BASE: &str = "https://w3c.github.io/web-thing-protocol/errors#";
/// Longest correlationID we echo; longer ones are refused (they would be copied into every
/// notification of a subscription).
pub(crate) const MAX_CORRELATION_ID: usize = 256;

/// A request, decoded and checked for shape (not yet against the thing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    ReadProperty { name: String },
    WriteProperty { name: String, value: Value },
    ObserveProperty { name: String },
    UnobserveProperty { name: String },
    ReadAllProperties,
    ReadMultipleProperties { names: Vec<String> },
    WriteAllProperties { values: Map<String, Value> },
    WriteMultipleProperties { values: Map<String, Value> },
    ObserveAllProperties,
    UnobserveAllProperties,
    InvokeAction { name: String, input: Option<Value> },
    QueryAction { name: Option<String>, action_id: String },
    CancelAction { name: Option<String>, action_id: String },
    QueryAllActions,
    SubscribeEvent { name: String },
    UnsubscribeEvent { name: String },
    SubscribeAllEvents,
    UnsubscribeAllEvents,
}

impl Request {
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Request::ReadProperty { .. } => "readproperty",
            Request::WriteProperty { .. } => "writeproperty",
            Request::ObserveProperty { .. } => "observeproperty",
            Request::UnobserveProperty { .. } => "unobserveproperty",
            Request::ReadAllProperties => "readallproperties",
            Request::ReadMultipleProperties { .. } => "readmultipleproperties",
            Request::WriteAllProperties { .. } => "writeallproperties",
            Request::WriteMultipleProperties { .. } => "writemultipleproperties",
            Request::ObserveAllProperties => "observeallproperties",
            Request::UnobserveAllProperties => "unobserveallproperties",
            Request::InvokeAction { .. } => "invokeaction",
            Request::QueryAction { .. } => "queryaction",
            Request::CancelAction { .. } => "cancelaction",
            Request::QueryAllActions => "queryallactions",
            Request::SubscribeEvent { .. } => "subscribeevent",
            Request::UnsubscribeEvent { .. } => "unsubscribeevent",
            Request::SubscribeAllEvents => "subscribeallevents",
            Request::UnsubscribeAllEvents => "unsubscribeallevents",
        }
    }

    /// The affordance name the request is about, if any.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Request::ReadProperty { name }
            | Request::WriteProperty { name, .. }
            | Request::ObserveProperty { name }
            | Request::UnobserveProperty { name }
            | Request::InvokeAction { name, .. }
            | Request::SubscribeEvent { name }
            | Request::UnsubscribeEvent { name } => Some(name),
            Request::QueryAction { name, .. } | Request::CancelAction { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

/// Every operation name the binding serves (the 18 TD operation types).
pub(crate) const OPERATIONS: &[&str] = &[
    "readproperty",
    "writeproperty",
    "observeproperty",
    "unobserveproperty",
    "readallproperties",
    "readmultipleproperties",
    "writeallproperties",
    "writemultipleproperties",
    "observeallproperties",
    "unobserveallproperties",
    "invokeaction",
    "queryaction",
    "cancelaction",
    "queryallactions",
    "subscribeevent",
    "unsubscribeevent",
    "subscribeallevents",
    "unsubscribeallevents",
];

/// A decoded request with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// `thingID` as sent; None when the client left it out (the URL names the thing).
    pub(crate) thing_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) request: Request,
}

/// Why a message was refused before it reached the thing. Always answered with an error
/// response; the socket stays open.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub(crate) status: u16,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    /// The member at fault, when one is.
    pub(crate) member: Option<&'static str>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) operation: Option<String>,
}

impl Rejection {
    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Rejection {
            status: 400,
            title: "Bad Request",
            detail: detail.into(),
            member: None,
            correlation_id: None,
            operation: None,
        }
    }

    fn at(mut self, member: &'static str) -> Self {
        self.member = Some(member);
        self
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Rejection {
            status: 413,
            title: "Message Too Large",
            detail: format!("the message is larger than the limit of {limit} bytes"),
            member: None,
            correlation_id: None,
            operation: None,
        }
    }

    /// A text message over the limit, answered with the correlationID and operation it carries
    /// so that the client can tell which request failed. Only those two members are read; every
    /// other value is skipped without being built, and a message that is not a JSON object (or
    /// whose two members are not strings) is answered without them.
    pub(crate) fn too_large_message(text: &str, limit: usize) -> Self {
        #[derive(serde::Deserialize)]
        struct Ids {
            #[serde(rename = "correlationID")]
            correlation_id: Option<String>,
            operation: Option<String>,
        }
        let ids = serde_json::from_str::<Ids>(text).ok();
        let mut rejection = Rejection::too_large(limit);
        if let Some(ids) = ids {
            rejection.correlation_id = ids.correlation_id;
            rejection.operation = ids.operation;
        }
        rejection
    }

    pub(crate) fn binary() -> Self {
        Rejection::bad_request("binary frames are not supported: send each message as a JSON text frame")
    }

    pub(crate) fn unknown_thing(thing_id: &str) -> Self {
        Rejection {
            status: 404,
            title: "Not Found",
            detail: format!("this socket serves no thing with thingID '{thing_id}'"),
            member: Some("thingID"),
            correlation_id: None,
            operation: None,
        }
    }
}

fn string_member(object: &Map<String, Value>, key: &'static str) -> Result<Option<String>, Rejection> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(Rejection::bad_request(format!("'{key}' must be a string, not {}", kind(other))).at(key))
        }
    }
}

fn required_string(object: &Map<String, Value>, key: &'static str, op: &str) -> Result<String, Rejection> {
    string_member(object, key)?
        .ok_or_else(|| Rejection::bad_request(format!("'{op}' needs a '{key}' member")).at(key))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes one text message: a JSON object, its envelope, then the operation's members. Every
/// rejection after the first two steps echoes the correlationID and operation, when they are
/// readable.
pub(crate) fn decode(text: &str) -> Result<Decoded, Rejection> {
    let mut object = parse_object(text)?;
    // The correlationID is read first, so every later rejection can echo it.
    let correlation_id = correlation_id(&object)?;
    let operation = string_member(&object, "operation").map_err(|e| with_correlation(e, &correlation_id))?;
    let fail = |e: Rejection| {
        let mut e = with_correlation(e, &correlation_id);
        if e.operation.is_none() {
            e.operation = operation.clone();
        }
        e
    };
    let thing_id = string_member(&object, "thingID").map_err(fail)?;
    string_member(&object, "messageID").map_err(fail)?;
    check_message_type(&object).map_err(fail)?;
    let Some(op) = operation.as_deref() else {
        return Err(fail(
            Rejection::bad_request("'operation' is missing").at("operation"),
        ));
    };
    let request = request(op, &mut object).map_err(fail)?;
    Ok(Decoded {
        thing_id,
        correlation_id,
        request,
    })
}

/// The message as a JSON object.
fn parse_object(text: &str) -> Result<Map<String, Value>, Rejection> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Rejection::bad_request(format!(
            "the message is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(Rejection::bad_request(format!(
            "a message must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

/// The `correlationID`, when there is one: a string of at most [`MAX_CORRELATION_ID`] bytes.
fn correlation_id(object: &Map<String, Value>) -> Result<Option<String>, Rejection> {
    match string_member(object, "correlationID")? {
        Some(id) if id.len() > MAX_CORRELATION_ID => Err(Rejection::bad_request(format!(
            "'correlationID' is longer than {MAX_CORRELATION_ID} bytes"
        ))
        .at("correlationID")),
        id => Ok(id),
    }
}

/// A Thing accepts only messages of type `request`.
fn check_message_type(object: &Map<String, Value>) -> Result<(), Rejection> {
    match string_member(object, "messageType")?.as_deref() {
        Some("request") => Ok(()),
        None => Err(Rejection::bad_request("'messageType' is missing").at("messageType")),
        Some(t @ ("response" | "notification")) => Err(Rejection::bad_request(format!(
            "a Thing only accepts messages of type 'request', not '{t}'"
        ))
        .at("messageType")),
        Some(t) => Err(
            Rejection::bad_request(format!("unknown messageType '{t}'; expected 'request'"))
                .at("messageType"),
        ),
    }
}

/// The request of operation `op`, from its members (taking `value`, `values` and `input` out of
/// the object); a refusal names the member at fault.
fn request(op: &str, object: &mut Map<String, Value>) -> Result<Request, Rejection> {
    let name = |o: &Map<String, Value>| required_string(o, "name", op);
    Ok(match op {
        "readproperty" => Request::ReadProperty { name: name(object)? },
        "writeproperty" => {
            let name = name(object)?;
            let value = object.remove("value").ok_or_else(|| {
                Rejection::bad_request("'writeproperty' needs a 'value' member").at("value")
            })?;
            Request::WriteProperty { name, value }
        }
        "observeproperty" => Request::ObserveProperty { name: name(object)? },
        "unobserveproperty" => Request::UnobserveProperty { name: name(object)? },
        "readallproperties" => Request::ReadAllProperties,
        "readmultipleproperties" => Request::ReadMultipleProperties {
            names: property_names(object)?,
        },
        "writeallproperties" => Request::WriteAllProperties {
            values: property_values(object, op)?,
        },
        "writemultipleproperties" => Request::WriteMultipleProperties {
            values: property_values(object, op)?,
        },
        "observeallproperties" => Request::ObserveAllProperties,
        "unobserveallproperties" => Request::UnobserveAllProperties,
        "invokeaction" => Request::InvokeAction {
            name: name(object)?,
            input: object.remove("input"),
        },
        "queryaction" | "cancelaction" => {
            let action_id = required_string(object, "actionID", op)?;
            let name = string_member(object, "name")?;
            if op == "queryaction" {
                Request::QueryAction { name, action_id }
            } else {
                Request::CancelAction { name, action_id }
            }
        }
        "queryallactions" => Request::QueryAllActions,
        "subscribeevent" => Request::SubscribeEvent { name: name(object)? },
        "unsubscribeevent" => Request::UnsubscribeEvent { name: name(object)? },
        "subscribeallevents" => Request::SubscribeAllEvents,
        "unsubscribeallevents" => Request::UnsubscribeAllEvents,
        other => {
            return Err(Rejection::bad_request(format!(
                "unknown operation '{other}'; expected one of {}",
                OPERATIONS.join(", ")
            ))
            .at("operation"));
        }
    })
}

/// The `names` of readmultipleproperties: a non-empty array of strings.
fn property_names(object: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
    match object.get("names") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|n| match n {
                Value::String(s) => Ok(s.clone()),
                other => Err(Rejection::bad_request(format!(
                    "'names' must hold property names (strings), not {}",
                    kind(other)
                ))
                .at("names")),
            })
            .collect(),
        Some(Value::Array(_)) => Err(Rejection::bad_request("'names' must not be empty").at("names")),
        Some(other) => {
            Err(Rejection::bad_request(format!("'names' must be an array, not {}", kind(other))).at("names"))
        }
        None => Err(Rejection::bad_request("'readmultipleproperties' needs a 'names' member").at("names")),
    }
}

/// The `values` of writeallproperties and writemultipleproperties (`op`): a non-empty object,
/// taken out of the message.
fn property_values(object: &mut Map<String, Value>, op: &str) -> Result<Map<String, Value>, Rejection> {
    match object.remove("values") {
        Some(Value::Object(values)) if !values.is_empty() => Ok(values),
        Some(Value::Object(_)) => Err(Rejection::bad_request("'values' must not be empty").at("values")),
        Some(other) => Err(Rejection::bad_request(format!(
            "'values' must be an object, not {}",
            kind(&other)
        ))
        .at("values")),
        None => Err(Rejection::bad_request(format!("'{op}' needs a 'values' member")).at("values")),
    }
}

fn with_correlation(mut rejection: Rejection, correlation_id: &Option<String>) -> Rejection {
    if rejection.correlation_id.is_none() {
        rejection.correlation_id = correlation_id.clone();
    }
    rejection
}

// ------------------------------------------------------------------------------------- encoding

/// Writes one JSON object member by member; values already serialised (property bytes,
/// notification payloads) are copied in as they are.
pub(crate) struct Frame {
    out: Vec<u8>,
    first: bool,
}

impl Frame {
    pub(crate) fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        Frame { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.push_string(key);
        self.out.push(b':');
    }

    fn push_string(&mut self, s: &str) {
        // Serialising a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, s);
    }

    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.push_string(value);
        self
    }

    pub(crate) fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// A member whose value is already serialised JSON (`null` when empty).
    pub(crate) fn raw(mut self, key: &str, json: &[u8]) -> Self {
        self.key(key);
        if json.is_empty() {
            self.out.extend_from_slice(b"null");
        } else {
            self.out.extend_from_slice(json);
        }
        self
    }

    pub(crate) fn json(mut self, key: &str, value: &Value) -> Self {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.out, value);
        self
    }

    /// The object without its closing brace, for caching and continuing (see
    /// [`append_notification_ending`]).
    pub(crate) fn prefix(self) -> Bytes {
        Bytes::from(self.out)
    }

    pub(crate) fn finish(self) -> Bytes {
        Bytes::from(self.finish_vec())
    }

    /// The finished object in its buffer, for reuse.
    pub(crate) fn finish_vec(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

/// The part of a property or event notification every socket shares (envelope, name, payload,
/// time), encoded once per notification. Each socket appends its operation and correlationID
/// with [`notification`].
pub(crate) fn notification_prefix(thing_id: &str, n: &Notification) -> Bytes {
    n.encoded(EncodingSlot::WebSocket, |n| {
        let frame = envelope(thing_id, "notification", n.data.len() + 64).str("name", n.topic.name());
        let frame = match n.topic {
            Topic::Property(_) => frame.raw("value", &n.data),
            _ if n.data.is_empty() => frame,
            _ => frame.raw("data", &n.data),
        };
        frame.str("timestamp", &n.timestamp).prefix()
    })
}

/// One socket's property or event notification: the shared prefix, then the operation that
/// subscribed and its correlationID.
pub(crate) fn notification(prefix: &[u8], operation: &str, correlation_id: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + 48 + correlation_id.map_or(0, str::len));
    out.extend_from_slice(prefix);
    append_notification_ending(&mut out, operation, correlation_id);
    Bytes::from(out)
}

/// What follows the shared prefix in one socket's notification (its operation, correlationID and
/// the closing brace), appended to `out`. A fan-out encodes it once per socket and topic, so that
/// each notification costs a socket two copies and no encoding.
pub(crate) fn append_notification_ending(out: &mut Vec<u8>, operation: &str, correlation_id: Option<&str>) {
    // A prefix always holds the envelope's members, so these follow a comma.
    let frame = Frame {
        out: std::mem::take(out),
        first: false,
    };
    *out = frame
        .str("operation", operation)
        .opt_str("correlationID", correlation_id)
        .finish_vec();
}

/// The start of every message the Thing sends.
pub(crate) fn envelope(thing_id: &str, message_type: &str, capacity: usize) -> Frame {
    Frame::new(capacity + thing_id.len() + 96)
        .str("thingID", thing_id)
        .str("messageID", &uuid::Uuid::new_v4().to_string())
        .str("messageType", message_type)
}

/// The start of a response to `operation`.
pub(crate) fn response(thing_id: &str, operation: &str, capacity: usize) -> Frame {
    envelope(thing_id, "response", capacity).str("operation", operation)
}

/// A WTP ActionStatus: `{actionID, state, output?, error?, timeRequested, timeEnded?}`.
pub(crate) fn action_status(status: &ActionStatus) -> Value {
    let mut profile = status.to_json(None);
    from_profile_status(&status.id, &mut profile);
    profile
}

/// Turns the core's serialised status (WoT Profile shape, `status` member) into the WTP shape
/// (`actionID` + `state`), in place.
pub(crate) fn from_profile_status(id: &str, status: &mut Value) {
    if let Value::Object(object) = status {
        let mut out = Map::with_capacity(object.len() + 1);
        out.insert("actionID".into(), Value::from(id));
        for (key, value) in std::mem::take(object) {
            if key == "status" {
                out.insert("state".into(), value);
            } else {
                out.insert(key, value);
            }
        }
        *object = out;
    }
}

/// The status of each kind of core error in a Web Thing Protocol error: the binding's one
/// mapping of them (the draft's error types are named by these numbers).
pub(crate) fn kind_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::BadRequest | ErrorKind::WrongDirection => 400,
        ErrorKind::Conflict => 409,
        ErrorKind::Unavailable => 503,
        ErrorKind::Internal => 500,
        ErrorKind::BadGateway => 502,
        ErrorKind::GatewayTimeout => 504,
    }
}

/// The draft's error type for a status.
pub(crate) fn error_type(status: u16) -> String {
    format!("{ERROR_TYPE_BASE}{status}")
}

/// The problem-details object of a core error (RFC 9457 members, the draft's type URIs, plus
/// where the request went wrong).
pub(crate) fn core_problem(error: &Error) -> Value {
    let status = kind_status(error.kind());
    Problem::of_error(error, &error_type(status), status).into_value()
}

/// The problem-details object of a rejection, naming the envelope `member` at fault.
pub(crate) fn rejection_problem(rejection: &Rejection) -> Value {
    let problem = Problem::new(
        &error_type(rejection.status),
        rejection.title,
        rejection.status,
        rejection.detail.clone(),
    );
    match rejection.member {
        Some(member) => problem.with("member", member),
        None => problem,
    }
    .into_value()
}

/// An error response: `messageType: response` with an `error` member.
pub(crate) fn error_response(
    thing_id: &str,
    operation: Option<&str>,
    name: Option<&str>,
    correlation_id: Option<&str>,
    problem: &Value,
) -> Bytes {
    envelope(thing_id, "response", 256)
        .opt_str("operation", operation)
        .opt_str("name", name)
        .json("error", problem)
        .opt_str("correlationID", correlation_id)
        .finish()
}

pub(crate) fn rejection_response(thing_id: &str, rejection: &Rejection) -> Bytes {
    error_response(
        thing_id,
        rejection.operation.as_deref(),
        None,
        rejection.correlation_id.as_deref(),
        &rejection_problem(rejection),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn a_message_too_large_is_refused_with_its_ids_when_it_has_them() {
        let big = json!({"messageType": "request", "pad": ["x".repeat(1000), {"correlationID": "inner"}],
            "operation": "invokeaction", "correlationID": "c7"})
        .to_string();
        let r = Rejection::too_large_message(&big, 100);
        assert_eq!((r.status, r.correlation_id.as_deref()), (413, Some("c7")));
        assert_eq!(r.operation.as_deref(), Some("invokeaction"));
        for no_ids in [
            "[1,2,3]",
            "{\"correlationID\": 7}",
            "not json at all",
            "{\"operation\": \"x\"",
        ] {
            let r = Rejection::too_large_message(no_ids, 1);
            assert_eq!(
                (r.status, r.correlation_id, r.operation),
                (413, None, None),
                "{no_ids}"
            );
        }
    }

    #[test]
    fn decodes_every_operation() {
        let cases = [
            (
                json!({"operation":"readproperty","name":"on"}),
                Request::ReadProperty { name: "on".into() },
            ),
            (
                json!({"operation":"writeproperty","name":"on","value":true}),
                Request::WriteProperty {
                    name: "on".into(),
                    value: json!(true),
                },
            ),
            (
                json!({"operation":"writeproperty","name":"on","value":null}),
                Request::WriteProperty {
                    name: "on".into(),
                    value: Value::Null,
                },
            ),
            (
                json!({"operation":"observeproperty","name":"on"}),
                Request::ObserveProperty { name: "on".into() },
            ),
            (
                json!({"operation":"unobserveproperty","name":"on"}),
                Request::UnobserveProperty { name: "on".into() },
            ),
            (
                json!({"operation":"readallproperties"}),
                Request::ReadAllProperties,
            ),
            (
                json!({"operation":"readmultipleproperties","names":["on","brightness"]}),
                Request::ReadMultipleProperties {
                    names: vec!["on".into(), "brightness".into()],
                },
            ),
            (
                json!({"operation":"writemultipleproperties","values":{"on":true}}),
                Request::WriteMultipleProperties {
                    values: json!({"on":true}).as_object().unwrap().clone(),
                },
            ),
            (
                json!({"operation":"writeallproperties","values":{"on":true}}),
                Request::WriteAllProperties {
                    values: json!({"on":true}).as_object().unwrap().clone(),
                },
            ),
            (
                json!({"operation":"observeallproperties"}),
                Request::ObserveAllProperties,
            ),
            (
                json!({"operation":"unobserveallproperties"}),
                Request::UnobserveAllProperties,
            ),
            (
                json!({"operation":"invokeaction","name":"fade","input":{"level":1}}),
                Request::InvokeAction {
                    name: "fade".into(),
                    input: Some(json!({"level":1})),
                },
            ),
            (
                json!({"operation":"invokeaction","name":"toggle"}),
                Request::InvokeAction {
                    name: "toggle".into(),
                    input: None,
                },
            ),
            (
                json!({"operation":"queryaction","actionID":"a"}),
                Request::QueryAction {
                    name: None,
                    action_id: "a".into(),
                },
            ),
            (
                json!({"operation":"cancelaction","actionID":"a","name":"fade"}),
                Request::CancelAction {
                    name: Some("fade".into()),
                    action_id: "a".into(),
                },
            ),
            (json!({"operation":"queryallactions"}), Request::QueryAllActions),
            (
                json!({"operation":"subscribeevent","name":"e"}),
                Request::SubscribeEvent { name: "e".into() },
            ),
            (
                json!({"operation":"unsubscribeevent","name":"e"}),
                Request::UnsubscribeEvent { name: "e".into() },
            ),
            (
                json!({"operation":"subscribeallevents"}),
                Request::SubscribeAllEvents,
            ),
            (
                json!({"operation":"unsubscribeallevents"}),
                Request::UnsubscribeAllEvents,
            ),
        ];
        assert_eq!(cases.len(), OPERATIONS.len() + 2);
        for (mut message, want) in cases {
            message["thingID"] = json!("urn:uuid:x");
            message["messageID"] = json!("m");
            message["messageType"] = json!("request");
            message["correlationID"] = json!("c-1");
            let decoded = decode(&message.to_string()).unwrap_or_else(|e| panic!("{message}: {e:?}"));
            assert_eq!(decoded.request, want);
            assert_eq!(decoded.request.operation(), message["operation"]);
            assert_eq!(decoded.correlation_id.as_deref(), Some("c-1"));
            assert_eq!(decoded.thing_id.as_deref(), Some("urn:uuid:x"));
        }
    }

    #[test]
    fn rejects_bad_input_precisely_and_keeps_the_correlation_id() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("not json", "not valid JSON", None),
            ("[1,2]", "must be a JSON object", None),
            (
                r#"{"messageType":"request","operation":"readproperty","name":"on","correlationID":5}"#,
                "'correlationID' must be a string",
                None,
            ),
            (
                r#"{"messageType":"request","operation":"nope","correlationID":"c"}"#,
                "unknown operation 'nope'",
                Some("c"),
            ),
            (
                r#"{"messageType":"response","operation":"readproperty","correlationID":"c"}"#,
                "only accepts messages of type 'request'",
                Some("c"),
            ),
            (
                r#"{"messageType":"shout","operation":"readproperty","correlationID":"c"}"#,
                "unknown messageType 'shout'",
                Some("c"),
            ),
            (
                r#"{"operation":"readproperty","name":"on","correlationID":"c"}"#,
                "'messageType' is missing",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","correlationID":"c"}"#,
                "'operation' is missing",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readproperty","correlationID":"c"}"#,
                "needs a 'name'",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readproperty","name":3,"correlationID":"c"}"#,
                "'name' must be a string",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"writeproperty","name":"on","correlationID":"c"}"#,
                "needs a 'value'",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readmultipleproperties","names":[],"correlationID":"c"}"#,
                "must not be empty",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readmultipleproperties","names":"on","correlationID":"c"}"#,
                "must be an array",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readmultipleproperties","names":[1],"correlationID":"c"}"#,
                "property names",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"writemultipleproperties","values":[],"correlationID":"c"}"#,
                "must be an object",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"queryaction","correlationID":"c"}"#,
                "needs a 'actionID'",
                Some("c"),
            ),
            (
                r#"{"messageType":"request","operation":"readproperty","name":"on","thingID":7,"correlationID":"c"}"#,
                "'thingID' must be a string",
                Some("c"),
            ),
        ];
        for (text, needle, correlation) in cases {
            let rejection = decode(text).expect_err(text);
            assert_eq!(rejection.status, 400, "{text}");
            assert!(rejection.detail.contains(needle), "{text}: {}", rejection.detail);
            assert_eq!(rejection.correlation_id.as_deref(), *correlation, "{text}");
            let frame = parse(&rejection_response("urn:t", &rejection));
            assert_eq!(frame["messageType"], "response");
            assert_eq!(frame["error"]["status"], 400);
            assert_eq!(frame["error"]["type"], format!("{ERROR_TYPE_BASE}400"));
        }
        let long = format!(
            r#"{{"messageType":"request","operation":"readallproperties","correlationID":"{}"}}"#,
            "x".repeat(MAX_CORRELATION_ID + 1)
        );
        assert!(decode(&long).unwrap_err().detail.contains("longer than"));
    }

    #[test]
    fn frames_are_valid_json_with_raw_values() {
        let frame = response("urn:t", "readproperty", 32)
            .str("name", "on")
            .raw("value", b"true")
            .opt_str("correlationID", Some("c\"1"))
            .finish();
        let v = parse(&frame);
        assert_eq!(v["value"], true);
        assert_eq!(v["correlationID"], "c\"1");
        assert_eq!(v["operation"], "readproperty");
        assert!(uuid::Uuid::parse_str(v["messageID"].as_str().unwrap()).is_ok());
        assert_eq!(
            parse(&Frame::new(0).raw("data", b"").finish())["data"],
            Value::Null
        );
    }

    #[test]
    fn a_notification_is_its_prefix_and_its_ending() {
        let prefix = envelope("urn:t", "notification", 0).str("name", "x").prefix();
        for correlation_id in [None, Some("s\"1")] {
            let mut ending = Vec::new();
            append_notification_ending(&mut ending, "subscribeevent", correlation_id);
            let joined = [&prefix[..], &ending].concat();
            let whole = notification(&prefix, "subscribeevent", correlation_id);
            assert_eq!(joined, whole.to_vec());
            let v = parse(&whole);
            assert_eq!(v["operation"], "subscribeevent");
            assert_eq!(v["name"], "x");
            assert_eq!(v.get("correlationID").and_then(Value::as_str), correlation_id);
        }
    }

    #[test]
    fn statuses_use_the_wtp_shape() {
        let mut v = json!({"status":"running","timeRequested":"t"});
        from_profile_status("abc", &mut v);
        assert_eq!(v, json!({"actionID":"abc","state":"running","timeRequested":"t"}));
        let e = Error::property_not_found("x");
        assert_eq!(core_problem(&e)["status"], 404);
        assert_eq!(kind_status(Error::Busy(1).kind()), 503);
    }

    #[test]
    fn a_core_problem_says_where_the_request_went_wrong() {
        let schema = Error::Schema(crate::core::SchemaViolation {
            pointer: "/level".into(),
            rule: "maximum".into(),
            message: "too big".into(),
        });
        assert_eq!(
            core_problem(&schema),
            json!({"status": 400, "type": format!("{ERROR_TYPE_BASE}400"), "title": "Schema violation",
                "detail": "too big (at /level, rule 'maximum')", "pointer": "/level", "rule": "maximum"})
        );
        assert_eq!(
            core_problem(&Error::ReadOnly("t".into())),
            json!({"status": 400, "type": format!("{ERROR_TYPE_BASE}400"), "title": "Property is read-only",
                "detail": "property 't' is read-only", "name": "t", "rule": "readOnly"})
        );
        assert_eq!(
            core_problem(&Error::property_not_found("p")),
            json!({"status": 404, "type": format!("{ERROR_TYPE_BASE}404"), "title": "Affordance not found",
                "detail": "thing has no property named 'p'", "kind": "property", "name": "p"})
        );
    }
}

/// Bounded property test: the decoder answers every text with a request or an error, never a
/// panic. The case count follows PROPTEST_CASES (CI raises it; see .ci/run).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::json;

    use super::decode;
    use crate::core::schema::arbitrary::json_value;

    proptest! {
        #[test]
        fn web_thing_protocol_decoder_never_panics(raw in ".{0,200}", doc in json_value(), op in "[a-z]{0,24}") {
            let _ = decode(&raw);
            let _ = decode(&doc.to_string());
            let message = json!({"thingID": "urn:x", "messageID": "1", "messageType": "request", "operation": op, "name": doc.clone(), "value": doc.clone(), "input": doc});
            let _ = decode(&message.to_string());
        }
    }
}
