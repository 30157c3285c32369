//! The thin tokio side of the CoAP binding: binds UDP sockets (IPv4, IPv6, and the multicast
//! groups), runs one loop per socket that feeds datagrams, core replies, notifications and
//! ticks into its sans-IO [`Engine`], and carries out the engine's effects (send, perform an
//! operation, forward a subscription). On the coaps port the same loop puts the sans-IO DTLS
//! [`Sessions`] between the socket and the engine: datagrams are opened before the engine sees
//! them, and everything the engine sends is sealed. No protocol decision is taken here.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::dtls::{Io, Sessions};
use super::engine::{Effects, Engine, Exchange, Pending};
use super::observe::ObserverId;
use crate::core::{Error, Received, Reply, Servient};

/// The IPv4 "All CoAP Nodes" group (RFC 7252 §12.8).
pub(crate) const ALL_COAP_NODES_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 1, 187);
/// The IPv6 link-local "All CoAP Nodes" group.
pub(crate) const ALL_COAP_NODES_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfd);

enum Event {
    Done(Box<(Exchange, Result<Reply, Error>)>),
    Slow {
        peer: SocketAddr,
        mid: u16,
        confirmable: bool,
    },
    Notify(ObserverId, Received),
}

/// Creates a UDP socket through socket2 so options can be set before `bind`.
fn udp(addr: SocketAddr, only_v6: bool, reuse: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    if reuse {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn into_tokio(socket: Socket) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(socket.into())
}

/// Binds `loops` sockets on one address with SO_REUSEPORT, so the kernel spreads clients over
/// several loops (one client's 4-tuple always reaches the same socket, so dedup, observers and
/// block-wise state stay consistent per engine). For port 0 a free port is found first with a
/// plain socket, so no other reuse-port socket can ever be handed the same port by the kernel.
fn bind_group(addr: SocketAddr, only_v6: bool, loops: usize) -> std::io::Result<Vec<UdpSocket>> {
    let prepare = |s: &Socket| {
        // Group datagrams go to the multicast sockets only.
        let _ = if addr.is_ipv4() {
            s.set_multicast_all_v4(false)
        } else {
            s.set_multicast_all_v6(false)
        };
    };
    if loops <= 1 {
        let s = udp(addr, only_v6, false)?;
        prepare(&s);
        s.bind(&addr.into())?;
        return Ok(vec![into_tokio(s)?]);
    }
    let mut last_error = None;
    for _ in 0..8 {
        let target = if addr.port() == 0 {
            let probe = udp(addr, only_v6, false)?;
            probe.bind(&addr.into())?;
            probe
                .local_addr()?
                .as_socket()
                .ok_or_else(|| std::io::Error::other("no socket address"))?
        } else {
            addr
        };
        let group: std::io::Result<Vec<UdpSocket>> = (0..loops)
            .map(|_| {
                let s = udp(target, only_v6, false)?;
                s.set_reuse_port(true)?;
                prepare(&s);
                s.bind(&target.into())?;
                into_tokio(s)
            })
            .collect();
        match group {
            Ok(g) => return Ok(g),
            // Another socket took the probed port in between: probe again.
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// Binds the unicast sockets for `host:port`: `loops` sockets on the address; for an
/// unspecified address also the other family's unspecified address on the same port
/// (IPv6-only, one socket), skipped with a warning when unavailable.
pub(crate) fn bind_unicast(host: IpAddr, port: u16, loops: usize) -> std::io::Result<Vec<UdpSocket>> {
    let first = SocketAddr::new(host, port);
    let mut out = bind_group(first, !host.is_unspecified(), loops)?;
    let bound = out[0].local_addr()?;
    if host.is_unspecified() {
        let other = if host.is_ipv4() {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bound.port())
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), bound.port())
        };
        match bind_group(other, true, 1) {
            Ok(s) => out.extend(s),
            Err(e) => tracing::warn!("CoAP: not listening on {other}: {e}"),
        }
    }
    Ok(out)
}

/// Binds sockets on the All-CoAP-Nodes groups (IPv4 and IPv6) at `port`. Each is bound to its
/// group address, so it receives only group traffic. Failures are logged, not fatal.
pub(crate) fn bind_multicast(port: u16) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    let v4 = (|| {
        let addr = SocketAddr::new(IpAddr::V4(ALL_COAP_NODES_V4), port);
        let s = udp(addr, false, true)?;
        s.join_multicast_v4(&ALL_COAP_NODES_V4, &Ipv4Addr::UNSPECIFIED)?;
        s.bind(&addr.into())?;
        into_tokio(s)
    })();
    match v4 {
        Ok(s) => out.push(s),
        Err(e) => tracing::warn!("CoAP: not joining {ALL_COAP_NODES_V4}: {e}"),
    }
    let v6 = (|| {
        let addr = SocketAddr::new(IpAddr::V6(ALL_COAP_NODES_V6), port);
        let s = udp(addr, true, true)?;
        s.join_multicast_v6(&ALL_COAP_NODES_V6, 0)?;
        s.bind(&SocketAddr::new(IpAddr::V6(ALL_COAP_NODES_V6), port).into())?;
        into_tokio(s)
    })();
    match v6 {
        Ok(s) => out.push(s),
        Err(e) => tracing::warn!("CoAP: not joining {ALL_COAP_NODES_V6}: {e}"),
    }
    out
}

