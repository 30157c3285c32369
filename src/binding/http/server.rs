//! The HTTP port's server: actix-http's HTTP/1.1 and HTTP/2 service on the runtime's listener,
//! plain or TLS, serving the port's routes (an actix-web `App`, built by `super::Routes`), with an
//! upgrade service that lets an endpoint take a connection over after `101 Switching Protocols`
//! (`binding::upgrade`). actix-web's `HttpServer` is this without the upgrade service.
//!
//! A request that asks to upgrade (HTTP/1.1 `Upgrade: websocket`, or `CONNECT`) comes to the
//! upgrade service with its connection. The service still runs it through the same routes,
//! checks included; an endpoint that accepts answers `101` and leaves a takeover in the request's
//! [`UpgradeSlot`], which then runs with the connection. Any other answer is written as usual and
//! the connection closes, since the client meant to leave HTTP on it. Nothing here knows what an
//! endpoint speaks after the upgrade.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, Framed};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{self, Codec};
use actix_http::{
    ConnectionType, HttpMessage, HttpService, HttpServiceBuilder, Request, Response, StatusCode,
};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, fn_factory, fn_service};
use actix_web::dev::{AppConfig, Extensions, ServiceResponse};

use crate::binding::upgrade::{UpgradeSlot, Upgraded};
use crate::limits::ConnectionSlot;

/// Runs the port's routes (`make_app`, called once per worker and once more for its upgrade
/// service) on `listener`, over TLS when `tls` is set.
pub(super) fn serve<F, A, SF, B>(
    listener: std::net::TcpListener,
    workers: usize,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    timeouts: &super::Timeouts,
    make_app: F,
) -> io::Result<actix_server::Server>
where
    F: Fn() -> A + Clone + Send + 'static,
    A: IntoServiceFactory<SF, Request>,
    SF: AppFactory<B>,
    SF::Service: 'static,
    <SF::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    let builder = actix_server::Server::build()
        .workers(workers.max(1))
        .shutdown_timeout(1)
        .disable_signals();
    let settings = Settings {
        head_timeout: timeouts.head,
        idle_timeout: timeouts.idle,
        local_addr: listener.local_addr()?,
        shutdown: builder.graceful_shutdown_signal(),
    };
    // Every connection takes a slot when accepted; one over the maximum is still accepted so
    // the middleware can answer it 503 instead of leaving it in the backlog.
    let connections = crate::limits::Connections::new(timeouts.max_connections);
    let builder = match tls {
        Some(config) => builder.listen("wot-https", listener, move || {
            let connections = connections.clone();
            configure(HttpService::build(), &settings)
                .on_connect_ext(move |_: &_, extensions: &mut _| admit(&connections, extensions))
                .upgrade(upgrades(make_app.clone()))
                .finish(routes(make_app()))
                .rustls_0_23((*config).clone())
        })?,
        None => builder.listen("wot-http", listener, move || {
            let connections = connections.clone();
            configure(HttpService::build(), &settings)
                .on_connect_ext(move |_: &_, extensions: &mut _| admit(&connections, extensions))
                .upgrade(upgrades(make_app.clone()))
                .finish(routes(make_app()))
                .tcp()
        })?,
    };
    Ok(builder.run())
}

/// What an actix-web `App` turns into: the factory of the port's routes, per worker.
pub(super) trait AppFactory<B>:
    ServiceFactory<
        Request,
        Config = AppConfig,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
        InitError = (),
    > + 'static
{
}

impl<B, T> AppFactory<B> for T where
    T: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static
{
}

/// What the HTTP/1.1 and HTTP/2 layers enforce on every connection.
#[derive(Clone)]
struct Settings {
    head_timeout: Duration,
    idle_timeout: Duration,
    local_addr: std::net::SocketAddr,
    shutdown: actix_server::GracefulShutdownSignal,
}

