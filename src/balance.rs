//! Backend choice. Both strategies are lock-free on the request path.
//!
//! Weights are in thousandths ([`WEIGHT_SCALE`]): slow start ramps a backend's effective weight
//! from ~0 to its configured weight, so a weight-1 backend ramps too. Every pick advances the
//! upstream's [`Position`](crate::backend::UpstreamState::position), which lives in the registry
//! and survives snapshot rebuilds: a rebuild (every health change, every 100 ms while something
//! slow-starts) continues the sequence instead of starting it over at the first backend.
//!
//! * **The weighted order** both strategies share ([`Order`]), over the backends usable when the
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

use std::sync::Arc;

use crate::backend::{BackendState, UpstreamState};
use crate::config::Strategy;

/// Weights are counted in thousandths of a configured weight unit.
pub const WEIGHT_SCALE: u64 = 1000;
/// Longest round-robin period stored per snapshot (entries of 4 bytes).
pub const SCHEDULE_LIMIT: usize = 16_384;
/// Above this many simulation steps (`period × backends`) the Weyl order replaces NGINX's.
pub const EXACT_LIMIT: usize = 4_000_000;
/// 2^64 / φ: the Weyl sequence's step.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A candidate backend as the balancer sees it.
pub trait Candidate {
    fn state(&self) -> &Arc<BackendState>;
    /// Effective weight in thousandths (after slow start), at least 1.
    fn weight(&self) -> u64;
}

/// Point `frac(k·φ)` of `[0, total)`.
#[inline]
fn weyl(k: u64, total: u64) -> u64 {
    ((k.wrapping_mul(GOLDEN) as u128 * total as u128) >> 64) as u64
}

/// The weighted order of one snapshot's usable backends (see the module docs).
#[derive(Debug)]
enum Order {
    Empty,
    /// One period of smooth WRR (or a rotation), backend indices.
    Schedule(Box<[u32]>),
    /// Weighted Weyl sequence: `cumulative[j]` is the weight of `index[..=j]`.
    Spread {
        cumulative: Box<[u64]>,
        index: Box<[u32]>,
    },
}

impl Order {
    fn build(weights: &[u64], usable: &[bool]) -> Order {
        let live: Vec<(u32, u64)> = weights
            .iter()
            .enumerate()
            .filter(|(i, _)| usable.get(*i).copied().unwrap_or(true))
            .map(|(i, w)| (i as u32, (*w).max(1)))
            .collect();
        if live.is_empty() {
            return Order::Empty;
        }
        if live.iter().all(|(_, w)| w % WEIGHT_SCALE == 0) {
            let ints: Vec<u64> = live.iter().map(|(_, w)| w / WEIGHT_SCALE).collect();
            if let Some(s) = integer_schedule(&live, &ints) {
                return Order::Schedule(s.into());
            }
        }
        let mut sum = 0u64;
        let cumulative = live
            .iter()
            .map(|(_, w)| {
                sum += w;
                sum
            })
            .collect();
        Order::Spread {
            cumulative,
            index: live.iter().map(|(i, _)| *i).collect(),
        }
    }

