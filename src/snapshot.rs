//! The immutable view every request reads: routes, upstreams, balancers and pre-built peers. One
//! `ArcSwap<Snapshot>` load per request; a reload or a health change builds a new snapshot and swaps
//! it in whole, so no request ever sees half of one and half of another. Per-backend state comes from
//! the [`Registry`] and is shared with older snapshots.

use std::sync::Arc;

use pingora_core::upstreams::peer::{HttpPeer, Peer};

use crate::balance::{Balancer, Candidate, WEIGHT_SCALE};
use crate::config::{host_of, BackendConfig, Config, Protocol, UpstreamConfig};
use crate::state::backend::{BackendState, Health, UpstreamState};
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
}

impl Candidate for Backend {
    fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
    fn weight(&self) -> u64 {
        self.effective
    }
}

impl Backend {
    /// Weight after slow start, as shown in `/status` (fractional while ramping).
    pub fn effective_weight(&self) -> f64 {
        self.effective as f64 / WEIGHT_SCALE as f64
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
}

/// A compiled route: exact host (or any) and path prefix → upstream index.
#[derive(Debug)]
struct Route {
    host: Option<String>,
    prefix: String,
    upstream: usize,
}

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    routes: Vec<Route>,
    /// lb's 404s for requests no route matched.
    pub no_route: Arc<crate::state::stats::RequestStats>,
}

impl Snapshot {
    /// Builds a snapshot, taking (or creating) each backend's state from `registry`.
    pub fn build(config: Arc<Config>, registry: &Registry) -> Snapshot {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(build_upstream(u, registry)))
            .collect();
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .filter_map(|r| {
                Some(Route {
                    host: r.host.clone(),
                    prefix: r.path_prefix.clone(),
                    upstream: index(&r.upstream)?,
                })
            })
            .collect();
        // Longest prefix first; at equal length a host-specific route beats a wildcard one.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Snapshot {
            config,
            upstreams,
            routes,
            no_route: registry.own_stats(""),
        }
    }

    /// Index into `upstreams` of the upstream for a request.
    #[inline]
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if self.routes.is_empty() {
            return (!self.upstreams.is_empty()).then_some(0);
        }
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(r.prefix.as_str())
                    && match (&r.host, host) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                        (Some(_), None) => false,
                    }
            })
            .map(|r| r.upstream)
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn build_upstream(u: &UpstreamConfig, registry: &Registry) -> Upstream {
    let initial = if u.health_check.is_some() {
        Health::Checking
    } else {
        Health::Up
    };
    let backends: Vec<Backend> = u
        .backends
        .iter()
        .map(|b| {
            let state = registry.get_or_insert(&u.name, &b.address, initial);
            let weight = b.weight.get();
            let full = weight as u64 * WEIGHT_SCALE;
            let ramp = state.ramp(u.passive.slow_start);
            let effective = ((full as f64 * ramp).round() as u64).clamp(1, full);
            let peer = make_peer(u, b);
            Backend {
                address: b.address.clone(),
                weight,
                effective,
                pool_key: pool_key(&u.name, &peer),
                peer,
                state,
            }
        })
        .collect();
    let weights: Vec<u64> = backends.iter().map(|b| b.effective).collect();
    let usable: Vec<bool> = backends.iter().map(|b| b.state.usable()).collect();
    let state = registry.upstream(&u.name);
    Upstream {
        balancer: Balancer::new(u.strategy, &weights, &usable, state.clone()),
        state,
        config: u.clone(),
        backends,
    }
}

fn pool_key(upstream: &str, peer: &HttpPeer) -> u64 {
    let mut bytes = upstream.as_bytes().to_vec();
    bytes.extend_from_slice(&peer.reuse_hash().to_le_bytes());
    crate::util::hash::fnv1a64(&bytes)
}

/// Most streams lb opens at once on one HTTP/2 backend connection (pingora's default is 1).
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

fn make_peer(u: &UpstreamConfig, b: &BackendConfig) -> HttpPeer {
    let (tls, sni) = match &u.tls {
        None => (false, String::new()),
        Some(t) => {
            let sni = t
                .sni
                .clone()
                .or_else(|| host_of(&b.address).map(str::to_owned))
                .unwrap_or_default();
            (true, sni)
        }
    };
    let mut peer = HttpPeer::new(b.addr, tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(u.connect_timeout);
    o.read_timeout = Some(u.read_timeout);
    o.write_timeout = Some(u.write_timeout);
    o.idle_timeout = Some(u.idle_timeout);
    if let Some(t) = &u.tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca = t.ca.as_ref().map(|c| c.parsed.clone());
    }
    if u.protocol == Protocol::Http2 {
        // With TLS, ALPN offers h2 only; without, prior knowledge.
        o.set_http_version(2, 2);
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(text: &str) -> Snapshot {
        let c = crate::config::parse(text).unwrap();
        Snapshot::build(Arc::new(c), &Registry::default())
    }

    #[test]
    fn routes_longest_prefix_and_host() {
        let s = snap(
            r#"
            [server]
            listen = ["127.0.0.1:1"]
            [upstreams.a]
            backends = ["127.0.0.1:2"]
            [upstreams.b]
            backends = ["127.0.0.1:3"]
            [upstreams.c]
            backends = ["127.0.0.1:4"]
            [[routes]]
            path_prefix = "/"
            upstream = "a"
            [[routes]]
            path_prefix = "/api"
            upstream = "b"
            [[routes]]
            host = "x.example"
            path_prefix = "/api"
            upstream = "c"
            "#,
        );
        let name = |h, p| {
            s.route_index(h, p)
                .map(|i| s.upstreams[i].name().to_string())
        };
        assert_eq!(name(None, "/"), Some("a".into()));
        assert_eq!(name(None, "/api/v1"), Some("b".into()));
        assert_eq!(name(Some("x.example:8080"), "/api/v1"), Some("c".into()));
        assert_eq!(name(Some("X.EXAMPLE"), "/other"), Some("a".into()));
    }

    #[test]
    fn round_robin_continues_across_rebuilds() {
        let text = r#"
            [server]
            listen = ["127.0.0.1:1"]
            [upstreams.a]
            backends = ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
            "#;
        let config = Arc::new(crate::config::parse(text).unwrap());
        let registry = Registry::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                // Every health change and slow-start step rebuilds the snapshot.
                let s = Snapshot::build(config.clone(), &registry);
                let up = &s.upstreams[0];
                up.balancer.pick(&up.backends, |_| false).unwrap()
            })
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn no_match_is_none() {
        let s = snap(
            r#"
            [server]
            listen = ["127.0.0.1:1"]
            [upstreams.a]
            backends = ["127.0.0.1:2"]
            [[routes]]
            path_prefix = "/api"
            upstream = "a"
            "#,
        );
        assert!(s.route_index(None, "/web").is_none());
        assert!(s.route_index(None, "/api").is_some());
    }
}
