//! Backend choice. Every strategy is lock-free on the request path: [`round_robin`] and
//! [`least_connections`] over the weighted [`order`] they share, [`random`] (`random`,
//! `two_choices`) drawing from that order, and the NGINX-compatible [`hash`] strategies
//! (`ip_hash`, `consistent_hash`).
//!
//! Backends come in two tiers, as in NGINX: primaries, and `backup` backends used only when no
//! primary can take the request (none usable, or all at their `max_conns`). A backend at its
//! `max_conns` is skipped; a `down` one is never picked.
//!
//! Weights are in thousandths ([`WEIGHT_SCALE`]): slow start ramps a backend's effective weight
//! from ~0 to its configured weight, so a weight-1 backend ramps too. Every pick advances the
//! upstream's [`Position`](crate::state::backend::UpstreamState::position), which lives in the registry
//! and survives snapshot rebuilds: a rebuild (every health change, every 100 ms while something
//! slow-starts) continues the sequence instead of starting it over at the first backend.
//!
//! * **The weighted order** both strategies share ([`order`]), over the backends usable when the
//!   snapshot was built:
//!   - integer weights (nothing ramping): NGINX's *smooth weighted round-robin*
//!     (ngx_http_upstream_round_robin.c) — each step adds every peer's weight to its `current`,
//!     takes the largest, subtracts the total from it; weights 5,1,1 give `a a b a c a a`. The
//!     sequence is periodic, so one period is computed per snapshot and indexed by the position;
//!     equal weights are a plain rotation. A period longer than [`SCHEDULE_LIMIT`] entries (or
//!     costlier than [`EXACT_LIMIT`] steps to simulate) is not stored;
//!   - otherwise (fractional weights while ramping, or huge periods): a *weighted Weyl sequence*:
//!     pick `k` maps to the point `frac(k·φ)` of the cumulative weight line. Shares are exact in
//!     the limit and consecutive picks are spread out (low discrepancy), in O(log n) per pick and
//!     O(n) memory.
//! * `round_robin` takes the next backend of the order.
//! * `least_connections` picks the lowest `in_flight / weight` (exact cross-multiplication). Ties
//!   are broken as NGINX does, by weighted round-robin among the tied backends: when every
//!   candidate is tied (the common case at low concurrency: all idle) that is the order above, so
//!   weights and slow start shape traffic at any concurrency; otherwise a weighted Weyl pick among
//!   the tied ones.
//!
//! Backends that are not usable are skipped; if any usable backend exists that the caller has not
//! excluded, a pick finds it (the fallback is a full scan, never a bounded number of tries).

pub mod hash;
pub mod least_connections;
pub mod order;
pub mod random;
pub mod round_robin;

use std::sync::Arc;

use crate::config::Strategy;
use crate::state::backend::{BackendState, UpstreamState};
use order::Order;
pub use order::{smooth_schedule, EXACT_LIMIT, SCHEDULE_LIMIT};

/// Weights are counted in thousandths of a configured weight unit.
pub const WEIGHT_SCALE: u64 = 1000;

/// A candidate backend as the balancer sees it.
pub trait Candidate {
    fn state(&self) -> &Arc<BackendState>;
    /// Effective weight in thousandths (after slow start), at least 1.
    fn weight(&self) -> u64;
    /// Used only when no primary backend can take the request.
    fn backup(&self) -> bool {
        false
    }
    /// Configured out (`down = true`): never picked.
    fn down(&self) -> bool {
        false
    }
    /// Most requests in flight at once (0: no limit).
    fn max_conns(&self) -> u64 {
        0
    }
    /// The address as written in the config (what `consistent_hash` hashes).
    fn name(&self) -> &str {
        ""
    }
}

/// Whether a backend is at its `max_conns`.
#[inline]
pub fn at_limit<C: Candidate>(b: &C) -> bool {
    let max = b.max_conns();
    max > 0 && b.state().in_flight() >= max
}

