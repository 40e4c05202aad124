//! The serde structs of `[server]` and `[server.tls]` (with a `listen` entry's table form and a
//! certificate, also `[admin.tls]`'s), as written in the file; [`super::check`] and
//! [`super::tls`] turn them into [`super::ServerSettings`].

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default)]
    pub listen: Vec<toml::Value>,
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    pub access_log: Option<String>,
    pub log: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub real_ip_from: Vec<String>,
    pub real_ip_header: Option<String>,
    pub real_ip_recursive: Option<bool>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_uri_bytes: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub upstream_keepalive_pool_size: Option<i64>,
    pub work_stealing: Option<bool>,
    pub normalize_path: Option<String>,
    pub merge_slashes: Option<bool>,
    pub client_close: Option<String>,
    pub h2c: Option<bool>,
    pub preserve_header_case: Option<bool>,
    pub tls: Option<ServerTlsFile>,
}

/// The table form of a `server.listen` / `server.tls.listen` entry (the other form is the
/// address string): `{ address = "ADDRESS", proxy_protocol = true }`. Entries are kept as raw
/// values so each one is decoded (and reported) at its own key path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTable {
    pub address: String,
    pub proxy_protocol: Option<bool>,
}

/// `[server.tls]`: HTTPS listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFile {
    #[serde(default)]
    pub listen: Vec<toml::Value>,
    pub certificates: Option<Vec<CertFile>>,
    pub http2: Option<bool>,
    pub min_version: Option<String>,
    pub reject_unknown_sni: Option<bool>,
}

/// A certificate and its key (`[admin.tls]`, the entries of `server.tls.certificates`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: String,
    pub key: String,
}
