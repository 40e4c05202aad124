//! Integration tests: real `lb` and `sample-backend` processes on ephemeral loopback ports.
#[path = "../support/mod.rs"]
mod support;

mod admin_security;
mod balancing;
mod check;
mod client_address;
mod client_close;
mod dashboard;
mod discovery;
mod failures;
mod flow_control;
mod forwarding_headers;
mod grpc;
mod health;
mod history;
mod http_semantics;
mod import_nginx;
mod kafka;
mod kafka_route;
mod lifecycle;
mod limits_timeouts;
mod metrics_series;
mod mirror;
mod nginx_diff;
mod observe;
mod rate_limit;
mod reload;
mod retries;
mod route_settings;
mod routing;
mod splits_faults;
mod streaming;
mod tls;
