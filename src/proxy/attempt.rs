//! Attempts: picking a backend, connecting (an idle pooled HTTP/1 connection, a new one, or a
//! stream of a pooled HTTP/2 connection), one [`super::forward`] exchange, and the retry
//! decision ([`super::retry`]) applied after a failure, until one attempt succeeds or the rules
//! stop.

use std::borrow::Cow;
use std::sync::Arc;

use pingora_core::connectors::http::v2::{self, H2HandshakeSettings};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};

use super::context::Ctx;
use super::keys::{self, KeyBuf};
use super::pool::{h1_connect, h1_release};
use super::retry::{self, Failure, Next, Stage};
use super::{forward, pool, rewrite, upstream_head, Proxy, Upstream2};
use crate::config::Protocol;
use crate::health::{self, FailureKind, Reason};
use crate::snapshot::{RouteSettings, Upstream, H2_STREAMS_PER_CONNECTION};
use crate::state::backend::InFlightGuard;
use crate::util::time::process_ms_at;

impl Proxy {
    /// Applies the retry decision for a failed attempt: a resend repeats the attempt (same
    /// budget, backend not excluded); a failure on the backend's side is counted once under its
    /// kind, and `why` is kept for lb's answer; a backend's failure counts against its passive
    /// health.
    pub(super) fn after_failure(&self, ctx: &mut Ctx, failure: &Failure, why: Reason) -> Next {
        let verdict = retry::decide(failure);
        if verdict.next == Next::Resend {
            ctx.resent_this_attempt = true;
            ctx.tried.pop();
            ctx.attempts = ctx.attempts.saturating_sub(1);
        } else {
            ctx.resent_this_attempt = false;
        }
        if verdict.counted {
            ctx.failure = Some(why);
            if let (Some(up), Some(i)) = (ctx.upstream(), ctx.backend) {
                if verdict.blame_backend {
                    health::passive_failure(&self.shared, up, i, failure.kind, why);
                } else {
                    health::count_failure(&self.shared, up, i, failure.kind);
                }
            }
        }
        verdict.next
    }

    /// A reload between loading the request's snapshot and using it can leave that snapshot with
    /// only draining backends while the live one has usable ones: `f` is asked of the live
    /// snapshot's upstream of the same name, and when it answers, the request moves there.
    pub(super) fn on_live_snapshot<T>(
        &self,
        ctx: &mut Ctx,
        f: impl Fn(&Upstream) -> Option<T>,
    ) -> Option<T> {
        let live = self.shared.snapshot.load_full();
        let snapshot = ctx.snapshot.as_ref()?;
        if Arc::ptr_eq(&live, snapshot) {
            return None;
        }
        let name = ctx.upstream()?.name();
        let index = live.upstreams.iter().position(|u| u.name() == name)?;
        let found = f(&live.upstreams[index])?;
        ctx.upstream = index;
        ctx.snapshot = Some(live);
        Some(found)
    }

