//! The consumer's Web Thing Protocol client (tokio-tungstenite): one socket per operation or
//! observation, subprotocol `webthingprotocol`, requests framed with the WebSocket binding's own
//! envelope builder (`binding::ws::protocol`), answers matched by correlationID. An asynchronous
//! action is followed through the status notifications the Thing pushes on the same socket.
//! Answers are read here, not in `binding::ws::protocol`: that module decodes what a server
//! receives (requests), and a client's response decoder there would put consumer code inside a
//! server binding. It must not choose forms or validate values (the caller did both). `wss:` is
//! not spoken here.

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Chosen, ConsumedThing, ConsumerError, Notice, NoticeSender, Observation, Op};
use crate::binding::ws::SUBPROTOCOL;
use crate::binding::ws::protocol::{self, Frame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(thing: &ConsumedThing, url: &Url) -> Result<Socket, ConsumerError> {
    let consumer = thing.consumer();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConsumerError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    if let Some(token) = &consumer.config.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ConsumerError::BadUrl {
            url: url.to_string(),
            reason: "the token cannot be sent in a header".into(),
        })?;
        request.headers_mut().insert("Authorization", value);
    }
    let connecting = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(consumer.config.timeout, connecting).await {
        Err(_) => Err(ConsumerError::Timeout {
            url: url.to_string(),
            after: consumer.config.timeout,
        }),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().unwrap_or_default();
            let detail = serde_json::from_slice::<Value>(body)
                .ok()
                .map(|p| super::problem_detail(&p));
            Err(ConsumerError::Refused {
                url: url.to_string(),
                status: response.status().as_u16().to_string(),
                detail,
            })
        }
        Ok(Err(e)) => Err(ConsumerError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        }),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

/// A request message: the envelope (with thingID when the TD has an id), operation, name, the
/// members given, and a fresh correlationID (returned).
fn request(
    thing: &ConsumedThing,
    operation: &str,
    name: Option<&str>,
    members: &[(&str, &Value)],
) -> (String, String) {
    let correlation = uuid::Uuid::new_v4().to_string();
    let frame = match thing.id() {
        Some(id) => protocol::envelope(id, "request", 128),
        None => Frame::new(128)
            .str("messageID", &uuid::Uuid::new_v4().to_string())
            .str("messageType", "request"),
    };
    let mut frame = frame.str("operation", operation).opt_str("name", name);
    for (key, value) in members {
        frame = frame.json(key, value);
    }
    let bytes = frame.str("correlationID", &correlation).finish();
    (String::from_utf8_lossy(&bytes).into_owned(), correlation)
}

/// The next message that answers `correlation` (a response, or a notification when
/// `notifications` is set), as an object; a WTP error answer is Refused.
async fn answer(
    socket: &mut Socket,
    url: &Url,
    correlation: &str,
    notifications: bool,
) -> Result<Map<String, Value>, ConsumerError> {
    loop {
        let message = match socket.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Err(ConsumerError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                });
            }
            None => {
                return Err(ConsumerError::Ended {
                    url: url.to_string(),
                    what: "connection",
                });
            }
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(ConsumerError::Refused {
                    url: url.to_string(),
                    status: frame
                        .as_ref()
                        .map_or("close".into(), |f| u16::from(f.code).to_string()),
                    detail: frame.map(|f| f.reason.to_string()),
                });
            }
            _ => continue,
        };
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&text) else {
            return Err(ConsumerError::Malformed {
                url: url.to_string(),
                reason: "a message that is not a JSON object".into(),
            });
        };
        if object.get("correlationID").and_then(Value::as_str) != Some(correlation) {
            continue;
        }
        let kind = object.get("messageType").and_then(Value::as_str);
        if kind == Some("response") || (notifications && kind == Some("notification")) {
            if let Some(error) = object.get("error") {
                return Err(ConsumerError::Refused {
                    url: url.to_string(),
                    status: error
                        .get("status")
                        .map_or_else(|| "error".into(), Value::to_string),
                    detail: Some(super::problem_detail(error)),
                });
            }
            return Ok(object);
        }
    }
}

async fn send(socket: &mut Socket, url: &Url, text: String) -> Result<(), ConsumerError> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| ConsumerError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

