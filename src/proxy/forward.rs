//! One attempt on one backend connection: the request head lb sends, then both bodies streamed
//! at once in one `select!` loop on the request's own task (no channel, no second task): the
//! client's body (or a replay of its buffered start, on a retry) goes up while the response
//! comes down, and a `101 Switching Protocols` turns both into a byte tunnel.
//!
//! Neither direction ever waits for the other (full duplex): a piece of the client's body is
//! handed to a cancel-safe write, and that write and the reading of the response are polled
//! together in one future (`step`, `h2_step`), so a backend that answers while it reads a
//! large upload — and stops reading while its answer is not taken — is never deadlocked by lb
//! waiting on one of the two. The backend's read timeout runs only once the request is sent;
//! until then a stalled client is the client's (`server.body_timeout`, 408).
//!
//! The loop is written against pingora-core's `ServerSession` (HTTP/1 today, HTTP/2 streams
//! through the same calls) and a backend leg that yields `HttpTask`s (head, body, trailers,
//! end), so an HTTP/2 backend leg is one more `match` arm, not a second loop.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::v2::client::Http2Session as H2Upstream;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::headers::{
    authority_to_host, h2_target, host_name_only, join_cookies, prepare_request, set_forwarded,
    set_host, set_path, strip_hop_by_hop, to_origin_form,
};
use super::rewrite::{add_response, set_request, Vars};
use crate::config::headers::{HeaderRule, ResponseHeaders};
use crate::config::{HostHeader, ServerSettings};
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
    /// The `grpc-status` the backend ended a gRPC call with (HTTP/2 backends).
    pub grpc_status: Option<u8>,
}

impl Attempt {
    fn failed(e: Box<Error>) -> Attempt {
        Attempt {
            result: Err(e),
            upstream_reusable: false,
            grpc_status: None,
        }
    }
}

/// Whether the connection's peer is a proxy whose forwarding headers are kept and extended: one
/// in `server.trusted_proxies`, or in `server.real_ip_from` (whose header names the client, so
/// its chain is the client's, as NGINX's `$proxy_add_x_forwarded_for` keeps it).
pub(super) fn peer_is_trusted(session: &ServerSession, server: &ServerSettings) -> bool {
    crate::edge::peer_ip(session).is_some_and(|ip| {
        server.trusted_proxies.iter().any(|c| c.contains(ip)) || server.real_ip.trusts(ip)
    })
}

/// The head sent to the backend: the client's, in origin form, with the forwarded path,
/// `X-Forwarded-*` and hop-by-hop fields removed (an upgrade to WebSocket keeps its
/// `Connection: Upgrade`). Every attempt starts from the client's head again.
/// The head an attempt sends: built as a header map ([`upstream_head`]), or, for the common
/// request to an HTTP/1 backend, written as bytes straight from the client's ([`super::wire`]).
pub(super) enum Head {
    Built(Box<RequestHeader>),
    Wire(super::wire::Wire),
}

/// The head of an attempt on `upstream`: [`super::wire`]'s when the request, the route and the
/// upstream allow it, else [`upstream_head`]'s.
pub(super) fn head(
    session: &mut ServerSession,
    forward_path: Option<&str>,
    client: Option<std::net::IpAddr>,
    trusted: bool,
    upstream: &crate::config::UpstreamConfig,
    rules: Option<(&[HeaderRule], &Vars)>,
) -> Result<Head> {
    let plain = upstream.protocol == crate::config::Protocol::Http1
        && !trusted
        && rules.is_none_or(|(r, _)| r.is_empty())
        && upstream.host_header == HostHeader::Client;
    if plain {
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let has_body = !session.is_body_empty();
        let req = session.req_header();
        if let Some(w) = super::wire::head(req, forward_path, client, https, has_body) {
            return Ok(Head::Wire(w));
        }
    }
    upstream_head(session, forward_path, client, trusted, upstream, rules).map(Head::Built)
}

