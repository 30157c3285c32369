//! The consumer's CoAP client: operations as CoAP requests (the binding template's default
//! methods, `cov:method` when a form names one; JSON or CBOR bodies), TDs fetched over CoAP, and
//! observations: registered with Observe 0, stale notifications dropped by sequence number
//! (RFC 7641 §3.4), confirmable ones acknowledged, deregistered (Observe 1) when dropped. The
//! message layer (retransmission, separate responses, blocks) is `transfer`; Content-Format
//! decoding is the CoAP binding's `content`.
//!
//! It must not choose forms or validate values (the caller did both). Not done here: Block2
//! inside notifications, coaps.

mod transfer;

pub(crate) use transfer::IdleEndpoints;

use std::time::Duration;

use coap_lite::{MessageType, RequestType, ResponseType};
use reqwest::Url;
use serde_json::Value;
use tokio::time::Instant;

use super::{
    CoapFormat, ConsumedThing, Consumer, ConsumerError, Invoked, Notice, NoticeSender, Observation, Op,
};
use crate::binding::coap::content::{self, BodyError};
use transfer::{Endpoint, Request, Response, packet, perform, response_of};

fn refused(url: &Url, response: &Response) -> ConsumerError {
    let detail = match decode(response.content_format, &response.payload) {
        Ok(Some(problem)) => Some(super::problem_detail(&problem)),
        _ if response.payload.is_empty() => None,
        _ => Some(
            String::from_utf8_lossy(&response.payload)
                .chars()
                .take(200)
                .collect(),
        ),
    };
    ConsumerError::Refused {
        url: url.to_string(),
        status: response.code_text.clone(),
        detail,
    }
}

/// A body in JSON (also the TD's 432 and text/plain) or CBOR.
fn decode(content_format: Option<u16>, body: &[u8]) -> Result<Option<Value>, BodyError> {
    let cf = match content_format {
        Some(content::TD_JSON) => Some(content::JSON),
        other => other,
    };
    content::decode_body(cf, body)
}

fn decoded(url: &Url, response: &Response) -> Result<Option<Value>, ConsumerError> {
    decode(response.content_format, &response.payload).map_err(|e| ConsumerError::Malformed {
        url: url.to_string(),
        reason: match e {
            BodyError::Unsupported(cf) => format!("Content-Format {cf} is neither JSON nor CBOR"),
            BodyError::Malformed(m) => m,
        },
    })
}

fn format_number(format: CoapFormat) -> u16 {
    match format {
        CoapFormat::Json => content::JSON,
        CoapFormat::Cbor => content::CBOR,
    }
}

fn encode(url: &Url, format: CoapFormat, value: &Value) -> Result<Vec<u8>, ConsumerError> {
    match format {
        CoapFormat::Json => Ok(value.to_string().into_bytes()),
        CoapFormat::Cbor => content::to_cbor(value).map_err(|e| ConsumerError::BadUrl {
            url: url.to_string(),
            reason: format!("the value has no CBOR form: {e}"),
        }),
    }
}

fn method_of(op: &str, named: Option<&str>) -> RequestType {
    match named {
        Some("GET") => return RequestType::Get,
        Some("POST") => return RequestType::Post,
        Some("PUT") => return RequestType::Put,
        Some("DELETE") => return RequestType::Delete,
        _ => {}
    }
    // The CoAP binding's defaults (W3C WoT CoAP Binding Templates).
    match op {
        "writeproperty" | "writemultipleproperties" | "writeallproperties" => RequestType::Put,
        "invokeaction" => RequestType::Post,
        "cancelaction" => RequestType::Delete,
        _ => RequestType::Get,
    }
}

fn request_for(
    consumer: &Consumer,
    op: &str,
    form: &super::Chosen,
    body: Option<Value>,
) -> Result<Request, ConsumerError> {
    let format = consumer.config.coap_format;
    let (payload, content_format) = match &body {
        Some(value) => (encode(&form.url, format, value)?, Some(format_number(format))),
        None => (Vec::new(), None),
    };
    Ok(Request {
        method: method_of(op, form.method.as_deref()),
        url: form.url.clone(),
        payload,
        content_format,
        accept: Some(format_number(format)),
        observe: None,
    })
}

