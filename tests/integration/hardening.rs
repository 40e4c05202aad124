//! Edge hardening: lb answers malformed, ambiguous, oversized and slow requests itself
//! and never forwards them; it copes with faulty backends. Requests are written byte for byte on
//! raw `std::net::TcpStream`s so the tests see exactly what went over the wire.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

// ---- raw client -----------------------------------------------------------------------------

/// Everything read from a raw connection until the peer closed it (or the wait ran out).
struct Raw {
    bytes: Vec<u8>,
    /// The peer closed the connection (EOF or reset) within the wait.
    closed: bool,
    /// Time from the end of our write to the close (or the end of the wait).
    elapsed: Duration,
}

impl Raw {
    fn status(&self) -> Option<u16> {
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

    fn header(&self, name: &str) -> Option<String> {
        let head = String::from_utf8_lossy(&self.bytes[..self.head_len()?]).into_owned();
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn body(&self) -> &[u8] {
        self.head_len().map_or(&[][..], |n| &self.bytes[n..])
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the peer closes or `wait` passes.
fn read_until_close(s: &mut TcpStream, wait: Duration) -> Raw {
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
fn exchange(addr: SocketAddr, req: &[u8]) -> Raw {
    let mut s = connect(addr);
    // lb may answer and close before it has read everything: a failed write is not an error here.
    let _ = s.write_all(req);
    read_until_close(&mut s, Duration::from_secs(5))
}

/// Reads exactly one response with a Content-Length body (for keep-alive exchanges).
fn read_one(s: &mut TcpStream) -> Raw {
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

fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---- raw backends ---------------------------------------------------------------------------

/// Reads one request (head, then a Content-Length body) from `s`, keeping extra bytes in `buf`.
/// `None` when the connection closes first.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
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

const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok";

fn single(addr: SocketAddr) -> String {
    format!("[upstreams.api]\nbackends = [\"{addr}\"]\n")
}

// ---- requests lb answers itself -------------------------------------------------------------

#[test]
fn malformed_and_oversized_requests_are_refused_and_never_forwarded() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let backend = raw_backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some((head, _)) = read_request(&mut s, &mut buf) {
            log.lock().unwrap().push(head);
            if s.write_all(OK_RESPONSE).is_err() {
                return;
            }
        }
    });
    let lb = Lb::start(&single(backend.addr));

    let big_value = "v".repeat(20 * 1024);
    let uri_9k = format!("/{}", "u".repeat(9 * 1024));
    let uri_100k = format!("/{}", "u".repeat(100 * 1024));
    let headers_101: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let headers_300: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut big_body =
        b"POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 11534336\r\n\r\n".to_vec();
    big_body.extend(std::iter::repeat_n(b'b', 64 * 1024));

    let h =
        |extra: &str| format!("POST /bad HTTP/1.1\r\nHost: a\r\n{extra}\r\n0\r\n\r\n").into_bytes();
    let g = |extra: &str| format!("GET /bad HTTP/1.1\r\nHost: a\r\n{extra}\r\n").into_bytes();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("CL then TE", h("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), &[400]),
        ("TE then CL", h("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), &[400]),
        (
            "CL.TE smuggling",
            b"POST /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            &[400],
        ),
        ("TE chunked, chunked", h("Transfer-Encoding: chunked, chunked\r\n"), &[400]),
        ("TE on two lines", h("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), &[400]),
        ("TE gzip", h("Transfer-Encoding: gzip\r\n"), &[400, 501]),
        ("TE gzip, chunked", h("Transfer-Encoding: gzip, chunked\r\n"), &[400, 501]),
        ("TE xchunked", h("Transfer-Encoding: xchunked\r\n"), &[400, 501]),
        ("TE unknown, chunked", h("Transfer-Encoding: foo, chunked\r\n"), &[400, 501]),
        (
            "TE on HTTP/1.0",
            b"POST /bad HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            &[400],
        ),
        ("two identical CL", g("Content-Length: 0\r\nContent-Length: 0\r\n"), &[400]),
        ("CL list", g("Content-Length: 0, 0\r\n"), &[400]),
        ("differing CL", g("Content-Length: 0\r\nContent-Length: 1\r\n"), &[400]),
        ("negative CL", g("Content-Length: -1\r\n"), &[400]),
        ("signed CL", g("Content-Length: +0\r\n"), &[400]),
        ("hex CL", g("Content-Length: 0x0\r\n"), &[400]),
        ("empty CL", g("Content-Length: \r\n"), &[400]),
        ("space before colon", g("X-A : 1\r\n"), &[400]),
        ("space in name", g("X A: 1\r\n"), &[400]),
        ("empty name", g(": 1\r\n"), &[400]),
        ("no colon", g("X-A\r\n"), &[400]),
        ("SOH in value", g("X-A: a\x01b\r\n"), &[400]),
        ("NUL in value", g("X-A: a\x00b\r\n"), &[400]),
        ("bare CR in value", g("X-A: a\rb\r\n"), &[400]),
        ("DEL in value", g("X-A: a\x7fb\r\n"), &[400]),
        ("obs-fold (space)", g("X-A: a\r\n b\r\n"), &[400]),
        ("obs-fold (tab)", g("X-A: a\r\n\tb\r\n"), &[400]),
        ("HTTP/1.1 without Host", b"GET /bad HTTP/1.1\r\nX-A: 1\r\n\r\n".to_vec(), &[400]),
        ("two Host headers", g("Host: b\r\n"), &[400]),
        ("URI over max_uri_bytes", format!("GET {uri_9k} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(), &[414]),
        ("URI of 100 KiB", format!("GET {uri_100k} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(), &[414]),
        ("20 KiB header", g(&format!("X-Big: {big_value}\r\n")), &[431]),
        ("101 headers", g(&headers_101), &[431]),
        ("300 headers", g(&headers_300), &[431]),
        ("Content-Length over max_body_bytes", big_body, &[413]),
    ];
    let mut failures = Vec::new();
    for (name, req, want) in &cases {
        let r = exchange(lb.addr, req);
        let status = r.status();
        let close = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !status.is_some_and(|s| want.contains(&s)) || !r.closed || !close {
            failures.push(format!(
                "{name}: want {want:?} + Connection: close + closed; got status {status:?}, closed {}, response {:?}",
                r.closed,
                r.text().chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Control: a valid request on the same lb reaches the backend. Nothing else ever did.
    let ok = exchange(
        lb.addr,
        b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.status(), Some(200), "{}", ok.text());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "forwarded: {seen:?}");
    assert!(seen[0].starts_with("GET /good "), "{seen:?}");
    // lb's refusals are counted.
    let m = lb.metrics();
    let refused = metric_sum(&m, "lb_requests_total{backend=\"\",code=\"4")
        + metric_sum(&m, "lb_requests_total{backend=\"\",code=\"5");
    assert_eq!(refused as usize, cases.len(), "{m}");
}

#[test]
fn request_body_limits_for_length_and_chunked_bodies() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "max_body_bytes = 65536");

    // Within the limit: forwarded, both framings.
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 60000\r\n\r\n"
            .to_vec();
    req.extend(std::iter::repeat_n(b'x', 60000));
    let r = exchange(lb.addr, &req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..6 {
        req.extend_from_slice(b"2710\r\n");
        req.extend(std::iter::repeat_n(b'x', 10000));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(lb.addr, &req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let echo: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(echo["body_bytes"], 60000);

    // Over the limit by Content-Length: refused up front.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 65537));
    let r = exchange(lb.addr, &req);
    assert_eq!(r.status(), Some(413), "{}", r.text());
    assert!(r.closed);

    // Over the limit as chunks: counted, refused once past the limit, connection closed.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(b"2710\r\n");
        req.extend(std::iter::repeat_n(b'x', 10000));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(lb.addr, &req);
    assert_eq!(r.status(), Some(413), "{}", r.text());
    assert!(r.closed);
}

// ---- time and connection limits -------------------------------------------------------------

#[test]
fn slowloris_connections_are_cut_by_the_header_deadline_while_others_are_served() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "header_timeout = \"1s\"");

    // Normal clients keep working throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let stop = stop.clone();
        let addr = lb.addr;
        std::thread::spawn(move || {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let s = try_request(addr, "GET", "/", &[], b"").map_or(0, |r| r.status);
                *statuses.entry(s).or_default() += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            statuses
        })
    };

    const N: usize = 200;
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    let start = Instant::now();
    let mut conns: Vec<(TcpStream, Option<Duration>, Vec<u8>)> = (0..N)
        .map(|_| {
            let s = connect(lb.addr);
            s.set_nonblocking(true).unwrap();
            (s, None, Vec::new())
        })
        .collect();
    let mut sent = 0usize;
    let mut next_byte = Instant::now();
    while conns.iter().any(|c| c.1.is_none()) && start.elapsed() < Duration::from_secs(10) {
        if Instant::now() >= next_byte {
            // One more byte on every open connection, about once a second.
            let b = head.get(sent).copied().unwrap_or(b'a');
            sent += 1;
            for c in conns.iter_mut().filter(|c| c.1.is_none()) {
                if c.0.write(&[b]).is_err() {
                    c.1 = Some(start.elapsed());
                }
            }
            next_byte += Duration::from_secs(1);
        }
        for c in conns.iter_mut().filter(|c| c.1.is_none()) {
            let mut buf = [0u8; 1024];
            loop {
                match c.0.read(&mut buf) {
                    Ok(0) => {
                        c.1 = Some(start.elapsed());
                        break;
                    }
                    Ok(n) => c.2.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.1 = Some(start.elapsed());
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = normal.join().unwrap();

    let open = conns.iter().filter(|c| c.1.is_none()).count();
    assert_eq!(open, 0, "{open} slow connections still open after 10 s");
    let last = conns.iter().filter_map(|c| c.1).max().unwrap();
    assert!(
        last < Duration::from_millis(2500),
        "last slow connection cut after {last:?}"
    );
    let with_408 = conns
        .iter()
        .filter(|c| c.2.starts_with(b"HTTP/1.1 408"))
        .count();
    let first = conns.iter().filter_map(|c| c.1).min().unwrap();
    eprintln!(
        "slowloris: {N} trickling connections cut between {first:?} and {last:?}, {with_408} with a 408; normal clients: {statuses:?}"
    );
    assert!(with_408 >= N * 9 / 10, "only {with_408} of {N} got a 408");
    let total: usize = statuses.values().sum();
    assert!(total >= 20, "{statuses:?}");
    assert_eq!(
        statuses.get(&200),
        Some(&total),
        "normal clients: {statuses:?}"
    );
    assert!(lb.metrics().contains("code=\"408\""));
}

#[test]
fn header_deadline_is_total_not_per_read() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "header_timeout = \"1s\"");
    // First request on a keep-alive connection, then a second head trickled in byte by byte: the
    // deadline runs from its first byte, not from each read.
    let mut s = connect(lb.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut s).status(), Some(200));
    // Inherent: the connection must sit idle longer than header_timeout (1 s) to show that the
    // idle time does not count towards the next head's deadline.
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
    {
        let _ = s.write_all(&[*b]);
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => closed = true,
        }
        if closed || !got.is_empty() || start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let took = start.elapsed();
    let rest = read_until_close(&mut s, Duration::from_secs(3));
    got.extend_from_slice(&rest.bytes);
    let r = Raw {
        bytes: got,
        closed: closed || rest.closed,
        elapsed: took,
    };
    assert!(r.closed, "still open after {took:?}");
    assert_eq!(r.status(), Some(408), "{}", r.text());
    assert!(took > Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[test]
fn idle_keepalive_connections_are_closed() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "keepalive_timeout = \"1s\"");
    let mut s = connect(lb.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.status(), Some(200));
    // Kept alive, and said so: not a close in any spelling.
    assert_eq!(
        r.header("connection").as_deref(),
        Some("keep-alive"),
        "{}",
        r.text()
    );
    let idle = read_until_close(&mut s, Duration::from_secs(5));
    eprintln!(
        "keep-alive idle: closed after {:?} (keepalive_timeout 1s)",
        idle.elapsed
    );
    assert!(idle.closed && idle.bytes.is_empty(), "{}", idle.text());
    assert!(
        idle.elapsed > Duration::from_millis(800) && idle.elapsed < Duration::from_millis(2500),
        "closed after {:?}",
        idle.elapsed
    );
}

#[test]
fn stalled_request_body_times_out() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "body_timeout = \"1s\"");
    let mut s = connect(lb.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let r = read_until_close(&mut s, Duration::from_secs(5));
    eprintln!(
        "stalled body: {:?} after {:?} (body_timeout 1s)",
        r.status(),
        r.elapsed
    );
    assert!(r.closed, "still open: {}", r.text());
    assert_eq!(r.status(), Some(408), "{}", r.text());
    assert!(
        r.elapsed > Duration::from_millis(800) && r.elapsed < Duration::from_millis(3000),
        "closed after {:?}",
        r.elapsed
    );
}

#[test]
fn connection_cap_sheds_new_connections_only() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "max_connections = 8");
    // The readiness probe's connection must be gone before we fill the cap.
    wait_for("no client connections", Duration::from_secs(5), || {
        (lb.status_json()["downstream_connections"] == 0).then_some(())
    });
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(lb.addr);
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            assert_eq!(read_one(&mut s).status(), Some(200));
            s
        })
        .collect();
    // The 9th connection is shed: a 503 and a close, never a hang.
    let shed = exchange(lb.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(shed.closed, "{}", shed.text());
    assert_eq!(shed.status(), Some(503), "{}", shed.text());
    // Established connections are not harmed.
    for s in held.iter_mut() {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_one(s).status(), Some(200));
    }
    // A freed slot is usable again.
    drop(held.pop());
    let r = wait_for("a free connection slot", Duration::from_secs(5), || {
        let r = exchange(
            lb.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        (r.status() == Some(200)).then_some(r)
    });
    assert_eq!(r.status(), Some(200));
}

// ---- headers lb sets ------------------------------------------------------------------------

fn echo_headers(r: &Raw) -> Vec<(String, String)> {
    let echo: serde_json::Value = serde_json::from_slice(r.body()).expect("echo JSON");
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn forwarded_headers_from_untrusted_clients_are_replaced() {
    let a = Backend::start("a");
    let req = b"GET /echo HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n";

    let lb = Lb::start(&single(a.addr));
    let r = exchange(lb.addr, req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let h = echo_headers(&r);
    assert_eq!(all(&h, "x-forwarded-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(all(&h, "x-forwarded-proto"), ["http"], "{h:?}");
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example.com"], "{h:?}");

    // From a trusted proxy the chain is kept and extended.
    let lb = Lb::start_with(&single(a.addr), "trusted_proxies = [\"127.0.0.0/8\"]");
    let r = exchange(lb.addr, req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let h = echo_headers(&r);
    let xff = all(&h, "x-forwarded-for");
    assert_eq!(xff.len(), 1, "{h:?}");
    assert!(
        xff[0].starts_with("6.6.6.6") && xff[0].ends_with(", 127.0.0.1"),
        "{h:?}"
    );
    assert_eq!(all(&h, "x-forwarded-proto"), ["https"], "{h:?}");
    assert_eq!(all(&h, "x-forwarded-host"), ["evil.example"], "{h:?}");
}

// ---- upgrades -------------------------------------------------------------------------------

const WS_UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[test]
fn websocket_bytes_are_tunnelled_after_101() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let mut s = connect(lb.addr);
    s.write_all(WS_UPGRADE).unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.status(), Some(101), "{}", r.text());
    assert_eq!(
        r.header("upgrade")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("websocket")
    );
    for msg in [&b"hello"[..], b"\x00\x01binary\xff", &[b'z'; 70000]] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn bytes_after_a_refused_upgrade_are_not_tunnelled() {
    // The backend takes 300 ms, then refuses every upgrade with a plain 200; it records every
    // byte it receives.
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = seen.clone();
    let backend = raw_backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some((head, _)) = read_request(&mut s, &mut buf) {
            log.lock().unwrap().extend_from_slice(head.as_bytes());
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(OK_RESPONSE).is_err() {
                return;
            }
        }
        log.lock().unwrap().extend_from_slice(&buf);
    });
    let lb = Lb::start(&single(backend.addr));
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

    // Extra bytes in the same write as the upgrade request...
    let mut req = WS_UPGRADE.to_vec();
    req.extend_from_slice(smuggled);
    let r = exchange(lb.addr, &req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    // ... and sent while lb waits for the backend's answer.
    let mut s = connect(lb.addr);
    s.write_all(WS_UPGRADE).unwrap();
    // Inherent: lands the extra bytes inside the backend's 300 ms think time.
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.write_all(smuggled);
    let r = read_until_close(&mut s, Duration::from_secs(3));
    assert!(r.closed, "{}", r.text());

    // Inherent: the assertion is that nothing arrives, so watch the backend for a bounded while
    // (its 300 ms think time) after lb closed the client; there is no event for "never sent".
    std::thread::sleep(Duration::from_millis(300));
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(seen.starts_with("GET /ws "), "{seen:?}");
    assert!(
        !seen.contains("/smuggled"),
        "bytes after a refused upgrade reached the backend: {seen:?}"
    );
}

// ---- faulty backends ------------------------------------------------------------------------

/// Whether a raw response's body is complete per its own framing.
fn body_complete(r: &Raw) -> bool {
    if let Some(len) = r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        return r.body().len() >= len;
    }
    if r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return r.body().ends_with(b"0\r\n\r\n");
    }
    r.closed // close-delimited: complete by definition, which is exactly what must not happen
}

#[test]
fn backend_dying_mid_response_aborts_the_client_response() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.api.passive]\nconsecutive_failures = 0\n",
        a.addr
    ));
    for path in ["/fault/close-mid-body", "/fault/close-mid-chunked"] {
        let r = exchange(
            lb.addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status(), Some(200), "{path}: {}", r.text());
        assert!(r.closed, "{path}: connection left open: {}", r.text());
        assert!(
            r.header("content-length").is_some() || r.header("transfer-encoding").is_some(),
            "{path}: response turned close-delimited, so truncation is invisible: {}",
            r.text()
        );
        assert!(
            !body_complete(&r),
            "{path}: the client got a clean, complete-looking body: {:?}",
            r.text()
        );
        assert!(
            r.body().windows(10).any(|w| w == b"0123456789"),
            "{path}: {}",
            r.text()
        );
    }
    // One error per aborted response, counted once the request is logged.
    let prefix = format!("lb_upstream_errors_total{{backend=\"{}\"", a.addr);
    wait_for("both failures counted", Duration::from_secs(5), || {
        (metric_sum(&lb.metrics(), &prefix) >= 2.0).then_some(())
    });
    let m = lb.metrics();
    assert_eq!(
        metric_sum(&m, &prefix),
        2.0,
        "failures counted once each:\n{m}"
    );
}

#[test]
fn slow_backend_is_504_within_read_timeout() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\nread_timeout = \"2s\"\n",
        a.addr
    ));
    let start = Instant::now();
    let r = exchange(lb.addr, b"GET /delay/6000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let took = start.elapsed();
    eprintln!("slow backend: 504 after {took:?} (read_timeout 2s)");
    assert_eq!(r.status(), Some(504), "{}", r.text());
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_millis(2200),
        "504 after {took:?}, want 2 s ± 10%"
    );
}

#[test]
fn garbage_from_backend_is_502() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let r = exchange(lb.addr, b"GET /fault/garbage HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{}", r.text());
    let r = exchange(lb.addr, b"GET /fault/close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{}", r.text());
}

/// A backend that serves one request per connection and then, without saying so, closes the
/// kept-alive connection as soon as the next request arrives (as a server whose idle timeout
/// fired does). Returns the backend and the number of requests it answered.
fn one_shot_backend() -> (RawBackend, Arc<Mutex<Vec<String>>>) {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let log = answered.clone();
    let b = raw_backend(move |mut s| {
        let mut buf = Vec::new();
        if let Some((head, body)) = read_request(&mut s, &mut buf) {
            log.lock().unwrap().push(format!(
                "{} {}",
                head.lines().next().unwrap_or(""),
                body.len()
            ));
            let _ = s.write_all(OK_RESPONSE);
        }
        // The next request's first bytes, then a silent close.
        let mut byte = [0u8; 1];
        let _ = s.read(&mut byte);
    });
    (b, answered)
}

#[test]
fn stale_pooled_connection_is_retried_transparently() {
    let (b, answered) = one_shot_backend();
    let lb = Lb::start(&single(b.addr));
    let mut conn = Conn::open(lb.addr).unwrap();
    for i in 0..5 {
        let r = conn.send("GET", &format!("/stale/{i}"), &[], b"").unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok");
    }
    let answered = answered.lock().unwrap();
    assert_eq!(answered.len(), 5, "{answered:?}");
    // One connection per request: each stale pooled one was resent on exactly one new one.
    assert_eq!(b.conns.load(Ordering::SeqCst), 5);

    // A backend that closes right after each response, still without `Connection: close`:
    // whether lb notices the close while the connection is pooled or only when it reuses it,
    // the client never sees the difference.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let b = raw_backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_some() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(OK_RESPONSE);
        }
    });
    let lb = Lb::start(&single(b.addr));
    let mut conn = Conn::open(lb.addr).unwrap();
    for i in 0..30 {
        let r = conn
            .send("GET", &format!("/closing/{i}"), &[], b"")
            .unwrap();
        assert_eq!((r.status, r.text()), (200, "ok".to_string()), "request {i}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 30);
}

#[test]
fn post_body_already_sent_is_not_replayed() {
    // Backends that read a whole request and then die without answering.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mk = || {
        let log = received.clone();
        raw_backend(move |mut s| {
            let mut buf = Vec::new();
            if let Some((head, body)) = read_request(&mut s, &mut buf) {
                log.lock().unwrap().push(format!(
                    "{} {}",
                    head.lines().next().unwrap_or(""),
                    body.len()
                ));
            }
        })
    };
    let (b1, b2) = (mk(), mk());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{}\"]\nretries = 2\n[upstreams.api.passive]\nconsecutive_failures = 0\n",
        b1.addr, b2.addr
    ));
    let r = exchange(
        lb.addr,
        b"POST /once HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"pay\": 1000}",
    );
    assert_eq!(r.status(), Some(502), "{}", r.text());
    // No wait needed: a backend logs a request before it closes the connection, and lb answers
    // 502 only after that close, so a replay would already be in the log.
    assert_eq!(
        b1.conns.load(Ordering::SeqCst) + b2.conns.load(Ordering::SeqCst),
        1
    );
    assert_eq!(
        *received.lock().unwrap(),
        ["POST /once HTTP/1.1 13"],
        "replayed"
    );

    // Same on a reused upstream connection that dies after reading the POST: not replayed either.
    let (b, answered) = one_shot_backend();
    let lb = Lb::start(&single(b.addr));
    let mut s = connect(lb.addr);
    s.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).status(), Some(200));
    s.write_all(b"POST /once HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.status(), Some(502), "{}", r.text());
    // As above: a replay on a new connection would be logged before lb could answer at all.
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "a new upstream connection"
    );
    let answered = answered.lock().unwrap();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert!(
        answered.iter().all(|a| !a.starts_with("POST")),
        "{answered:?}"
    );
}

