//! `sample-backend`: a small, fast HTTP/1.1 origin server used as the upstream in
//! lb's integration tests, hardening tests and benchmarks.
//!
//! It is a hand-rolled keep-alive HTTP/1.1 server on raw tokio sockets (not hyper)
//! so that the `/fault/*` endpoints can put exact, deliberately broken bytes on the
//! wire. It supports pipelining, `Content-Length` and chunked request bodies,
//! `Expect: 100-continue`, `Connection: close` and HTTP/1.0 (always closed).
//! Malformed requests get 400, heads over 64 KiB get 431; both then close.
//!
//! Usage: `sample-backend --listen ADDR --name NAME [--delay DURATION] [--threads N]`
//!
//! Every response carries `x-backend: NAME`. Endpoints (any method unless noted):
//! - `/` → 200 `{"backend":NAME}`; `--delay` applies
//! - `POST /loadTest` → 200 `{"backend","bytes","checksum"}` (FNV-1a 64 of the body,
//!   16 hex digits), 400 `{"error":"invalid JSON: ..."}`; `--delay` applies
//! - `/echo` → 200 JSON: method, path (with query), version, headers in received
//!   order as `[name, value]` pairs, body_bytes
//! - `/healthz` → 200 `ok`, or 503 after `POST /control/health/down` (`/up` restores)
//! - `/delay/{ms}`, `/fault/sleep/{ms}` → sleep, then 200
//! - `/status/{code}` → that status (200..=599) with a small JSON body
//! - `GET /ws` with `Connection: Upgrade` + `Upgrade: websocket` → 101, then a raw
//!   byte echo until EOF (no websocket framing); 426 without the upgrade headers
//! - `/fault/close-mid-body` → `Content-Length: 1000`, 10 body bytes, close
//! - `/fault/close-mid-chunked` → chunked head, one chunk, close without last-chunk
//! - `/fault/garbage` → `this is not http\r\n\r\n`, close
//! - `/fault/close` → close without any response

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use http::StatusCode;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest accepted request head (request line + headers); beyond this → 431.
const MAX_HEAD: usize = 64 * 1024;
/// Largest accepted request body; beyond this → 413.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// Largest chunk-size line in a chunked body.
const MAX_LINE: usize = 8 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Pipelined responses are batched; flush once this much is pending.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// How long a closing connection keeps draining input so our last response isn't lost to a RST.
const LINGER: Duration = Duration::from_millis(500);

#[derive(Parser, Debug)]
#[command(
    name = "sample-backend",
    about = "Sample HTTP/1.1 backend for lb tests and benchmarks"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long)]
    listen: String,
    /// Backend name, reported in the `x-backend` header and in JSON bodies.
    #[arg(long, value_parser = parse_name)]
    name: String,
    /// Extra latency for `/` and `/loadTest`, e.g. 50ms, 2s, 1m, 0s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    delay: Duration,
    /// Number of tokio worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn parse_name(s: &str) -> Result<String, String> {
    match http::HeaderValue::from_str(s) {
        Ok(_) if !s.is_empty() => Ok(s.to_string()),
        _ => Err("name must be a non-empty, header-safe string".to_string()),
    }
}

/// Parses `<integer><unit>` with unit `us`, `ms`, `s`, `m` or `h`; a bare `0` is allowed.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: Option<u64> = num.parse().ok();
    let d = match (n, unit) {
        (Some(n), "us") => Some(Duration::from_micros(n)),
        (Some(n), "ms") => Some(Duration::from_millis(n)),
        (Some(n), "s") => Some(Duration::from_secs(n)),
        (Some(n), "m") => n.checked_mul(60).map(Duration::from_secs),
        (Some(n), "h") => n.checked_mul(3600).map(Duration::from_secs),
        (Some(0), "") => Some(Duration::ZERO),
        _ => None,
    };
    d.ok_or_else(|| format!("invalid duration {s:?} (expected e.g. 50ms, 2s, 1m, 0s)"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let res = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
        .and_then(|rt| {
            let res = rt.block_on(run(args));
            rt.shutdown_timeout(Duration::from_millis(100));
            res
        });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State::new(args.name, args.delay));
    println!("sample-backend {} listening on {addr}", state.name);
    io::stdout().flush()?;
    tokio::select! {
        res = accept_loop(listener, state) => res,
        res = shutdown_signal() => res,
    }
}

