//! The runtime: starts the enabled bindings on a set of exposed things, prints the ready line,
//! and shuts everything down in order. This is where `wot serve` and library users meet; it owns
//! sockets and tasks but no protocol logic.
//!
//! Start-up binds every listener before it starts any task, so a start that fails (a port
//! taken) leaves no behaviour, reloader or server running.
//!
//! As library API: fill a [`Config`] (each binding's part is its own type: [`CoapConfig`],
//! [`WsConfig`], [`http::Security`], [`http::Timeouts`], [`SubscriberLimits`]; bindings from
//! other crates are [`Adapter`]s), hand [`Running::start`] the [`Hosted`] things, and
//! [`Running::stop`] it when done.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binding::coap::access::Access;
use crate::binding::coap::{self, CoapConfig, CoapForms, CoapServer};
use crate::binding::http::{self, HttpForms, HttpState};
use crate::binding::legacy::Legacy;
use crate::binding::mqtt::MqttForms;
use crate::binding::ws::{self, WsConfig, WsForms, WsState};
use crate::core::Servient;
use crate::discovery::{self, Announcer, MdnsConfig};
use crate::td::{FormProvider, Origins, TdPublisher};
use crate::things::{Host, Hosted, IdStore};

pub use crate::limits::SubscriberLimits;

/// What a runtime serves on, and how (what `wot serve`'s flags set).
#[derive(Debug, Clone)]
pub struct Config {
    /// The address every listener binds (default: all of IPv4).
    pub host: IpAddr,
    /// The HTTP port (0: any free one); WebSockets and the legacy API share it.
    pub http_port: u16,
    /// The CoAP port (0: any free one).
    pub coap_port: u16,
    /// The coaps (CoAP over DTLS) port (0: any free one). coaps runs with CoAP when it has a
    /// pre-shared key: `coap.dtls.keys`, or the one derived from `--auth`
    /// ([`crate::security::Auth::coaps_key`]).
    pub coaps_port: u16,
    /// Do not run coaps, even when there are keys for it (plain CoAP is unaffected).
    pub no_coaps: bool,
    /// Do not run CoAP.
    pub no_coap: bool,
    /// Do not announce over mDNS (also keeps CoAP off the multicast groups).
    pub no_mdns: bool,
    /// Do not join the CoAP multicast groups even when mDNS is on.
    pub no_coap_multicast: bool,
    /// CoAP tuning (limits, separate-response delay); multicast follows the flags above.
    pub coap: CoapConfig,
    /// Public origin for TD hrefs, without a trailing slash.
    pub base_url: Option<String>,
    /// The largest request body taken (413 beyond it).
    pub body_limit: usize,
    /// How often an idle SSE stream gets a comment, so proxies keep it open.
    pub sse_keepalive: Duration,
    /// HTTP worker threads (default: one per core).
    pub workers: usize,
    /// The things directory to watch: files added, changed or removed there add, update or
    /// remove their thing while serving.
    pub watch_dir: Option<PathBuf>,
    /// How often `watch_dir` is scanned.
    pub watch_period: Duration,
    /// WebSocket (Web Thing Protocol) limits and keepalive.
    pub ws: WsConfig,
    /// Interfaces (names or addresses) mDNS announces on; empty: every interface.
    pub mdns_interfaces: Vec<String>,
    /// TLS, authentication and the Host allow-list of the HTTP port.
    pub security: http::Security,
    /// Open SSE streams and WebSockets (one pool) allowed per client address and in total.
    pub subscribers: SubscriberLimits,
    /// The longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Open connections of the HTTP port, and how long a request head and an idle
    /// keep-alive connection may take.
    pub http_timeouts: http::Timeouts,
    /// Bindings from other crates, served on the HTTP port (see [`Adapter`]).
    pub adapters: Vec<Arc<dyn Adapter>>,
    /// The MQTT broker to serve the things through, if any.
    pub mqtt: Option<crate::binding::mqtt::MqttConfig>,
}

