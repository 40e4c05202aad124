//! The admin listener: `GET /healthz` (liveness), `GET /metrics` (Prometheus), `GET /status` (JSON),
//! `POST /reload` (re-read the config file; JSON answer with the problems on failure) and `GET /`
//! (the live dashboard, embedded in the binary). Every request passes [`access::check`] first
//! (allow-list, cross-site writes, bearer token), with the settings of the current snapshot, so a
//! reload rotates the token and changes the rules at once. Over HTTPS (`[admin.tls]`) the
//! certificate comes from [`Shared::admin_cert`], which a reload swaps.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use serde_json::Value;

use crate::config::{AdminSettings, ADMIN_PATHS};
use crate::history::query;
use crate::history::report::report;
use crate::history::store::History;
use crate::reload::Reloader;
use crate::runtime::Shared;

pub mod access;
pub mod status;

use access::{Refusal, RefusalLog};

/// The dashboard page (self-contained: no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The `path` label of requests for anything but [`ADMIN_PATHS`] (bounded cardinality).
const OTHER_PATH: &str = "other";

pub struct Admin {
    shared: Arc<Shared>,
    /// The load-test history `/history`, `/history.csv` and `/report` read.
    history: Arc<History>,
    refusals: RefusalLog,
}

impl Admin {
    /// Also creates every `lb_admin_requests_total` series of the known paths, so they exist at 0
    /// from the first scrape.
    pub fn new(shared: Arc<Shared>, history: Arc<History>) -> Self {
        for path in ADMIN_PATHS.iter().chain([&OTHER_PATH]) {
            for result in access::RESULTS {
                shared
                    .metrics
                    .admin_requests
                    .with_label_values(&[path, result]);
            }
        }
        Admin {
            shared,
            history,
            refusals: RefusalLog::default(),
        }
    }
}

/// The admin service on `settings.listen`: plain HTTP, or HTTPS presenting the certificate held
/// by `shared.admin_cert` (read at each handshake, so reloads swap it).
pub fn service(
    shared: Arc<Shared>,
    history: Arc<History>,
    settings: &AdminSettings,
) -> Service<Admin> {
    let resolver = shared.admin_cert.clone();
    let mut svc = Service::new("lb admin".to_string(), Admin::new(shared, history));
    svc.threads = Some(1); // the admin API needs no more, whatever server.threads says
    let addr = settings.listen.to_string();
    // IPv6 listeners are v6-only, like the proxy's (see `config::listeners`); the option is for
    // IPv6 sockets only.
    let options = settings.listen.is_ipv6().then(|| {
        let mut o = TcpSocketOptions::default();
        o.ipv6_only = Some(true);
        o
    });
    if settings.tls.is_some() {
        // Empty paths: the resolver supplies the certificate, rustls never reads files here.
        match TlsSettings::intermediate("", "") {
            Ok(mut tls) => {
                tls.set_cert_resolver(resolver);
                svc.add_tls_with_settings(&addr, options, tls);
            }
            Err(e) => tracing::error!("admin listener: cannot set up TLS: {e}"),
        }
    } else {
        match options {
            Some(o) => svc.add_tcp_with_settings(&addr, o),
            None => svc.add_tcp(&addr),
        }
    }
    svc
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let label = ADMIN_PATHS
            .iter()
            .find(|p| **p == path)
            .copied()
            .unwrap_or(OTHER_PATH);
        let snap = self.shared.snapshot.load();
        let decision = match &snap.config.admin {
            Some(settings) => access::check(settings, &request(session, &path)),
            None => Ok(()),
        };
        let client = crate::edge::peer_ip(session);
        drop(snap);
        let result = match &decision {
            Ok(()) => access::ALLOWED,
            Err(r) => r.result(),
        };
        self.shared
            .metrics
            .admin_requests
            .with_label_values(&[label, result])
            .inc();
        match decision {
            Ok(()) => self.route(session, &path).await,
            Err(refusal) => {
                if let Some(suppressed) = self.refusals.should_log(client, Instant::now()) {
                    let client = client.map_or("-".to_string(), |ip| ip.to_string());
                    tracing::warn!(
                        client,
                        path,
                        result,
                        suppressed,
                        "admin request refused: {}",
                        why(&refusal)
                    );
                }
                // The body of a refused request is never read: close instead of draining it.
                session.set_keepalive(None);
                refusal_reply(&refusal)
            }
        }
    }
}