async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move { Conn::new(stream).run(&state).await });
            }
            Err(e) => {
                // Typically EMFILE under overload: back off instead of spinning.
                eprintln!("sample-backend: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Process-wide state shared by all connections.
struct State {
    name: String,
    /// `name` as a JSON string literal (quoted and escaped).
    name_json: String,
    delay: Duration,
    healthy: AtomicBool,
    /// Precomputed `GET /` response: status line and fixed headers (no blank line).
    root_head: Vec<u8>,
    root_body: Vec<u8>,
}

impl State {
    fn new(name: String, delay: Duration) -> Self {
        let name_json = serde_json::Value::from(name.as_str()).to_string();
        let root_body = format!("{{\"backend\":{name_json}}}").into_bytes();
        let len = root_body.len();
        let root_head = format!(
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n"
        );
        let healthy = AtomicBool::new(true);
        let root_head = root_head.into_bytes();
        Self {
            name,
            name_json,
            delay,
            healthy,
            root_head,
            root_body,
        }
    }
}

// ---- Request parsing ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// What the router and connection loop need to know about a parsed request head.
#[derive(Debug)]
struct Meta {
    method: Range<usize>,
    target: Range<usize>,
    http10: bool,
    /// Close the connection after responding.
    close: bool,
    body: BodyKind,
    expect_continue: bool,
    upgrade_ws: bool,
}

struct Request {
    head: BytesMut,
    meta: Meta,
    body: BytesMut,
}

impl Request {
    fn method(&self) -> &[u8] {
        &self.head[self.meta.method.clone()]
    }

    fn target(&self) -> &[u8] {
        &self.head[self.meta.target.clone()]
    }

    /// The target's path (query stripped), or "" if it is not UTF-8.
    fn path(&self) -> &str {
        let path = self
            .target()
            .split(|&b| b == b'?')
            .next()
            .unwrap_or_default();
        std::str::from_utf8(path).unwrap_or("")
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Comma-separated list elements of a header value, trimmed, empties skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let pos = buf.get(from..)?.windows(4).position(|w| w == b"\r\n\r\n");
    pos.map(|i| from + i + 4)
}

/// Header lines of a request head (request line and terminating blank line skipped).
fn header_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let lines = head.split(|&b| b == b'\n').skip(1).map(trim_cr);
    lines.filter(|l| !l.is_empty())
}

fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
    let name_ok = !name.is_empty() && name.iter().all(|&b| is_tchar(b));
    let value_ok = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (name_ok && value_ok).then_some((name, value))
}

fn parse_decimal(t: &[u8]) -> Option<u64> {
    let digits = !t.is_empty() && t.len() <= 19 && t.iter().all(u8::is_ascii_digit);
    std::str::from_utf8(t).ok().filter(|_| digits)?.parse().ok()
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = trim_ows(line.split(|&b| b == b';').next()?);
    let hex = !size.is_empty() && size.len() <= 16;
    u64::from_str_radix(std::str::from_utf8(size).ok().filter(|_| hex)?, 16).ok()
}

fn parse_head(head: &[u8]) -> Result<Meta, &'static str> {
    let line_len = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let mut meta = parse_request_line(trim_cr(&head[..line_len]))?;
    let mut scan = HeaderScan::default();
    for line in header_lines(head) {
        let (name, value) = split_header(line).ok_or("malformed header line")?;
        scan.observe(name, value)?;
    }
    scan.apply(&mut meta)?;
    Ok(meta)
}