/// Chooses backends for one upstream in one snapshot.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    /// The primaries usable when the snapshot was built.
    order: Order,
    /// The backups usable then (empty for most upstreams).
    backups: Order,
    has_backups: bool,
    ip: Option<hash::IpTable>,
    ring: Option<Arc<hash::Ring>>,
    upstream: Arc<UpstreamState>,
}

impl Balancer {
    /// A balancer over `backends` (weights after slow start); `upstream` carries the position
    /// shared with the upstream's other snapshots (and the consistent-hash ring).
    pub fn new<C: Candidate>(
        strategy: Strategy,
        backends: &[C],
        upstream: Arc<UpstreamState>,
    ) -> Self {
        let weights: Vec<u64> = backends.iter().map(|b| b.weight()).collect();
        let live = |b: &C| b.state().usable() && !b.down();
        let primary: Vec<bool> = backends.iter().map(|b| live(b) && !b.backup()).collect();
        let backup: Vec<bool> = backends.iter().map(|b| live(b) && b.backup()).collect();
        let hashed = || {
            backends
                .iter()
                .enumerate()
                .filter(|(_, b)| !b.backup())
                .map(|(i, b)| {
                    let w = (b.weight() / WEIGHT_SCALE).max(1) as u32;
                    (b.name(), w, i)
                })
        };
        let ip = (strategy == Strategy::IpHash)
            .then(|| hash::IpTable::new(hashed().map(|(_, w, i)| (w, i))));
        let ring = (strategy == Strategy::ConsistentHash)
            .then(|| hash::ring_for(&upstream.derived, hashed()));
        Balancer {
            strategy,
            order: Order::build(&weights, &primary),
            backups: Order::build(&weights, &backup),
            has_backups: backends.iter().any(|b| b.backup()),
            ip,
            ring,
            upstream,
        }
    }

    /// Entries the weighted order keeps in memory.
    #[cfg(test)]
    pub fn footprint(&self) -> usize {
        self.order.len()
    }

    /// Whether picks need a key ([`pick_keyed`](Self::pick_keyed)): the client's address bytes
    /// for `ip_hash` ([`hash::ip_key`]), the hashed value for `consistent_hash`.
    pub fn keyed(&self) -> bool {
        self.strategy.is_hash()
    }

