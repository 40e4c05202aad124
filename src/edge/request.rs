//! The request layer of the edge: the checks the request path runs on each parsed request,
//! and the small signal channel between the request and its connection ([`ConnCtl`]).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::IO;
use pingora_error::{Error, ErrorType, Result};

use super::answer::answer;
use super::conn::{ConnCtl, Guarded, SIGNAL_HEAD_ACCEPTED, SIGNAL_REQUEST_DONE};
use super::head::{check_h2_head, check_head};
use crate::config::{Limits, RealIp};
use crate::runtime::Shared;

/// Hardening state of one request, kept in the request's context. Dropping it (the
/// request is over, whichever way) starts the connection's clock for the next request head.
#[derive(Default)]
pub struct RequestState {
    conn: Option<Arc<ConnCtl>>,
    /// Check the request body against `max_body` (chunked bodies; lengths are checked up front).
    count_body: bool,
    max_body: u64,
    /// The request's `Content-Length`, checked again once its route is known.
    content_length: Option<u64>,
}

impl Drop for RequestState {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.send(SIGNAL_REQUEST_DONE);
        }
    }
}

impl RequestState {
    /// The request's body comes without a length (HTTP/1 chunked, or HTTP/2 without
    /// `content-length`), counted as it arrives.
    /// The request's `Content-Length` (as the head check read it), if it has one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    pub fn chunked(&self) -> bool {
        self.count_body
    }

    fn refused(&self) {
        if let Some(c) = &self.conn {
            c.linger.store(true, Ordering::Relaxed);
        }
    }
}

/// The connection's peer address, the one place lb reads it from a session. The request path
/// uses [`client_ip`] instead (the real client behind trusted proxies); the peer only decides
/// whether the proxies' headers are believed.
pub fn peer_ip(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request's client address (NGINX's `$remote_addr` after its realip module): the peer,
/// or, when the peer is in `server.real_ip_from`, the address its `real_ip_header` names. The
/// request path computes it once per request (`proxy::context::Ctx::client`) and every user of
/// a client address (rate-limit keys, `ip_hash`, `access`, forwarding headers, the access log,
/// `$remote_addr`) reads that.
pub fn client_ip(session: &ServerSession, real: &RealIp) -> Option<IpAddr> {
    let peer = peer_ip(session)?;
    if !real.trusts(peer) {
        return Some(peer);
    }
    let values = session.req_header().headers.get_all(&real.header);
    Some(
        real.from_header(values.iter().map(|v| v.as_bytes()))
            .unwrap_or(peer),
    )
}

/// The [`ConnCtl`] of the connection `session` arrived on, when it is a [`Guarded`] one.
pub(super) fn conn_ctl(session: &ServerSession) -> Option<Arc<ConnCtl>> {
    let stream = session.stream()?;
    let io: &dyn IO = &**stream;
    io.as_any().downcast_ref::<Guarded>().map(|g| g.ctl.clone())
}

// ---------------------------------------------------------------------------------------------
// Request layer: the request path calls these
// ---------------------------------------------------------------------------------------------

/// Validates the head pingora parsed and applies per-request
/// settings. On a refusal it has already answered (with `Connection: close`) and returns an
/// `HTTPStatus` error so that pingora stops processing without forwarding anything. What a
/// client's half-close does (`server.client_close`) is set when the request is routed.
pub async fn early_request_filter(
    shared: &Shared,
    session: &mut ServerSession,
    state: &mut RequestState,
) -> Result<()> {
    let ctl = conn_ctl(session);
    if let Some(c) = &ctl {
        c.send(SIGNAL_HEAD_ACCEPTED);
    }
    let snapshot;
    let limits: &Limits = match &ctl {
        Some(c) => &c.limits,
        None => {
            snapshot = shared.snapshot.load_full();
            &snapshot.config.server.limits
        }
    };
    let verdict = match session.as_http1() {
        Some(h1) => check_head(&h1.get_headers_raw_bytes(), limits),
        None => {
            let req = session.req_header();
            let target = req.uri.path_and_query().map_or("", |p| p.as_str());
            let authority = req.uri.authority().map(|a| a.as_str().as_bytes());
            check_h2_head(target, authority, &req.headers, limits)
        }
    };
    let (body_timeout, max_body) = (limits.body_timeout, limits.max_body_bytes);
    // A client that stops reading its response gives up its backend connection, its in-flight
    // slot and the graceful stop's wait after this (NGINX's `send_timeout`).
    session.set_write_timeout(Some(limits.send_timeout));
    state.conn = ctl;
    match verdict {
        Ok(info) => {
            // Upgraded (WebSocket) connections keep pingora's idle timeout for the tunnel.
            if !info.upgrade {
                session.set_read_timeout(Some(body_timeout));
            }
            // Requests the client sent ahead (RFC 9112 §9.3.2) are served in order after this
            // one instead of being dropped with the connection. pingora carries the bytes it
            // read past this request into the next one; answers that close the connection
            // (lb's refusals, 502/504) still close it right after they are written. Not after
            // an upgrade request: bytes behind it may belong to the new protocol, so reading
            // them as HTTP could desynchronise; a refused upgrade closes the connection.
            session.set_pipelining_enabled(!info.upgrade);
            state.count_body = info.chunked;
            state.max_body = max_body;
            state.content_length = info.content_length;
            Ok(())
        }
        Err(r) => {
            state.refused();
            tracing::debug!(
                status = r.status,
                reason = r.reason,
                request = %session.request_summary(),
                "request refused"
            );
            // Best effort: the client may be gone already.
            let _ = answer(session, r).await;
            Err(Error::explain(ErrorType::HTTPStatus(r.status), r.reason))
        }
    }
}

/// Applies the routed request's own body limit (a route's `max_body_bytes`), which may differ
/// from `server.max_body_bytes`: a `Content-Length` over it is answered 413 here (the edge only
/// refused what no route accepts), and a body without a length is counted against it as it
/// arrives ([`request_body`]). Returns false once it answered.
pub async fn route_body_limit(
    session: &mut ServerSession,
    state: &mut RequestState,
    limit: u64,
) -> bool {
    state.max_body = limit;
    if state.content_length.is_none_or(|n| n <= limit) {
        return true;
    }
    state.refused();
    let why = "request body larger than the route's max_body_bytes";
    let _ = answer(session, super::head::reject(413, why)).await;
    false
}

/// Counts chunked request bodies against
/// `server.max_body_bytes` (→ 413, connection closed). Tunnelled (upgraded) bytes are not counted.
/// The count is the bytes read from the client, so a retry that replays a buffered body on
/// another backend does not count them twice.
pub fn request_body(downstream: &ServerSession, state: &mut RequestState) -> Result<()> {
    if !state.count_body || downstream.was_upgraded() {
        return Ok(());
    }
    if downstream.body_bytes_read() as u64 > state.max_body {
        state.count_body = false;
        state.refused();
        let mut e = Error::explain(
            ErrorType::HTTPStatus(413),
            "request body larger than max_body_bytes",
        );
        e.set_retry(false);
        return Err(e.into_down());
    }
    Ok(())
}
