//! The HTTP/1.1 connection loop: reads requests (head, `Content-Length` or chunked body,
//! `Expect: 100-continue`), hands each to the router, batches pipelined responses, and closes
//! with a linger so the last response is not lost to a TCP reset.
//!
//! Generic over the byte stream so that TLS or any other transport can be served by the same
//! loop: the caller accepts and configures the socket, [`Conn::run`] does the rest.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::head::{find_head_end, parse_chunk_size, parse_head, trim_cr, BodyKind, Meta, Request};
use crate::response::{Action, Resp, State};
use crate::{routes, ws};

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

/// One client connection: the stream, unparsed input and not yet written output.
pub struct Conn<S> {
    stream: S,
    buf: BytesMut,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        let buf = BytesMut::with_capacity(READ_CHUNK);
        Self {
            stream,
            buf,
            out: Vec::with_capacity(4096),
        }
    }

    /// Serves requests until the client closes, a response demands a close, or an error.
    pub async fn run(mut self, st: &State) -> io::Result<()> {
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
            match routes::route(st, &req, &mut self.out) {
                Action::Continue => {}
                Action::Delay(d) => self.delay(mark, d).await?,
                Action::Close => return self.close().await,
                Action::Upgrade => {
                    self.flush().await?;
                    return ws::echo(&mut self.stream, &self.buf).await;
                }
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

    /// Sends what precedes the delayed response, then sleeps; the response itself stays queued.
    async fn delay(&mut self, mark: usize, d: Duration) -> io::Result<()> {
        if mark > 0 {
            self.stream.write_all(&self.out[..mark]).await?;
            self.out.drain(..mark);
        }
        tokio::time::sleep(d).await;
        Ok(())
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
