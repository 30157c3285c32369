//! The HTTP binding (actix-web): the URL contract of DESIGN.md §1.2 under the W3C WoT Profile
//! (HTTP Basic + SSE), TDs, `GET /things`, `/.well-known/wot`, CORS and problem+json errors.
//!
//! It translates HTTP into core operations and back (`routes`), streams notifications (`sse`),
//! maps errors once (`problem`), describes itself in TDs (`forms`) and serves the browser page
//! at `/` (`explorer`). It must not reach into
//! another binding or keep thing state of its own.
//!
//! As library API: the port's [`Security`] and [`Timeouts`], the default body limit, the
//! binding's [`HttpForms`], and [`Mount`], how another adapter adds routes to the port.

pub(crate) mod explorer;
pub(crate) mod forms;
pub(crate) mod problem;
pub(crate) mod routes;
mod server;
pub(crate) mod sse;
mod table;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::{Method, header};
use actix_web::{App, HttpResponse, web};
use futures_util::future::Either;
use tokio::sync::watch;

use crate::core::Servient;
use crate::security::{Auth, HostPolicy};
use crate::td::TdPublisher;
use actix_web::ResponseError;
pub use forms::HttpForms;

/// Everything the handlers share.
pub(crate) struct HttpState {
    pub(crate) servient: Arc<Servient>,
    pub(crate) publisher: Arc<TdPublisher>,
    /// Public origin (`--base-url`); when None, the request's scheme and Host are used.
    pub(crate) base_url: Option<String>,
    /// The CoAP origin for TD forms, when CoAP runs.
    pub(crate) coap_origin: Option<String>,
    /// The coaps (DTLS) origin for TD forms, when the coaps port runs.
    pub(crate) coaps_origin: Option<String>,
    /// The id of the directory TD served at `/.well-known/wot` when several things run.
    pub(crate) directory_id: String,
    pub(crate) body_limit: usize,
    pub(crate) keepalive: Duration,
    /// Turns true when the server shuts down; open streams end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Open SSE streams, per client address and in total.
    pub(crate) subscribers: crate::limits::Subscribers,
    /// The longest a request body may take to arrive (slow clients get 408).
    pub(crate) body_timeout: Duration,
}

/// The largest request body taken by default (1 MiB); larger ones are answered 413.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

const CORS_METHODS: &str = "GET, HEAD, PUT, POST, DELETE, OPTIONS";
const CORS_HEADERS: &str = "Origin, Content-Type, Accept, X-Requested-With, Authorization, Last-Event-ID";

fn allow_origin(headers: &mut header::HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        // A browser's script reads only the headers listed here: where a created action lives,
        // links, and why and for how long it was refused.
        header::HeaderValue::from_static("Location, Link, WWW-Authenticate, Retry-After"),
    );
}

fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

/// Routes another adapter serves on the HTTP port (the WebSocket binding, the legacy WebThings
/// API, a [`crate::runtime::Adapter`] from another crate). Mounts are tried before the HTTP
/// binding's own URLs, so a guarded resource (for example `GET /things/{id}` with
/// `Upgrade: websocket`) is tried first. Every request passes the mounts' patterns on its way
/// to the binding's table: a mount should sit under a static prefix (`web::scope`), which costs
/// a string comparison, rather than a pattern with parameters, which costs a regex run. The
/// runtime composes them; the HTTP binding never names another binding.
pub type Mount = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Connection limits and timeouts of the HTTP port.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A request head must arrive within this (slowloris gets 408 and the connection closes).
    pub head: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle: Duration,
    /// Open connections at most; one more is answered 503 with `Retry-After` and closed.
    pub max_connections: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Duration::from_secs(5),
            idle: Duration::from_secs(15),
            max_connections: 16_384,
        }
    }
}

/// Starts the HTTP server on an already bound listener. The caller stops it through the
/// returned handle (graceful: in-flight requests finish, streams end via `shutdown`).
pub(crate) fn start(
    state: HttpState,
    listener: std::net::TcpListener,
    workers: usize,
    mounts: Vec<Mount>,
    security: Security,
    timeouts: Timeouts,
) -> std::io::Result<actix_web::dev::Server> {
    let port = super::PortOrigin {
        secure: security.tls.is_some(),
        address: listener.local_addr()?.to_string(),
    };
    let tls = security.tls.clone();
    let routes = Routes {
        state: web::Data::new(state),
        port,
        mounts,
        security: Arc::new(security),
        max_connections: timeouts.max_connections,
    };
    server::serve(listener, workers, tls, &timeouts, move || routes.app())
}

