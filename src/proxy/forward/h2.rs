//! The HTTP/2 backend leg of an exchange: one stream of a shared backend connection. The body
//! piece in progress goes up as the stream's window allows while the response is read, head,
//! body and trailers (gRPC's `grpc-status`) ([`H2Leg`]).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use pingora_core::protocols::http::v2::client::Http2Session as H2Upstream;
use pingora_error::{Error, Result};

use super::{exchange, Attempt, Leg, LegStep, Piece, Sides};
use crate::proxy::upstream_head::Head;

/// Forwards the request as one stream on an HTTP/2 backend connection and the response back,
/// trailers included (they reach HTTP/2 clients; HTTP/1 has no trailers here, so lb keeps gRPC
/// off HTTP/1 clients). Both directions flow at once, as gRPC's streaming calls need.
pub(in crate::proxy) async fn h2(
    up: &mut H2Upstream,
    head: Result<Head>,
    sides: Sides<'_>,
) -> Attempt {
    let (session, peer) = (&mut *sides.session, sides.peer);
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
    let req_done = session.is_body_done();
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
    // lb keeps the read timeout itself (see `ReadDeadline`).
    up.read_timeout = None;
    let mut leg = H2Leg {
        write_timeout: peer.options.write_timeout,
        up,
        reading: Reading::Head,
        outgoing: None,
        write_deadline: None,
    };
    exchange(&mut leg, sides, req_done).await
}

/// Where the reading of an HTTP/2 response stands.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Head,
    Body,
    Done,
}

/// An HTTP/2 backend stream, where its response's reading stands, and the body piece on its way
/// up (and whether it is the last), written within the upstream's write timeout.
struct H2Leg<'a> {
    up: &'a mut H2Upstream,
    reading: Reading,
    outgoing: Option<(Bytes, bool)>,
    write_timeout: Option<std::time::Duration>,
    write_deadline: Option<tokio::time::Instant>,
}

impl Leg for H2Leg<'_> {
    const HTTP2: bool = true;

    /// The write keeps its progress in `outgoing`, and [`next_part`] is cancel-safe.
    fn poll_step(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<LegStep> {
        if let Some((data, end)) = self.outgoing.as_mut() {
            if let Poll::Ready(r) = self.up.poll_write_request_body(cx, data, *end) {
                return Poll::Ready(LegStep::Wrote(r));
            }
        }
        if read {
            if let Poll::Ready(p) = pin!(next_part(self.up, &mut self.reading)).poll(cx) {
                return Poll::Ready(LegStep::Read(p));
            }
        }
        Poll::Pending
    }

    fn send(&mut self, body: Option<Bytes>, end: bool, _upgraded: bool) {
        let body = body.unwrap_or_default();
        if !body.is_empty() || end {
            self.outgoing = Some((body, end));
            self.write_deadline = self.write_timeout.map(|t| tokio::time::Instant::now() + t);
        }
    }

    fn wrote(&mut self) -> bool {
        self.write_deadline = None;
        self.outgoing.take().is_some_and(|(_, end)| end)
    }

    fn stop_writing(&mut self) {
        self.outgoing = None;
    }

    fn writing(&self) -> bool {
        self.outgoing.is_some()
    }

    fn write_deadline(&self) -> Option<tokio::time::Instant> {
        self.write_deadline.filter(|_| self.outgoing.is_some())
    }
}

/// Reads the next [`Piece`]. Cancel-safe (the exchange's `select!` drops it when the client's
/// side is ready first): nothing is consumed until a piece is complete.
async fn next_part(up: &mut H2Upstream, reading: &mut Reading) -> Result<Piece> {
    match *reading {
        Reading::Head => {
            up.read_response_header().await?;
            *reading = Reading::Body;
            let head = up.response_header().cloned().ok_or_else(|| {
                Error::explain(pingora_error::ErrorType::H2Error, "no response head")
            })?;
            if up.response_finished() {
                *reading = Reading::Done;
            }
            Ok(Piece::Head(Box::new(head), up.response_finished()))
        }
        Reading::Body => match up.read_response_body().await? {
            Some(data) => Ok(Piece::Body(data, false)),
            None => {
                let trailers = up.read_trailers().await?;
                *reading = Reading::Done;
                Ok(match trailers {
                    Some(t) => Piece::Trailers(Box::new(t), true),
                    None => Piece::End,
                })
            }
        },
        Reading::Done => Ok(Piece::End),
    }
}