/// Sends `head` on an HTTP/1 backend session, whichever way it was made.
pub(super) async fn write_head(up: &mut H1Upstream, head: Head) -> Result<usize> {
    match head {
        Head::Built(h) => up.write_request_header(h).await,
        Head::Wire(w) => up.write_request_wire(w.req, &w.bytes, w.body_length).await,
    }
}

/// The head as a header map: the client's, cloned and edited (every request [`super::wire`]
/// does not write).
fn upstream_head(
    session: &mut ServerSession,
    forward_path: Option<&str>,
    client: Option<std::net::IpAddr>,
    trusted: bool,
    upstream: &crate::config::UpstreamConfig,
    rules: Option<(&[HeaderRule], &Vars)>,
) -> Result<Box<RequestHeader>> {
    let h2_backend = upstream.protocol == crate::config::Protocol::Http2;
    let has_body = !session.is_body_empty();
    let mut req = Box::new(session.req_header().clone());
    // Room for the fields lb adds, so that they do not regrow the cloned map one by one.
    req.reserve(6);
    to_origin_form(&mut req)?;
    if req.version == http::Version::HTTP_2 {
        authority_to_host(&mut req)?;
        if !h2_backend {
            // HTTP/2 may split `cookie` into several fields; HTTP/1 wants one (RFC 9113 §8.2.3).
            join_cookies(&mut req)?;
        }
    }
    if let Some(path) = forward_path {
        set_path(&mut req, path)?;
    }
    // Hop-by-hop fields go first, so that a `Connection` naming lb's own fields cannot remove
    // them: what lb adds below is never stripped.
    prepare_request(&mut req, has_body, h2_backend)?;

    let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    set_forwarded(&mut req, client, trusted, https)?;
    // After set_forwarded: `X-Forwarded-Host` is the client's host either way.
    match &upstream.host_header {
        HostHeader::Client => {}
        HostHeader::ClientHost => host_name_only(&mut req)?,
        HostHeader::Upstream => set_host(&mut req, &upstream.name)?,
        HostHeader::Literal(host) => set_host(&mut req, host)?,
    }
    if let Some((rules, vars)) = rules {
        // Last: a configured header replaces lb's own (`Host`, `X-Forwarded-For`, ...).
        set_request(&mut req, rules, vars)?;
    }
    if !req.headers.contains_key(http::header::HOST) {
        // An HTTP/1.0 request may come without a host; the backend still gets one, the
        // upstream's name (NGINX's `$proxy_host`).
        set_host(&mut req, &upstream.name)?;
    }
    if h2_backend {
        h2_target(&mut req, upstream.tls.is_some())?;
    }
    Ok(req)
}

/// The backend's read timeout (the upstream's `read_timeout`, between two pieces of its
/// answer), kept by lb: the response read is remade on every poll of [`step`], so pingora's
/// per-read timer would start again each time. It runs only once the request is sent, as
/// NGINX's `proxy_read_timeout`: a client that stalls its body is the client's fault
/// (`server.body_timeout` ends it with a 408, nothing counted against the backend, which may
/// rightly wait for the rest).
struct ReadDeadline {
    timeout: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
}

impl ReadDeadline {
    fn new(peer: &HttpPeer) -> ReadDeadline {
        ReadDeadline {
            timeout: peer.options.read_timeout,
            deadline: None,
        }
    }

    /// Starts the clock when the answer is awaited (`sent`) and not complete.
    fn arm(&mut self, sent: bool, done: bool) {
        if done {
            self.deadline = None;
        } else if sent && self.deadline.is_none() {
            self.deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        }
    }

    /// A piece of the answer arrived: the next one has the whole timeout again.
    fn progress(&mut self) {
        self.deadline = None;
    }

    fn timed_out(&self) -> Box<Error> {
        let t = self.timeout.unwrap_or_default();
        Error::explain(
            pingora_error::ErrorType::ReadTimedout,
            format!("the backend sent nothing for {t:?}"),
        )
        .into_up()
    }
}