    /// The backend at position `k`.
    #[inline]
    fn at(&self, k: u64) -> Option<usize> {
        match self {
            Order::Empty => None,
            Order::Schedule(s) => Some(s[(k % s.len() as u64) as usize] as usize),
            Order::Spread { cumulative, index } => {
                let x = weyl(k, *cumulative.last()?);
                let j = cumulative.partition_point(|&c| c <= x);
                Some(index[j] as usize)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Order::Empty => 0,
            Order::Schedule(s) => s.len(),
            Order::Spread { index, .. } => index.len(),
        }
    }
}

/// NGINX's smooth WRR period for integer weights, when it is small enough to keep.
fn integer_schedule(live: &[(u32, u64)], ints: &[u64]) -> Option<Vec<u32>> {
    let g = ints.iter().fold(0, |g, w| gcd(g, *w));
    let reduced: Vec<(u32, u64)> = live
        .iter()
        .zip(ints)
        .map(|((i, _), w)| (*i, w / g))
        .collect();
    if reduced.iter().all(|(_, w)| *w == 1) {
        return Some(reduced.iter().map(|(i, _)| *i).collect());
    }
    let total: u64 = reduced.iter().map(|(_, w)| w).sum();
    let total = usize::try_from(total).ok()?;
    if total > SCHEDULE_LIMIT || total.saturating_mul(reduced.len()) > EXACT_LIMIT {
        return None;
    }
    Some(nginx_smooth(&reduced, total as u64))
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
        let found = match self.strategy {
            Strategy::RoundRobin => self.pick_rr(&ok),
            Strategy::LeastConnections => self.pick_lc(backends, &ok),
        };
        // States change between snapshot rebuilds; never miss a usable backend because of that.
        found.or_else(|| (0..backends.len()).find(|&i| ok(i)))
    }

    fn pick_rr(&self, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let k = self.upstream.position.next();
        let first = self.order.at(k)?;
        if ok(first) {
            return Some(first);
        }
        // Skip what became unusable (or is excluded) along the order, then give up to the scan.
        (1..=self.order.len() as u64)
            .filter_map(|d| self.order.at(k.wrapping_add(d)))
            .find(|&i| ok(i))
    }