/// A binding from another crate. It serves on the HTTP port, behind the checks every request
/// there passes first (connection limit, Host allow-list, CORS, credentials), and may add its
/// forms to every TD. Its routes are tried after the WebSocket and legacy adapters' and before
/// the HTTP binding's own; it reaches the things only through the [`Servient`] it is given.
pub trait Adapter: std::fmt::Debug + Send + Sync {
    /// Its routes, given the things the runtime serves and a receiver that turns true when the
    /// runtime stops (open streams should end then). Called once, when the runtime starts.
    fn mount(&self, servient: Arc<Servient>, shutdown: watch::Receiver<bool>) -> http::Mount;

    /// The forms it adds to every TD, after the built-in bindings' (none by default).
    fn forms(&self) -> Option<Arc<dyn FormProvider>> {
        None
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            http_port: 8080,
            coap_port: 5683,
            coaps_port: 5684,
            no_coaps: false,
            no_coap: false,
            no_mdns: false,
            no_coap_multicast: false,
            coap: CoapConfig::default(),
            base_url: None,
            body_limit: http::DEFAULT_BODY_LIMIT,
            sse_keepalive: Duration::from_secs(15),
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            watch_dir: None,
            watch_period: Duration::from_millis(500),
            ws: WsConfig::default(),
            mdns_interfaces: Vec::new(),
            security: http::Security::default(),
            subscribers: SubscriberLimits::default(),
            body_timeout: Duration::from_secs(10),
            http_timeouts: http::Timeouts::default(),
            adapters: Vec::new(),
            mqtt: None,
        }
    }
}

impl Config {
    /// A configuration for tests and examples: loopback, any free port, no multicast.
    pub fn loopback() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            http_port: 0,
            coap_port: 0,
            coaps_port: 0,
            no_coap: true,
            no_mdns: true,
            workers: 1,
            ..Config::default()
        }
    }
}

/// A started runtime.
pub struct Running {
    /// The things it serves.
    pub servient: Arc<Servient>,
    /// The TDs it serves, built from the enabled bindings' forms.
    pub publisher: Arc<TdPublisher>,
    /// The address the HTTP port is bound to.
    pub http_addr: SocketAddr,
    tls: bool,
    /// The CoAP unicast address, when CoAP runs.
    pub coap_addr: Option<SocketAddr>,
    /// The coaps (DTLS) address, when coaps runs.
    pub coaps_addr: Option<SocketAddr>,
    coap: Option<CoapServer>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
    shutdown: watch::Sender<bool>,
    pub(crate) host: Arc<Host>,
    reloader: Option<JoinHandle<()>>,
    legacy: Legacy,
    /// The announcer and the task that keeps it in step with the things (hot reload).
    mdns: Option<(Arc<Announcer>, JoinHandle<()>)>,
    mqtt: Option<crate::binding::mqtt::Mqtt>,
}

/// Why [`Running::start`] failed; nothing it started is left running.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound (taken, or not allowed).
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// `"HTTP"` or `"CoAP"`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The coaps (DTLS) layer could not be set up.
    #[error("coaps: {0}")]
    Coaps(#[source] coap::DtlsSetupError),
    /// An id could not be kept in the state store.
    #[error("state store: {0}")]
    State(#[source] crate::state::StoreError),
    /// The MQTT broker URL cannot be used.
    #[error(transparent)]
    Mqtt(#[from] crate::binding::mqtt::BrokerError),
}

/// Makes a bound address something a client can connect to (0.0.0.0 → 127.0.0.1).
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

fn origin(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{}", connectable(addr))
}

/// The host part of an origin such as `http://[::1]:8080` or `https://lamp.example`.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority.find(']').map(|end| &authority[..=end]);
    }
    Some(authority.split(':').next().unwrap_or(authority)).filter(|h| !h.is_empty())
}

/// The CoAP origin TD forms use: the `--base-url` host when one is given, else the bound
/// address made connectable.
fn coap_origin(base_url: Option<&str>, addr: SocketAddr) -> String {
    scheme_origin("coap", base_url, addr)
}

