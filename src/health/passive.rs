//! Passive health: failed attempts and 5xx answers (when configured) counted per backend; after
//! `consecutive_failures` in a row the backend is ejected for `ejection_time`, doubling on each
//! repeated ejection up to `max_ejection_time`, never past `max_ejected_percent` of its upstream.
//! Every failed attempt on a backend is counted ([`count_failure`]: its `errors` and
//! `lb_upstream_errors_total{kind}`), also one the request path does not hold against it (a
//! stale pooled connection); only those it does ([`passive_failure`]) make the failure run.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use super::announce;
use crate::config::PassiveConfig;
use crate::runtime::Shared;
use crate::snapshot::Upstream;
use crate::state::backend::{BackendState, Health};
use crate::state::outcome::{FailureKind, Reason};
use crate::util::time::process_ms;

/// Counts one failed attempt on backend `i` under its kind (once per attempt, whoever is blamed).
pub fn count_failure(shared: &Shared, up: &Upstream, i: usize, kind: FailureKind) {
    let b = &up.backends[i];
    b.state.errors.fetch_add(1, Relaxed);
    shared
        .metrics
        .upstream_error(up.name(), &b.address, kind.as_str());
}

/// Called on every failed attempt held against the backend: counts it ([`count_failure`]) and
/// ejects the backend after `consecutive_failures` in a row, with `reason` (the last failure's)
/// in the announcement.
pub fn passive_failure(
    shared: &Arc<Shared>,
    up: &Upstream,
    i: usize,
    kind: FailureKind,
    reason: Reason,
) {
    count_failure(shared, up, i, kind);
    let b = &up.backends[i];
    let p = &up.config.passive;
    if p.consecutive_failures == 0 {
        return;
    }
    let n = b.state.passive_failures.fetch_add(1, AcqRel) + 1;
    if n >= p.consecutive_failures && b.state.usable() {
        try_eject(shared, up, i, &super::failures(n, reason));
    }
}

/// Called with each backend response status: success resets the failure run.
#[inline]
pub fn passive_response(shared: &Arc<Shared>, up: &Upstream, i: usize, status: u16) {
    if status >= 500 && up.config.passive.eject_on_5xx {
        passive_failure(
            shared,
            up,
            i,
            FailureKind::Status5xx,
            Reason::Status(status),
        );
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
        &shared.live,
        &shared.events,
        up.name(),
        &b.address,
        Health::Up,
        Health::Ejected,
        &format!("{reason}; ejected for {duration:?}"),
    );
    let (live, events, name, address, state) = (
        shared.live.clone(),
        shared.events.clone(),
        up.name().to_string(),
        b.address.clone(),
        b.state.clone(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        if state.state_cas(Health::Ejected, Health::Up).is_ok() {
            state.returned_at_ms.store(process_ms(), Relaxed);
            announce(
                &live,
                &events,
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
    within_cap(unusable, up.backends.len(), max_percent)
}

/// Whether `unusable + 1` of `total` backends is at most `max_percent` percent.
fn within_cap(unusable: usize, total: usize, max_percent: u32) -> bool {
    (unusable + 1) * 100 <= max_percent as usize * total
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

#[cfg(test)]
mod tests {
    use super::super::testing::{shared, states};
    use super::*;

    #[test]
    fn ejection_cap_math() {
        // 50 % of 2: one may go, not two.
        assert!(within_cap(0, 2, 50));
        assert!(!within_cap(1, 2, 50));
        // 50 % of 3 is 1.5: one, not two.
        assert!(within_cap(0, 3, 50) && !within_cap(1, 3, 50));
        // 0 % never ejects; 100 % may eject the last one.
        assert!(!within_cap(0, 4, 0));
        assert!(within_cap(3, 4, 100));
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
        passive_failure(&shared, up, 1, FailureKind::Reset, Reason::Text("reset"));
        assert_eq!(states(&shared), vec![Health::Down, Health::Up, Health::Up]);
    }
}
