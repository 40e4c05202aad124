//! The request path, on pingora-core directly: [`Proxy`] is the [`RequestApp`] the connection
//! layer ([`crate::edge::GuardedApp`]) hands every request to. For each request it reads the head
//! into pingora-core's `ServerSession` (HTTP/1 now; the same session type carries HTTP/2 streams),
//! runs the edge checks, routes, picks a backend with the upstream's balancer, takes an idle
//! backend connection from [`pool`] (or opens one with pingora-core's `TransportConnector`; an
//! HTTP/2 upstream gets a stream on a pooled HTTP/2 connection),
//! forwards the exchange ([`forward`]), retries refused/failed attempts on other backends ([`retry`]), and
//! answers errors itself (404 no route, 502 all attempts failed, 503 no usable backend, 504
//! backend read timeout).
//!
//! The whole request is one straight-line `async fn` (`Proxy::serve`) over one per-request
//! context ([`context::Ctx`]): one `ArcSwap<Snapshot>` load when the request is routed, no
//! per-hook plumbing, no task or channel per request.
//!
//! Files: this one (reading the head, the request's course, the final answer and logging),
//! [`forward`] (one attempt on an HTTP/1 connection or an HTTP/2 stream: request head, both
//! bodies streamed at once, response head filter, trailers, upgrade tunnels), [`grpc`] (gRPC
//! calls: deadlines and lb's own answers as `grpc-status`), [`context`] (per-request state), [`retry`] (the retry decision, pure),
//! [`headers`] (host, origin form, forwarding headers, hop-by-hop stripping), [`limit`] (request
//! keys and the rate limits' verdict), [`respond`] (the answers of `respond` routes), [`kafka`]
//! (`kafka` routes: the body produced to a topic, 202 once acknowledged), [`pool`] (idle
//! backend connections per worker thread), [`stop`] (waking idle connections when the service
//! stops). lb's own answers are built by [`crate::edge::answer`].

pub mod context;
pub mod forward;
pub mod grpc;
pub mod headers;
pub mod kafka;
pub mod limit;
pub mod mirror;
pub mod pool;
pub mod respond;
pub mod retry;
pub mod rewrite;
pub mod stop;
pub mod wire;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::HttpPersistentSettings;
use pingora_core::connectors::http::v2::{self, H2HandshakeSettings};
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::ALPN;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_error::{Error, ErrorSource, ErrorType};

use crate::config::split::SHARE_SCALE;
use crate::config::{access_allows, ClientClose, NormalizePath, Protocol};
use crate::edge::{answer, path, RequestApp, Served};
use crate::health::{self, FailureKind, Reason};
use crate::observe::access_log::Entry;
use crate::runtime::Shared;
use crate::snapshot::Upstream;
use crate::snapshot::H2_STREAMS_PER_CONNECTION;
use crate::snapshot::{Route, RouteFault, Routed, Snapshot, Target};
use crate::state::backend::InFlightGuard;
use crate::state::stats::ClientProtocol;
use crate::util::time::process_ms_at;
pub use context::active_requests;
use context::Ctx;
use headers::request_host;
use limit::{KeyBuf, Limited};
use retry::{Failure, Next, Stage};

/// A backend connection for one attempt: an HTTP/1 connection of its own, or a stream of a
/// shared HTTP/2 connection.
enum Upstream2 {
    H1(H1Upstream),
    H2(pingora_core::protocols::http::v2::client::Http2Session),
}

