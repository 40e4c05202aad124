//! A snapshot's upstreams and their backends: each backend's state taken from the registry,
//! its slow-start weight, its peer; addresses DNS discovery found become backends of their own.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;

use super::peer::{make_peer, pool_key};
use crate::balance::{Balancer, Candidate, WEIGHT_SCALE};
use crate::config::{host_of, BackendConfig, UpstreamConfig};
use crate::state::backend::{BackendState, Health, UpstreamState};
use crate::state::discovery::Resolved;
use crate::state::registry::Registry;

/// One backend of one upstream, as of this snapshot.
#[derive(Debug)]
pub struct Backend {
    pub address: String,
    pub weight: u32,
    /// Weight after slow start, in thousandths ([`WEIGHT_SCALE`]).
    pub effective: u64,
    /// Built once per snapshot so requests only clone it.
    pub peer: HttpPeer,
    /// Identifies the backend's connections in the idle pools: its upstream (which fixes how lb
    /// connects: protocol, TLS, CA) and pingora's `reuse_hash` of the peer (address, server name,
    /// verification). Connections are never shared between upstreams, as in NGINX.
    pub pool_key: u64,
    pub state: Arc<BackendState>,
    pub backup: bool,
    pub down: bool,
    pub max_conns: u32,
    /// For an address DNS discovery found: the entry it came from (`name:port`, SRV name).
    pub name: Option<Arc<str>>,
    /// `hash_name`: what `consistent_hash` places on its ring instead of `address`.
    pub hash_name: Option<Arc<str>>,
}

impl Candidate for Backend {
    fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
    fn weight(&self) -> u64 {
        self.effective
    }
    fn backup(&self) -> bool {
        self.backup
    }
    fn down(&self) -> bool {
        self.down
    }
    fn max_conns(&self) -> u64 {
        self.max_conns as u64
    }
    fn name(&self) -> &str {
        self.hash_name.as_deref().unwrap_or(&self.address)
    }
}

impl Backend {
    /// Weight after slow start, as shown in `/status` (fractional while ramping).
    pub fn effective_weight(&self) -> f64 {
        self.effective as f64 / WEIGHT_SCALE as f64
    }

    /// Usable and not configured `down` (its `max_conns` aside).
    #[inline]
    pub fn available(&self) -> bool {
        !self.down && self.state.usable()
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub config: UpstreamConfig,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    /// Shared with the upstream's other snapshots (balancer position, ejection lock, stats of
    /// lb's own answers).
    pub state: Arc<UpstreamState>,
    /// Indexes into [`super::Snapshot::limits`] of its `rate_limits`.
    pub limits: Box<[usize]>,
}

impl Upstream {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True while some backend is still ramping up under slow start.
    pub fn ramping(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.effective < b.weight as u64 * WEIGHT_SCALE && b.state.usable())
    }

    /// Whether some backend could take a request now, `max_conns` aside.
    pub fn has_available(&self) -> bool {
        self.backends.iter().any(Backend::available)
    }

    /// Whether every backend that could take a request is at its `max_conns`.
    pub fn saturated(&self) -> bool {
        let mut available = self.backends.iter().filter(|b| b.available()).peekable();
        available.peek().is_some() && available.all(crate::balance::at_limit)
    }
}

impl Upstream {
    /// The upstream `u`, each backend's state taken from (or created in) `registry`; `limits`:
    /// indexes into [`super::Snapshot::limits`] of its `rate_limits`.
    pub(super) fn build(u: &UpstreamConfig, registry: &Registry, limits: Box<[usize]>) -> Upstream {
        let initial = if u.health_check.is_some() {
            Health::Checking
        } else {
            Health::Up
        };
        // What discovery found for each discovered entry, in the entries' order.
        let found: Vec<Resolved> = u
            .backends
            .iter()
            .filter(|b| b.discovery.is_some())
            .map(|b| {
                registry
                    .discovered
                    .get(&u.name, &b.address)
                    .unwrap_or_default()
            })
            .collect();
        let backends: Vec<Backend> = specs(u, &found)
            .into_iter()
            .map(|(b, spec)| Backend::build(u, b, spec, registry, initial))
            .collect();
        let state = registry.upstream(&u.name);
        Upstream {
            balancer: Balancer::new(u.strategy, &backends, state.clone()),
            state,
            config: u.clone(),
            backends,
            limits,
        }
    }
}

/// What a snapshot backend is made from: a configured address, or one DNS discovery found.
struct Spec<'a> {
    address: Cow<'a, str>,
    addr: SocketAddr,
    /// The server name for TLS (a host name, else none).
    host: Option<&'a str>,
    weight: u32,
    backup: bool,
    /// The discovered entry (`name:port` or the SRV name) the address came from.
    name: Option<Arc<str>>,
}

/// The backends of `u` in order: configured addresses as written, each discovered entry's
/// addresses (`found`: one [`Resolved`] per discovered entry, in order) where it is written.
fn specs<'a>(u: &'a UpstreamConfig, found: &'a [Resolved]) -> Vec<(&'a BackendConfig, Spec<'a>)> {
    let mut found = found.iter();
    let mut specs: Vec<(&BackendConfig, Spec)> = Vec::with_capacity(u.backends.len());
    for b in &u.backends {
        if b.discovery.is_none() {
            let spec = Spec {
                address: Cow::Borrowed(&b.address),
                addr: b.addr,
                host: host_of(&b.address),
                weight: b.weight.get(),
                backup: b.backup,
                name: None,
            };
            specs.push((b, spec));
            continue;
        }
        let Some(resolved) = found.next() else {
            continue;
        };
        let name: Arc<str> = b.address.as_str().into();
        for f in resolved.backends() {
            let address = f.addr.to_string();
            // An address listed twice (statically, or by two names) is one backend.
            if specs.iter().any(|(_, s)| s.address == address)
                || u.backends
                    .iter()
                    .any(|c| c.discovery.is_none() && c.address == address)
            {
                continue;
            }
            let spec = Spec {
                address: Cow::Owned(address),
                addr: f.addr,
                host: Some(f.host.as_str()),
                weight: f.weight.max(1),
                backup: b.backup || f.backup,
                name: Some(name.clone()),
            };
            specs.push((b, spec));
        }
    }
    specs
}

impl Backend {
    /// The backend `spec` of `u` (configured as `b`), its state from `registry` (new ones start
    /// in `initial`), its weight after slow start.
    fn build(
        u: &UpstreamConfig,
        b: &BackendConfig,
        spec: Spec,
        registry: &Registry,
        initial: Health,
    ) -> Backend {
        let state = registry.get_or_insert(&u.name, &spec.address, initial);
        let weight = spec.weight;
        let full = weight as u64 * WEIGHT_SCALE;
        // Slow start would move keys between backends: hash strategies do without (NGINX).
        let ramp = if u.strategy.is_hash() {
            1.0
        } else {
            state.ramp(u.passive.slow_start)
        };
        let effective = ((full as f64 * ramp).round() as u64).clamp(1, full);
        let peer: HttpPeer = make_peer(u, spec.addr, spec.host);
        Backend {
            address: spec.address.into_owned(),
            weight,
            effective,
            pool_key: pool_key(&u.name, &peer),
            peer,
            state,
            backup: spec.backup,
            down: b.down,
            max_conns: b.max_conns,
            name: spec.name,
            hash_name: b.hash_name.as_deref().map(Arc::from),
        }
    }
}
