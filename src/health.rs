//! Backend health: active checks (HTTP or TCP, rise/fall thresholds, jittered), passive ejection
//! (consecutive failures, doubling ejection time, `max_ejected_percent`) and the state changes they
//! cause. Every change is logged once with its reason and triggers a snapshot rebuild so balancers
//! only schedule usable backends. Checks run on their own connections and tasks.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{CheckKind, HealthCheckConfig, PassiveConfig};
use crate::runtime::Shared;
use crate::snapshot::Upstream;
use crate::state::backend::{BackendState, Health};
pub use crate::state::outcome::FailureKind;
use crate::util::time::process_ms;

/// Called on every failed attempt; ejects the backend after `consecutive_failures` in a row.
pub fn passive_failure(shared: &Arc<Shared>, up: &Upstream, i: usize, kind: FailureKind) {
    let b = &up.backends[i];
    b.state.errors.fetch_add(1, Relaxed);
    shared
        .metrics
        .upstream_error(up.name(), &b.address, kind.as_str());
    let p = &up.config.passive;
    if p.consecutive_failures == 0 {
        return;
    }
    let n = b.state.passive_failures.fetch_add(1, AcqRel) + 1;
    if n >= p.consecutive_failures && b.state.usable() {
        try_eject(
            shared,
            up,
            i,
            &format!("{n} consecutive failures: {}", kind.as_str()),
        );
    }
}

/// Called with each backend response status: success resets the failure run.
#[inline]
pub fn passive_response(shared: &Arc<Shared>, up: &Upstream, i: usize, status: u16) {
    if status >= 500 && up.config.passive.eject_on_5xx {
        passive_failure(shared, up, i, FailureKind::Status5xx);
    } else if up.backends[i].state.passive_failures.load(Relaxed) != 0 {
        up.backends[i].state.passive_failures.store(0, Relaxed);
    }
}

/// Ejects backend `i` unless that would leave more than `max_ejected_percent` of the upstream
/// unusable. Counting and ejecting happen under the upstream's ejection lock, so simultaneous
/// failures of several backends cannot all pass the check; every unusable backend counts (down,
/// checking and ejected alike). A refused ejection restarts the failure run, so the check runs
/// at most once per `consecutive_failures` failures.
fn try_eject(shared: &Arc<Shared>, up: &Upstream, i: usize, reason: &str) {
    let p = &up.config.passive;
    let b = &up.backends[i];
    {
        let _one_at_a_time = up.state.ejection.lock().unwrap_or_else(|e| e.into_inner());
        if !may_eject(up, p.max_ejected_percent) {
            b.state.passive_failures.store(0, Relaxed);
            tracing::debug!(
                upstream = up.name(),
                backend = b.address,
                "not ejected: max_ejected_percent reached"
            );
            return;
        }
        if b.state.state_cas(Health::Up, Health::Ejected).is_err() {
            return; // someone else changed it first
        }
    }
    let duration = ejection_duration(&b.state, p);
    b.state.passive_failures.store(0, Relaxed);
    announce(
        shared,
        up.name(),
        &b.address,
        Health::Up,
        Health::Ejected,
        &format!("{reason}; ejected for {duration:?}"),
    );
    let (shared, name, address, state) = (
        shared.clone(),
        up.name().to_string(),
        b.address.clone(),
        b.state.clone(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        if state.state_cas(Health::Ejected, Health::Up).is_ok() {
            state.returned_at_ms.store(process_ms(), Relaxed);
            announce(
                &shared,
                &name,
                &address,
                Health::Ejected,
                Health::Up,
                "ejection expired",
            );
        }
    });
}

/// Whether one more backend of `up` may become unusable within `max_percent`.
fn may_eject(up: &Upstream, max_percent: u32) -> bool {
    let unusable = up.backends.iter().filter(|b| !b.state.usable()).count();
    (unusable + 1) * 100 <= max_percent as usize * up.backends.len()
}

/// `ejection_time × 2^(n-1)` for the n-th ejection in a row, capped at `max_ejection_time`. The
/// run resets once a backend has stayed in for `max_ejection_time`.
fn ejection_duration(state: &BackendState, p: &PassiveConfig) -> Duration {
    let last_return = state.returned_at_ms.load(Relaxed);
    if last_return != 0
        && process_ms().saturating_sub(last_return) > p.max_ejection_time.as_millis() as u64
    {
        state.ejections.store(0, Relaxed);
    }
    let n = state.ejections.fetch_add(1, AcqRel).min(20);
    p.ejection_time
        .saturating_mul(1 << n)
        .min(p.max_ejection_time)
}

