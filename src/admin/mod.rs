//! The admin listener: `GET /healthz` (liveness), `GET /metrics` (Prometheus), `GET /status` (JSON),
//! `POST /reload` (re-read the config file; JSON answer with the problems on failure) and `GET /`
//! (the live dashboard, embedded in the binary).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::Value;

use crate::runtime::Shared;

pub mod status;

/// The dashboard page (self-contained: no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        Admin { shared }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ("GET", "/metrics") => {
                let body = self.shared.render_metrics();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body.into_bytes(),
                )
            }
            ("GET", "/status") => json_reply(StatusCode::OK, &status::status(&self.shared)),
            ("POST", "/reload") => {
                let _ = session.drain_request_body().await;
                let shared = self.shared.clone();
                let result = tokio::task::spawn_blocking(move || shared.reload("admin"))
                    .await
                    .unwrap_or_default();
                let code = if result.ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                json_reply(code, &serde_json::to_value(result).unwrap_or_default())
            }
            ("GET", "/") | ("GET", "/dashboard") => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                DASHBOARD.as_bytes().to_vec(),
            ),
            (_, "/healthz" | "/metrics" | "/status" | "/reload" | "/") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

fn reply(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

fn json_reply(code: StatusCode, v: &Value) -> Response<Vec<u8>> {
    reply(
        code,
        "application/json",
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )
}
