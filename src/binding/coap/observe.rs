//! Observers (RFC 7641) as plain data: who observes what, keyed by (endpoint, token), with the
//! 24-bit sequence number of each observation, when it last got a confirmable notification,
//! and limits per endpoint and in total. Also the outbox of our own confirmable messages
//! (CON notifications and separate responses) with RFC 7252 §4.2 retransmission and give-up.
//!
//! No sockets, no tasks, no clock of its own: callers pass `now`. What an observer receives is
//! decided by the engine; this module only keeps the books.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::content::Format;
use crate::core::Target;

pub(crate) type ObserverId = u64;

/// One observation.
#[derive(Debug, Clone)]
pub(crate) struct Observer {
    pub(crate) id: ObserverId,
    pub(crate) peer: SocketAddr,
    pub(crate) token: Vec<u8>,
    pub(crate) slug: String,
    pub(crate) target: Target,
    pub(crate) format: Format,
    seq: u32,
    pub(crate) last_con: Instant,
    /// The message ID of our unacknowledged CON notification, if any.
    pub(crate) outstanding: Option<u16>,
}

impl Observer {
    /// The next Observe value: 24 bits, increasing, wrapping (RFC 7641 §4.4).
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0x00ff_ffff;
        self.seq
    }
}

/// How many observations the engine keeps, and how often it checks that an observer is there.
#[derive(Debug, Clone, Copy)]
pub struct ObserverLimits {
    /// Observations at most, over all clients.
    pub total: usize,
    /// Observations at most per client endpoint (more are answered without Observe).
    pub per_peer: usize,
    /// A confirmable notification at least this often, so gone clients are found (RFC 7641
    /// §4.5 requires at least one every 24 hours).
    pub con_interval: Duration,
}

impl Default for ObserverLimits {
    fn default() -> Self {
        ObserverLimits {
            total: 4096,
            per_peer: 16,
            con_interval: Duration::from_secs(30),
        }
    }
}

/// Why an observer was not added; the request is then answered without Observe (§4.1).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// The observer list.
#[derive(Debug, Default)]
pub(crate) struct Observers {
    limits: ObserverLimits,
    by_key: HashMap<(SocketAddr, Vec<u8>), ObserverId>,
    by_id: HashMap<ObserverId, Observer>,
    per_peer: HashMap<SocketAddr, usize>,
    next_id: ObserverId,
}

impl Observers {
    pub(crate) fn new(limits: ObserverLimits) -> Self {
        Observers {
            limits,
            ..Default::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: ObserverId) -> Option<&Observer> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ObserverId) -> Option<&mut Observer> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn find(&self, peer: SocketAddr, token: &[u8]) -> Option<ObserverId> {
        self.by_key.get(&(peer, token.to_vec())).copied()
    }

    /// Adds an observer. The same (endpoint, token) replaces its earlier entry (§4.1), whose id
    /// is returned second so its forwarding can stop.
    pub(crate) fn register(
        &mut self,
        peer: SocketAddr,
        token: &[u8],
        slug: &str,
        target: Target,
        format: Format,
        now: Instant,
    ) -> Result<(ObserverId, Option<ObserverId>), Full> {
        let replaced = self
            .find(peer, token)
            .and_then(|old| self.remove(old))
            .map(|o| o.id);
        let mine = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.by_id.len() >= self.limits.total || mine >= self.limits.per_peer {
            return Err(Full);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_key.insert((peer, token.to_vec()), id);
        *self.per_peer.entry(peer).or_default() += 1;
        self.by_id.insert(
            id,
            Observer {
                id,
                peer,
                token: token.to_vec(),
                slug: slug.to_owned(),
                target,
                format,
                seq: 1,
                last_con: now,
                outstanding: None,
            },
        );
        Ok((id, replaced))
    }

    pub(crate) fn remove(&mut self, id: ObserverId) -> Option<Observer> {
        let observer = self.by_id.remove(&id)?;
        self.by_key.remove(&(observer.peer, observer.token.clone()));
        if let Some(n) = self.per_peer.get_mut(&observer.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&observer.peer);
            }
        }
        Some(observer)
    }

    /// Whether the next notification to this observer should be confirmable.
    pub(crate) fn wants_con(&self, id: ObserverId, now: Instant) -> bool {
        self.by_id.get(&id).is_some_and(|o| {
            o.outstanding.is_some() || now.saturating_duration_since(o.last_con) >= self.limits.con_interval
        })
    }
}

/// RFC 7252 §4.8 transmission parameters.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const MAX_RETRANSMIT: u32 = 4;

/// Who a confirmable message of ours belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Observer(ObserverId),
    Separate,
}

#[derive(Debug)]
struct Outstanding {
    peer: SocketAddr,
    bytes: Bytes,
    attempts: u32,
    timeout: Duration,
    next_at: Instant,
    owner: Owner,
}

/// What the outbox decided on a tick.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Resend(SocketAddr, Bytes),
    GiveUp(Owner),
}

