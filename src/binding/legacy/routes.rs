//! HTTP handlers of the legacy WebThings API under `/webthing/`. Each decodes the Mozilla
//! request shape (`{name: value}`, `{name: {"input": ...}}`), performs a core operation through
//! the servient or the adapter's queue, and encodes the Mozilla answer. `GET /webthing/{id}` with
//! `Upgrade: websocket` hands over to `socket`.

use std::net::IpAddr;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::LegacyError;
use super::{LegacyState, MAX_MESSAGE, describe, socket, wire};
use crate::core::{Error, Operation, Reply};

type Result<T = HttpResponse> = std::result::Result<T, LegacyError>;
type State = web::Data<LegacyState>;

const JSON: &str = "application/json";

fn not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        Err::<HttpResponse, _>(LegacyError::Request(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed here; allowed: {allow}"),
        ))
    })
}

fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(not_allowed(allow))
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig, state: State) {
    cfg.service(
        web::scope("/webthing")
            .app_data(state)
            .service(resource("", "GET").route(web::get().to(list)))
            .service(resource("/", "GET").route(web::get().to(list)))
            .service(resource("/{id}", "GET").route(web::get().to(thing)))
            .service(resource("/{id}/", "GET").route(web::get().to(thing)))
            .service(resource("/{id}/properties", "GET").route(web::get().to(read_all)))
            .service(
                resource("/{id}/properties/{name}", "GET, PUT")
                    .route(web::get().to(read_one))
                    .route(web::put().to(write_one)),
            )
            .service(
                resource("/{id}/actions", "GET, POST")
                    .route(web::get().to(list_actions))
                    .route(web::post().to(request_action)),
            )
            .service(
                resource("/{id}/actions/{name}", "GET, POST")
                    .route(web::get().to(list_actions_of))
                    .route(web::post().to(request_named_action)),
            )
            .service(
                resource("/{id}/actions/{name}/{action_id}", "GET, DELETE")
                    .route(web::get().to(get_action))
                    .route(web::delete().to(delete_action)),
            )
            .service(resource("/{id}/events", "GET").route(web::get().to(all_events)))
            .service(resource("/{id}/events/{name}", "GET").route(web::get().to(events_of)))
            .default_service(web::to(unknown)),
    );
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

async fn list(state: State, req: HttpRequest) -> Result {
    let origin = origin(&state, &req);
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

async fn thing(state: State, req: HttpRequest, path: web::Path<String>) -> Result {
    let legacy = state.thing(&path)?;
    if is_websocket(&req) {
        let client = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let permit = state.subscribers.try_open(client).map_err(|hit| {
            tracing::warn!(%client, "legacy WebSocket refused: {hit}");
            LegacyError::Limit(hit)
        })?;
        let watches = (state.shutdown.clone(), state.servient.watch_changes());
        return socket::open(&req, legacy, permit, watches, state.ping_interval);
    }
    let d = describe::for_origin(
        legacy.template(&state.security),
        legacy.slug(),
        &origin(&state, &req),
    );
    Ok(json(StatusCode::OK, d.to_string()))
}

// ---------------------------------------------------------------- properties

async fn read_all(state: State, path: web::Path<String>) -> Result {
    match state.servient.handle(&path, Operation::ReadAllProperties).await? {
        Reply::Value(bytes) => Ok(json(StatusCode::OK, bytes)),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn read_one(state: State, path: web::Path<(String, String)>) -> Result {
    let (id, name) = path.into_inner();
    match state
        .servient
        .handle(&id, Operation::ReadProperty(name.clone()))
        .await?
    {
        Reply::Value(bytes) => Ok(json(StatusCode::OK, wire::keyed(&name, &bytes))),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

/// `PUT {name: value}` → 200 `{name: value as stored}`.
async fn write_one(state: State, path: web::Path<(String, String)>, payload: web::Payload) -> Result {
    let (id, name) = path.into_inner();
    let thing = state.servient.thing(&id)?;
    let property = thing.property(&name)?;
    let mut body = read_object(payload).await?;
    let Some(value) = body.remove(&name) else {
        return Err(LegacyError::bad_request(format!(
            "the body must be {{\"{name}\": value}}; it has no key '{name}'"
        )));
    };
    let echo = property.write_only.then(|| value.clone());
    state
        .servient
        .handle(&id, Operation::WriteProperty(name.clone(), value))
        .await?;
    let stored = match echo {
        Some(v) => Bytes::from(v.to_string()),
        None => thing.read_property(&name)?,
    };
    Ok(json(StatusCode::OK, wire::keyed(&name, &stored)))
}

// ---------------------------------------------------------------- actions

fn list_body(slug: &str, records: &[super::queue::Record]) -> String {
    Value::Array(records.iter().map(|r| r.describe(slug)).collect()).to_string()
}

async fn list_actions(state: State, path: web::Path<String>) -> Result {
    let legacy = state.thing(&path)?;
    Ok(json(
        StatusCode::OK,
        list_body(legacy.slug(), &legacy.actions(None)),
    ))
}

async fn list_actions_of(state: State, path: web::Path<(String, String)>) -> Result {
    let (id, name) = path.into_inner();
    let legacy = state.thing(&id)?;
    legacy.thing.action(&name)?;
    Ok(json(
        StatusCode::OK,
        list_body(legacy.slug(), &legacy.actions(Some(&name))),
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

async fn request_action(state: State, path: web::Path<String>, payload: web::Payload) -> Result {
    request(&state, &path, None, payload).await
}

async fn request_named_action(
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result {
    let (id, name) = path.into_inner();
    request(&state, &id, Some(&name), payload).await
}

async fn get_action(state: State, path: web::Path<(String, String, String)>) -> Result {
    let (id, name, action_id) = path.into_inner();
    let legacy = state.thing(&id)?;
    let record = legacy.action(&name, &action_id)?;
    Ok(json(StatusCode::OK, record.describe(legacy.slug()).to_string()))
}

async fn delete_action(state: State, path: web::Path<(String, String, String)>) -> Result {
    let (id, name, action_id) = path.into_inner();
    state.thing(&id)?.remove_action(&name, &action_id)?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- events

async fn all_events(state: State, path: web::Path<String>) -> Result {
    Ok(json(StatusCode::OK, state.thing(&path)?.events_json(None)))
}

async fn events_of(state: State, path: web::Path<(String, String)>) -> Result {
    let (id, name) = path.into_inner();
    let legacy = state.thing(&id)?;
    legacy.thing.event(&name)?;
    Ok(json(StatusCode::OK, legacy.events_json(Some(&name))))
}

async fn unknown(req: HttpRequest) -> Result {
    Err(LegacyError::Request(
        StatusCode::NOT_FOUND,
        format!("no {} resource at '{}'", req.method(), req.path()),
    ))
}
