//! Runtime state that outlives snapshots: per-backend health, load and counters
//! ([`backend`]), the registry that keys it by upstream and address ([`registry`]), request
//! statistics ([`stats`]), attempt outcomes ([`outcome`]), rolling latency windows ([`latency`])
//! the addresses DNS discovery found ([`discovery`]) and the per-second history ([`history`]).

pub mod backend;
pub mod discovery;
pub mod history;
pub mod latency;
pub mod outcome;
pub mod registry;
pub mod stats;
