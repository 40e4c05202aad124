//! `[rate_limits.NAME]`: NGINX's `limit_req` zones — the runtime type and its defaults.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check`, on the shared machinery of `config::validate`.

use super::HashKey;

mod check;
pub(in crate::config) mod file;

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