fn scheme_origin(scheme: &str, base_url: Option<&str>, addr: SocketAddr) -> String {
    match base_url.and_then(origin_host) {
        Some(host) => format!("{scheme}://{host}:{}", addr.port()),
        None => origin(scheme, addr),
    }
}

/// The coaps keys: those configured, then the one derived from `--auth`.
fn coaps_config(config: &Config) -> coap::DtlsConfig {
    let mut dtls = config.coap.dtls.clone();
    if config.no_coaps {
        // No key, no coaps.
        dtls.keys.clear();
        return dtls;
    }
    if let Some(auth) = &config.security.auth {
        let (identity, key) = auth.coaps_key();
        if !dtls.keys.iter().any(|k| k.identity == identity) {
            dtls.keys.push(coap::Psk { identity, key });
        }
    }
    dtls
}

impl Running {
    /// Binds every listener, exposes the things and starts their behaviours (no durable state).
    /// On an error nothing it started is left running.
    pub async fn start(config: Config, hosted: Vec<Hosted>) -> Result<Running, StartError> {
        Self::start_with_ids(config, hosted, IdStore::new(None)).await
    }

    /// Like [`Running::start`], with the id store (and its state store) the things were built with.
    pub async fn start_with_ids(
        config: Config,
        hosted: Vec<Hosted>,
        mut ids: IdStore,
    ) -> Result<Running, StartError> {
        let servient = Arc::new(Servient::new());
        let directory_id = ids.id_for("directory").map_err(StartError::State)?;
        let base_url = config
            .base_url
            .as_ref()
            .map(|b| b.trim_end_matches('/').to_owned());
        let broker = config
            .mqtt
            .as_ref()
            .map(|m| crate::binding::mqtt::Broker::parse(&m.broker))
            .transpose()?;
        let listeners = Listeners::bind(&config)?;
        let coap_access = match config.security.auth {
            Some(_) => Access::Restricted(config.coap.open),
            None => Access::Open,
        };
        let coaps_identity = listeners
            .coaps_runs()
            .then(|| coaps_config(&config).keys)
            .and_then(|keys| (keys.len() == 1).then(|| keys[0].identity.clone()));
        let mqtt_forms = match (&broker, &config.mqtt) {
            (Some(broker), Some(mqtt)) => Some(MqttForms::new(broker.origin(), &mqtt.prefix)),
            _ => None,
        };
        let publisher = publisher(
            &config,
            listeners.coap.is_some().then_some(coap_access),
            listeners.coaps_runs().then_some(coaps_identity),
            mqtt_forms,
        );
        let parts = Parts {
            coap_origin: listeners.coap_origin(base_url.as_deref()),
            coaps_origin: listeners.coaps_origin(base_url.as_deref()),
            host: Arc::new(Host::new(servient.clone(), Arc::new(publisher), ids)),
            servient,
            base_url,
            directory_id,
            shutdown: watch::channel(false).0,
        };
        // Every listener is bound by now. Things are added before the legacy adapter starts so
        // that its first sync serves them as soon as the port does; the one step that can still
        // fail, `http::start`, stops both on its error path.
        for h in hosted {
            parts.host.add(h);
        }
        let (server, legacy) = start_http(&config, &parts, listeners.http, listeners.http_at)?;
        // Nothing below can fail, so the rest starts only now.
        let reloader = config
            .watch_dir
            .clone()
            .map(|dir| tokio::spawn(crate::reload::watch(dir, parts.host.clone(), config.watch_period)));
        let http = server.handle();
        let http_task = tokio::spawn(server);
        let http_addr = listeners.http_addr;
        let coap_addr = listeners.coap.as_ref().and_then(|b| b.addrs.first().copied());
        let coaps_addr = listeners
            .coap
            .as_ref()
            .and_then(|b| b.secure_addrs.first().copied());
        let coap = listeners
            .coap
            .map(|bound| start_coap(bound, &config, coap_access, &parts, http_addr));
        let ports = discovery::Ports {
            http: http_addr.port(),
            coap: coap_addr.map(|a| a.port()),
            coaps: coaps_addr.map(|a| a.port()),
            tls: config.security.tls.is_some(),
        };
        let mdns = (!config.no_mdns)
            .then(|| start_mdns(&config, &parts.servient, ports))
            .flatten();
        let mqtt = match (&broker, &config.mqtt) {
            (Some(broker), Some(mqtt)) => {
                let tls = config.security.tls.is_some();
                let origins = Origins {
                    http: Some(
                        parts
                            .base_url
                            .clone()
                            .unwrap_or_else(|| origin(if tls { "https" } else { "http" }, http_addr)),
                    ),
                    coap: parts.coap_origin.clone(),
                    coaps: parts.coaps_origin.clone(),
                };
                let publisher = parts.host.publisher.clone();
                Some(crate::binding::mqtt::start(
                    mqtt,
                    broker,
                    parts.servient.clone(),
                    publisher,
                    origins,
                ))
            }
            _ => None,
        };
        Ok(Running {
            publisher: parts.host.publisher.clone(),
            servient: parts.servient,
            http_addr,
            tls: config.security.tls.is_some(),
            coap_addr,
            coaps_addr,
            coap,
            http,
            http_task,
            shutdown: parts.shutdown,
            host: parts.host,
            reloader,
            legacy,
            mdns,
            mqtt,
        })
    }

