//! `[[routes]]`: how a route matches (host, path, scheme, listener) and what it does with its
//! requests (an upstream, a split, an answer of lb's own, a Kafka topic), with its own
//! timeouts, header rules, limits, mirror and fault — the runtime types.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check` (a route's `listen` in `listen`, its `mirror` in `mirror`), on the shared
//! machinery of `config::validate`.

use std::net::SocketAddr;
use std::time::Duration;

mod check;
pub(in crate::config) mod file;
mod listen;
mod mirror;

use super::{headers, kafka_route, respond, split, AccessRule};

/// One `[[routes]]` entry. Matching follows NGINX (see [`crate::snapshot`]): the host picks a
/// group of routes, then exact path, longest prefix (`skip_regex` stops there), first regex,
/// longest prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Lower-cased: `example.com`, `*.example.com` or `.example.com`; `None`: the default group.
    pub host: Option<String>,
    pub path: PathMatch,
    /// A prefix route that, as the longest matching prefix, wins without trying regexes (`^~`).
    pub skip_regex: bool,
    /// The matched prefix is replaced by this in the forwarded path (prefix routes only).
    pub replace_prefix: Option<String>,
    /// The `[rate_limits]` of this route's requests (`None`: its upstream's).
    pub rate_limits: Option<Vec<String>>,
    /// `routes[i].access`: `allow`/`deny` rules, the first match decides (`None`: everyone).
    pub access: Option<Vec<AccessRule>>,
    /// Only requests that came over this (`None`: both).
    pub scheme: Option<Scheme>,
    /// Only requests accepted on these listeners (`server.listen`, `server.tls.listen`);
    /// `None`: every listener. NGINX's `listen` of the route's `server` block.
    pub listen: Option<Vec<SocketAddr>>,
    pub target: RouteTarget,
    /// `set_request_headers` (`None`: its upstream's; a route's list replaces the upstream's
    /// whole, as a location's `proxy_set_header` lines replace the server's in NGINX).
    pub set_request_headers: Option<Vec<headers::HeaderRule>>,
    /// `add_response_headers` (`None`: its upstream's; replaces them whole too).
    pub add_response_headers: Option<headers::ResponseHeaders>,
    /// Backend timeouts of this route, over its upstream's (`None`: the upstream's).
    pub timeouts: RouteTimeouts,
    /// `max_body_bytes` (`None`: `server.max_body_bytes`; `0` in the file: no limit, here
    /// `u64::MAX`).
    pub max_body_bytes: Option<u64>,
    /// `routes[i].mirror` (`None`: no copies).
    pub mirror: Option<MirrorConfig>,
    /// `fault`: delays and aborts injected into a share of the route's requests.
    pub fault: Option<split::Fault>,
}

impl RouteConfig {
    /// The route in metrics labels: its path match, after its host when it has one
    /// (`api.example path_prefix=/v1/`).
    pub fn label(&self) -> String {
        match &self.host {
            Some(h) => format!("{h} {}", self.path.describe()),
            None => self.path.describe(),
        }
    }
}

/// `routes[i].mirror`: NGINX's `mirror`, Envoy's request mirror policy. A share of the route's
/// requests is copied to another upstream; its answers are discarded, never waited for, never
/// retried.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// The upstream the copies go to (checked to exist and to speak HTTP/1).
    pub upstream: String,
    /// The share of requests copied, in percent (0 < p <= 100; default 100).
    pub percent: f64,
    /// Requests with a longer body are not copied (counted as dropped); default 1 MiB.
    pub max_body_bytes: u64,
    /// Copies in progress to the upstream, across routes, beyond which new ones are dropped
    /// (counted); default 64.
    pub max_in_flight: usize,
}

/// `routes[i].connect_timeout`/`read_timeout`/`write_timeout`: the route's own, over its
/// upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
}

impl RouteTimeouts {
    pub fn any(&self) -> bool {
        self.connect.is_some() || self.read.is_some() || self.write.is_some()
    }
}

/// `routes[i].scheme`: how the client reached lb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What a route does with its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// `upstream = "NAME"`: proxies to it.
    Upstream(String),
    /// `split = [...]`: proxies to one of several upstreams, by share.
    Split(split::Split),
    /// `respond = STATUS`: lb answers (NGINX's `return`).
    Respond(respond::Respond),
    /// `kafka = { topic = ... }`: lb produces the body to a Kafka topic and answers 202.
    Kafka(kafka_route::KafkaRoute),
}

/// How a route matches the (normalized) path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(PathRegex),
}

impl PathMatch {
    /// `path_exact=/x`, `path_prefix=/x` or `path_regex=...`, for summaries.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("path_exact={p}"),
            PathMatch::Prefix(p) => format!("path_prefix={p}"),
            PathMatch::Regex(r) => format!("path_regex={}", r.pattern()),
        }
    }
}

/// A compiled `path_regex` (compared by its pattern).
#[derive(Debug, Clone)]
pub struct PathRegex(regex::Regex);

impl PathRegex {
    pub fn new(pattern: &str) -> Result<PathRegex, regex::Error> {
        regex::Regex::new(pattern).map(PathRegex)
    }
    pub fn pattern(&self) -> &str {
        self.0.as_str()
    }
    #[inline]
    pub fn is_match(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern() == other.pattern()
    }
}
