//! The HTTP/1 backend leg of an exchange: the request head and a retry's replay written first,
//! then the body pieces through pingora-core's cancel-safe body-writer tasks while the response
//! is read ([`H1Leg`]).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::HttpTask;
use pingora_error::Result;

use super::{exchange, Attempt, Leg, LegStep, Piece, Sides};
use crate::proxy::upstream_head::{write_head, Head};

/// Forwards the request over an HTTP/1 backend connection and the response back.
pub(in crate::proxy) async fn h1(
    up: &mut H1Upstream,
    head: Result<Head>,
    sides: Sides<'_>,
) -> Attempt {
    let (session, peer) = (&mut *sides.session, sides.peer);
    up.write_timeout = peer.options.write_timeout;
    let written = match head {
        Ok(head) => write_head(up, head).await,
        Err(e) => return Attempt::failed(e.into_in()),
    };
    if let Err(e) = written {
        return Attempt::failed(e.into_up());
    }
    let req_done = session.is_body_done();
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
    // lb keeps the read timeout itself (see `ReadDeadline`).
    up.read_timeout = None;
    let mut leg = H1Leg {
        up,
        outgoing: Outgoing::Idle,
    };
    exchange(&mut leg, sides, req_done).await
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

/// An HTTP/1 backend session and the write in progress on it.
struct H1Leg<'a> {
    up: &'a mut H1Upstream,
    outgoing: Outgoing,
}

impl Leg for H1Leg<'_> {
    const HTTP2: bool = false;

    /// Both the write and the response read borrow the one backend session, so the two futures
    /// are made, polled and dropped in turn on every wake-up. Both are cancel-safe (pingora-core's
    /// body-writer tasks keep their progress in the session, and so does the response reader).
    fn poll_step(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<LegStep> {
        if self.outgoing != Outgoing::Idle {
            let written = match self.outgoing {
                Outgoing::Finish => pin!(self.up.write_finish_task()).poll(cx),
                _ => pin!(self.up.write_body_task()).poll(cx),
            };
            if let Poll::Ready(r) = written {
                return Poll::Ready(LegStep::Wrote(r));
            }
        }
        if read {
            if let Poll::Ready(t) = pin!(self.up.read_response_task()).poll(cx) {
                return Poll::Ready(LegStep::Read(t.map(piece)));
            }
        }
        Poll::Pending
    }

    fn send(&mut self, body: Option<Bytes>, end: bool, upgraded: bool) {
        if upgraded {
            self.up.maybe_upgrade_body_writer();
        }
        self.outgoing = match body {
            Some(b) if !b.is_empty() => {
                self.up.send_body_task(b);
                Outgoing::Body { end }
            }
            _ if end => {
                self.up.send_finish_task();
                Outgoing::Finish
            }
            _ => Outgoing::Idle,
        };
    }

    fn wrote(&mut self) -> bool {
        let finished = self.outgoing == Outgoing::Finish;
        self.outgoing = match self.outgoing {
            Outgoing::Body { end: true } => {
                self.up.send_finish_task();
                Outgoing::Finish
            }
            _ => Outgoing::Idle,
        };
        finished
    }

    fn stop_writing(&mut self) {
        self.outgoing = Outgoing::Idle;
    }

    fn writing(&self) -> bool {
        self.outgoing != Outgoing::Idle
    }

    fn write_deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
}

/// pingora-core's response task as a [`Piece`].
fn piece(task: HttpTask) -> Piece {
    match task {
        HttpTask::Header(resp, end) => Piece::Head(resp, end),
        HttpTask::Body(data, end) | HttpTask::UpgradedBody(data, end) => {
            Piece::Body(data.unwrap_or_default(), end)
        }
        HttpTask::Done => Piece::End,
        HttpTask::Trailer(Some(trailers)) => Piece::Trailers(trailers, false),
        HttpTask::Trailer(None) => Piece::Nothing,
        HttpTask::Failed(e) => Piece::Failed(e),
    }
}
