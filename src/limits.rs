//! Limits on long-lived subscriptions (SSE streams and WebSockets, one shared pool): at most so
//! many per client address and in total. A [`Permit`] is held for the life of a stream and frees its slot when
//! dropped, so a stream that ends in any way (client gone, shutdown, error) gives its slot back.
//! Open connections of the HTTP port are counted the same way ([`Connections`]).
//! Plain counting: no I/O, no protocol.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many SSE streams and WebSockets (one pool) may be open: per client address (one more is
/// answered 429) and in total (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberLimits {
    /// Open at once per client address; one more is answered 429.
    pub per_client: usize,
    /// Open at once in all; one more is answered 503.
    pub total: usize,
}

impl Default for SubscriberLimits {
    fn default() -> Self {
        SubscriberLimits {
            per_client: 64,
            total: 4096,
        }
    }
}

/// Which limit a refused subscription hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    /// This client holds `per_client` subscriptions already (HTTP 429).
    PerClient(usize),
    /// The server holds `total` subscriptions already (HTTP 503).
    Total(usize),
}

impl LimitHit {
    /// The HTTP status a refused upgrade or stream answers with: 429 for this client's limit,
    /// 503 for the server's (both with `Retry-After`).
    pub(crate) fn http_status(self) -> u16 {
        match self {
            LimitHit::PerClient(_) => 429,
            LimitHit::Total(_) => 503,
        }
    }
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::PerClient(n) => {
                write!(
                    f,
                    "this client already holds {n} open streams and sockets; close one first"
                )
            }
            LimitHit::Total(n) => {
                write!(
                    f,
                    "the server already serves {n} open streams and sockets; try again later"
                )
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Counts open subscriptions.
#[derive(Debug, Clone)]
pub(crate) struct Subscribers {
    limits: SubscriberLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One open subscription; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit {
    client: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

impl Subscribers {
    pub(crate) fn new(limits: SubscriberLimits) -> Self {
        Subscribers {
            limits,
            counts: Arc::default(),
        }
    }

    pub(crate) fn try_open(&self, client: IpAddr) -> Result<Permit, LimitHit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.limits.total {
            return Err(LimitHit::Total(self.limits.total));
        }
        let mine = counts.per_client.entry(client).or_insert(0);
        if *mine >= self.limits.per_client {
            return Err(LimitHit::PerClient(self.limits.per_client));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Permit {
            client,
            counts: self.counts.clone(),
        })
    }

    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Counts open connections of the HTTP port against a maximum. A connection over it is still
/// accepted (so it can be told, with 503 and `Retry-After`, rather than left hanging in the
/// accept backlog) but is not counted and gets nothing else.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    max: usize,
    open: Arc<AtomicUsize>,
}

/// One accepted connection; dropping it, and every clone of it (the connection closed), frees
/// its slot. Clones exist so that whoever takes a connection over after an upgrade can hold the
/// slot as long as the connection lasts.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlot(std::rc::Rc<Admission>);

#[derive(Debug)]
struct Admission {
    admitted: bool,
    open: Arc<AtomicUsize>,
}

impl ConnectionSlot {
    pub(crate) fn admitted(&self) -> bool {
        self.0.admitted
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.admitted {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Connections {
            max,
            open: Arc::default(),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection: admitted while fewer than `max` are open.
    pub(crate) fn admit(&self) -> ConnectionSlot {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        ConnectionSlot(std::rc::Rc::new(Admission {
            admitted,
            open: self.open.clone(),
        }))
    }

    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_limits_and_release_on_drop() {
        let subs = Subscribers::new(SubscriberLimits {
            per_client: 2,
            total: 3,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = subs.try_open(a).unwrap();
        let _a2 = subs.try_open(a).unwrap();
        assert_eq!(subs.try_open(a).unwrap_err(), LimitHit::PerClient(2));
        let _b1 = subs.try_open(b).unwrap();
        assert_eq!(subs.try_open(b).unwrap_err(), LimitHit::Total(3));
        drop(a1);
        assert_eq!(subs.open(), 2);
        assert!(subs.try_open(b).is_ok());
    }

    #[test]
    fn connections_over_the_maximum_are_not_admitted_and_slots_come_back() {
        let connections = Connections::new(2);
        let a = connections.admit();
        let b = connections.admit();
        let c = connections.admit();
        assert!(a.admitted() && b.admitted() && !c.admitted());
        drop(c);
        assert_eq!(connections.open(), 2, "a refused connection holds no slot");
        drop(a);
        assert!(connections.admit().admitted());
    }
}