/// The lb proxy service: the app of every `server.listen` listener (behind
/// [`crate::edge::GuardedApp`]).
pub struct Proxy {
    shared: Arc<Shared>,
    /// Opens backend connections (idle ones are kept in [`pool`]).
    connector: Arc<TransportConnector>,
    /// Wakes connections waiting for their next request when the service stops.
    stop: stop::Stop,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, conf: &ServerConf) -> Self {
        Proxy {
            shared,
            connector: Arc::new(TransportConnector::new(Some(
                ConnectorOptions::from_server_conf(conf),
            ))),
            stop: stop::Stop::new(conf.threads),
        }
    }

    /// Applies the retry decision for a failed attempt: a resend repeats the attempt (same
    /// budget, backend not excluded); a failure on the backend's side is counted once under its
    /// kind, and `why` is kept for lb's answer; a backend's failure counts against its passive
    /// health.
    fn after_failure(&self, ctx: &mut Ctx, failure: &Failure, why: Reason) -> Next {
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

    /// One request, from its parsed head to its last byte. Returns whether the client connection
    /// can carry another request.
    async fn serve(&self, session: &mut ServerSession, ctx: &mut Ctx) -> bool {
        if crate::edge::early_request_filter(&self.shared, session, &mut ctx.hardening)
            .await
            .is_err()
        {
            // Refused and answered (Connection: close) by the edge.
            return false;
        }
        ctx.grpc = grpc::is_grpc(session.req_header());
        if ctx.grpc && session.as_http1().is_some() {
            let msg = "gRPC needs HTTP/2 (HTTPS with ALPN h2, or h2c with server.h2c = true); \
                       this request came over HTTP/1.1";
            let _ = answer::write(session, 426, msg, false).await;
            return false;
        }
        if !self.route(session, ctx).await {
            return session.response_written().is_some();
        }
        if let Err(e) = self.first_chunk(session, ctx).await {
            self.fail(session, ctx, &e).await;
            return false;
        }
        let deadline = if ctx.grpc {
            grpc::deadline(session.req_header())
        } else {
            None
        };
        let forwarded = match deadline {
            None => self.forward_with_retries(session, ctx).await,
            Some(d) => {
                let call = self.forward_with_retries(session, ctx);
                tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
                    ctx.failure = Some(Reason::After("deadline exceeded", d));
                    let mut e =
                        Error::explain(ErrorType::ReadTimedout, "the call's grpc-timeout ran out");
                    e.as_up();
                    Err(e)
                })
            }
        };
        let e = match forwarded {
            Ok(reuse) => return reuse,
            Err(e) => e,
        };
        self.fail(session, ctx, &e).await;
        false
    }

    /// Reads the first piece of a chunked HTTP/1 body before any backend hears of the request, so
    /// that a malformed first chunk line (a size that is not hex, too long, a bare LF) is lb's 400
    /// and never forwarded. The piece waits in the retry buffer, which every attempt replays
    /// first. A later malformed chunk still ends the exchange with a 400 (or an aborted answer)
    /// and a backend connection closed mid-body.
    async fn first_chunk(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
    ) -> Result<(), Box<Error>> {
        // HTTP/2 frames bodies itself (and a gRPC call may wait for its server to speak first).
        let h1_chunked = session.as_http1().is_some() && ctx.hardening.chunked();
        if !h1_chunked || session.is_body_done() {
            return Ok(());
        }
        session.enable_retry_buffering();
        let piece = session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?;
        crate::edge::request_body(session, &mut ctx.hardening)?;
        // The exchange loops replay this piece from the retry buffer; the copy gets it here.
        let end = piece.is_none() || session.is_body_done();
        mirror::Tee::piece(&mut ctx.mirror, piece.as_ref(), end);
        Ok(())
    }

    /// lb's own answer: plain text, or gRPC's trailers-only status for a gRPC call.
    async fn refuse(&self, session: &mut ServerSession, ctx: &mut Ctx, code: u16, reason: &str) {
        self.refuse_as(session, ctx, code, grpc::status_for(code), reason)
            .await
    }

    /// [`Proxy::refuse`] with the `grpc-status` a gRPC call gets named (where HTTP's `code` maps
    /// to a less telling one: a rate limit is RESOURCE_EXHAUSTED, not UNAVAILABLE).
    async fn refuse_as(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        code: u16,
        status: u8,
        reason: &str,
    ) {
        let _ = if ctx.grpc {
            ctx.grpc_status = Some(status);
            grpc::answer(session, status, reason).await
        } else {
            answer::write(session, code, reason, false).await
        };
    }

    /// Loads the snapshot (the request's only shared read), normalizes the path and routes the
    /// request. Answers 400 (bad path), 404 (no route) or 503 (nothing usable) itself and returns
    /// false then.
    async fn route(&self, session: &mut ServerSession, ctx: &mut Ctx) -> bool {
        let snapshot = self.shared.snapshot.load_full();
        let server = &snapshot.config.server;
        // A half-close after a complete request reads as EOF, like a full close. "finish"
        // delivers the answer (RFC 9112 §9.6; a full close shows when the write fails); "abort"
        // cancels the backend request at once. A reset or an EOF inside the request ends the
        // request either way.
        session.set_abort_on_close(server.client_close == ClientClose::Abort);
        ctx.client = crate::edge::client_ip(session, &server.real_ip);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // The listener the connection came to, when routes name listeners: read once per
        // connection (its socket digest keeps it for later requests and HTTP/2 streams).
        let local = match snapshot.routes_by_listener() {
            false => None,
            true => session.server_addr().and_then(|a| a.as_inet()).copied(),
        };
        let req = session.req_header();
        let raw_path = req.uri.path();
        let path = match server.normalize_path {
            NormalizePath::Off => Ok(Cow::Borrowed(raw_path)),
            _ => path::normalize(raw_path, server.merge_slashes),
        };
        let mut limited = Limited::Pass;
        let mut denied = false;
        let mut mirror = None;
        let mut fault = None;
        let refusal = match path {
            Err(e) => Some((400, e.reason())),
            Ok(path) => match snapshot.route_on(tls, local, request_host(req), &path) {
                None => Some((404, "no route matches this request")),
                Some(Routed::AddSlash) => {
                    // NGINX's answer for a proxied prefix location's name without its slash.
                    let mut location = String::with_capacity(path.len() + 1);
                    location.push_str(&path);
                    location.push('/');
                    if let Some(q) = req.uri.query() {
                        location.push('?');
                        location.push_str(q);
                    }
                    ctx.snapshot = Some(snapshot);
                    let _ = answer::redirect(session, &location).await;
                    return false;
                }
                Some(Routed::To(
                    route @ Route {
                        target: Target::Respond(a),
                        ..
                    },
                )) => {
                    // Kept for the log; `a` goes on borrowing the local handle.
                    ctx.snapshot = Some(snapshot.clone());
                    if !allowed(route, ctx.client) {
                        self.refuse(session, ctx, 403, FORBIDDEN).await;
                        return false;
                    }
                    if ctx.grpc {
                        let msg = "this path is answered by lb itself, not a gRPC service";
                        self.refuse_as(session, ctx, 501, grpc::UNIMPLEMENTED, msg)
                            .await;
                        return false;
                    }
                    let (text, location) = respond::render(session, tls, a, &path, ctx.client);
                    let ct = a.content_type.as_deref();
                    let written = answer::respond(session, a.status, text, location.as_deref(), ct);
                    if written.await.is_err() && session.response_written().is_none() {
                        let why = "the route's answer could not be written";
                        let _ = answer::write(session, 500, why, true).await;
                    }
                    return false;
                }
                Some(Routed::To(
                    route @ Route {
                        target: Target::Kafka(k),
                        ..
                    },
                )) => {
                    ctx.kafka = Some(k.clone());
                    ctx.snapshot = Some(snapshot.clone());
                    if !allowed(route, ctx.client) {
                        self.refuse(session, ctx, 403, FORBIDDEN).await;
                        return false;
                    }
                    // Only a `path:N` key reads the path (the body is read meanwhile).
                    let path = match k.route.key {
                        crate::config::kafka_route::KafkaKey::PathSegment(_) => path.into_owned(),
                        _ => String::new(),
                    };
                    kafka::serve(session, k, &path, &self.shared.metrics).await;
                    return false;
                }
                Some(Routed::To(route)) => {
                    let hash = |by: &_| limit::split_hash(session, by, &path, ctx.client);
                    let Some((upstream, settings)) = route.proxied(hash) else {
                        return false; // answered above
                    };
                    ctx.upstream = upstream;
                    ctx.routed = true;
                    ctx.settings = settings.cloned();
                    fault = route.fault.clone();
                    // Rate limits before access rules, as NGINX's phases (preaccess, then
                    // access): a refused client still counts against the limits.
                    let to = (route, upstream);
                    limited = limit::check(session, &snapshot, to, &path, ctx.client);
                    denied = !allowed(route, ctx.client);
                    mirror.clone_from(&route.mirror);
                    let by_path = snapshot.upstreams[upstream].config.hash_key
                        == Some(crate::config::HashKey::Path);
                    if let (true, Cow::Owned(p)) = (by_path, &path) {
                        ctx.key_path = Some(p.clone());
                    }
                    if let Some((len, with)) = &route.replace {
                        // As `proxy_pass http://up/new/`: the normalized path, prefix replaced.
                        let mut p = String::with_capacity(with.len() + path.len() - len);
                        p.push_str(with);
                        p.push_str(&path[*len..]);
                        ctx.forward_path = Some(p);
                    } else if let (NormalizePath::Forward, Cow::Owned(p)) =
                        (server.normalize_path, path)
                    {
                        ctx.forward_path = Some(p);
                    }
                    None
                }
            },
        };
        ctx.snapshot = Some(snapshot);
        if let Some((code, reason)) = refusal {
            self.refuse(session, ctx, code, reason).await;
            return false;
        }
        // As NGINX's `client_max_body_size`, checked once the location is known, before
        // `limit_req`.
        let server_limit = ctx
            .snapshot
            .as_ref()
            .map_or(0, |s| s.config.server.limits.max_body_bytes);
        let limit = ctx.settings.as_ref().and_then(|s| s.max_body_bytes);
        if !crate::edge::route_body_limit(
            session,
            &mut ctx.hardening,
            limit.unwrap_or(server_limit),
        )
        .await
        {
            ctx.own_answer = true;
            return false;
        }
        match limited {
            Limited::Pass => {}
            // NGINX's `limit_req` delay: the request waits its turn at the limit's rate.
            Limited::Delay(d) => {
                if !delay_unless_gone(session, d).await {
                    // Never proxied, as NGINX: logged as a 499.
                    ctx.client_gone = true;
                    return false;
                }
            }
            Limited::Reject(i) => {
                let snapshot = ctx.snapshot.clone().expect("routed");
                let limit = &snapshot.limits[i];
                ctx.own_answer = true;
                let (code, status) = (limit.config.status, grpc::RESOURCE_EXHAUSTED);
                self.refuse_as(session, ctx, code, status, &limit.refusal)
                    .await;
                return false;
            }
        }
        if denied {
            ctx.own_answer = true;
            self.refuse(session, ctx, 403, FORBIDDEN).await;
            return false;
        }
        if let Some(f) = fault {
            if !self.inject_fault(session, ctx, &f).await {
                return false;
            }
        }
        if !self.has_usable_backend(ctx) {
            let name = ctx.upstream().map_or("", |u| u.name());
            let msg = format!("upstream {name:?} has no usable backend");
            self.refuse(session, ctx, 503, &msg).await;
            return false;
        }
        let up = ctx.upstream().map(|u| (u.name(), u.config.protocol));
        if let (true, Some((name, Protocol::Http1))) = (ctx.grpc, up) {
            // HTTP/1 would drop the call's trailers, and with them its status.
            let msg = format!(
                "upstream {name:?} speaks HTTP/1.1 to its backends; gRPC needs protocol = \"http2\""
            );
            ctx.own_answer = true;
            self.refuse(session, ctx, 503, &msg).await;
            return false;
        }
        if let (Some(m), Some(snapshot)) = (mirror, ctx.snapshot.as_ref()) {
            let r = mirror::Request {
                shared: &self.shared,
                connector: &self.connector,
                snapshot,
                mirror: &m,
                client: ctx.client,
                trusted: forward::peer_is_trusted(session, &snapshot.config.server),
                forward_path: ctx.forward_path.as_deref(),
                content_length: ctx.hardening.content_length(),
            };
            ctx.mirror = mirror::start(r, session);
        }
        true
    }

    /// A route's `fault` (Envoy's fault filter): a request eligible for it (it carries the
    /// fault's header, when one is named) is delayed, then aborted, each with its share. Returns
    /// false when the request ends here: aborted (answered), or its client gone during the delay.
    async fn inject_fault(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        f: &RouteFault,
    ) -> bool {
        let fault = &f.config;
        let headers = &session.req_header().headers;
        if fault
            .header
            .as_ref()
            .is_some_and(|h| !headers.contains_key(h.as_str()))
        {
            return true;
        }
        let roll = |share: u32| fastrand::u32(..SHARE_SCALE) < share;
        if let Some(delay) = fault.delay.filter(|d| roll(d.share)) {
            f.counts.delayed();
            if !delay_unless_gone(session, delay.duration).await {
                ctx.client_gone = true;
                return false;
            }
        }
        let Some(abort) = fault.abort.filter(|a| roll(a.share)) else {
            return true;
        };
        f.counts.aborted();
        ctx.own_answer = true;
        // A gRPC status for gRPC calls, and for every request when no HTTP status is given (as
        // Envoy's `grpc_status` abort).
        let grpc_status = abort
            .grpc_status
            .filter(|_| ctx.grpc || abort.status.is_none());
        match (grpc_status, abort.status) {
            (Some(g), _) => {
                ctx.grpc_status = Some(g);
                let _ = grpc::answer(session, g, FAULT_ABORT).await;
            }
            (_, Some(status)) => self.refuse(session, ctx, status, FAULT_ABORT).await,
            (None, None) => return true,
        }
        false
    }

    /// Whether the routed upstream has a usable backend (else the live snapshot's, see
    /// [`Proxy::on_live_snapshot`]).
    fn has_usable_backend(&self, ctx: &mut Ctx) -> bool {
        let usable = |up: &Upstream| up.has_available();
        ctx.upstream().is_some_and(usable)
            || self
                .on_live_snapshot(ctx, |up| usable(up).then_some(()))
                .is_some()
    }

    /// A reload between loading the request's snapshot and using it can leave that snapshot with
    /// only draining backends while the live one has usable ones: `f` is asked of the live
    /// snapshot's upstream of the same name, and when it answers, the request moves there.
    fn on_live_snapshot<T>(&self, ctx: &mut Ctx, f: impl Fn(&Upstream) -> Option<T>) -> Option<T> {
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
    async fn forward_with_retries(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
    ) -> Result<bool, Box<Error>> {
        loop {
            ctx.guard = None; // a retry releases the previous attempt's count first
            let i = self.pick(session, ctx)?;
            let snapshot = ctx.snapshot.as_deref().expect("routed");
            let up = &snapshot.upstreams[ctx.upstream];
            let backend = &up.backends[i];
            ctx.tried.push(i);
            ctx.attempts += 1;
            ctx.sends += 1;
            ctx.backend = Some(i);
            ctx.guard = Some(InFlightGuard::new(&backend.state));
            let retries = up.config.retries;
            let timed;
            let peer = match ctx.settings.as_deref().map(|s| s.timeouts) {
                Some(t) if t.any() => {
                    // Only on routes with timeouts of their own: the peer with them.
                    timed = with_timeouts(&backend.peer, t);
                    &timed
                }
                _ => &backend.peer,
            };
            let idle_ms = up.config.idle_timeout.as_millis() as u64;
            let now_ms = process_ms_at(ctx.started);
            let trusted = forward::peer_is_trusted(session, &snapshot.config.server);
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
            let h2_backend = up.config.protocol == Protocol::Http2;
            let head = forward::head(
                session,
                ctx.forward_path.as_deref(),
                ctx.client,
                trusted,
                &up.config,
                rules.map(|(s, v)| (&*s.set_request, v)),
            );
            let key = backend.pool_key;
            let case = snapshot.config.server.limits.preserve_header_case;
            let connected = if h2_backend {
                match pool::h2::stream(key, now_ms).await {
                    Some(s) => Ok((Upstream2::H2(s), true)),
                    None => self.connect_h2(peer, key, now_ms, idle_ms).await,
                }
            } else {
                h1_connect(&self.connector, key, peer, (now_ms, idle_ms), case)
                    .await
                    .map(|(h1, reused)| (Upstream2::H1(h1), reused))
            };
            let (conn, reused) = match connected {
                Ok(c) => c,
                Err(mut e) => {
                    e.as_up();
                    let why = Reason::of(&e, &peer.options);
                    let failure = Failure {
                        stage: Stage::Connect,
                        kind: FailureKind::of(&e),
                        client_side: false,
                        stale_connection: false,
                        replayable: false,
                        resent_this_attempt: ctx.resent_this_attempt,
                        attempts: ctx.attempts,
                        retries,
                    };
                    match self.after_failure(ctx, &failure, why) {
                        Next::Stop => return Err(e),
                        _ => continue,
                    }
                }
            };
            let edge = &mut ctx.hardening;
            let out = match conn {
                Upstream2::H1(mut h1) => {
                    let out = forward::h1(session, &mut h1, head, peer, report, edge).await;
                    if out.upstream_reusable {
                        let cap = snapshot.config.server.upstream_keepalive_pool_size;
                        h1_release(h1, key, (now_ms, idle_ms), cap).await;
                    }
                    out
                }
                Upstream2::H2(mut h2) => {
                    forward::h2(session, &mut h2, head, peer, report, edge).await
                }
            };
            ctx.grpc_status = out.grpc_status;
            let result = out.result;
            let mut e = match result {
                Ok(reuse) => return Ok(reuse),
                Err(e) => e,
            };
            let replayable = session.req_header().method.is_idempotent()
                && !session.retry_buffer_truncated()
                && session.response_written().is_none();
            // pingora's own verdict: a failure on a reused pooled connection is worth a resend.
            e.retry.decide_reuse(reused);
            let failure = Failure {
                stage: Stage::Exchange,
                kind: FailureKind::of(&e),
                client_side: *e.esource() == ErrorSource::Downstream,
                stale_connection: e.retry(),
                replayable,
                resent_this_attempt: ctx.resent_this_attempt,
                attempts: ctx.attempts,
                retries,
            };
            let why = Reason::of(&e, &peer.options);
            if self.after_failure(ctx, &failure, why) == Next::Stop {
                return Err(e);
            }
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
            Some(s) => Ok((Upstream2::H2(s), false)),
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

    /// The request could not be proxied: answers with the error's status unless a response head
    /// already went out or the client is gone.
    async fn fail(&self, session: &mut ServerSession, ctx: &mut Ctx, e: &Error) {
        let code = error_status(e);
        // A client that left was waiting on the backend (if one was picked): its 499 counts
        // there, like NGINX's `$upstream_addr` on a 499. It is not a backend failure.
        ctx.client_gone = code == 0;
        // A backend that sent its response head and then failed answered the request itself.
        ctx.own_answer = session.response_written().is_none() && !ctx.client_gone;
        tracing::debug!(
            error = %e,
            status = code,
            attempts = ctx.attempts,
            request = %session.request_summary(),
            "request failed"
        );
        if code == 0 {
            return;
        }
        let name = ctx.upstream().map_or("", |u| u.name());
        let reason = error_reason(code, name, ctx.attempts, ctx.failure, e);
        if ctx.grpc {
            // Before the response head: trailers-only; after it: the call's trailers.
            let status = grpc::status_for(code);
            ctx.grpc_status = Some(status);
            let _ = match session.response_written() {
                None => grpc::answer(session, status, &reason).await,
                Some(_) => grpc::end(session, status, &reason).await,
            };
        } else if session.response_written().is_none() {
            // lb's own answer, like its others (no `Server: Pingora`, no pingora cache fields);
            // the connection is not reused after a failed request.
            let _ = answer::write(session, code, &reason, true).await;
        }
    }

    /// Counts the request's outcome (per backend, or as lb's own answer) and writes its
    /// access-log line.
    fn log(&self, session: &ServerSession, ctx: &mut Ctx) {
        // The request's second and last clock read (the first is `Ctx::new`).
        let end = std::time::Instant::now();
        let elapsed = end.saturating_duration_since(ctx.started);
        // Once a response head was sent, that status is what the client got (also when it left
        // during the body, as NGINX logs it); before that, a client that left is a 499.
        let code = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None if ctx.client_gone => CLIENT_CLOSED_REQUEST,
            None => 0,
        };
        let protocol = match session {
            ServerSession::H2(_) => ClientProtocol::Http2,
            _ => ClientProtocol::Http1,
        };
        let stream = self.shared.stream.as_ref();
        if self.shared.access_log.is_some() || stream.is_some_and(|s| s.config.request_records) {
            log_entry(&self.shared, session, ctx, code, elapsed, protocol);
        }
        if let Some(k) = &ctx.kafka {
            // As lb's own answers of an upstream: `upstream="kafka:TOPIC"`, `backend=""` (and by
            // result in `lb_kafka_route_requests_total`), not as a request no route matched.
            k.stats.record(code, elapsed, protocol);
            return;
        }
        let Some(up) = ctx.upstream() else {
            let stats = |s: &Snapshot| {
                s.no_route.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    s.no_route.record_grpc(g);
                }
            };
            match &ctx.snapshot {
                Some(s) => stats(s),
                None => stats(&self.shared.snapshot.load()),
            }
            return;
        };
        let resent = ctx.sends.saturating_sub(1);
        if resent > 0 {
            self.shared
                .metrics
                .retries
                .with_label_values(&[up.name()])
                .inc_by(resent as u64);
        }
        match ctx.backend.filter(|_| !ctx.own_answer) {
            Some(i) => {
                let b = &up.backends[i];
                // The backend did not answer a client that left: no latency sample.
                if code != CLIENT_CLOSED_REQUEST {
                    b.state.record_latency(elapsed, process_ms_at(end));
                }
                b.state.stats.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    b.state.stats.record_grpc(g);
                }
            }
            None => {
                up.state.own.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    up.state.own.record_grpc(g);
                }
            }
        }
        // Only now: a removed backend's series are dropped once nothing is in flight on it, so
        // its last answer must be counted first.
        ctx.guard = None;
    }
}

