//! Configuration: `lb.toml` → [`file`] structs (serde, unknown keys denied) → [`Config`] (validated
//! runtime types). Loading never stops at the first mistake: every problem is collected with its key
//! path (`upstreams.api.backends[2].weight: must be at least 1`) so `lb --check`, start-up and reloads
//! can show them all at once.

pub mod client;
mod duration;
mod file;
pub mod headers;
pub mod kafka_route;
pub mod listeners;
pub mod respond;
pub mod split;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::{access_allows, AccessRule, RealIp};
pub use duration::parse_duration;
pub use validate::{ADMIN_PATHS, MAX_WEIGHT};

/// Default `server.grace_period`: how long a SIGTERM'd lb lets in-flight requests finish.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
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
/// Default `server.max_header_bytes` (request line + headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default `server.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default `server.max_uri_bytes`.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Default `server.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default `server.header_timeout`: total deadline for receiving request headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `server.body_timeout`: longest pause while reading a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.send_timeout`: longest wait for a client to take more of its response
/// (NGINX's `send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.keepalive_timeout`: idle client keep-alive connections are closed after it.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `server.work_stealing`.
pub const DEFAULT_WORK_STEALING: bool = false;
/// Default `server.upstream_keepalive_pool_size` (idle backend connections kept, per process).
pub const DEFAULT_UPSTREAM_POOL: usize = 1024;

/// Default `server.normalize_path`.
pub const DEFAULT_NORMALIZE_PATH: NormalizePath = NormalizePath::Route;
/// Default `server.merge_slashes`.
pub const DEFAULT_MERGE_SLASHES: bool = true;
/// Default `server.client_close`: as NGINX (`proxy_ignore_client_abort off`), a client that
/// closes its side before its answer has gone: the backend request is cancelled, its slot freed,
/// and the request logged as 499.
pub const DEFAULT_CLIENT_CLOSE: ClientClose = ClientClose::Abort;

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

/// Default `admin.public`: the paths the admin listener serves without the token.
pub const DEFAULT_ADMIN_PUBLIC: &[&str] = &["/healthz"];

/// A fully validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub admin: Option<AdminSettings>,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamConfig>,
    /// In file order; [`crate::snapshot`] groups them for matching.
    pub routes: Vec<RouteConfig>,
    /// `[resolver]`: DNS servers for discovery (`None`: the system's, from resolv.conf).
    pub resolver: Option<ResolverConfig>,
    /// `[analytics]`: the per-second history and the Kafka stream.
    pub analytics: AnalyticsConfig,
    /// `[rate_limits.NAME]`, sorted by name.
    pub rate_limits: Vec<RateLimitConfig>,
    /// Things worth fixing that do not stop lb (`--check` prints them as `FILE: KEY: warning: ...`).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Files besides the config file that a reload reads again: certificates and keys
    /// (`server.tls`, `admin.tls`) and the admin token. The file watcher follows them too.
    pub fn watched_files(&self) -> Vec<&std::path::Path> {
        let mut files = Vec::new();
        let certs = self.server.tls.iter().flat_map(|t| t.certificates.iter());
        let admin_cert = self.admin.iter().filter_map(|a| a.tls.as_ref());
        for c in certs.chain(admin_cert) {
            files.push(c.cert_path.as_path());
            files.push(c.key_path.as_path());
        }
        if let Some(t) = self.admin.as_ref().and_then(|a| a.token.as_ref()) {
            files.push(t.file.as_path());
        }
        files
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub grace_period: Duration,
    pub access_log: AccessLog,
    /// `RUST_LOG`-style filter directives; the `RUST_LOG` variable wins when set.
    pub log: Option<String>,
    pub trusted_proxies: Vec<Cidr>,
    /// `server.real_ip_from`, `real_ip_header`, `real_ip_recursive`: the client address behind
    /// trusted proxies.
    pub real_ip: RealIp,
    /// The `server.listen` entries with `proxy_protocol = true`: their connections start with a
    /// PROXY protocol header, whose source address is the connection's peer.
    pub proxy_protocol: Vec<SocketAddr>,
    pub limits: Limits,
    pub upstream_keepalive_pool_size: usize,
    /// pingora runtime flavour: work-stealing (tokio multi-thread) or one independent
    /// single-threaded runtime per worker thread.
    pub work_stealing: bool,
    /// Which path routes are matched against, and which is forwarded (see [`crate::edge::path`]).
    pub normalize_path: NormalizePath,
    /// Normalization merges repeated slashes (`//a` → `/a`).
    pub merge_slashes: bool,
    /// What a client's half-close (EOF after a complete request) does to its request.
    pub client_close: ClientClose,
    /// Plain listeners also take HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// `[server.tls]`: HTTPS listeners and their certificates.
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`. The listeners, `http2` and `min_version` are fixed at start; the certificates
/// (and `reject_unknown_sni`) are re-read on every reload and swapped for new handshakes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub listen: Vec<SocketAddr>,
    /// The entries with `proxy_protocol = true` (the header comes before the TLS handshake).
    pub proxy_protocol: Vec<SocketAddr>,
    /// The usable entries of `server.tls.certificates`, in listing order: chosen by SNI from
    /// each certificate's names; the first is the default.
    pub certificates: Vec<crate::tls::Certificate>,
    /// Entries that did not load while others did (each a `--check` warning): not served. A
    /// reload keeps serving the certificate a skipped entry had before, while it is valid.
    pub skipped: Vec<SkippedCert>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`).
    pub http2: bool,
    pub min_version: TlsVersion,
    /// Refuse handshakes whose SNI no certificate covers, and those without SNI (NGINX's
    /// `ssl_reject_handshake`), instead of answering with the first certificate.
    pub reject_unknown_sni: bool,
}

