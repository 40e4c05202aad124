//! A lock-free sliding-window latency histogram (last ~10 s, 1 s slots, log-scale buckets), for the
//! per-backend p50/p99 in `/status` and the dashboard. Recording is two relaxed atomic operations.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

const SLOTS: usize = 10;
/// Buckets per power of two: ~19% resolution.
const SUB: f64 = 4.0;
const BUCKETS: usize = 112; // 1 µs · 2^(112/4) ≈ 268 s

#[derive(Debug)]
struct LatencySlot {
    second: AtomicU64,
    counts: [AtomicU32; BUCKETS],
}

#[derive(Debug)]
pub struct LatencyWindow {
    slots: Box<[LatencySlot; SLOTS]>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            slots: Box::new(std::array::from_fn(|_| LatencySlot {
                second: AtomicU64::new(u64::MAX),
                counts: std::array::from_fn(|_| AtomicU32::new(0)),
            })),
        }
    }
}

fn bucket(micros: u64) -> usize {
    ((micros.max(1) as f64).log2() * SUB) as usize
}

fn upper_ms(bucket: usize) -> f64 {
    2f64.powf((bucket + 1) as f64 / SUB) / 1000.0
}

impl LatencyWindow {
    /// Records one request that took `micros`, at `now_ms` (ms clock).
    pub fn record(&self, micros: u64, now_ms: u64) {
        let second = now_ms / 1000;
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        let seen = slot.second.load(Relaxed);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Relaxed, Relaxed)
                .is_ok()
        {
            slot.counts.iter().for_each(|c| c.store(0, Relaxed));
        }
        slot.counts[bucket(micros).min(BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// (p50, p99) in milliseconds over the window, `None` when nothing was recorded.
    pub fn quantiles(&self, now_ms: u64) -> (Option<f64>, Option<f64>) {
        let now = now_ms / 1000;
        let mut merged = [0u64; BUCKETS];
        for slot in self.slots.iter() {
            let s = slot.second.load(Relaxed);
            if s <= now && now - s < SLOTS as u64 {
                for (m, c) in merged.iter_mut().zip(slot.counts.iter()) {
                    *m += c.load(Relaxed) as u64;
                }
            }
        }
        let total: u64 = merged.iter().sum();
        let q = |p: f64| -> Option<f64> {
            if total == 0 {
                return None;
            }
            let want = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut acc = 0;
            merged.iter().enumerate().find_map(|(i, c)| {
                acc += c;
                (acc >= want).then(|| upper_ms(i))
            })
        };
        (q(0.5), q(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_resolution() {
        let w = LatencyWindow::default();
        for _ in 0..98 {
            w.record(1000, 5000);
        }
        w.record(100_000, 5000);
        w.record(100_000, 5000);
        let (p50, p99) = w.quantiles(5500);
        let p50 = p50.unwrap();
        assert!((1.0..1.3).contains(&p50), "{p50}");
        assert!(p99.unwrap() >= 100.0);
        assert_eq!(w.quantiles(30_000), (None, None), "old slots expire");
    }
}
