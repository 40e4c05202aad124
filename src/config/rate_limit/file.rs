//! The serde struct of `[rate_limits.NAME]`, as written in the file; [`super::check`] turns it
//! into [`super::RateLimitConfig`].

use serde::Deserialize;

/// `[rate_limits.NAME]`: NGINX's `limit_req_zone` and `limit_req` in one table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub key: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub delay: Option<i64>,
    pub nodelay: Option<bool>,
    pub status: Option<i64>,
    pub max_keys: Option<i64>,
    pub dry_run: Option<bool>,
}
