//! What DNS discovery found, per `(upstream, entry)` (`entry`: the backend entry as written,
//! `name:port` or the SRV name): the addresses that are backends now, the ones retiring (kept
//! serving until one of the new set is usable: make before break), and the last resolution's
//! time and result for `/status`. Written by the discovery tasks, read when snapshots are built.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// One discovered backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub addr: SocketAddr,
    /// The DNS name the address belongs to (the SRV target for SRV), for TLS server names.
    pub host: String,
    /// The weight (SRV: from the record; a name: the entry's own).
    pub weight: u32,
    /// SRV targets of a higher priority than the lowest are backups.
    pub backup: bool,
}

/// The state of one discovered entry.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub current: Vec<Found>,
    /// Addresses the last answers no longer have, still serving until a current one is usable.
    pub retiring: Vec<Found>,
    /// Unix ms of the last resolution (0: none yet).
    pub resolved_at_ms: u64,
    /// The last resolution's result: `ok`, `nxdomain`, `nodata`, or the error.
    pub result: String,
}

impl Resolved {
    /// Every address that is a backend now: current first, then retiring ones.
    pub fn backends(&self) -> impl Iterator<Item = &Found> {
        self.current.iter().chain(self.retiring.iter())
    }
}

/// `(upstream, entry)` → [`Resolved`].
#[derive(Debug, Default)]
pub struct Discovered {
    map: Mutex<HashMap<(String, String), Resolved>>,
}

impl Discovered {
    pub fn get(&self, upstream: &str, entry: &str) -> Option<Resolved> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(upstream.to_string(), entry.to_string())).cloned()
    }

    /// Changes one entry with `f`; returns what `f` returns.
    pub fn update<T>(&self, upstream: &str, entry: &str, f: impl FnOnce(&mut Resolved) -> T) -> T {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        f(map
            .entry((upstream.to_string(), entry.to_string()))
            .or_default())
    }

    /// Forgets entries no longer configured.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(u, e), _| keep(u, e));
    }
}