#[async_trait]
impl RequestApp for Proxy {
    async fn request(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Served {
        let closed = Served {
            next: None,
            abandoned: false,
        };
        // The connection layer calls this once the request's first byte has arrived.
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return closed,
            Err(e) => {
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    // pingora's parser refused the head (the edge counts the answer).
                    let _ = answer::malformed(&mut session).await;
                }
                session.shutdown().await;
                return closed;
            }
        }
        // CONNECT changes the message framing; lb does not tunnel it.
        if session.req_header().method == http::Method::CONNECT {
            let why = "CONNECT is not supported";
            let _ = answer::write(&mut session, 405, why, true).await;
            session.shutdown().await;
            return closed;
        }
        if *shutdown.borrow() {
            // Stopping: this is the connection's last request.
            session.set_keepalive(None);
        }
        let mut ctx = Ctx::new();
        let reuse = self.serve(&mut session, &mut ctx).await;
        self.log(&session, &mut ctx);
        if matches!(session, ServerSession::H2(_)) && !session.is_body_done() {
            // Answered before the client finished sending (lb's own answers, an early response):
            // read the rest, briefly, so that the stream ends cleanly rather than with a reset
            // the client may take for a failed call.
            let _ = tokio::time::timeout(H2_BODY_DRAIN, session.drain_request_body()).await;
        }
        let next = if reuse {
            let settings = HttpPersistentSettings::for_session(&session);
            let stream = session.finish().await.ok().flatten();
            stream.map(|s| (s, settings))
        } else {
            None
        };
        let abandoned = ctx.client_gone;
        // After `finish` (which may still read the rest of the body): dropping the context tells
        // the connection that the next bytes start a new request head.
        drop(ctx);
        Served { next, abandoned }
    }

    async fn stopped(&self) {
        self.stop.wait().await
    }

    async fn cleanup(&self) {
        self.stop.fire();
    }
}

