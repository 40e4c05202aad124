//! The live snapshot and what it is rebuilt from: the handle of every task that changes which
//! backends take requests (health checks, DNS discovery, reloads).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::snapshot::Snapshot;
use crate::state::registry::{BackendKey, Draining, Registry};

/// The one `ArcSwap<Snapshot>` (requests load it, [`crate::runtime::Shared::snapshot`] is the
/// same swap), the registry snapshots are built from, and the backends a rebuild retired.
pub struct Live {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub registry: Registry,
    /// Serialises snapshot rebuilds (never taken by requests).
    rebuild: Mutex<()>,
    /// Backends removed by a reload, listed in `/status` as `draining` while requests remain.
    pub draining: Mutex<Vec<Draining>>,
    /// Woken after each swap so the health supervisor can follow the new backend set.
    pub changed: tokio::sync::Notify,
}

impl Live {
    /// The first snapshot of `config`; backends present now start without slow start.
    pub fn new(config: Config) -> Live {
        let registry = Registry::default();
        let snapshot = Snapshot::build(Arc::new(config), &registry);
        registry.finish_startup();
        Live {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            registry,
            rebuild: Mutex::new(()),
            draining: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Rebuilds the snapshot from the current config (after health or slow-start changes), so the
    /// balancers' schedules only hold usable backends.
    pub fn rebuild(&self) {
        let _g = self.lock_rebuilds();
        self.store_rebuilt(self.snapshot.load().config.clone());
    }

    /// Builds a snapshot of `config` and swaps it in. Call with the rebuild lock held.
    fn store_rebuilt(&self, config: Arc<Config>) {
        self.snapshot
            .store(Arc::new(Snapshot::build(config, &self.registry)));
    }

    /// Backends in the registry that the live snapshot no longer has (removed by a reload, or
    /// an address DNS no longer gives) become draining: never picked again, listed until their
    /// last request ends. Call with the rebuild lock held, after storing the snapshot.
    pub fn retire_missing(&self) {
        let snap = self.snapshot.load();
        let keys: HashSet<BackendKey> = snap
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(move |b| BackendKey::new(u.name(), &b.address))
            })
            .collect();
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        // Re-added backends have fresh state in the registry; finished ones need no listing.
        draining.retain(|(k, s)| s.in_flight() > 0 && !keys.contains(k));
        for (key, gone) in self.registry.retain(&keys) {
            gone.set_draining();
            draining.push((key, gone));
        }
    }

    /// Rebuilds the snapshot and retires what it no longer has ([`retire_missing`]).
    ///
    /// [`retire_missing`]: Self::retire_missing
    pub fn rebuild_and_retire(&self) {
        let _g = self.lock_rebuilds();
        self.store_rebuilt(self.snapshot.load().config.clone());
        self.retire_missing();
    }

    /// Holds off every other rebuild while a reload builds and swaps in its snapshot.
    pub fn lock_rebuilds(&self) -> MutexGuard<'_, ()> {
        self.rebuild.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backends removed by a reload that still have requests in flight (finished ones are
    /// forgotten here).
    pub fn draining(&self) -> MutexGuard<'_, Vec<Draining>> {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|(_, s)| s.in_flight() > 0);
        draining
    }
}
