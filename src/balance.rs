//! Backend choice. Both strategies are lock-free on the request path.
//!
//! * `round_robin` is NGINX's *smooth weighted round-robin* (ngx_http_upstream_round_robin.c): each
//!   pick adds every peer's weight to its `current`, takes the largest, and subtracts the total from
//!   it — weights 5,1,1 give `a a b a c a a`. The sequence is periodic, so it is computed once per
//!   snapshot over the usable backends and served with one shared atomic cursor: every worker thread
//!   walks the same sequence and a single client sees it exactly. Very large pools (where simulating
//!   the period would cost more than [`EXACT_LIMIT`] steps) use an equivalent-share stride schedule.
//! * `least_connections` picks the lowest `in_flight / weight` (compared by cross-multiplication),
//!   scanning from a rotating start so ties are shared round-robin. A backend with nothing in flight
//!   cannot be beaten, so the scan stops at the first one: with many backends and few requests the
//!   scan is short.
//!
//! Backends that are not usable are skipped; if any usable backend exists that the caller has not
//! excluded, a pick finds it (the fallback is a full scan, never a bounded number of tries).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::backend::BackendState;
use crate::config::Strategy;

/// Above this many simulation steps (`period × backends`), the stride schedule replaces the exact
/// NGINX simulation.
pub const EXACT_LIMIT: usize = 4_000_000;
/// Longest schedule kept in memory; bigger weight sums are scaled down proportionally.
pub const MAX_PERIOD: usize = 1 << 20;

/// A candidate backend as the balancer sees it.
pub trait Candidate {
    fn state(&self) -> &Arc<BackendState>;
    /// Weight after slow start, at least 1.
    fn effective_weight(&self) -> u32;
}

/// Chooses backends for one upstream in one snapshot.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    /// Round-robin period over the backends that were usable when it was built.
    schedule: Vec<u32>,
    weights: Vec<u32>,
    cursor: AtomicUsize,
}

impl Balancer {
    /// `usable[i]` says whether backend `i` is in the round-robin schedule.
    pub fn new(strategy: Strategy, weights: &[u32], usable: &[bool]) -> Self {
        let schedule = match strategy {
            Strategy::RoundRobin => smooth_schedule(weights, usable),
            Strategy::LeastConnections => Vec::new(),
        };
        Balancer {
            strategy,
            schedule,
            weights: weights.iter().map(|w| (*w).max(1)).collect(),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
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
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed) % len;
        let first = self.schedule[start] as usize;
        if ok(first) {
            return Some(first);
        }
        (1..len)
            .map(|k| self.schedule[(start + k) % len] as usize)
            .find(|&i| ok(i))
    }

