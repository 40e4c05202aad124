//! `least_connections`: the lowest `in_flight / weight`, ties broken by weighted round-robin among
//! the tied backends as NGINX does (the shared order when every candidate ties). An idle backend
//! found by the order or a few weighted draws ends the search at once (idle is the minimum), so
//! large, lightly loaded pools cost O(1) per pick; a full scan runs only when nothing idle shows.

use super::order::{weyl, Order};
use super::Candidate;
use crate::state::backend::Position;

/// Draws from the weighted order before falling back to a second pass over the tied backends.
const SAMPLES: u64 = 8;

/// The least loaded usable backend, by weight.
pub(super) fn pick<C: Candidate>(
    order: &Order,
    position: &Position,
    backends: &[C],
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let k = position.next();
    // Fast path: an idle backend has the lowest possible load, so it is always among the tied
    // minimum. Take the round-robin order's backend when it is idle (with every backend idle this
    // is exactly NGINX's sequence), else the first idle draw from the weighted order (rejection
    // sampling: still weighted among the idle ones). Only when no idle backend turns up is the
    // whole pool scanned.
    let idle = |i: usize| ok(i) && backends[i].state().in_flight() == 0;
    if let Some(i) = order.at(k).filter(|&i| idle(i)) {
        return Some(i);
    }
    let base = k.wrapping_mul(SAMPLES);
    if let Some(i) = (0..SAMPLES)
        .filter_map(|d| order.sample(base.wrapping_add(d)))
        .find(|&i| idle(i))
    {
        return Some(i);
    }
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
    if tied == candidates {
        if let Some(i) = order.at(k).filter(|&i| ok(i)) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::state::backend::{Health, InFlightGuard};

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
        let c = counts(&picks(&lb, &b, 4000), 3);
        assert_eq!(c[2], 0);
        // 3:1 (pseudo-random draws: within 3 standard deviations, ±82).
        assert!((2918..=3082).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn large_pools_at_moderate_load_stay_weighted() {
        // 100 backends, weights 1 and 2 alternating, 30 of them busy: many ties, so the draws
        // from the weighted order decide; the weight-2 backends get twice the share.
        let weights: Vec<u64> = (0..100).map(|i| 1 + i % 2).collect();
        let b = pool(&weights);
        let lb = balancer(Strategy::LeastConnections, &b);
        let _busy: Vec<_> = (0..30).map(|i| InFlightGuard::new(&b[i].0)).collect();
        let c = counts(&picks(&lb, &b, 30_000), 100);
        assert!(c[..30].iter().all(|n| *n == 0), "a busy backend was picked");
        let (light, heavy): (usize, usize) = (30..100).fold((0, 0), |(l, h), i| {
            if weights[i] == 1 {
                (l + c[i], h)
            } else {
                (l, h + c[i])
            }
        });
        let ratio = heavy as f64 / light as f64;
        assert!((1.9..2.1).contains(&ratio), "heavy/light {ratio:.3}");
    }

    #[test]
    fn least_connections_skips_down() {
        let b = pool(&[1, 1]);
        b[0].0.set_state(Health::Down);
        let lb = balancer(Strategy::LeastConnections, &b);
        for _ in 0..4 {
            assert_eq!(lb.pick(&b, |_| false), Some(1));
        }
    }
}
