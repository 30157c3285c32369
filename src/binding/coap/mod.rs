//! The CoAP binding (RFC 7252, RFC 7641 Observe, RFC 7959 Block-wise, RFC 6690 link format):
//! the URL contract of DESIGN.md §1.3 for constrained-network clients, over the same core as
//! HTTP.
//!
//! The protocol lives in sans-IO modules (plain data and functions taking `now`): `message`
//! (format checks, dedup, responses), `block`, `observe`, `content`, `router`, `link_format`,
//! tied together by `engine`. `server` is the thin tokio socket loop; `forms` describes the
//! binding in TDs. `coaps://` (RFC 7252 §9) is the same engine behind the sans-IO DTLS layer
//! `dtls`, on its own port and loops. It must not reach into another binding or keep thing state
//! of its own.
//!
//! As library API: [`CoapConfig`] (with the engine's limits, what [`Opened`] serves under
//! `--auth`, and the coaps keys, certificate and limits in [`DtlsConfig`]) and the binding's
//! [`CoapForms`].

pub(crate) mod access;
pub(crate) mod block;
pub(crate) mod content;
pub(crate) mod dtls;
pub(crate) mod engine;
pub(crate) mod forms;
#[cfg(test)]
mod fuzz;
pub(crate) mod link_format;
pub(crate) mod message;
pub(crate) mod observe;
pub(crate) mod router;
pub(crate) mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::Servient;
use crate::td::{Origins, TdPublisher};
pub use access::{Opened, OpenedError};
pub use block::Block1Limits;
pub use dtls::{CertificateError, DtlsConfig, DtlsLimits, DtlsSetupError, Psk, PskError, ServerCertificate};
pub(crate) use engine::Engine;
pub use engine::EngineConfig;
pub use forms::CoapForms;
pub use observe::ObserverLimits;

/// How the CoAP server runs.
#[derive(Debug, Clone)]
pub struct CoapConfig {
    /// The protocol engine's limits and timings.
    pub engine: EngineConfig,
    /// An operation still running after this long is acknowledged with an empty ACK and
    /// answered later by a separate CON response (RFC 7252 §5.2.2).
    pub separate_after: Duration,
    /// Join the All-CoAP-Nodes groups (224.0.1.187, ff02::fd) and answer `/.well-known/core`.
    pub multicast: bool,
    /// Socket loops on the main address (SO_REUSEPORT), default one per core.
    pub loops: usize,
    /// What CoAP serves to anyone while `--auth` is on (nothing by default); the runtime turns
    /// it into `engine.access`.
    pub open: access::Opened,
    /// The coaps (DTLS) port's keys, certificate and limits; coaps runs when there is a key.
    pub dtls: DtlsConfig,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            engine: EngineConfig::default(),
            separate_after: Duration::from_millis(1000),
            multicast: false,
            loops: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            open: access::Opened::default(),
            dtls: DtlsConfig::default(),
        }
    }
}

/// A running CoAP server.
pub(crate) struct CoapServer {
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the unicast sockets before anything starts, so the port is known for TD origins.
pub(crate) struct Bound {
    sockets: Vec<tokio::net::UdpSocket>,
    pub(crate) addrs: Vec<SocketAddr>,
    /// The coaps port's sockets, each with its DTLS sessions.
    secure: Vec<(tokio::net::UdpSocket, dtls::Sessions)>,
    /// The coaps port's addresses (empty when coaps does not run).
    pub(crate) secure_addrs: Vec<SocketAddr>,
}

/// Why the CoAP ports could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Dtls(#[from] DtlsSetupError),
}

/// `loops`: sockets (each with its own loop and engine) sharing the port via SO_REUSEPORT.
/// With `secure` (the coaps port and its DTLS configuration), as many again on that port; a
/// certificate that fails [`ServerCertificate::check`] is left out with one warning (PSK only).
pub(crate) fn bind(
    host: IpAddr,
    port: u16,
    loops: usize,
    secure: Option<(u16, &DtlsConfig)>,
) -> Result<Bound, (bool, BindError)> {
    let addrs_of = |sockets: &[tokio::net::UdpSocket]| {
        sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<std::io::Result<Vec<_>>>()
    };
    let plain = |e: std::io::Error| (false, BindError::Io(e));
    let sockets = server::bind_unicast(host, port, loops).map_err(plain)?;
    let addrs = addrs_of(&sockets).map_err(plain)?;
    let mut bound = Bound {
        sockets,
        addrs,
        secure: Vec::new(),
        secure_addrs: Vec::new(),
    };
    if let Some((secure_port, cfg)) = secure {
        let failed = |e: BindError| (true, e);
        let checked;
        let cfg = match &cfg.certificate {
            Some(certificate) => match certificate.check() {
                Ok(()) => cfg,
                Err(e) => {
                    tracing::warn!(
                        "coaps: PSK only, no certificate mode: the HTTPS certificate cannot serve DTLS ({e})"
                    );
                    checked = DtlsConfig {
                        certificate: None,
                        ..cfg.clone()
                    };
                    &checked
                }
            },
            None => cfg,
        };
        let sockets = server::bind_unicast(host, secure_port, loops).map_err(|e| failed(e.into()))?;
        bound.secure_addrs = addrs_of(&sockets).map_err(|e| failed(e.into()))?;
        for socket in sockets {
            let sessions = dtls::Sessions::new(cfg).map_err(|e| failed(e.into()))?;
            bound.secure.push((socket, sessions));
        }
    }
    Ok(bound)
}

impl Bound {
    /// Starts one loop per socket (and per multicast group when enabled).
    pub(crate) fn start(
        self,
        config: CoapConfig,
        servient: Arc<Servient>,
        publisher: Arc<TdPublisher>,
        origins: Origins,
        directory_id: String,
        shutdown: watch::Receiver<bool>,
    ) -> CoapServer {
        let engine = || {
            Engine::new(
                config.engine.clone(),
                servient.clone(),
                publisher.clone(),
                origins.clone(),
                directory_id.clone(),
            )
        };
        let mut tasks = Vec::new();
        let port = self.addrs.first().map(|a| a.port()).unwrap_or(0);
        let unicast: Vec<Arc<tokio::net::UdpSocket>> = self.sockets.into_iter().map(Arc::new).collect();
        for socket in &unicast {
            tasks.push(server::spawn_loop(
                socket.clone(),
                socket.clone(),
                false,
                engine(),
                None,
                servient.clone(),
                config.separate_after,
                shutdown.clone(),
            ));
        }
        for (socket, sessions) in self.secure {
            let socket = Arc::new(socket);
            tasks.push(server::spawn_loop(
                socket.clone(),
                socket,
                false,
                engine(),
                Some(sessions),
                servient.clone(),
                config.separate_after,
                shutdown.clone(),
            ));
        }
        if config.multicast {
            for group in server::bind_multicast(port) {
                let is_v4 = group.local_addr().is_ok_and(|a| a.is_ipv4());
                let reply = unicast
                    .iter()
                    .find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == is_v4))
                    .cloned();
                let Some(reply) = reply else {
                    continue;
                };
                tasks.push(server::spawn_loop(
                    Arc::new(group),
                    reply,
                    true,
                    engine(),
                    None,
                    servient.clone(),
                    config.separate_after,
                    shutdown.clone(),
                ));
            }
        }
        CoapServer { tasks }
    }
}

impl CoapServer {
    /// Waits for every loop to end (after `shutdown` turned true).
    pub(crate) async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