/// The access log line and the analytics stream's `request` record of one finished request.
fn log_entry(
    shared: &Shared,
    session: &ServerSession,
    ctx: &Ctx,
    status: u16,
    duration: std::time::Duration,
    protocol: ClientProtocol,
) {
    let req = session.req_header();
    let up = ctx.upstream();
    let backend = match (up, ctx.backend) {
        (Some(up), Some(i)) if !ctx.own_answer => up.backends[i].address.as_str(),
        _ => "",
    };
    let entry = Entry {
        client: client_addr(session, ctx),
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        status,
        upstream: match (up, &ctx.kafka) {
            (Some(u), _) => u.name(),
            (None, Some(k)) => &k.label,
            (None, None) => "",
        },
        backend,
        attempts: ctx.attempts,
        duration,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        protocol: protocol.label(),
        grpc_status: ctx.grpc_status,
    };
    if let Some(log) = &shared.access_log {
        log.log(&entry);
    }
    if let Some(stream) = &shared.stream {
        stream.request(&entry);
    }
}

/// The client's address for the log: the peer's (with its port), or the real client's behind a
/// trusted proxy (port 0: a forwarding header carries none, as NGINX's `$remote_port` is then
/// empty).
fn client_addr(session: &ServerSession, ctx: &Ctx) -> Option<std::net::SocketAddr> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
    match (ctx.client, peer) {
        (Some(ip), Some(p)) if ip != p.ip() => Some(std::net::SocketAddr::new(ip, 0)),
        (Some(ip), None) => Some(std::net::SocketAddr::new(ip, 0)),
        _ => peer,
    }
}