/// Runs one socket's loop until `shutdown` turns true.
///
/// `reply` is the socket answers leave from (for a multicast socket: a unicast one, so the
/// answer's source is our unicast address, RFC 7252 §8.1).
///
/// `dtls`: the coaps port's sessions; datagrams in and out pass through them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_loop(
    socket: Arc<UdpSocket>,
    reply: Arc<UdpSocket>,
    multicast: bool,
    engine: Engine,
    dtls: Option<Sessions>,
    servient: Arc<Servient>,
    separate_after: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(
        socket,
        reply,
        multicast,
        engine,
        dtls,
        servient,
        separate_after,
        shutdown,
    ))
}

/// The DTLS layer of a coaps loop: its sessions and what they want sent.
struct Secure {
    sessions: Sessions,
    io: Io,
}

impl Secure {
    /// Opens a datagram from the socket: records go out, plaintext goes to the engine.
    async fn receive(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
        engine: &mut Engine,
        fx: &mut Effects,
        socket: &UdpSocket,
    ) {
        let now = Instant::now();
        self.sessions.on_datagram(peer, bytes, now, &mut self.io);
        for plain in self.io.plain.drain(..) {
            if plain.authenticated {
                engine.on_authenticated_datagram(plain.peer, &plain.bytes, now, fx);
            } else {
                engine.on_datagram(plain.peer, &plain.bytes, false, now, fx);
            }
        }
        self.flush(socket).await;
    }

