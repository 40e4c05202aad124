//! lb: an HTTP load balancer and reverse proxy on pingora.
//!
//! Module map: [`config`] (file → validated config), [`balance`] (backend choice), [`backend`]
//! (per-backend shared state), [`snapshot`] (what each request reads), [`proxy`] (the request
//! path), [`path`] (path normalization for routing), [`health`] (active and passive checks),
//! [`reload`] (live state and config reloads), [`admin`] (admin listener), [`metrics`]
//! (Prometheus), [`server`] (wiring it all into pingora).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod config;
pub mod edge;
pub mod health;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod stats;
