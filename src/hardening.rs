//! Edge hardening: lb answers malformed, oversized and slow requests itself and never forwards them.
//!
//! pingora's HTTP/1 server reads and parses the request head before any `ProxyHttp` hook runs, and
//! it is loose (heads up to 1 MiB, `Transfer-Encoding` + `Content-Length` accepted with the length
//! dropped, no total deadline for the head, idle keep-alive connections never timed out, no
//! connection cap). So the defences sit in two layers:
//!
//! 1. **Connection layer.** [`GuardedApp`] is the listening service's app: it wraps pingora-proxy's
//!    `HttpProxy` and every accepted stream in a [`Guarded`] IO before pingora reads a byte. It
//!    enforces what no hook can see:
//!    - `server.max_connections`: connections over the cap get a `503` and are closed; established
//!      connections are not touched.
//!    - `server.header_timeout`: a total deadline for the request head, counted from accept for
//!      the first request of a connection and from its first byte for later ones → `408` and close.
//!    - `server.keepalive_timeout`: an idle keep-alive connection is closed quietly.
//!    - `server.max_header_bytes` / `server.max_headers` / `server.max_uri_bytes`: the head is
//!      scanned as it arrives; once over a limit lb answers `431` (`414` for the request target)
//!      before pingora buffers any more of it.
//!
//!    Whenever lb closes a connection that may still carry unread request bytes, the close
//!    *lingers* (reads and discards for a bounded time, as NGINX's `lingering_close`) so that the
//!    answer is not destroyed by the TCP reset the kernel sends for unread data.
//! 2. **Request layer.** [`early_request_filter`] (called from the proxy's hook of that name) checks
//!    the raw head pingora parsed with [`check_head`] — framing (`Content-Length`,
//!    `Transfer-Encoding`), header syntax, `Host`, limits — and answers `400`/`413`/`414`/`431`/`501`
//!    with `Connection: close`. It also sets the per-request body idle timeout
//!    (`server.body_timeout`) and lets a client half-close after its request and still get the
//!    response. [`request_body`] counts chunked bodies against `server.max_body_bytes` (`413`).
//!
//! Some malformed heads never reach the request layer: pingora's parser answers them itself with
//! its own bare `400` (control characters, obs-fold, a space before the colon, differing
//! `Content-Length`s, `Transfer-Encoding` on HTTP/1.0 or not ending in `chunked`) or `405`
//! (CONNECT). The connection layer sees that answer go out before any hook ran, counts it in
//! `lb_requests_total` like lb's own refusals, and lingers on close. Refusals of the connection
//! layer (408/414/431/503) never reach the proxy's `logging` hook, so they are counted here too
//! but have no access-log line.
//!
//! The two layers talk through a small [`ConnCtl`] shared by the connection and the request
//! context: the request layer tells the connection when the head was accepted (the header
//! deadline stops) and when the request is over (the next head's clock starts).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, ALPN};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, IO,
};
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use crate::config::Limits;
use crate::reload::Shared;

// ---------------------------------------------------------------------------------------------
// Request-head validation (pure)
// ---------------------------------------------------------------------------------------------

/// Why lb refuses a request: the status it answers with and a short reason for the body and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// What [`check_head`] learnt about an accepted request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadInfo {
    pub http10: bool,
    /// The single valid `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (the only transfer coding lb accepts).
    pub chunked: bool,
    /// An `Upgrade` header is present.
    pub upgrade: bool,
}

/// Transfer codings lb knows (and refuses with 400 unless the value is exactly `chunked`);
/// anything else is an unknown coding (501), as NGINX does.
const KNOWN_CODINGS: &[&str] = &[
    "chunked",
    "gzip",
    "x-gzip",
    "deflate",
    "compress",
    "x-compress",
    "identity",
];