/// An entry of `server.tls.certificates` that did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCert {
    /// Its position in `server.tls.certificates`.
    pub index: usize,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// `server.tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// `server.client_close`: what lb does when a client sends EOF after a complete request while
/// the answer is pending. On a read, a half-close and a full close look the same; a client that
/// is provably gone (a reset, a failed write, EOF inside its request) is aborted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClose {
    /// Keep waiting and deliver the answer: the client may only have closed its sending side
    /// (RFC 9112 §9.6).
    Finish,
    /// Cancel the backend request at once and count it as 499, as NGINX does by default.
    Abort,
}

/// `server.normalize_path`: what lb does with the RFC 3986 normalized request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalizePath {
    /// Route on the normalized path; forward the path as the client sent it.
    Route,
    /// Route on the normalized path and forward it (the query is kept as sent).
    Forward,
    /// Route on the path as the client sent it.
    Off,
}

/// Request limits enforced by lb itself before anything is forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
    /// The largest body any route accepts (`max_body_bytes` unless a route allows more): lb
    /// refuses a longer `Content-Length` before routing; the route's own limit is checked once
    /// the request is routed.
    pub max_body_bytes_any_route: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Longest wait for the client to take more of its response (`server.send_timeout`).
    pub send_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
    /// `server.preserve_header_case`: HTTP/1 header names keep the spelling they came with on
    /// both legs (NGINX's behaviour). Off (the default, as HAProxy and Envoy): standard names go
    /// out in title case (`Content-Type`), others in lower case, and each head needs one header
    /// map instead of two.
    pub preserve_header_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// `admin.token_file`, read when the config is loaded (so a reload rotates it).
    pub token: Option<AdminToken>,
    /// Paths served without the token.
    pub public: Vec<String>,
    /// Client networks allowed at all; `None`: any client.
    pub allow: Option<Vec<Cidr>>,
    /// `admin.hosts`: names a client without a token may send in `Host` (IP literals and
    /// `localhost` always pass), lower case. Other names are refused: DNS rebinding.
    pub hosts: Vec<String>,
    /// `[admin.tls]`: serve the admin listener over HTTPS with this certificate.
    pub tls: Option<crate::tls::Certificate>,
}

/// The admin bearer token and the file it was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub file: PathBuf,
    secret: String,
}

impl AdminToken {
    pub fn new(file: PathBuf, secret: String) -> AdminToken {
        AdminToken { file, secret }
    }

