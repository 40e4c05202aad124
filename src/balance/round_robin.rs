//! `round_robin`: the next backend of the weighted order (NGINX's smooth weighted round-robin for
//! integer weights), skipping any that became unusable since the snapshot was built.

use super::order::Order;
use crate::state::backend::Position;

/// The backend at the upstream's next position.
pub(super) fn pick(
    order: &Order,
    position: &Position,
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let k = position.next();
    let first = order.at(k)?;
    if ok(first) {
        return Some(first);
    }
    // Skip what became unusable (or is excluded) along the order, then give up to the scan.
    (1..=order.len() as u64)
        .filter_map(|d| order.at(k.wrapping_add(d)))
        .find(|&i| ok(i))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::state::backend::Health;

    #[test]
    fn smooth_wrr_matches_nginx() {
        let b = pool(&[5, 1, 1]);
        let lb = balancer(Strategy::RoundRobin, &b);
        assert_eq!(names(&picks(&lb, &b, 14)), "aabacaaaabacaa");
    }

    #[test]
    fn rr_finds_only_usable_backend_among_many_down() {
        let b = pool(&vec![1; 1000]);
        let lb = balancer(Strategy::RoundRobin, &b);
        for (i, x) in b.iter().enumerate() {
            if i != 777 {
                x.0.set_state(Health::Down);
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
}
