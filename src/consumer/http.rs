//! The consumer's HTTP client (reqwest): TDs, one-shot operations with JSON bodies,
//! asynchronous actions (201 + ActionStatus), and observations over Server-Sent Events or
//! longpoll. It must not choose forms or validate values (the caller did both).

use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::form::HttpMode;
use super::{ConsumedThing, Consumer, ConsumerError, Invoked, Notice, NoticeSender, Observation, Op};

/// Largest answer read into memory (a TD, a value): bigger ones are refused as malformed.
const MAX_BODY: usize = 16 * 1024 * 1024;

fn request(consumer: &Consumer, method: Method, url: &Url) -> reqwest::RequestBuilder {
    let builder = consumer.http.request(method, url.clone());
    match &consumer.config.token {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

/// The transport error of a request, classified.
fn transport(consumer: &Consumer, url: &Url, e: reqwest::Error) -> ConsumerError {
    if e.is_timeout() {
        ConsumerError::Timeout {
            url: url.to_string(),
            after: consumer.config.timeout,
        }
    } else {
        // reqwest's own text wraps the cause in several layers; the innermost names it.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        ConsumerError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }
}

/// Sends, with the consumer's timeout over the whole exchange, and reads the body.
async fn send(
    consumer: &Consumer,
    url: &Url,
    builder: reqwest::RequestBuilder,
) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ConsumerError> {
    let exchange = async {
        let response = builder.send().await.map_err(|e| transport(consumer, url, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(consumer, url, e))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ConsumerError::Malformed {
                    url: url.to_string(),
                    reason: format!("the answer is larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    };
    tokio::time::timeout(consumer.config.timeout, exchange)
        .await
        .map_err(|_| ConsumerError::Timeout {
            url: url.to_string(),
            after: consumer.config.timeout,
        })?
}

/// The error of a non-2xx answer: its status and its problem's detail (or its text).
fn refused(url: &Url, status: StatusCode, body: &[u8]) -> ConsumerError {
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(problem) => Some(super::problem_detail(&problem)),
        Err(_) if body.is_empty() => None,
        Err(_) => Some(String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    ConsumerError::Refused {
        url: url.to_string(),
        status: status.as_u16().to_string(),
        detail,
    }
}

fn parse(url: &Url, body: &[u8]) -> Result<Option<Value>, ConsumerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ConsumerError::Malformed {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })
}

pub(super) async fn fetch_td(consumer: &Consumer, url: &Url) -> Result<Value, ConsumerError> {
    let builder = request(consumer, Method::GET, url).header(
        reqwest::header::ACCEPT,
        "application/td+json, application/json;q=0.9",
    );
    let (status, _, body) = send(consumer, url, builder).await?;
    if !status.is_success() {
        return Err(refused(url, status, &body));
    }
    match serde_json::from_slice(&body) {
        Ok(td) => Ok(td),
        Err(e) => Err(ConsumerError::NotATd {
            url: url.to_string(),
            reason: format!("it is not JSON ({e})"),
        }),
    }
}

/// GET a JSON document (an action's status).
pub(super) async fn get_json(thing: &ConsumedThing, url: &Url) -> Result<Value, ConsumerError> {
    let (status, _, body) = send(thing.consumer(), url, request(thing.consumer(), Method::GET, url)).await?;
    if !status.is_success() {
        return Err(refused(url, status, &body));
    }
    parse(url, &body)?.ok_or_else(|| ConsumerError::Malformed {
        url: url.to_string(),
        reason: "an empty answer".into(),
    })
}

fn method_of(op: &str, named: Option<&str>) -> Method {
    if let Some(m) = named.and_then(|m| Method::from_bytes(m.as_bytes()).ok()) {
        return m;
    }
    // The WoT HTTP binding's defaults (TD 1.1 §8.3.1).
    match op {
        "writeproperty" | "writemultipleproperties" | "writeallproperties" => Method::PUT,
        "invokeaction" => Method::POST,
        "cancelaction" => Method::DELETE,
        _ => Method::GET,
    }
}

async fn exchange(
    op: &Op<'_>,
    body: Option<Value>,
) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ConsumerError> {
    let consumer = op.thing.consumer();
    let url = &op.form.url;
    let mut builder = request(consumer, method_of(op.op, op.form.method.as_deref()), url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = body {
        let content_type = op.form.content_type.as_deref().unwrap_or("application/json");
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string());
    }
    let (status, headers, bytes) = send(consumer, url, builder).await?;
    if !status.is_success() {
        return Err(refused(url, status, &bytes));
    }
    Ok((status, headers, bytes))
}

pub(super) async fn one_shot(op: &Op<'_>, body: Option<Value>) -> Result<Option<Value>, ConsumerError> {
    let (_, _, bytes) = exchange(op, body).await?;
    parse(&op.form.url, &bytes)
}

/// An invocation: 201 (or 202) with a status body means the action runs on; anything else
/// 2xx is the output.
pub(super) async fn invoke(
    thing: &ConsumedThing,
    form: &super::Chosen,
    input: Option<Value>,
) -> Result<Invoked, ConsumerError> {
    let op = thing.op("invokeaction", None, form.clone());
    let (status, headers, bytes) = exchange(&op, input).await?;
    let body = parse(&form.url, &bytes)?;
    if status == StatusCode::CREATED || status == StatusCode::ACCEPTED {
        let href = headers
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                body.as_ref()
                    .and_then(|b| b.get("href"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .and_then(|h| form.url.join(&h).ok());
        return Ok(Invoked::Started {
            status: body.unwrap_or(Value::Null),
            href,
        });
    }
    Ok(Invoked::Output(body))
}

pub(super) async fn stream(op: &Op<'_>) -> Result<Observation, ConsumerError> {
    let consumer = op.thing.consumer().clone();
    let url = op.form.url.clone();
    let name = op.name.unwrap_or_default().to_owned();
    match op.form.http_mode {
        HttpMode::Sse => {
            let builder =
                request(&consumer, Method::GET, &url).header(reqwest::header::ACCEPT, "text/event-stream");
            let response = tokio::time::timeout(consumer.config.timeout, builder.send())
                .await
                .map_err(|_| ConsumerError::Timeout {
                    url: url.to_string(),
                    after: consumer.config.timeout,
                })?
                .map_err(|e| transport(&consumer, &url, e))?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                return Err(refused(&url, status, &body));
            }
            Ok(super::observation(move |tx| sse(response, url, name, tx)))
        }
        _ => Ok(super::observation(move |tx| longpoll(consumer, url, name, tx))),
    }
}

/// Reads an SSE stream: each event's `data` lines joined are one JSON value; its `event` field
/// (when present) names the affordance.
async fn sse(response: reqwest::Response, url: Url, name: String, tx: NoticeSender) {
    let mut stream = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        // Returning drops the response, which closes the stream: HTTP's unsubscribe.
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = tx.closed() => return,
        };
        let Some(chunk) = chunk else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tx
                    .send(Err(ConsumerError::Unreachable {
                        url: url.to_string(),
                        reason: e.to_string(),
                    }))
                    .await;
                return;
            }
        };
        let events = match parser.push(&chunk) {
            Ok(events) => events,
            Err(reason) => {
                let _ = tx
                    .send(Err(ConsumerError::Malformed {
                        url: url.to_string(),
                        reason,
                    }))
                    .await;
                return;
            }
        };
        for (event, data) in events {
            let notice = match serde_json::from_str::<Value>(&data) {
                Ok(value) => Ok(Notice {
                    name: event.unwrap_or_else(|| name.clone()),
                    value,
                }),
                Err(e) => Err(ConsumerError::Malformed {
                    url: url.to_string(),
                    reason: format!("an SSE event's data is not JSON: {e}"),
                }),
            };
            if tx.send(notice).await.is_err() {
                return;
            }
        }
    }
    let _ = tx
        .send(Err(ConsumerError::Ended {
            url: url.to_string(),
            what: "observation",
        }))
        .await;
}

/// Longpoll: each GET is answered by the next change.
async fn longpoll(consumer: Consumer, url: Url, name: String, tx: NoticeSender) {
    loop {
        let builder =
            request(&consumer, Method::GET, &url).header(reqwest::header::ACCEPT, "application/json");
        let answer = async {
            let response = builder.send().await.map_err(|e| transport(&consumer, &url, e))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| transport(&consumer, &url, e))?;
            if !status.is_success() {
                return Err(refused(&url, status, &body));
            }
            parse(&url, &body)
        };
        let answer = tokio::select! {
            answer = answer => answer,
            () = tx.closed() => return,
        };
        let notice = match answer {
            Ok(Some(value)) => Ok(Notice {
                name: name.clone(),
                value,
            }),
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        let failed = notice.is_err();
        if tx.send(notice).await.is_err() || failed {
            return;
        }
    }
}

/// An incremental `text/event-stream` parser (WHATWG HTML §9.2.6, the fields we use).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them, as (event name, data). A line or an
    /// event longer than MAX_BODY is an error (a server that never ends one would otherwise
    /// grow the buffer without bound).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<(Option<String>, String)>, String> {
        self.buffer.extend_from_slice(bytes);
        let pending = self.buffer.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_BODY {
            return Err(format!("an SSE event longer than {MAX_BODY} bytes"));
        }
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    out.push((self.event.take(), data));
                }
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_cut_at_blank_lines_across_chunks() {
        let mut p = SseParser::default();
        assert!(
            p.push(b": subscribed\n\nid: 1\nevent: bright")
                .unwrap()
                .is_empty()
        );
        let events = p
            .push(b"ness\ndata: 30\n\ndata: {\"a\":\ndata: 1}\r\n\r\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                (Some("brightness".into()), "30".into()),
                (None, "{\"a\":\n1}".into())
            ]
        );
    }

    #[test]
    fn an_endless_sse_line_is_an_error_not_unbounded_memory() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..17 {
            result = p.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }

    #[test]
    fn default_methods_follow_the_http_binding() {
        assert_eq!(method_of("readproperty", None), Method::GET);
        assert_eq!(method_of("writeproperty", None), Method::PUT);
        assert_eq!(method_of("invokeaction", None), Method::POST);
        assert_eq!(method_of("writeproperty", Some("POST")), Method::POST);
    }
}
