//! What an import produces: lb's settings, each with the NGINX lines it came from, and the notes
//! about everything that was not carried over.

pub use super::notes::{At, Note, Notes, NOT_SUPPORTED};
use super::tree::Loc;

/// The imported config.
#[derive(Debug, Default)]
pub struct Import {
    /// The main file as shown in comments.
    pub source: String,
    /// Plain listeners (`server.listen`).
    pub listen: Vec<At<String>>,
    /// HTTPS listeners (`server.tls.listen`).
    pub tls_listen: Vec<At<String>>,
    /// The listeners (plain or HTTPS) of `listen ... proxy_protocol`.
    pub proxy_protocol: Vec<String>,
    pub certificates: Vec<Certificate>,
    pub http2: Option<Loc>,
    /// `server.upstream_keepalive_pool_size` and the `keepalive` lines it sums.
    pub keepalive: Option<At<usize>>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// `[rate_limits]`: the zones routes use.
    pub rate_limits: Vec<super::limit::RateLimit>,
    /// Other `[server]` keys: (key, TOML value, comment).
    pub server_keys: Vec<(&'static str, String, String)>,
    /// `server.tls.min_version` from `ssl_protocols`.
    pub tls_min_version: Option<At<String>>,
    /// `[resolver]` from `resolver` / `resolver_timeout`.
    pub resolver: Option<Resolver>,
}

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    pub nameservers: Vec<String>,
    pub timeout: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
    pub loc: Loc,
}

/// `upstreams.NAME.host_header`: lb's own type (`proxy_set_header Host $http_host` is
/// `Client`, `$host` is `ClientHost`, NGINX's default `$proxy_host` is `Upstream`).
pub use crate::config::HostHeader;

impl HostHeader {
    pub fn as_toml(&self) -> &str {
        match self {
            HostHeader::Client => "client",
            HostHeader::ClientHost => "client_host",
            HostHeader::Upstream => "upstream",
            HostHeader::Literal(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: String,
    pub weight: Option<u32>,
    pub max_conns: Option<u32>,
    pub backup: bool,
    pub down: bool,
    pub resolve: bool,
    /// `service=`: the SRV name lb follows instead of `address`.
    pub srv: Option<String>,
    /// The name `hash ... consistent` hashes when it is not `address` (NGINX hashes the
    /// `server` argument as written: `10.0.0.1`, not `10.0.0.1:80`).
    pub hash_name: Option<String>,
    pub loc: Loc,
}

impl Backend {
    pub fn new(address: String, loc: Loc) -> Backend {
        Backend {
            address,
            weight: None,
            max_conns: None,
            backup: false,
            down: false,
            resolve: false,
            srv: None,
            hash_name: None,
            loc,
        }
    }
}

/// `[upstreams.NAME.passive]`; `None` durations when ejection is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    pub consecutive_failures: u32,
    /// NGINX's `fail_timeout` (both `ejection_time` and `max_ejection_time`).
    pub fail_timeout: Option<String>,
    pub slow_start: Option<String>,
    /// Why these values (a comment above the table).
    pub why: String,
}

/// The settings that locations give an upstream (lb keeps them per upstream).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UseSettings {
    pub host_header: Option<At<HostHeader>>,
    pub connect_timeout: Option<At<String>>,
    pub read_timeout: Option<At<String>>,
    pub write_timeout: Option<At<String>>,
    pub retries: Option<At<u32>>,
    /// `proxy_ssl_verify`, `proxy_ssl_trusted_certificate`, `proxy_ssl_name`,
    /// `proxy_ssl_server_name` as written.
    pub ssl_verify: Option<At<String>>,
    pub ssl_ca: Option<At<String>>,
    pub ssl_name: Option<At<String>>,
    pub ssl_server_name: Option<At<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub loc: Loc,
    /// What made it, for the comment: `upstream api`, `proxy_pass http://10.0.0.1:8080`.
    pub label: String,
    pub strategy: Option<&'static str>,
    pub hash_key: Option<String>,
    pub backends: Vec<Backend>,
    pub passive: Passive,
    /// `proxy_pass https://...`.
    pub tls: bool,
    /// Set by the first location that proxies here.
    pub settings: Option<UseSettings>,
    /// The block has a `zone` (shared state: `max_conns` is for all workers together).
    pub zone: bool,
}

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub path: PathMatch,
    pub skip_regex: bool,
    pub replace_prefix: Option<String>,
    /// Empty for a route lb answers itself (`respond`).
    pub upstream: String,
    pub respond: Option<super::ret::Respond>,
    /// Empty `upstream` too: lb produces the body to Kafka (ngx_kafka_module's `kafka_topic`).
    pub kafka: Option<KafkaRoute>,
    /// `http` or `https` when the route's server listens on plain or on TLS ports only (and
    /// the import has both kinds).
    pub scheme: Option<&'static str>,
    /// The listen addresses of its server (`routes[i].listen`) when the import has several
    /// of one kind; empty: every listener.
    pub listen: Vec<String>,
    /// The zones of its `limit_req` lines.
    pub rate_limits: Vec<String>,
    /// Its `allow`/`deny` rules (`allow 10.0.0.0/8`), in order.
    pub access: Vec<String>,
    pub loc: Loc,
    /// For the comment: `server example.com, location /api/`.
    pub label: String,
    /// Its own header rules, timeouts and body limit.
    pub settings: RouteSettings,
    /// The upstream its `mirror` copies go to.
    pub mirror: Option<String>,
    /// From `split_clients` (then `upstream` is empty).
    pub split: Option<RouteSplit>,
}