    /// The HTTP origin clients can connect to (https under TLS).
    pub fn http_url(&self) -> String {
        origin(if self.tls { "https" } else { "http" }, self.http_addr)
    }

    /// The CoAP origin clients can send to, when CoAP runs.
    pub fn coap_url(&self) -> Option<String> {
        self.coap_addr.map(|a| origin("coap", a))
    }

    /// The coaps (CoAP over DTLS) origin, when it runs.
    pub fn coaps_url(&self) -> Option<String> {
        self.coaps_addr.map(|a| origin("coaps", a))
    }

    /// The one JSON line `wot serve` prints when every listener is bound.
    pub fn ready_line(&self) -> String {
        let mut line = json!({"event": "ready", "http": self.http_url()});
        if let Some(coap) = self.coap_url() {
            line["coap"] = json!(coap);
        }
        if let Some(coaps) = self.coaps_url() {
            line["coaps"] = json!(coaps);
        }
        line["things"] = json!(self.servient.slugs());
        line.to_string()
    }

    /// The full names of the mDNS instances announced (empty with `no_mdns`).
    pub fn announced(&self) -> Vec<String> {
        self.mdns.as_ref().map(|(a, _)| a.fullnames()).unwrap_or_default()
    }

    /// Sends mDNS goodbyes, stops accepting, ends streams, lets in-flight requests finish,
    /// stops behaviours.
    pub async fn stop(self) {
        if let Some((announcer, follower)) = self.mdns {
            follower.abort();
            announcer.stop().await;
        }
        if let Some(mqtt) = self.mqtt {
            mqtt.stop().await;
        }
        let _ = self.shutdown.send(true);
        self.http.stop(true).await;
        let _ = self.http_task.await;
        if let Some(coap) = self.coap {
            coap.stopped().await;
        }
        self.legacy.stop();
        if let Some(reloader) = self.reloader {
            reloader.abort();
        }
        self.host.stop();
        if let Some(store) = self.host.store() {
            store.flush_async().await;
        }
    }
}

/// The runtime's listeners, bound before anything starts.
struct Listeners {
    /// The CoAP sockets, unless CoAP is off.
    coap: Option<coap::Bound>,
    http: TcpListener,
    /// The address the HTTP listener was asked for (for errors).
    http_at: SocketAddr,
    /// The address it is bound to (the port is known even when 0 was asked for).
    http_addr: SocketAddr,
}

