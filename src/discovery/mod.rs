//! DNS discovery: backend entries with `resolve = true` (every A/AAAA answer is a backend) or
//! `srv = "_service._proto.name"` (targets, ports, weights, priorities) are followed while lb
//! runs, with hickory-resolver (asynchronous; no worker thread ever blocks on DNS).
//!
//! One task per `(upstream, entry)` ([`supervise`]) resolves the name when its TTL runs out and at
//! least every `resolve_interval` (never more often than once a second), and writes what it found
//! to the registry's [`Discovered`](crate::state::discovery::Discovered) store; a rebuilt snapshot
//! makes each address a backend with its own state, keyed by `(upstream, ip:port)`.
//!
//! * **Make before break.** A new address is usable at once without active checks, after its
//!   first passing check with them. An address DNS no longer gives drains (no new requests, the
//!   ones in flight finish) — with active checks only once one of the name's current addresses
//!   is usable, so a complete change of addresses costs no request.
//! * **Failures keep the last good set** (stale on error); the task retries with backoff and logs
//!   once per change of result. An SRV entry's targets resolve independently (at once): a target
//!   that fails keeps its own last addresses (per family, as names do) while the others follow
//!   their answers; only when every target fails is the whole set kept. NXDOMAIN, or NODATA for both A and AAAA, removes the addresses
//!   after the negative TTL (RFC 2308: the SOA's, else `resolve_interval`); NODATA for one family
//!   alone clears only that family.
//! * **Start-up** resolves every entry once ([`initial_round`]), bounded by the resolver timeout;
//!   an entry that does not resolve yet has no addresses (its upstream answers 503 until one
//!   appears) and lb starts anyway.

mod resolve;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Discovery, UpstreamConfig};
use crate::runtime::Handles;
use crate::state::discovery::{Found, Resolved};
use crate::util::time::unix_ms;
use resolve::{Answer, Family, Stale};

/// Never resolve a name more often than this.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a name with retiring addresses looks for a usable new one.
const RETIRE_POLL: Duration = Duration::from_millis(200);

/// One round of resolutions of every discovered entry, before lb takes traffic.
pub async fn initial_round(h: &Handles) {
    let snap = h.live.snapshot.load_full();
    let resolver = match resolve::resolver(snap.config.resolver.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("DNS discovery: cannot set up the resolver: {e}");
            return;
        }
    };
    let mut work = Vec::new();
    for u in &snap.config.upstreams {
        for b in &u.backends {
            if let Some(d) = &b.discovery {
                let (r, u, entry, d, w) = (
                    resolver.clone(),
                    u.clone(),
                    b.address.clone(),
                    d.clone(),
                    b.weight.get(),
                );
                work.push(tokio::spawn(async move {
                    let answer = resolve::lookup(&r, &d, w).await;
                    (u, entry, answer)
                }));
            }
        }
    }
    if work.is_empty() {
        return;
    }
    for w in work {
        if let Ok((u, entry, answer)) = w.await {
            let mut follow = Follow::default();
            follow.apply(h, &u, &entry, answer, true);
        }
    }
    h.live.rebuild_and_retire();
}

/// Keeps one resolving task per discovered entry of the live config.
pub async fn supervise(h: Handles) {
    let mut tasks: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let snap = h.live.snapshot.load_full();
        let mut wanted = HashSet::new();
        for u in &snap.config.upstreams {
            for b in u.backends.iter().filter(|b| b.discovery.is_some()) {
                let key = (u.name.clone(), b.address.clone());
                wanted.insert(key.clone());
                tasks.entry(key.clone()).or_insert_with(|| {
                    let h = h.clone();
                    tokio::spawn(async move { follow(&h, &key.0, &key.1).await })
                });
            }
        }
        tasks.retain(|key, task| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), h.live.changed.notified()).await;
    }
}

/// What one entry's task remembers between resolutions.
#[derive(Default)]
struct Follow {
    /// Consecutive failed resolutions (for the backoff).
    failures: u32,
    /// When NXDOMAIN / NODATA started; the addresses go once the negative TTL has passed.
    gone_since: Option<(Instant, Duration)>,
    /// The last result logged, to log once per change.
    last_result: String,
}

/// Resolves one entry for as long as it is configured.
async fn follow(h: &Handles, upstream: &str, entry: &str) {
    let mut state = Follow::default();
    loop {
        let snap = h.live.snapshot.load_full();
        let Some(u) = snap.config.upstreams.iter().find(|u| u.name == upstream) else {
            return;
        };
        let Some(b) = u.backends.iter().find(|b| b.address == entry) else {
            return;
        };
        let Some(d) = b.discovery.clone() else {
            return;
        };
        let resolver = match resolve::resolver(snap.config.resolver.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("DNS discovery: cannot set up the resolver: {e}");
                tokio::time::sleep(u.resolve_interval).await;
                continue;
            }
        };
        let answer = resolve::lookup(&resolver, &d, b.weight.get()).await;
        let u = u.clone();
        drop(snap);
        let next = state.apply(h, &u, entry, answer, false);
        // Until the entry's retiring addresses are gone, look for a usable new one often.
        let wake = Instant::now() + next;
        while Instant::now() < wake {
            let left = wake.saturating_duration_since(Instant::now());
            if retire_if_ready(h, &u, entry) {
                tokio::time::sleep(left).await;
                break;
            }
            tokio::time::sleep(left.min(RETIRE_POLL)).await;
        }
    }
}

