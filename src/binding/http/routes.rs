//! Request handlers of the HTTP binding. Each decodes the request into a core `Operation` (or a
//! subscription), calls the servient, and encodes the reply; none holds a lock across an await.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::problem::HttpError;
use super::table::{self, Resource, Verb};
use super::{HttpState, sse};
use crate::core::{ActionStatus, Error, Operation, Reply, Target};
use crate::td::{Origins, TD_MEDIA_TYPE};

type Result<T = HttpResponse> = std::result::Result<T, HttpError>;
type State = web::Data<HttpState>;

const JSON: &str = "application/json";
const LD_JSON: &str = "application/ld+json";
const LONGPOLL_WAIT: Duration = Duration::from_secs(60);

fn origins(state: &HttpState, req: &HttpRequest) -> Origins {
    let http = match &state.base_url {
        Some(base) => base.clone(),
        None => crate::binding::request_origin(req),
    };
    Origins {
        http: Some(http),
        coap: state.coap_origin.clone(),
        coaps: state.coaps_origin.clone(),
    }
}

fn wants_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(sse::EVENT_STREAM))
}

/// Opens an SSE stream, replaying what a reconnecting client missed (`Last-Event-ID`).
fn event_stream(state: &HttpState, req: &HttpRequest, id: &str, target: Target) -> Result {
    let after = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(sse::resume_point);
    let subscription = state
        .servient
        .thing(id)?
        .subscribe_after(target, after.as_ref())?;
    let client = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let permit = state
        .subscribers
        .try_open(client)
        .map_err(HttpError::TooManySubscriptions)?;
    Ok(sse::response(
        subscription,
        permit,
        state.shutdown.clone(),
        state.keepalive,
    ))
}

/// A static header value: `content_type(&str)` would parse and copy it on every response.
fn td_content_type() -> (header::HeaderName, HeaderValue) {
    (header::CONTENT_TYPE, HeaderValue::from_static(TD_MEDIA_TYPE))
}

fn json_response(status: actix_web::http::StatusCode, body: Bytes) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(JSON)))
        .body(body)
}

/// Reads a JSON body within the size limit. `Ok(None)` when there is no body at all.
async fn read_json(state: &HttpState, req: &HttpRequest, mut payload: web::Payload) -> Result<Option<Value>> {
    let limit = state.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(HttpError::PayloadTooLarge(limit));
    }
    let mut body = BytesMut::new();
    // A client that trickles its body (slowloris) is cut off instead of holding the handler.
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| Error::MalformedPayload(format!("could not read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(HttpError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| HttpError::BodyTimeout)??;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let ct = content_type.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != JSON && !essence.ends_with("+json") {
            return Err(HttpError::UnsupportedMediaType(essence.to_owned()));
        }
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        Error::MalformedPayload(format!("{e} (line {}, column {})", e.line(), e.column())).into()
    })
}

async fn require_json(state: &HttpState, req: &HttpRequest, payload: web::Payload) -> Result<Value> {
    read_json(state, req, payload)
        .await?
        .ok_or_else(|| Error::MalformedPayload("the body is empty".into()).into())
}

// ---------------------------------------------------------------- Thing Descriptions

fn thing_description(state: &HttpState, req: &HttpRequest, id: &str) -> Result {
    let thing = state.servient.thing(id)?;
    let bytes = state
        .publisher
        .td_bytes(&thing, &origins(state, req))
        .map_err(Error::from)?;
    Ok(HttpResponse::Ok().insert_header(td_content_type()).body(bytes))
}

fn well_known(state: &HttpState, req: &HttpRequest) -> Result {
    let things = state.servient.things();
    let origins = origins(state, req);
    let bytes = if let [only] = things.as_slice() {
        state.publisher.td_bytes(only, &origins).map_err(Error::from)?
    } else {
        let mut td = crate::td::directory::directory_td(&state.directory_id, &things, &origins);
        let (definitions, security) = state.publisher.security();
        td["securityDefinitions"] = definitions.clone();
        td["security"] = security.clone();
        Bytes::from(td.to_string())
    };
    Ok(HttpResponse::Ok().insert_header(td_content_type()).body(bytes))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
    format: Option<String>,
}