async fn timed<T>(
    thing: &ConsumedThing,
    url: &Url,
    work: impl std::future::Future<Output = Result<T, ConsumerError>>,
) -> Result<T, ConsumerError> {
    let after = thing.consumer().config.timeout;
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| ConsumerError::Timeout {
            url: url.to_string(),
            after,
        })?
}

pub(super) async fn one_shot(op: &Op<'_>, body: Option<Value>) -> Result<Option<Value>, ConsumerError> {
    let url = &op.form.url;
    let (member, answer_member) = match op.op {
        "writeproperty" => ("value", None),
        "writemultipleproperties" | "writeallproperties" => ("values", None),
        "readallproperties" | "readmultipleproperties" => ("values", Some("values")),
        _ => ("value", Some("value")),
    };
    let members: Vec<(&str, &Value)> = body.as_ref().map(|b| vec![(member, b)]).unwrap_or_default();
    let (text, correlation) = request(op.thing, op.op, op.name, &members);
    let mut socket = connect(op.thing, url).await?;
    let result = timed(op.thing, url, async {
        send(&mut socket, url, text).await?;
        let mut object = answer(&mut socket, url, &correlation, false).await?;
        Ok(answer_member.and_then(|m| object.remove(m)))
    })
    .await;
    let _ = socket.close(None).await;
    result
}

/// Invokes over one socket; an asynchronous action's status is followed on it until the action
/// completes or fails.
pub(super) async fn invoke(
    thing: &ConsumedThing,
    form: &Chosen,
    name: &str,
    input: Option<Value>,
) -> Result<Option<Value>, ConsumerError> {
    let url = &form.url;
    let members: Vec<(&str, &Value)> = input.as_ref().map(|i| vec![("input", i)]).unwrap_or_default();
    let (text, correlation) = request(thing, "invokeaction", Some(name), &members);
    let mut socket = connect(thing, url).await?;
    let result = async {
        let mut object = timed(thing, url, async {
            send(&mut socket, url, text).await?;
            answer(&mut socket, url, &correlation, false).await
        })
        .await?;
        loop {
            let Some(status) = object.remove("status") else {
                return Ok(object.remove("output"));
            };
            match status
                .get("state")
                .or_else(|| status.get("status"))
                .and_then(Value::as_str)
            {
                Some("completed") => return Ok(status.get("output").cloned()),
                Some("failed") => {
                    return Err(ConsumerError::ActionFailed {
                        name: name.to_owned(),
                        detail: status.get("error").map(super::problem_detail),
                    });
                }
                _ => object = answer(&mut socket, url, &correlation, true).await?,
            }
        }
    }
    .await;
    let _ = socket.close(None).await;
    result
}

pub(super) async fn stream(op: &Op<'_>) -> Result<Observation, ConsumerError> {
    let url = op.form.url.clone();
    let name = op.name.unwrap_or_default().to_owned();
    let (text, correlation) = request(op.thing, op.op, op.name, &[]);
    let mut socket = connect(op.thing, &url).await?;
    timed(op.thing, &url, async {
        send(&mut socket, &url, text).await?;
        answer(&mut socket, &url, &correlation, false).await
    })
    .await?;
    let stop = match op.op {
        "observeproperty" => "unobserveproperty",
        _ => "unsubscribeevent",
    };
    let (stop, _) = request(op.thing, stop, op.name, &[]);
    Ok(super::observation(move |tx| {
        notifications(socket, url, name, correlation, stop, tx)
    }))
}

async fn notifications(
    mut socket: Socket,
    url: Url,
    name: String,
    correlation: String,
    stop: String,
    tx: NoticeSender,
) {
    loop {
        let object = tokio::select! {
            object = answer(&mut socket, &url, &correlation, true) => object,
            () = tx.closed() => {
                let _ = socket.send(Message::text(stop)).await;
                let _ = socket.close(None).await;
                return;
            }
        };
        let notice = object.map(|mut o| Notice {
            name: o
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| name.clone(), str::to_owned),
            value: o
                .remove("value")
                .or_else(|| o.remove("data"))
                .unwrap_or(Value::Null),
        });
        let failed = notice.is_err();
        if tx.send(notice).await.is_err() || failed {
            return;
        }
    }
}
