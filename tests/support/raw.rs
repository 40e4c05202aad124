//! A raw HTTP/1.1 client on plain `std::net::TcpStream`s, for tests that must see (or send)
//! exactly what goes over the wire: requests written byte for byte, responses read until the
//! peer closes or one at a time on a kept-alive connection, pipelined batches; and the pieces of
//! raw backends (reading one request, a minimal answer).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Conn, Response};

// ---- raw client -----------------------------------------------------------------------------

/// Everything read from a raw connection until the peer closed it (or the wait ran out).
pub struct Raw {
    /// Every byte received, head and body as sent.
    pub bytes: Vec<u8>,
    /// The peer closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    /// Time from the end of our write to the close (or the end of the wait).
    pub elapsed: Duration,
}

impl Raw {
    /// The status code of the first response line, if there is one.
    pub fn status(&self) -> Option<u16> {
        let line = self.bytes.split(|&b| b == b'\n').next()?;
        let text = std::str::from_utf8(line).ok()?;
        text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
    }

    fn head_len(&self) -> Option<usize> {
        self.bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
    }

    /// The first `name` header (any case) of the response head, trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = String::from_utf8_lossy(&self.bytes[..self.head_len()?]).into_owned();
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// Everything after the response head (empty without a complete head).
    pub fn body(&self) -> &[u8] {
        self.head_len().map_or(&[][..], |n| &self.bytes[n..])
    }

    /// All bytes as (lossy) text, for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A connection to `addr` with Nagle off (5 s connect timeout).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the peer closes or `wait` passes.
pub fn read_until_close(s: &mut TcpStream, wait: Duration) -> Raw {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break true,
        }
    };
    Raw {
        bytes,
        closed,
        elapsed: start.elapsed(),
    }
}

/// Sends `req` on a fresh connection and reads until lb closes it (at most 5 s).
pub fn exchange(addr: SocketAddr, req: &[u8]) -> Raw {
    let mut s = connect(addr);
    // lb may answer and close before it has read everything: a failed write is not an error here.
    let _ = s.write_all(req);
    read_until_close(&mut s, Duration::from_secs(5))
}

/// Reads exactly one response with a Content-Length body (for keep-alive exchanges).
pub fn read_one(s: &mut TcpStream) -> Raw {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            _ => {
                return Raw {
                    bytes,
                    closed: true,
                    elapsed: Duration::ZERO,
                }
            }
        }
    }
    let mut raw = Raw {
        bytes,
        closed: false,
        elapsed: Duration::ZERO,
    };
    let len: usize = raw
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if s.read_exact(&mut body).is_err() {
        raw.closed = true;
    }
    raw.bytes.extend_from_slice(&body);
    raw
}

/// Writes `raw` (several requests) in one write on a fresh connection and reads `n` responses.
pub fn pipeline(addr: std::net::SocketAddr, raw: &str, n: usize) -> (Conn, Vec<Response>) {
    use std::io::Write;
    let mut c = Conn::open(addr).unwrap();
    c.stream()
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c.stream().write_all(raw.as_bytes()).unwrap();
    let got = (0..n)
        .map(|i| {
            c.read_response(false)
                .unwrap_or_else(|e| panic!("response {i} of {n}: {e}"))
        })
        .collect();
    (c, got)
}

/// The connection is closed by lb (end of stream), not left waiting.
pub fn assert_closed(c: &mut Conn) {
    use std::io::Read;
    let mut rest = Vec::new();
    match c.stream().read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

// ---- raw backends ---------------------------------------------------------------------------

/// Reads one request (head, then a Content-Length body) from `s`, keeping extra bytes in `buf`.
/// `None` when the connection closes first.
pub fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((head, body))
}

/// A complete keep-alive answer for a raw backend: `200`, body `ok`, `X-Backend: raw`.
pub const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok";

/// A raw backend that answers every request with the bytes `answer` (closing after each when
/// `close`), and the heads it received, in order.
pub fn scripted_backend(
    answer: &'static [u8],
    close: bool,
) -> (
    super::RawBackend,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heads.clone();
    let b = super::raw_backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some((head, _)) = read_request(&mut s, &mut buf) {
            log.lock().unwrap().push(head);
            if s.write_all(answer).is_err() || close {
                return;
            }
        }
    });
    (b, heads)
}