pub(super) async fn fetch_td(consumer: &Consumer, url: &Url) -> Result<Value, ConsumerError> {
    let request = Request {
        method: RequestType::Get,
        url: url.clone(),
        payload: Vec::new(),
        content_format: None,
        accept: None,
        observe: None,
    };
    let (endpoint, response, _) = perform(consumer, &request).await?;
    consumer.coap_idle.put(endpoint);
    if response.code.is_error() {
        return Err(refused(url, &response));
    }
    match decode(response.content_format, &response.payload) {
        Ok(Some(td)) => Ok(td),
        Ok(None) => Err(ConsumerError::NotATd {
            url: url.to_string(),
            reason: "the answer is empty".into(),
        }),
        Err(e) => Err(ConsumerError::NotATd {
            url: url.to_string(),
            reason: format!("{e:?}"),
        }),
    }
}

pub(super) async fn get_json(thing: &ConsumedThing, url: &Url) -> Result<Value, ConsumerError> {
    let format = thing.consumer().config.coap_format;
    let request = Request {
        method: RequestType::Get,
        url: url.clone(),
        payload: Vec::new(),
        content_format: None,
        accept: Some(format_number(format)),
        observe: None,
    };
    let (endpoint, response, _) = perform(thing.consumer(), &request).await?;
    thing.consumer().coap_idle.put(endpoint);
    if response.code.is_error() {
        return Err(refused(url, &response));
    }
    decoded(url, &response)?.ok_or_else(|| ConsumerError::Malformed {
        url: url.to_string(),
        reason: "an empty answer".into(),
    })
}

pub(super) async fn one_shot(op: &Op<'_>, body: Option<Value>) -> Result<Option<Value>, ConsumerError> {
    let consumer = op.thing.consumer();
    let request = request_for(consumer, op.op, &op.form, body)?;
    let (endpoint, response, _) = perform(consumer, &request).await?;
    consumer.coap_idle.put(endpoint);
    if response.code.is_error() {
        return Err(refused(&request.url, &response));
    }
    decoded(&request.url, &response)
}

pub(super) async fn invoke(
    thing: &ConsumedThing,
    form: &super::Chosen,
    input: Option<Value>,
) -> Result<Invoked, ConsumerError> {
    let request = request_for(thing.consumer(), "invokeaction", form, input)?;
    let (endpoint, response, _) = perform(thing.consumer(), &request).await?;
    thing.consumer().coap_idle.put(endpoint);
    if response.code.is_error() {
        return Err(refused(&request.url, &response));
    }
    let body = decoded(&request.url, &response)?;
    if response.code == ResponseType::Created {
        let href = body
            .as_ref()
            .and_then(|b| b.get("href"))
            .and_then(Value::as_str)
            .and_then(|h| form.url.join(h).ok())
            .or_else(|| {
                (!response.location.is_empty())
                    .then(|| form.url.join(&format!("/{}", response.location.join("/"))).ok())
                    .flatten()
            });
        return Ok(Invoked::Started {
            status: body.unwrap_or(Value::Null),
            href,
        });
    }
    Ok(Invoked::Output(body))
}

/// Registers an observation; the registration's own answer (the current state) is not a
/// change, so it is not passed on.
pub(super) async fn stream(op: &Op<'_>) -> Result<Observation, ConsumerError> {
    let consumer = op.thing.consumer();
    let mut request = request_for(consumer, op.op, &op.form, None)?;
    request.method = RequestType::Get;
    request.observe = Some(0);
    let (endpoint, response, token) = perform(consumer, &request).await?;
    if response.code.is_error() {
        return Err(refused(&request.url, &response));
    }
    if response.observe.is_none() {
        return Err(ConsumerError::Refused {
            url: request.url.to_string(),
            status: response.code_text.clone(),
            detail: Some("the server did not register the observation (no Observe option)".into()),
        });
    }
    let observed = Observed {
        name: op.name.unwrap_or_default().to_owned(),
        is_event: op.op == "subscribeevent",
        timeout: consumer.config.timeout,
        token,
        first: response.observe,
        fresh_for: fresh_for(response.max_age),
        last_value: decoded(&request.url, &response).ok().flatten(),
    };
    Ok(super::observation(move |tx| {
        notifications(endpoint, request, observed, tx)
    }))
}