    /// The token itself: compare it in constant time, never log it.
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({}, <redacted>)", self.file.display())
    }
}

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
    /// Every strategy with its name in the config: the one list of them.
    const ALL: [(Strategy, &'static str); 6] = [
        (Strategy::RoundRobin, "round_robin"),
        (Strategy::LeastConnections, "least_connections"),
        (Strategy::Random, "random"),
        (Strategy::TwoChoices, "two_choices"),
        (Strategy::IpHash, "ip_hash"),
        (Strategy::ConsistentHash, "consistent_hash"),
    ];

    pub fn parse(name: &str) -> Option<Strategy> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    /// The names, quoted, for messages: `"round_robin", ... or "consistent_hash"`.
    pub fn names() -> String {
        let quoted: Vec<String> = Self::ALL.iter().map(|(_, n)| format!("{n:?}")).collect();
        let (last, rest) = quoted.split_last().expect("strategies");
        format!("{} or {last}", rest.join(", "))
    }

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

/// Default `rate_limits.X.status`: 429 Too Many Requests (NGINX's `limit_req_status` default
/// is 503; the importer carries NGINX's).
pub const DEFAULT_RATE_LIMIT_STATUS: u16 = 429;
/// Default `rate_limits.X.max_keys`: keys remembered at once (about NGINX's 10m zone of
/// `$binary_remote_addr` states).
pub const DEFAULT_RATE_LIMIT_KEYS: usize = 100_000;

/// `[rate_limits.NAME]`: NGINX's `limit_req` (a leaky bucket per key; see
/// [`crate::state::limit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    /// What a request is counted by (an empty value: the request is not limited, as in NGINX).
    pub key: HashKey,
    /// Requests per second, in thousandths (NGINX's unit: `"1/m"` is 16).
    pub rate: u64,
    /// Requests over the rate that are still accepted (NGINX `burst`).
    pub burst: u64,
    /// Of the `burst`, how many pass without being delayed to the rate (`nodelay`: all).
    pub delay: u64,
    /// The answer to a request over the limit.
    pub status: u16,
    /// Keys remembered at once; beyond, the least recently seen are forgotten.
    pub max_keys: usize,
    /// Count what would be refused or delayed, refuse and delay nothing.
    pub dry_run: bool,
}

/// Default `analytics.history`: how much per-second history lb keeps.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(3600);
/// Default `analytics.history_max_memory`.
pub const DEFAULT_HISTORY_MAX_MEMORY: u64 = 64 << 20;
/// Default `analytics.kafka.topic`.
pub const DEFAULT_KAFKA_TOPIC: &str = "load_metrics";
/// Default `analytics.kafka.queue`: records buffered while the broker is slow or away.
pub const DEFAULT_KAFKA_QUEUE: usize = 100_000;
/// Default `analytics.kafka.linger`: how long a record may wait for others to fill its batch.
/// librdkafka's own default, 5 ms, cost twice the producer thread's CPU per record at 15k
/// records/s (measured: 2.5 against 1.1 µs); 50 ms is still live for a dashboard.
pub const DEFAULT_KAFKA_LINGER: Duration = Duration::from_millis(50);
/// The largest `analytics.kafka.linger` (a record unsent after 10 s is dropped).
pub const MAX_KAFKA_LINGER: Duration = Duration::from_secs(5);

/// `[analytics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// Per-second samples kept in memory (zero: no history).
    pub history: Duration,
    /// Above this, per-backend samples coarsen (per-upstream totals stay at one second).
    pub history_max_memory: u64,
    pub kafka: Option<KafkaConfig>,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            history: DEFAULT_HISTORY,
            history_max_memory: DEFAULT_HISTORY_MAX_MEMORY,
            kafka: None,
        }
    }
}

/// `[analytics.kafka]`: JSON records, one per message, keyed by `upstream/backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port` each.
    pub brokers: Vec<String>,
    pub topic: String,
    /// One record per request.
    pub request_records: bool,
    /// One record per second per backend (the history sample).
    pub summary_records: bool,
    /// State changes, reloads, ejections, DNS changes.
    pub event_records: bool,
    pub compression: KafkaCompression,
    pub acks: KafkaAcks,
    /// Records buffered while the broker is slow or away; beyond it they are dropped (counted).
    pub queue: usize,
    /// librdkafka's `linger.ms`: how long a record waits for others to fill its batch.
    pub linger: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl KafkaCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// What "sent" means: acknowledged by nobody, the partition leader, or all in-sync replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KafkaAcks {
    None,
    Leader,
    All,
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

/// An IPv4/IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (V6(net), V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (full, rest) = ((prefix / 8) as usize, prefix % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl AdminSettings {
    /// One line for `lb --check`: address, scheme and what protects it.
    pub fn summary(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let token = match &self.token {
            Some(t) => format!("token from {}", t.file.display()),
            None => "no token".to_string(),
        };
        let allow = match &self.allow {
            Some(nets) => {
                let nets: Vec<String> = nets.iter().map(Cidr::to_string).collect();
                format!("allow {}", nets.join(", "))
            }
            None => "any client".to_string(),
        };
        format!(
            "{scheme}://{} ({token}, public {}, {allow})",
            self.listen,
            self.public.join(" ")
        )
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One thing wrong with a config file, located by key path (and line/column for syntax errors).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: the file, and every problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Each problem as one line, prefixed with the file name.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        self.problems
            .iter()
            .map(|p| format!("{file}: {p}"))
            .collect()
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read file: {e}"),
        }],
    })?;
    parse(&text).map_err(|problems| ConfigError {
        file: path.to_owned(),
        problems,
    })
}

