//! The legacy WebThings wire format, sans-IO: `{name: value}` payloads, WebSocket messages in
//! (`setProperty`, `requestAction`, `addEventSubscription`) and out (`propertyStatus`,
//! `actionStatus`, `event`, `error`), and the millisecond timestamps that must be unique per
//! thing because the Gateway's adapter dedupes events on `name-timestamp`.
//!
//! Plain data and functions only: no sockets, no actix, no core state.

use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

/// Hands out RFC 3339 UTC timestamps with millisecond precision, strictly increasing: when two
/// stamps fall in the same millisecond the later one is moved to the next millisecond.
#[derive(Debug, Default)]
pub(crate) struct StampClock {
    last_ms: AtomicI64,
}

impl StampClock {
    /// A stamp for `now_ms` (milliseconds since the Unix epoch), unique for this clock.
    pub(crate) fn stamp_at(&self, now_ms: i64) -> String {
        let mut last = self.last_ms.load(Ordering::Relaxed);
        loop {
            let next = now_ms.max(last + 1);
            match self
                .last_ms
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return format_ms(next),
                Err(seen) => last = seen,
            }
        }
    }

    pub(crate) fn stamp(&self) -> String {
        let now = OffsetDateTime::now_utc();
        self.stamp_at((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// `2026-11-22T07:52:48.123Z`.
pub(crate) fn format_ms(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// A message a client sends over the legacy WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// `{"messageType":"setProperty","data":{name: value, ...}}`
    SetProperty(Map<String, Value>),
    /// `{"messageType":"requestAction","data":{name: {"input": ...}}}`
    RequestAction(Map<String, Value>),
    /// `{"messageType":"addEventSubscription","data":{name: {}, ...}}`
    AddEventSubscription(Vec<String>),
}

/// Why a text frame is not a message; its Display is the sentence of the `error` message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IncomingError {
    #[error("the message is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("a message is a JSON object with messageType and data")]
    NotAnObject,
    #[error("the message has no string 'messageType'")]
    NoMessageType,
    #[error("'{0}' needs an object 'data'")]
    NoData(String),
    #[error("unknown messageType '{0}'")]
    UnknownType(String),
}

/// Parses one text frame.
pub(crate) fn parse_incoming(text: &str) -> Result<Incoming, IncomingError> {
    let value: Value = serde_json::from_str(text)?;
    let Value::Object(mut message) = value else {
        return Err(IncomingError::NotAnObject);
    };
    let kind = match message.get("messageType") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(IncomingError::NoMessageType),
    };
    let data = match message.remove("data") {
        Some(Value::Object(data)) => data,
        _ => return Err(IncomingError::NoData(kind)),
    };
    match kind.as_str() {
        "setProperty" => Ok(Incoming::SetProperty(data)),
        "requestAction" => Ok(Incoming::RequestAction(data)),
        "addEventSubscription" => Ok(Incoming::AddEventSubscription(
            data.into_iter().map(|(k, _)| k).collect(),
        )),
        other => Err(IncomingError::UnknownType(other.to_owned())),
    }
}

/// `{"<name>": <value>}` from a name and an already serialised value.
pub(crate) fn keyed(name: &str, value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + value.len() + 8);
    out.push(b'{');
    // A string always serialises.
    out.extend_from_slice(&serde_json::to_vec(name).unwrap_or_default());
    out.push(b':');
    out.extend_from_slice(if value.is_empty() { b"null" } else { value });
    out.push(b'}');
    Bytes::from(out)
}

/// `{"messageType":"<kind>","data":<data>}` with `data` already serialised.
pub(crate) fn message(kind: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + kind.len() + 32);
    out.extend_from_slice(b"{\"messageType\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    Bytes::from(out)
}

pub(crate) const EVENT_PREFIX: &[u8] = b"{\"messageType\":\"event\",\"data\":";

/// The `{name: {"data": ..., "timestamp": ...}}` object of one event occurrence.
pub(crate) fn event_object(name: &str, data: &[u8], timestamp: &str) -> Bytes {
    let mut inner = Vec::with_capacity(data.len() + 64);
    inner.extend_from_slice(b"{\"data\":");
    inner.extend_from_slice(if data.is_empty() { b"null" } else { data });
    inner.extend_from_slice(b",\"timestamp\":");
    inner.extend_from_slice(&serde_json::to_vec(timestamp).unwrap_or_default());
    inner.push(b'}');
    keyed(name, &inner)
}