/// Where the response's status goes as soon as its head arrives (passive health).
pub(super) struct Report<'a> {
    pub shared: &'a std::sync::Arc<Shared>,
    pub upstream: &'a Upstream,
    pub backend: usize,
    /// The route's `add_response_headers`, and what their variables render from.
    pub add_response: Option<(&'a ResponseHeaders, &'a Vars)>,
    /// The copy of the request in progress ([`super::mirror`]): it gets each body piece read.
    pub mirror: &'a mut Option<super::mirror::Tee>,
}

/// What the exchange loops do with a read of the client's side: `None` when the request was
/// already complete (then the read only returns when the client goes away), else the body
/// piece, counted against the edge's limits, and whether it ends the request.
fn client_piece(
    session: &mut ServerSession,
    edge: &mut RequestState,
    read: Result<Option<Bytes>>,
    req_done: bool,
    mirror: &mut Option<super::mirror::Tee>,
) -> Result<Option<(Option<Bytes>, bool)>> {
    let body = read.map_err(|e| e.into_down())?;
    if req_done {
        return Ok(None);
    }
    crate::edge::request_body(session, edge)?;
    let end = body.is_none() || session.is_body_done();
    super::mirror::Tee::piece(mirror, body.as_ref(), end);
    Ok(Some((body, end)))
}