/// Waits out a rate limit's delay; false when the client went away meanwhile (a reset, or a
/// close while `server.client_close = "abort"`), so that its request is never sent. A request
/// whose body is still to come is not watched (reading would consume the body).
async fn delay_unless_gone(session: &mut ServerSession, delay: std::time::Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    if session.is_body_done() {
        tokio::select! {
            _ = &mut sleep => return true,
            read = session.read_body_or_idle(true) => {
                if read.is_err() {
                    return false;
                }
            }
        }
    }
    sleep.await;
    true
}

/// lb's answer to a request a route's `fault` aborts.
const FAULT_ABORT: &str = "fault injected: this route's fault aborted the request";

/// lb's answer to a client a route's `access` rules refuse.
const FORBIDDEN: &str = "forbidden: this client's address may not use this route";

/// Whether the route's `access` rules let `client` in.
fn allowed(route: &Route, client: Option<std::net::IpAddr>) -> bool {
    route
        .access
        .as_deref()
        .is_none_or(|rules| access_allows(rules, client))
}

/// Why a pick found nothing although backends are usable (lb answers 503 with this reason).
const AT_MAX_CONNS: &str = "every usable backend is at its max_conns";

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
    limit::request_key(session, key, path, ctx.client, buf)
}

/// The receive window of one stream on a backend HTTP/2 connection: how much of a response lb
/// takes in while its client is not reading. Well below [`H2_CONNECTION_WINDOW`]: streams share
/// the connection's window, and pingora's default (8 MiB for both) let one client that stopped
/// reading hold all of it, freezing every other stream of the connection.
const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The receive window of a whole backend HTTP/2 connection: sixteen stalled streams' worth, so
/// that stalled clients hold a bounded share and the others go on.
const H2_CONNECTION_WINDOW: u32 = 16 << 20;

