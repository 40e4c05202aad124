//! The request path: a pingora-proxy [`ProxyHttp`] that routes each request to an upstream, picks a
//! backend with the upstream's balancer, retries refused/timed-out connections on other backends,
//! adds `X-Forwarded-*`, strips hop-by-hop response headers and answers errors itself
//! (404 no route, 502 all attempts failed, 503 no usable backend, 504 backend read timeout).
//!
//! Everything a request needs comes from one `ArcSwap<Snapshot>` load in `request_filter`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::protocols::http::authority::raw_target_authority;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{ClientClose, NormalizePath};
use crate::edge::path;
use crate::health::{self, FailureKind};
use crate::observe::access_log::{AccessLogger, Entry};
use crate::runtime::Shared;
use crate::snapshot::{Snapshot, Upstream};
use crate::state::backend::InFlightGuard;

/// The lb proxy service.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy { shared }
    }
}

/// Backends already tried by this request (small, inline for the common case).
#[derive(Default, Debug)]
pub struct Tried {
    inline: [u32; 4],
    len: usize,
    more: Vec<u32>,
}

impl Tried {
    pub fn push(&mut self, i: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = i as u32;
            self.len += 1;
        } else {
            self.more.push(i as u32);
        }
    }
    pub fn contains(&self, i: usize) -> bool {
        self.inline[..self.len].contains(&(i as u32)) || self.more.contains(&(i as u32))
    }
    pub fn pop(&mut self) {
        if self.more.pop().is_none() && self.len > 0 {
            self.len -= 1;
        }
    }
}

/// Requests between `new_ctx` and the end of `Ctx` (used to finish a graceful stop early).
static ACTIVE: AtomicI64 = AtomicI64::new(0);

/// Requests currently being handled by this process.
pub fn active_requests() -> i64 {
    ACTIVE.load(Relaxed)
}

/// Counts one request for [`active_requests`] while alive.
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE.fetch_add(1, Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Relaxed);
    }
}

/// Per-request context; dropping it releases the in-flight guard, whatever path the request took.
pub struct Ctx {
    snapshot: Option<Arc<Snapshot>>,
    upstream: usize,
    backend: Option<usize>,
    guard: Option<InFlightGuard>,
    /// Backend attempts made (connections tried), excluding transparent stale-connection resends.
    attempts: u32,
    /// Transparent resends after a pooled connection turned out closed (at most one per attempt).
    resends: u32,
    /// The current attempt already used its resend.
    resent_this_attempt: bool,
    /// The next `upstream_peer` call is that resend, not a new attempt.
    resend_pending: bool,
    tried: Tried,
    started: Instant,
    /// What went wrong with the last attempt, for the error answer and metrics.
    failure: Option<FailureKind>,
    /// The final answer came from lb itself (502/504 after attempts), not from a backend.
    own_answer: bool,
    /// The client went away (reset, failed write, EOF) before a response head reached it.
    client_gone: bool,
    /// The normalized path to forward instead of the client's (`server.normalize_path =
    /// "forward"` and the path was not already normal).
    forward_path: Option<String>,
    _active: Active,
    // --- edge checks (see `crate::edge`) ---
    /// Request-level limits and the link to the connection's header clock; dropping it (the
    /// request is over) starts the keep-alive/header deadline for the next request.
    hardening: crate::edge::RequestState,
}