impl Listeners {
    /// Binds CoAP (unless it is off), then HTTP; a port that is taken is a [`StartError::Bind`].
    fn bind(config: &Config) -> Result<Listeners, StartError> {
        let coap = if config.no_coap {
            None
        } else {
            let dtls = coaps_config(config);
            let secure = (!dtls.keys.is_empty()).then_some((config.coaps_port, &dtls));
            let bound = coap::bind(config.host, config.coap_port, config.coap.loops, secure);
            Some(bound.map_err(|(secure, e)| {
                let (what, port) = match secure {
                    true => ("coaps", config.coaps_port),
                    false => ("CoAP", config.coap_port),
                };
                let addr = SocketAddr::new(config.host, port);
                match e {
                    coap::BindError::Io(source) => StartError::Bind { what, addr, source },
                    coap::BindError::Dtls(e) => StartError::Coaps(e),
                }
            })?)
        };
        let http_at = SocketAddr::new(config.host, config.http_port);
        let bind_error = |source| StartError::Bind {
            what: "HTTP",
            addr: http_at,
            source,
        };
        let http = listen(http_at).map_err(bind_error)?;
        let http_addr = http.local_addr().map_err(bind_error)?;
        Ok(Listeners {
            coap,
            http,
            http_at,
            http_addr,
        })
    }

    /// The CoAP origin TD forms use, when CoAP runs (see [`coap_origin`]).
    fn coap_origin(&self, base_url: Option<&str>) -> Option<String> {
        let addr = self.coap.as_ref()?.addrs.first()?;
        Some(coap_origin(base_url, *addr))
    }

    fn coaps_runs(&self) -> bool {
        self.coap.as_ref().is_some_and(|b| !b.secure_addrs.is_empty())
    }

    /// The coaps origin TD forms use, when coaps runs.
    fn coaps_origin(&self, base_url: Option<&str>) -> Option<String> {
        let addr = self.coap.as_ref()?.secure_addrs.first()?;
        Some(scheme_origin("coaps", base_url, *addr))
    }
}

/// What the parts of a starting runtime share once its listeners are bound.
struct Parts {
    servient: Arc<Servient>,
    /// The things with their behaviours, and the TD publisher.
    host: Arc<Host>,
    /// `--base-url` without its trailing slash.
    base_url: Option<String>,
    coap_origin: Option<String>,
    coaps_origin: Option<String>,
    /// The id of the directory TD (`/.well-known/wot`, CoAP's too).
    directory_id: String,
    /// Turns true when the runtime stops: streams and sockets end.
    shutdown: watch::Sender<bool>,
}

/// Starts the HTTP server with the adapters it carries (WebSocket, legacy WebThings). On an
/// error, the legacy adapter and the things' behaviours are stopped again.
fn start_http(
    config: &Config,
    parts: &Parts,
    listener: TcpListener,
    addr: SocketAddr,
) -> Result<(actix_web::dev::Server, Legacy), StartError> {
    // SSE streams and sockets of every binding on the HTTP port count against one pool.
    let subscribers = crate::limits::Subscribers::new(config.subscribers);
    let state = HttpState {
        servient: parts.servient.clone(),
        publisher: parts.host.publisher.clone(),
        base_url: parts.base_url.clone(),
        coap_origin: parts.coap_origin.clone(),
        coaps_origin: parts.coaps_origin.clone(),
        directory_id: parts.directory_id.clone(),
        body_limit: config.body_limit,
        keepalive: config.sse_keepalive,
        shutdown: parts.shutdown.subscribe(),
        subscribers: subscribers.clone(),
        body_timeout: config.body_timeout,
    };
    let ws: http::Mount = Arc::new(ws::service(WsState {
        servient: parts.servient.clone(),
        shutdown: parts.shutdown.subscribe(),
        config: config.ws.clone(),
        subscribers: subscribers.clone(),
    }));
    let legacy = start_legacy(config, parts, subscribers);
    let mut mounts = vec![ws, Arc::new(legacy.configure())];
    for adapter in &config.adapters {
        mounts.push(adapter.mount(parts.servient.clone(), parts.shutdown.subscribe()));
    }
    let (security, timeouts) = (config.security.clone(), config.http_timeouts.clone());
    match http::start(state, listener, config.workers, mounts, security, timeouts) {
        Ok(server) => Ok((server, legacy)),
        Err(source) => {
            legacy.stop();
            parts.host.stop();
            Err(StartError::Bind {
                what: "HTTP",
                addr,
                source,
            })
        }
    }
}