impl Follow {
    /// Applies one answer to the entry's addresses; returns when to resolve again.
    fn apply(
        &mut self,
        h: &Handles,
        u: &UpstreamConfig,
        entry: &str,
        answer: Answer,
        startup: bool,
    ) -> Duration {
        let result = answer.result_label();
        h.metrics.dns_resolution(&u.name, entry, result.metric());
        let make_before_break = u.health_check.is_some() && !startup;
        let (change, next) = h.live.registry.discovered.update(&u.name, entry, |r| {
            r.resolved_at_ms = unix_ms();
            r.result = result.text();
            let before: Vec<SocketAddr> = r.current.iter().map(|f| f.addr).collect();
            let next = match answer {
                Answer::Found { v4, v6, ttl, stale } => {
                    self.gone_since = None;
                    replace(r, found(&r.current, [v4, v6], &stale), make_before_break);
                    self.found_next(ttl, stale.is_empty(), u.resolve_interval)
                }
                Answer::Gone { negative_ttl, .. } => {
                    self.gone(r, negative_ttl, u.resolve_interval, startup)
                }
                // Stale on error: the last good set stays.
                Answer::Failed(_) => self.failed(u.resolve_interval),
            };
            (changes(&before, &r.current), next)
        });
        self.report(h, u, entry, &result, startup);
        if !change.is_empty() {
            let msg = format!("{}/{entry}: {}", u.name, change.join(" "));
            tracing::info!("DNS: {msg}");
            h.events.record_about("dns", msg, Some(&u.name), None);
            if !startup {
                h.live.rebuild_and_retire();
                h.live.changed.notify_waiters();
            }
        }
        next
    }

    /// When to resolve again after an answer (`complete`: no SRV target failed, else the
    /// failing ones are asked again with the failures' backoff).
    fn found_next(&mut self, ttl: Duration, complete: bool, interval: Duration) -> Duration {
        if complete {
            self.failures = 0;
            ttl.clamp(MIN_INTERVAL, interval)
        } else {
            self.failed(interval).min(ttl.clamp(MIN_INTERVAL, interval))
        }
    }

    /// Counts a failure; its backoff (doubling from [`MIN_INTERVAL`], at most `interval`).
    fn failed(&mut self, interval: Duration) -> Duration {
        self.failures += 1;
        let backoff = MIN_INTERVAL * 2u32.saturating_pow(self.failures - 1);
        backoff.min(interval)
    }

    /// NXDOMAIN or NODATA: the addresses go once the negative TTL (else `interval`) has passed
    /// since the first such answer, at once at start-up; returns when to resolve again.
    fn gone(
        &mut self,
        r: &mut Resolved,
        negative_ttl: Option<Duration>,
        interval: Duration,
        startup: bool,
    ) -> Duration {
        self.failures = 0;
        let now = Instant::now();
        let wait = negative_ttl.unwrap_or(interval);
        let (since, wait) = *self.gone_since.get_or_insert((now, wait));
        let left = (since + wait).saturating_duration_since(now);
        if left.is_zero() || startup {
            replace(r, Vec::new(), false);
            interval
        } else {
            left.clamp(MIN_INTERVAL, interval)
        }
    }

    /// Logs a change of the entry's result, and records it as an event (at start-up, failures
    /// only).
    fn report(
        &mut self,
        h: &Handles,
        u: &UpstreamConfig,
        entry: &str,
        result: &resolve::ResultLabel,
        startup: bool,
    ) {
        let text = result.text();
        if text == self.last_result {
            return;
        }
        match result {
            resolve::ResultLabel::Ok => {
                tracing::info!(upstream = u.name, name = entry, "DNS: resolves again")
            }
            _ => tracing::warn!(upstream = u.name, name = entry, "DNS: {text}"),
        }
        if !startup || !matches!(result, resolve::ResultLabel::Ok) {
            let msg = format!("{}/{entry}: {text}", u.name);
            h.events.record_about("dns", msg, Some(&u.name), None);
        }
        self.last_result = text;
    }
}

