//! The on-disk TOML shape. These types mirror the file one-to-one and never leave `config`:
//! `validate` turns them into the runtime types of [`super`]. Every struct denies unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

pub(in crate::config) use super::admin::file::*;
pub(in crate::config) use super::analytics::file::*;
pub(in crate::config) use super::server::file::*;
pub(in crate::config) use super::upstream::file::*;

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
