//! Request heads: parsing the request line and header fields into the [`Meta`] the router and the
//! connection loop need, and the [`Request`] type handlers read. Pure functions over bytes, no IO.
//!
//! Strict where framing is at stake (one Content-Length value, only `chunked` as a transfer
//! coding, token header names, no control characters in values, no obs-fold) so that the
//! connection loop never guesses where a request ends.

use std::ops::Range;

use bytes::BytesMut;
use lb::edge::head::{is_field_value, is_tchar, trim_ows};

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// What the router and connection loop need to know about a parsed request head.
#[derive(Debug)]
pub struct Meta {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub http10: bool,
    /// Close the connection after responding.
    pub close: bool,
    pub body: BodyKind,
    pub expect_continue: bool,
    pub upgrade_ws: bool,
}

/// One complete request: the raw head, what was parsed from it and the de-chunked body.
pub struct Request {
    pub head: BytesMut,
    pub meta: Meta,
    pub body: BytesMut,
}

impl Request {
    pub fn method(&self) -> &[u8] {
        &self.head[self.meta.method.clone()]
    }

    pub fn target(&self) -> &[u8] {
        &self.head[self.meta.target.clone()]
    }

    /// The target's path (query stripped), or "" if it is not UTF-8.
    pub fn path(&self) -> &str {
        let path = self
            .target()
            .split(|&b| b == b'?')
            .next()
            .unwrap_or_default();
        std::str::from_utf8(path).unwrap_or("")
    }

    /// `[name, value]` of every well-formed header line, in received order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        header_lines(&self.head).filter_map(split_header)
    }
}

pub fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Comma-separated list elements of a header value, trimmed, empties skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// End of the head (just past its blank line) if `buf` holds one; the search starts at `from`.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
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
    (name_ok && is_field_value(value)).then_some((name, value))
}

fn parse_decimal(t: &[u8]) -> Option<u64> {
    let digits = !t.is_empty() && t.len() <= 19 && t.iter().all(u8::is_ascii_digit);
    std::str::from_utf8(t).ok().filter(|_| digits)?.parse().ok()
}

/// The size of a chunk from its size line (extensions ignored).
pub fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = trim_ows(line.split(|&b| b == b';').next()?);
    let hex = !size.is_empty() && size.len() <= 16;
    u64::from_str_radix(std::str::from_utf8(size).ok().filter(|_| hex)?, 16).ok()
}

/// Parses a complete head as returned by [`find_head_end`]; the error is the reason for a 400.
pub fn parse_head(head: &[u8]) -> Result<Meta, &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
