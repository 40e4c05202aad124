//! One attempt on one backend connection: the request head lb sends, then both bodies streamed
//! at once in one `select!` loop on the request's own task (no channel, no second task): the
//! client's body (or a replay of its buffered start, on a retry) goes up while the response
//! comes down, and a `101 Switching Protocols` turns both into a byte tunnel.
//!
//! The loop is written against pingora-core's `ServerSession` (HTTP/1 today, HTTP/2 streams
//! through the same calls) and a backend leg that yields `HttpTask`s (head, body, trailers,
//! end), so an HTTP/2 backend leg is one more `match` arm, not a second loop.

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::RequestHeader;

use super::headers::{
    authority_to_host, prepare_request, set_forwarded, set_path, strip_hop_by_hop, to_origin_form,
};
use crate::config::ServerSettings;
use crate::edge::RequestState;
use crate::health;
use crate::runtime::Shared;
use crate::snapshot::Upstream;

/// How an attempt ended.
pub(super) struct Attempt {
    /// `Ok(client connection reusable)`, or the error that ended the attempt (its source says
    /// whose side failed).
    pub result: Result<bool>,
    /// The backend connection can go back to the pool.
    pub upstream_reusable: bool,
}

impl Attempt {
    fn failed(e: Box<Error>) -> Attempt {
        Attempt {
            result: Err(e),
            upstream_reusable: false,
        }
    }
}

/// Whether the client's address is in `server.trusted_proxies`.
pub(super) fn client_is_trusted(session: &ServerSession, server: &ServerSettings) -> bool {
    let ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ip.is_some_and(|ip| server.trusted_proxies.iter().any(|c| c.contains(ip)))
}

/// The head sent to the backend: the client's, in origin form, with the forwarded path,
/// `X-Forwarded-*` and hop-by-hop fields removed (an upgrade to WebSocket keeps its
/// `Connection: Upgrade`). Every attempt starts from the client's head again.
pub(super) fn upstream_head(
    session: &mut ServerSession,
    forward_path: Option<&str>,
    trusted: bool,
) -> Result<Box<RequestHeader>> {
    let has_body = !session.is_body_empty();
    let mut req = Box::new(session.req_header().clone());
    // Room for the fields lb adds, so that they do not regrow the cloned map one by one.
    req.reserve(6);
    to_origin_form(&mut req)?;
    if req.version == http::Version::HTTP_2 {
        authority_to_host(&mut req)?;
    }
    if let Some(path) = forward_path {
        set_path(&mut req, path)?;
    }
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    set_forwarded(&mut req, client, trusted, https)?;
    prepare_request(&mut req, has_body)?;
    Ok(req)
}

/// Where the response's status goes as soon as its head arrives (passive health).
pub(super) struct Report<'a> {
    pub shared: &'a std::sync::Arc<Shared>,
    pub upstream: &'a Upstream,
    pub backend: usize,
}

/// Forwards the request over an HTTP/1 backend connection and the response back.
pub(super) async fn h1(
    session: &mut ServerSession,
    up: &mut H1Upstream,
    head: Result<Box<RequestHeader>>,
    peer: &HttpPeer,
    report: Report<'_>,
    edge: &mut RequestState,
) -> Attempt {
    up.read_timeout = peer.options.read_timeout;
    up.write_timeout = peer.options.write_timeout;
    let head = match head {
        Ok(h) => h,
        Err(e) => return Attempt::failed(e.into_in()),
    };
    if let Err(e) = up.write_request_header(head).await {
        return Attempt::failed(e.into_up());
    }
    let mut req_done = session.is_body_done();
    // A retry replays what the client sent so far (buffered by the first attempt).
    if let Some(sent) = session.get_retry_buffer() {
        if let Err(e) = up.write_body(&sent).await {
            return Attempt::failed(e.into_up());
        }
    }
    if req_done {
        if let Err(e) = up.finish_body().await {
            return Attempt::failed(e.into_up());
        }
    }
    session.enable_retry_buffering();

    let mut resp_done = false;
    let mut upgraded = false;
    let mut upstream_reusable = true;
    while !(req_done && resp_done) {
        tokio::select! {
            biased;
            task = up.read_response_task(), if !resp_done => {
                let task = match task {
                    Ok(t) => t,
                    Err(e) => return Attempt::failed(e.into_up()),
                };
                match task {
                    HttpTask::Header(mut resp, end) => {
                        let status = resp.status.as_u16();
                        strip_hop_by_hop(&mut resp);
                        // Room for `Date` and `Connection`, which the client session sets.
                        resp.reserve(2);
                        if status >= 200 {
                            health::passive_response(
                                report.shared,
                                report.upstream,
                                report.backend,
                                status,
                            );
                        }
                        if let Err(e) = session.write_response_header(resp).await {
                            return Attempt::failed(e.into_down());
                        }
                        if end {
                            resp_done = true;
                            if let Err(e) = session.write_response_body(Bytes::new(), true).await {
                                return Attempt::failed(e.into_down());
                            }
                        }
                        if !upgraded && session.was_upgraded() {
                            // The tunnel starts: read the client's bytes again.
                            upgraded = true;
                            req_done = false;
                        }
                    }
                    HttpTask::Body(data, end) | HttpTask::UpgradedBody(data, end) => {
                        let data = data.unwrap_or_default();
                        if let Err(e) = session.write_response_body(data, end).await {
                            return Attempt::failed(e.into_down());
                        }
                        resp_done = end;
                    }
                    HttpTask::Done => {
                        resp_done = true;
                        if let Err(e) = session.write_response_body(Bytes::new(), true).await {
                            return Attempt::failed(e.into_down());
                        }
                    }
                    HttpTask::Trailer(Some(trailers)) => {
                        if let Err(e) = session.write_response_trailers(*trailers).await {
                            return Attempt::failed(e.into_down());
                        }
                    }
                    HttpTask::Trailer(None) => {}
                    HttpTask::Failed(e) => return Attempt::failed(e),
                }
                // A tunnel the backend ended, or a refused upgrade, ends the request side too.
                if resp_done && !req_done && session.is_body_done() {
                    req_done = true;
                }
            }
            body = session.read_body_or_idle(req_done) => {
                // With the request complete this only returns when the client goes away.
                let body = match body {
                    Ok(b) => b,
                    Err(e) => return Attempt::failed(e.into_down()),
                };
                if req_done {
                    continue;
                }
                if let Err(e) = crate::edge::request_body(session, edge) {
                    return Attempt::failed(e);
                }
                let end = body.is_none() || session.is_body_done();
                if upgraded {
                    up.maybe_upgrade_body_writer();
                }
                let sent = match body {
                    Some(b) if !b.is_empty() => up.write_body(&b).await.map(|_| ()),
                    _ => Ok(()),
                };
                let sent = match (sent, end) {
                    (Ok(()), true) => up.finish_body().await.map(|_| ()),
                    (r, _) => r,
                };
                if let Err(e) = sent {
                    if !resp_done {
                        return Attempt::failed(e.into_up());
                    }
                    // The backend answered before taking the whole body: the answer stands,
                    // the connection is not reusable.
                    upstream_reusable = false;
                    req_done = true;
                    continue;
                }
                if end {
                    req_done = true;
                    // A client that ends its side of a tunnel ends the tunnel.
                    if upgraded {
                        resp_done = true;
                    }
                }
            }
        }
    }
    Attempt {
        result: Ok(true),
        upstream_reusable: upstream_reusable && !upgraded,
    }
}