/// `tchar` (RFC 9110 §5.6.2) by table: this runs over every header name of every request.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// A byte allowed in a header name or method (`tchar`).
pub fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Field-value bytes: HTAB, visible ASCII, SP and obs-text. No other control characters (CR, LF,
/// NUL, DEL, ...). Branch-free so that it vectorises: it runs over every header value.
pub fn is_field_value(v: &[u8]) -> bool {
    v.iter().fold(true, |ok, &b| {
        ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
    })
}

/// `v` without leading and trailing optional whitespace (SP, HTAB).
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Validates one raw HTTP/1 request head (request line, header lines and the terminating empty
/// line, as received) against lb's rules and `limits`. Stricter than pingora's parser:
///
/// - request target longer than `max_uri_bytes` → 414; head longer than `max_header_bytes` or more
///   than `max_headers` header fields → 431;
/// - malformed request line, header name (not a token, space before the colon, empty), header value
///   with a control character, obs-fold continuation line → 400;
/// - HTTP/1.1 without exactly one `Host`, HTTP/1.0 with several → 400;
/// - more than one `Content-Length` (even identical), or one that is not plain digits → 400;
/// - `Transfer-Encoding` with `Content-Length`, on HTTP/1.0, on several lines, or other than a
///   single `chunked` → 400 (501 when it names an unknown coding);
/// - `Content-Length` above `max_body_bytes` → 413.
///
/// Never panics, whatever the bytes.
pub fn check_head(raw: &[u8], limits: &Limits) -> std::result::Result<HeadInfo, Reject> {
    // Empty lines before the request line are ignored (RFC 9112 §2.2), as pingora does.
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(raw.len());
    // The request line, and the rest of the head after its LF (nothing when it has none).
    let head = &raw[start..];
    let (line, mut rest) = match head.iter().position(|&b| b == b'\n') {
        Some(p) => (&head[..p], &head[p + 1..]),
        None => (head, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    // Request line: method SP request-target SP HTTP-version.
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if let Some(t) = target {
        if t.len() > limits.max_uri_bytes {
            return Err(reject(
                414,
                "request target longer than server.max_uri_bytes",
            ));
        }
    }
    if raw.len() > limits.max_header_bytes {
        return Err(reject(
            431,
            "request head larger than server.max_header_bytes",
        ));
    }
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "malformed request line: method"));
    }
    if target.is_empty() || !target.iter().all(|&b| b > 0x20 && b != 0x7f) {
        return Err(reject(400, "malformed request line: target"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(reject(400, "malformed request line: version")),
    };

    let mut info = HeadInfo {
        http10,
        ..HeadInfo::default()
    };
    let (mut fields, mut hosts, mut cls, mut tes) = (0usize, 0u32, 0u32, 0u32);
    let mut te_unknown = false;
    let mut te_chunked_only = true;
    // One pass per header line: name (tchars up to the colon), then the value's bytes.
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(reject(400, "incomplete request head"));
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(reject(400, "obsolete header line folding"));
        }
        fields += 1;
        if fields > limits.max_headers {
            return Err(reject(431, "more header fields than server.max_headers"));
        }
        let colon = line
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(line.len());
        if colon == line.len() {
            return Err(reject(400, "header line without a colon"));
        }
        if colon == 0 || line[colon] != b':' {
            return Err(reject(400, "invalid header name"));
        }
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_field_value(value) {
            return Err(reject(400, "invalid character in header value"));
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            cls += 1;
            let digits =
                !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|_| digits)
                .and_then(|s| s.parse::<u64>().ok());
            match n {
                Some(n) => info.content_length = Some(n),
                None => return Err(reject(400, "invalid Content-Length")),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            tes += 1;
            let mut n = 0;
            for coding in value.split(|&b| b == b',').map(trim_ows) {
                n += 1;
                let known = KNOWN_CODINGS
                    .iter()
                    .any(|k| coding.eq_ignore_ascii_case(k.as_bytes()));
                te_unknown |= !known;
                te_chunked_only &= coding.eq_ignore_ascii_case(b"chunked");
            }
            te_chunked_only &= n == 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            info.upgrade = true;
        }
    }
    match (http10, hosts) {
        (false, 1) | (true, 0 | 1) => {}
        (false, 0) => return Err(reject(400, "HTTP/1.1 request without Host")),
        _ => return Err(reject(400, "several Host headers")),
    }
    if cls > 1 {
        return Err(reject(400, "several Content-Length headers"));
    }
    if tes > 0 {
        if http10 {
            return Err(reject(400, "Transfer-Encoding on an HTTP/1.0 request"));
        }
        if cls > 0 {
            return Err(reject(400, "both Content-Length and Transfer-Encoding"));
        }
        if te_unknown {
            return Err(reject(501, "unknown transfer coding"));
        }
        if tes > 1 || !te_chunked_only {
            return Err(reject(400, "Transfer-Encoding must be exactly \"chunked\""));
        }
        info.chunked = true;
    }
    if info
        .content_length
        .is_some_and(|n| n > limits.max_body_bytes)
    {
        return Err(reject(
            413,
            "request body larger than server.max_body_bytes",
        ));
    }
    Ok(info)
}

// ---------------------------------------------------------------------------------------------
// Connection <-> request signalling
// ---------------------------------------------------------------------------------------------

const SIGNAL_NONE: u8 = 0;
/// The request layer accepted a head: the header deadline stops.
const SIGNAL_HEAD_ACCEPTED: u8 = 1;
/// The request is over: the next bytes start a new head.
const SIGNAL_REQUEST_DONE: u8 = 2;

/// State shared by one client connection ([`Guarded`]) and the request being served on it.
pub struct ConnCtl {
    /// The limits in force when the connection was accepted (a reload applies to new connections).
    pub limits: Limits,
    signal: AtomicU8,
    /// lb refused a request: close with a lingering read so the answer reaches the client.
    linger: AtomicBool,
}

impl ConnCtl {
    fn send(&self, signal: u8) {
        self.signal.store(signal, Ordering::Release);
    }
}

/// Hardening state of one request, kept in the proxy's per-request context. Dropping it (the
/// request is over, whichever way) starts the connection's clock for the next request head.
#[derive(Default)]
pub struct RequestState {
    conn: Option<Arc<ConnCtl>>,
    /// Check the request body against `max_body` (chunked bodies; lengths are checked up front).
    count_body: bool,
    max_body: u64,
}

impl Drop for RequestState {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.send(SIGNAL_REQUEST_DONE);
        }
    }
}

