//! Request rate limits (`[rate_limits.NAME]`): NGINX's `limit_req` leaky bucket, per key.
//!
//! Per key lb keeps what NGINX keeps (`ngx_http_limit_req_lookup`): the excess over the rate in
//! thousandths of a request, and when it last changed. A request adds one request to the
//! excess after the time since the last one leaked `rate × elapsed` away. An excess above
//! `burst` refuses the request (and changes nothing); an excess above `delay` holds the request
//! until the rate allows it. The arithmetic is NGINX's, integer rounding included, so a migrated
//! limit refuses the same requests.
//!
//! The table is split into [`SHARDS`] maps, each behind its own lock held for one lookup (no
//! global lock). Keys are hashed with a per-table random key (SipHash), so a client cannot make
//! its keys collide with another's. At most `max_keys` keys are kept: a full shard first forgets
//! the keys whose excess has leaked away (they are as good as new), else its least recently seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::RateLimitConfig;

/// Locks per table: requests of different keys rarely wait for each other.
pub const SHARDS: usize = 64;

/// What one limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At or under the rate, or within the part of the burst that is not delayed.
    Pass,
    /// Within the burst: held this long, to the rate.
    Delay(Duration),
    /// Over the burst: refused.
    Reject,
}

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The excess over the rate, in thousandths of a request.
    excess: u64,
    /// When it was last updated (process milliseconds).
    last: u64,
}

/// Keys are already hashed: the maps use the hash as it is.
#[derive(Default)]
struct Unhashed(u64);

impl Hasher for Unhashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, Node, BuildHasherDefault<Unhashed>>;

/// Requests counted by their verdict (`lb_rate_limit_requests_total{limit, result}`).
#[derive(Debug, Default)]
pub struct LimitCounts {
    pub passed: AtomicU64,
    pub delayed: AtomicU64,
    pub rejected: AtomicU64,
    /// `dry_run`: would have been delayed, or refused.
    pub delayed_dry_run: AtomicU64,
    pub rejected_dry_run: AtomicU64,
}

/// One `[rate_limits.NAME]`'s table of keys. Kept across reloads while the limit keeps its key
/// and `max_keys` (its rate, burst and delay apply from the next request on).
pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    /// The key and size the table was made for.
    pub made_for: (crate::config::HashKey, usize),
    pub counts: LimitCounts,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("made_for", &self.made_for)
            .field("keys", &self.len())
            .finish()
    }
}

