//! What a route does with a request, built into the snapshot: its target (an upstream, a
//! split over several, lb's own answer, a Kafka topic), its merged settings, its mirror and
//! its fault.

use std::sync::Arc;

use crate::config::headers::{HeaderRule, ResponseHeaders};
use crate::config::kafka_route::KafkaRoute;
use crate::config::respond::Respond;
use crate::config::split::{Fault as FaultConfig, SplitBy, SHARE_SCALE};
use crate::config::{Config, PathMatch, RouteConfig, RouteTarget, RouteTimeouts, UpstreamConfig};
use crate::state::fault::FaultCounts;
use crate::state::kafka::RouteProducer;
use crate::state::registry::Registry;

/// Where a request goes: the upstream and, for a `replace_prefix` route, the matched prefix's
/// length and its replacement in the forwarded path.
#[derive(Debug)]
pub struct Route {
    pub target: Target,
    pub replace: Option<(usize, Box<str>)>,
    /// Indexes into [`super::Snapshot::limits`] of the route's own `rate_limits` (`None`: its
    /// upstream's).
    pub limits: Option<Box<[usize]>>,
    /// Header rules, timeouts and body limit (`None`: nothing to change, the common case).
    pub settings: Option<Arc<RouteSettings>>,
    /// `routes[i].access` (`None`: everyone may use the route).
    pub access: Option<Box<[crate::config::AccessRule]>>,
    /// `routes[i].mirror` (`None`: no copies, the common case).
    pub mirror: Option<Arc<Mirror>>,
    /// `routes[i].fault` (`None`: no fault, the default).
    pub fault: Option<Arc<RouteFault>>,
}

impl Route {
    /// The upstream (an index into [`super::Snapshot::upstreams`]) and settings of a proxied request;
    /// a split asks `hash` for the request's hash of its `split_by` key. `None` for a route lb
    /// answers itself.
    #[inline]
    pub fn proxied(
        &self,
        hash: impl FnOnce(&SplitBy) -> u32,
    ) -> Option<(usize, Option<&Arc<RouteSettings>>)> {
        match &self.target {
            Target::Upstream(i) => Some((*i, self.settings.as_ref())),
            Target::Split(split) => {
                let part = split.pick(hash(&split.by));
                Some((part.upstream, part.settings.as_ref()))
            }
            Target::Respond(_) | Target::Kafka(_) => None,
        }
    }
}

impl Route {
    /// The route `r` (`fault`, `kafka`: its fault and Kafka target, built once for every
    /// router it is in); `None` when its upstream (or a split's) is missing or its Kafka
    /// target is.
    pub(super) fn build(
        config: &Config,
        r: &RouteConfig,
        fault: Option<Arc<RouteFault>>,
        kafka: Option<Arc<KafkaTarget>>,
    ) -> Option<Route> {
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let (target, settings) = match &r.target {
            RouteTarget::Upstream(name) => {
                let i = index(name)?;
                let settings = RouteSettings::build(Some(r), &config.upstreams[i]);
                (Target::Upstream(i), settings)
            }
            RouteTarget::Split(split) => {
                let split = Split::build(split, r, config)?;
                (Target::Split(Box::new(split)), None)
            }
            RouteTarget::Respond(a) => (Target::Respond(a.clone()), None),
            RouteTarget::Kafka(_) => (Target::Kafka(kafka?), None),
        };
        let replace = match (&r.path, r.replace_prefix.as_deref()) {
            (PathMatch::Prefix(p), Some(with)) => Some((p.len(), Box::<str>::from(with))),
            _ => None,
        };
        Some(Route {
            target,
            replace,
            limits: r
                .rate_limits
                .as_deref()
                .map(|names| super::limit_indexes(config, names)),
            settings,
            access: r.access.as_deref().map(Box::<[_]>::from),
            mirror: r.mirror.as_ref().and_then(|m| Mirror::build(config, m)),
            fault,
        })
    }
}

/// A route's fault: what to inject, and its counts (shared with every snapshot).
#[derive(Debug)]
pub struct RouteFault {
    pub config: FaultConfig,
    pub counts: Arc<FaultCounts>,
}

/// A split target: NGINX's `split_clients` table, the parts' upper bounds on the 32-bit hash.
#[derive(Debug)]
pub struct Split {
    pub by: SplitBy,
    /// In file order; the last one's bound covers every hash.
    pub parts: Box<[SplitPart]>,
}

/// One upstream of a split.
#[derive(Debug)]
pub struct SplitPart {
    /// Requests whose hash is below this go here (unless an earlier part took them).
    pub below: u64,
    pub upstream: usize,
    /// The route's settings merged with this upstream's.
    pub settings: Option<Arc<RouteSettings>>,
}

impl Split {
    /// `ngx_http_split_clients_variable`: the first part whose cumulative bound is above the
    /// hash. NGINX leaves the hash `0xffffffff` of an exact 100% unmatched (an empty variable);
    /// lb gives it the last part.
    #[inline]
    pub fn pick(&self, hash: u32) -> &SplitPart {
        let hash = hash as u64;
        self.parts
            .iter()
            .find(|p| hash < p.below)
            .unwrap_or_else(|| &self.parts[self.parts.len() - 1])
    }

    /// The parts of `split`, bounds as NGINX computes them (`percent * 0xffffffff / 10000`,
    /// summed); `None` if an upstream is missing.
    pub(super) fn build(
        split: &crate::config::split::Split,
        route: &RouteConfig,
        config: &Config,
    ) -> Option<Split> {
        let mut last = 0u64;
        let mut parts = Vec::with_capacity(split.parts.len());
        for p in &split.parts {
            let i = config.upstreams.iter().position(|u| u.name == p.upstream)?;
            let below = match p.share {
                Some(share) => {
                    last += share as u64 * 0xffff_ffff / SHARE_SCALE as u64;
                    last
                }
                None => u64::MAX,
            };
            parts.push(SplitPart {
                below,
                upstream: i,
                settings: RouteSettings::build(Some(route), &config.upstreams[i]),
            });
        }
        Some(Split {
            by: split.by.clone(),
            parts: parts.into(),
        })
    }
}

