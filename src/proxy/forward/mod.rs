//! One attempt on one backend connection: the request head lb sends, then both bodies streamed
//! at once in one `select!` loop on the request's own task (no channel, no second task): the
//! client's body (or a replay of its buffered start, on a retry) goes up while the response
//! comes down, and a `101 Switching Protocols` turns both into a byte tunnel.
//!
//! Neither direction ever waits for the other (full duplex): a piece of the client's body is
//! handed to a cancel-safe write, and that write and the reading of the response are polled
//! together in one future ([`Leg::poll_step`]), so a backend that answers while it reads a
//! large upload — and stops reading while its answer is not taken — is never deadlocked by lb
//! waiting on one of the two. The backend's read timeout runs only once the request is sent;
//! until then a stalled client is the client's (`server.body_timeout`, 408).
//!
//! The loop ([`exchange`]) is written once, against pingora-core's `ServerSession` (HTTP/1 and
//! HTTP/2 clients through the same calls) and a small [`Leg`] trait for the backend side: an
//! HTTP/1 connection (`h1.rs`) or a stream of a shared HTTP/2 connection (`h2.rs`), each writing
//! one body piece at a time and yielding the response as [`Piece`]s (head, body, trailers,
//! end).

mod h1;
mod h2;

use std::task::{Context, Poll};

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::ResponseHeader;

use super::headers::strip_hop_by_hop;
use super::rewrite::{add_response, Vars};
use crate::config::headers::ResponseHeaders;
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

/// The backend's read timeout (the upstream's `read_timeout`, between two pieces of its
/// answer), kept by lb: the response read is remade on every poll of [`Leg::poll_step`], so
/// pingora's per-read timer would start again each time. It runs only once the request is sent, as
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

/// The request's side of an attempt: the client's session, the backend's peer (its
/// timeouts), where the answer goes as it arrives, and the edge's limits on the request body.
pub(super) struct Sides<'a> {
    pub session: &'a mut ServerSession,
    pub peer: &'a HttpPeer,
    pub report: Report<'a>,
    pub edge: &'a mut RequestState,
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

/// A piece of the backend's response, whichever protocol it came in.
enum Piece {
    /// The head, and whether it ends the response (no body follows).
    Head(Box<ResponseHeader>, bool),
    Body(Bytes, bool),
    /// Trailers, and whether they end the response (HTTP/2's do; HTTP/1's are followed by
    /// [`Piece::End`]).
    Trailers(Box<http::HeaderMap>, bool),
    End,
    /// Nothing to pass on (HTTP/1's empty trailers).
    Nothing,
    /// The backend session's own failure, as it reported it.
    Failed(Box<Error>),
}

/// What one turn of a leg's [`Leg::poll_step`] did.
enum LegStep {
    /// The body piece (or the end of the body) being written went out, or failed.
    Wrote(Result<()>),
    Read(Result<Piece>),
}