/// An etag for the current set of things: it changes whenever a TD is added or removed.
fn collection_etag(ids: &[&str]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ids.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// `GET /things`: every TD, ordered by id (Unicode code points), with optional limit/offset
/// pagination, `Link` next + canonical headers, and `format=collection` (WoT Discovery
/// §7.3.2.1.5). Bad arguments are 400 problem+json, as the directory TD's form says.
fn all_things(state: &HttpState, req: &HttpRequest) -> Result {
    let page = web::Query::<Page>::from_query(req.query_string())
        .map_err(|e| HttpError::BadQuery(e.to_string()))?
        .into_inner();
    let collection = match page.format.as_deref() {
        None | Some("array") => false,
        Some("collection") => true,
        Some(other) => {
            return Err(HttpError::BadQuery(format!(
                "format '{other}' is neither 'array' nor 'collection'"
            )));
        }
    };
    if page.limit == Some(0) {
        return Err(HttpError::BadQuery("limit must be a positive integer".into()));
    }
    let origins = origins(state, req);
    let mut things = state.servient.things();
    things.sort_by(|a, b| a.id.cmp(&b.id));
    let total = things.len();
    let offset = page.offset.unwrap_or(0).min(total);
    let limit = page.limit.unwrap_or(total).max(1);
    let end = offset.saturating_add(limit).min(total);
    let mut members = Vec::with_capacity(4096);
    members.push(b'[');
    for (i, thing) in things[offset..end].iter().enumerate() {
        if i > 0 {
            members.push(b',');
        }
        members.extend_from_slice(&state.publisher.td_bytes(thing, &origins).map_err(Error::from)?);
    }
    members.push(b']');
    let format_arg = if collection { "&format=collection" } else { "" };
    let next = (end < total).then(|| format!("/things?offset={end}&limit={limit}{format_arg}"));
    let ids: Vec<&str> = things.iter().map(|t| t.id.as_str()).collect();
    let mut links = vec![format!(
        "</things>; rel=\"canonical\"; etag=\"{}\"",
        collection_etag(&ids)
    )];
    if let Some(next) = &next {
        links.push(format!("<{next}>; rel=\"next\""));
    }
    let body = if collection {
        let mut head = serde_json::Map::new();
        head.insert("@context".into(), json!(crate::td::directory::DISCOVERY_CONTEXT));
        head.insert("@type".into(), json!("ThingCollection"));
        head.insert(
            "@id".into(),
            json!(format!("/things?offset={offset}&limit={limit}&format=collection")),
        );
        head.insert("total".into(), json!(total));
        if let Some(next) = &next {
            head.insert("next".into(), json!(next));
        }
        // Splice the cached TD bytes in as "members" without parsing them again.
        let mut out = serde_json::to_vec(&Value::Object(head)).map_err(|e| Error::Internal(e.to_string()))?;
        out.pop();
        out.extend_from_slice(b",\"members\":");
        out.extend_from_slice(&members);
        out.push(b'}');
        out
    } else {
        members
    };
    Ok(HttpResponse::Ok()
        .content_type(LD_JSON)
        .insert_header((header::LINK, links.join(", ")))
        .body(body))
}

// ---------------------------------------------------------------- properties

async fn read_property(state: &HttpState, req: &HttpRequest, id: &str, name: &str) -> Result {
    if wants_event_stream(req) {
        return event_stream(state, req, id, Target::Property(name.to_owned()));
    }
    match state
        .servient
        .handle(id, Operation::ReadProperty(name.to_owned()))
        .await?
    {
        Reply::Value(bytes) => Ok(json_response(actix_web::http::StatusCode::OK, bytes)),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn write_property(
    state: &HttpState,
    req: &HttpRequest,
    id: &str,
    name: &str,
    payload: web::Payload,
) -> Result {
    // Unknown names are reported before the body is judged. The thing is looked up again after
    // the body: a reload meanwhile replaces it, and a write to the replaced one would be lost.
    state.servient.thing(id)?.property(name)?;
    let value = require_json(state, req, payload).await?;
    let name = name.to_owned();
    state
        .servient
        .handle(id, Operation::WriteProperty(name, value))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn read_all_properties(state: &HttpState, req: &HttpRequest, id: &str) -> Result {
    if wants_event_stream(req) {
        return event_stream(state, req, id, Target::AllProperties);
    }
    match state.servient.handle(id, Operation::ReadAllProperties).await? {
        Reply::Value(bytes) => Ok(json_response(actix_web::http::StatusCode::OK, bytes)),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn write_properties(state: &HttpState, req: &HttpRequest, id: &str, payload: web::Payload) -> Result {
    state.servient.thing(id)?;
    let Value::Object(values) = require_json(state, req, payload).await? else {
        return Err(Error::Schema(crate::core::SchemaViolation {
            pointer: String::new(),
            rule: "type".into(),
            message: "writemultipleproperties takes an object of property names and values".into(),
        })
        .into());
    };
    state
        .servient
        .handle(id, Operation::WriteMultipleProperties(values))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- actions

fn status_href(origins: &Origins, thing: &str, status: &ActionStatus) -> String {
    format!(
        "{}/things/{}/actions/{}/{}",
        origins.http.as_deref().unwrap_or(""),
        crate::td::path_segment(thing),
        crate::td::path_segment(&status.action),
        status.id
    )
}

fn status_body(origins: &Origins, thing: &str, status: &ActionStatus) -> Value {
    status.to_json(Some(&status_href(origins, thing, status)))
}

async fn invoke_action(
    state: &HttpState,
    req: &HttpRequest,
    id: &str,
    name: &str,
    payload: web::Payload,
) -> Result {
    state.servient.thing(id)?.action(name)?;
    let input = read_json(state, req, payload).await?;
    let name = name.to_owned();
    match state
        .servient
        .handle(id, Operation::InvokeAction { name, input })
        .await?
    {
        Reply::Output(Some(output)) => Ok(json_response(
            actix_web::http::StatusCode::OK,
            Bytes::from(output.to_string()),
        )),
        Reply::Output(None) => Ok(HttpResponse::NoContent().finish()),
        Reply::Started(status) => {
            let origins = origins(state, req);
            let href = status_href(&origins, id, &status);
            Ok(HttpResponse::Created()
                .insert_header((header::LOCATION, href.clone()))
                .content_type(JSON)
                .body(status.to_json(Some(&href)).to_string()))
        }
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn query_action(state: &HttpState, req: &HttpRequest, id: &str, name: &str, action_id: &str) -> Result {
    let (name, action_id) = (name.to_owned(), action_id.to_owned());
    match state
        .servient
        .handle(id, Operation::QueryAction { name, id: action_id })
        .await?
    {
        Reply::Status(status) => Ok(HttpResponse::Ok()
            .content_type(JSON)
            .body(status_body(&origins(state, req), id, &status).to_string())),
        other => Err(Error::Internal(format!("unexpected reply {other:?}")).into()),
    }
}

async fn cancel_action(state: &HttpState, id: &str, name: &str, action_id: &str) -> Result {
    let (name, action_id) = (name.to_owned(), action_id.to_owned());
    state
        .servient
        .handle(id, Operation::CancelAction { name, id: action_id })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn query_all_actions(state: &HttpState, req: &HttpRequest, id: &str) -> Result {
    let Reply::AllStatuses(grouped) = state.servient.handle(id, Operation::QueryAllActions).await? else {
        return Err(Error::Internal("unexpected reply".into()).into());
    };
    let origins = origins(state, req);
    let body: serde_json::Map<String, Value> = grouped
        .into_iter()
        .map(|(name, statuses)| {
            (
                name,
                Value::Array(statuses.iter().map(|s| status_body(&origins, id, s)).collect()),
            )
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type(JSON)
        .body(Value::Object(body).to_string()))
}

// ---------------------------------------------------------------- events

// ---------------------------------------------------------------- longpoll

async fn longpoll(state: &HttpState, id: &str, target: Target, verb: Verb) -> Result {
    if verb == Verb::Head {
        return longpoll_handshake(state, id, target);
    }
    let keyed = matches!(target, Target::AllProperties | Target::AllEvents);
    let subscription = state.servient.subscribe(id, target)?;
    let Some(n) = sse::next(subscription, state.shutdown.clone(), LONGPOLL_WAIT).await else {
        return Ok(HttpResponse::NoContent().finish());
    };
    let data: Value = if n.data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&n.data).unwrap_or(Value::Null)
    };
    let body = if keyed {
        json!({ n.topic.name(): data })
    } else {
        data
    };
    Ok(HttpResponse::Ok().content_type(JSON).body(body.to_string()))
}

/// `HEAD` on a longpoll URL: 202 at once when a `GET` there would be accepted (the thing, the
/// affordance, a readable property), and the `GET`'s error otherwise. node-wot 0.9 sends it
/// before its first poll and waits 1 s for a 2xx; its own server answers it 202 too. Nothing is
/// kept: a change made between this answer and the poll is not in the poll (spec-notes).
fn longpoll_handshake(state: &HttpState, id: &str, target: Target) -> Result {
    drop(state.servient.subscribe(id, target)?);
    Ok(HttpResponse::Accepted().finish())
}

// ---------------------------------------------------------------- the table

/// Every request for the binding's own URLs, and any other that no mount took (the app's default
/// service): `table` names the resource, the method picks the handler.
pub(crate) async fn dispatch(state: State, req: HttpRequest, payload: web::Payload) -> Result {
    use Resource as R;
    let state = state.get_ref();
    let Some(resource) = table::resource(req.path()) else {
        return Err(HttpError::NotFound(req.path().to_owned()));
    };
    let req = &req;
    match (resource, Verb::of(req.method())) {
        (R::WellKnown, Verb::Get | Verb::Head) => well_known(state, req),
        (R::Things, Verb::Get | Verb::Head) => all_things(state, req),
        (R::Thing(id), Verb::Get | Verb::Head) => thing_description(state, req, &id),
        (R::Properties(id), Verb::Get) => read_all_properties(state, req, &id).await,
        (R::Properties(id), Verb::Put) => write_properties(state, req, &id, payload).await,
        (R::Property(id, name), Verb::Get) => read_property(state, req, &id, &name).await,
        (R::Property(id, name), Verb::Put) => write_property(state, req, &id, &name, payload).await,
        (R::Actions(id), Verb::Get) => query_all_actions(state, req, &id).await,
        (R::Action(id, name), Verb::Post) => invoke_action(state, req, &id, &name, payload).await,
        (R::ActionStatus(id, name, action), Verb::Get) => query_action(state, req, &id, &name, &action).await,
        (R::ActionStatus(id, name, action), Verb::Delete) => cancel_action(state, &id, &name, &action).await,
        (R::Events(id), Verb::Get) => event_stream(state, req, &id, Target::AllEvents),
        (R::Event(id, name), Verb::Get) => event_stream(state, req, &id, Target::Event(name.into_owned())),
        // Longpoll: GET waits for the next change; HEAD is node-wot's handshake, answered at once.
        (R::LongpollProperties(id), verb @ (Verb::Get | Verb::Head)) => {
            longpoll(state, &id, Target::AllProperties, verb).await
        }
        (R::LongpollProperty(id, name), verb @ (Verb::Get | Verb::Head)) => {
            longpoll(state, &id, Target::Property(name.into_owned()), verb).await
        }
        (R::LongpollEvents(id), verb @ (Verb::Get | Verb::Head)) => {
            longpoll(state, &id, Target::AllEvents, verb).await
        }
        (R::LongpollEvent(id, name), verb @ (Verb::Get | Verb::Head)) => {
            longpoll(state, &id, Target::Event(name.into_owned()), verb).await
        }
        (resource, _) => Err(HttpError::MethodNotAllowed(resource.allow())),
    }
}
