//! Backend choice. Both strategies are lock-free on the request path; one file each
//! ([`round_robin`], [`least_connections`]) over the weighted [`order`] they share.
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

pub mod least_connections;
pub mod order;
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
}

/// Chooses backends for one upstream in one snapshot.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    order: Order,
    upstream: Arc<UpstreamState>,
}

impl Balancer {
    /// `weights` in thousandths; `usable[i]` says whether backend `i` is in the weighted order;
    /// `upstream` carries the position shared with the upstream's other snapshots.
    pub fn new(
        strategy: Strategy,
        weights: &[u64],
        usable: &[bool],
        upstream: Arc<UpstreamState>,
    ) -> Self {
        Balancer {
            strategy,
            order: Order::build(weights, usable),
            upstream,
        }
    }

    /// Entries the weighted order keeps in memory.
    #[cfg(test)]
    pub fn footprint(&self) -> usize {
        self.order.len()
    }

    /// Picks a usable backend for which `excluded(i)` is false.
    #[inline]
    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let ok = |i: usize| !excluded(i) && backends[i].state().usable();
        let position = &self.upstream.position;
        let found = match self.strategy {
            Strategy::RoundRobin => round_robin::pick(&self.order, position, &ok),
            Strategy::LeastConnections => {
                least_connections::pick(&self.order, position, backends, &ok)
            }
        };
        // States change between snapshot rebuilds; never miss a usable backend because of that.
        found.or_else(|| (0..backends.len()).find(|&i| ok(i)))
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
        let w: Vec<u64> = b.iter().map(|x| x.1).collect();
        let usable: Vec<bool> = b.iter().map(|x| x.0.usable()).collect();
        Balancer::new(strategy, &w, &usable, up)
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