impl Admin {
    async fn route(&self, session: &mut ServerSession, path: &str) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        match endpoint(method.as_str(), path) {
            Endpoint::Healthz => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            Endpoint::Metrics => {
                let body = self.shared.render_metrics();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body.into_bytes(),
                )
            }
            Endpoint::Status => json_reply(StatusCode::OK, &status::status(&self.shared)),
            Endpoint::History => self.history(session.req_header().uri.query(), path).await,
            Endpoint::Reload => {
                let _ = session.drain_request_body().await;
                let reloader = Reloader::new(&self.shared);
                let result = tokio::task::spawn_blocking(move || reloader.reload("admin"))
                    .await
                    .unwrap_or_default();
                let code = if result.ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                json_reply(code, &serde_json::to_value(result).unwrap_or_default())
            }
            Endpoint::Dashboard => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                DASHBOARD.as_bytes().to_vec(),
            ),
            Endpoint::WrongMethod => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            Endpoint::NotFound => {
                reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec())
            }
        }
    }

    /// `/history`, `/history.csv` or `/report` (`path`) over the window `query` names.
    async fn history(&self, query: Option<&str>, path: &str) -> Response<Vec<u8>> {
        let w = match query::window(query) {
            Ok(w) => w,
            Err(why) => {
                let body = format!("bad query: {why}\n").into_bytes();
                return reply(StatusCode::BAD_REQUEST, "text/plain", body);
            }
        };
        // Rendering a long window of many backends takes a while: on a blocking thread,
        // not on the admin listener's runtime (the history lock is held only to copy).
        let (shared, history) = (self.shared.clone(), self.history.clone());
        let path = path.to_string();
        let rendered = tokio::task::spawn_blocking(move || match path.as_str() {
            "/history" => (
                "application/json",
                serde_json::to_vec_pretty(&query::history_json(&history, &shared.events, w))
                    .unwrap_or_default(),
            ),
            "/history.csv" => (
                "text/csv; charset=utf-8",
                query::history_csv(&history, w).into_bytes(),
            ),
            _ => (
                "text/html; charset=utf-8",
                report(&history, &shared.events, &shared.file.path, w).into_bytes(),
            ),
        })
        .await;
        match rendered {
            Ok((content_type, body)) => reply(StatusCode::OK, content_type, body),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                b"rendering failed\n".to_vec(),
            ),
        }
    }
}

/// What an admin request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Metrics,
    Status,
    /// `/history`, `/history.csv` or `/report`.
    History,
    Reload,
    Dashboard,
    /// One of [`ADMIN_PATHS`] with a method it does not take (405).
    WrongMethod,
    NotFound,
}

/// The endpoint of `method` `path`. Every path of [`ADMIN_PATHS`] (the list `--check` knows)
/// has one here, as a test checks.
fn endpoint(method: &str, path: &str) -> Endpoint {
    match (method, path) {
        ("GET", "/healthz") => Endpoint::Healthz,
        ("GET", "/metrics") => Endpoint::Metrics,
        ("GET", "/status") => Endpoint::Status,
        ("GET", "/history" | "/history.csv" | "/report") => Endpoint::History,
        ("POST", "/reload") => Endpoint::Reload,
        ("GET", "/" | "/dashboard") => Endpoint::Dashboard,
        (_, p) if ADMIN_PATHS.contains(&p) => Endpoint::WrongMethod,
        _ => Endpoint::NotFound,
    }
}

/// What [`access::check`] needs from the request.
fn request<'a>(session: &'a ServerSession, path: &'a str) -> access::Request<'a> {
    let header = |name: &str| session.get_header(name).map(|v| v.as_bytes());
    access::Request {
        method: session.req_header().method.as_str(),
        path,
        client: crate::edge::peer_ip(session),
        local: session.server_addr().and_then(|a| a.as_inet()).copied(),
        authorization: header("authorization"),
        origin: header("origin"),
        sec_fetch_site: header("sec-fetch-site"),
        host: header("host"),
    }
}

/// The reason logged for a refusal (never the token).
fn why(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Forbidden => "client not in admin.allow".into(),
        Refusal::CrossSite(how) => format!("cross-site write ({how})"),
        Refusal::Host(host) => format!("Host {host:?} not allowed without a token"),
        Refusal::NoToken => "no bearer token".into(),
        Refusal::WrongToken => "wrong bearer token".into(),
    }
}

fn refusal_reply(refusal: &Refusal) -> Response<Vec<u8>> {
    let (code, challenge, body) = match refusal {
        Refusal::Forbidden => (
            StatusCode::FORBIDDEN,
            None,
            "forbidden: this client's address is not in admin.allow\n".to_string(),
        ),
        Refusal::CrossSite(how) => (
            StatusCode::FORBIDDEN,
            None,
            format!("forbidden: cross-site write refused ({how})\n"),
        ),
        Refusal::Host(host) => (
            StatusCode::MISDIRECTED_REQUEST,
            None,
            format!(
                "misdirected: Host {host:?} is not this admin listener's; without admin.token_file \
                 only IP addresses, localhost and admin.hosts are served\n"
            ),
        ),
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            Some("Bearer realm=\"lb admin\""),
            "unauthorized: send the admin token as `Authorization: Bearer TOKEN`\n".to_string(),
        ),
        Refusal::WrongToken => (
            StatusCode::UNAUTHORIZED,
            Some("Bearer realm=\"lb admin\", error=\"invalid_token\""),
            "unauthorized: wrong admin token\n".to_string(),
        ),
    };
    let mut r = reply(code, "text/plain", body.into_bytes());
    if let Some(challenge) = challenge {
        if let Ok(v) = http::HeaderValue::from_str(challenge) {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

fn reply(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        // Refusals echo the request's Origin: never let a browser sniff text into HTML.
        .header("x-content-type-options", "nosniff")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_path_has_an_endpoint() {
        for path in ADMIN_PATHS {
            let served = ["GET", "POST"]
                .iter()
                .map(|m| endpoint(m, path))
                .find(|e| !matches!(e, Endpoint::WrongMethod | Endpoint::NotFound));
            assert!(served.is_some(), "{path} is in ADMIN_PATHS but not routed");
        }
        assert_eq!(endpoint("GET", "/nope"), Endpoint::NotFound);
        assert_eq!(endpoint("DELETE", "/status"), Endpoint::WrongMethod);
        assert_eq!(endpoint("GET", "/reload"), Endpoint::WrongMethod);
    }
}
