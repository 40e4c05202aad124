//! Active health checks: one task per checked backend, an HTTP `GET` (or a TCP connect) every
//! `interval` with jitter, bounded by `timeout`; `healthy_threshold` passes bring a backend up,
//! `unhealthy_threshold` failures take it down. At start-up one round runs before lb takes traffic.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::announce;
use crate::config::{CheckKind, HealthCheckConfig};
use crate::runtime::Shared;
use crate::state::backend::{BackendState, Health};
use crate::state::registry::BackendKey;

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
    let running: Arc<std::sync::Mutex<std::collections::HashSet<BackendKey>>> = Default::default();
    loop {
        let snap = shared.snapshot.load_full();
        for up in &snap.upstreams {
            if up.config.health_check.is_none() {
                continue;
            }
            for b in &up.backends {
                let key = BackendKey::new(up.name(), &b.address);
                if running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone())
                {
                    let (shared, running) = (shared.clone(), running.clone());
                    tokio::spawn(async move {
                        check_loop(&shared, &key.upstream, &key.address).await;
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
    use super::super::testing::shared;
    use super::*;

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