    fn pick_lc<C: Candidate>(&self, backends: &[C], ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = if start + k >= n {
                start + k - n
            } else {
                start + k
            };
            if !ok(i) {
                continue;
            }
            let load = backends[i].state().in_flight();
            let w = backends[i].effective_weight().max(1) as u64;
            if load == 0 {
                return Some(i);
            }
            match best {
                Some((_, bl, bw)) if load * bw >= bl * w => {}
                _ => best = Some((i, load, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// The weights this balancer was built with.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }
}

/// One period of NGINX's smooth weighted round-robin over the usable backends.
pub fn smooth_schedule(weights: &[u32], usable: &[bool]) -> Vec<u32> {
    let mut live: Vec<(u32, u64)> = weights
        .iter()
        .enumerate()
        .filter(|(i, _)| usable.get(*i).copied().unwrap_or(true))
        .map(|(i, w)| (i as u32, (*w).max(1) as u64))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let g = live.iter().fold(0, |g, (_, w)| gcd(g, *w));
    live.iter_mut().for_each(|(_, w)| *w /= g);
    let mut total: u64 = live.iter().map(|(_, w)| w).sum();
    if total as usize > MAX_PERIOD {
        let scale = MAX_PERIOD as f64 / total as f64;
        live.iter_mut()
            .for_each(|(_, w)| *w = ((*w as f64 * scale) as u64).max(1));
        total = live.iter().map(|(_, w)| w).sum();
    }
    if (total as usize).saturating_mul(live.len()) <= EXACT_LIMIT {
        nginx_smooth(&live, total)
    } else {
        stride(&live, total)
    }
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

/// Stride scheduling: backend `i` is due at virtual times `(k + ½) / w_i`; merging those in order
/// gives each backend its exact share per period, spread evenly.
fn stride(live: &[(u32, u64)], total: u64) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // Key: due time as a fraction (2k+1)/(2w), compared exactly by cross-multiplying via u128.
    #[derive(PartialEq, Eq)]
    struct Due(u64, u64, usize);
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            ((self.0 as u128) * (o.1 as u128))
                .cmp(&((o.0 as u128) * (self.1 as u128)))
                .then(self.2.cmp(&o.2))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Due>> = live
        .iter()
        .enumerate()
        .map(|(j, (_, w))| Reverse(Due(1, 2 * w, j)))
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while let Some(Reverse(Due(num, den, j))) = heap.pop() {
        out.push(live[j].0);
        if num + 2 < den {
            heap.push(Reverse(Due(num + 2, den, j)));
        }
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

    struct B(Arc<BackendState>, u32);
    impl Candidate for B {
        fn state(&self) -> &Arc<BackendState> {
            &self.0
        }
        fn effective_weight(&self) -> u32 {
            self.1
        }
    }

    fn pool(weights: &[u32]) -> Vec<B> {
        weights
            .iter()
            .map(|w| B(Arc::new(BackendState::new(State::Up)), *w))
            .collect()
    }

    fn names(seq: &[usize]) -> String {
        seq.iter().map(|i| (b'a' + *i as u8) as char).collect()
    }

    #[test]
    fn smooth_wrr_matches_nginx() {
        let b = pool(&[5, 1, 1]);
        let lb = Balancer::new(Strategy::RoundRobin, &[5, 1, 1], &[true; 3]);
        let seq: Vec<usize> = (0..14).map(|_| lb.pick(&b, |_| false).unwrap()).collect();
        assert_eq!(names(&seq), "aabacaaaabacaa");
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
    fn stride_gives_exact_shares() {
        let live: Vec<(u32, u64)> = vec![(0, 3), (1, 1), (2, 2)];
        let s = stride(&live, 6);
        for (i, w) in [(0u32, 3usize), (1, 1), (2, 2)] {
            assert_eq!(s.iter().filter(|x| **x == i).count(), w);
        }
    }

    #[test]
    fn large_pool_uses_stride_with_exact_shares() {
        let weights: Vec<u32> = (0..5000).map(|i| 1 + (i % 3)).collect();
        let s = smooth_schedule(&weights, &vec![true; 5000]);
        assert_eq!(s.len(), weights.iter().map(|w| *w as usize).sum::<usize>());
        assert_eq!(s.iter().filter(|x| **x == 2).count(), 3);
    }

    #[test]
    fn rr_finds_only_usable_backend_among_many_down() {
        let b = pool(&vec![1; 1000]);
        let lb = Balancer::new(Strategy::RoundRobin, &vec![1; 1000], &vec![true; 1000]);
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
        let lb = Balancer::new(Strategy::RoundRobin, &[1, 1, 1], &[true; 3]);
        assert_eq!(lb.pick(&b, |i| i == 0), Some(1));
    }

    #[test]
    fn least_connections_prefers_lowest_ratio() {
        let b = pool(&[1, 2, 1]);
        let lb = Balancer::new(Strategy::LeastConnections, &[1, 2, 1], &[true; 3]);
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
    fn least_connections_ties_rotate() {
        let b = pool(&[1, 1, 1]);
        let lb = Balancer::new(Strategy::LeastConnections, &[1, 1, 1], &[true; 3]);
        let picks: Vec<usize> = (0..6).map(|_| lb.pick(&b, |_| false).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_skips_down() {
        let b = pool(&[1, 1]);
        b[0].0.set_state(State::Down);
        let lb = Balancer::new(Strategy::LeastConnections, &[1, 1], &[true; 2]);
        for _ in 0..4 {
            assert_eq!(lb.pick(&b, |_| false), Some(1));
        }
    }
}