impl Ctx {
    fn upstream(&self) -> Option<&Upstream> {
        self.snapshot.as_ref().map(|s| &*s.upstreams[self.upstream])
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snapshot: None,
            upstream: 0,
            backend: None,
            guard: None,
            attempts: 0,
            resends: 0,
            resent_this_attempt: false,
            resend_pending: false,
            tried: Tried::default(),
            started: Instant::now(),
            failure: None,
            own_answer: false,
            client_gone: false,
            forward_path: None,
            _active: Active::new(),
            hardening: Default::default(),
        }
    }

    /// Edge hardening (issue 7): refuses malformed, ambiguous or oversized request heads before
    /// anything is routed or forwarded (`crate::edge::check_head`), answering 400/413/414/
    /// 431/501 with `Connection: close`; sets the body idle timeout.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::edge::early_request_filter(&self.shared, session, &mut ctx.hardening).await
    }

    /// Edge hardening (issue 7): counts chunked request bodies against `server.max_body_bytes`.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        crate::edge::request_body(session, &mut ctx.hardening)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snapshot = self.shared.snapshot.load_full();
        // A half-close after a complete request reads as EOF, like a full close. "finish"
        // delivers the answer (RFC 9112 §9.6; a full close shows when the write fails); "abort"
        // cancels the backend request at once. A reset or an EOF inside the request ends the
        // request either way (pingora reports them as downstream errors).
        let abort = snapshot.config.server.client_close == ClientClose::Abort;
        session.set_abort_on_close(abort);
        let req = session.req_header();
        let host = request_host(req);
        let server = &snapshot.config.server;
        let path = match server.normalize_path {
            NormalizePath::Off => Ok(Cow::Borrowed(req.uri.path())),
            _ => path::normalize(req.uri.path(), server.merge_slashes),
        };
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("400 Bad Request: {}\n", e.reason());
                respond(session, 400, &msg).await?;
                return Ok(true);
            }
        };
        let Some(index) = snapshot.route_index(host, &path) else {
            respond(
                session,
                404,
                "404 Not Found: no route matches this request\n",
            )
            .await?;
            return Ok(true);
        };
        let upstream = &snapshot.upstreams[index];
        let usable = upstream.backends.iter().any(|b| b.state.usable());
        let msg = (!usable).then(|| {
            format!(
                "503 Service Unavailable: upstream {:?} has no usable backend\n",
                upstream.name()
            )
        });
        if let (NormalizePath::Forward, Cow::Owned(p)) = (server.normalize_path, path) {
            ctx.forward_path = Some(p);
        }
        ctx.upstream = index;
        ctx.snapshot = Some(snapshot);
        if let Some(msg) = msg {
            respond(session, 503, &msg).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.guard = None; // a retry releases the previous attempt's count first
        if !std::mem::take(&mut ctx.resend_pending) {
            ctx.resent_this_attempt = false;
        }
        let mut snapshot = ctx
            .snapshot
            .clone()
            .expect("request_filter sets the snapshot");
        let mut picked = pick(&snapshot, ctx);
        if picked.is_none() && ctx.attempts == 0 {
            // A reload between routing and this pick can leave the request's snapshot with only
            // draining backends while the live one has usable ones: serve it there.
            let live = self.shared.snapshot.load_full();
            let name = snapshot.upstreams[ctx.upstream].name();
            if let Some(index) = live.upstreams.iter().position(|u| u.name() == name) {
                if !Arc::ptr_eq(&live, &snapshot) {
                    ctx.upstream = index;
                    ctx.snapshot = Some(live.clone());
                    snapshot = live;
                    picked = pick(&snapshot, ctx);
                }
            }
        }
        let Some(i) = picked else {
            return Err(if ctx.attempts == 0 {
                Error::explain(ErrorType::HTTPStatus(503), "no usable backend")
            } else {
                Error::explain(ErrorType::HTTPStatus(502), "no other backend to retry on")
            });
        };
        let backend = &snapshot.upstreams[ctx.upstream].backends[i];
        ctx.tried.push(i);
        ctx.attempts += 1;
        ctx.backend = Some(i);
        ctx.guard = Some(InFlightGuard::new(&backend.state));
        Ok(Box::new(backend.peer.clone()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = FailureKind::of(&e);
        ctx.failure = Some(kind);
        if let (Some(up), Some(i)) = (ctx.upstream(), ctx.backend) {
            health::passive_failure(&self.shared, up, i, kind);
            if ctx.attempts <= up.config.retries {
                e.set_retry(true);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if !replayable {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if e.retry() && !ctx.resent_this_attempt {
            // A pooled connection the backend had closed: not the backend's fault, so send again
            // without spending an attempt or excluding the backend — once per attempt, so a
            // backend that drops every request cannot make lb replay it through its whole pool.
            ctx.resent_this_attempt = true;
            ctx.resend_pending = true;
            ctx.resends += 1;
            ctx.tried.pop();
            ctx.attempts = ctx.attempts.saturating_sub(1);
            return e;
        }
        e.set_retry(false);
        if *e.esource() != ErrorSource::Downstream {
            // Only the backend's own failures count against it: a client that misbehaves must not
            // be able to get backends ejected.
            let kind = FailureKind::of(&e);
            ctx.failure = Some(kind);
            if let (Some(up), Some(i)) = (ctx.upstream(), ctx.backend) {
                health::passive_failure(&self.shared, up, i, kind);
                // The backend failed (reset, closed, garbage) before answering: an idempotent
                // request is safe to send to another backend. A read timeout is not retried
                // (it answers 504 and would multiply the client's wait).
                let retryable_kind =
                    !matches!(kind, FailureKind::ReadTimeout | FailureKind::WriteTimeout);
                if replayable && retryable_kind && ctx.attempts <= up.config.retries {
                    e.set_retry(true);
                }
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Every attempt starts from the client's request again.
        to_origin_form(req)?;
        if let Some(path) = &ctx.forward_path {
            set_path(req, path)?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = match (client, &ctx.snapshot) {
            (Some(ip), Some(s)) => s
                .config
                .server
                .trusted_proxies
                .iter()
                .any(|c| c.contains(ip)),
            _ => false,
        };
        set_forwarded(req, client, trusted)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        strip_hop_by_hop(resp);
        if let (Some(up), Some(i)) = (ctx.upstream(), ctx.backend) {
            health::passive_response(&self.shared, up, i, resp.status.as_u16());
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_status(e);
        // A client that left was waiting on the backend (if one was picked): its 499 counts
        // there, like NGINX's `$upstream_addr` on a 499. It is not a backend failure.
        ctx.client_gone = code == 0;
        // A backend that sent its response head and then failed answered the request itself.
        ctx.own_answer = session.response_written().is_none() && !ctx.client_gone;
        if code > 0 {
            let name = ctx
                .upstream()
                .map(|u| u.name().to_string())
                .unwrap_or_default();
            let msg = error_body(code, &name, ctx.attempts, e);
            let _ = session
                .respond_error_with_body(code, Bytes::from(msg))
                .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let elapsed = ctx.started.elapsed();
        // Once a response head was sent, that status is what the client got (also when it left
        // during the body, as NGINX logs it); before that, a client that left is a 499.
        let code = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None if ctx.client_gone => CLIENT_CLOSED_REQUEST,
            None => 0,
        };
        let m = &self.shared.metrics;
        if let Some(log) = &self.shared.access_log {
            access_log(log, session, ctx, code, elapsed);
        }
        let Some(up) = ctx.upstream() else {
            if let Some(s) = &ctx.snapshot {
                s.no_route.record(code, elapsed);
            } else {
                self.shared.snapshot.load().no_route.record(code, elapsed);
            }
            return;
        };
        let resent = ctx.attempts.saturating_sub(1) + ctx.resends;
        if resent > 0 {
            m.retries
                .with_label_values(&[up.name()])
                .inc_by(resent as u64);
        }
        match ctx.backend.filter(|_| !ctx.own_answer) {
            Some(i) => {
                let b = &up.backends[i];
                // The backend did not answer a client that left: no latency sample.
                if code != CLIENT_CLOSED_REQUEST {
                    b.state.record_latency(elapsed);
                }
                b.state.stats.record(code, elapsed);
            }
            None => up.own.record(code, elapsed),
        }
        // Only now: a removed backend's series are dropped once nothing is in flight on it, so
        // its last answer must be counted first.
        ctx.guard = None;
    }
}

fn access_log(
    log: &AccessLogger,
    session: &Session,
    ctx: &Ctx,
    status: u16,
    duration: std::time::Duration,
) {
    let req = session.req_header();
    let up = ctx.upstream();
    let backend = match (up, ctx.backend) {
        (Some(up), Some(i)) if !ctx.own_answer => up.backends[i].address.as_str(),
        _ => "",
    };
    log.log(&Entry {
        client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        status,
        upstream: up.map_or("", |u| u.name()),
        backend,
        attempts: ctx.attempts,
        duration,
        bytes_in: session.as_downstream().body_bytes_read(),
        bytes_out: session.as_downstream().body_bytes_sent(),
    });
}

/// A backend of the request's upstream that this request has not tried yet.
#[inline]
fn pick(snapshot: &Snapshot, ctx: &Ctx) -> Option<usize> {
    let up = &snapshot.upstreams[ctx.upstream];
    up.balancer.pick(&up.backends, |i| ctx.tried.contains(i))
}

/// The request's host: the authority of an absolute-form target (`GET http://h/p`), which wins
/// over a `Host` header (RFC 9112 §3.2.2), else the `Host` header.
fn request_host(req: &RequestHeader) -> Option<&str> {
    target_authority(req).or_else(|| {
        req.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
    })
}

/// The authority of an absolute-form request target, if the request has one.
fn target_authority(req: &RequestHeader) -> Option<&str> {
    let authority = raw_target_authority(req.raw_path()).authority()?;
    std::str::from_utf8(authority).ok()
}

/// An absolute-form request (what clients send to a proxy) goes to the backend in origin form
/// (`GET /p?q`), as NGINX does, with `Host` set to the target's authority.
fn to_origin_form(req: &mut RequestHeader) -> Result<()> {
    let Some(authority) = target_authority(req).map(str::to_owned) else {
        return Ok(());
    };
    req.insert_header(header::HOST, authority)?;
    // pingora keeps the path and query of an absolute-form target in the URI, and the target
    // itself separately for the wire; setting the URI drops the latter.
    req.set_uri(req.uri.clone());
    Ok(())
}

/// Replaces the request's path, keeping its query as sent.
fn set_path(req: &mut RequestHeader, path: &str) -> Result<()> {
    let mut path = path.to_string();
    if let Some(q) = req.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let uri = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InternalError, "normalized path", e))?;
    req.set_uri(uri);
    Ok(())
}

/// Writes a small plain-text answer from lb itself, keeping the connection when that is safe.
async fn respond(session: &mut Session, code: u16, body: &str) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if !session.is_body_empty() {
        // An unread request body would poison the connection: close it after answering.
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(body.as_bytes())), true)
        .await?;
    Ok(())
}

/// NGINX's non-standard status for a request whose client went away before the answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Status for a request that could not be proxied (0: the client is gone, answer nothing).
fn error_status(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout | WriteTimedout if *e.esource() == ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

fn error_body(code: u16, upstream: &str, attempts: u32, e: &Error) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    match code {
        502 => format!(
            "502 {reason}: upstream {upstream:?}: {} attempt{} failed ({})\n",
            attempts,
            if attempts == 1 { "" } else { "s" },
            e.etype().as_str()
        ),
        503 => format!("503 {reason}: upstream {upstream:?} has no usable backend\n"),
        504 => format!("504 {reason}: upstream {upstream:?} did not answer in time\n"),
        _ => format!("{code} {reason}\n"),
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`, `X-Real-IP` and `Forwarded` (RFC 7239). From a client
/// in `server.trusted_proxies` the chains are extended (every `X-Forwarded-For` / `Forwarded`
/// line, joined) and its `X-Real-IP`/`-Proto`/`-Host` kept; from anyone else every one of these
/// headers is replaced by lb's own values, never passed through.
pub fn set_forwarded(req: &mut RequestHeader, client: Option<IpAddr>, trusted: bool) -> Result<()> {
    let ip = client.map(|ip| ip.to_string()).unwrap_or_default();
    let host = req.headers.get(header::HOST).cloned();
    let chain = |req: &RequestHeader, name: &str| -> Option<String> {
        let lines: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        (trusted && !lines.is_empty()).then(|| lines.join(", "))
    };
    let xff = match chain(req, "x-forwarded-for") {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    req.insert_header("x-forwarded-for", xff)?;
    let element = forwarded_element(client, host.as_ref().and_then(|h| h.to_str().ok()));
    let forwarded = match chain(req, "forwarded") {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    req.insert_header("forwarded", forwarded)?;
    if !(trusted && req.headers.contains_key("x-real-ip")) {
        req.insert_header("x-real-ip", ip)?;
    }
    if !(trusted && req.headers.contains_key("x-forwarded-proto")) {
        req.insert_header("x-forwarded-proto", "http")?;
    }
    if !(trusted && req.headers.contains_key("x-forwarded-host")) {
        match host {
            Some(host) => req.insert_header("x-forwarded-host", host)?,
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
    }
    Ok(())
}

/// lb's hop as an RFC 7239 `Forwarded` element: `for=192.0.2.1;host="h";proto=http`.
fn forwarded_element(client: Option<IpAddr>, host: Option<&str>) -> String {
    let mut e = match client {
        Some(IpAddr::V4(v4)) => format!("for={v4}"),
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\""),
        None => "for=unknown".to_string(),
    };
    if let Some(h) = host {
        let quoted = h.replace('\\', "\\\\").replace('"', "\\\"");
        e.push_str(&format!(";host=\"{quoted}\""));
    }
    e.push_str(";proto=http");
    e
}

/// Hop-by-hop headers never cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Removes `Connection`, every header it names, and the standard hop-by-hop headers, keeping
/// `Connection`/`Upgrade` on a `101 Switching Protocols`.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    let upgrade = resp.status.as_u16() == 101;
    let named: Vec<String> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !(t.is_empty() || upgrade && t == "upgrade"))
        .collect();
    for name in &named {
        resp.remove_header(name.as_str());
    }
    if upgrade {
        resp.remove_header("keep-alive");
        return;
    }
    resp.remove_header(&header::CONNECTION);
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_and_nominated() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("connection", "close, x-secret").unwrap();
        r.append_header("x-secret", "1").unwrap();
        r.append_header("keep-alive", "timeout=5").unwrap();
        r.append_header("x-kept", "1").unwrap();
        strip_hop_by_hop(&mut r);
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("x-kept").is_some());
    }

    #[test]
    fn forwarded_replaces_untrusted() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "api.example").unwrap();
        r.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        set_forwarded(&mut r, Some("10.1.2.3".parse().unwrap()), false).unwrap();
        assert_eq!(r.headers.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(r.headers.get("x-forwarded-host").unwrap(), "api.example");
        let mut r2 = RequestHeader::build("GET", b"/", None).unwrap();
        r2.insert_header("x-forwarded-for", "1.1.1.1").unwrap();
        set_forwarded(&mut r2, Some("10.0.0.1".parse().unwrap()), true).unwrap();
        assert_eq!(
            r2.headers.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 10.0.0.1"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut r = RequestHeader::build("GET", b"http://Api.test:81/a/b?c=d", None).unwrap();
        r.insert_header("host", "Api.test:81").unwrap();
        assert_eq!(request_host(&r), Some("Api.test:81"));
        to_origin_form(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/a/b?c=d");
        assert_eq!(r.headers.get("host").unwrap(), "Api.test:81");
        let mut o = RequestHeader::build("GET", b"/x", None).unwrap();
        o.insert_header("host", "h").unwrap();
        to_origin_form(&mut o).unwrap();
        assert_eq!((o.raw_path(), request_host(&o)), (&b"/x"[..], Some("h")));
    }

    #[test]
    fn forwarding_headers_from_untrusted_clients_are_replaced() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "api.example").unwrap();
        r.append_header("x-real-ip", "6.6.6.6").unwrap();
        r.append_header("forwarded", "for=6.6.6.6").unwrap();
        r.append_header("forwarded", "for=7.7.7.7").unwrap();
        set_forwarded(&mut r, Some("2001:db8::1".parse().unwrap()), false).unwrap();
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "2001:db8::1");
        let fwd: Vec<_> = r.headers.get_all("forwarded").iter().collect();
        assert_eq!(
            fwd,
            ["for=\"[2001:db8::1]\";host=\"api.example\";proto=http"]
        );
    }

    #[test]
    fn every_forwarded_for_line_is_read_from_trusted_proxies() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("x-forwarded-for", "1.1.1.1").unwrap();
        r.append_header("x-forwarded-for", "2.2.2.2, 3.3.3.3")
            .unwrap();
        r.append_header("x-real-ip", "1.1.1.1").unwrap();
        r.append_header("forwarded", "for=1.1.1.1").unwrap();
        r.append_header("forwarded", "for=2.2.2.2").unwrap();
        set_forwarded(&mut r, Some("10.0.0.1".parse().unwrap()), true).unwrap();
        let xff: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]);
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "1.1.1.1");
        let fwd: Vec<_> = r.headers.get_all("forwarded").iter().collect();
        assert_eq!(fwd, ["for=1.1.1.1, for=2.2.2.2, for=10.0.0.1;proto=http"]);
    }

    #[test]
    fn tried_tracks_many() {
        let mut t = Tried::default();
        for i in 0..10 {
            t.push(i * 3);
        }
        assert!(t.contains(27) && t.contains(0) && !t.contains(1));
        t.pop();
        assert!(!t.contains(27));
    }
}