/// Starts the legacy WebThings adapter, describing the HTTP port's security.
fn start_legacy(config: &Config, parts: &Parts, subscribers: crate::limits::Subscribers) -> Legacy {
    let http_security = config
        .security
        .auth
        .as_ref()
        .map(|a| a.td_security())
        .unwrap_or_else(crate::td::nosec);
    Legacy::start(
        parts.servient.clone(),
        parts.base_url.clone(),
        &http_security,
        subscribers,
        parts.shutdown.subscribe(),
        config.ws.ping_interval,
    )
}

/// Starts the CoAP loops on the bound sockets; they join the multicast groups when mDNS runs
/// (unless told not to), and serve what `access` allows.
fn start_coap(
    bound: coap::Bound,
    config: &Config,
    access: Access,
    parts: &Parts,
    http_addr: SocketAddr,
) -> CoapServer {
    // CoAP clients get the TD with the same origins an HTTP client of the bound address gets,
    // so both serve the same bytes.
    let origins = Origins {
        http: Some(
            parts
                .base_url
                .clone()
                .unwrap_or_else(|| origin("http", http_addr)),
        ),
        coap: parts.coap_origin.clone(),
        coaps: parts.coaps_origin.clone(),
    };
    let mut coap_config = CoapConfig {
        multicast: !config.no_mdns && !config.no_coap_multicast,
        ..config.coap.clone()
    };
    coap_config.engine.access = access;
    bound.start(
        coap_config,
        parts.servient.clone(),
        parts.host.publisher.clone(),
        origins,
        parts.directory_id.clone(),
        parts.shutdown.subscribe(),
    )
}

/// The TD publisher: forms of HTTP, WebSocket and (when it runs, with `coap_access`) CoAP, and
/// the security of `--auth` (opened CoAP forms naming theirs: none). `coaps`: coaps runs, with
/// the one PSK identity its forms name (none when there are several). `mqtt`: the MQTT forms.
fn publisher(
    config: &Config,
    coap_access: Option<Access>,
    coaps: Option<Option<String>>,
    mqtt: Option<MqttForms>,
) -> TdPublisher {
    let mut providers: Vec<Arc<dyn FormProvider>> = vec![Arc::new(HttpForms), Arc::new(WsForms)];
    if let Some(mqtt) = mqtt {
        providers.push(Arc::new(mqtt));
    }
    if let Some(access) = coap_access {
        providers.push(Arc::new(CoapForms::new(access)));
        if let Access::Restricted(open) = access {
            tracing::info!(
                read = open.read,
                observe = open.observe,
                "--auth is on and CoAP cannot check credentials: CoAP serves only what --coap-open opens; never writes or invocations"
            );
        }
    }
    providers.extend(config.adapters.iter().filter_map(|a| a.forms()));
    let publisher = TdPublisher::new(providers);
    let (mut definitions, security) = match &config.security.auth {
        Some(auth) => auth.td_security(),
        None if coaps.is_some() => crate::td::nosec(),
        None => return publisher,
    };
    // coaps forms name the pre-shared-key scheme (TD 1.1 PSKSecurityScheme).
    if let (Some(identity), Some(defs)) = (coaps, definitions.as_object_mut()) {
        let mut psk = json!({"scheme": "psk",
            "description": "CoAP over DTLS 1.2 with a pre-shared key (TLS_PSK_WITH_AES_128_CCM_8)"});
        if let Some(identity) = identity {
            psk["identity"] = json!(identity);
        }
        defs.insert(coap::access::PSK.into(), psk);
    }
    // Opened CoAP forms name the scheme they really have: none.
    if let (Some(name), Some(defs)) = (
        coap_access.and_then(Access::form_security),
        definitions.as_object_mut(),
    ) {
        defs.insert(name.into(), json!({"scheme": "nosec"}));
    }
    publisher.with_security(definitions, security)
}