    async fn flush(&mut self, socket: &UdpSocket) {
        for (peer, bytes) in self.io.wire.drain(..) {
            if let Err(e) = socket.send_to(&bytes, peer).await {
                tracing::debug!("coaps send to {peer}: {e}");
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    socket: Arc<UdpSocket>,
    reply: Arc<UdpSocket>,
    multicast: bool,
    mut engine: Engine,
    dtls: Option<Sessions>,
    servient: Arc<Servient>,
    separate_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut secure = dtls.map(|sessions| Secure {
        sessions,
        io: Io::default(),
    });
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let mut buf = vec![0u8; 65_536];
    let mut fx = Effects::default();
    let mut watchers: HashMap<ObserverId, AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => match &mut secure {
                    Some(secure) => secure.receive(peer, &buf[..n], &mut engine, &mut fx, &reply).await,
                    None => engine.on_datagram(peer, &buf[..n], multicast, Instant::now(), &mut fx),
                },
                // ICMP errors from earlier sends surface here (e.g. ECONNREFUSED); keep serving.
                Err(e) => {
                    tracing::debug!("CoAP recv: {e}");
                    continue;
                }
            },
            Some(event) = rx.recv() => match event {
                Event::Done(done) => {
                    let (exchange, result) = *done;
                    engine.on_done(exchange, result, Instant::now(), &mut fx)
                }
                Event::Slow { peer, mid, confirmable } => engine.on_slow(peer, mid, confirmable, &mut fx),
                Event::Notify(id, received) => engine.on_notification(id, received, Instant::now(), &mut fx),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(secure) = &mut secure {
                    secure.sessions.on_tick(now, &mut secure.io);
                    secure.flush(&reply).await;
                }
                engine.on_tick(now, &mut fx)
            }
        }
        apply(
            &mut engine,
            &mut fx,
            &mut secure,
            &reply,
            &servient,
            &tx,
            &mut watchers,
            separate_after,
        )
        .await;
    }
    for (_, handle) in watchers {
        handle.abort();
    }
}

/// Carries out the engine's effects until there are none left.
#[allow(clippy::too_many_arguments)]
async fn apply(
    engine: &mut Engine,
    fx: &mut Effects,
    secure: &mut Option<Secure>,
    socket: &Arc<UdpSocket>,
    servient: &Arc<Servient>,
    tx: &mpsc::Sender<Event>,
    watchers: &mut HashMap<ObserverId, AbortHandle>,
    separate_after: Duration,
) {
    while !fx.is_empty() {
        match secure {
            Some(secure) => {
                let now = Instant::now();
                for (peer, bytes) in fx.send.drain(..) {
                    // A peer without a session gets nothing; its CON times out in the engine.
                    secure.sessions.seal(peer, &bytes, now, &mut secure.io);
                }
                secure.flush(socket).await;
            }
            None => {
                for (peer, bytes) in fx.send.drain(..) {
                    if let Err(e) = socket.send_to(&bytes, peer).await {
                        tracing::debug!("CoAP send to {peer}: {e}");
                    }
                }
            }
        }
        for (delay, peer, bytes) in fx.send_later.drain(..) {
            // Multicast answers are rare and small: a short-lived task per answer.
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&bytes, peer).await;
            });
        }
        for id in fx.unwatch.drain(..) {
            if let Some(handle) = watchers.remove(&id) {
                handle.abort();
            }
        }
        for (id, mut subscription) in fx.watch.drain(..) {
            let tx = tx.clone();
            let task = tokio::spawn(async move {
                loop {
                    let received = subscription.recv().await;
                    let closed = matches!(received, Received::Closed(_));
                    if tx.send(Event::Notify(id, received)).await.is_err() || closed {
                        break;
                    }
                }
            });
            if let Some(old) = watchers.insert(id, task.abort_handle()) {
                old.abort();
            }
        }
        let perform: Vec<Pending> = fx.perform.drain(..).collect();
        for Pending { slug, op, exchange } in perform {
            let servient = servient.clone();
            let mut future = Box::pin(async move { servient.handle(&slug, op).await });
            // Most operations finish without waiting: answer them in this loop, piggybacked.
            match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => engine.on_done(exchange, result, Instant::now(), fx),
                Poll::Pending => {
                    let tx = tx.clone();
                    let mut exchange = Box::new(exchange);
                    tokio::spawn(async move {
                        let result = tokio::select! {
                            r = &mut future => r,
                            _ = tokio::time::sleep(separate_after) => {
                                let slow = Event::Slow {
                                    peer: exchange.peer,
                                    mid: exchange.mid(),
                                    confirmable: exchange.confirmable(),
                                };
                                let _ = tx.send(slow).await;
                                exchange.mark_acked();
                                future.await
                            }
                        };
                        let _ = tx.send(Event::Done(Box::new((*exchange, result)))).await;
                    });
                }
            }
        }
    }
}