/// The backend side of an exchange ([`h1::H1Leg`], [`h2::H2Leg`]): one body piece written at a
/// time while the response is read, both advanced by one poll.
trait Leg {
    /// An HTTP/2 stream: its head may end the response (gRPC's trailers-only answers, kept one
    /// frame for an HTTP/2 client) and carry `grpc-status`; it is never upgraded.
    const HTTP2: bool;
    /// Advances the write in progress and, when `read`, the reading of the response, whichever
    /// can go on. Cancel-safe: dropped between polls, it loses nothing.
    fn poll_step(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<LegStep>;
    /// Starts writing a piece of the client's body (`end`: its last), in a tunnel once
    /// `upgraded`.
    fn send(&mut self, body: Option<Bytes>, end: bool, upgraded: bool);
    /// The write in progress went out; true when it ended the request body (else more is
    /// being written, the body's end, or nothing).
    fn wrote(&mut self) -> bool;
    /// Drops the write in progress (the backend answered without taking it).
    fn stop_writing(&mut self);
    /// A write is in progress.
    fn writing(&self) -> bool;
    /// When the write in progress must be done (HTTP/2: the upstream's `write_timeout`; an
    /// HTTP/1 session keeps its own).
    fn write_deadline(&self) -> Option<tokio::time::Instant>;
    /// The error of a write not done by [`Leg::write_deadline`].
    fn write_timed_out() -> Box<Error> {
        let why = "writing the request body to an HTTP/2 backend";
        Error::explain(pingora_error::ErrorType::WriteTimedout, why).into_up()
    }
}

/// Where an exchange stands.
#[derive(Default)]
struct Progress {
    req_done: bool,
    resp_done: bool,
    /// A `101 Switching Protocols` made the exchange a byte tunnel.
    upgraded: bool,
    /// False once the backend answered without taking the whole body.
    upstream_broken: bool,
    grpc_status: Option<u8>,
}

/// The exchange once the request head (and a retry's replay) went out: both bodies at once in
/// one `select!` (see the module's header), the response's pieces passed on to the client as
/// they come ([`pass_on`]). `req_done`: the request body is already complete.
async fn exchange<L: Leg>(leg: &mut L, sides: Sides<'_>, req_done: bool) -> Attempt {
    let Sides {
        session,
        peer,
        report,
        edge,
    } = sides;
    let mut at = Progress {
        req_done,
        ..Progress::default()
    };
    let mut read_by = ReadDeadline::new(peer);
    while !(at.req_done && at.resp_done) {
        read_by.arm(at.req_done || at.upgraded, at.resp_done);
        let writing = leg.writing();
        let write_by = leg.write_deadline();
        let read = !at.resp_done;
        tokio::select! {
            biased;
            step = std::future::poll_fn(|cx| leg.poll_step(cx, read)), if writing || read => {
                let piece = match step {
                    LegStep::Wrote(Ok(())) => {
                        if leg.wrote() {
                            at.req_done = true;
                            // A client that ends its side of a tunnel ends the tunnel.
                            at.resp_done |= at.upgraded;
                        }
                        continue;
                    }
                    LegStep::Wrote(Err(e)) => {
                        if !at.resp_done {
                            return Attempt::failed(e.into_up());
                        }
                        // The backend answered before taking the whole body: the answer stands,
                        // the connection is not reusable.
                        at.upstream_broken = true;
                        at.req_done = true;
                        leg.stop_writing();
                        continue;
                    }
                    LegStep::Read(Ok(p)) => p,
                    LegStep::Read(Err(e)) => return Attempt::failed(e.into_up()),
                };
                read_by.progress();
                if let Err(e) = pass_on::<L>(session, piece, &mut at, &report).await {
                    return Attempt::failed(e);
                }
                // A tunnel the backend ended, or a refused upgrade, ends the request side too;
                // so does an answer before the backend took all of the body (the connection
                // cannot carry another request then).
                if at.resp_done && !at.req_done && session.is_body_done() {
                    at.req_done = true;
                    at.upstream_broken |= leg.writing();
                }
            }
            _ = sleep_until_some(read_by.deadline), if read_by.deadline.is_some() => {
                return Attempt::failed(read_by.timed_out());
            }
            _ = sleep_until_some(write_by), if write_by.is_some() => {
                return Attempt::failed(L::write_timed_out());
            }
            body = session.read_body_or_idle(at.req_done), if !writing => {
                match client_piece(session, edge, body, at.req_done, report.mirror) {
                    Ok(Some((body, end))) => leg.send(body, end, at.upgraded),
                    Ok(None) => {}
                    Err(e) => return Attempt::failed(e),
                }
            }
        }
    }
    Attempt {
        result: Ok(true),
        upstream_reusable: !at.upstream_broken && !at.upgraded,
        grpc_status: at.grpc_status,
    }
}

/// Passes a piece of the backend's response on to the client, noting in `at` what it ended or
/// started (the response, a tunnel, a gRPC status). The error ends the attempt.
async fn pass_on<L: Leg>(
    session: &mut ServerSession,
    piece: Piece,
    at: &mut Progress,
    report: &Report<'_>,
) -> Result<()> {
    let written = match piece {
        Piece::Head(mut resp, end) => {
            if !head_for_client(session, &mut resp, report) {
                return Ok(());
            }
            let written = if L::HTTP2 && end {
                // A head that ends the response (gRPC's trailers-only answers) stays one: on
                // HTTP/2 the head carries the end of the stream.
                at.grpc_status = status_field(&resp.headers);
                at.resp_done = true;
                match session {
                    ServerSession::H2(h2) => h2.write_response_header(resp, true),
                    _ => head_and_end(session, resp).await,
                }
            } else if end {
                at.resp_done = true;
                head_and_end(session, resp).await
            } else {
                session.write_response_header(resp).await
            };
            if !L::HTTP2 && !at.upgraded && session.was_upgraded() {
                // The tunnel starts: read the client's bytes again.
                at.upgraded = true;
                at.req_done = false;
            }
            written
        }
        Piece::Body(data, end) => {
            at.resp_done = end;
            session.write_response_body(data, end).await
        }
        Piece::Trailers(t, end) => {
            if end {
                at.grpc_status = status_field(&t);
                at.resp_done = true;
            }
            session.write_response_trailers(*t).await
        }
        Piece::End => {
            at.resp_done = true;
            session.write_response_body(Bytes::new(), true).await
        }
        Piece::Nothing => Ok(()),
        Piece::Failed(e) => return Err(e),
    };
    written.map_err(|e| e.into_down())
}

/// The backend's response head made the client's: hop-by-hop fields removed, the route's
/// `add_response_headers` added, fitted to an HTTP/1 client ([`fit_for_client`]), its status
/// reported to passive health. False: the client must not get this (interim) head.
fn head_for_client(
    session: &mut ServerSession,
    resp: &mut ResponseHeader,
    report: &Report<'_>,
) -> bool {
    let status = resp.status.as_u16();
    strip_hop_by_hop(resp);
    if let Some((rules, vars)) = report.add_response {
        add_response(resp, rules, vars);
    }
    if !fit_for_client(session, resp) {
        return false;
    }
    if status >= 200 {
        health::passive_response(report.shared, report.upstream, report.backend, status);
    }
    true
}

/// Writes a head that ends the response, then the end of the (empty) body.
async fn head_and_end(session: &mut ServerSession, resp: Box<ResponseHeader>) -> Result<()> {
    session.write_response_header(resp).await?;
    session.write_response_body(Bytes::new(), true).await
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

/// `grpc-status` from a response's head or trailers.
fn status_field(fields: &http::HeaderMap) -> Option<u8> {
    fields.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Sleeps until `deadline`; never ends without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) use h1::h1;
pub(super) use h2::h2;
