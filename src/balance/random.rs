//! `random` (weighted) and `two_choices` (NGINX `random two least_conn`, Envoy LEAST_REQUEST:
//! two weighted draws, the one with fewer requests in flight per weight wins). Draws come from
//! the worker's own generator (no shared counter), weighted by the shared [`Order`].

use super::order::Order;
use super::Candidate;

/// Draws before giving up to the caller's fallback (NGINX tries 20 times too).
const TRIES: usize = 20;

/// A weighted random usable backend.
pub(super) fn pick(order: &Order, ok: &impl Fn(usize) -> bool) -> Option<usize> {
    (0..TRIES)
        .filter_map(|_| order.sample(fastrand::u64(..)))
        .find(|&i| ok(i))
}

/// The less loaded (per weight) of two distinct weighted draws.
pub(super) fn two<C: Candidate>(
    order: &Order,
    backends: &[C],
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let first = pick(order, ok)?;
    let second = (0..TRIES)
        .filter_map(|_| order.sample(fastrand::u64(..)))
        .find(|&i| i != first && ok(i));
    let Some(second) = second else {
        return Some(first);
    };
    let load = |i: usize| {
        let b = &backends[i];
        (b.state().in_flight() as u128, b.weight().max(1) as u128)
    };
    let ((l1, w1), (l2, w2)) = (load(first), load(second));
    Some(if l2 * w1 < l1 * w2 { second } else { first })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::state::backend::InFlightGuard;

    #[test]
    fn random_follows_weights() {
        let b = pool(&[3, 1]);
        let lb = balancer(Strategy::Random, &b);
        let c = counts(&picks(&lb, &b, 8000), 2);
        // 6000 expected, σ ≈ 39.
        assert!((5800..=6200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn two_choices_avoids_the_loaded_backend() {
        let b = pool(&[1, 1, 1]);
        let lb = balancer(Strategy::TwoChoices, &b);
        let _busy: Vec<_> = (0..5).map(|_| InFlightGuard::new(&b[0].0)).collect();
        let c = counts(&picks(&lb, &b, 3000), 3);
        // a loses every comparison it is drawn into, and two draws are always distinct.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1300 && c[2] > 1300, "{c:?}");
    }
}
