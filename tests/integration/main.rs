//! Integration tests: real `lb` and `sample-backend` processes on ephemeral loopback ports.
#[path = "../support/mod.rs"]
mod support;

mod admin_security;
mod balance_correctness;
mod check;
mod client_close;
mod core;
mod dashboard;
mod discovery;
mod edge_correctness;
mod flow_control;
mod grpc;
mod hardening;
mod health;
mod history;
mod http_semantics;
mod import_nginx;
mod kafka;
mod nginx_diff;
mod observe;
mod ops_correctness;
mod rate_limit;
mod reload;
mod tls;
