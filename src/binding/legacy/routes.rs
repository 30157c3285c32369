//! HTTP handlers of the legacy WebThings API under `/webthing/`. Each decodes the Mozilla
//! request shape (`{name: value}`, `{name: {"input": ...}}`), performs a core operation through
//! the servient or the adapter's queue, and encodes the Mozilla answer. `GET /webthing/{id}` with
//! `Upgrade: websocket` hands over to `socket`.

use std::net::IpAddr;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::LegacyError;
use super::table::{self, Resource};
use super::{LegacyState, MAX_MESSAGE, describe, socket, wire};
use crate::core::{Error, Operation, Reply};

type Result<T = HttpResponse> = std::result::Result<T, LegacyError>;
type State = web::Data<LegacyState>;

const JSON: &str = "application/json";

pub(crate) fn configure(cfg: &mut web::ServiceConfig, state: State) {
    cfg.service(
        web::scope("/webthing")
            .app_data(state)
            .default_service(web::to(dispatch)),
    );
}

/// Every request under `/webthing`: the URL table names the resource, the method picks the
/// handler.
async fn dispatch(state: State, req: HttpRequest, payload: web::Payload) -> Result {
    use Resource as R;
    let state = state.get_ref();
    let Some(resource) = table::resource(req.path()) else {
        return Err(LegacyError::Request(
            StatusCode::NOT_FOUND,
            format!("no {} resource at '{}'", req.method(), req.path()),
        ));
    };
    let req = &req;
    let get = req.method() == Method::GET;
    match resource {
        R::List if get => list(state, req),
        R::Thing(id) if get => thing(state, req, &id),
        R::Properties(id) if get => read_all(state, &id).await,
        R::Property(id, name) if get => read_one(state, &id, &name).await,
        R::Property(id, name) if req.method() == Method::PUT => write_one(state, &id, &name, payload).await,
        R::Actions(id) if get => list_actions(state, &id),
        R::Actions(id) if req.method() == Method::POST => request(state, &id, None, payload).await,
        R::Action(id, name) if get => list_actions_of(state, &id, &name),
        R::Action(id, name) if req.method() == Method::POST => {
            request(state, &id, Some(&name), payload).await
        }
        R::ActionStatus(id, name, action) if get => get_action(state, &id, &name, &action),
        R::ActionStatus(id, name, action) if req.method() == Method::DELETE => {
            delete_action(state, &id, &name, &action)
        }
        R::Events(id) if get => all_events(state, &id),
        R::Event(id, name) if get => events_of(state, &id, &name),
        resource => Err(LegacyError::MethodNotAllowed(resource.allow())),
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, JSON))
        .body(body.into())
}

/// The public origin for absolute links: `--base-url`, else the request's scheme and Host.
fn origin(state: &LegacyState, req: &HttpRequest) -> String {
    match &state.base_url {
        Some(base) => base.clone(),
        None => crate::binding::request_origin(req),
    }
}