    fn pick_lc<C: Candidate>(&self, backends: &[C], ok: &impl Fn(usize) -> bool) -> Option<usize> {
        // Pass 1: the lowest load per weight, and how many (and how much weight) tie for it.
        let mut best: Option<(usize, u64, u64)> = None;
        let (mut candidates, mut tied, mut tied_weight) = (0usize, 0usize, 0u64);
        for (i, b) in backends.iter().enumerate() {
            if !ok(i) {
                continue;
            }
            candidates += 1;
            let (load, w) = (b.state().in_flight(), b.weight().max(1));
            match best {
                Some((_, bl, bw)) => {
                    let (lhs, rhs) = (load as u128 * bw as u128, bl as u128 * w as u128);
                    if lhs < rhs {
                        best = Some((i, load, w));
                        (tied, tied_weight) = (1, w);
                    } else if lhs == rhs {
                        tied += 1;
                        tied_weight += w;
                    }
                }
                None => {
                    best = Some((i, load, w));
                    (tied, tied_weight) = (1, w);
                }
            }
        }
        let (first, bl, bw) = best?;
        if tied == 1 {
            return Some(first);
        }
        let k = self.upstream.position.next();
        if tied == candidates {
            if let Some(i) = self.order.at(k).filter(|&i| ok(i)) {
                return Some(i);
            }
        }
        // Pass 2: weighted Weyl pick among the tied backends.
        let mut x = weyl(k, tied_weight);
        for (i, b) in backends.iter().enumerate().skip(first) {
            if !ok(i) {
                continue;
            }
            let w = b.weight().max(1);
            if b.state().in_flight() as u128 * bw as u128 != bl as u128 * w as u128 {
                continue;
            }
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        Some(first) // loads moved during the scan
    }
}

/// One period of NGINX's smooth weighted round-robin over integer weights (all backends usable).
pub fn smooth_schedule(weights: &[u32], usable: &[bool]) -> Vec<u32> {
    let live: Vec<(u32, u64)> = weights
        .iter()
        .enumerate()
        .filter(|(i, _)| usable.get(*i).copied().unwrap_or(true))
        .map(|(i, w)| (i as u32, (*w).max(1) as u64))
        .collect();
    let ints: Vec<u64> = live.iter().map(|(_, w)| *w).collect();
    if live.is_empty() {
        return Vec::new();
    }
    integer_schedule(&live, &ints).unwrap_or_default()
}

fn nginx_smooth(live: &[(u32, u64)], total: u64) -> Vec<u32> {
    let mut current = vec![0i64; live.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (j, (_, w)) in live.iter().enumerate() {
            current[j] += *w as i64;
            if current[j] > current[best] {
                best = j;
            }
        }
        current[best] -= total as i64;
        out.push(live[best].0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{InFlightGuard, State};

    struct B(Arc<BackendState>, u64);
    impl Candidate for B {
        fn state(&self) -> &Arc<BackendState> {
            &self.0
        }
        fn weight(&self) -> u64 {
            self.1
        }
    }

    /// Backends with integer weights (in whole units).
    fn pool(weights: &[u64]) -> Vec<B> {
        weights
            .iter()
            .map(|w| B(Arc::new(BackendState::new(State::Up)), w * WEIGHT_SCALE))
            .collect()
    }

    fn balancer(strategy: Strategy, b: &[B]) -> Balancer {
        balancer_at(strategy, b, Arc::default())
    }

    fn balancer_at(strategy: Strategy, b: &[B], up: Arc<UpstreamState>) -> Balancer {
        let w: Vec<u64> = b.iter().map(|x| x.1).collect();
        let usable: Vec<bool> = b.iter().map(|x| x.0.usable()).collect();
        Balancer::new(strategy, &w, &usable, up)
    }

    fn names(seq: &[usize]) -> String {
        seq.iter().map(|i| (b'a' + *i as u8) as char).collect()
    }

    fn picks(lb: &Balancer, b: &[B], n: usize) -> Vec<usize> {
        (0..n).map(|_| lb.pick(b, |_| false).unwrap()).collect()
    }

    fn counts(seq: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| seq.iter().filter(|x| **x == i).count())
            .collect()
    }

    #[test]
    fn smooth_wrr_matches_nginx() {
        let b = pool(&[5, 1, 1]);
        let lb = balancer(Strategy::RoundRobin, &b);
        assert_eq!(names(&picks(&lb, &b, 14)), "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_rotate_in_order() {
        assert_eq!(smooth_schedule(&[1, 1, 1], &[true; 3]), vec![0, 1, 2]);
        assert_eq!(smooth_schedule(&[2, 2], &[true; 2]), vec![0, 1]);
    }

    #[test]
    fn schedule_skips_unusable_and_keeps_shares() {
        let s = smooth_schedule(&[5, 1, 1], &[true, false, true]);
        assert_eq!(
            names(&s.iter().map(|i| *i as usize).collect::<Vec<_>>()),
            "aaacaa"
        );
    }

    #[test]
    fn position_survives_a_new_balancer() {
        let b = pool(&[1, 1, 1]);
        let up = Arc::new(UpstreamState::default());
        for strategy in [Strategy::RoundRobin, Strategy::LeastConnections] {
            let mut seq = Vec::new();
            for _ in 0..6 {
                // A rebuild between every request (as health changes and slow start cause).
                let lb = balancer_at(strategy, &b, up.clone());
                seq.push(lb.pick(&b, |_| false).unwrap());
            }
            assert_eq!(counts(&seq, 3), vec![2, 2, 2], "{strategy:?}: {seq:?}");
        }
    }

    #[test]
    fn fractional_weights_get_their_share() {
        // a and b at full weight, c one-twentieth into its slow start.
        let mut b = pool(&[1, 1, 1]);
        b[2].1 = WEIGHT_SCALE / 20;
        for strategy in [Strategy::RoundRobin, Strategy::LeastConnections] {
            let lb = balancer(strategy, &b);
            let seq = picks(&lb, &b, 4100);
            let c = counts(&seq, 3);
            // Expected 100 of 4100 (weight 0.05 of 2.05); the Weyl order keeps it within a few.
            assert!((95..=105).contains(&c[2]), "{strategy:?}: {c:?}");
            assert!((1990..=2010).contains(&c[0]), "{strategy:?}: {c:?}");
            // Spread out: never two c's within 10 picks of each other.
            let cs: Vec<usize> = (0..seq.len()).filter(|&k| seq[k] == 2).collect();
            assert!(cs.windows(2).all(|w| w[1] - w[0] >= 10), "{cs:?}");
        }
    }

    #[test]
    fn a_weight_one_backend_can_start_near_zero() {
        let mut b = pool(&[1, 1]);
        b[1].1 = 1; // a thousandth: the start of a slow start
        let lb = balancer(Strategy::RoundRobin, &b);
        let c = counts(&picks(&lb, &b, 2000), 2);
        assert!(c[1] <= 3, "{c:?}");
    }

    #[test]
    fn huge_weights_keep_the_order_small() {
        let b = pool(&[1_000_000, 999_999, 1]);
        let lb = balancer(Strategy::RoundRobin, &b);
        assert!(lb.footprint() <= 3, "{} entries", lb.footprint());
        let c = counts(&picks(&lb, &b, 200_000), 3);
        assert!(c[0].abs_diff(100_000) < 100 && c[2] <= 2, "{c:?}");
        let many = pool(&vec![1; 50_000]);
        assert!(balancer(Strategy::RoundRobin, &many).footprint() == 50_000);
        let mixed: Vec<u64> = (0..5000).map(|i| 1 + i % 3).collect();
        let lb = balancer(Strategy::RoundRobin, &pool(&mixed));
        assert!(lb.footprint() <= SCHEDULE_LIMIT, "{}", lb.footprint());
    }

    #[test]
    fn rr_finds_only_usable_backend_among_many_down() {
        let b = pool(&vec![1; 1000]);
        let lb = balancer(Strategy::RoundRobin, &b);
        for (i, x) in b.iter().enumerate() {
            if i != 777 {
                x.0.set_state(State::Down);
            }
        }
        for _ in 0..10 {
            assert_eq!(lb.pick(&b, |_| false), Some(777));
        }
        assert_eq!(lb.pick(&b, |i| i == 777), None);
    }

    #[test]
    fn rr_exclusion_moves_to_next() {
        let b = pool(&[1, 1, 1]);
        let lb = balancer(Strategy::RoundRobin, &b);
        assert_eq!(lb.pick(&b, |i| i == 0), Some(1));
    }

    #[test]
    fn least_connections_prefers_lowest_ratio() {
        let b = pool(&[1, 2, 1]);
        let lb = balancer(Strategy::LeastConnections, &b);
        let _g: Vec<_> = [0, 0, 1, 1, 1, 2, 2]
            .iter()
            .map(|i| InFlightGuard::new(&b[*i].0))
            .collect();
        // loads: a 2/1, b 3/2, c 2/1 → b
        assert_eq!(lb.pick(&b, |_| false), Some(1));
        assert_eq!(
            lb.pick(&b, |i| i == 1).map(|i| i == 0 || i == 2),
            Some(true)
        );
    }

    #[test]
    fn least_connections_ties_follow_smooth_wrr() {
        // Sequential requests: every backend idle, so the weights decide, as in NGINX.
        let b = pool(&[3, 1]);
        let lb = balancer(Strategy::LeastConnections, &b);
        assert_eq!(names(&picks(&lb, &b, 8)), "aabaaaba");
        let b = pool(&[1, 1, 1]);
        let lb = balancer(Strategy::LeastConnections, &b);
        assert_eq!(picks(&lb, &b, 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_partial_ties_are_weighted() {
        // c is busy; a (weight 3) and b (weight 1) are idle and tie.
        let b = pool(&[3, 1, 1]);
        let lb = balancer(Strategy::LeastConnections, &b);
        let _busy = InFlightGuard::new(&b[2].0);
        let c = counts(&picks(&lb, &b, 400), 3);
        assert_eq!(c[2], 0);
        assert!((290..=310).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_connections_skips_down() {
        let b = pool(&[1, 1]);
        b[0].0.set_state(State::Down);
        let lb = balancer(Strategy::LeastConnections, &b);
        for _ in 0..4 {
            assert_eq!(lb.pick(&b, |_| false), Some(1));
        }
    }
}
