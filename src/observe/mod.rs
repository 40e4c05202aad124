//! What lb tells the outside: Prometheus [`metrics`] (rendered from snapshots and state at scrape
//! time), the JSON [`access_log`] (a background writer), the analytics record [`stream`] (a
//! bounded queue to the Kafka producer) and process [`logging`].

pub mod access_log;
pub mod logging;
pub mod metrics;
pub mod stream;