/// Whether notification `v2` (received at `t2`) is newer than `v1` (at `t1`): RFC 7641 §3.4.
pub(crate) fn fresher(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + Duration::from_secs(128)
}

/// What an observation task keeps besides its endpoint and request.
struct Observed {
    name: String,
    /// An event's registration answer is no occurrence; a property's is its value.
    is_event: bool,
    /// How long a re-registration may go unanswered.
    timeout: Duration,
    token: Vec<u8>,
    first: Option<u32>,
    fresh_for: Duration,
    /// The value last passed on (or registered with), so that a re-registration's answer is
    /// passed on only when it is a change.
    last_value: Option<Value>,
}

/// How long after a notification the observation is taken as current: its Max-Age (60 s when
/// absent, RFC 7252 §5.10.5), plus a margin for the server's own notification timing.
fn fresh_for(max_age: Option<u32>) -> Duration {
    Duration::from_secs(u64::from(max_age.unwrap_or(60).max(1))) + Duration::from_secs(2)
}

/// A re-registration on its way: its message id, when to send it again, and when to give up.
struct Reregistering {
    mid: u16,
    resend_at: Instant,
    wait: Duration,
    deadline: Instant,
}

/// Notices until the remote ends the observation or it is dropped. When nothing arrived for a
/// notification's Max-Age, the client registers again with the same token (RFC 7641 §3.3.1):
/// a server that restarted registers it anew, and one that does not answer within the
/// consumer's timeout ends the observation with an error instead of leaving it silent forever.
async fn notifications(mut endpoint: Endpoint, request: Request, mut observed: Observed, tx: NoticeSender) {
    let token = std::mem::take(&mut observed.token);
    let mut last = observed.first.map(|v| (v, Instant::now()));
    let mut fresh_until = Instant::now() + observed.fresh_for;
    let mut again: Option<Reregistering> = None;
    let url = request.url.clone();
    loop {
        let wake = again
            .as_ref()
            .map_or(fresh_until, |a| a.resend_at.min(a.deadline));
        let packet = tokio::select! {
            received = endpoint.recv() => received,
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                match &mut again {
                    Some(a) if now >= a.deadline => {
                        let _ = tx.send(Err(ConsumerError::Timeout { url: url.to_string(), after: observed.timeout })).await;
                        return;
                    }
                    Some(a) => {
                        a.wait *= 2;
                        a.resend_at = now + a.wait;
                        let _ = endpoint.send(&reregistration(&request, &token, a.mid)).await;
                    }
                    None => {
                        let mid = endpoint.mid();
                        if endpoint.send(&reregistration(&request, &token, mid)).await.is_err() {
                            // An ICMP error may surface on send: the recv branch reports it.
                        }
                        // The answer starts a new sequence if the server restarted.
                        last = None;
                        again = Some(Reregistering {
                            mid,
                            resend_at: now + transfer::ACK_TIMEOUT,
                            wait: transfer::ACK_TIMEOUT,
                            deadline: now + observed.timeout,
                        });
                    }
                }
                continue;
            }
            () = tx.closed() => {
                // Deregister (RFC 7641 §3.6): a GET with Observe 1 and the same token.
                let mut off = request.clone();
                off.observe = Some(1);
                let mut p = packet(&off, &token, None);
                p.header.set_type(MessageType::NonConfirmable);
                p.header.message_id = endpoint.mid();
                let _ = endpoint.send(&p).await;
                return;
            }
        };
        let packet = match packet {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let kind = packet.header.get_type();
        let answers_reregistration = again
            .as_ref()
            .is_some_and(|a| kind == MessageType::Acknowledgement && packet.header.message_id == a.mid);
        if answers_reregistration && packet.header.code == coap_lite::MessageClass::Empty {
            // A separate response follows; the server is there.
            if let Some(a) = &mut again {
                a.resend_at = a.deadline;
            }
            continue;
        }
        if packet.get_token() != token.as_slice() {
            if kind == MessageType::Confirmable {
                let _ = endpoint.empty(MessageType::Reset, packet.header.message_id).await;
            }
            continue;
        }
        if kind == MessageType::Confirmable
            && endpoint
                .empty(MessageType::Acknowledgement, packet.header.message_id)
                .await
                .is_err()
        {
            return;
        }
        let Ok(response) = response_of(packet, &url) else {
            continue;
        };
        if response.code.is_error() {
            let _ = tx.send(Err(refused(&url, &response))).await;
            return;
        }
        let now = Instant::now();
        let reregistered = again.take().is_some();
        fresh_until = now + fresh_for(response.max_age);
        match (response.observe, last) {
            (Some(v), Some((v1, t1))) if !fresher(v1, t1, v, now) => continue,
            (Some(v), _) => last = Some((v, now)),
            (None, _) => {}
        }
        let decoded = decoded(&url, &response);
        if reregistered && response.observe.is_some() {
            // The answer to registering again is the current state, not an occurrence: passed
            // on only when a property changed meanwhile.
            let value = decoded.as_ref().ok().cloned().flatten();
            if observed.is_event || value == observed.last_value {
                continue;
            }
        }
        if let Ok(value) = &decoded {
            observed.last_value.clone_from(value);
        }
        let notice = match decoded {
            Ok(value) => Ok(Notice {
                name: observed.name.clone(),
                value: value.unwrap_or(Value::Null),
            }),
            Err(e) => Err(e),
        };
        if tx.send(notice).await.is_err() {
            continue;
        }
        if response.observe.is_none() {
            // A response without Observe ends the observation (RFC 7641 §3.2).
            let _ = tx
                .send(Err(ConsumerError::Ended {
                    url: url.to_string(),
                    what: "observation",
                }))
                .await;
            return;
        }
    }
}

