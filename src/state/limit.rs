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
//! global lock); each shard also counts the verdicts given under its lock. Keys are hashed with
//! a per-table random key (SipHash), so a client cannot make its keys collide with another's.
//! About `max_keys` keys are kept (`max_keys / SHARDS` per shard, rounded up): a full shard
//! forgets the keys whose excess has leaked away (they are as good as new), then its least
//! recently seen, an eighth of the shard at a time.
//!
//! The tables live in the registry ([`Limiters`]), kept across reloads while a limit keeps its
//! key and size; each snapshot holds a [`Limit`] per configured limit (settings, table, refusal
//! text), and [`verdict`] gives a request's verdict over the limits of its route; the request
//! path only names each limit's key in the request (`crate::proxy::keys`).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};
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

/// What the rate limits of a request decided ([`verdict`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Limited {
    Pass,
    /// Hold the request this long first.
    Delay(Duration),
    /// Refused by this limit (an index into the snapshot's limits).
    Reject(usize),
}

/// The verdict of the limits `ids` (indexes into `limits`) on a request whose key in each limit
/// is `key(limit)` (empty: the request has none, and that limit passes it, as in NGINX). Each
/// limit counts its verdict.
///
/// A request passes every limit of its route (or of its upstream, when the route names none).
/// With several, each is asked first without counting the request, and the request is counted
/// in all of them only if none refuses it (NGINX's `limit_req` does the same): a refused
/// request costs the other limits nothing (a dry-run limit that would refuse is counted as such,
/// and the request goes on counted nowhere else, as NGINX's `limit_req_dry_run`). The longest
/// delay any of them asks for is served.
pub fn verdict<'k>(
    limits: &[Limit],
    ids: &[usize],
    now: u64,
    key: impl Fn(&Limit) -> &'k [u8],
) -> Limited {
    if let [i] = *ids {
        // One limit: one lookup.
        let l = &limits[i];
        let key = key(l);
        if key.is_empty() {
            return Limited::Pass;
        }
        return match l.table.check(&l.config, key, now, Mode::Take) {
            _ if l.config.dry_run => Limited::Pass,
            Verdict::Pass => Limited::Pass,
            Verdict::Delay(d) => Limited::Delay(d),
            Verdict::Reject => Limited::Reject(i),
        };
    }
    // Several: a first round only looks. If any limit refuses, the request is counted in none
    // of them (NGINX's rule), and refused unless every limit that refuses is a dry run.
    let (mut refused, mut refusing) = (None, false);
    for &i in ids {
        let l = &limits[i];
        let key = key(l);
        if key.is_empty() || l.table.check(&l.config, key, now, Mode::Peek) != Verdict::Reject {
            continue;
        }
        refusing = true;
        // Counts the refusal (the bucket can only have filled since the look).
        l.table.check(&l.config, key, now, Mode::Take);
        if !l.config.dry_run && refused.is_none() {
            refused = Some(i);
        }
    }
    if let Some(i) = refused {
        return Limited::Reject(i);
    }
    if refusing {
        return Limited::Pass;
    }
    let mut delay = Duration::ZERO;
    for &i in ids {
        let l = &limits[i];
        let key = key(l);
        if key.is_empty() {
            continue;
        }
        if let Verdict::Delay(d) = l.table.check(&l.config, key, now, Mode::Force) {
            if !l.config.dry_run {
                delay = delay.max(d);
            }
        }
    }
    if delay.is_zero() {
        Limited::Pass
    } else {
        Limited::Delay(delay)
    }
}

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The excess over the rate, in thousandths of a request.
    excess: u64,
    /// When it was last updated (process milliseconds).
    last: u64,
    /// When a request of this key was last seen, refused ones included (what eviction goes by,
    /// as NGINX's LRU queue: a client kept refused is not forgotten first).
    seen: u64,
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

/// One lock's worth of keys, and the verdicts counted under that lock (no counter shared by
/// every request of a limit).
#[derive(Default)]
struct Shard {
    nodes: HashMap<u64, Node, BuildHasherDefault<Unhashed>>,
    counts: [u64; RESULTS.len()],
}

/// The results counted, as `lb_rate_limit_requests_total{result}` names them.
pub const RESULTS: [&str; 5] = [
    "passed",
    "delayed",
    "rejected",
    "delayed_dry_run",
    "rejected_dry_run",
];

/// How [`Limiter::check`] treats the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the verdict: nothing counted, nothing changed.
    Peek,
    /// Counted in the bucket unless refused; the verdict is counted.
    Take,
    /// Counted in the bucket even beyond the burst (a request every limit already let through,
    /// NGINX's `ngx_http_limit_req_account`); counted as passed or delayed.
    Force,
}