impl RequestState {
    fn refused(&self) {
        if let Some(c) = &self.conn {
            c.linger.store(true, Ordering::Relaxed);
        }
    }
}

/// The [`ConnCtl`] of the connection `session` arrived on, when it is a [`Guarded`] one.
fn conn_ctl(session: &Session) -> Option<Arc<ConnCtl>> {
    let stream = session.as_downstream().stream()?;
    let io: &dyn IO = &**stream;
    io.as_any().downcast_ref::<Guarded>().map(|g| g.ctl.clone())
}

// ---------------------------------------------------------------------------------------------
// Request layer: the proxy hooks call these
// ---------------------------------------------------------------------------------------------

/// The proxy's `early_request_filter`: validates the head pingora parsed and applies per-request
/// settings. On a refusal it has already answered (with `Connection: close`) and returns an
/// `HTTPStatus` error so that pingora stops processing without forwarding anything.
pub async fn early_request_filter(
    shared: &Shared,
    session: &mut Session,
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
    let verdict = match session.as_downstream().as_http1() {
        Some(h1) => check_head(&h1.get_headers_raw_bytes(), limits),
        None => Ok(HeadInfo::default()),
    };
    let (body_timeout, max_body) = (limits.body_timeout, limits.max_body_bytes);
    state.conn = ctl;
    match verdict {
        Ok(info) => {
            // Upgraded (WebSocket) connections keep pingora's idle timeout for the tunnel.
            if !info.upgrade {
                session.set_read_timeout(Some(body_timeout));
            }
            // A client that half-closes after a complete request still gets its response
            // (RFC 9112 §9.6); a real disconnect shows up when the response write fails.
            session.set_abort_on_close(false);
            // Requests the client sent ahead (RFC 9112 §9.3.2) are served in order after this
            // one instead of being dropped with the connection. pingora carries the bytes it
            // read past this request into the next one; answers that close the connection
            // (lb's refusals, 502/504) still close it right after they are written. Not after
            // an upgrade request: bytes behind it may belong to the new protocol, so reading
            // them as HTTP could desynchronise; a refused upgrade closes the connection.
            session
                .as_downstream_mut()
                .set_pipelining_enabled(!info.upgrade);
            state.count_body = info.chunked;
            state.max_body = max_body;
            Ok(())
        }
        Err(r) => {
            state.refused();
            tracing::debug!(
                status = r.status,
                reason = r.reason,
                request = %session.as_downstream().request_summary(),
                "request refused"
            );
            // Best effort: the client may be gone already.
            let _ = answer(session, r).await;
            Err(Error::explain(ErrorType::HTTPStatus(r.status), r.reason))
        }
    }
}

