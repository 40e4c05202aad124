//! What lb tells the outside: Prometheus [`metrics`] (rendered from snapshots and state at scrape
//! time), the JSON [`access_log`] (a background writer) and process [`logging`].

pub mod access_log;
pub mod logging;
pub mod metrics;
