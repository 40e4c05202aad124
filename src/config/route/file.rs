//! The serde structs of a `[[routes]]` entry and of its `mirror` table, as written in the file;
//! [`super::check`] (with [`super::listen`] and [`super::mirror`]) turns them into
//! [`super::RouteConfig`]s.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::headers::file::AddHeaderFile;
use crate::config::kafka_route::file::KafkaRouteFile;

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
    /// One listener address or a list of them (checked in `super::listen`).
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

/// `routes[i].mirror`: a copy of a share of the route's requests to another upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    pub upstream: Option<String>,
    pub percent: Option<f64>,
    pub max_body_bytes: Option<i64>,
    pub max_in_flight: Option<i64>,
}
