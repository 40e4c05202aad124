//! `[upstreams.NAME]` and `[resolver]`: backends, how one is chosen, health checks, passive
//! ejection, DNS discovery and the backend leg (protocol, TLS, `Host`) — the runtime types and
//! their defaults.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check` (`health_check` and `passive` in `health`), on the shared machinery of
//! `config::validate`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::headers;

mod check;
pub(in crate::config) mod file;
mod health;

pub(in crate::config) use check::{parse_key, KEY_NAMES};

/// Largest accepted backend weight.
pub const MAX_WEIGHT: i64 = 10_000;
/// Default `upstreams.*.connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `upstreams.*.read_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `upstreams.*.write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `upstreams.*.idle_timeout`: how long a pooled backend connection may sit unused.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `upstreams.*.retries`: extra attempts on other backends after a failed connection.
pub const DEFAULT_RETRIES: u32 = 2;

/// Health-check defaults (`upstreams.*.health_check`).
pub const DEFAULT_HC_PATH: &str = "/healthz";
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HC_HEALTHY: u32 = 2;
pub const DEFAULT_HC_UNHEALTHY: u32 = 3;

/// Passive-ejection defaults (`upstreams.*.passive`).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

/// Default `upstreams.*.resolve_interval`: the longest gap between resolutions of a name.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Default `resolver.timeout`.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);

/// `upstreams.X.strategy`: how a backend is chosen (see [`crate::balance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastConnections,
    /// Weighted random.
    Random,
    /// Two weighted random picks; the one with fewer requests in flight per weight wins (NGINX
    /// `random two least_conn`, Envoy's LEAST_REQUEST).
    TwoChoices,
    /// NGINX's `ip_hash`: the first three octets of an IPv4 client, the whole IPv6 address.
    IpHash,
    /// NGINX's `hash KEY consistent` (ketama points over the backends' written names).
    ConsistentHash,
}

impl Strategy {
    /// Hash strategies keep a client (or key) on one backend: no slow start, no backups.
    pub fn is_hash(self) -> bool {
        matches!(self, Strategy::IpHash | Strategy::ConsistentHash)
    }
}

/// `upstreams.X.hash_key`: what `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address as text (NGINX `$remote_addr`).
    ClientIp,
    /// The request target as sent, query included (NGINX `$request_uri`).
    Uri,
    /// The normalized path, no query (NGINX `$uri`).
    Path,
    /// A request header's value (lower-cased name); empty when absent.
    Header(String),
    /// A cookie's value; empty when absent.
    Cookie(String),
}

impl HashKey {
    /// As written in the config: `client_ip`, `uri`, `path`, `header:NAME`, `cookie:NAME`.
    pub fn describe(&self) -> String {
        match self {
            HashKey::ClientIp => "client_ip".to_string(),
            HashKey::Uri => "uri".to_string(),
            HashKey::Path => "path".to_string(),
            HashKey::Header(h) => format!("header:{h}"),
            HashKey::Cookie(c) => format!("cookie:{c}"),
        }
    }
}

/// `upstreams.X.host_header`: the `Host` the backends get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's `Host` (or `:authority`) as sent, lb's default (NGINX's `$http_host`).
    Client,
    /// The client's host name: lower case, without port or trailing dot (NGINX's `$host`).
    ClientHost,
    /// The upstream's name (NGINX's default, `$proxy_host`).
    Upstream,
    /// This value.
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub strategy: Strategy,
    pub backends: Vec<BackendConfig>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: u32,
    pub health_check: Option<HealthCheckConfig>,
    pub passive: PassiveConfig,
    /// What lb speaks to the backends.
    pub protocol: Protocol,
    /// `[upstreams.X.tls]`: TLS to the backends (absent: cleartext).
    pub tls: Option<UpstreamTls>,
    /// What `consistent_hash` hashes (`None` for other strategies).
    pub hash_key: Option<HashKey>,
    pub host_header: HostHeader,
    /// How often discovered names are resolved again at the least (their TTL may say sooner).
    pub resolve_interval: Duration,
    /// The `[rate_limits]` every request routed here passes, unless its route names its own.
    pub rate_limits: Vec<String>,
    /// `set_request_headers`: for routes that set none of their own.
    pub set_request_headers: Vec<headers::HeaderRule>,
    /// `add_response_headers`: for routes that add none of their own.
    pub add_response_headers: headers::ResponseHeaders,
}

/// `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// A backend entry whose addresses come from DNS, followed while lb runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `resolve = true`: every A/AAAA answer for `host` is a backend on `port`.
    Name { host: String, port: u16 },
    /// `srv = "_service._proto.name"`: targets, ports, weights and priorities from SRV.
    Srv { name: String },
}

/// `upstreams.X.protocol`: the backend leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2: ALPN `h2` with TLS, prior knowledge (h2c) without.
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// The server name sent and verified; `None`: each backend's host name, or for an IP
    /// address no SNI and the certificate verified against the address (an IP address subject
    /// alternative name; vendored pingora-core patch 9).
    pub sni: Option<String>,
    /// `None`: the system's roots.
    pub ca: Option<crate::tls::CaCerts>,
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// As written in the file (`host:port`, `ip:port`, or the SRV name); the identity used
    /// across reloads.
    pub address: String,
    /// Resolved when the config was loaded (unspecified for `discovery` entries, whose
    /// addresses come from [`crate::state::discovery`]).
    pub addr: SocketAddr,
    /// `resolve = true` or `srv`: the addresses follow DNS.
    pub discovery: Option<Discovery>,
    pub weight: NonZeroU32,
    /// Used only when no primary backend is usable (or all are at `max_conns`).
    pub backup: bool,
    /// Never picked (kept in the config, e.g. for a hash ring's stability).
    pub down: bool,
    /// Most requests in flight at once; 0: no limit.
    pub max_conns: u32,
    /// `hash_name`: what `consistent_hash` hashes for this backend instead of `address`.
    pub hash_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2, `SERVING` passes.
    Grpc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: CheckKind,
    pub path: String,
    /// Inclusive range of passing status codes.
    pub expected_status: (u16, u16),
    pub host: Option<String>,
    /// The service name a `grpc` check asks about (empty: the server as a whole).
    pub service: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveConfig {
    pub consecutive_failures: u32,
    pub eject_on_5xx: bool,
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejected_percent: u32,
    pub slow_start: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            eject_on_5xx: false,
            ejection_time: DEFAULT_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            slow_start: Duration::ZERO,
        }
    }
}

/// The host name of a backend address (`name:port`), `None` for an IP address.
pub fn host_of(address: &str) -> Option<&str> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_err().then_some(host)
}
