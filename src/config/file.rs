//! The on-disk TOML shape. These types mirror the file one-to-one and never leave `config`:
//! `validate` turns them into the runtime types of [`super`]. Every struct denies unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

pub(in crate::config) use super::admin::file::*;
pub(in crate::config) use super::analytics::file::*;
pub(in crate::config) use super::upstream::file::*;

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

/// An `add_response_headers` entry: its value, or `{ value = "...", always = true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AddHeaderFile {
    Value(String),
    Table(AddHeaderTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHeaderTable {
    pub value: String,
    pub always: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<String>,
    pub skip_regex: Option<bool>,
    pub replace_prefix: Option<String>,
    pub rate_limits: Option<Vec<String>>,
    pub access: Option<Vec<String>>,
    pub scheme: Option<String>,
    /// One listener address or a list of them (checked in `validate`).
    pub listen: Option<toml::Value>,
    pub upstream: Option<String>,
    /// Kept as raw values so each entry is decoded (and reported) on its own.
    pub split: Option<Vec<toml::Value>>,
    pub split_by: Option<String>,
    pub fault: Option<toml::Value>,
    pub respond: Option<i64>,
    pub body: Option<String>,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub set_request_headers: Option<BTreeMap<String, String>>,
    pub add_response_headers: Option<BTreeMap<String, AddHeaderFile>>,
    pub add_response_headers_always: Option<bool>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub max_body_bytes: Option<i64>,
    pub mirror: Option<MirrorFile>,
    pub kafka: Option<KafkaRouteFile>,
}

/// `routes[i].kafka`: the route produces its requests' bodies to a Kafka topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaRouteFile {
    pub topic: Option<String>,
    pub brokers: Option<Vec<String>>,
    pub key: Option<String>,
    pub headers: Option<Vec<String>>,
    pub acks: Option<String>,
    pub timeout: Option<String>,
    pub max_bytes: Option<i64>,
    pub methods: Option<Vec<String>>,
}

/// `routes[i].mirror`: a copy of a share of the route's requests to another upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    pub upstream: Option<String>,
    pub percent: Option<f64>,
    pub max_body_bytes: Option<i64>,
    pub max_in_flight: Option<i64>,
}

/// An entry of `routes[i].split`. `percent` is an integer or a number with two decimals at
/// most; absent, the entry takes the rest (NGINX's `*`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    pub upstream: String,
    pub percent: Option<toml::Value>,
}

/// `routes[i].fault`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub delay: Option<String>,
    pub delay_percent: Option<toml::Value>,
    pub abort_status: Option<i64>,
    pub abort_grpc_status: Option<i64>,
    pub abort_percent: Option<toml::Value>,
    pub header: Option<String>,
}