/// Our confirmable messages awaiting an ACK, bounded, with exponential back-off. Also
/// remembers recent non-confirmable notifications so an RST to one ends its observation.
#[derive(Debug)]
pub(crate) struct Outbox {
    capacity: usize,
    pending: HashMap<u16, Outstanding>,
    recent_non: HashMap<(SocketAddr, u16), ObserverId>,
    recent_order: VecDeque<(SocketAddr, u16)>,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Outbox {
            capacity: capacity.max(1),
            pending: HashMap::new(),
            recent_non: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn has_room(&self) -> bool {
        self.pending.len() < self.capacity
    }

    /// Tracks a CON we just sent. The first timeout is ACK_TIMEOUT scaled by a factor in
    /// [1, 1.5), derived from the message ID so tests stay deterministic.
    pub(crate) fn track(&mut self, mid: u16, peer: SocketAddr, bytes: Bytes, owner: Owner, now: Instant) {
        let jitter = ACK_TIMEOUT.mul_f64(f64::from(mid % 500) / 1000.0);
        let timeout = ACK_TIMEOUT + jitter;
        self.pending.insert(
            mid,
            Outstanding {
                peer,
                bytes,
                attempts: 0,
                timeout,
                next_at: now + timeout,
                owner,
            },
        );
    }

    /// Replaces an outstanding message with a newer one (RFC 7641 §4.5.2), keeping its
    /// retransmission count so a gone client is still given up on in time.
    pub(crate) fn supersede(&mut self, old: u16, mid: u16, bytes: Bytes, now: Instant) -> bool {
        let Some(mut o) = self.pending.remove(&old) else {
            return false;
        };
        o.bytes = bytes;
        o.next_at = now + o.timeout;
        self.pending.insert(mid, o);
        true
    }

    /// An ACK or RST for one of ours: who it belonged to.
    pub(crate) fn settle(&mut self, peer: SocketAddr, mid: u16) -> Option<Owner> {
        match self.pending.get(&mid) {
            Some(o) if o.peer == peer => self.pending.remove(&mid).map(|o| o.owner),
            _ => None,
        }
    }

    /// Records a NON notification so a later RST can be matched to its observer.
    pub(crate) fn sent_non(&mut self, peer: SocketAddr, mid: u16, id: ObserverId) {
        if self.recent_order.len() >= self.capacity
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent_non.remove(&old);
        }
        if self.recent_non.insert((peer, mid), id).is_none() {
            self.recent_order.push_back((peer, mid));
        }
    }

    pub(crate) fn non_owner(&mut self, peer: SocketAddr, mid: u16) -> Option<ObserverId> {
        self.recent_non.remove(&(peer, mid))
    }

    /// Retransmissions and give-ups due at `now`.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (mid, o) in self.pending.iter_mut() {
            if o.next_at > now {
                continue;
            }
            if o.attempts >= MAX_RETRANSMIT {
                gone.push(*mid);
                continue;
            }
            o.attempts += 1;
            o.timeout *= 2;
            o.next_at = now + o.timeout;
            out.push(Due::Resend(o.peer, o.bytes.clone()));
        }
        for mid in gone {
            if let Some(o) = self.pending.remove(&mid) {
                out.push(Due::GiveUp(o.owner));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn register_replace_and_limits() {
        let now = Instant::now();
        let limits = ObserverLimits {
            total: 3,
            per_peer: 2,
            con_interval: Duration::from_secs(10),
        };
        let mut obs = Observers::new(limits);
        let t = || Target::Property("on".into());
        let (a, none) = obs
            .register(peer(1), b"t1", "lamp", t(), Format::Json, now)
            .unwrap();
        assert!(none.is_none());
        let (b, replaced) = obs
            .register(peer(1), b"t1", "lamp", t(), Format::Json, now)
            .unwrap();
        assert_eq!(replaced, Some(a));
        assert_ne!(a, b);
        obs.register(peer(1), b"t2", "lamp", t(), Format::Json, now)
            .unwrap();
        assert_eq!(
            obs.register(peer(1), b"t3", "lamp", t(), Format::Json, now),
            Err(Full)
        );
        obs.register(peer(2), b"t1", "lamp", t(), Format::Json, now)
            .unwrap();
        assert_eq!(
            obs.register(peer(3), b"t1", "lamp", t(), Format::Json, now),
            Err(Full)
        );
        assert_eq!(obs.len(), 3);
        assert!(obs.remove(b).is_some());
        assert_eq!(obs.find(peer(1), b"t1"), None);
        assert!(!obs.wants_con(obs.find(peer(2), b"t1").unwrap(), now));
        assert!(obs.wants_con(obs.find(peer(2), b"t1").unwrap(), now + Duration::from_secs(10)));
    }

    #[test]
    fn sequence_is_24_bit() {
        let mut obs = Observers::new(ObserverLimits::default());
        let now = Instant::now();
        let (id, _) = obs
            .register(peer(1), b"t", "x", Target::AllEvents, Format::Json, now)
            .unwrap();
        let o = obs.get_mut(id).unwrap();
        let first = o.next_seq();
        assert!(o.next_seq() > first);
        o.seq = 0x00ff_ffff;
        assert_eq!(o.next_seq(), 0);
    }

    #[test]
    fn retransmits_then_gives_up() {
        let mut outbox = Outbox::new(8);
        let mut now = Instant::now();
        outbox.track(1, peer(1), Bytes::from_static(b"x"), Owner::Observer(7), now);
        let mut resent = 0;
        loop {
            now += Duration::from_secs(100);
            match outbox.tick(now).pop() {
                Some(Due::Resend(..)) => resent += 1,
                Some(Due::GiveUp(owner)) => {
                    assert_eq!(owner, Owner::Observer(7));
                    break;
                }
                None => panic!("nothing due"),
            }
        }
        assert_eq!(resent, MAX_RETRANSMIT);
        assert!(outbox.is_empty());
        outbox.track(2, peer(1), Bytes::from_static(b"x"), Owner::Separate, now);
        assert_eq!(outbox.settle(peer(2), 2), None, "wrong endpoint");
        assert_eq!(outbox.settle(peer(1), 2), Some(Owner::Separate));
        for mid in 0..100 {
            outbox.sent_non(peer(1), mid, 1);
        }
        assert!(outbox.recent_non.len() <= 8);
        assert_eq!(outbox.non_owner(peer(1), 99), Some(1));
    }
}