fn parse_request_line(line: &[u8]) -> Result<Meta, &'static str> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err("malformed request line: bad method");
    }
    if target.is_empty() || !target.iter().all(|&b| b > 0x20 && b != 0x7f) {
        return Err("malformed request line: bad target");
    }
    let http10 = match parts.next() {
        Some(b"HTTP/1.1") => false,
        Some(b"HTTP/1.0") => true,
        _ => return Err("malformed request line: unsupported HTTP version"),
    };
    let target_start = method.len() + 1;
    Ok(Meta {
        method: 0..method.len(),
        target: target_start..target_start + target.len(),
        http10,
        close: http10,
        body: BodyKind::Empty,
        expect_continue: false,
        upgrade_ws: false,
    })
}

/// Accumulates the framing- and connection-relevant headers.
#[derive(Default)]
struct HeaderScan {
    content_length: Option<u64>,
    /// `Some(last coding is chunked)` once a Transfer-Encoding header is seen.
    chunked: Option<bool>,
    conn_close: bool,
    conn_upgrade: bool,
    upgrade_ws: bool,
    expect_continue: bool,
}

impl HeaderScan {
    fn observe(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let has = |t: &str| tokens(value).any(|v| v.eq_ignore_ascii_case(t.as_bytes()));
        if is("content-length") {
            self.content_length(value)?;
        } else if is("transfer-encoding") {
            let last = tokens(value).last().unwrap_or_default();
            self.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if is("connection") {
            self.conn_close |= has("close");
            self.conn_upgrade |= has("upgrade");
        } else if is("upgrade") {
            self.upgrade_ws |= has("websocket");
        } else if is("expect") {
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// Accepts `N`, `N, N` and repeated identical headers; anything else is an error.
    fn content_length(&mut self, value: &[u8]) -> Result<(), &'static str> {
        if tokens(value).next().is_none() {
            return Err("empty content-length");
        }
        for t in tokens(value) {
            let n = parse_decimal(t).ok_or("invalid content-length")?;
            if self.content_length.is_some_and(|old| old != n) {
                return Err("conflicting content-length values");
            }
            self.content_length = Some(n);
        }
        Ok(())
    }

    fn apply(self, meta: &mut Meta) -> Result<(), &'static str> {
        meta.body = match (self.chunked, self.content_length) {
            (Some(false), _) => return Err("unsupported transfer-encoding"),
            (Some(true), cl) => {
                // RFC 9112 §6.3: TE overrides CL, and the connection must be closed.
                meta.close |= cl.is_some();
                BodyKind::Chunked
            }
            (None, None | Some(0)) => BodyKind::Empty,
            (None, Some(n)) => BodyKind::Length(n),
        };
        meta.close |= self.conn_close;
        meta.expect_continue = self.expect_continue;
        meta.upgrade_ws = self.upgrade_ws && self.conn_upgrade && !meta.http10;
        Ok(())
    }
}

// ---- Connection handling --------------------------------------------------

/// Why reading a request failed: a socket error/EOF (just close), or a
/// protocol error to answer with the given status before closing.
enum Fail {
    Io(io::Error),
    Reply(u16, &'static str),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

fn eof() -> Fail {
    Fail::Io(io::ErrorKind::UnexpectedEof.into())
}

/// What the connection loop does after the router has written its bytes to `out`.
enum Action {
    Continue,
    /// Sleep before sending the response that was just written.
    Delay(Duration),
    /// Flush whatever is in `out` and close (faults).
    Close,
    /// Flush the 101 response, then echo raw bytes until EOF.
    Upgrade,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        let buf = BytesMut::with_capacity(READ_CHUNK);
        Self {
            stream,
            buf,
            out: Vec::with_capacity(4096),
        }
    }

    async fn run(mut self, st: &State) -> io::Result<()> {
        loop {
            let req = match self.read_request().await {
                Ok(Some(req)) => req,
                Ok(None) => return self.close().await,
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::Reply(code, msg)) => {
                    Resp {
                        st,
                        out: &mut self.out,
                        close: true,
                        head_only: false,
                    }
                    .error(code, "", msg);
                    return self.close().await;
                }
            };
            let mark = self.out.len();
            match route(st, &req, &mut self.out) {
                Action::Continue => {}
                Action::Delay(d) => self.delay(mark, d).await?,
                Action::Close => return self.close().await,
                Action::Upgrade => return self.echo_upgraded().await,
            }
            if req.meta.close {
                return self.close().await;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                self.flush().await?;
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more input; pending responses are flushed first, so output is
    /// batched across pipelined requests but never held while we wait.
    async fn fill(&mut self) -> io::Result<usize> {
        self.flush().await?;
        self.buf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Ensures at least `n` bytes are buffered.
    async fn need(&mut self, n: usize) -> Result<(), Fail> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
        Ok(())
    }

    /// Flushes, sends FIN, then briefly drains input: closing a socket with unread
    /// data makes the kernel send RST, which can destroy the response in flight.
    async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await?;
        let drain = async {
            self.buf.clear();
            while matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0) {
                self.buf.clear();
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        Ok(())
    }

    async fn delay(&mut self, mark: usize, d: Duration) -> io::Result<()> {
        if mark > 0 {
            self.stream.write_all(&self.out[..mark]).await?;
            self.out.drain(..mark);
        }
        tokio::time::sleep(d).await;
        Ok(())
    }

    async fn echo_upgraded(mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.write_all(&self.buf).await?;
        let (mut rd, mut wr) = self.stream.split();
        tokio::io::copy(&mut rd, &mut wr).await?;
        wr.shutdown().await
    }

    async fn read_request(&mut self) -> Result<Option<Request>, Fail> {
        let Some(head) = self.read_head().await? else {
            return Ok(None);
        };
        let meta = parse_head(&head).map_err(|m| Fail::Reply(400, m))?;
        let body = self.read_body(&meta).await?;
        Ok(Some(Request { head, meta, body }))
    }

    async fn read_head(&mut self) -> Result<Option<BytesMut>, Fail> {
        let mut scanned = 0;
        loop {
            if scanned == 0 {
                // RFC 9112 §2.2: ignore empty lines before a request line.
                let skip = self
                    .buf
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                self.buf.advance(skip);
            }
            match find_head_end(&self.buf, scanned) {
                Some(end) if end <= MAX_HEAD => return Ok(Some(self.buf.split_to(end))),
                None if self.buf.len() < MAX_HEAD => {}
                _ => return Err(Fail::Reply(431, "request header fields too large")),
            }
            scanned = self.buf.len().saturating_sub(3);
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof())
                };
            }
        }
    }