#[test]
fn half_closed_client_still_gets_its_response() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let mut s = connect(lb.addr);
    s.write_all(b"GET /delay/300 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_until_close(&mut s, Duration::from_secs(5));
    assert_eq!(r.status(), Some(200), "{}", r.text());
    assert!(r.text().contains("slept_ms"), "{}", r.text());

    let body = br#"{"items": [1, 2, 3]}"#;
    let mut s = connect(lb.addr);
    let mut req = format!(
        "POST /loadTest HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_until_close(&mut s, Duration::from_secs(5));
    assert_eq!(r.status(), Some(200), "{}", r.text());
    assert!(r.text().contains("\"bytes\":20"), "{}", r.text());
}

// ---- config loader robustness ---------------------------------------------------------------

mod config_fuzz {
    use proptest::prelude::*;

    const BASE: &str = r#"[server]
listen = ["127.0.0.1:8080"]
threads = 2
grace_period = "10s"
access_log = "off"
trusted_proxies = ["10.0.0.0/8", "::1"]
max_header_bytes = 16384
max_headers = 100
max_uri_bytes = 8192
max_body_bytes = 10485760
header_timeout = "10s"
body_timeout = "30s"
keepalive_timeout = "60s"
max_connections = 10000

[admin]
listen = "127.0.0.1:9090"

[upstreams.api]
strategy = "least_connections"
backends = [{ address = "127.0.0.1:9001", weight = 3 }, { address = "127.0.0.1:9002" }, "127.0.0.1:9003"]
connect_timeout = "1s"
read_timeout = "30s"
retries = 2

[upstreams.api.health_check]
type = "http"
path = "/healthz"
expected_status = "200-399"
interval = "2s"
timeout = "1s"

[upstreams.api.passive]
consecutive_failures = 5
ejection_time = "10s"

[upstreams.web]
backends = ["127.0.0.1:9004"]

[[routes]]
host = "api.example.com"
path_prefix = "/api"
upstream = "api"

[[routes]]
path_prefix = "/"
upstream = "web"
"#;

    /// Snippets spliced into the text: TOML punctuation, odd values, keys and tables.
    const SNIPPETS: &[&str] = &[
        "=",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        ",",
        "\n",
        "#",
        ".",
        "-1",
        "0",
        "1e999",
        "99999999999999999999",
        "\"0s\"",
        "\"1x\"",
        "\"\"",
        "true",
        "[[routes]]\n",
        "[upstreams.api]\n",
        "[upstreams.\"\"]\n",
        "weight = 0",
        "retries = -5",
        "upstream = \"nope\"",
        "strategy = \"fastest\"",
        "listen = []",
        "backends = []",
        "address = \"127.0.0.1:0\"",
        "address = \"no-port\"",
        "\"[::1]:80\"",
        "\"127.0.0.1:99999\"",
        "expected_status = \"500-100\"",
        "path_prefix = \"no-slash\"",
        "\u{feff}",
        "\u{0}",
        "é",
    ];

    /// Byte ranges of the `"127.0.0.1:900N"` backend literals in `text`. They are kept intact so
    /// that no mutation makes the loader ask DNS anything.
    fn literals(text: &str) -> Vec<std::ops::Range<usize>> {
        text.match_indices("\"127.0.0.1:900")
            .map(|(i, _)| i..i + 16)
            .collect()
    }

    fn mutate(mut text: String, (op, pos, len, snip): (usize, usize, usize, usize)) -> String {
        let lits = literals(&text);
        let mut pos = pos.min(text.len());
        while !text.is_char_boundary(pos) || lits.iter().any(|r| pos > r.start && pos < r.end) {
            pos -= 1;
        }
        match op {
            0 => text.insert_str(pos, SNIPPETS[snip]),
            1 => {
                let mut end = (pos + len).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                if !lits.iter().any(|r| pos < r.end && end > r.start) {
                    text.replace_range(pos..end, "");
                }
            }
            2 => {
                // Duplicate a line at the end.
                let line = text
                    .lines()
                    .nth(pos % text.lines().count().max(1))
                    .unwrap_or("")
                    .to_string();
                text.push('\n');
                text.push_str(&line);
            }
            _ => {
                // Replace the value of one `key = value` line with a snippet.
                let n = text.lines().count().max(1);
                let lines: Vec<String> = text
                    .lines()
                    .enumerate()
                    .map(|(j, l)| match l.split_once(" = ") {
                        Some((k, _)) if j == pos % n && !l.contains("127.0.0.1:900") => {
                            format!("{k} = {}", SNIPPETS[snip])
                        }
                        _ => l.to_string(),
                    })
                    .collect();
                text = lines.join("\n");
            }
        }
        text
    }

    fn mutated() -> impl Strategy<Value = String> {
        // Value swaps (op 3) keep the TOML valid more often than splices and deletions.
        let op = prop::sample::select(vec![0usize, 1, 2, 3, 3, 3]);
        prop::collection::vec((op, 0..BASE.len(), 0usize..40, 0..SNIPPETS.len()), 1..4)
            .prop_map(|ops| ops.into_iter().fold(BASE.to_string(), mutate))
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        match lb::config::parse(text) {
            Ok(_) => Ok(()),
            Err(problems) => {
                prop_assert!(!problems.is_empty(), "rejected without a problem: {text:?}");
                Ok(())
            }
        }
    }

    #[test]
    fn base_config_is_valid() {
        lb::config::parse(BASE).expect("the fuzz base parses");
    }

    /// The mutations are not all TOML syntax errors: many reach validation, some still pass.
    #[test]
    fn mutations_reach_validation() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut ok, mut syntax, mut invalid) = (0, 0, 0);
        for _ in 0..300 {
            let text = mutated().new_tree(&mut runner).unwrap().current();
            match lb::config::parse(&text) {
                Ok(_) => ok += 1,
                Err(p) if p.iter().any(|p| p.message.contains("TOML")) => syntax += 1,
                Err(_) => invalid += 1,
            }
        }
        eprintln!("mutated configs: {ok} valid, {syntax} syntax errors, {invalid} invalid");
        assert!(
            ok >= 10 && invalid >= 30,
            "{ok} valid, {syntax} syntax, {invalid} invalid"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics_on_mutated_config(text in mutated()) {
            check(&text)?;
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            check(&text)?;
        }
    }
}
