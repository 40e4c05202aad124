//! lb: an HTTP load balancer and reverse proxy on pingora.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod edge;
pub mod health;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod util;