    async fn read_body(&mut self, meta: &Meta) -> Result<BytesMut, Fail> {
        if meta.expect_continue && meta.body != BodyKind::Empty && self.buf.is_empty() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        match meta.body {
            BodyKind::Empty => Ok(BytesMut::new()),
            BodyKind::Length(n) if n > MAX_BODY => Err(Fail::Reply(413, "request body too large")),
            BodyKind::Length(n) => {
                let n = n as usize; // <= MAX_BODY
                self.need(n).await?;
                Ok(self.buf.split_to(n))
            }
            BodyKind::Chunked => self.read_chunked().await,
        }
    }

    async fn read_chunked(&mut self) -> Result<BytesMut, Fail> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = parse_chunk_size(&line).ok_or(Fail::Reply(400, "invalid chunk size"))?;
            if size == 0 {
                return self.skip_trailers().await.map(|()| body);
            }
            if body.len() as u64 + size > MAX_BODY {
                return Err(Fail::Reply(413, "request body too large"));
            }
            let size = size as usize; // <= MAX_BODY
            self.need(size + 2).await?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Fail::Reply(400, "chunk data not followed by CRLF"));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
    }

    async fn skip_trailers(&mut self) -> Result<(), Fail> {
        let mut total = 0;
        while total <= MAX_HEAD {
            let line = self.read_line().await?;
            if line.is_empty() {
                return Ok(());
            }
            total += line.len() + 2;
        }
        Err(Fail::Reply(431, "trailer fields too large"))
    }

    /// Consumes one LF-terminated line, returning it without CR/LF.
    async fn read_line(&mut self) -> Result<BytesMut, Fail> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(BytesMut::from(trim_cr(&line[..i])));
            }
            if self.buf.len() > MAX_LINE {
                return Err(Fail::Reply(400, "chunked framing line too long"));
            }
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
    }
}