/// Logs a state change once, records it in the timeline and rebuilds the snapshot.
pub fn announce(
    shared: &Shared,
    upstream: &str,
    address: &str,
    from: Health,
    to: Health,
    reason: &str,
) {
    let msg = format!(
        "{upstream}/{address}: {} -> {} ({reason})",
        from.as_str(),
        to.as_str()
    );
    if to == Health::Up {
        tracing::info!(
            upstream,
            backend = address,
            from = from.as_str(),
            to = to.as_str(),
            reason,
            "backend state change"
        );
    } else {
        tracing::warn!(
            upstream,
            backend = address,
            from = from.as_str(),
            to = to.as_str(),
            reason,
            "backend state change"
        );
    }
    shared.event("backend", msg);
    shared.rebuild();
    let snap = shared.snapshot.load();
    if let Some(u) = snap.upstream(upstream) {
        let usable = u.backends.iter().filter(|b| b.state.usable()).count();
        let checking = u
            .backends
            .iter()
            .any(|b| b.state.state() == Health::Checking);
        if usable == 0 && !checking {
            tracing::error!(
                upstream,
                "no usable backend: requests get 503 until one recovers"
            );
            shared.event("upstream", format!("{upstream}: no usable backend"));
        } else if to == Health::Up && usable == 1 {
            shared.event("upstream", format!("{upstream}: serving again"));
        }
    }
}

/// Result of one active check.
pub type CheckResult = Result<(), String>;

/// Runs one check against `addr`, bounded by the check's timeout.
pub async fn check_once(hc: &HealthCheckConfig, addr: std::net::SocketAddr) -> CheckResult {
    match tokio::time::timeout(hc.timeout, probe(hc, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", hc.timeout)),
    }
}

async fn probe(hc: &HealthCheckConfig, addr: std::net::SocketAddr) -> CheckResult {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| io_reason(&e))?;
    if hc.kind == CheckKind::Tcp {
        return Ok(());
    }
    let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health-check\r\nConnection: close\r\n\r\n",
        hc.path
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = stream
            .read(&mut buf[n..])
            .await
            .map_err(|e| io_reason(&e))?;
        if r == 0 {
            return Err("connection closed before a status line".into());
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "invalid HTTP status line".to_string())?;
    let (lo, hi) = hc.expected_status;
    if (lo..=hi).contains(&code) {
        Ok(())
    } else {
        Err(format!("status {code}"))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// Applies one check result to a backend's counters and state.
pub fn apply_check(
    shared: &Shared,
    upstream: &str,
    address: &str,
    hc: &HealthCheckConfig,
    state: &BackendState,
    result: CheckResult,
) {
    shared
        .metrics
        .health_check(upstream, address, result.is_ok());
    let (from, to, reason) = {
        let mut c = state.check.lock().unwrap_or_else(|e| e.into_inner());
        let current = state.state();
        match &result {
            Ok(()) => {
                c.failures = 0;
                c.passes += 1;
                c.last_error = None;
                let rise = current == Health::Checking
                    || (current == Health::Down && c.passes >= hc.healthy_threshold);
                if !rise {
                    return;
                }
                (
                    current,
                    Health::Up,
                    format!("{} consecutive passing checks", c.passes),
                )
            }
            Err(why) => {
                c.passes = 0;
                c.failures += 1;
                c.last_error = Some(why.clone());
                let fall = current == Health::Checking
                    || (matches!(current, Health::Up | Health::Ejected)
                        && c.failures >= hc.unhealthy_threshold);
                if !fall {
                    return;
                }
                (
                    current,
                    Health::Down,
                    format!("{} consecutive failures: {why}", c.failures),
                )
            }
        }
    };
    if state.state_cas(from, to).is_ok() {
        announce(shared, upstream, address, from, to, &reason);
    }
}

/// One round of checks on every health-checked backend, concurrently (used at start-up, before
/// lb takes traffic, so a dead backend never sees the first requests).
pub async fn initial_round(shared: &Shared) {
    let snap = shared.snapshot.load_full();
    let mut tasks = Vec::new();
    for up in &snap.upstreams {
        let Some(hc) = up.config.health_check.clone() else {
            continue;
        };
        for (i, b) in up.backends.iter().enumerate() {
            let (hc, addr) = (hc.clone(), up.config.backends[i].addr);
            let (name, address, state) =
                (up.name().to_string(), b.address.clone(), b.state.clone());
            tasks.push(async move {
                let r = check_once(&hc, addr).await;
                (name, address, state, hc, r)
            });
        }
    }
    for (name, address, state, hc, r) in join_spawned(tasks).await {
        apply_check(shared, &name, &address, &hc, &state, r);
        // Backends present at start-up have no warm peers to protect: no slow start for them.
        state.up_since_ms.store(0, Relaxed);
    }
    shared.rebuild();
}

async fn join_spawned<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Keeps one checker task per health-checked backend of the current snapshot. Tasks look
/// themselves up in the latest snapshot each round and stop when their backend or check is gone.
pub async fn supervise(shared: Arc<Shared>) {
    let running: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>> =
        Default::default();
    loop {
        let snap = shared.snapshot.load_full();
        for up in &snap.upstreams {
            if up.config.health_check.is_none() {
                continue;
            }
            for b in &up.backends {
                let key = (up.name().to_string(), b.address.clone());
                if running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone())
                {
                    let (shared, running) = (shared.clone(), running.clone());
                    tokio::spawn(async move {
                        check_loop(&shared, &key.0, &key.1).await;
                        running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                    });
                }
            }
        }
        if snap.upstreams.iter().any(|u| u.ramping()) {
            shared.rebuild(); // slow start: let effective weights grow
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), shared.changed.notified()).await;
    }
}