/// What each worker builds its copy of the port's routes from.
#[derive(Clone)]
struct Routes {
    state: web::Data<HttpState>,
    port: super::PortOrigin,
    mounts: Vec<Mount>,
    security: Arc<Security>,
    max_connections: usize,
}

impl Routes {
    /// The port's routes: the other adapters' mounts, then the binding's own, all behind one
    /// middleware.
    fn app(
        &self,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody + use<>>,
            Error = actix_web::Error,
            InitError = (),
        > + use<>,
    > {
        let mounts = self.mounts.clone();
        let security = self.security.clone();
        let max_connections = self.max_connections;
        App::new()
            .app_data(self.state.clone())
            .app_data(self.port.clone())
            .wrap_fn(move |req, srv| {
                // Every request passes here first, whatever adapter serves it: the Host check
                // against DNS rebinding, CORS preflights (answered without credentials, as
                // browsers send none), then authentication.
                if let Some(mut refusal) = refusal(&req, &security, max_connections) {
                    // A cross-origin page must be able to read why it was refused (401 or
                    // 403 rather than an opaque network error).
                    allow_origin(refusal.headers_mut());
                    let res = req.into_response(refusal).map_into_right_body();
                    Either::Left(std::future::ready(Ok(res)))
                } else if req.method() == Method::OPTIONS {
                    let res = req.into_response(preflight()).map_into_right_body();
                    Either::Left(std::future::ready(Ok(res)))
                } else {
                    let call = srv.call(req);
                    Either::Right(async move {
                        let mut res = call.await?;
                        allow_origin(res.headers_mut());
                        Ok(res.map_into_left_body())
                    })
                }
            })
            .configure(move |cfg| {
                for mount in &mounts {
                    mount(cfg);
                }
            })
            .configure(explorer::configure)
            // The binding's own URLs are one table (`table`), not actix resources: tried last,
            // after every mount, and without a regular expression per URL.
            .default_service(web::to(routes::dispatch))
    }
}

/// Why a request is refused before any handler runs, if it is: its connection is over the
/// limit (503), its Host is not allowed, or its credentials are missing or wrong.
fn refusal(
    req: &actix_web::dev::ServiceRequest,
    security: &Security,
    max_connections: usize,
) -> Option<HttpResponse> {
    let over = req
        .conn_data::<crate::limits::ConnectionSlot>()
        .is_some_and(|slot| !slot.admitted());
    if over {
        Some(problem::HttpError::TooManyConnections(max_connections).error_response())
    } else {
        security.judge(req)
    }
}

/// What the HTTP port enforces before any handler runs.
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS (HTTPS), when set; the port then speaks nothing else.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Credentials every request must carry, when set.
    pub auth: Option<Arc<Auth>>,
    /// The Host headers a request may name (against DNS rebinding).
    pub hosts: HostPolicy,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            tls: None,
            auth: None,
            hosts: HostPolicy::any(),
        }
    }
}

impl Security {
    /// The refusal of a request, if it is refused.
    fn judge(&self, req: &actix_web::dev::ServiceRequest) -> Option<HttpResponse> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        // The host a request names: HTTP/2's `:authority` and an HTTP/1.1 absolute-form target
        // are in the URI (and take precedence over any Host header, RFC 9112 §3.2.2).
        let host = req.uri().authority().map(|a| a.as_str()).or(header(header::HOST));
        if !self.hosts.allows(host) {
            tracing::warn!(
                host = host.unwrap_or(""),
                "refused a request for a host not allowed"
            );
            return Some(problem::HttpError::HostNotAllowed.error_response());
        }
        let auth = self.auth.as_ref()?;
        // The explorer page and its assets hold no secret: served to anyone allowed by Host, so
        // that the page can load and then ask for the token the API wants.
        if req.method() == Method::OPTIONS || explorer::is_public(req.method(), req.path(), req.headers()) {
            return None;
        }
        // Browsers cannot set headers on WebSocket and EventSource requests: GETs may carry the
        // token in the query string instead.
        let query = (req.method() == Method::GET).then(|| req.query_string());
        match auth.check(header(header::AUTHORIZATION), query) {
            Ok(()) => None,
            Err(denied) => {
                let mut response = problem::HttpError::Unauthorized(denied).error_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(auth.challenge(denied)),
                );
                Some(response)
            }
        }
    }
}