    /// Picks a usable backend for which `excluded(i)` is false.
    #[inline]
    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.pick_keyed(backends, excluded, &[])
    }

    /// [`pick`](Self::pick) with the request's hash key (ignored by the other strategies; an
    /// empty key makes a hash strategy fall back to round-robin).
    pub fn pick_keyed<C: Candidate>(
        &self,
        backends: &[C],
        excluded: impl Fn(usize) -> bool,
        key: &[u8],
    ) -> Option<usize> {
        let free = |i: usize| {
            let b = &backends[i];
            !excluded(i) && b.state().usable() && !b.down() && !at_limit(b)
        };
        let primary = |i: usize| free(i) && !backends[i].backup();
        let position = &self.upstream.position;
        let found = match self.strategy {
            Strategy::RoundRobin => round_robin::pick(&self.order, position, &primary),
            Strategy::LeastConnections => {
                least_connections::pick(&self.order, position, backends, &primary)
            }
            Strategy::Random => random::pick(&self.order, &primary),
            Strategy::TwoChoices => random::two(&self.order, backends, &primary),
            Strategy::IpHash => self.ip.as_ref().and_then(|t| t.pick(key, &primary)),
            Strategy::ConsistentHash => self.ring.as_ref().and_then(|r| r.pick(key, &primary)),
        };
        // A hash that found nothing falls back to round-robin, as NGINX does; states change
        // between snapshot rebuilds, so never miss a usable backend because of that.
        let found = found
            .or_else(|| match self.strategy {
                Strategy::RoundRobin | Strategy::LeastConnections => None,
                _ => round_robin::pick(&self.order, position, &primary),
            })
            .or_else(|| (0..backends.len()).find(|&i| primary(i)));
        if found.is_some() || !self.has_backups {
            return found;
        }
        let backup = |i: usize| free(i) && backends[i].backup();
        let found = match self.strategy {
            Strategy::LeastConnections => {
                least_connections::pick(&self.backups, position, backends, &backup)
            }
            _ => round_robin::pick(&self.backups, position, &backup),
        };
        found.or_else(|| (0..backends.len()).find(|&i| backup(i)))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A tiny candidate pool for the strategies' unit tests.
    use super::*;

    pub struct B(pub Arc<BackendState>, pub u64);
    impl Candidate for B {
        fn state(&self) -> &Arc<BackendState> {
            &self.0
        }
        fn weight(&self) -> u64 {
            self.1
        }
    }

    /// Backends with integer weights (in whole units), all up.
    pub fn pool(weights: &[u64]) -> Vec<B> {
        weights
            .iter()
            .map(|w| {
                B(
                    Arc::new(BackendState::new(crate::state::backend::Health::Up)),
                    w * WEIGHT_SCALE,
                )
            })
            .collect()
    }

    pub fn balancer(strategy: Strategy, b: &[B]) -> Balancer {
        balancer_at(strategy, b, Arc::default())
    }

    pub fn balancer_at(strategy: Strategy, b: &[B], up: Arc<UpstreamState>) -> Balancer {
        Balancer::new(strategy, b, up)
    }

    pub fn names(seq: &[usize]) -> String {
        seq.iter().map(|i| (b'a' + *i as u8) as char).collect()
    }

    pub fn picks(lb: &Balancer, b: &[B], n: usize) -> Vec<usize> {
        (0..n).map(|_| lb.pick(b, |_| false).unwrap()).collect()
    }

    pub fn counts(seq: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| seq.iter().filter(|x| **x == i).count())
            .collect()
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;
    use crate::state::backend::{Health, InFlightGuard};

    struct T {
        state: Arc<BackendState>,
        backup: bool,
        down: bool,
        max: u64,
    }
    impl Candidate for T {
        fn state(&self) -> &Arc<BackendState> {
            &self.state
        }
        fn weight(&self) -> u64 {
            WEIGHT_SCALE
        }
        fn backup(&self) -> bool {
            self.backup
        }
        fn down(&self) -> bool {
            self.down
        }
        fn max_conns(&self) -> u64 {
            self.max
        }
    }
    fn t(backup: bool, down: bool, max: u64) -> T {
        T {
            state: Arc::new(BackendState::new(Health::Up)),
            backup,
            down,
            max,
        }
    }

    #[test]
    fn backups_only_when_no_primary_can_take_it() {
        for strategy in [Strategy::RoundRobin, Strategy::LeastConnections] {
            // a primary, b backup, c down, d primary with max_conns 1.
            let b = vec![
                t(false, false, 0),
                t(true, false, 0),
                t(false, true, 0),
                t(false, false, 1),
            ];
            let lb = Balancer::new(strategy, &b, Arc::default());
            for _ in 0..20 {
                let i = lb.pick(&b, |_| false).unwrap();
                assert!(i == 0 || i == 3, "{strategy:?} picked {i}");
            }
            let _full = InFlightGuard::new(&b[3].state);
            for _ in 0..5 {
                assert_eq!(lb.pick(&b, |_| false), Some(0), "{strategy:?}: d is full");
            }
            b[0].state.set_state(Health::Down);
            assert_eq!(lb.pick(&b, |_| false), Some(1), "{strategy:?}: backup");
            b[0].state.set_state(Health::Up);
            assert_eq!(
                lb.pick(&b, |i| i == 0),
                Some(1),
                "{strategy:?}: primaries tried"
            );
        }
    }

    #[test]
    fn all_at_max_conns_is_none() {
        let b = vec![t(false, false, 1), t(false, false, 2)];
        let lb = Balancer::new(Strategy::RoundRobin, &b, Arc::default());
        let _g = [
            InFlightGuard::new(&b[0].state),
            InFlightGuard::new(&b[1].state),
            InFlightGuard::new(&b[1].state),
        ];
        assert_eq!(lb.pick(&b, |_| false), None);
    }
}