/// How long an HTTP/2 request's unread body is read (and discarded) after its answer.
const H2_BODY_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

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
                // An HTTP/2 stream the client reset is as gone as a closed connection.
                WriteError | ReadError | ConnectionClosed | H2Error => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Why lb answers `code` itself, for the body of that answer (and `grpc-message`). A 502 or 504
/// names the last failed attempt's reason (`failure`), not the request's last error, which after
/// an ejection can be that no other backend was left to retry on.
fn error_reason(
    code: u16,
    upstream: &str,
    attempts: u32,
    failure: Option<Reason>,
    e: &Error,
) -> String {
    let why = || failure.unwrap_or_else(|| Reason::of(e, &PeerOptions::new()));
    match code {
        502 => format!(
            "upstream {upstream:?}: {attempts} attempt{} failed: {}",
            if attempts == 1 { "" } else { "s" },
            why()
        ),
        503 if e
            .context
            .as_ref()
            .is_some_and(|c| c.as_str() == AT_MAX_CONNS) =>
        {
            format!("upstream {upstream:?}: every usable backend is at its max_conns")
        }
        503 => format!("upstream {upstream:?} has no usable backend"),
        504 => format!("upstream {upstream:?} did not answer in time: {}", why()),
        _ => e.etype().as_str().to_string(),
    }
}

