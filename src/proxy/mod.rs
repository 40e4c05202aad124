//! The request path: a pingora-proxy [`ProxyHttp`] that routes each request to an upstream, picks a
//! backend with the upstream's balancer, retries refused/timed-out connections on other backends,
//! adds `X-Forwarded-*`, strips hop-by-hop response headers and answers errors itself
//! (404 no route, 502 all attempts failed, 503 no usable backend, 504 backend read timeout).
//!
//! Everything a request needs comes from one `ArcSwap<Snapshot>` load in `request_filter`.
//!
//! Files: this one (the hooks, in the order pingora calls them), [`context`] (per-request
//! state), [`retry`] (the retry decision, pure), [`headers`] (host, origin form, forwarding
//! headers, hop-by-hop stripping). lb's own answers are built by [`crate::edge::answer`].

pub mod context;
pub mod headers;
pub mod retry;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{ClientClose, NormalizePath};
use crate::edge::{answer, path};

use crate::health::{self, FailureKind};
use crate::observe::access_log::{AccessLogger, Entry};
use crate::runtime::Shared;
use crate::snapshot::Snapshot;
use crate::state::backend::InFlightGuard;
pub use context::active_requests;
use context::{Active, Ctx, Tried};
use headers::{request_host, set_forwarded, set_path, strip_hop_by_hop, to_origin_form};
use retry::{Failure, Next, Stage};

/// The lb proxy service.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy { shared }
    }

    /// Applies the retry decision for a failed attempt to the request's context: a resend
    /// repeats the attempt (same budget, backend not excluded); a backend's failure counts
    /// against its passive health.
    fn after_failure(&self, ctx: &mut Ctx, failure: &Failure) -> Next {
        let verdict = retry::decide(failure);
        if verdict.next == Next::Resend {
            ctx.resent_this_attempt = true;
            ctx.resend_pending = true;
            ctx.resends += 1;
            ctx.tried.pop();
            ctx.attempts = ctx.attempts.saturating_sub(1);
        }
        if verdict.blame_backend {
            if let (Some(up), Some(i)) = (ctx.upstream(), ctx.backend) {
                health::passive_failure(&self.shared, up, i, failure.kind);
            }
        }
        verdict.next
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
            own_answer: false,
            client_gone: false,
            forward_path: None,
            _active: Active::new(),
            hardening: Default::default(),
        }
    }

    /// Edge checks: refuses malformed, ambiguous or oversized request heads before
    /// anything is routed or forwarded (`crate::edge::check_head`), answering 400/413/414/
    /// 431/501 with `Connection: close`; sets the body idle timeout.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::edge::early_request_filter(&self.shared, session, &mut ctx.hardening).await
    }

    /// Edge checks: counts chunked request bodies against `server.max_body_bytes`.
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
                answer::write(session, 400, e.reason(), false).await?;
                return Ok(true);
            }
        };
        let Some(index) = snapshot.route_index(host, &path) else {
            answer::write(session, 404, "no route matches this request", false).await?;
            return Ok(true);
        };
        let upstream = &snapshot.upstreams[index];
        let usable = upstream.backends.iter().any(|b| b.state.usable());
        let msg =
            (!usable).then(|| format!("upstream {:?} has no usable backend", upstream.name()));
        if let (NormalizePath::Forward, Cow::Owned(p)) = (server.normalize_path, path) {
            ctx.forward_path = Some(p);
        }
        ctx.upstream = index;
        ctx.snapshot = Some(snapshot);
        if let Some(msg) = msg {
            answer::write(session, 503, &msg, false).await?;
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
        let failure = Failure {
            stage: Stage::Connect,
            kind,
            client_side: false,
            stale_connection: false,
            replayable: false,
            resent_this_attempt: ctx.resent_this_attempt,
            attempts: ctx.attempts,
            retries: ctx.upstream().map_or(0, |u| u.config.retries),
        };
        self.after_failure(ctx, &failure);
        e.set_retry(retry::decide(&failure).next == Next::Retry);
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
        // pingora's own verdict: a failure on a reused pooled connection is worth a resend.
        e.retry.decide_reuse(client_reused);
        let failure = Failure {
            stage: Stage::Exchange,
            kind: FailureKind::of(&e),
            client_side: *e.esource() == ErrorSource::Downstream,
            stale_connection: e.retry(),
            replayable,
            resent_this_attempt: ctx.resent_this_attempt,
            attempts: ctx.attempts,
            retries: ctx.upstream().map_or(0, |u| u.config.retries),
        };
        let next = self.after_failure(ctx, &failure);
        e.set_retry(next != Next::Stop);
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
            let msg = answer::body(code, &error_reason(code, &name, ctx.attempts, e));
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
            None => up.state.own.record(code, elapsed),
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

/// Why lb answers `code` itself, for the body of that answer.
fn error_reason(code: u16, upstream: &str, attempts: u32, e: &Error) -> String {
    match code {
        502 => format!(
            "upstream {upstream:?}: {attempts} attempt{} failed ({})",
            if attempts == 1 { "" } else { "s" },
            e.etype().as_str()
        ),
        503 => format!("upstream {upstream:?} has no usable backend"),
        504 => format!("upstream {upstream:?} did not answer in time"),
        _ => e.etype().as_str().to_string(),
    }
}