/// Validates config text; on failure returns every problem found.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    validate::parse(text)
}

impl Config {
    /// Each warning as `FILE: KEY: warning: MESSAGE`.
    pub fn warning_lines(&self, file: &Path) -> Vec<String> {
        let file = file.display();
        self.warnings
            .iter()
            .map(|w| format!("{file}: {}: warning: {}", w.path, w.message))
            .collect()
    }

    /// The short human summary printed by `lb --check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let listen: Vec<String> = self.server.listen.iter().map(|a| a.to_string()).collect();
        let h2c = if self.server.h2c { " (h2c too)" } else { "" };
        let _ = writeln!(s, "listeners: {}{h2c}", listen.join(", "));
        if let Some(tls) = &self.server.tls {
            let listen: Vec<String> = tls.listen.iter().map(|a| a.to_string()).collect();
            let names: Vec<String> = tls.certificates.iter().map(|c| c.names.join(" ")).collect();
            let alpn = if tls.http2 {
                "h2, http/1.1"
            } else {
                "http/1.1"
            };
            let reject = if tls.reject_unknown_sni {
                "; unknown SNI refused"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "https listeners: {} ({alpn}; certificates: {}{reject})",
                listen.join(", "),
                names.join(" | ")
            );
        }
        if let Some(admin) = &self.admin {
            let _ = writeln!(s, "admin: {}", admin.summary());
        }
        let _ = writeln!(s, "threads: {}", self.server.threads);
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "upstream {} ({}, retries {}, connect_timeout {:?}, read_timeout {:?}{}):",
                u.name,
                u.strategy.as_str(),
                u.retries,
                u.connect_timeout,
                u.read_timeout,
                if u.health_check.is_some() {
                    ", health checked"
                } else {
                    ""
                }
            );
            for b in &u.backends {
                let mut flags = String::new();
                if b.backup {
                    flags.push_str(" backup");
                }
                if b.down {
                    flags.push_str(" down");
                }
                if b.max_conns > 0 {
                    let _ = write!(flags, " max_conns {}", b.max_conns);
                }
                let resolved = match &b.discovery {
                    None => b.addr.to_string(),
                    Some(Discovery::Name { .. }) => "A/AAAA, followed".to_string(),
                    Some(Discovery::Srv { .. }) => "SRV, followed".to_string(),
                };
                let _ = writeln!(s, "  {} ({resolved}) weight {}{flags}", b.address, b.weight);
            }
        }
        if self.routes.is_empty() {
            let _ = writeln!(s, "routes: all traffic -> {}", self.upstreams[0].name);
        }
        for r in &self.routes {
            let mut extra = String::new();
            if r.skip_regex {
                extra.push_str(" skip_regex");
            }
            if let Some(p) = &r.replace_prefix {
                let _ = write!(extra, " replace_prefix={p}");
            }
            if let Some(scheme) = r.scheme {
                let _ = write!(extra, " scheme={scheme:?}");
            }
            if let Some(listen) = &r.listen {
                let listen: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
                let _ = write!(extra, " listen={}", listen.join(","));
            }
            if r.fault.is_some() {
                extra.push_str(" fault");
            }
            let target = match &r.target {
                RouteTarget::Upstream(u) => u.clone(),
                RouteTarget::Split(sp) => {
                    let parts: Vec<String> = sp
                        .parts
                        .iter()
                        .map(|p| match p.share {
                            Some(n) => format!("{} {}%", p.upstream, n as f64 / 100.0),
                            None => format!("{} *", p.upstream),
                        })
                        .collect();
                    format!("split by {}: {}", sp.by.describe(), parts.join(", "))
                }
                RouteTarget::Respond(a) => format!(
                    "respond {}{}",
                    a.status,
                    a.location
                        .as_ref()
                        .map_or(String::new(), |l| format!(" {l}"))
                ),
                RouteTarget::Kafka(k) => format!("kafka:{}", k.topic),
            };
            let _ = writeln!(
                s,
                "route host={} {}{extra} -> {target}",
                r.host.as_deref().unwrap_or("(default)"),
                r.path.describe(),
            );
        }
        s
    }
}

/// The host name of a backend address (`name:port`), `None` for an IP address.
pub fn host_of(address: &str) -> Option<&str> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_err().then_some(host)
}
