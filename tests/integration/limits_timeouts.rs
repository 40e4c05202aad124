//! Requests lb answers itself and never forwards: malformed, ambiguous and oversized ones (400,
//! 413, 414, 431, 501, then a close), bodies over `server.max_body_bytes` by length or counted
//! chunks; and the time and connection limits: the header deadline (total, from the first byte;
//! slowloris), idle keep-alive connections, stalled request bodies, `server.max_connections`, and
//! pipelined heads held to the same limits and deadlines. Requests are written byte for byte
//! (`support::raw`) so the tests see exactly what went over the wire.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::raw::*;
use crate::support::*;

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

#[test]
fn pipelined_heads_are_held_to_the_limits_and_deadlines() {
    let a = Backend::start("a");
    let lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr),
        "header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_header_bytes = 4096\nmax_headers = 10",
    );
    let get = "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n";
    // A pipelined head over max_header_bytes or max_headers: the request before it is answered,
    // then 431 and close.
    let big = format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(6000)
    );
    let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    for second in [big, many] {
        let (mut c, rs) = pipeline(lb.addr, &format!("{get}{second}{get}"), 2);
        assert_eq!((rs[0].status, rs[1].status), (200, 431));
        assert_closed(&mut c);
    }
    // A pipelined head that never completes: answered, then closed within the deadlines.
    let started = std::time::Instant::now();
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{get}GET /echo HTTP/1.1\r\nHost: t\r\n"),
        1,
    );
    assert_eq!(rs[0].status, 200);
    match c.read_response(false) {
        Ok(r) => assert_eq!(r.status, 408),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

/// A malformed chunked body is lb's 400, and no backend hears of the request: lb parses the first
/// chunk line before it sends the head upstream (a bad size, one over 16 hex digits, data longer
/// than its size, a bare LF inside the line, which NGINX and httparse read differently).
#[test]
fn malformed_chunked_bodies_are_refused_before_any_backend_sees_the_request() {
    let (b, heads) = scripted_backend(OK_RESPONSE, false);
    let lb = Lb::start(&single(b.addr));
    for (what, body) in [
        ("size not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("17 hex digits", "10000000000000000\r\nx\r\n0\r\n\r\n"),
        (
            "data longer than its size",
            "5\r\nhello, world\r\n0\r\n\r\n",
        ),
        ("bare LF in an extension", "5;a=b\nhello\r\n0\r\n\r\n"),
    ] {
        let req =
            format!("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let r = exchange(lb.addr, req.as_bytes());
        assert_eq!(r.status(), Some(400), "{what}: {}", r.text());
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "{:?}",
        heads.lock().unwrap()
    );
    // A well-formed one, extension included, goes through whole.
    let r = exchange(
        lb.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(r.status(), Some(200), "{}", r.text());
    // (The raw backend reads only heads: the chunked body shows up there as a second "head".)
    let heads = heads.lock().unwrap();
    assert!(heads[0].starts_with("POST /c HTTP/1.1"), "{heads:?}");
}
