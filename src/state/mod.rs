//! Runtime state that outlives snapshots: per-backend health, load and counters
//! ([`backend`]), the registry that keys it by upstream and address ([`registry`]), request
//! statistics ([`stats`]), attempt outcomes ([`outcome`]), rolling latency windows ([`latency`])
//! the addresses DNS discovery found ([`discovery`]) and the rate limits' tables of keys
//! ([`limit`]), the counts of injected faults ([`fault`]) and
//! the producers of `kafka` routes ([`kafka`]).

pub mod backend;
pub mod discovery;
pub mod fault;
pub mod kafka;
pub mod latency;
pub mod limit;
pub mod outcome;
pub mod registry;
pub mod stats;
