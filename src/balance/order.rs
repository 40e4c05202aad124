//! The weighted order both strategies follow (see the [module docs](super)): NGINX's smooth
//! weighted round-robin period for integer weights, else a weighted Weyl (golden-ratio) sequence.

/// Longest round-robin period stored per snapshot (entries of 4 bytes).
pub const SCHEDULE_LIMIT: usize = 16_384;
/// Above this many simulation steps (`period × backends`) the Weyl order replaces NGINX's.
pub const EXACT_LIMIT: usize = 4_000_000;
/// 2^64 / φ: the Weyl sequence's step.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

use super::WEIGHT_SCALE;

/// SplitMix64's output function: a well-mixed 64-bit value for each `k`.
#[inline]
fn splitmix64(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x / 2^64` of `[0, total)`.
#[inline]
fn scale(x: u64, total: u64) -> u64 {
    ((x as u128 * total as u128) >> 64) as u64
}

/// Point `frac(k·φ)` of `[0, total)`.
#[inline]
pub(super) fn weyl(k: u64, total: u64) -> u64 {
    ((k.wrapping_mul(GOLDEN) as u128 * total as u128) >> 64) as u64
}

/// The weighted order of one snapshot's usable backends (see the module docs).
#[derive(Debug)]
pub(super) enum Order {
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
    pub(super) fn build(weights: &[u64], usable: &[bool]) -> Order {
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
    pub(super) fn at(&self, k: u64) -> Option<usize> {
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

    /// A backend drawn with probability proportional to its weight, pseudo-randomly from `k`:
    /// unlike [`at`](Self::at), draws for neighbouring `k` are independent of each other, as
    /// rejection sampling needs.
    #[inline]
    pub(super) fn sample(&self, k: u64) -> Option<usize> {
        let x = splitmix64(k);
        match self {
            Order::Empty => None,
            Order::Schedule(s) => Some(s[scale(x, s.len() as u64) as usize] as usize),
            Order::Spread { cumulative, index } => {
                let at = scale(x, *cumulative.last()?);
                Some(index[cumulative.partition_point(|&c| c <= at)] as usize)
            }
        }
    }

    pub(super) fn len(&self) -> usize {
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
    use super::super::testing::*;
    use super::super::*;

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
}