impl Limiter {
    pub fn new(c: &RateLimitConfig) -> Limiter {
        Limiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: c.max_keys.div_ceil(SHARDS).max(1),
            made_for: (c.key.clone(), c.max_keys),
            counts: LimitCounts::default(),
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The verdict of `c` on a request with `key` at `now` (process milliseconds). With
    /// `commit`, a request that is not refused is counted in the key's bucket; without, nothing
    /// changes (lb asks every limit of a request first, and counts it only if none refuses, as
    /// NGINX does). The caller counts the verdict.
    pub fn check(&self, c: &RateLimitConfig, key: &[u8], now: u64, commit: bool) -> Verdict {
        let hash = self.hasher.hash_one(key);
        let mut shard = lock(&self.shards[(hash >> 58) as usize % SHARDS]);
        let excess = match shard.get_mut(&hash) {
            Some(node) => {
                let ms = now.saturating_sub(node.last);
                let excess = next_excess(node.excess, c.rate, ms);
                if excess > c.burst * 1000 {
                    return Verdict::Reject;
                }
                if commit {
                    node.excess = excess;
                    if ms > 0 {
                        node.last = now;
                    }
                }
                excess
            }
            None => {
                if commit {
                    if shard.len() >= self.per_shard {
                        forget(&mut shard, c.rate, now);
                    }
                    shard.insert(
                        hash,
                        Node {
                            excess: 0,
                            last: now,
                        },
                    );
                }
                0
            }
        };
        drop(shard);
        let delay = c.delay * 1000;
        if excess <= delay {
            Verdict::Pass
        } else {
            Verdict::Delay(Duration::from_millis((excess - delay) * 1000 / c.rate))
        }
    }

    /// Counts a request's verdict.
    pub fn count(&self, v: Verdict, dry_run: bool) {
        let c = &self.counts;
        let counter = match (v, dry_run) {
            (Verdict::Pass, _) => &c.passed,
            (Verdict::Delay(_), false) => &c.delayed,
            (Verdict::Delay(_), true) => &c.delayed_dry_run,
            (Verdict::Reject, false) => &c.rejected,
            (Verdict::Reject, true) => &c.rejected_dry_run,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// The excess with one more request, `ms` milliseconds after the last, at `rate` (thousandths
/// per second): NGINX's `excess - rate * ms / 1000 + 1000`, at least 0.
fn next_excess(excess: u64, rate: u64, ms: u64) -> u64 {
    (excess + 1000).saturating_sub(rate.saturating_mul(ms) / 1000)
}

/// Makes room in a full shard: drops every key whose excess has leaked away, else the least
/// recently updated one.
fn forget(shard: &mut Shard, rate: u64, now: u64) {
    let before = shard.len();
    // A key whose next request would start from no excess is as good as a new one.
    shard.retain(|_, n| next_excess(n.excess, rate, now.saturating_sub(n.last)) > 0);
    if shard.len() < before {
        return;
    }
    if let Some(oldest) = shard.iter().min_by_key(|(_, n)| n.last).map(|(k, _)| *k) {
        shard.remove(&oldest);
    }
}

fn lock(s: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashKey;

    fn limit(rate: u64, burst: u64, delay: u64, max_keys: usize) -> RateLimitConfig {
        RateLimitConfig {
            name: "t".into(),
            key: HashKey::ClientIp,
            rate,
            burst,
            delay,
            status: 429,
            max_keys,
            dry_run: false,
        }
    }

    fn take(l: &Limiter, c: &RateLimitConfig, key: &str, now: u64) -> Verdict {
        l.check(c, key.as_bytes(), now, true)
    }

    #[test]
    fn burst_then_the_rate_as_nginx() {
        // 2 r/s, burst 3, nodelay: 4 at once, then one per 500 ms.
        let c = limit(2000, 3, 3, 100);
        let l = Limiter::new(&c);
        let at_once: Vec<_> = (0..6).map(|_| take(&l, &c, "a", 1000)).collect();
        use Verdict::*;
        assert_eq!(at_once, [Pass, Pass, Pass, Pass, Reject, Reject]);
        // Another key has its own bucket.
        assert_eq!(take(&l, &c, "b", 1000), Pass);
        assert_eq!(
            take(&l, &c, "a", 1499),
            Reject,
            "499 ms leak 998 thousandths"
        );
        assert_eq!(take(&l, &c, "a", 1500), Pass);
        assert_eq!(take(&l, &c, "a", 1500), Reject);
        // Idle for long: back to a full burst.
        let later: Vec<_> = (0..5).map(|_| take(&l, &c, "a", 60_000)).collect();
        assert_eq!(later, [Pass, Pass, Pass, Pass, Reject]);
    }

    #[test]
    fn delays_beyond_delay_to_the_rate() {
        // 10 r/s, burst 5, delay 2: excess 1 and 2 pass, 3..5 are held 100, 200, 300 ms.
        let c = limit(10_000, 5, 2, 100);
        let l = Limiter::new(&c);
        let v: Vec<_> = (0..7).map(|_| take(&l, &c, "k", 5000)).collect();
        let ms = |n| Verdict::Delay(Duration::from_millis(n));
        use Verdict::*;
        assert_eq!(v, [Pass, Pass, Pass, ms(100), ms(200), ms(300), Reject]);
    }

    #[test]
    fn a_check_without_commit_changes_nothing() {
        let c = limit(1000, 0, 0, 100);
        let l = Limiter::new(&c);
        assert_eq!(l.check(&c, b"k", 10, false), Verdict::Pass);
        assert!(l.is_empty());
        assert_eq!(take(&l, &c, "k", 10), Verdict::Pass);
        assert_eq!(l.check(&c, b"k", 10, false), Verdict::Reject);
        assert_eq!(take(&l, &c, "k", 1010), Verdict::Pass);
    }

    #[test]
    fn a_full_table_forgets_drained_keys_first_then_the_oldest() {
        let c = limit(1000, 0, 0, SHARDS); // one key per shard
        let l = Limiter::new(&c);
        for i in 0..2000 {
            take(&l, &c, &format!("k{i}"), 1);
        }
        assert!(l.len() <= SHARDS, "{} keys", l.len());
        assert_eq!(take(&l, &c, "x", 5000), Verdict::Pass);
        assert_eq!(take(&l, &c, "x", 5000), Verdict::Reject);
    }
}
