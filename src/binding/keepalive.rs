//! The keepalive clock of a WebSocket, sans-IO: when to ping a silent peer and when to give it
//! up as dead. Both WebSocket endpoints (the Web Thing Protocol and the legacy `/webthing/`) run
//! one per socket; it is plain data and functions taking `now`, and it sends nothing itself.
//! [`Keepalive::ticker`] makes the timer a socket task consults it on.

use std::time::{Duration, Instant};

/// What the keepalive clock asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    Nothing,
    Ping,
    /// Nothing was heard for the whole timeout: the peer is gone.
    Dead,
}

/// Sends a ping after `interval` of silence; declares the peer dead after `timeout` (at least
/// one ping went unanswered). Anything received counts as a sign of life.
#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    last_heard: Instant,
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, now: Instant) -> Self {
        Keepalive {
            interval,
            timeout: interval.saturating_mul(2),
            last_heard: now,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// How often the clock is consulted: twice per interval, so a ping goes out at most half an
    /// interval late.
    pub(crate) fn check_period(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(10))
    }

    /// How long after the connection starts the clock is consulted first: one period, plus
    /// `phase` (0 to 1) of another. Connections that arrive together (a hub reconnecting all its
    /// sockets) are given different phases, so that they are not all checked and pinged in the
    /// same instant every period.
    pub(crate) fn first_check(&self, phase: f64) -> Duration {
        let period = self.check_period();
        period + period.mul_f64(phase.clamp(0.0, 1.0))
    }

    /// The timer on which a socket task consults this clock: first after a random phase (see
    /// [`Keepalive::first_check`]), then every [`Keepalive::check_period`]; late ticks are not
    /// bunched up. Must be called inside a tokio runtime.
    pub(crate) fn ticker(&self) -> tokio::time::Interval {
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.first_check(rand::random::<f64>()),
            self.check_period(),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    /// The close reason given to a peer found dead.
    pub(crate) fn dead_reason(&self) -> String {
        format!("keepalive: nothing heard for {} s", self.timeout.as_secs_f32())
    }

    /// A zero interval switches keepalive off.
    pub(crate) fn tick(&self, now: Instant) -> Tick {
        if self.interval.is_zero() {
            return Tick::Nothing;
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.timeout {
            Tick::Dead
        } else if silent >= self.interval {
            Tick::Ping
        } else {
            Tick::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_pings_then_declares_dead() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Duration::from_secs(10), t0);
        assert_eq!(k.tick(t0 + Duration::from_secs(5)), Tick::Nothing);
        assert_eq!(k.tick(t0 + Duration::from_secs(10)), Tick::Ping);
        k.heard(t0 + Duration::from_secs(12));
        assert_eq!(k.tick(t0 + Duration::from_secs(20)), Tick::Nothing);
        assert_eq!(k.tick(t0 + Duration::from_secs(22)), Tick::Ping);
        assert_eq!(k.tick(t0 + Duration::from_secs(32)), Tick::Dead);
        // A clock that goes backwards is not a reason to close.
        assert_eq!(k.tick(t0), Tick::Nothing);
        let off = Keepalive::new(Duration::ZERO, t0);
        assert_eq!(off.tick(t0 + Duration::from_secs(3600)), Tick::Nothing);
    }

    #[test]
    fn keepalive_checks_start_at_a_phase_within_one_period() {
        let k = Keepalive::new(Duration::from_secs(30), Instant::now());
        assert_eq!(k.check_period(), Duration::from_secs(15));
        assert_eq!(k.first_check(0.0), Duration::from_secs(15));
        assert_eq!(k.first_check(0.5), Duration::from_millis(22_500));
        assert_eq!(
            k.first_check(7.0),
            Duration::from_secs(30),
            "phase is clamped to one period"
        );
        // With the latest phase, a silent peer is still pinged within 1.5 intervals and closed
        // within 2.5: each check after the first is one period later.
        let latest_ping = k.first_check(1.0) + k.check_period();
        assert!(latest_ping <= k.interval * 3 / 2);
        // Tiny intervals are checked no more often than every 10 ms.
        let fast = Keepalive::new(Duration::from_millis(4), Instant::now());
        assert_eq!(fast.check_period(), Duration::from_millis(10));
    }
}