/// The proxy's `request_body_filter`: counts chunked request bodies against
/// `server.max_body_bytes` (→ 413, connection closed). Tunnelled (upgraded) bytes are not counted.
/// The count is the bytes read from the client, so a retry that replays a buffered body on
/// another backend does not count them twice.
pub fn request_body(session: &Session, state: &mut RequestState) -> Result<()> {
    let downstream = session.as_downstream();
    if !state.count_body || downstream.was_upgraded() {
        return Ok(());
    }
    if downstream.body_bytes_read() as u64 > state.max_body {
        state.count_body = false;
        state.refused();
        let mut e = Error::explain(
            ErrorType::HTTPStatus(413),
            "request body larger than server.max_body_bytes",
        );
        e.set_retry(false);
        return Err(e.into_down());
    }
    Ok(())
}

fn answer_body(status: u16, reason: &str) -> String {
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{status} {phrase}: {reason}\n")
}

/// Writes lb's own answer to a refused request and marks the connection for closing.
async fn answer(session: &mut Session, r: Reject) -> Result<()> {
    let body = answer_body(r.status, r.reason);
    let mut resp = ResponseHeader::build(r.status, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CONNECTION, "close")?;
    session.set_keepalive(None);
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// A complete raw HTTP/1.1 answer written by the connection layer itself.
fn raw_answer(status: u16, reason: &str) -> Vec<u8> {
    let body = answer_body(status, reason);
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry = if status == 503 {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Connection layer
// ---------------------------------------------------------------------------------------------

/// How long lb keeps reading (and discarding) from a connection it closes after refusing a request.
const LINGER_TOTAL: Duration = Duration::from_secs(3);
/// ... and how long it waits for more bytes before giving up early.
const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Longest time spent writing a refusal the client does not read.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One counted client connection; dropping it frees the slot.
struct Slot {
    active: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The proxy listener's app: pingora-proxy's `HttpProxy` (`inner`) behind the connection cap, with
/// every stream wrapped in a [`Guarded`].
pub struct GuardedApp<A> {
    inner: Arc<A>,
    shared: Arc<Shared>,
    active: Arc<AtomicUsize>,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, shared: Arc<Shared>) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            shared,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.shared.snapshot.load().config.server.limits.clone();
        let n = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot {
            active: self.active.clone(),
            shared: self.shared.clone(),
        };
        if n > limits.max_connections {
            shed(stream, &self.shared).await;
            drop(slot);
            return None;
        }
        // HTTP apps serve every request of the connection inside this call and return `None`.
        ServerApp::process_new(
            &self.inner,
            Box::new(Guarded::new(stream, limits, slot)),
            shutdown,
        )
        .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Refuses a connection over `server.max_connections`: a 503, then a short lingering close.
async fn shed(mut stream: Stream, shared: &Shared) {
    shared.record_own_answer(503, Duration::ZERO);
    tracing::debug!("connection shed: server.max_connections reached");
    let resp = raw_answer(503, "too many connections (server.max_connections)");
    let write = async {
        stream.write_all(&resp).await?;
        stream.flush().await
    };
    if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), write).await {
        linger(
            stream,
            Duration::from_millis(500),
            Duration::from_millis(200),
        )
        .await;
    }
}

/// Half-closes `stream`, then reads and discards until the client closes, pauses for `idle`, or
/// `total` has passed; the socket is then closed.
async fn linger(mut stream: Stream, total: Duration, idle: Duration) {
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

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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

/// Incremental scan of a request head as it arrives: its size, the request target's length, the
/// number of header lines, and where the head ends (an empty line, CRLF or bare LF, as pingora's
/// parser accepts).
#[derive(Debug, Default)]
struct HeadScan {
    total: usize,
    started: bool,
    line1_done: bool,
    spaces: u8,
    target: usize,
    fields: usize,
    lf: bool,
    lf_cr: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Scan {
    More,
    Done,
    Refuse(u16),
}

impl HeadScan {
    fn feed(&mut self, bytes: &[u8], l: &Limits) -> Scan {
        // Only the bytes that still fit in max_header_bytes are scanned: a head that does not end
        // within them is too large.
        let budget = l.max_header_bytes.saturating_sub(self.total);
        let b = &bytes[..bytes.len().min(budget)];
        let mut i = 0;
        if !self.started {
            while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
                i += 1;
            }
            self.started = i < b.len();
        }
        // Request line: count the target (between the first and second space).
        while self.started && !self.line1_done && i < b.len() {
            match b[i..].iter().position(|&c| c == b' ' || c == b'\n') {
                None => {
                    if self.spaces == 1 {
                        self.target += b.len() - i;
                    }
                    i = b.len();
                }
                Some(p) => {
                    if self.spaces == 1 {
                        self.target += p;
                    }
                    if b[i + p] == b'\n' {
                        self.line1_done = true;
                        self.lf = true;
                    } else {
                        self.spaces = self.spaces.saturating_add(1);
                    }
                    i += p + 1;
                }
            }
            if self.target > l.max_uri_bytes {
                return Scan::Refuse(414);
            }
        }
        // Header lines, until an empty one (LF or CRLF right after a LF).
        while self.line1_done && i < b.len() {
            if self.lf {
                match b[i] {
                    b'\n' => return Scan::Done,
                    b'\r' if !self.lf_cr => {
                        self.lf_cr = true;
                        i += 1;
                        continue;
                    }
                    _ => {
                        self.lf = false;
                        self.lf_cr = false;
                    }
                }
            }
            match b[i..].iter().position(|&c| c == b'\n') {
                Some(p) => {
                    i += p + 1;
                    self.lf = true;
                    self.lf_cr = false;
                    self.fields += 1;
                    if self.fields > l.max_headers {
                        return Scan::Refuse(431);
                    }
                }
                None => i = b.len(),
            }
        }
        self.total += b.len();
        if bytes.len() > budget {
            let uri = !self.line1_done || self.target > l.max_uri_bytes;
            return Scan::Refuse(if uri { 414 } else { 431 });
        }
        Scan::More
    }
}

/// A client connection as pingora sees it: the accepted stream plus lb's connection-level
/// defences (see the module docs). Everything else is delegated unchanged.
pub struct Guarded {
    /// `None` only once `Drop` has taken it.
    inner: Option<Stream>,
    ctl: Arc<ConnCtl>,
    phase: Phase,
    /// The first request of the connection: its header deadline counts from accept.
    first: bool,
    scan: HeadScan,
    /// The running deadline (idle, header or refusal write), per `phase`.
    timer: Pin<Box<Sleep>>,
    /// When the current head started (for the refusal's duration metric).
    head_started: Instant,
    refusal: Vec<u8>,
    refusal_sent: usize,
    slot: Option<Slot>,
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
    fn new(stream: Stream, limits: Limits, slot: Slot) -> Guarded {
        let now = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        Guarded {
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
            head_started: now,
            refusal: Vec::new(),
            refusal_sent: 0,
            slot: Some(slot),
        }
    }

    fn io(&mut self) -> Pin<&mut Stream> {
        Pin::new(self.inner.as_mut().expect("stream present until drop"))
    }

    fn restart_timer(&mut self, after: Duration) {
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + after);
    }

    /// Applies what the request layer said since the last read.
    fn take_signal(&mut self) {
        match self.ctl.signal.swap(SIGNAL_NONE, Ordering::AcqRel) {
            SIGNAL_HEAD_ACCEPTED
                if matches!(self.phase, Phase::Idle | Phase::Head | Phase::HeadDone) =>
            {
                self.phase = Phase::Body;
            }
            SIGNAL_REQUEST_DONE if !matches!(self.phase, Phase::Refusing | Phase::Dead) => {
                self.phase = Phase::Idle;
                self.first = false;
                self.scan = HeadScan::default();
                let idle = self.ctl.limits.keepalive_timeout;
                self.restart_timer(idle);
            }
            _ => {}
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
        self.phase = Phase::Refusing;
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
        self.phase = Phase::Body;
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
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break false;
                }
            }
        };
        // A pending flush waits, but never past the refusal's write deadline.
        if done
            && self.io().poll_flush(cx).is_pending()
            && self.timer.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        self.phase = Phase::Dead;
        self.refusal = Vec::new();
        Poll::Ready(Err(refused_error()))
    }
}

