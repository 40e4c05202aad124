//! The serde structs of `[upstreams.NAME]` (with `tls`, the backend table, `health_check` and

//! `passive`) and `[resolver]`, as written in the file; [`super::check`] turns them into the

//! runtime types.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::headers::file::AddHeaderFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub strategy: Option<String>,
    /// Kept as raw values so each backend is decoded (and reported) on its own.
    #[serde(default)]
    pub backends: Vec<toml::Value>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub retries: Option<i64>,
    pub health_check: Option<toml::Value>,
    pub passive: Option<toml::Value>,
    pub protocol: Option<String>,
    pub tls: Option<UpstreamTlsFile>,
    pub hash_key: Option<String>,
    pub host_header: Option<String>,
    pub resolve_interval: Option<String>,
    pub rate_limits: Option<Vec<String>>,
    pub set_request_headers: Option<BTreeMap<String, String>>,
    pub add_response_headers: Option<BTreeMap<String, AddHeaderFile>>,
    pub add_response_headers_always: Option<bool>,
}

/// `[resolver]`: the DNS servers discovery asks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub timeout: Option<String>,
}

/// `[upstreams.X.tls]`: TLS to the backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTable {
    pub address: Option<String>,
    pub srv: Option<String>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
    pub down: Option<bool>,
    pub max_conns: Option<i64>,
    pub resolve: Option<bool>,
    /// The name `consistent_hash` places on its ring instead of `address` (NGINX hashes the
    /// `server` argument as written, `10.0.0.1` without a port).
    pub hash_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expected_status: Option<toml::Value>,
    pub host: Option<String>,
    pub service: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveFile {
    pub consecutive_failures: Option<i64>,
    pub eject_on_5xx: Option<bool>,
    pub ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejected_percent: Option<i64>,
    pub slow_start: Option<String>,
}
