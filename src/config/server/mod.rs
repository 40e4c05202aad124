//! `[server]`: the listeners, their TLS, client-side limits and timeouts, path handling and
//! logging — the runtime types and their defaults.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check` (`[server.tls]` in `tls`), on the shared machinery of `config::validate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod check;
pub(in crate::config) mod file;
mod tls;

use super::{Cidr, RealIp};

/// Default `server.grace_period`: how long a SIGTERM'd lb lets in-flight requests finish.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
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