// ---- Routing and responses ------------------------------------------------

/// Writes one response into the connection's output buffer.
struct Resp<'a> {
    st: &'a State,
    out: &'a mut Vec<u8>,
    close: bool,
    head_only: bool,
}

impl Resp<'_> {
    /// Writes a full response; `extra` is preformatted `name: value\r\n` lines.
    fn send(&mut self, status: u16, ctype: &str, extra: &str, body: &[u8]) {
        let code = StatusCode::from_u16(status).ok();
        let reason = code.and_then(|c| c.canonical_reason()).unwrap_or("Unknown");
        let name = &self.st.name;
        let _ = write!(
            self.out,
            "HTTP/1.1 {status} {reason}\r\nx-backend: {name}\r\n{extra}"
        );
        let bodyless = status < 200 || status == 204 || status == 304;
        if !bodyless {
            let len = body.len();
            let _ = write!(
                self.out,
                "content-type: {ctype}\r\ncontent-length: {len}\r\n"
            );
        }
        self.end_head();
        if !bodyless && !self.head_only {
            self.out.extend_from_slice(body);
        }
    }

    fn end_head(&mut self) {
        if self.close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn json(&mut self, status: u16, body: &str) {
        self.send(status, "application/json", "", body.as_bytes());
    }

    fn error(&mut self, status: u16, extra: &str, msg: &str) {
        let body = serde_json::json!({ "backend": self.st.name, "error": msg }).to_string();
        self.send(status, "application/json", extra, body.as_bytes());
    }

    fn root(&mut self) -> Action {
        self.out.extend_from_slice(&self.st.root_head);
        self.end_head();
        if !self.head_only {
            self.out.extend_from_slice(&self.st.root_body);
        }
        self.delayed()
    }

    fn delayed(&self) -> Action {
        match self.st.delay {
            Duration::ZERO => Action::Continue,
            d => Action::Delay(d),
        }
    }

    /// Writes a 405 and returns false unless the request method is `want`.
    fn require(&mut self, req: &Request, want: &str) -> bool {
        let ok = req.method() == want.as_bytes();
        if !ok {
            self.error(
                405,
                &format!("allow: {want}\r\n"),
                &format!("method must be {want}"),
            );
        }
        ok
    }
}

fn route(st: &State, req: &Request, out: &mut Vec<u8>) -> Action {
    let (close, head_only) = (req.meta.close, req.method() == b"HEAD");
    let mut rx = Resp {
        st,
        out,
        close,
        head_only,
    };
    match req.path() {
        "/" => rx.root(),
        "/loadTest" => load_test(&mut rx, req),
        "/healthz" => healthz(&mut rx),
        "/control/health/down" => set_health(&mut rx, req, false),
        "/control/health/up" => set_health(&mut rx, req, true),
        "/ws" => websocket(&mut rx, req),
        p if p == "/echo" || p.starts_with("/echo/") => echo(&mut rx, req),
        p => route_param(&mut rx, p),
    }
}

fn route_param(rx: &mut Resp, path: &str) -> Action {
    let sleep = path
        .strip_prefix("/delay/")
        .or_else(|| path.strip_prefix("/fault/sleep/"));
    if let Some(ms) = sleep {
        sleep_ms(rx, ms)
    } else if let Some(code) = path.strip_prefix("/status/") {
        status(rx, code)
    } else if let Some(kind) = path.strip_prefix("/fault/") {
        fault(rx, kind)
    } else {
        rx.error(404, "", "not found");
        Action::Continue
    }
}

fn fnv1a64(data: &[u8]) -> u64 {
    let step = |h: u64, &b: &u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    data.iter().fold(0xcbf2_9ce4_8422_2325, step)
}