/// `peer` with a route's own timeouts over its upstream's.
fn with_timeouts(peer: &HttpPeer, t: crate::config::RouteTimeouts) -> HttpPeer {
    let mut p = peer.clone();
    let o = &mut p.options;
    o.connection_timeout = t.connect.or(o.connection_timeout);
    o.read_timeout = t.read.or(o.read_timeout);
    o.write_timeout = t.write.or(o.write_timeout);
    p
}

/// A backend HTTP/1 session on `stream`; response header names keep their spelling only with
/// `server.preserve_header_case` (otherwise one header map instead of two).
fn h1_session(
    stream: pingora_core::protocols::Stream,
    peer: &HttpPeer,
    preserve_case: bool,
) -> H1Upstream {
    let mut s = H1Upstream::new_with_options(stream, peer);
    s.set_preserve_header_case(preserve_case);
    s
}

/// An HTTP/1 session to the backend `key` at `peer`: on an idle pooled connection (`true`) or a
/// new one. `(now_ms, idle_ms)`: the time and the upstream's `idle_timeout`.
async fn h1_connect(
    connector: &TransportConnector,
    key: u64,
    peer: &HttpPeer,
    (now_ms, idle_ms): (u64, u64),
    preserve_case: bool,
) -> Result<(H1Upstream, bool), Box<Error>> {
    match pool::take(key, now_ms, idle_ms) {
        Some(s) => Ok((h1_session(s, peer, preserve_case), true)),
        None => connector
            .new_stream(peer)
            .await
            .map(|s| (h1_session(s, peer, preserve_case), false)),
    }
}