    /// Attempts until one succeeds or the retry rules stop. `Ok(reuse)`: the exchange completed.
    pub(super) async fn forward_with_retries(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
    ) -> Result<bool, Box<Error>> {
        loop {
            ctx.guard = None; // a retry releases the previous attempt's count first
            let i = self.pick(session, ctx)?;
            match self.attempt(session, ctx, i).await {
                Tried::Done(reuse) => return Ok(reuse),
                Tried::Failed(e, failure, why) => {
                    if self.after_failure(ctx, &failure, why) == Next::Stop {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One attempt on backend `i` of the request's upstream: connect (or take a pooled
    /// connection or HTTP/2 stream), then the exchange.
    async fn attempt(&self, session: &mut ServerSession, ctx: &mut Ctx, i: usize) -> Tried {
        let guard = InFlightGuard::new(&ctx.upstream().expect("routed").backends[i].state);
        ctx.start_attempt(i, guard);
        let snapshot = ctx.snapshot.as_deref().expect("routed");
        let up = &snapshot.upstreams[ctx.upstream];
        let backend = &up.backends[i];
        let retries = up.config.retries;
        let peer = &*with_timeouts(&backend.peer, ctx.settings.as_deref());
        let idle_ms = up.config.idle_timeout.as_millis() as u64;
        let now_ms = process_ms_at(ctx.started);
        let settings = ctx.settings.as_deref();
        if ctx.vars.is_none() && settings.is_some_and(|s| s.has_header_rules()) {
            ctx.vars = Some(rewrite::Vars::of(session, ctx.client));
        }
        let rules = settings.zip(ctx.vars.as_ref());
        let report = forward::Report {
            shared: &self.shared,
            upstream: up,
            backend: i,
            add_response: rules.map(|(s, v)| (&s.add_response, v)),
            mirror: &mut ctx.mirror,
        };
        let to = upstream_head::HeadFor {
            forward_path: ctx.forward_path.as_deref(),
            client: ctx.client,
            trusted: upstream_head::peer_is_trusted(session, &snapshot.config.server),
            upstream: &up.config,
            rules: rules.map(|(s, v)| (&*s.set_request, v)),
        };
        let head = upstream_head::head(session, &to);
        let (key, case) = (
            backend.pool_key,
            snapshot.config.server.limits.preserve_header_case,
        );
        let http2 = up.config.protocol == Protocol::Http2;
        let connected = self.connect(http2, key, peer, (now_ms, idle_ms), case);
        let counts = (ctx.resent_this_attempt, ctx.attempts, retries);
        let failed = |stage, e: Box<Error>, replayable| {
            let (f, why) = (
                failure(stage, &e, replayable, counts),
                Reason::of(&e, &peer.options),
            );
            Tried::Failed(e, f, why)
        };
        let (conn, reused) = match connected.await {
            Ok(c) => c,
            Err(e) => return failed(Stage::Connect, e.into_up(), false),
        };
        let sides = forward::Sides {
            session,
            peer,
            report,
            edge: &mut ctx.hardening,
        };
        let out = match conn {
            Upstream2::H1(mut h1) => {
                let out = forward::h1(&mut h1, head, sides).await;
                if out.upstream_reusable {
                    let cap = snapshot.config.server.upstream_keepalive_pool_size;
                    h1_release(h1, key, (now_ms, idle_ms), cap).await;
                }
                out
            }
            Upstream2::H2(mut h2) => forward::h2(&mut h2, head, sides).await,
        };
        ctx.grpc_status = out.grpc_status;
        let mut e = match out.result {
            Ok(reuse) => return Tried::Done(reuse),
            Err(e) => e,
        };
        let replayable = session.req_header().method.is_idempotent()
            && !session.retry_buffer_truncated()
            && session.response_written().is_none();
        // pingora's own verdict: a failure on a reused pooled connection is worth a resend.
        e.retry.decide_reuse(reused);
        failed(Stage::Exchange, e, replayable)
    }

    /// A connection to the backend `key` at `peer` for one attempt (`true`: a pooled one, or a
    /// stream of a pooled HTTP/2 connection). `(now_ms, idle_ms)`: the time and the upstream's
    /// `idle_timeout`.
    async fn connect(
        &self,
        http2: bool,
        key: u64,
        peer: &HttpPeer,
        (now_ms, idle_ms): (u64, u64),
        preserve_case: bool,
    ) -> Result<(Upstream2, bool), Box<Error>> {
        if !http2 {
            let times = (now_ms, idle_ms);
            let (h1, reused) = h1_connect(&self.connector, key, peer, times, preserve_case).await?;
            return Ok((Upstream2::H1(h1), reused));
        }
        match pool::h2::stream(key, now_ms).await {
            Some(s) => Ok((Upstream2::H2(Box::new(s)), true)),
            None => self.connect_h2(peer, key, now_ms, idle_ms).await,
        }
    }

    /// A new HTTP/2 connection to `peer` (TLS with ALPN `h2`, or h2c with prior knowledge),
    /// kept in the worker's pool (closed once idle for `idle_ms`), and a first stream on it.
    async fn connect_h2(
        &self,
        peer: &HttpPeer,
        key: u64,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<(Upstream2, bool), Box<Error>> {
        let stream = self.connector.new_stream(peer).await?;
        if peer.is_tls() && stream.selected_alpn_proto() != Some(ALPN::H2) {
            return Err(Error::explain(
                ErrorType::HandshakeError,
                "the backend did not agree to HTTP/2 (ALPN h2)",
            ));
        }
        let mut settings = H2HandshakeSettings::new();
        settings.max_streams = H2_STREAMS_PER_CONNECTION;
        settings.stream_window_size = Some(H2_STREAM_WINDOW);
        settings.connection_window_size = Some(H2_CONNECTION_WINDOW);
        let conn = v2::handshake(stream, settings).await?;
        let first = conn.spawn_stream().await?;
        pool::h2::keep(key, conn, now_ms, idle_ms);
        match first {
            Some(s) => Ok((Upstream2::H2(Box::new(s)), false)),
            None => Err(Error::explain(
                ErrorType::H2Error,
                "a new HTTP/2 connection refused its first stream",
            )),
        }
    }

    /// The backend for the next attempt: one of the request's upstream this request has not
    /// tried yet.
    fn pick(&self, session: &ServerSession, ctx: &mut Ctx) -> Result<usize, Box<Error>> {
        let snapshot = ctx.snapshot.as_ref().expect("routed");
        let up = &snapshot.upstreams[ctx.upstream];
        let mut buf: KeyBuf = [0; 64];
        let key = if up.balancer.keyed() {
            hash_key(session, ctx, up, &mut buf)
        } else {
            &[]
        };
        if let Some(i) = up
            .balancer
            .pick_keyed(&up.backends, |i| ctx.tried.contains(i), key)
        {
            return Ok(i);
        }
        let saturated = up.saturated();
        if ctx.attempts == 0 {
            // Nothing tried yet, so nothing to exclude there.
            let key = key.to_vec();
            let live = self.on_live_snapshot(ctx, |up| {
                up.balancer.pick_keyed(&up.backends, |_| false, &key)
            });
            if let Some(i) = live {
                return Ok(i);
            }
        }
        Err(if saturated && ctx.attempts == 0 {
            Error::explain(ErrorType::HTTPStatus(503), AT_MAX_CONNS)
        } else if ctx.attempts == 0 {
            Error::explain(ErrorType::HTTPStatus(503), "no usable backend")
        } else {
            Error::explain(ErrorType::HTTPStatus(502), "no other backend to retry on")
        })
    }
}

/// How one attempt ended.
enum Tried {
    /// The exchange completed: whether the client connection can carry another request.
    Done(bool),
    /// It failed: the error, the failure as the retry rules see it, and why (for lb's answer).
    Failed(Box<Error>, Failure, Reason),
}

/// Why a pick found nothing although backends are usable (lb answers 503 with this reason).
pub(super) const AT_MAX_CONNS: &str = "every usable backend is at its max_conns";

/// The bytes a hash strategy hashes for this request (empty: none, round-robin instead).
fn hash_key<'a>(
    session: &'a ServerSession,
    ctx: &'a Ctx,
    up: &Upstream,
    buf: &'a mut KeyBuf,
) -> &'a [u8] {
    if up.config.strategy == crate::config::Strategy::IpHash {
        let Some(ip) = ctx.client else {
            return &[];
        };
        let mut octets = [0u8; 16];
        let key = crate::balance::hash::ip_key(ip, &mut octets);
        let n = key.len();
        buf[..n].copy_from_slice(key);
        return &buf[..n];
    }
    let Some(key) = up.config.hash_key.as_ref() else {
        return &[];
    };
    let path = ctx
        .key_path
        .as_deref()
        .unwrap_or(session.req_header().uri.path());
    keys::request_key(session, key, path, ctx.client, buf)
}

/// The receive window of one stream on a backend HTTP/2 connection: how much of a response lb
/// takes in while its client is not reading. Well below [`H2_CONNECTION_WINDOW`]: streams share
/// the connection's window, and pingora's default (8 MiB for both) let one client that stopped
/// reading hold all of it, freezing every other stream of the connection.
const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The receive window of a whole backend HTTP/2 connection: sixteen stalled streams' worth, so
/// that stalled clients hold a bounded share and the others go on.
const H2_CONNECTION_WINDOW: u32 = 16 << 20;

/// `peer` with a route's own timeouts over its upstream's (a copy only on routes with timeouts
/// of their own).
fn with_timeouts<'a>(peer: &'a HttpPeer, settings: Option<&RouteSettings>) -> Cow<'a, HttpPeer> {
    let t = match settings.map(|s| s.timeouts) {
        Some(t) if t.any() => t,
        _ => return Cow::Borrowed(peer),
    };
    let mut p = peer.clone();
    let o = &mut p.options;
    o.connection_timeout = t.connect.or(o.connection_timeout);
    o.read_timeout = t.read.or(o.read_timeout);
    o.write_timeout = t.write.or(o.write_timeout);
    Cow::Owned(p)
}

/// An attempt's failure as the retry rules see it; `(resent_this_attempt, attempts, retries)`
/// from the request's context and upstream.
fn failure(
    stage: Stage,
    e: &Error,
    replayable: bool,
    (resent, attempts, retries): (bool, u32, u32),
) -> Failure {
    Failure {
        stage,
        kind: FailureKind::of(e),
        client_side: *e.esource() == ErrorSource::Downstream,
        stale_connection: stage == Stage::Exchange && e.retry(),
        replayable,
        resent_this_attempt: resent,
        attempts,
        retries,
    }
}