fn refused_error() -> io::Error {
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
                if this.phase == Phase::Idle {
                    this.phase = Phase::Head;
                    this.head_started = Instant::now();
                    if !this.first {
                        let t = this.ctl.limits.header_timeout;
                        this.restart_timer(t);
                    }
                }
                if this.phase == Phase::Head {
                    let ctl = this.ctl.clone();
                    match this.scan.feed(&buf.filled()[before..], &ctl.limits) {
                        Scan::More => {}
                        Scan::Done => this.phase = Phase::HeadDone,
                        Scan::Refuse(status) => {
                            // pingora never sees the oversized head.
                            buf.set_filled(before);
                            let reason = if status == 414 {
                                "request target longer than server.max_uri_bytes"
                            } else {
                                "request head larger than server.max_header_bytes or server.max_headers"
                            };
                            this.refuse(status, reason);
                            return this.poll_refusal(cx);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.phase == Phase::Idle {
                    // Nothing of a request yet: close quietly (end-of-stream for pingora).
                    this.phase = Phase::Closed;
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
fn has_unread_input(stream: &mut Stream) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }

    fn status(raw: &str) -> u16 {
        match check_head(raw.as_bytes(), &limits()) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn tchar_table() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), want, "{b:#x}");
        }
    }

    #[test]
    fn accepts_ordinary_requests() {
        let ok = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "\r\nGET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-A:\r\nX-B: \t v \t\r\n\r\n",
            "POST /u HTTP/1.1\nHost: a\nContent-Length: 5\n\n",
            "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n",
        ];
        for raw in ok {
            assert_eq!(status(raw), 200, "{raw:?}");
        }
        let info = check_head(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\n\r\n",
            &limits(),
        )
        .unwrap();
        assert!(info.chunked && info.upgrade && info.content_length.is_none());
    }

    #[test]
    fn refuses_bad_framing_and_syntax() {
        let cases: &[(&str, u16)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000000\r\n\r\n", 413),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x01\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x00\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7f\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn refuses_over_limits() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_uri), 414);
        let huge_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20000));
        assert_eq!(status(&huge_uri), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(17000)
        );
        assert_eq!(status(&big), 431);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        let hundred: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{hundred}\r\n")),
            200
        );
    }

    #[test]
    fn scan_finds_head_end_and_limits() {
        let l = limits();
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n", &l), Scan::More);
        assert_eq!(s.feed(b"\r\nbody", &l), Scan::Done);
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\nA: b\n\n", &l), Scan::Done);
        let mut s = HeadScan::default();
        let uri = vec![b'a'; 9000];
        assert_eq!(s.feed(b"GET /", &l), Scan::More);
        assert_eq!(s.feed(&uri, &l), Scan::Refuse(414));
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\nX: ", &l), Scan::More);
        assert_eq!(s.feed(&vec![b'x'; 17000], &l), Scan::Refuse(431));
        let mut s = HeadScan::default();
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            s.feed(format!("GET / HTTP/1.1\r\n{many}").as_bytes(), &l),
            Scan::Refuse(431)
        );
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[ -~]{0,24}".prop_map(|v| v.trim().to_string())
    }

    /// A valid request head and the header lines it is built from.
    fn valid_head() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
            "/[A-Za-z0-9/._~%-]{0,40}",
            "[a-z0-9.-]{1,20}",
            prop::collection::vec((token(), value()), 0..12),
        )
            .prop_map(|(m, path, host, extra)| {
                let mut headers = vec![("Host".to_string(), host)];
                headers.extend(extra.into_iter().filter(|(n, _)| {
                    let n = n.to_ascii_lowercase();
                    !matches!(n.as_str(), "host" | "content-length" | "transfer-encoding")
                }));
                let mut raw = format!("{m} {path} HTTP/1.1\r\n");
                for (n, v) in &headers {
                    raw.push_str(&format!("{n}: {v}\r\n"));
                }
                raw.push_str("\r\n");
                (raw, headers)
            })
    }

    /// The byte-at-a-time definition of [`HeadScan::feed`], the model the fast version must match.
    fn reference_scan(bytes: &[u8], l: &Limits) -> Scan {
        let (mut total, mut started, mut line1_done, mut spaces, mut target, mut fields) =
            (0usize, false, false, 0u8, 0usize, 0usize);
        let (mut lf, mut lf_cr) = (false, false);
        for &b in bytes {
            total += 1;
            if total > l.max_header_bytes {
                let uri = !line1_done || target > l.max_uri_bytes;
                return Scan::Refuse(if uri { 414 } else { 431 });
            }
            if !started {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                started = true;
            }
            if !line1_done {
                match b {
                    b'\n' => {
                        line1_done = true;
                        lf = true;
                    }
                    b' ' => spaces = spaces.saturating_add(1),
                    _ if spaces == 1 => {
                        target += 1;
                        if target > l.max_uri_bytes {
                            return Scan::Refuse(414);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'\n' if lf => return Scan::Done,
                b'\n' => {
                    (lf, lf_cr) = (true, false);
                    fields += 1;
                    if fields > l.max_headers {
                        return Scan::Refuse(431);
                    }
                }
                b'\r' if lf && !lf_cr => lf_cr = true,
                _ => (lf, lf_cr) = (false, false),
            }
        }
        Scan::More
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = check_head(&raw, &limits());
            let mut s = HeadScan::default();
            let _ = s.feed(&raw, &limits());
        }

        #[test]
        fn scan_verdict_does_not_depend_on_read_boundaries(
            raw in prop::collection::vec(prop::sample::select(b"GET /a\r\n :xH".to_vec()), 0..400),
            cuts in prop::collection::vec(0usize..400, 0..8),
            max_header in 20usize..300,
            max_uri in 1usize..40,
            max_headers in 1usize..10,
        ) {
            let l = Limits { max_header_bytes: max_header, max_uri_bytes: max_uri, max_headers, ..limits() };
            let want = reference_scan(&raw, &l);
            let mut whole = HeadScan::default();
            prop_assert_eq!(whole.feed(&raw, &l), reference_scan(&raw, &l));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(raw.len())).collect();
            cuts.sort_unstable();
            let mut parts = HeadScan::default();
            let mut got = Scan::More;
            let mut from = 0;
            for to in cuts.into_iter().chain([raw.len()]) {
                got = parts.feed(&raw[from..to], &l);
                from = to;
                if got != Scan::More {
                    break;
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn valid_heads_pass((raw, _) in valid_head()) {
            prop_assert!(check_head(raw.as_bytes(), &limits()).is_ok(), "{:?}", raw);
            // The incremental scan agrees on where the head ends, however it is split.
            let mut s = HeadScan::default();
            let mid = raw.len() / 2;
            let first = s.feed(&raw.as_bytes()[..mid], &limits());
            prop_assert_eq!(first, Scan::More);
            prop_assert_eq!(s.feed(&raw.as_bytes()[mid..], &limits()), Scan::Done);
        }

        #[test]
        fn a_control_byte_in_a_value_is_refused(
            (raw, _) in valid_head(),
            ctl in prop::sample::select((0u8..0x20).filter(|b| *b != b'\t' && *b != b'\n').chain([0x7f]).collect::<Vec<u8>>()),
        ) {
            // Insert the byte inside the Host value (always the first header line).
            let at = raw.find("Host: ").unwrap() + "Host: ".len();
            let mut bad = raw.as_bytes().to_vec();
            bad.insert(at, ctl);
            prop_assert_eq!(check_head(&bad, &limits()).map(|_| ()).unwrap_err().status, 400);
        }

        #[test]
        fn framing_smuggling_shapes_are_refused(
            (raw, _) in valid_head(),
            shape in 0usize..7,
            n in 0u64..100_000,
        ) {
            let extra = match shape {
                0 => format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
                1 => format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
                2 => format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
                3 => "Transfer-Encoding: chunked, chunked\r\n".to_string(),
                4 => format!("Content-Length: {n}, {n}\r\n"),
                5 => "Host: second.example\r\n".to_string(),
                _ => "X-Fold: a\r\n  folded\r\n".to_string(),
            };
            let bad = raw.replacen("\r\n", &format!("\r\n{extra}"), 1);
            prop_assert_eq!(check_head(bad.as_bytes(), &limits()).map(|_| ()).unwrap_err().status, 400, "{:?}", bad);
        }
    }
}
