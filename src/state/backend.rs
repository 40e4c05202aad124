//! Per-backend state shared by every snapshot that contains the backend: in-flight count, health
//! state, passive-failure counters, ejection, slow-start clock and request counters. It lives in an
//! `Arc` keyed by `(upstream, address)` in the [`Registry`](super::registry::Registry), so a reload carries it over untouched.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Mutex};

use crate::util::time::process_ms;
use std::time::Duration;

/// A backend's health: whether it may take new requests, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Serving traffic.
    Up = 0,
    /// Failed its active health check.
    Down = 1,
    /// Passively ejected after consecutive failures; returns when the ejection expires.
    Ejected = 2,
    /// Newly added to a health-checked upstream; waits for its first passing check.
    Checking = 3,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Up,
            1 => Health::Down,
            2 => Health::Ejected,
            _ => Health::Checking,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Ejected => "ejected",
            Health::Checking => "checking",
        }
    }
}

/// Keeps the hot in-flight counter on its own cache line, away from rarely written fields.
#[repr(align(64))]
#[derive(Default, Debug)]
struct Padded(AtomicU64);

/// Set in the state byte once the backend is removed from the config: it is then never usable,
/// not even through an older snapshot that still lists it (e.g. a retry of a request that loaded
/// the snapshot before the reload), while its health state stays readable.
const DRAINING_BIT: u8 = 0x80;

/// A balancer's place in its weighted order, shared by every snapshot of one upstream so that a
/// rebuild continues the sequence instead of restarting it.
#[derive(Default, Debug)]
pub struct Position(Padded);

impl Position {
    /// The position for this pick (and advances it).
    #[inline]
    pub fn next(&self) -> u64 {
        self.0 .0.fetch_add(1, Relaxed)
    }
}

/// Per-upstream state shared by every snapshot: the balancer position, the lock that makes a
/// passive ejection's `max_ejected_percent` check and the ejection itself one step, and the
/// stats of lb's own answers for the upstream (`backend=""`).
#[derive(Default)]
pub struct UpstreamState {
    pub position: Position,
    pub ejection: Mutex<()>,
    pub own: Arc<crate::state::stats::RequestStats>,
    /// A structure a higher layer derives from the upstream's backends and keeps across
    /// rebuilds while they stay the same (the consistent-hash ring), checked by fingerprint.
    pub derived: Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Copies of other routes' requests (`routes[i].mirror`) in progress to this upstream.
    pub mirror_in_flight: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for UpstreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamState")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// Shared, lock-free state of one backend.
#[derive(Debug)]
pub struct BackendState {
    in_flight: Padded,
    state: AtomicU8,
    /// Consecutive passive failures (connect errors, timeouts, resets; 5xx when configured).
    pub(crate) passive_failures: AtomicU32,
    /// How many times in a row it was ejected (ejection time doubles each time).
    pub(crate) ejections: AtomicU32,
    /// Milliseconds since [`process_ms`] when the backend last became usable (slow-start clock).
    pub(crate) up_since_ms: AtomicU64,
    /// When the last ejection ended (process ms); 0 = never ejected.
    pub(crate) returned_at_ms: AtomicU64,
    /// Attempts sent to this backend (retries and resends included).
    pub(crate) attempts: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) latency: crate::state::latency::LatencyWindow,
    /// Answers from this backend, by status code, and their durations.
    pub stats: crate::state::stats::RequestStats,
    /// Active-check bookkeeping, touched only by the checker task.
    pub(crate) check: Mutex<CheckCounters>,
}

#[derive(Debug, Default, Clone)]
pub struct CheckCounters {
    pub passes: u32,
    pub failures: u32,
    pub last_error: Option<String>,
}

impl BackendState {
    pub fn new(initial: Health) -> Self {
        BackendState {
            in_flight: Padded::default(),
            state: AtomicU8::new(initial as u8),
            passive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            up_since_ms: AtomicU64::new(0),
            returned_at_ms: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            check: Mutex::new(CheckCounters::default()),
            latency: Default::default(),
            stats: Default::default(),
        }
    }

    /// The health state (`draining` aside: see [`status`](Self::status)).
    #[inline]
    pub fn state(&self) -> Health {
        Health::from_u8(self.state.load(Relaxed) & !DRAINING_BIT)
    }

    /// The state shown in `/status`: the health, or `draining` once removed from the config.
    pub fn status(&self) -> &'static str {
        if self.is_draining() {
            "draining"
        } else {
            self.state().as_str()
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Relaxed) & DRAINING_BIT != 0
    }

    /// Marks the backend as removed from the config: no new request picks it from any snapshot.
    pub fn set_draining(&self) {
        self.state.fetch_or(DRAINING_BIT, AcqRel);
    }

    /// Sets the health state (a draining backend stays draining); returns the previous one.
    pub fn set_state(&self, s: Health) -> Health {
        let prev = self
            .state
            .fetch_update(AcqRel, Acquire, |v| Some((v & DRAINING_BIT) | s as u8))
            .unwrap_or_else(|v| v);
        let old = Health::from_u8(prev & !DRAINING_BIT);
        if s == Health::Up && old != Health::Up {
            self.up_since_ms.store(process_ms(), Relaxed);
        }
        old
    }

    /// Moves from `from` to `to` only if the state is still `from` (never for a draining
    /// backend: its health no longer matters).
    pub fn state_cas(&self, from: Health, to: Health) -> Result<(), Health> {
        match self
            .state
            .compare_exchange(from as u8, to as u8, AcqRel, Acquire)
        {
            Ok(_) => {
                if to == Health::Up {
                    self.up_since_ms.store(process_ms(), Relaxed);
                }
                Ok(())
            }
            Err(v) => Err(Health::from_u8(v)),
        }
    }

    /// Only `Up` backends that are not draining receive new requests.
    #[inline]
    pub fn usable(&self) -> bool {
        self.state.load(Relaxed) == Health::Up as u8
    }

    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.0.load(Relaxed)
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Records a finished request's duration for the rolling p50/p99.
    /// Records one answer's latency; `now_ms` is [`process_ms`] at its end (the caller's clock
    /// read, not another one).
    pub fn record_latency(&self, d: Duration, now_ms: u64) {
        self.latency.record(d.as_micros() as u64, now_ms);
    }

    /// Rolling (p50, p99) in milliseconds over the last ~10 s.
    pub fn latency(&self) -> (Option<f64>, Option<f64>) {
        self.latency.quantiles(process_ms())
    }

    /// Fraction (0..=1) of its weight the backend gets while it slow-starts: 0 at the moment it
    /// became usable, 1 after `slow_start`; always 1 for backends serving since lb started.
    pub fn ramp(&self, slow_start: Duration) -> f64 {
        if slow_start.is_zero() {
            return 1.0;
        }
        let since = self.up_since_ms.load(Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = process_ms().saturating_sub(since) as f64 / 1000.0;
        (elapsed / slow_start.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// RAII in-flight token: the count *is* the number of live guards, so no path can leak one.
#[derive(Debug)]
pub struct InFlightGuard(Arc<BackendState>);

impl InFlightGuard {
    pub fn new(state: &Arc<BackendState>) -> Self {
        state.in_flight.0.fetch_add(1, Relaxed);
        state.attempts.fetch_add(1, Relaxed);
        InFlightGuard(state.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_in_flight() {
        let s = Arc::new(BackendState::new(Health::Up));
        let a = InFlightGuard::new(&s);
        let b = InFlightGuard::new(&s);
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.attempts(), 2);
    }
}
