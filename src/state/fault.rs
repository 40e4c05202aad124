//! The counts of injected faults (`lb_faults_injected_total`), one pair per route label, kept
//! in the registry so that a reload goes on counting.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Faults injected into one route's requests.
#[derive(Debug, Default)]
pub struct FaultCounts {
    delays: AtomicU64,
    aborts: AtomicU64,
}

impl FaultCounts {
    pub fn delayed(&self) {
        self.delays.fetch_add(1, Relaxed);
    }

    pub fn aborted(&self) {
        self.aborts.fetch_add(1, Relaxed);
    }

    /// `(kind, count)` for each kind, as the metric's `kind` label names it.
    pub fn counts(&self) -> [(&'static str, u64); 2] {
        [
            ("abort", self.aborts.load(Relaxed)),
            ("delay", self.delays.load(Relaxed)),
        ]
    }
}
