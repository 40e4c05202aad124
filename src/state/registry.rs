//! The registry of per-backend and per-upstream state, keyed by [`BackendKey`]: snapshots take
//! their backends' state from it, so a reload (or a rebuild) carries every backend that is still
//! configured over untouched. Touched only when snapshots are built, never per request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use super::backend::{BackendState, Health, UpstreamState};
use super::fault::FaultCounts;
use super::limit::Limiters;
use super::stats::RequestStats;
use crate::util::time::process_ms;

/// A backend's identity: the upstream it belongs to and its address (as written in the config;
/// `ip:port` for an address DNS discovery found, whose name the snapshot's backend carries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub upstream: String,
    pub address: String,
}

impl BackendKey {
    pub fn new(upstream: &str, address: &str) -> BackendKey {
        BackendKey {
            upstream: upstream.to_string(),
            address: address.to_string(),
        }
    }
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.upstream, self.address)
    }
}

/// A removed backend, keyed by `(upstream, address)`, still finishing requests.
pub type Draining = (BackendKey, Arc<BackendState>);

/// `(upstream, address)` → state. Touched only when snapshots are built, never per request.
#[derive(Default, Debug)]
pub struct Registry {
    map: Mutex<HashMap<BackendKey, Arc<BackendState>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamState>>>,
    /// Set once the first snapshot is built: backends that appear later slow-start.
    started: std::sync::atomic::AtomicBool,
    /// The addresses of DNS-discovered backend entries.
    pub discovered: super::discovery::Discovered,
    /// `[rate_limits]` tables by name.
    pub limits: Limiters,
    /// Injected-fault counts by route label.
    faults: Mutex<HashMap<String, Arc<FaultCounts>>>,
    /// The producers of `kafka` routes.
    pub kafka: super::kafka::Producers,
}

impl Registry {
    /// The existing state for this backend, or a fresh one starting in `initial`.
    pub fn get_or_insert(
        &self,
        upstream: &str,
        address: &str,
        initial: Health,
    ) -> Arc<BackendState> {
        let ramp_new = self.started.load(Relaxed);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(BackendKey::new(upstream, address))
            .or_insert_with(|| {
                let s = Arc::new(BackendState::new(initial));
                // Present at start-up: full weight at once. Added later (reload, discovery) and
                // usable without a check: slow-start from now (with checks: from the first pass).
                let since = if initial == Health::Up && ramp_new {
                    process_ms()
                } else {
                    0
                };
                s.up_since_ms.store(since, Relaxed);
                s
            })
            .clone()
    }

    /// The state of a backend, if the registry has it.
    pub fn get(&self, upstream: &str, address: &str) -> Option<Arc<BackendState>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&BackendKey::new(upstream, address)).cloned()
    }

    /// Marks the end of start-up: backends created from now on slow-start.
    pub fn finish_startup(&self) {
        self.started.store(true, Relaxed);
    }

    /// The shared per-upstream state (balancer position, ejection lock, own-answer stats);
    /// `""` holds the stats of requests no route matched.
    pub fn upstream(&self, name: &str) -> Arc<UpstreamState> {
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// Stats of lb's own answers for `upstream` (kept across reloads).
    pub fn own_stats(&self, upstream: &str) -> Arc<RequestStats> {
        self.upstream(upstream).own.clone()
    }

    /// The fault counts of the route labelled `label` (kept across reloads).
    pub fn fault_counts(&self, label: &str) -> Arc<FaultCounts> {
        let mut map = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(label.to_string()).or_default().clone()
    }

    /// Drops the counts of routes that no longer have a fault.
    pub fn retain_faults(&self, labels: &HashSet<&str>) {
        let mut map = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|label, _| labels.contains(label.as_str()));
    }

    /// Drops the per-upstream state (own-answer stats, balancer position) of upstreams no longer
    /// configured (`""`, no route, stays).
    pub fn retain_upstreams(&self, upstreams: &HashSet<String>) {
        let mut state = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        state.retain(|name, _| name.is_empty() || upstreams.contains(name));
    }

    /// Drops every entry not in `keep`; returns the removed states (still referenced by in-flight
    /// requests, which finish normally).
    pub fn retain(&self, keep: &HashSet<BackendKey>) -> Vec<Draining> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<_> = map.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        gone.into_iter()
            .filter_map(|k| map.remove(&k).map(|s| (k, s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keeps_state_by_key() {
        let r = Registry::default();
        let a = r.get_or_insert("api", "127.0.0.1:1", Health::Up);
        a.set_state(Health::Down);
        let b = r.get_or_insert("api", "127.0.0.1:1", Health::Up);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.state(), Health::Down);
        let c = r.get_or_insert("web", "127.0.0.1:1", Health::Up);
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