/// The `event` message around an event object; [`event_object_of`] takes it out again.
pub(crate) fn event_message(object: &[u8]) -> Bytes {
    message("event", object)
}

/// The event object inside an `event` message made by [`event_message`], without copying.
pub(crate) fn event_object_of(message: &Bytes) -> Bytes {
    if message.len() > EVENT_PREFIX.len() && message.starts_with(EVENT_PREFIX) {
        message.slice(EVENT_PREFIX.len()..message.len() - 1)
    } else {
        message.clone()
    }
}

/// The HTTP reason phrase Mozilla's error messages carry, e.g. `400 Bad Request`.
pub(crate) fn status_line(status: u16) -> String {
    let reason = actix_web::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown");
    format!("{status} {reason}")
}

/// `{"messageType":"error","data":{"status":"400 Bad Request","message":...}}`
pub(crate) fn error_message(status: u16, text: &str) -> Bytes {
    let body = json!({"messageType": "error", "data": {"status": status_line(status), "message": text}});
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_carry_the_standard_reason_phrase() {
        assert_eq!(status_line(400), "400 Bad Request");
        assert_eq!(status_line(401), "401 Unauthorized");
        assert_eq!(status_line(429), "429 Too Many Requests");
        assert_eq!(status_line(503), "503 Service Unavailable");
    }

    #[test]
    fn stamps_are_unique_and_increasing_within_one_millisecond() {
        let clock = StampClock::default();
        let a = clock.stamp_at(1_700_000_000_123);
        let b = clock.stamp_at(1_700_000_000_123);
        let c = clock.stamp_at(1_700_000_000_100);
        assert_eq!(a, "2023-11-14T22:13:20.123Z");
        assert_eq!(b, "2023-11-14T22:13:20.124Z");
        assert_eq!(c, "2023-11-14T22:13:20.125Z");
    }

    #[test]
    fn parses_the_three_client_messages() {
        assert_eq!(
            parse_incoming(r#"{"messageType":"setProperty","data":{"on":true}}"#).unwrap(),
            Incoming::SetProperty(json!({"on": true}).as_object().unwrap().clone())
        );
        assert!(matches!(
            parse_incoming(r#"{"messageType":"requestAction","data":{"fade":{"input":{"level":1}}}}"#),
            Ok(Incoming::RequestAction(_))
        ));
        assert_eq!(
            parse_incoming(r#"{"messageType":"addEventSubscription","data":{"faded":{}}}"#).unwrap(),
            Incoming::AddEventSubscription(vec!["faded".into()])
        );
        for bad in [
            "nope",
            "[]",
            r#"{"data":{}}"#,
            r#"{"messageType":"setProperty"}"#,
            r#"{"messageType":"setProperty","data":3}"#,
            r#"{"messageType":"dance","data":{}}"#,
        ] {
            assert!(parse_incoming(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_incoming(r#"{"messageType":"setProperty","data":3}"#)
                .unwrap_err()
                .to_string(),
            "'setProperty' needs an object 'data'"
        );
        assert!(matches!(
            parse_incoming(r#"{"messageType":"dance","data":{}}"#),
            Err(IncomingError::UnknownType(kind)) if kind == "dance"
        ));
    }

    #[test]
    fn frames_are_valid_json_and_events_round_trip() {
        let object = event_object("faded", b"42", "2023-11-14T22:13:20.123Z");
        let framed = event_message(&object);
        let v: Value = serde_json::from_slice(&framed).unwrap();
        assert_eq!(v["data"]["faded"]["data"], 42);
        assert_eq!(event_object_of(&framed), object);
        let empty: Value = serde_json::from_slice(&event_object("e", b"", "t")).unwrap();
        assert_eq!(empty["e"]["data"], Value::Null);
        let status: Value =
            serde_json::from_slice(&message("propertyStatus", &keyed("o\"n", b"true"))).unwrap();
        assert_eq!(status["data"]["o\"n"], true);
        let error: Value = serde_json::from_slice(&error_message(400, "x")).unwrap();
        assert_eq!(error["data"]["status"], "400 Bad Request");
    }
}