/// GET with Observe 0 and the observation's token, confirmable: registering again.
fn reregistration(request: &Request, token: &[u8], mid: u16) -> coap_lite::Packet {
    let mut again = request.clone();
    again.observe = Some(0);
    let mut p = packet(&again, token, None);
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = mid;
    p
}

#[cfg(test)]
mod tests {
    use super::transfer::uint;
    use super::*;
    use crate::binding::coap::message::option;
    use coap_lite::{CoapOption, Packet};

    #[test]
    fn freshness_follows_rfc_7641_with_wrap_around() {
        let t = Instant::now();
        assert!(fresher(1, t, 2, t));
        assert!(!fresher(2, t, 1, t));
        assert!(!fresher(5, t, 5, t));
        // Wrapped: 2^24 - 1 then 3 is newer.
        assert!(fresher((1 << 24) - 1, t, 3, t));
        // Older but arriving more than 128 s later counts as newer.
        assert!(fresher(9, t, 1, t + Duration::from_secs(129)));
    }

    #[test]
    fn paths_and_queries_become_options_percent_decoded() {
        let request = Request {
            method: RequestType::Get,
            url: Url::parse("coap://127.0.0.1/things/a%20b/properties?x=1&y").unwrap(),
            payload: Vec::new(),
            content_format: None,
            accept: Some(60),
            observe: Some(0),
        };
        let p = packet(&request, &[1, 2], None);
        let bytes = p.to_bytes().unwrap();
        let back = Packet::from_bytes(&bytes).unwrap();
        let path: Vec<Vec<u8>> = back
            .get_option(CoapOption::UriPath)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            path,
            vec![b"things".to_vec(), b"a b".to_vec(), b"properties".to_vec()]
        );
        let query: Vec<Vec<u8>> = back
            .get_option(CoapOption::UriQuery)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(query, vec![b"x=1".to_vec(), b"y".to_vec()]);
        assert_eq!(uint(&back, option::ACCEPT), Some(60));
        assert_eq!(uint(&back, option::OBSERVE), Some(0));
    }

    #[test]
    fn bodies_decode_as_json_td_json_or_cbor() {
        assert_eq!(
            decode(Some(content::TD_JSON), b"{\"a\":1}").unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        let cbor = content::to_cbor(&serde_json::json!([1, "x"])).unwrap();
        assert_eq!(
            decode(Some(content::CBOR), &cbor).unwrap(),
            Some(serde_json::json!([1, "x"]))
        );
        assert!(decode(Some(41), b"<x/>").is_err());
    }
}
