//! The request path, on pingora-core directly: [`Proxy`] is the [`RequestApp`] the connection
//! layer ([`crate::edge::GuardedApp`]) hands every request to. For each request it reads the head
//! into pingora-core's `ServerSession` (HTTP/1 now; the same session type carries HTTP/2 streams),
//! runs the edge checks, routes, picks a backend with the upstream's balancer, takes an idle
//! backend connection from [`pool`] (or opens one with pingora-core's `TransportConnector`; an
//! HTTP/2 upstream gets a stream on a pooled HTTP/2 connection), forwards the exchange
//! ([`forward`]), retries refused/failed attempts on other backends ([`retry`]), and answers
//! errors itself (404 no route, 502 all attempts failed, 503 no usable backend, 504
//! backend read timeout).
//!
//! The whole request is one straight-line `async fn` (`Proxy::serve`) over one per-request
//! context ([`context::Ctx`]): one `ArcSwap<Snapshot>` load when the request is routed, no
//! per-hook plumbing, no task or channel per request.
//!
//! Files: this one (reading the head and the request's course), [`route`] (routing decided,
//! pure, then carried out: lb's own answers or a request admitted), [`attempt`] (picking,
//! connecting, retrying), [`outcome`] (lb's answer to a failure, the request's counts and log
//! line), [`forward`] (one attempt on an HTTP/1 connection or an HTTP/2 stream: request head,
//! both bodies streamed at once, response head filter, trailers, upgrade tunnels), [`grpc`]
//! (gRPC calls: deadlines and lb's own answers as `grpc-status`), [`context`] (per-request
//! state), [`retry`] (the retry decision, pure), [`headers`] (host, origin form, forwarding
//! headers, hop-by-hop stripping), [`keys`] (request keys, for hashing and the rate limits),
//! [`respond`] (the answers of `respond` routes), [`kafka`] (`kafka` routes: the body produced
//! to a topic, 202 once acknowledged), [`pool`] (idle backend connections per worker thread),
//! [`stop`] (waking idle connections when the service stops), [`mirror`] (a route's copies),
//! [`rewrite`] (a route's header rules), [`upstream_head`] (the head a backend gets), [`wire`]
//! (its common form written as bytes). lb's own answers are built by [`crate::edge::answer`].

pub mod attempt;
pub mod context;
pub mod forward;
pub mod grpc;
pub mod headers;
pub mod kafka;
pub mod keys;
pub mod mirror;
pub mod outcome;
pub mod pool;
pub mod respond;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod stop;
pub mod upstream_head;
pub mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::HttpPersistentSettings;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType};

use crate::edge::{answer, RequestApp, Served};
use crate::health::Reason;
use crate::runtime::Shared;
pub use context::active_requests;
use context::Ctx;

/// A backend connection for one attempt: an HTTP/1 connection of its own, or a stream of a
/// shared HTTP/2 connection.
enum Upstream2 {
    H1(Box<H1Upstream>),
    H2(Box<pingora_core::protocols::http::v2::client::Http2Session>),
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
            // An HTTP/1 session is taken apart here rather than by `finish`, which moves the
            // whole session (about 700 bytes) once more.
            let stream = match session {
                ServerSession::H1(mut s) => match s.finish_body().await {
                    Ok(_) => s.reuse().await.ok().flatten(),
                    Err(_) => None,
                },
                other => other.finish().await.ok().flatten(),
            };
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

/// How long an HTTP/2 request's unread body is read (and discarded) after its answer.
const H2_BODY_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);
