//! The guarded client stream: header deadline, keep-alive idle timeout, head-size limits and
//! refusals, enforced below pingora's HTTP/1 parser (see the module docs of [`crate::edge`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, ALPN};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::answer::raw_answer;
use super::head::{HeadScan, Scan};
use crate::config::Limits;
use crate::runtime::Shared;

/// How long lb keeps reading (and discarding) from a connection it closes after refusing a request.
pub(super) const LINGER_TOTAL: Duration = Duration::from_secs(3);
/// ... and how long it waits for more bytes before giving up early.
pub(super) const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Longest time spent writing a refusal the client does not read.
pub(super) const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One counted client connection; dropping it frees the slot.
pub(super) struct ConnSlot {
    pub(super) active: Arc<AtomicUsize>,
    pub(super) shared: Arc<Shared>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// No signal since the last read.
pub(super) const SIGNAL_NONE: u8 = 0;
/// The request layer accepted a head: the header deadline stops.
pub(super) const SIGNAL_HEAD_ACCEPTED: u8 = 1;
/// The request is over: the next bytes start a new head.
pub(super) const SIGNAL_REQUEST_DONE: u8 = 2;

/// State shared by one client connection ([`Guarded`]) and the request being served on it.
pub struct ConnCtl {
    /// The limits in force when the connection was accepted (a reload applies to new connections).
    pub limits: Limits,
    pub(super) signal: AtomicU8,
    /// lb refused a request: close with a lingering read so the answer reaches the client.
    pub(super) linger: AtomicBool,
}

impl ConnCtl {
    pub(super) fn send(&self, signal: u8) {
        self.signal.store(signal, Ordering::Release);
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the first byte of a request head (idle timeout running).
    Idle,
    /// Receiving a request head: scanned against the limits, header deadline running.
    Head,
    /// The scan saw the end of the head; the deadline runs until the request layer accepts it.
    HeadDone,
    /// Head accepted: bytes pass through untouched (pingora's body read timeout applies).
    Body,
    /// Writing lb's own refusal (`Guarded::refusal`).
    Refusing,
    /// Refused or timed out: reads fail, writes fail.
    Dead,
    /// Idle timeout: reads return end-of-stream.
    Closed,
}

/// A client connection as pingora sees it: the accepted stream plus lb's connection-level
/// defences (see the module docs). Everything else is delegated unchanged.
pub struct Guarded {
    /// `None` only once `Drop` has taken it.
    inner: Option<Stream>,
    pub(super) ctl: Arc<ConnCtl>,
    phase: Phase,
    /// The first request of the connection: its header deadline counts from accept.
    first: bool,
    scan: HeadScan,
    /// The running deadline (idle, header or refusal write), per `phase`: `due`, with `timer`
    /// armed for it or for an earlier time ([`Guarded::set_deadline`]).
    timer: Pin<Box<Sleep>>,
    due: tokio::time::Instant,
    /// When the current head started (for the refusal's duration metric).
    head_started: Instant,
    refusal: Vec<u8>,
    refusal_sent: usize,
    slot: Option<ConnSlot>,
    /// Counted in [`requests_arriving`].
    arriving: bool,
}

/// Connections whose next request has begun but is not the request path's yet: a head arriving,
/// or a new connection's first request not sent yet. A graceful stop waits for these as for the
/// requests in flight, so that a request whose head is still arriving at exit, or the first one
/// on a connection accepted just before (an upgrade's hand-over), is not cut.
static ARRIVING: AtomicI64 = AtomicI64::new(0);

/// Connections whose next request has begun but is not the request path's yet (see `ARRIVING`).
pub fn requests_arriving() -> i64 {
    ARRIVING.load(Ordering::Relaxed)
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Guarded {
    pub(super) fn new(stream: Stream, limits: Limits, slot: ConnSlot) -> Guarded {
        let now = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        let mut g = Guarded {
            inner: Some(stream),
            ctl: Arc::new(ConnCtl {
                limits,
                signal: AtomicU8::new(SIGNAL_NONE),
                linger: AtomicBool::new(false),
            }),
            phase: Phase::Idle,
            first: true,
            scan: HeadScan::default(),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            due: deadline,
            head_started: now,
            refusal: Vec::new(),
            refusal_sent: 0,
            slot: Some(slot),
            arriving: false,
        };
        g.sync_arriving();
        g
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.sync_arriving();
    }

    /// Keeps [`ARRIVING`] in step with the phase: a head under way, or a first request awaited.
    fn sync_arriving(&mut self) {
        let arriving = match self.phase {
            Phase::Head | Phase::HeadDone => true,
            Phase::Idle => self.first,
            _ => false,
        };
        if arriving != self.arriving {
            self.arriving = arriving;
            let delta = if arriving { 1 } else { -1 };
            ARRIVING.fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn io(&mut self) -> Pin<&mut Stream> {
        Pin::new(self.inner.as_mut().expect("stream present until drop"))
    }

    fn restart_timer(&mut self, after: Duration) {
        self.set_deadline(tokio::time::Instant::now() + after);
    }

    /// Moves the deadline to `at`. The timer is re-armed only for an earlier time than the one
    /// it is armed for; a later one is taken up when the armed one fires ([`Self::poll_timer`]),
    /// so that a busy keep-alive connection does not re-arm its timer twice per request (idle,
    /// then header deadline: each a re-registration in the runtime's timer wheel).
    fn set_deadline(&mut self, at: tokio::time::Instant) {
        self.due = at;
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
    }

    /// Ready once the deadline ([`Self::set_deadline`]) has passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            if tokio::time::Instant::now() >= self.due {
                return Poll::Ready(());
            }
            let due = self.due;
            self.timer.as_mut().reset(due);
        }
    }

    /// Applies what the request layer said since the last read.
    fn take_signal(&mut self) {
        match self.ctl.signal.swap(SIGNAL_NONE, Ordering::AcqRel) {
            SIGNAL_HEAD_ACCEPTED
                if matches!(self.phase, Phase::Idle | Phase::Head | Phase::HeadDone) =>
            {
                self.set_phase(Phase::Body);
            }
            SIGNAL_REQUEST_DONE if !matches!(self.phase, Phase::Refusing | Phase::Dead) => {
                self.first = false;
                self.set_phase(Phase::Idle);
                self.scan = HeadScan::default();
                let idle = self.ctl.limits.keepalive_timeout;
                self.restart_timer(idle);
            }
            _ => {}
        }
    }

    /// Feeds bytes of a request head to the scan (the first ones start the head and its
    /// deadline). A head over the limits returns the refusal's status and reason.
    fn scan_head(&mut self, bytes: &[u8]) -> Option<(u16, &'static str)> {
        if self.phase == Phase::Idle {
            self.set_phase(Phase::Head);
            let now = Instant::now();
            self.head_started = now;
            if !self.first {
                let deadline = now + self.ctl.limits.header_timeout;
                self.set_deadline(deadline.into());
            }
        }
        if self.phase != Phase::Head {
            return None;
        }
        match self.scan.feed(bytes, &self.ctl.limits) {
            Scan::More => None,
            Scan::Done => {
                self.set_phase(Phase::HeadDone);
                None
            }
            Scan::Refuse(status) => Some((
                status,
                if status == 414 {
                    "request target longer than server.max_uri_bytes"
                } else {
                    "request head larger than server.max_header_bytes or server.max_headers"
                },
            )),
        }
    }

    /// The next request's first bytes were read with the previous request (pipelining): they
    /// start the next head here, held to the same limits and deadline. Returns false when the
    /// head is refused; the refusal goes out on the next read.
    pub(super) fn start_pipelined_head(&mut self, prefix: &[u8]) -> bool {
        self.take_signal();
        match self.scan_head(prefix) {
            None => true,
            Some((status, reason)) => {
                self.refuse(status, reason);
                false
            }
        }
    }

    /// Starts writing lb's own answer; the connection is closed (lingering) afterwards.
    fn refuse(&mut self, status: u16, reason: &str) {
        let shared = self.slot.as_ref().map(|s| s.shared.clone());
        if let Some(shared) = shared {
            shared.record_own_answer(status, self.head_started.elapsed());
        }
        tracing::debug!(status, reason, "request refused by the connection layer");
        self.refusal = raw_answer(status, reason);
        self.refusal_sent = 0;
        self.set_phase(Phase::Refusing);
        self.ctl.linger.store(true, Ordering::Relaxed);
        self.restart_timer(REFUSAL_WRITE_TIMEOUT);
    }

    /// pingora answers some requests before any hook runs (its own 400 for a head it cannot
    /// parse or frame, 405 for CONNECT): count them like lb's other refusals, and linger on close.
    fn note_early_answer(&mut self, first: &[u8]) {
        if !matches!(self.phase, Phase::Idle | Phase::Head | Phase::HeadDone) {
            return;
        }
        let status = first
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| first.strip_prefix(b"HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| std::str::from_utf8(code).ok()?.parse::<u16>().ok());
        let Some(status) = status else {
            return;
        };
        if let Some(slot) = &self.slot {
            slot.shared
                .record_own_answer(status, self.head_started.elapsed());
        }
        tracing::debug!(status, "request refused by pingora's HTTP/1 parser");
        self.ctl.linger.store(true, Ordering::Relaxed);
        // The connection is closed after this answer; no header deadline any more.
        self.set_phase(Phase::Body);
    }

    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = loop {
            if self.refusal_sent == self.refusal.len() {
                break true;
            }
            let inner = self.inner.as_mut().expect("stream present until drop");
            match Pin::new(inner).poll_write(cx, &self.refusal[self.refusal_sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.refusal_sent += n,
                Poll::Ready(_) => break false,
                Poll::Pending => {
                    if self.poll_timer(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break false;
                }
            }
        };
        // A pending flush waits, but never past the refusal's write deadline.
        if done && self.io().poll_flush(cx).is_pending() && self.poll_timer(cx).is_pending() {
            return Poll::Pending;
        }
        self.set_phase(Phase::Dead);
        self.refusal = Vec::new();
        Poll::Ready(Err(refused_error()))
    }
}

pub(super) fn refused_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "request refused by lb (limits)",
    )
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_signal();
        match this.phase {
            Phase::Body => return this.io().poll_read(cx, buf),
            Phase::Refusing => return this.poll_refusal(cx),
            Phase::Dead => return Poll::Ready(Err(refused_error())),
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Idle | Phase::Head | Phase::HeadDone => {}
        }
        let before = buf.filled().len();
        match this.io().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                let bytes = &buf.filled()[before..];
                if let Some((status, reason)) = this.scan_head(bytes) {
                    // pingora never sees the oversized head.
                    buf.set_filled(before);
                    this.refuse(status, reason);
                    return this.poll_refusal(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.poll_timer(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.phase == Phase::Idle {
                    // Nothing of a request yet: close quietly (end-of-stream for pingora).
                    this.set_phase(Phase::Closed);
                    return Poll::Ready(Ok(()));
                }
                this.refuse(
                    408,
                    "request head not received within server.header_timeout",
                );
                this.poll_refusal(cx)
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_signal();
        if matches!(this.phase, Phase::Refusing | Phase::Dead) {
            return Poll::Ready(Err(refused_error()));
        }
        this.note_early_answer(buf);
        this.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_signal();
        if matches!(this.phase, Phase::Refusing | Phase::Dead) {
            return Poll::Ready(Err(refused_error()));
        }
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.note_early_answer(first);
        }
        this.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.arriving {
            ARRIVING.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(mut stream) = self.inner.take() else {
            return;
        };
        // Closing a socket with unread input makes the kernel send RST, which can destroy the
        // answer still in flight to the client: linger when lb refused something or input waits.
        let linger_needed =
            self.ctl.linger.load(Ordering::Relaxed) || has_unread_input(&mut stream);
        if !linger_needed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let slot = self.slot.take();
        rt.spawn(async move {
            linger(stream, LINGER_TOTAL, LINGER_IDLE).await;
            drop(slot);
        });
    }
}

/// Whether bytes are already waiting to be read (without blocking or registering interest).
pub(super) fn has_unread_input(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(
        Pin::new(stream).poll_read(&mut cx, &mut buf),
        Poll::Ready(Ok(()))
    ) && !buf.filled().is_empty()
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        if let Some(s) = self.inner.as_mut() {
            Shutdown::shutdown(s.as_mut()).await;
        }
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.as_ref().map_or(-1, |s| s.id())
    }
}

impl Ssl for Guarded {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.as_ref().and_then(|s| s.get_ssl_digest())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.as_ref().and_then(|s| s.selected_alpn_proto())
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |s| s.get_timing_digest())
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_read_pending_time())
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_write_pending_time())
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.as_ref().and_then(|s| s.get_proxy_digest())
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_proxy_digest(digest);
        }
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.as_ref().and_then(|s| s.get_socket_digest())
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_socket_digest(digest);
        }
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.inner.as_mut() {
            Some(s) => s.try_peek(buf).await,
            None => Ok(false),
        }
    }
}

/// Half-closes `stream`, then reads and discards until the client closes, pauses for `idle`, or
/// `total` has passed; the socket is then closed.
pub(super) async fn linger(mut stream: Stream, total: Duration, idle: Duration) {
    let drain = async {
        Shutdown::shutdown(stream.as_mut()).await;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(idle, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(total, drain).await;
}