/// Returns an exchange's connection to the worker's pool when the backend keeps it alive.
async fn h1_release(mut h1: H1Upstream, key: u64, (now_ms, idle_ms): (u64, u64), cap: usize) {
    h1.respect_keepalive();
    if let Some(stream) = h1.reuse().await {
        pool::put(key, stream, now_ms, cap, idle_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        let down = |t| {
            let mut e = Error::new(t);
            e.as_down();
            e
        };
        assert_eq!(error_status(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::ConnectRefused)), 502);
        assert_eq!(error_status(&down(ErrorType::ConnectionClosed)), 0);
        assert_eq!(error_status(&down(ErrorType::H2Error)), 0);
        assert_eq!(error_status(&down(ErrorType::ReadTimedout)), 408);
        assert_eq!(error_status(&Error::new(ErrorType::HTTPStatus(503))), 503);
    }

    #[test]
    fn error_reasons_name_the_last_failed_attempt() {
        // After an ejection the request's last error is that nothing was left to retry on.
        let none_left = Error::explain(ErrorType::HTTPStatus(502), "no other backend to retry on");
        let refused = Some(Reason::Text("connection refused"));
        assert_eq!(
            error_reason(502, "api", 1, refused, &none_left),
            "upstream \"api\": 1 attempt failed: connection refused"
        );
        let read = Some(Reason::After(
            "read timed out",
            std::time::Duration::from_secs(1),
        ));
        let e = Error::new(ErrorType::ReadTimedout);
        assert_eq!(
            error_reason(504, "api", 1, read, &e),
            "upstream \"api\" did not answer in time: read timed out after 1s"
        );
        // No attempt failed before: the error's own reason.
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(
            error_reason(502, "api", 2, None, &e),
            "upstream \"api\": 2 attempts failed: connection refused"
        );
    }
}