fn load_test(rx: &mut Resp, req: &Request) -> Action {
    if !rx.require(req, "POST") {
        return Action::Continue;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&req.body) {
        Ok(_) => {
            let (name, n, sum) = (&rx.st.name_json, req.body.len(), fnv1a64(&req.body));
            rx.json(
                200,
                &format!(r#"{{"backend":{name},"bytes":{n},"checksum":"{sum:016x}"}}"#),
            );
        }
        Err(e) => rx.error(400, "", &format!("invalid JSON: {e}")),
    }
    rx.delayed()
}

#[derive(Serialize)]
struct EchoReply<'a> {
    backend: &'a str,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    version: &'static str,
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    body_bytes: usize,
}

fn echo(rx: &mut Resp, req: &Request) -> Action {
    let lossy = String::from_utf8_lossy;
    let headers = header_lines(&req.head).filter_map(split_header);
    let reply = EchoReply {
        backend: &rx.st.name,
        method: lossy(req.method()),
        path: lossy(req.target()),
        version: if req.meta.http10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: headers.map(|(n, v)| (lossy(n), lossy(v))).collect(),
        body_bytes: req.body.len(),
    };
    let body = serde_json::to_string(&reply).unwrap_or_default();
    rx.json(200, &body);
    Action::Continue
}

fn healthz(rx: &mut Resp) -> Action {
    match rx.st.healthy.load(Ordering::Relaxed) {
        true => rx.send(200, "text/plain", "", b"ok"),
        false => rx.send(503, "text/plain", "", b"unhealthy"),
    }
    Action::Continue
}

fn set_health(rx: &mut Resp, req: &Request, healthy: bool) -> Action {
    if rx.require(req, "POST") {
        rx.st.healthy.store(healthy, Ordering::Relaxed);
        let name = &rx.st.name_json;
        rx.json(200, &format!(r#"{{"backend":{name},"healthy":{healthy}}}"#));
    }
    Action::Continue
}

fn websocket(rx: &mut Resp, req: &Request) -> Action {
    if !rx.require(req, "GET") {
        return Action::Continue;
    }
    if !req.meta.upgrade_ws {
        let msg = "expected Connection: Upgrade and Upgrade: websocket";
        rx.error(426, "upgrade: websocket\r\n", msg);
        return Action::Continue;
    }
    let name = &rx.st.name;
    let _ = write!(
        rx.out,
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-backend: {name}\r\n\r\n"
    );
    Action::Upgrade
}

fn sleep_ms(rx: &mut Resp, ms: &str) -> Action {
    let Ok(ms) = ms.parse::<u64>() else {
        rx.error(400, "", "expected a number of milliseconds");
        return Action::Continue;
    };
    let name = &rx.st.name_json;
    rx.json(200, &format!(r#"{{"backend":{name},"slept_ms":{ms}}}"#));
    Action::Delay(Duration::from_millis(ms))
}

fn status(rx: &mut Resp, code: &str) -> Action {
    match code.parse::<u16>() {
        Ok(code) if (200..=599).contains(&code) => {
            let name = &rx.st.name_json;
            rx.json(code, &format!(r#"{{"backend":{name},"status":{code}}}"#));
        }
        _ => rx.error(400, "", "status code must be in 200..=599"),
    }
    Action::Continue
}

/// Writes deliberately broken bytes; the connection is then closed (FIN).
fn fault(rx: &mut Resp, kind: &str) -> Action {
    let head = format!(
        "HTTP/1.1 200 OK\r\nx-backend: {}\r\ncontent-type: text/plain\r\n",
        rx.st.name
    );
    let bytes = match kind {
        "close-mid-body" => head + "content-length: 1000\r\n\r\n0123456789",
        "close-mid-chunked" => head + "transfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        "garbage" => "this is not http\r\n\r\n".to_string(),
        "close" => String::new(),
        _ => {
            rx.error(404, "", "unknown fault");
            return Action::Continue;
        }
    };
    rx.out.extend_from_slice(bytes.as_bytes());
    Action::Close
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["5", "ms", "1x", "", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads() {
        let m = parse_head(b"POST /a HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
        assert!(m.body == BodyKind::Length(5) && !m.close);
        let te_cl = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        let m = parse_head(te_cl).unwrap();
        assert!(m.body == BodyKind::Chunked && m.close);
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().close);
        for bad in [
            &b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_chunk_size(b"1a;ext=1"), Some(26));
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