/// One `[rate_limits.NAME]` as a snapshot holds it: its settings and its table of keys (kept
/// across snapshots by [`Limiters`]).
#[derive(Debug)]
pub struct Limit {
    pub config: RateLimitConfig,
    pub table: Arc<Limiter>,
    /// lb's answer beyond the burst: `rate limit "NAME" exceeded`.
    pub refusal: Box<str>,
}

/// The tables of every `[rate_limits]` entry by name, in the registry: a snapshot takes its
/// [`Limit`]s from here, so a reload keeps each limit's keys.
#[derive(Debug, Default)]
pub struct Limiters {
    tables: Mutex<HashMap<String, Arc<Limiter>>>,
}

impl Limiters {
    /// One [`Limit`] per entry of `all` (in its order), each table the existing one while the
    /// limit keeps its key and `max_keys`, else a new one; the tables of limits no longer
    /// configured are dropped (a limit added again later starts empty).
    pub fn build(&self, all: &[RateLimitConfig]) -> Vec<Limit> {
        let mut tables = lock(&self.tables);
        tables.retain(|name, _| all.iter().any(|c| c.name == *name));
        all.iter()
            .map(|c| Limit {
                config: c.clone(),
                table: table(&mut tables, c),
                refusal: format!("rate limit {:?} exceeded", c.name).into(),
            })
            .collect()
    }
}

/// The table of rate limit `c` in `tables`: the existing one while it was made for `c`'s key and
/// `max_keys`, else a new one.
fn table(tables: &mut HashMap<String, Arc<Limiter>>, c: &RateLimitConfig) -> Arc<Limiter> {
    let made_for = (c.key.clone(), c.max_keys);
    match tables.get(&c.name) {
        Some(l) if l.made_for == made_for => l.clone(),
        _ => {
            let l = Arc::new(Limiter::new(c));
            tables.insert(c.name.clone(), l.clone());
            l
        }
    }
}

/// One `[rate_limits.NAME]`'s table of keys. Kept across reloads while the limit keeps its key
/// and `max_keys` (its rate, burst and delay apply from the next request on).
pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    /// The key and size the table was made for.
    pub made_for: (crate::config::HashKey, usize),
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
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests counted by result, in [`RESULTS`] order.
    pub fn counts(&self) -> [u64; RESULTS.len()] {
        let mut out = [0; RESULTS.len()];
        for s in self.shards.iter() {
            for (o, n) in out.iter_mut().zip(lock(s).counts) {
                *o += n;
            }
        }
        out
    }

    /// The verdict of `c` on a request with `key` at `now` (process milliseconds), counted in
    /// the key's bucket and in the results as `mode` says. With several limits lb peeks at every
    /// one first and forces the request into all of them only if none refuses it (NGINX does the
    /// same), so a refused request costs no limit anything.
    pub fn check(&self, c: &RateLimitConfig, key: &[u8], now: u64, mode: Mode) -> Verdict {
        let hash = self.hasher.hash_one(key);
        // Not the top bits: hashbrown takes its tags from those.
        let mut shard = lock(&self.shards[(hash >> 32) as usize % SHARDS]);
        let shard = &mut *shard;
        let excess = match shard.nodes.get_mut(&hash) {
            Some(node) => {
                let ms = now.saturating_sub(node.last);
                let excess = next_excess(node.excess, c.rate, ms);
                node.seen = node.seen.max(now);
                if excess > c.burst * 1000 && mode != Mode::Force {
                    if mode == Mode::Take {
                        shard.counts[2 + 2 * usize::from(c.dry_run)] += 1;
                    }
                    return Verdict::Reject;
                }
                if mode != Mode::Peek {
                    node.excess = excess;
                    if ms > 0 {
                        node.last = now;
                    }
                }
                excess
            }
            None => {
                if mode != Mode::Peek {
                    if shard.nodes.len() >= self.per_shard {
                        make_room(&mut shard.nodes, c.rate, now);
                    }
                    let node = Node {
                        excess: 0,
                        last: now,
                        seen: now,
                    };
                    shard.nodes.insert(hash, node);
                }
                0
            }
        };
        let delay = c.delay * 1000;
        let v = if excess <= delay {
            Verdict::Pass
        } else {
            Verdict::Delay(Duration::from_millis((excess - delay) * 1000 / c.rate))
        };
        if mode != Mode::Peek {
            let i = match v {
                Verdict::Pass => 0,
                _ if c.dry_run => 3,
                _ => 1,
            };
            shard.counts[i] += 1;
        }
        v
    }
}

