//! Backend health: [`active`] checks (HTTP or TCP, rise/fall thresholds, jittered) and
//! [`passive`] ejection (consecutive failures, doubling ejection time, `max_ejected_percent`), and
//! the state changes they cause ([`announce`]): every change is logged once with its reason and
//! triggers a snapshot rebuild so balancers only schedule usable backends.

pub mod active;
pub mod passive;

pub use crate::state::outcome::{FailureKind, Reason};
pub use active::{initial_round, supervise};
pub use passive::{count_failure, passive_failure, passive_response};

use crate::runtime::{Events, Live};
use crate::state::backend::Health;

/// The reason of a state change after `n` failures in a row, the last for `why`:
/// `2 consecutive failures: connection refused`.
fn failures(n: u32, why: impl std::fmt::Display) -> String {
    if n == 1 {
        format!("1 failure: {why}")
    } else {
        format!("{n} consecutive failures: {why}")
    }
}

/// Logs a state change once, records it in the timeline and rebuilds the snapshot.
pub fn announce(
    live: &Live,
    events: &Events,
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
    // One line, at `info` for a recovery and `warn` otherwise (a tracing level is per call site).
    macro_rules! state_change {
        ($level:ident) => {
            tracing::$level!(
                upstream,
                backend = address,
                from = from.as_str(),
                to = to.as_str(),
                reason,
                "backend state change"
            )
        };
    }
    if to == Health::Up {
        state_change!(info);
    } else {
        state_change!(warn);
    }
    events.record_about("backend", msg, Some(upstream), Some(address));
    live.rebuild();
    let snap = live.snapshot.load();
    if let Some(u) = snap.upstream(upstream) {
        let usable = u.backends.iter().filter(|b| b.available()).count();
        let checking = u
            .backends
            .iter()
            .any(|b| b.state.state() == Health::Checking);
        if usable == 0 && !checking {
            tracing::error!(
                upstream,
                "no usable backend: requests get 503 until one recovers"
            );
            let msg = format!("{upstream}: no usable backend");
            events.record_about("upstream", msg, Some(upstream), None);
        } else if to == Health::Up && usable == 1 {
            let msg = format!("{upstream}: serving again");
            events.record_about("upstream", msg, Some(upstream), None);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A `Shared` to drive health logic in unit tests.
    use std::sync::Arc;

    use crate::runtime::Shared;
    use crate::state::backend::Health;

    /// A `Shared` with one upstream `api` of `backends` backends, then `tables` (TOML).
    pub fn shared(tables: &str, backends: usize) -> (Arc<Shared>, std::path::PathBuf) {
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

    pub fn states(shared: &Shared) -> Vec<Health> {
        let snap = shared.snapshot.load();
        snap.upstreams[0]
            .backends
            .iter()
            .map(|b| b.state.state())
            .collect()
    }
}