/// Reads a JSON object body within [`MAX_MESSAGE`] bytes.
async fn read_object(mut payload: web::Payload) -> Result<serde_json::Map<String, Value>> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| LegacyError::bad_request(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_MESSAGE {
            return Err(LegacyError::Request(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_MESSAGE} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(LegacyError::bad_request("the body must be a JSON object")),
        Err(e) => Err(LegacyError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

// ---------------------------------------------------------------- descriptions

fn list(state: &LegacyState, req: &HttpRequest) -> Result {
    let origin = origin(state, req);
    let all: Vec<Value> = state
        .all()
        .iter()
        .map(|t| describe::for_origin(t.template(&state.security), t.slug(), &origin))
        .collect();
    Ok(json(StatusCode::OK, Value::Array(all).to_string()))
}

fn is_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn thing(state: &LegacyState, req: &HttpRequest, id: &str) -> Result {
    let legacy = state.thing(id)?;
    if is_websocket(req) {
        let client = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let permit = state.subscribers.try_open(client).map_err(|hit| {
            tracing::warn!(%client, "legacy WebSocket refused: {hit}");
            LegacyError::Limit(hit)
        })?;
        let watches = (state.shutdown.clone(), state.servient.watch_changes());
        return socket::open(req, legacy, permit, watches, state.ping_interval);
    }
    let d = describe::for_origin(
        legacy.template(&state.security),
        legacy.slug(),
        &origin(state, req),
    );
    Ok(json(StatusCode::OK, d.to_string()))
}

// ---------------------------------------------------------------- properties

async fn read_all(state: &LegacyState, id: &str) -> Result {
    match state.servient.handle(id, Operation::ReadAllProperties).await? {
        Reply::Value(bytes) => Ok(json(StatusCode::OK, bytes)),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn read_one(state: &LegacyState, id: &str, name: &str) -> Result {
    match state
        .servient
        .handle(id, Operation::ReadProperty(name.to_owned()))
        .await?
    {
        Reply::Value(bytes) => Ok(json(StatusCode::OK, wire::keyed(name, &bytes))),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

/// `PUT {name: value}` → 200 `{name: value as stored}`.
async fn write_one(state: &LegacyState, id: &str, name: &str, payload: web::Payload) -> Result {
    let thing = state.servient.thing(id)?;
    let property = thing.property(name)?;
    let mut body = read_object(payload).await?;
    let Some(value) = body.remove(name) else {
        return Err(LegacyError::bad_request(format!(
            "the body must be {{\"{name}\": value}}; it has no key '{name}'"
        )));
    };
    let echo = property.write_only.then(|| value.clone());
    state
        .servient
        .handle(id, Operation::WriteProperty(name.to_owned(), value))
        .await?;
    let stored = match echo {
        Some(v) => Bytes::from(v.to_string()),
        None => thing.read_property(name)?,
    };
    Ok(json(StatusCode::OK, wire::keyed(name, &stored)))
}

// ---------------------------------------------------------------- actions

fn list_body(slug: &str, records: &[super::queue::Record]) -> String {
    Value::Array(records.iter().map(|r| r.describe(slug)).collect()).to_string()
}

fn list_actions(state: &LegacyState, id: &str) -> Result {
    let legacy = state.thing(id)?;
    Ok(json(
        StatusCode::OK,
        list_body(legacy.slug(), &legacy.actions(None)),
    ))
}

fn list_actions_of(state: &LegacyState, id: &str, name: &str) -> Result {
    let legacy = state.thing(id)?;
    legacy.thing.action(name)?;
    Ok(json(
        StatusCode::OK,
        list_body(legacy.slug(), &legacy.actions(Some(name))),
    ))
}

/// `{name: {"input": ...}}` → 201 with the queued action's description.
async fn request(state: &LegacyState, id: &str, only: Option<&str>, payload: web::Payload) -> Result {
    let legacy = state.thing(id)?;
    if let Some(name) = only {
        legacy.thing.action(name)?;
    }
    let body = read_object(payload).await?;
    let mut entries = body.into_iter();
    let (name, params) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        _ => {
            return Err(LegacyError::bad_request(
                "the body must name exactly one action: {\"<name>\": {\"input\": ...}}",
            ));
        }
    };
    if let Some(expected) = only
        && expected != name
    {
        return Err(LegacyError::bad_request(format!(
            "this URL takes action '{expected}', the body names '{name}'"
        )));
    }
    let record = legacy.request_action(&name, &params)?;
    Ok(json(
        StatusCode::CREATED,
        record.describe(legacy.slug()).to_string(),
    ))
}

fn get_action(state: &LegacyState, id: &str, name: &str, action_id: &str) -> Result {
    let legacy = state.thing(id)?;
    let record = legacy.action(name, action_id)?;
    Ok(json(StatusCode::OK, record.describe(legacy.slug()).to_string()))
}

fn delete_action(state: &LegacyState, id: &str, name: &str, action_id: &str) -> Result {
    state.thing(id)?.remove_action(name, action_id)?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- events

fn all_events(state: &LegacyState, id: &str) -> Result {
    Ok(json(StatusCode::OK, state.thing(id)?.events_json(None)))
}

fn events_of(state: &LegacyState, id: &str, name: &str) -> Result {
    let legacy = state.thing(id)?;
    legacy.thing.event(name)?;
    Ok(json(StatusCode::OK, legacy.events_json(Some(name))))
}
