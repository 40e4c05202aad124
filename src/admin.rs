//! The admin listener: `GET /healthz` (liveness), `GET /metrics` (Prometheus), `GET /status` (JSON),
//! `POST /reload` (re-read the config file; JSON answer with the problems on failure) and `GET /`
//! (the live dashboard, embedded in the binary).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::runtime::Shared;

/// The dashboard page (self-contained: no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        Admin { shared }
    }

    fn status(&self) -> Value {
        let snap = self.shared.snapshot.load_full();
        let loaded = *self.shared.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let (hash, loaded_at) = (loaded.hash, loaded.loaded_at_ms);
        let last = self
            .shared
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut upstreams = serde_json::Map::new();
        for up in &snap.upstreams {
            let mut backends: Vec<Value> = up
                .backends
                .iter()
                .map(|b| {
                    let lat = b.state.latency();
                    let check = b.state.check.lock().unwrap_or_else(|e| e.into_inner());
                    json!({
                        "address": b.address,
                        "weight": b.weight,
                        "effective_weight": if b.state.usable() { b.effective_weight() } else { 0.0 },
                        "state": b.state.status(),
                        "in_flight": b.state.in_flight(),
                        "requests": b.state.attempts(),
                        "errors": b.state.errors(),
                        "latency_p50_ms": lat.0,
                        "latency_p99_ms": lat.1,
                        "last_check_error": check.last_error,
                    })
                })
                .collect();
            let draining = self
                .shared
                .draining
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for ((_, address), state) in draining
                .iter()
                .filter(|((u, _), s)| u == up.name() && s.in_flight() > 0)
            {
                backends.push(json!({
                    "address": address,
                    "weight": 0,
                    "effective_weight": 0,
                    "state": "draining",
                    "in_flight": state.in_flight(),
                    "requests": state.attempts(),
                    "errors": state.errors(),
                    "latency_p50_ms": state.latency().0,
                    "latency_p99_ms": state.latency().1,
                }));
            }
            drop(draining);
            upstreams.insert(
                up.name().to_string(),
                json!({ "strategy": up.config.strategy.as_str(), "backends": backends }),
            );
        }
        json!({
            "config": {
                "path": self.shared.config_path.display().to_string(),
                "hash": format!("{hash:016x}"),
                "loaded_at_ms": loaded_at,
                "last_reload": last,
            },
            "uptime_s": self.shared.started.elapsed().as_secs_f64(),
            "downstream_connections": crate::observe::metrics::established_connections(
                &snap.config.server.listen.iter().map(|a| a.port()).collect::<Vec<_>>()
            ),
            "upstreams": upstreams,
            "events": self.shared.events(),
        })
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
            ("GET", "/status") => json_reply(StatusCode::OK, &self.status()),
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