/// Announces the things and keeps the announcements in step with them (hot reload). An
/// announcer that cannot start is logged: serving without announcements beats not serving.
fn start_mdns(
    config: &Config,
    servient: &Arc<Servient>,
    ports: discovery::Ports,
) -> Option<(Arc<Announcer>, JoinHandle<()>)> {
    let announcer = match announce(config, servient, ports) {
        Ok(announcer) => Arc::new(announcer),
        Err(e) => {
            tracing::error!("mDNS disabled: {e}");
            return None;
        }
    };
    let mut changes = servient.watch_changes();
    let follower = {
        let (announcer, servient) = (announcer.clone(), servient.clone());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                announcer.sync(plan(&servient, ports)).await;
            }
        })
    };
    Some((announcer, follower))
}

/// Starts announcing every thing of the servient (and the directory when there are several).
fn announce(
    config: &Config,
    servient: &Servient,
    ports: discovery::Ports,
) -> Result<Announcer, discovery::mdns::MdnsError> {
    let mdns = MdnsConfig {
        interfaces: config.mdns_interfaces.clone(),
        host: None,
        bound: Some(config.host),
    };
    Announcer::start(&mdns, plan(servient, ports))
}

/// What to announce for the things the servient exposes now.
fn plan(servient: &Servient, ports: discovery::Ports) -> Vec<discovery::records::Announcement> {
    let things: Vec<discovery::ThingInfo> = servient
        .things()
        .iter()
        .map(|t| discovery::ThingInfo {
            slug: t.slug.clone(),
            title: t.title().to_owned(),
            id: t.id.clone(),
        })
        .collect();
    discovery::records::plan(&things, ports, &discovery::mdns::system_host())
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Pending connections the HTTP listener queues before the kernel drops new SYNs. std's bind
/// queues 128; a burst (a hub opening a socket per thing, many browsers at once) overflowed that,
/// and each dropped SYN is retried only after 1, 3, 7... seconds. actix's own bind uses 1024.
const LISTEN_BACKLOG: i32 = 1024;

/// A TCP listener on `addr` with the runtime's backlog, like `TcpListener::bind` otherwise
/// (address reuse on, so a restart does not wait for old connections in TIME_WAIT).
///
/// Nagle's algorithm is off (`TCP_NODELAY`, which accepted connections inherit): the server
/// writes whole responses and whole frames, and holding back a small SSE event or WebSocket
/// notification until the previous one is acknowledged would add the client's delayed-ACK time
/// (up to 40 ms on Linux) to its latency. actix-web leaves the option as the socket has it.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coap_origin_follows_base_url_host() {
        let addr: SocketAddr = "0.0.0.0:5683".parse().unwrap();
        assert_eq!(coap_origin(None, addr), "coap://127.0.0.1:5683");
        assert_eq!(
            coap_origin(Some("http://lamp.example:8080"), addr),
            "coap://lamp.example:5683"
        );
        assert_eq!(
            coap_origin(Some("https://u@[2001:db8::1]:1/x"), addr),
            "coap://[2001:db8::1]:5683"
        );
    }

    /// Connections the server has not accepted yet wait in the backlog instead of having their
    /// SYNs dropped (each drop costs the client a retry a second or more later).
    #[test]
    fn the_listener_queues_a_burst_of_connections() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing accepts: every connection must find room in the queue. std's 128 would not do.
        let burst: Vec<_> = (0..600)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} was not queued: {e}"))
            })
            .collect();
        assert_eq!(burst.len(), 600);
    }

    #[test]
    fn accepted_connections_do_not_wait_for_acks_to_send() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY is inherited from the listener"
        );
    }
}