/// The excess with one more request, `ms` milliseconds after the last, at `rate` (thousandths
/// per second): NGINX's `excess - rate * ms / 1000 + 1000`, at least 0.
fn next_excess(excess: u64, rate: u64, ms: u64) -> u64 {
    (excess + 1000).saturating_sub(rate.saturating_mul(ms) / 1000)
}

/// Makes room in a full shard, for at least an eighth of it at once (so a table kept full by
/// new keys scans it once per that many insertions, not once per key): every key whose excess
/// has leaked away goes (its next request would start from nothing, as a new key does), then
/// the least recently seen.
fn make_room(nodes: &mut HashMap<u64, Node, BuildHasherDefault<Unhashed>>, rate: u64, now: u64) {
    let want = nodes.len().div_ceil(8);
    let before = nodes.len();
    nodes.retain(|_, n| next_excess(n.excess, rate, now.saturating_sub(n.last)) > 0);
    let freed = before - nodes.len();
    if freed >= want {
        return;
    }
    let mut by_seen: Vec<(u64, u64)> = nodes.iter().map(|(k, n)| (n.seen, *k)).collect();
    let n = want - freed;
    by_seen.select_nth_unstable(n - 1);
    for (_, k) in &by_seen[..n] {
        nodes.remove(k);
    }
}

fn lock<T>(s: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        l.check(c, key.as_bytes(), now, Mode::Take)
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
        assert_eq!(l.check(&c, b"k", 10, Mode::Peek), Verdict::Pass);
        assert!(l.is_empty());
        assert_eq!(take(&l, &c, "k", 10), Verdict::Pass);
        assert_eq!(l.check(&c, b"k", 10, Mode::Peek), Verdict::Reject);
        assert_eq!(take(&l, &c, "k", 1010), Verdict::Pass);
    }

    #[test]
    fn force_counts_beyond_the_burst_and_results_are_counted() {
        let c = limit(1000, 0, 0, 100);
        let l = Limiter::new(&c);
        assert_eq!(take(&l, &c, "k", 10), Verdict::Pass);
        assert_eq!(take(&l, &c, "k", 10), Verdict::Reject);
        // Forced (every limit of the request let it through in the first round): counted.
        let forced = l.check(&c, b"k", 10, Mode::Force);
        assert_eq!(forced, Verdict::Delay(Duration::from_millis(1000)));
        // The excess is now 1000: a second later it has leaked to where one more is refused.
        assert_eq!(take(&l, &c, "k", 1010), Verdict::Reject);
        assert_eq!(take(&l, &c, "k", 2010), Verdict::Pass);
        assert_eq!(l.counts(), [2, 1, 2, 0, 0]);
        let dry = RateLimitConfig {
            dry_run: true,
            ..c.clone()
        };
        let l = Limiter::new(&dry);
        take(&l, &dry, "k", 10);
        take(&l, &dry, "k", 10);
        assert_eq!(l.counts(), [1, 0, 0, 0, 1]);
    }

    #[test]
    fn a_full_table_stays_within_its_size() {
        let c = limit(1000, 0, 0, 10 * SHARDS);
        let l = Limiter::new(&c);
        for i in 0..20_000 {
            take(&l, &c, &format!("k{i}"), 1);
        }
        assert!(l.len() <= 10 * SHARDS, "{} keys", l.len());
        assert!(l.len() >= 7 * SHARDS, "{} keys", l.len());
    }

    #[test]
    fn room_is_made_from_drained_keys_then_the_least_recently_seen() {
        let node = |excess, last, seen| Node { excess, last, seen };
        let mut nodes: HashMap<u64, Node, BuildHasherDefault<Unhashed>> = HashMap::default();
        // At 1 request a second, at 10_000 ms: keys 0-3 busy, seen at 10_000 - key; keys 4-15
        // busy but seen long ago (4 is the oldest), except 15 which was refused just now.
        for k in 0..16u64 {
            let seen = if k < 4 || k == 15 { 10_000 - k } else { k };
            nodes.insert(k, node(5000, 9000, seen));
        }
        make_room(&mut nodes, 1000, 10_000);
        // An eighth of 16: the two least recently seen go; refused-but-recent 15 stays.
        let mut left: Vec<u64> = nodes.keys().copied().collect();
        left.sort();
        assert_eq!(left, [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        // Drained keys go first, all of them, and then nothing else is needed.
        for k in 100..104u64 {
            nodes.insert(k, node(0, 1000, 1000 + k));
        }
        make_room(&mut nodes, 1000, 10_000);
        assert_eq!(nodes.len(), 14);
        assert!(nodes.keys().all(|k| *k < 100));
    }
}