/// The entry's addresses after an answer: each family as the answer says (its own addresses,
/// the `current` ones kept, or none), and the `current` addresses of SRV targets that failed
/// (`stale`, per family).
fn found(current: &[Found], families: [Family; 2], stale: &[Stale]) -> Vec<Found> {
    let mut next: Vec<Found> = Vec::new();
    for (fam, is_v4) in families.iter().zip([true, false]) {
        match fam {
            Family::Set(found) => next.extend(found.iter().cloned()),
            Family::Keep => next.extend(
                current
                    .iter()
                    .filter(|f| f.addr.is_ipv4() == is_v4)
                    .cloned(),
            ),
            Family::Clear => {}
        }
    }
    for st in stale {
        let kept: Vec<Found> = current
            .iter()
            .filter(|f| f.host == st.host)
            .filter(|f| if f.addr.is_ipv4() { st.v4 } else { st.v6 })
            .filter(|f| !next.iter().any(|c| c.addr == f.addr))
            .cloned()
            .collect();
        next.extend(kept);
    }
    next
}

/// `+addr` for each address `current` has that `before` had not, then `-addr` for each gone.
fn changes(before: &[SocketAddr], current: &[Found]) -> Vec<String> {
    let after: Vec<SocketAddr> = current.iter().map(|f| f.addr).collect();
    let added = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|a| format!("+{a}"));
    let removed = before
        .iter()
        .filter(|a| !after.contains(a))
        .map(|a| format!("-{a}"));
    added.chain(removed).collect()
}

/// Sets an entry's current addresses. Addresses that left become retiring when `make_before_break`
/// (active checks: they serve until a current address passes one), else they go at once.
fn replace(r: &mut Resolved, current: Vec<Found>, make_before_break: bool) {
    let left: Vec<Found> = r
        .current
        .iter()
        .filter(|f| !current.iter().any(|c| c.addr == f.addr))
        .cloned()
        .collect();
    r.retiring
        .retain(|f| !current.iter().any(|c| c.addr == f.addr));
    if make_before_break && !current.is_empty() {
        for f in left {
            if !r.retiring.iter().any(|x| x.addr == f.addr) {
                r.retiring.push(f);
            }
        }
    } else {
        r.retiring.clear();
    }
    r.current = current;
}

/// Drops the entry's retiring addresses once one of its current addresses is usable; true when
/// nothing is retiring (any more).
fn retire_if_ready(h: &Handles, u: &UpstreamConfig, entry: &str) -> bool {
    let Some(r) = h.live.registry.discovered.get(&u.name, entry) else {
        return true;
    };
    if r.retiring.is_empty() {
        return true;
    }
    let snap = h.live.snapshot.load();
    let usable_now = snap.upstream(&u.name).is_some_and(|up| {
        up.backends
            .iter()
            .any(|b| b.available() && r.current.iter().any(|f| f.addr.to_string() == b.address))
    });
    if !usable_now {
        return false;
    }
    let gone = h
        .live
        .registry
        .discovered
        .update(&u.name, entry, |r| std::mem::take(&mut r.retiring));
    let list: Vec<String> = gone.iter().map(|f| format!("-{}", f.addr)).collect();
    let msg = format!(
        "{}/{entry}: a new address is usable; retiring {}",
        u.name,
        list.join(" ")
    );
    tracing::info!("DNS: {msg}");
    h.events.record_about("dns", msg, Some(&u.name), None);
    h.live.rebuild_and_retire();
    true
}

/// For `lb --check`: a warning line (`FILE: KEY: warning: ...`) for each discovered entry that
/// does not resolve now through the configured resolver (lb starts anyway and keeps asking).
/// Runs its own small runtime: for the check command only.
pub fn check_names(config: &crate::config::Config, file: &std::path::Path) -> Vec<String> {
    let entries: Vec<(String, &crate::config::BackendConfig)> = config
        .upstreams
        .iter()
        .flat_map(|u| {
            u.backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.discovery.is_some())
                .map(move |(i, b)| (format!("upstreams.{}.backends[{i}]", u.name), b))
        })
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let resolver = match resolve::resolver(config.resolver.as_ref()) {
            Ok(r) => r,
            Err(e) => return vec![format!("{}: resolver: warning: {e}", file.display())],
        };
        let mut out = Vec::new();
        for (key, b) in entries {
            let d = b.discovery.as_ref().expect("filtered");
            let answer = resolve::lookup(&resolver, d, 1).await;
            if !matches!(answer, Answer::Found { .. }) {
                out.push(format!(
                    "{}: {key}: warning: {:?} does not resolve now ({}): lb starts anyway, and \
                     the entry has no backends until it does",
                    file.display(),
                    b.address,
                    answer.result_label().text()
                ));
            }
        }
        out
    })
}

/// For `--check`-style summaries: how an entry is followed.
pub fn describe(d: &Discovery) -> String {
    match d {
        Discovery::Name { host, port } => format!("A/AAAA {host} port {port}"),
        Discovery::Srv { name } => format!("SRV {name}"),
    }
}