/// A route's `split` and `split_by`, from the `split_clients` block at `loc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSplit {
    pub by: String,
    /// (percent as a TOML number, `None` for `*`; upstream name).
    pub parts: Vec<(Option<String>, String)>,
    pub loc: Loc,
}

/// `routes[i].kafka` from ngx_kafka_module: `kafka_topic` with the `kafka_broker_list` of the
/// http level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRoute {
    pub topic: At<String>,
    pub brokers: At<Vec<String>>,
}

/// A route's `set_request_headers`, `add_response_headers`, timeouts and `max_body_bytes`,
/// each with the NGINX line it came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSettings {
    /// (name, value) of `proxy_set_header` lines.
    pub set_headers: Vec<At<(String, String)>>,
    /// (name, value, `always`) of `add_header` lines.
    pub add_headers: Vec<At<(String, String, bool)>>,
    /// (`connect_timeout`/`read_timeout`/`write_timeout`, value) where the location's differs
    /// from its upstream's.
    pub timeouts: Vec<(&'static str, At<String>)>,
    /// `client_max_body_size` where it differs from the http level's (0: no limit).
    pub max_body_bytes: Option<At<u64>>,
}

/// NGINX's time syntax (`30`, `500ms`, `1m30s`, `2d`) as one of lb's durations, `None` when
/// it is not a time.
pub fn duration(text: &str) -> Option<String> {
    let mut ms: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ms", 1),
            ("s", 1000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
            ("w", 604_800_000),
            ("M", 2_592_000_000),
            ("y", 31_536_000_000),
        ]
        .iter()
        .find(|(u, _)| rest.starts_with(u))
        .map(|(u, scale)| (*scale, u.len()))
        .unwrap_or((1000, 0));
        if len == 0 && !rest.is_empty() {
            return None;
        }
        ms = ms.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[len..];
    }
    Some(match ms {
        0 => "0s".to_string(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_times_become_lb_durations() {
        assert_eq!(duration("30").as_deref(), Some("30s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1m30s").as_deref(), Some("90s"));
        assert_eq!(duration("120s").as_deref(), Some("2m"));
        assert_eq!(duration("1d").as_deref(), Some("24h"));
        assert_eq!(duration("0").as_deref(), Some("0s"));
        assert_eq!(duration("1x"), None);
        assert_eq!(duration("s"), None);
        assert_eq!(duration(""), None);
    }
}
