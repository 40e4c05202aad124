//! The immutable view every request reads: routes, upstreams, balancers and pre-built peers. One
//! `ArcSwap<Snapshot>` load per request; a reload or a health change builds a new snapshot and swaps
//! it in whole, so no request ever sees half of one and half of another. Per-backend state comes from
//! the [`Registry`] and is shared with older snapshots.
//!
//! `router.rs` routes a request as NGINX does, `route.rs` holds what a route does with it,
//! `upstream.rs` the upstreams and their backends, `peer.rs` how lb connects to a backend.

mod peer;
mod route;
mod router;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::state::limit::Limit;
pub use peer::H2_STREAMS_PER_CONNECTION;
pub use route::{KafkaTarget, Mirror, Route, RouteFault, RouteSettings, Split, SplitPart, Target};
pub use router::{host_name, Routed};
pub use upstream::{Backend, Upstream};

use crate::config::{Config, RouteTarget};
use crate::state::fault::FaultCounts;
use crate::state::registry::Registry;
use crate::state::stats::RequestStats;
use route::route_faults;
use router::{build_routers, Router};

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// For the plain listeners and for the HTTPS ones (they differ by routes with a `scheme`),
    /// then one for each listener some route names (`routes[i].listen`).
    routers: Vec<Router>,
    /// The listeners routes name, each with its index into `routers`; empty when no route
    /// names one (then a request's listener is never looked at).
    listeners: Box<[(SocketAddr, usize)]>,
    /// lb's 404s for requests no route matched.
    pub no_route: Arc<RequestStats>,
    /// `[rate_limits]`, in the config's order (by name).
    pub limits: Vec<Limit>,
    /// The fault counts of routes with a `fault`, by route label (for `/metrics`).
    pub faults: Vec<(Box<str>, Arc<FaultCounts>)>,
    /// The request counts of `kafka` routes by label (`kafka:TOPIC`, once each; for `/metrics`).
    pub kafka_stats: Vec<(Box<str>, Arc<RequestStats>)>,
}

/// The fault counts of routes with a `fault` (`faults`: by route), once per route label.
fn fault_labels(
    config: &Config,
    faults: &[Option<Arc<RouteFault>>],
) -> Vec<(Box<str>, Arc<FaultCounts>)> {
    let mut labels: Vec<(Box<str>, Arc<FaultCounts>)> = Vec::new();
    for (r, f) in config.routes.iter().zip(faults) {
        let label = r.label();
        if let (Some(f), false) = (f, labels.iter().any(|(l, _)| **l == *label)) {
            labels.push((label.into(), f.counts.clone()));
        }
    }
    labels
}

/// Indexes into [`Snapshot::limits`] (the config's order) of `names`.
fn limit_indexes(config: &Config, names: &[String]) -> Box<[usize]> {
    names
        .iter()
        .filter_map(|n| config.rate_limits.iter().position(|l| l.name == *n))
        .collect()
}

impl Snapshot {
    /// Builds a snapshot, taking (or creating) each backend's state from `registry`.
    pub fn build(config: Arc<Config>, registry: &Registry) -> Snapshot {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let limits = limit_indexes(&config, &u.rate_limits);
                Arc::new(Upstream::build(u, registry, limits))
            })
            .collect();
        let limits = registry.limits.build(&config.rate_limits);
        let route_faults = route_faults(&config, registry);
        let faults = fault_labels(&config, &route_faults);
        registry.retain_faults(&faults.iter().map(|(l, _)| &**l).collect());
        // One target (and shared producer) per `kafka` route, for every router it is in.
        let kafka: Vec<Option<Arc<KafkaTarget>>> = config
            .routes
            .iter()
            .map(|r| match &r.target {
                RouteTarget::Kafka(k) => Some(KafkaTarget::build(k, registry)),
                _ => None,
            })
            .collect();
        let (routers, listeners) = build_routers(&config, &route_faults, &kafka);
        let mut kafka_stats: Vec<(Box<str>, Arc<RequestStats>)> = Vec::new();
        for t in kafka.iter().flatten() {
            if !kafka_stats.iter().any(|(l, _)| *l == t.label) {
                kafka_stats.push((t.label.clone(), t.stats.clone()));
            }
        }
        Snapshot {
            kafka_stats,
            routers,
            listeners,
            upstreams,
            no_route: registry.own_stats(""),
            limits,
            faults,
            config,
        }
    }

    /// The rate limits (indexes into [`Snapshot::limits`]) a request routed by `route` passes;
    /// `upstream`: the one a split chose for the request.
    #[inline]
    pub fn limits_of<'a>(&'a self, route: &'a Route, upstream: Option<usize>) -> &'a [usize] {
        match (&route.limits, &route.target) {
            (Some(own), _) => own,
            (None, Target::Upstream(i)) => &self.upstreams[*i].limits,
            // A split route without limits of its own: those of the upstream chosen.
            (None, Target::Split(_)) => upstream.map_or(&[], |i| &self.upstreams[i].limits),
            (None, Target::Respond(_) | Target::Kafka(_)) => &[],
        }
    }

    /// Whether some route names listeners: only then does routing need the local address a
    /// request came to ([`Snapshot::route_on`]'s `local`).
    #[inline]
    pub fn routes_by_listener(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// The route for a request: over TLS or not, the local address its connection was accepted
    /// on (needed only when [`Snapshot::routes_by_listener`]), its host (`Host` or
    /// `:authority`) and normalized path.
    #[inline]
    pub fn route_on(
        &self,
        tls: bool,
        local: Option<SocketAddr>,
        host: Option<&str>,
        path: &str,
    ) -> Option<Routed<'_>> {
        let named = local.and_then(|local| {
            let on = |l: &SocketAddr| {
                l.port() == local.port()
                    && (l.ip() == local.ip()
                        || l.ip().is_unspecified() && l.is_ipv4() == local.is_ipv4())
            };
            // Listeners never overlap (validated), so at most one matches.
            self.listeners.iter().find(|(l, _)| on(l)).map(|(_, i)| *i)
        });
        let router = named.unwrap_or(usize::from(tls));
        self.routers[router].find(host, path)
    }

    /// [`Snapshot::route_on`] for a plain listener no route names (tests).
    #[cfg(test)]
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Routed<'_>> {
        self.route_on(false, None, host, path)
    }

    /// Index into `upstreams` of the upstream for a plain request (`None` also for a redirect
    /// or an answer from lb; tests).
    #[cfg(test)]
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        match self.route(host, path)? {
            Routed::To(Route {
                target: Target::Upstream(i),
                ..
            }) => Some(*i),
            _ => None,
        }
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

#[cfg(test)]
mod tests;
