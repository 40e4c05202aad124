//! Runtime state that outlives snapshots: per-backend health, load and counters
//! ([`backend`]), the registry that keys it by upstream and address ([`registry`]), request
//! statistics ([`stats`]), attempt outcomes ([`outcome`]) and rolling latency windows ([`latency`]).

pub mod backend;
pub mod latency;
pub mod outcome;
pub mod registry;
pub mod stats;
