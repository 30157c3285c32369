//! Content negotiation for the CoAP binding: the Content-Format numbers we speak (RFC 7252 §12.3
//! registry), the choice of a response format from the request's Accept option, and the
//! conversion of JSON payloads to and from CBOR (RFC 8949, via ciborium).
//!
//! Pure functions only; it must not know routes, sockets or the core's operations.

use serde_json::Value;

/// `text/plain;charset=utf-8`: accepted on JSON resources for Californium's cf-browser, which
/// asks for it by default (HUBS.md §4); the body is the JSON text.
pub(crate) const TEXT_PLAIN: u16 = 0;
pub(crate) const LINK_FORMAT: u16 = 40;
pub(crate) const JSON: u16 = 50;
pub(crate) const CBOR: u16 = 60;
pub(crate) const TD_JSON: u16 = 432;

/// What kind of representation a resource has, which decides the formats it can be served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A JSON value: property values, action statuses and outputs, events.
    Json,
    /// A Thing Description.
    Td,
    /// RFC 6690 link format.
    Links,
}

/// The format of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Cbor,
    Text,
    Td,
    Links,
}

impl Format {
    pub(crate) fn number(self) -> u16 {
        match self {
            Format::Json => JSON,
            Format::Cbor => CBOR,
            Format::Text => TEXT_PLAIN,
            Format::Td => TD_JSON,
            Format::Links => LINK_FORMAT,
        }
    }
}

/// No format the resource has matches the Accept option: 4.06 Not Acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotAcceptable;

/// Picks the response format for a resource kind and the request's Accept (None = absent).
pub(crate) fn negotiate(kind: Kind, accept: Option<u16>) -> Result<Format, NotAcceptable> {
    match (kind, accept) {
        (Kind::Json, None | Some(JSON)) => Ok(Format::Json),
        (Kind::Json, Some(CBOR)) => Ok(Format::Cbor),
        (Kind::Json, Some(TEXT_PLAIN)) => Ok(Format::Text),
        (Kind::Td, None | Some(TD_JSON)) => Ok(Format::Td),
        (Kind::Td, Some(JSON)) => Ok(Format::Json),
        (Kind::Td, Some(CBOR)) => Ok(Format::Cbor),
        (Kind::Links, None | Some(LINK_FORMAT)) => Ok(Format::Links),
        _ => Err(NotAcceptable),
    }
}

/// Why a response body could not be encoded; the runtime's failure (5.00), never the client's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The bytes to convert were not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// ciborium could not write the value.
    #[error(transparent)]
    Cbor(#[from] ciborium::ser::Error<std::io::Error>),
}

/// Encodes a JSON body (already serialised) in the chosen format.
pub(crate) fn encode_json(json: &[u8], format: Format) -> Result<Vec<u8>, EncodeError> {
    match format {
        Format::Cbor => {
            let value: Value = serde_json::from_slice(json)?;
            to_cbor(&value)
        }
        _ => Ok(json.to_vec()),
    }
}

pub(crate) fn to_cbor(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    ciborium::into_writer(value, &mut out)?;
    Ok(out)
}

/// Why a request body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// 4.15: a Content-Format we do not take.
    Unsupported(u16),
    /// 4.00: the bytes are not what the Content-Format says.
    Malformed(String),
}

/// Decodes a request body. `Ok(None)` when there is no body. An absent Content-Format means
/// JSON (the TD default content type).
pub(crate) fn decode_body(content_format: Option<u16>, body: &[u8]) -> Result<Option<Value>, BodyError> {
    match content_format {
        None | Some(JSON) | Some(TEXT_PLAIN) => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            serde_json::from_slice(body)
                .map(Some)
                .map_err(|e| BodyError::Malformed(format!("payload is not valid JSON: {e}")))
        }
        Some(CBOR) => {
            if body.is_empty() {
                return Ok(None);
            }
            let value: ciborium::Value = ciborium::from_reader(body)
                .map_err(|e| BodyError::Malformed(format!("payload is not valid CBOR: {e}")))?;
            cbor_to_json(value)
                .map(Some)
                .map_err(|e| BodyError::Malformed(e.to_string()))
        }
        Some(other) => Err(BodyError::Unsupported(other)),
    }
}

/// Why a CBOR item has no JSON form (a request body answered 4.00).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoJsonForm {
    #[error("integer {0} is out of range")]
    IntegerOutOfRange(i128),
    #[error("NaN and infinities have no JSON form")]
    NotFinite,
    #[error("map keys must be text strings")]
    KeyNotText,
    #[error("CBOR tags are not supported")]
    Tag,
    #[error("byte strings have no JSON form")]
    Bytes,
    #[error("unsupported CBOR item")]
    Unsupported,
}

/// CBOR → JSON data model; bytes, tags and non-string keys have no JSON form and are refused.
fn cbor_to_json(value: ciborium::Value) -> Result<Value, NoJsonForm> {
    use ciborium::Value as C;
    Ok(match value {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i: i128 = i.into();
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                Value::from(s)
            } else {
                return Err(NoJsonForm::IntegerOutOfRange(i));
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or(NoJsonForm::NotFinite)?,
        C::Text(s) => Value::String(s),
        C::Array(items) => Value::Array(items.into_iter().map(cbor_to_json).collect::<Result<_, _>>()?),
        C::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                let C::Text(k) = k else {
                    return Err(NoJsonForm::KeyNotText);
                };
                map.insert(k, cbor_to_json(v)?);
            }
            Value::Object(map)
        }
        C::Tag(..) => return Err(NoJsonForm::Tag),
        C::Bytes(_) => return Err(NoJsonForm::Bytes),
        _ => return Err(NoJsonForm::Unsupported),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(Kind::Json, None), Ok(Format::Json));
        assert_eq!(negotiate(Kind::Json, Some(60)), Ok(Format::Cbor));
        assert_eq!(negotiate(Kind::Json, Some(0)), Ok(Format::Text));
        assert_eq!(negotiate(Kind::Json, Some(41)), Err(NotAcceptable));
        assert_eq!(negotiate(Kind::Td, None), Ok(Format::Td));
        assert_eq!(negotiate(Kind::Td, Some(432)), Ok(Format::Td));
        assert_eq!(negotiate(Kind::Links, Some(50)), Err(NotAcceptable));
    }

    #[test]
    fn cbor_round_trip() {
        let v = json!({"level": 40, "duration": 1000, "name": "x", "list": [true, null, -3, 1.5]});
        let bytes = to_cbor(&v).unwrap();
        assert_eq!(decode_body(Some(CBOR), &bytes), Ok(Some(v.clone())));
        let encoded = encode_json(v.to_string().as_bytes(), Format::Cbor).unwrap();
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn bodies() {
        assert_eq!(decode_body(None, b""), Ok(None));
        assert_eq!(decode_body(Some(50), b" true "), Ok(Some(json!(true))));
        assert!(matches!(
            decode_body(Some(50), b"{"),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(decode_body(Some(42), b"x"), Err(BodyError::Unsupported(42)));
        assert!(matches!(
            decode_body(Some(60), &[0xff, 0x00]),
            Err(BodyError::Malformed(_))
        ));
        // A CBOR byte string has no JSON form.
        assert_eq!(
            decode_body(Some(60), &[0x41, 0x01]),
            Err(BodyError::Malformed("byte strings have no JSON form".into()))
        );
        assert_eq!(
            cbor_to_json(ciborium::Value::Map(vec![(1.into(), 2.into())])),
            Err(NoJsonForm::KeyNotText)
        );
    }
}