/// The HTTP service's settings, the same for plain and TLS connections.
fn configure<T, S, X, U>(
    builder: HttpServiceBuilder<T, S, X, U>,
    settings: &Settings,
) -> HttpServiceBuilder<T, S, X, U>
where
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: std::fmt::Debug,
    <S::Service as Service<Request>>::Future: 'static,
    X: ServiceFactory<Request, Config = (), Response = Request>,
    X::Error: Into<Response<BoxBody>>,
    X::InitError: std::fmt::Debug,
    U: ServiceFactory<(Request, Framed<T, Codec>), Config = (), Response = ()>,
    U::Error: std::fmt::Display,
    U::InitError: std::fmt::Debug,
{
    let shutdown = settings.shutdown.clone();
    builder
        // A request head must arrive in time (slowloris gets 408), an idle keep-alive connection
        // is closed, and a closing client gets 1 s to go.
        .client_request_timeout(settings.head_timeout)
        .keep_alive(settings.idle_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .local_addr(settings.local_addr)
        // Idle keep-alive connections close as soon as the server starts shutting down.
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
}

/// The port's routes as the HTTP service runs them.
fn routes<A, SF, B>(
    app: A,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = ServiceResponse<B>,
    Error = actix_web::Error,
    InitError = (),
>
where
    A: IntoServiceFactory<SF, Request>,
    SF: AppFactory<B>,
{
    // The routes read nothing of the config: origins come from the port's own `PortOrigin`.
    actix_service::map_config(app, |()| AppConfig::default())
}

/// The upgrade service for connections of transport `T`: each worker builds its own instance of
/// the routes (`make_app`) to run upgrade requests through, on its first upgrade request. Built
/// with the worker, that second copy of every route pattern cost each worker about half a
/// megabyte that a server nobody opens a WebSocket to never uses.
fn upgrades<T, F, A, SF, B>(
    make_app: F,
) -> impl ServiceFactory<
    (Request, Framed<T, Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> A + Clone + 'static,
    A: IntoServiceFactory<SF, Request>,
    SF: AppFactory<B>,
    SF::Service: 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let make_app = Rc::new(make_app.clone());
        let built = Rc::new(tokio::sync::OnceCell::new());
        async move {
            Ok::<_, ()>(fn_service(move |(req, framed)| {
                let make_app = make_app.clone();
                let built = built.clone();
                async move {
                    let routes = built
                        .get_or_try_init(|| routes(make_app()).new_service(()))
                        .await
                        .map_err(|()| {
                            actix_web::error::ErrorInternalServerError("the routes did not build")
                        })?;
                    upgrade(routes, req, framed).await.map_err(actix_web::Error::from)
                }
            }))
        }
    })
}

/// Runs an upgrade request through the routes; takes the connection over if an endpoint
/// accepted, else writes the answer and closes.
async fn upgrade<T, S, B>(routes: &S, req: Request, mut framed: Framed<T, Codec>) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    // The dispatcher let go of the connection's data when it handed the connection over; the
    // connection's slot in the limit is held here for as long as the connection lasts.
    let _admission = req.conn_data::<ConnectionSlot>().cloned();
    let slot = UpgradeSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response: Response<BoxBody> = match routes.call(req).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(error) => error.into(),
    };
    let (mut head, body) = response.into_parts();
    if head.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(takeover) = slot.take()
    {
        send(&mut framed, h1::Message::Item((head, BodySize::None))).await?;
        let parts = framed.into_parts();
        // `send` flushed: nothing of ours waits in `parts.write_buf`.
        takeover(Upgraded::new(Box::new(parts.io), parts.read_buf)).await;
        return Ok(());
    }
    head.head_mut().set_connection_type(ConnectionType::Close);
    send(&mut framed, h1::Message::Item((head, body.size()))).await?;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
        send(&mut framed, h1::Message::Chunk(Some(chunk))).await?;
    }
    send(&mut framed, h1::Message::Chunk(None)).await?;
    std::future::poll_fn(|cx| Pin::new(&mut framed).close::<Message>(cx)).await
}

/// What the upgrade service writes through the HTTP/1.1 codec: a response head, then its body.
type Message = h1::Message<(Response<()>, BodySize)>;

/// Encodes and writes one message.
async fn send<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, Codec>,
    message: Message,
) -> io::Result<()> {
    Pin::new(&mut *framed).write(message)?;
    std::future::poll_fn(|cx| Pin::new(&mut *framed).flush::<Message>(cx)).await
}

/// Takes a slot in the connection limit for an accepted connection.
fn admit(connections: &crate::limits::Connections, extensions: &mut Extensions) {
    let slot = connections.admit();
    if !slot.admitted() {
        tracing::warn!(max = connections.max(), "connection limit reached; answering 503");
    }
    extensions.insert(slot);
}
