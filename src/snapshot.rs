//! The immutable view every request reads: routes, upstreams, balancers and pre-built peers. One
//! `ArcSwap<Snapshot>` load per request; a reload or a health change builds a new snapshot and swaps
//! it in whole, so no request ever sees half of one and half of another. Per-backend state comes from
//! the [`Registry`] and is shared with older snapshots.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora_core::upstreams::peer::{HttpPeer, Peer};

use crate::balance::{Balancer, Candidate, WEIGHT_SCALE};
use crate::config::headers::{HeaderRule, ResponseHeaders};
use crate::config::kafka_route::KafkaRoute;
use crate::config::respond::Respond;
use crate::config::split::{Fault as FaultConfig, SplitBy, SHARE_SCALE};
use crate::config::{
    host_of, BackendConfig, Config, PathMatch, PathRegex, Protocol, RateLimitConfig, RouteConfig,
    RouteTarget, RouteTimeouts, Scheme, UpstreamConfig,
};
use crate::state::backend::{BackendState, Health, UpstreamState};
use crate::state::fault::FaultCounts;
use crate::state::kafka::RouteProducer;
use crate::state::limit::Limiter;
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
    /// Indexes into [`Snapshot::limits`] of its `rate_limits`.
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

/// Where a request goes: the upstream and, for a `replace_prefix` route, the matched prefix's
/// length and its replacement in the forwarded path.
#[derive(Debug)]
pub struct Route {
    pub target: Target,
    pub replace: Option<(usize, Box<str>)>,
    /// Indexes into [`Snapshot::limits`] of the route's own `rate_limits` (`None`: its
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
    /// The upstream (an index into [`Snapshot::upstreams`]) and settings of a proxied request;
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
    fn build(
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
    /// Index of the upstream the copies go to in [`Snapshot::upstreams`].
    pub upstream: usize,
    /// Copy a request when a random `u32` is below this (`u32::MAX` as 100%: every one).
    pub below: u64,
    pub max_body_bytes: u64,
    pub max_in_flight: usize,
}

impl Mirror {
    fn build(config: &Config, m: &crate::config::MirrorConfig) -> Option<Arc<Mirror>> {
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
    fn build(route: Option<&RouteConfig>, up: &UpstreamConfig) -> Option<Arc<RouteSettings>> {
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
    /// An index into [`Snapshot::upstreams`].
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
    fn build(route: &KafkaRoute, registry: &Registry) -> Arc<KafkaTarget> {
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

/// What routing found for a request.
#[derive(Debug)]
pub enum Routed<'a> {
    To(&'a Route),
    /// The path is a `path_prefix` route's prefix without its trailing slash: lb answers 301 to
    /// the path with the slash, as NGINX's `auto_redirect` does for proxied locations.
    AddSlash,
}

/// The routes of one host group, in NGINX's matching order (see [`Router`]).
#[derive(Debug, Default)]
struct Group {
    exact: Vec<(Box<str>, Route)>,
    /// Longest first (file order among equal lengths); `true`: `skip_regex`.
    prefixes: Vec<(Box<str>, bool, Route)>,
    /// File order.
    regexes: Vec<(PathRegex, Route)>,
}

impl Group {
    /// Exact path; else the longest prefix if it has `skip_regex`; else the first regex that
    /// matches; else the longest prefix (`ngx_http_core_find_location`).
    ///
    /// Before the prefixes, NGINX's `auto_redirect`: a path that is a prefix route's prefix minus
    /// its trailing slash is redirected to it (an exact route of that path wins).
    #[inline]
    fn find(&self, path: &str) -> Option<Routed<'_>> {
        if let Some((_, r)) = self.exact.iter().find(|(p, _)| **p == *path) {
            return Some(Routed::To(r));
        }
        let slash = |p: &str| p.len() == path.len() + 1 && p.ends_with('/') && p.starts_with(path);
        let proxied = |r: &Route| !matches!(r.target, Target::Respond(_));
        if self.prefixes.iter().any(|(p, _, r)| slash(p) && proxied(r)) {
            return Some(Routed::AddSlash);
        }
        let longest = self.prefixes.iter().find(|(p, ..)| path.starts_with(&**p));
        if let Some((_, true, r)) = longest {
            return Some(Routed::To(r));
        }
        if let Some((_, r)) = self.regexes.iter().find(|(re, _)| re.is_match(path)) {
            return Some(Routed::To(r));
        }
        longest.map(|(_, _, r)| Routed::To(r))
    }
}

/// NGINX's routing model: the request's host (port and a trailing dot ignored, any case) picks
/// a group — exact name, else the longest leading wildcard (`*.example.com`: subdomains only;
/// `.example.com`: the name and its subdomains; `*.` first at equal length), else the longest
/// trailing wildcard (`www.example.*`), else the routes without `host` — and the group's routes
/// match the path ([`Group::find`]).
#[derive(Debug, Default)]
struct Router {
    hosts: HashMap<Box<str>, Group>,
    /// (suffix with its leading dot, `*.` form), longest suffix first.
    wildcards: Vec<(Box<str>, bool, Group)>,
    /// Trailing wildcards: the name before `*`, with its dot (`www.example.`), longest first.
    trailing: Vec<(Box<str>, Group)>,
    default: Group,
}

impl Router {
    /// The router of the plain listeners (`tls` false) or of the HTTPS ones: routes with a
    /// `scheme` are only in that one. `listener`: the router of that one listener (routes
    /// naming it and routes without `listen`); `None`: of the listeners no route names (routes
    /// without `listen` only).
    fn build(
        config: &Config,
        faults: &[Option<Arc<RouteFault>>],
        kafka: &[Option<Arc<KafkaTarget>>],
        tls: bool,
        listener: Option<SocketAddr>,
    ) -> Router {
        let mut router = Router::default();
        let index = |name: &str| config.upstreams.iter().position(|u| u.name == name);
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        let mine = |r: &&RouteConfig| {
            let here = match (&r.listen, listener) {
                (None, _) => true,
                (Some(ls), Some(l)) => ls.contains(&l),
                (Some(_), None) => false,
            };
            here && r.scheme.is_none_or(|s| s == scheme)
        };
        // With one upstream, a kind of listener no route is for sends everything to it (e.g.
        // HTTPS, when the only route redirects plain HTTP there). Not once routes name
        // listeners: a listener without routes then answers 404, never another one's traffic.
        let none_mine = !config.routes.iter().any(|r| mine(&r));
        let by_listener = config.routes.iter().any(|r| r.listen.is_some());
        if none_mine && !by_listener && config.upstreams.len() == 1 {
            let all = Route {
                target: Target::Upstream(0),
                replace: None,
                limits: None,
                settings: RouteSettings::build(None, &config.upstreams[0]),
                access: None,
                mirror: None,
                fault: None,
            };
            router.default.prefixes.push(("/".into(), false, all));
        }
        for (n, r) in config.routes.iter().enumerate().filter(|(_, r)| mine(r)) {
            let (upstream, settings) = match &r.target {
                RouteTarget::Upstream(name) => match index(name) {
                    Some(i) => (
                        Target::Upstream(i),
                        RouteSettings::build(Some(r), &config.upstreams[i]),
                    ),
                    None => continue,
                },
                RouteTarget::Split(split) => match Split::build(split, r, config) {
                    Some(split) => (Target::Split(Box::new(split)), None),
                    None => continue,
                },
                RouteTarget::Respond(a) => (Target::Respond(a.clone()), None),
                RouteTarget::Kafka(_) => match kafka.get(n).cloned().flatten() {
                    Some(k) => (Target::Kafka(k), None),
                    None => continue,
                },
            };
            let fault = faults.get(n).cloned().flatten();
            let limits = r
                .rate_limits
                .as_deref()
                .map(|names| limit_indexes(config, names));
            let access = r.access.as_deref().map(Box::<[_]>::from);
            let mirror = r.mirror.as_ref().and_then(|m| Mirror::build(config, m));
            let group = match r.host.as_deref() {
                None => &mut router.default,
                Some(h) if h.ends_with(".*") => {
                    let prefix = &h[..h.len() - 1];
                    let at = router.trailing.iter().position(|(p, _)| **p == *prefix);
                    let at = at.unwrap_or_else(|| {
                        router.trailing.push((prefix.into(), Group::default()));
                        router.trailing.len() - 1
                    });
                    &mut router.trailing[at].1
                }
                Some(h) => match h
                    .strip_prefix('*')
                    .or_else(|| h.starts_with('.').then_some(h))
                {
                    Some(suffix) => {
                        let star = h.starts_with('*');
                        let at = router
                            .wildcards
                            .iter()
                            .position(|(s, st, _)| **s == *suffix && *st == star);
                        let at = at.unwrap_or_else(|| {
                            router
                                .wildcards
                                .push((suffix.into(), star, Group::default()));
                            router.wildcards.len() - 1
                        });
                        &mut router.wildcards[at].2
                    }
                    None => router.hosts.entry(h.into()).or_default(),
                },
            };
            match &r.path {
                PathMatch::Exact(p) => group.exact.push((
                    p.as_str().into(),
                    Route {
                        target: upstream,
                        replace: None,
                        limits,
                        settings,
                        access,
                        mirror: mirror.clone(),
                        fault: fault.clone(),
                    },
                )),
                PathMatch::Prefix(p) => {
                    let replace = r
                        .replace_prefix
                        .as_deref()
                        .map(|with| (p.len(), Box::<str>::from(with)));
                    let route = Route {
                        target: upstream,
                        replace,
                        limits,
                        settings,
                        access,
                        mirror: mirror.clone(),
                        fault: fault.clone(),
                    };
                    group
                        .prefixes
                        .push((p.as_str().into(), r.skip_regex, route));
                }
                PathMatch::Regex(re) => group.regexes.push((
                    re.clone(),
                    Route {
                        target: upstream,
                        replace: None,
                        limits,
                        settings,
                        access,
                        mirror: mirror.clone(),
                        fault: fault.clone(),
                    },
                )),
            }
        }
        let sort = |g: &mut Group| g.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        sort(&mut router.default);
        router.hosts.values_mut().for_each(sort);
        for (_, _, g) in &mut router.wildcards {
            sort(g);
        }
        for (_, g) in &mut router.trailing {
            sort(g);
        }
        router
            .trailing
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        router
            .wildcards
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.1.cmp(&a.1)));
        router
    }

    #[inline]
    fn group(&self, host: Option<&str>) -> &Group {
        let Some(host) = host else {
            return &self.default;
        };
        if self.hosts.is_empty() && self.wildcards.is_empty() && self.trailing.is_empty() {
            return &self.default;
        }
        let host = host_name(host);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let lower: Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if let Some(g) = self.hosts.get(&*lower) {
            return g;
        }
        let wild = self.wildcards.iter().find(|(suffix, star, _)| {
            lower.ends_with(&**suffix) && (lower.len() > suffix.len() || !star)
                || (!star && *lower == suffix[1..])
        });
        if let Some((_, _, g)) = wild {
            return g;
        }
        let trailing = self
            .trailing
            .iter()
            .find(|(prefix, _)| lower.starts_with(&**prefix) && lower.len() > prefix.len());
        trailing.map_or(&self.default, |(_, g)| g)
    }
}

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
    pub no_route: Arc<crate::state::stats::RequestStats>,
    /// `[rate_limits]`, in the config's order (by name).
    pub limits: Vec<Limit>,
    /// The fault counts of routes with a `fault`, by route label (for `/metrics`).
    pub faults: Vec<(Box<str>, Arc<FaultCounts>)>,
    /// The request counts of `kafka` routes by label (`kafka:TOPIC`, once each; for `/metrics`).
    pub kafka_stats: Vec<(Box<str>, Arc<crate::state::stats::RequestStats>)>,
}

/// One `[rate_limits.NAME]`: its settings and its table of keys (kept across snapshots).
#[derive(Debug)]
pub struct Limit {
    pub config: RateLimitConfig,
    pub table: Arc<Limiter>,
    /// lb's answer beyond the burst: `rate limit "NAME" exceeded`.
    pub refusal: Box<str>,
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
            .map(|u| Arc::new(build_upstream(u, registry, &config)))
            .collect();
        let all = &config.rate_limits;
        let limits = all
            .iter()
            .map(|c| Limit {
                config: c.clone(),
                table: registry.limiter(c),
                refusal: format!("rate limit {:?} exceeded", c.name).into(),
            })
            .collect();
        registry.retain_limiters(all);
        let route_faults = route_faults(&config, registry);
        let mut faults: Vec<(Box<str>, Arc<FaultCounts>)> = Vec::new();
        for (r, f) in config.routes.iter().zip(&route_faults) {
            let label = r.label();
            if let (Some(f), false) = (f, faults.iter().any(|(l, _)| **l == *label)) {
                faults.push((label.into(), f.counts.clone()));
            }
        }
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
        let mut kafka_stats: Vec<(Box<str>, Arc<crate::state::stats::RequestStats>)> = Vec::new();
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
        self.routers[router].group(host).find(path)
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

/// The plain and HTTPS routers, then one per listener some route names, with the index of
/// each such listener's router.
fn build_routers(
    config: &Config,
    faults: &[Option<Arc<RouteFault>>],
    kafka: &[Option<Arc<KafkaTarget>>],
) -> (Vec<Router>, Box<[(SocketAddr, usize)]>) {
    let mut routers = vec![
        Router::build(config, faults, kafka, false, None),
        Router::build(config, faults, kafka, true, None),
    ];
    let mut listeners: Vec<(SocketAddr, usize)> = Vec::new();
    let named = config.routes.iter().filter_map(|r| r.listen.as_deref());
    for &addr in named.flatten() {
        if listeners.iter().any(|(l, _)| *l == addr) {
            continue;
        }
        let tls = config
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.listen.contains(&addr));
        listeners.push((addr, routers.len()));
        routers.push(Router::build(config, faults, kafka, tls, Some(addr)));
    }
    (routers, listeners.into())
}

/// Each route's fault (by its index in `config.routes`), with its counts from `registry`.
fn route_faults(config: &Config, registry: &Registry) -> Vec<Option<Arc<RouteFault>>> {
    let fault = |r: &RouteConfig| {
        let f = r.fault.as_ref()?;
        Some(Arc::new(RouteFault {
            config: f.clone(),
            counts: registry.fault_counts(&r.label()),
        }))
    };
    config.routes.iter().map(fault).collect()
}

/// A `Host` (or `:authority`) without its port and a trailing dot, as NGINX names the host
/// (`[v6]:port` keeps its brackets). Routing matches it in any case; `host_header =
/// "client_host"` sends it lower-cased.
pub fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
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

fn build_upstream(u: &UpstreamConfig, registry: &Registry, config: &Config) -> Upstream {
    let initial = if u.health_check.is_some() {
        Health::Checking
    } else {
        Health::Up
    };
    let mut found = Vec::new();
    for b in u.backends.iter().filter(|b| b.discovery.is_some()) {
        found.push(
            registry
                .discovered
                .get(&u.name, &b.address)
                .unwrap_or_default(),
        );
    }
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
    let backends: Vec<Backend> = specs
        .into_iter()
        .map(|(b, spec)| {
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
            let peer = make_peer(u, spec.addr, spec.host);
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
        })
        .collect();
    let state = registry.upstream(&u.name);
    Upstream {
        balancer: Balancer::new(u.strategy, &backends, state.clone()),
        state,
        config: u.clone(),
        backends,
        limits: limit_indexes(config, &u.rate_limits),
    }
}

fn pool_key(upstream: &str, peer: &HttpPeer) -> u64 {
    let mut bytes = upstream.as_bytes().to_vec();
    bytes.extend_from_slice(&peer.reuse_hash().to_le_bytes());
    crate::util::hash::fnv1a64(&bytes)
}

/// Most streams lb opens at once on one HTTP/2 backend connection (pingora's default is 1).
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

fn make_peer(u: &UpstreamConfig, addr: SocketAddr, host: Option<&str>) -> HttpPeer {
    let (tls, sni) = match &u.tls {
        None => (false, String::new()),
        Some(t) => {
            let sni = t
                .sni
                .clone()
                .or_else(|| host.map(|h| h.trim_end_matches('.').to_owned()))
                .unwrap_or_default();
            (true, sni)
        }
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
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
    fn each_kind_of_listener_has_its_routes() {
        let s = snap(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
             [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n\
             [[routes]]\npath_prefix = \"/api/\"\nrespond = 200\n\
             [[routes]]\npath_prefix = \"/k/\"\nkafka = { topic = \"t\", brokers = [\"127.0.0.1:9\"] }\n",
        );
        let target = |tls: bool, path: &str| match s.route_on(tls, None, None, path) {
            Some(Routed::To(Route {
                target: Target::Kafka(k),
                ..
            })) => k.label.to_string(),
            Some(Routed::To(Route {
                target: Target::Respond(a),
                ..
            })) => format!("respond {}", a.status),
            Some(Routed::To(Route {
                target: Target::Upstream(i),
                ..
            })) => format!("upstream {i}"),
            Some(Routed::To(Route {
                target: Target::Split(_),
                ..
            })) => "split".into(),
            Some(Routed::AddSlash) => "add slash".into(),
            None => "none".into(),
        };
        assert_eq!(target(false, "/x"), "respond 301");
        assert_eq!(target(false, "/api/x"), "respond 200");
        assert_eq!(target(true, "/k/x"), "kafka:t");
        // A respond prefix is no proxied location: no slash redirect for it.
        assert_eq!(target(false, "/api"), "respond 301");
        // On HTTPS only /api/ has a route, so nothing else matches (there are routes for it).
        assert_eq!(target(true, "/api/x"), "respond 200");
        assert_eq!(target(true, "/x"), "none");
        // With no route for HTTPS at all, its requests go to the one upstream.
        let s = snap(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
             [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n",
        );
        assert_eq!(s.route_index(None, "/x"), None);
        let tls = s.route_on(true, None, None, "/x");
        assert!(matches!(
            tls,
            Some(Routed::To(Route {
                target: Target::Upstream(0),
                ..
            }))
        ));
    }

    /// Each listener a route names has its own groups: its routes and the routes without
    /// `listen`; the others keep the shared router, without the routes that name listeners.
    #[test]
    fn routes_by_listener() {
        let s = snap(
            "[server]\nlisten = [\"127.0.0.1:1\", \"0.0.0.0:2\", \"127.0.0.1:3\"]\n\
             [upstreams.a]\nbackends = [\"127.0.0.1:9\"]\n\
             [[routes]]\nlisten = \"127.0.0.1:1\"\nrespond = 201\n\
             [[routes]]\nlisten = [\"0.0.0.0:2\"]\nrespond = 202\n\
             [[routes]]\nlisten = [\"0.0.0.0:2\"]\nhost = \"x.example\"\nrespond = 203\n\
             [[routes]]\nhost = \"x.example\"\npath_prefix = \"/all/\"\nrespond = 204\n",
        );
        let status = |local: &str, host: Option<&str>, path: &str| match s.route_on(
            false,
            Some(local.parse().unwrap()),
            host,
            path,
        ) {
            Some(Routed::To(Route {
                target: Target::Respond(a),
                ..
            })) => a.status,
            _ => 404,
        };
        assert!(s.routes_by_listener());
        assert_eq!(status("127.0.0.1:1", None, "/"), 201);
        assert_eq!(status("127.0.0.1:1", Some("x.example"), "/"), 404);
        assert_eq!(status("127.0.0.1:1", Some("x.example"), "/all/"), 204);
        // 0.0.0.0:2 took the connection on whichever address it came to.
        assert_eq!(status("10.1.2.3:2", Some("y.example"), "/"), 202);
        assert_eq!(status("127.0.0.1:2", Some("x.example"), "/"), 203);
        assert_eq!(status("127.0.0.1:2", Some("x.example"), "/all/"), 204);
        // A listener no route names: the routes without `listen` only (no one-upstream
        // fallback once routes name listeners).
        assert_eq!(status("127.0.0.1:3", None, "/"), 404);
        assert_eq!(status("127.0.0.1:3", Some("x.example"), "/all/"), 204);
        assert!(!snap(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:9\"]\n"
        )
        .routes_by_listener());
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
        // The host picked x.example's group, which has no route for /other (NGINX: 404).
        assert_eq!(name(Some("X.EXAMPLE"), "/other"), None);
        assert_eq!(name(Some("y.example"), "/other"), Some("a".into()));
    }

    /// NGINX's order: host group (exact, longest wildcard, default), then exact path, longest
    /// prefix with `^~`, first regex in file order, longest prefix.
    #[test]
    fn nginx_routing_model() {
        let mut text = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
        for (i, u) in [
            "exact", "pre", "skip", "re1", "re2", "star", "dot", "deep", "def", "exh",
        ]
        .iter()
        .enumerate()
        {
            text += &format!("[upstreams.{u}]\nbackends = [\"127.0.0.1:{}\"]\n", i + 10);
        }
        text += r#"
            [[routes]]
            path_exact = "/login"
            upstream = "exact"
            [[routes]]
            path_prefix = "/static/"
            upstream = "pre"
            [[routes]]
            path_prefix = "/static/img/"
            skip_regex = true
            upstream = "skip"
            [[routes]]
            path_regex = "\\.(png|jpg)$"
            upstream = "re1"
            [[routes]]
            path_regex = "(?i)\\.PNG$"
            upstream = "re2"
            [[routes]]
            path_prefix = "/"
            upstream = "def"
            [[routes]]
            host = "*.example.com"
            upstream = "star"
            [[routes]]
            host = ".example.com"
            upstream = "dot"
            [[routes]]
            host = "*.deep.example.com"
            upstream = "deep"
            [[routes]]
            host = "www.example.com"
            path_exact = "/"
            upstream = "exh"
        "#;
        let s = snap(&text);
        let name = |h: Option<&str>, p: &str| {
            s.route_index(h, p)
                .map_or("404".to_string(), |i| s.upstreams[i].name().to_string())
        };
        assert_eq!(name(None, "/login"), "exact");
        assert_eq!(name(None, "/login/x"), "def");
        assert_eq!(name(None, "/static/a.css"), "pre");
        assert_eq!(
            name(None, "/static/a.png"),
            "re1",
            "a regex beats a plain prefix"
        );
        assert_eq!(name(None, "/static/A.PNG"), "re2");
        assert_eq!(
            name(None, "/static/img/a.png"),
            "skip",
            "^~ stops before regexes"
        );
        assert_eq!(name(None, "/x.jpg"), "re1");
        assert_eq!(
            name(Some("www.example.com"), "/"),
            "exh",
            "exact host first"
        );
        assert_eq!(
            name(Some("www.example.com"), "/x"),
            "404",
            "the group has no /x"
        );
        assert_eq!(
            name(Some("a.example.com"), "/x"),
            "star",
            "*. before . at equal length"
        );
        assert_eq!(
            name(Some("example.com"), "/x"),
            "dot",
            ".example.com covers the name"
        );
        assert_eq!(
            name(Some("a.deep.example.com."), "/"),
            "deep",
            "longest wildcard"
        );
        assert_eq!(name(Some("A.Deep.Example.COM:443"), "/"), "deep");
        assert_eq!(
            name(Some("example.org"), "/x"),
            "def",
            "unknown hosts: default group"
        );
        assert_eq!(name(None, "/x"), "def");
    }

    #[test]
    fn trailing_wildcards_come_after_leading_ones() {
        let mut text = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
        let hosts = [
            ("def", None),
            ("trail", Some("www.example.*")),
            ("longer", Some("www.example.co.*")),
            ("lead", Some("*.example.com")),
            ("exact", Some("www.example.org")),
        ];
        for (i, (name, _)) in hosts.iter().enumerate() {
            text += &format!("[upstreams.{name}]\nbackends = [\"127.0.0.1:{}\"]\n", i + 2);
        }
        for (name, host) in hosts {
            text += "[[routes]]\npath_prefix = \"/\"\n";
            text += &format!("upstream = \"{name}\"\n");
            if let Some(h) = host {
                text += &format!("host = \"{h}\"\n");
            }
        }
        let s = snap(&text);
        let name = |h: &str| {
            s.route_index(Some(h), "/")
                .map_or("404".to_string(), |i| s.upstreams[i].name().to_string())
        };
        assert_eq!(name("www.example.net"), "trail");
        assert_eq!(name("WWW.Example.IO:8080"), "trail");
        assert_eq!(
            name("www.example.co.uk"),
            "longer",
            "the longest trailing wildcard"
        );
        assert_eq!(name("www.example.com"), "lead", "leading wildcards first");
        assert_eq!(name("www.example.org"), "exact");
        assert_eq!(name("www.example"), "def", "something must follow the dot");
        assert_eq!(name("www.example."), "def");
        assert_eq!(name("ftp.example.net"), "def");
    }

    #[test]
    fn replace_prefix_is_reported_with_the_route() {
        let s = snap(
            r#"
            [server]
            listen = ["127.0.0.1:1"]
            [upstreams.a]
            backends = ["127.0.0.1:2"]
            [[routes]]
            path_prefix = "/api/"
            replace_prefix = "/v2/"
            upstream = "a"
            "#,
        );
        let Some(Routed::To(r)) = s.route(None, "/api/users") else {
            panic!("no route")
        };
        assert_eq!(
            r.replace.as_ref().map(|(n, w)| (*n, &**w)),
            Some((5, "/v2/"))
        );
        assert!(matches!(s.route(None, "/api"), Some(Routed::AddSlash)));
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
    fn splits_cut_the_hash_range_as_split_clients() {
        let s = snap(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:2\"]\n\
             [upstreams.b]\nbackends = [\"127.0.0.1:3\"]\n\
             [[routes]]\nsplit = [{ upstream = \"b\", percent = 10 }, { upstream = \"a\", percent = 0.5 }, { upstream = \"b\" }]\n\
             [[routes]]\npath_prefix = \"/all/\"\nsplit = [{ upstream = \"b\", percent = 40 }, { upstream = \"a\", percent = 60 }]\n",
        );
        let split = |path: &str| match s.route(None, path) {
            Some(Routed::To(Route {
                target: Target::Split(split),
                ..
            })) => split,
            other => panic!("{other:?}"),
        };
        let pick = |path: &str, hash: u32| split(path).pick(hash).upstream;
        // 10% of 0xffffffff is 429496729 (rounded down, as NGINX), then 0.5% more.
        assert_eq!([pick("/", 0), pick("/", 429_496_728)], [1, 1]);
        assert_eq!([pick("/", 429_496_729), pick("/", 450_971_564)], [0, 0]);
        assert_eq!([pick("/", 450_971_565), pick("/", u32::MAX)], [1, 1]);
        assert_eq!(pick("/all/", 1_717_986_917), 1);
        // Exactly 100%: NGINX leaves 0xffffffff unmatched; lb gives it the last part.
        assert_eq!(
            [pick("/all/", 1_717_986_918), pick("/all/", u32::MAX)],
            [0, 0]
        );
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