async fn check_loop(shared: &Shared, upstream: &str, address: &str) {
    let mut first = true;
    loop {
        let (hc, addr, state) = {
            let snap = shared.snapshot.load();
            let Some(up) = snap.upstream(upstream) else {
                return;
            };
            let Some(hc) = up.config.health_check.clone() else {
                return;
            };
            let Some(i) = up.backends.iter().position(|b| b.address == address) else {
                return;
            };
            (hc, up.config.backends[i].addr, up.backends[i].state.clone())
        };
        // Spread checks over the interval instead of hitting every backend at once.
        let wait = if first && state.state() == Health::Checking {
            Duration::ZERO
        } else if first {
            hc.interval.mul_f64(fastrand::f64())
        } else {
            hc.interval.mul_f64(0.9 + 0.2 * fastrand::f64())
        };
        first = false;
        tokio::time::sleep(wait).await;
        let r = check_once(&hc, addr).await;
        if is_current(shared, upstream, address, &state) {
            apply_check(shared, upstream, address, &hc, &state, r);
        }
    }
}

/// Whether `state` is still the state of this backend in the live snapshot, and the backend is
/// still actively checked. A check takes time; if meanwhile the backend was removed (and perhaps
/// added again, with fresh state) or its upstream's check was removed, the result belongs to
/// nobody.
fn is_current(shared: &Shared, upstream: &str, address: &str, state: &Arc<BackendState>) -> bool {
    let snap = shared.snapshot.load();
    snap.upstream(upstream)
        .filter(|u| u.config.health_check.is_some())
        .and_then(|u| u.backends.iter().find(|b| b.address == address))
        .is_some_and(|b| Arc::ptr_eq(&b.state, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Shared` with one upstream `api` of `backends` backends, then `tables` (TOML).
    fn shared(tables: &str, backends: usize) -> (Arc<Shared>, std::path::PathBuf) {
        let list: Vec<String> = (0..backends)
            .map(|i| format!("\"127.0.0.1:{}\"", 10 + i))
            .collect();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [{}]\n{tables}\n",
            list.join(", ")
        );
        let dir = std::env::temp_dir().join(format!(
            "lb-health-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.toml");
        std::fs::write(&path, &text).unwrap();
        let config = crate::config::parse(&text).unwrap();
        (Shared::new(config, &path, 0), path)
    }

    fn states(shared: &Shared) -> Vec<Health> {
        let snap = shared.snapshot.load();
        snap.upstreams[0]
            .backends
            .iter()
            .map(|b| b.state.state())
            .collect()
    }

    #[tokio::test]
    async fn ejection_cap_counts_down_backends() {
        let (shared, _) = shared(
            "[upstreams.api.passive]\nconsecutive_failures = 1\nmax_ejected_percent = 50",
            3,
        );
        let snap = shared.snapshot.load_full();
        let up = &snap.upstreams[0];
        up.backends[0].state.set_state(Health::Down);
        // One down and one ejected would leave 2 of 3 (67 %) unusable.
        passive_failure(&shared, up, 1, FailureKind::Reset);
        assert_eq!(states(&shared), vec![Health::Down, Health::Up, Health::Up]);
    }

    #[tokio::test]
    async fn check_result_for_a_replaced_backend_is_dropped() {
        let (shared, path) = shared("[upstreams.api.health_check]\ninterval = \"1h\"", 2);
        let old = shared.snapshot.load().upstreams[0].backends[1]
            .state
            .clone();
        let text = std::fs::read_to_string(&path).unwrap();
        let without = text.replace(", \"127.0.0.1:11\"", "");
        std::fs::write(&path, &without).unwrap();
        assert!(shared.reload("test").ok);
        std::fs::write(&path, &text).unwrap();
        assert!(shared.reload("test").ok);
        assert!(!is_current(&shared, "api", "127.0.0.1:11", &old));
        let new = shared.snapshot.load().upstreams[0].backends[1]
            .state
            .clone();
        assert!(is_current(&shared, "api", "127.0.0.1:11", &new));
        // The removed backend's old state is never usable again, whatever snapshot lists it.
        assert!(old.is_draining() && !old.usable());
    }
}
