//! Runtime state that outlives snapshots: per-backend health, load and counters
//! ([`backend`]), the registry that keys it by upstream and address ([`registry`]), request
//! statistics ([`stats`]), attempt outcomes ([`outcome`]), rolling latency windows ([`latency`])
//! and the addresses DNS discovery found ([`discovery`]).

pub mod backend;
pub mod discovery;
pub mod latency;
pub mod outcome;
pub mod registry;
pub mod stats;