/// Where and how much of a route's traffic is copied ([`crate::config::MirrorConfig`]).
#[derive(Debug)]
pub struct Mirror {
    /// Index of the upstream the copies go to in [`super::Snapshot::upstreams`].
    pub upstream: usize,
    /// Copy a request when a random `u32` is below this (`u32::MAX` as 100%: every one).
    pub below: u64,
    pub max_body_bytes: u64,
    pub max_in_flight: usize,
}

impl Mirror {
    pub(super) fn build(config: &Config, m: &crate::config::MirrorConfig) -> Option<Arc<Mirror>> {
        let upstream = config.upstreams.iter().position(|u| u.name == m.upstream)?;
        Some(Arc::new(Mirror {
            upstream,
            below: ((m.percent / 100.0) * (1u64 << 32) as f64) as u64,
            max_body_bytes: m.max_body_bytes,
            max_in_flight: m.max_in_flight,
        }))
    }
}

/// What a route changes in the exchange, merged at build time: its header rules (its own, else
/// its upstream's: a level's list replaces the other whole, as NGINX inherits
/// `proxy_set_header` and `add_header`), its timeouts over the upstream's, its body limit.
#[derive(Debug, Default)]
pub struct RouteSettings {
    pub set_request: Box<[HeaderRule]>,
    pub add_response: ResponseHeaders,
    pub timeouts: RouteTimeouts,
    /// The route's `max_body_bytes` (`None`: `server.max_body_bytes`).
    pub max_body_bytes: Option<u64>,
}

impl RouteSettings {
    /// Whether any header is set on requests or added to answers.
    pub fn has_header_rules(&self) -> bool {
        !(self.set_request.is_empty() && self.add_response.headers.is_empty())
    }

    /// The settings of `route` (`None`: the catch-all route of a single upstream) to `up`;
    /// `None` when there is nothing to change.
    pub(super) fn build(
        route: Option<&RouteConfig>,
        up: &UpstreamConfig,
    ) -> Option<Arc<RouteSettings>> {
        let set_request = route
            .and_then(|r| r.set_request_headers.as_deref())
            .unwrap_or(&up.set_request_headers);
        let add_response = route
            .and_then(|r| r.add_response_headers.as_ref())
            .unwrap_or(&up.add_response_headers);
        let settings = RouteSettings {
            set_request: set_request.into(),
            add_response: add_response.clone(),
            timeouts: route.map(|r| r.timeouts).unwrap_or_default(),
            max_body_bytes: route.and_then(|r| r.max_body_bytes),
        };
        let none = settings.set_request.is_empty()
            && settings.add_response.headers.is_empty()
            && !settings.timeouts.any()
            && settings.max_body_bytes.is_none();
        (!none).then(|| Arc::new(settings))
    }
}

/// Where a route sends its requests.
#[derive(Debug)]
pub enum Target {
    /// An index into [`super::Snapshot::upstreams`].
    Upstream(usize),
    /// One of several upstreams, by share.
    Split(Box<Split>),
    /// lb answers (NGINX's `return`).
    Respond(Respond),
    /// lb produces the body to Kafka and answers 202 ([`KafkaTarget`]).
    Kafka(Arc<KafkaTarget>),
}

/// A `kafka` route's target (async routes, HTTP → Kafka), built once per snapshot: the route's
/// settings, its labels, and the producer it shares with the routes of the same brokers, acks
/// and timeout ([`crate::state::kafka`]).
pub struct KafkaTarget {
    pub route: KafkaRoute,
    /// `kafka:TOPIC`: the upstream named by the access log.
    pub label: Box<str>,
    /// The `Allow` header of a 405: the route's methods.
    pub allow: Box<str>,
    /// The shared producer (`Err`: librdkafka refused to make it; every request is a 503).
    pub producer: Result<Arc<RouteProducer>, Box<str>>,
    /// Its requests in `lb_requests_total{upstream="kafka:TOPIC",backend=""}`, kept across
    /// reloads by label (shared by routes to the same topic).
    pub stats: Arc<crate::state::stats::RequestStats>,
}

impl std::fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KafkaTarget({})", self.label)
    }
}

impl KafkaTarget {
    pub(super) fn build(route: &KafkaRoute, registry: &Registry) -> Arc<KafkaTarget> {
        let producer = registry.kafka.get(route).map_err(|e| {
            tracing::error!(topic = route.topic, "kafka route: no producer: {e}");
            e.to_string().into()
        });
        let methods: Vec<&str> = route.methods.iter().map(|m| m.as_str()).collect();
        let label = format!("kafka:{}", route.topic);
        Arc::new(KafkaTarget {
            stats: registry.own_stats(&label),
            label: label.into(),
            allow: methods.join(", ").into(),
            route: route.clone(),
            producer,
        })
    }
}

/// Each route's fault (by its index in `config.routes`), with its counts from `registry`.
pub(super) fn route_faults(config: &Config, registry: &Registry) -> Vec<Option<Arc<RouteFault>>> {
    let fault = |r: &RouteConfig| {
        let f = r.fault.as_ref()?;
        Some(Arc::new(RouteFault {
            config: f.clone(),
            counts: registry.fault_counts(&r.label()),
        }))
    };
    config.routes.iter().map(fault).collect()
}
