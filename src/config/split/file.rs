//! The serde structs of a `routes[i].split` entry and of `routes[i].fault`, as written in the
//! file; [`super::check`] turns them into [`super::Split`] and [`super::Fault`].

use serde::Deserialize;

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