/// Forwards the request over an HTTP/1 backend connection and the response back.
pub(super) async fn h1(
    session: &mut ServerSession,
    up: &mut H1Upstream,
    head: Result<Head>,
    peer: &HttpPeer,
    report: Report<'_>,
    edge: &mut RequestState,
) -> Attempt {
    up.write_timeout = peer.options.write_timeout;
    let written = match head {
        Ok(head) => write_head(up, head).await,
        Err(e) => return Attempt::failed(e.into_in()),
    };
    if let Err(e) = written {
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
    // The piece of the client's body on its way to the backend. It is written in the same poll
    // as the response is read ([`step`]): a backend that answers while it reads (full duplex)
    // never waits for lb to read while lb waits for it to take a write.
    let mut outgoing = Outgoing::Idle;
    let mut read_by = ReadDeadline::new(peer);
    up.read_timeout = None;
    while !(req_done && resp_done) {
        read_by.arm(req_done || upgraded, resp_done);
        tokio::select! {
            biased;
            step = step(up, outgoing, !resp_done), if outgoing != Outgoing::Idle || !resp_done => {
                let task = match step {
                    Step::Wrote(Ok(())) => {
                        outgoing = match outgoing {
                            Outgoing::Body { end: true } => {
                                up.send_finish_task();
                                Outgoing::Finish
                            }
                            Outgoing::Finish => {
                                req_done = true;
                                // A client that ends its side of a tunnel ends the tunnel.
                                resp_done |= upgraded;
                                Outgoing::Idle
                            }
                            _ => Outgoing::Idle,
                        };
                        continue;
                    }
                    Step::Wrote(Err(e)) => {
                        if !resp_done {
                            return Attempt::failed(e.into_up());
                        }
                        // The backend answered before taking the whole body: the answer stands,
                        // the connection is not reusable.
                        upstream_reusable = false;
                        req_done = true;
                        outgoing = Outgoing::Idle;
                        continue;
                    }
                    Step::Read(task) => match task {
                        Ok(t) => {
                            read_by.progress();
                            t
                        }
                        Err(e) => return Attempt::failed(e.into_up()),
                    },
                };
                match task {
                    HttpTask::Header(mut resp, end) => {
                        let status = resp.status.as_u16();
                        strip_hop_by_hop(&mut resp);
                        if let Some((rules, vars)) = report.add_response {
                            add_response(&mut resp, rules, vars);
                        }
                        if !fit_for_client(session, &mut resp) {
                            continue;
                        }
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
                // A tunnel the backend ended, or a refused upgrade, ends the request side too;
                // so does an answer before the backend took all of the body (the connection
                // cannot carry another request then).
                if resp_done && !req_done && session.is_body_done() {
                    req_done = true;
                    upstream_reusable &= outgoing == Outgoing::Idle;
                }
            }
            _ = sleep_until_some(read_by.deadline), if read_by.deadline.is_some() => {
                return Attempt::failed(read_by.timed_out());
            }
            body = session.read_body_or_idle(req_done), if outgoing == Outgoing::Idle => {
                let (body, end) = match client_piece(session, edge, body, req_done, report.mirror) {
                    Ok(Some(piece)) => piece,
                    Ok(None) => continue,
                    Err(e) => return Attempt::failed(e),
                };
                if upgraded {
                    up.maybe_upgrade_body_writer();
                }
                outgoing = match body {
                    Some(b) if !b.is_empty() => {
                        up.send_body_task(b);
                        Outgoing::Body { end }
                    }
                    _ if end => {
                        up.send_finish_task();
                        Outgoing::Finish
                    }
                    _ => Outgoing::Idle,
                };
            }
        }
    }
    Attempt {
        result: Ok(true),
        upstream_reusable: upstream_reusable && !upgraded,
        grpc_status: None,
    }
}

/// Fits a backend's response head to an HTTP/1 client (HTTP/2 clients take it as it is): an
/// HTTP/1.1 status line whatever the backend spoke; a body without a length (an HTTP/1.0
/// backend's, or an HTTP/2 one's without `content-length`) goes chunked to an HTTP/1.1 client,
/// so the connection stays open, and closes an HTTP/1.0 client's connection (which then says
/// `Connection: close`). Returns false for an interim (1xx) answer to an HTTP/1.0 client, which
/// must not get one (RFC 9110 §15.2).
fn fit_for_client(session: &mut ServerSession, resp: &mut ResponseHeader) -> bool {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    if matches!(session, ServerSession::H2(_)) {
        return true;
    }
    let status = resp.status.as_u16();
    let req = session.req_header();
    let client10 = req.version == http::Version::HTTP_10;
    if status < 200 && status != 101 {
        return !client10;
    }
    resp.set_version(http::Version::HTTP_11);
    let bodiless = matches!(status, 101 | 204 | 304) || req.method == http::Method::HEAD;
    let framed =
        resp.headers.contains_key(CONTENT_LENGTH) || resp.headers.contains_key(TRANSFER_ENCODING);
    if !(bodiless || framed) {
        if client10 {
            session.set_keepalive(None);
        } else {
            // Cannot fail: a static value under a standard name.
            let _ = resp.insert_header(TRANSFER_ENCODING, "chunked");
        }
    }
    true
}

/// What an HTTP/1 attempt is writing to the backend.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    Idle,
    /// A piece of the body (`end`: the client's last).
    Body {
        end: bool,
    },
    /// The end of the body (the last chunk of a chunked one).
    Finish,
}

/// What one [`step`] did.
enum Step {
    Wrote(Result<()>),
    Read(Result<HttpTask>),
}

/// Advances the write in progress (`outgoing`) and the reading of the response (when `read`)
/// in one poll, whichever can go on: both borrow the one backend session, so the two futures
/// are made, polled and dropped in turn on every wake-up. Both are cancel-safe (pingora-core's
/// body-writer tasks keep their progress in the session, and so does the response reader), so
/// dropping either between polls loses nothing.
async fn step(up: &mut H1Upstream, outgoing: Outgoing, read: bool) -> Step {
    std::future::poll_fn(|cx| {
        if outgoing != Outgoing::Idle {
            let written = match outgoing {
                Outgoing::Finish => pin!(up.write_finish_task()).poll(cx),
                _ => pin!(up.write_body_task()).poll(cx),
            };
            if let Poll::Ready(r) = written {
                return Poll::Ready(Step::Wrote(r));
            }
        }
        if read {
            if let Poll::Ready(t) = pin!(up.read_response_task()).poll(cx) {
                return Poll::Ready(Step::Read(t));
            }
        }
        Poll::Pending
    })
    .await
}

/// `grpc-status` from a response's head or trailers.
fn status_field(fields: &http::HeaderMap) -> Option<u8> {
    fields.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The next piece of an HTTP/2 backend's response.
enum Part {
    Head(Box<ResponseHeader>),
    Body(Bytes),
    /// The response ended, with trailers (gRPC's `grpc-status`) or without.
    End(Option<Box<http::HeaderMap>>),
}

/// Where the reading of an HTTP/2 response stands.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Head,
    Body,
    Done,
}

/// Reads the next [`Part`]. Cancel-safe (the `select!` in [`h2`] drops it when the client's
/// side is ready first): nothing is consumed until a part is complete.
async fn next_part(up: &mut H2Upstream, reading: &mut Reading) -> Result<Part> {
    match *reading {
        Reading::Head => {
            up.read_response_header().await?;
            *reading = Reading::Body;
            let head = up.response_header().cloned().ok_or_else(|| {
                Error::explain(pingora_error::ErrorType::H2Error, "no response head")
            })?;
            Ok(Part::Head(Box::new(head)))
        }
        Reading::Body => match up.read_response_body().await? {
            Some(data) => Ok(Part::Body(data)),
            None => {
                let trailers = up.read_trailers().await?;
                *reading = Reading::Done;
                Ok(Part::End(trailers.map(Box::new)))
            }
        },
        Reading::Done => Ok(Part::End(None)),
    }
}

/// What one [`h2_step`] did.
enum H2Step {
    Wrote(Result<()>),
    Read(Result<Part>),
}

/// [`step`] for an HTTP/2 backend stream: the body piece in `outgoing` goes up as the stream's
/// window allows while the response is read, in one poll (both borrow the one stream; the write
/// keeps its progress in `outgoing`, and [`next_part`] is cancel-safe).
async fn h2_step(
    up: &mut H2Upstream,
    reading: &mut Reading,
    outgoing: &mut Option<(Bytes, bool)>,
    read: bool,
) -> H2Step {
    std::future::poll_fn(|cx| {
        if let Some((data, end)) = outgoing.as_mut() {
            if let Poll::Ready(r) = up.poll_write_request_body(cx, data, *end) {
                return Poll::Ready(H2Step::Wrote(r));
            }
        }
        if read {
            if let Poll::Ready(p) = pin!(next_part(up, reading)).poll(cx) {
                return Poll::Ready(H2Step::Read(p));
            }
        }
        Poll::Pending
    })
    .await
}

/// Sleeps until `deadline`; never ends without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Forwards the request as one stream on an HTTP/2 backend connection and the response back,
/// trailers included (they reach HTTP/2 clients; HTTP/1 has no trailers here, so lb keeps gRPC
/// off HTTP/1 clients). Both directions flow at once, as gRPC's streaming calls need.
pub(super) async fn h2(
    session: &mut ServerSession,
    up: &mut H2Upstream,
    head: Result<Head>,
    peer: &HttpPeer,
    report: Report<'_>,
    edge: &mut RequestState,
) -> Attempt {
    up.write_timeout = peer.options.write_timeout;
    let head = match head {
        Ok(Head::Built(h)) => h,
        Ok(Head::Wire(_)) => {
            let e = Error::explain(
                pingora_error::ErrorType::InternalError,
                "a wire head for HTTP/2",
            );
            return Attempt::failed(e.into_in());
        }
        Err(e) => return Attempt::failed(e.into_in()),
    };
    let mut req_done = session.is_body_done();
    let replay = session.get_retry_buffer();
    if let Err(e) = up.write_request_header(head, req_done && replay.is_none()) {
        return Attempt::failed(e.into_up());
    }
    // A retry replays what the client sent so far (buffered by the first attempt).
    if let Some(sent) = replay {
        if let Err(e) = up.write_request_body(sent, req_done).await {
            return Attempt::failed(e.into_up());
        }
    }
    session.enable_retry_buffering();

    let mut reading = Reading::Head;
    let mut resp_done = false;
    let mut grpc_status = None;
    // The piece of the client's body on its way up (and whether it is the last), written in the
    // same poll as the response is read ([`h2_step`]), within the upstream's write timeout.
    let mut outgoing: Option<(Bytes, bool)> = None;
    let mut write_deadline = None;
    let mut read_by = ReadDeadline::new(peer);
    up.read_timeout = None;
    while !(req_done && resp_done) {
        read_by.arm(req_done, resp_done);
        tokio::select! {
            biased;
            step = h2_step(up, &mut reading, &mut outgoing, !resp_done),
                if outgoing.is_some() || !resp_done =>
            {
                let part = match step {
                    H2Step::Wrote(Ok(())) => {
                        write_deadline = None;
                        if outgoing.take().is_some_and(|(_, end)| end) {
                            req_done = true;
                        }
                        continue;
                    }
                    H2Step::Wrote(Err(e)) => {
                        if !resp_done {
                            return Attempt::failed(e.into_up());
                        }
                        req_done = true;
                        outgoing = None;
                        continue;
                    }
                    H2Step::Read(Ok(p)) => {
                        read_by.progress();
                        p
                    }
                    H2Step::Read(Err(e)) => return Attempt::failed(e.into_up()),
                };
                let written = match part {
                    Part::Head(mut resp) => {
                        let status = resp.status.as_u16();
                        strip_hop_by_hop(&mut resp);
                        if let Some((rules, vars)) = report.add_response {
                            add_response(&mut resp, rules, vars);
                        }
                        resp.reserve(2);
                        fit_for_client(session, &mut resp);
                        if status >= 200 {
                            health::passive_response(
                                report.shared,
                                report.upstream,
                                report.backend,
                                status,
                            );
                        }
                        if up.response_finished() {
                            // A head that ends the response (gRPC's trailers-only answers)
                            // stays one: on HTTP/2 the head carries the end of the stream.
                            grpc_status = status_field(&resp.headers);
                            reading = Reading::Done;
                            resp_done = true;
                            match session {
                                ServerSession::H2(h2) => h2.write_response_header(resp, true),
                                _ => match session.write_response_header(resp).await {
                                    Ok(()) => session.write_response_body(Bytes::new(), true).await,
                                    e => e,
                                },
                            }
                        } else {
                            session.write_response_header(resp).await
                        }
                    }
                    Part::Body(data) => session.write_response_body(data, false).await,
                    Part::End(trailers) => {
                        resp_done = true;
                        match trailers {
                            Some(t) => {
                                grpc_status = status_field(&t);
                                session.write_response_trailers(*t).await
                            }
                            None => session.write_response_body(Bytes::new(), true).await,
                        }
                    }
                };
                if let Err(e) = written {
                    return Attempt::failed(e.into_down());
                }
                // An answer before the whole request: the request side ends with it.
                if resp_done && !req_done && session.is_body_done() {
                    req_done = true;
                }
            }
            _ = sleep_until_some(read_by.deadline), if read_by.deadline.is_some() => {
                return Attempt::failed(read_by.timed_out());
            }
            _ = sleep_until_some(write_deadline), if outgoing.is_some() => {
                let e = Error::explain(
                    pingora_error::ErrorType::WriteTimedout,
                    "writing the request body to an HTTP/2 backend",
                );
                return Attempt::failed(e.into_up());
            }
            body = session.read_body_or_idle(req_done), if outgoing.is_none() => {
                let (body, end) = match client_piece(session, edge, body, req_done, report.mirror) {
                    Ok(Some(piece)) => piece,
                    Ok(None) => continue,
                    Err(e) => return Attempt::failed(e),
                };
                let body = body.unwrap_or_default();
                if !body.is_empty() || end {
                    outgoing = Some((body, end));
                    write_deadline = peer
                        .options
                        .write_timeout
                        .map(|t| tokio::time::Instant::now() + t);
                }
            }
        }
    }
    Attempt {
        result: Ok(true),
        upstream_reusable: true,
        grpc_status,
    }
}
