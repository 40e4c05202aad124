//! Configuration: `lb.toml` → file structs (serde, unknown keys denied) → [`Config`] (validated
//! runtime types). Loading never stops at the first mistake: every problem is collected with its key
//! path (`upstreams.api.backends[2].weight: must be at least 1`) so `lb --check`, start-up and reloads
//! can show them all at once.
//!
//! Where things are: one module a section, each holding the section's runtime types with their
//! `DEFAULT_*` constants (`mod.rs`), its serde structs (`file.rs`) and the checks that turn the
//! one into the other (`check.rs`) — `server` (with `tls.rs` for `[server.tls]`), `upstream`
//! (with `[resolver]`; `health.rs` for `health_check` and `passive`), `route` (with `listen.rs`
//! and `mirror.rs`), `admin`, `analytics`, `rate_limit`, `headers`, `split` (with `fault`),
//! `kafka_route`, and `client` and `respond` (runtime types and checks, no file struct of their
//! own); `listeners` is a runtime helper. `validate` holds what the sections share: the
//! `Checker` that collects problems and warnings, its helpers (`decode`, `int`, `duration`,
//! `choice`, ...) and the top-level [`parse`] that calls each section in order. The runtime
//! types are re-exported here, so a type is `config::Name` whichever module holds it.
//! [`Named`] is the one table of names of each choice enum; `summary` is what `lb --check`
//! prints.

mod admin;
mod analytics;
#[cfg(test)]
mod balancing_tests;
mod cidr;
pub mod client;
mod duration;
pub mod headers;
pub mod kafka_route;
pub mod listeners;
mod named;
mod problem;
mod rate_limit;
pub mod respond;
mod route;
mod server;
pub mod split;
mod summary;
mod upstream;
mod validate;

use std::path::Path;

pub use admin::*;
pub use analytics::*;
pub use cidr::*;
pub use client::{access_allows, AccessRule, RealIp};
pub use duration::parse_duration;
pub use named::Named;
pub use problem::*;
pub use rate_limit::*;
pub use route::*;
pub use server::*;
pub use upstream::*;

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
