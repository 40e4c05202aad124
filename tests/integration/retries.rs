//! Failed and faulty backends: a refused connection or an idempotent request a backend dropped is
//! retried on another backend, a stale pooled connection is resent on transparently (and such
//! resends are bounded and counted), a POST whose body was sent is never replayed; all backends
//! dead or speaking garbage is a 502, slower than `read_timeout` a 504, and a backend dying
//! mid-response aborts the client's response and counts against that backend.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::raw::*;
use crate::support::*;

#[test]
fn closed_port_is_retried_and_all_dead_is_502() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = format!("127.0.0.1:{}", free_port());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{dead}\", \"{}\"]\nconnect_timeout = \"500ms\"\n[upstreams.api.passive]\nconsecutive_failures = 0\n",
        a.addr, b.addr
    ));
    // One client: the order is a, dead, b, so every second request meets the dead port first
    // and its retry takes b — 100 refusals, 100 retries, a and b 100 answers each.
    let (statuses, backends) = load(lb.addr, "/", 1, 200);
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert_eq!(
        (backends.get("a"), backends.get("b")),
        (Some(&100), Some(&100)),
        "{backends:?}"
    );
    let m = lb.metrics();
    let value = |series: &str| {
        m.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<u64>()
                .ok()
        })
    };
    assert_eq!(
        value("lb_retries_total{upstream=\"api\"}"),
        Some(100),
        "retries counted:\n{m}"
    );
    let refused = format!(
        "lb_upstream_errors_total{{backend=\"{dead}\",kind=\"connect_refused\",upstream=\"api\"}}"
    );
    assert_eq!(value(&refused), Some(100), "connect errors counted:\n{m}");

    let (d1, d2) = (free_port(), free_port());
    let lb2 = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"127.0.0.1:{d1}\", \"127.0.0.1:{d2}\"]\n"
    ));
    let r = lb2.get("/");
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("\"api\""),
        "body names the upstream: {}",
        r.text()
    );
}

#[test]
fn idempotent_request_is_retried_when_backend_drops_it() {
    // A backend that reads each request and closes the connection without answering.
    let bad = raw_backend(|mut s| {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
    })
    .addr;
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{bad}\", \"{}\"]\n[upstreams.api.passive]\nconsecutive_failures = 0\n",
        a.addr
    ));
    let mut conn = Conn::open(lb.addr).unwrap();
    for _ in 0..10 {
        let r = conn.send("GET", "/", &[], b"").unwrap();
        assert_eq!((r.status, r.backend().as_str()), (200, "a"));
    }
    // A POST that reached the backend is never replayed: 502 whenever the order gives it the
    // dropping backend, 200 from a otherwise. Ten GETs took 20 picks (each met bad, then a).
    let codes: Vec<u16> = (0..4)
        .map(|_| request(lb.addr, "POST", "/loadTest", &[], b"{}").status)
        .collect();
    assert_eq!(codes, [502, 200, 502, 200]);
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

/// Reads one request head (up to the empty line); false when the connection closed first.
fn read_head(s: &mut std::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[test]
fn stale_connection_resends_are_bounded() {
    // Serves keep-alive requests slowly (so many pooled connections build up), then, once told to,
    // closes every connection as soon as a request arrives: each pooled connection looks stale.
    let drop_mode = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (mode, seen) = (drop_mode.clone(), dropped.clone());
    let backend = raw_backend(move |mut s| {
        while read_head(&mut s) {
            if mode.load(Ordering::SeqCst) {
                seen.fetch_add(1, Ordering::SeqCst);
                return;
            }
            // Slow answers keep 20 concurrent requests on 20 upstream connections.
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\nretries = 1\n[upstreams.api.passive]\nconsecutive_failures = 0\n",
        backend.addr
    ));
    let (statuses, _) = load(lb.addr, "/", 20, 1);
    assert_eq!(statuses.get(&200), Some(&20), "{statuses:?}");
    let pooled = backend.conns.load(Ordering::SeqCst);
    assert!(pooled >= 10, "only {pooled} upstream connections to pool");
    drop_mode.store(true, Ordering::SeqCst);
    let r = lb.get("/");
    assert_eq!(r.status, 502, "{}", r.text());
    let sends = dropped.load(Ordering::SeqCst);
    // retries = 1: two attempts, each with at most one transparent resend.
    assert!(
        sends <= 4,
        "one GET was sent {sends} times ({pooled} pooled connections)"
    );
    let m = lb.metrics();
    let retries: u64 = m
        .lines()
        .find(|l| l.starts_with("lb_retries_total{upstream=\"api\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(retries, sends as u64 - 1, "every resend is counted\n{m}");
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
fn garbage_from_backend_is_502() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let r = exchange(lb.addr, b"GET /fault/garbage HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{}", r.text());
    let r = exchange(lb.addr, b"GET /fault/close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{}", r.text());
}

#[test]
fn backend_read_timeout_is_504() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\nread_timeout = \"300ms\"\n",
        a.addr
    ));
    let started = std::time::Instant::now();
    let r = lb.get("/delay/2000");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(270) && took < Duration::from_millis(1500),
        "took {took:?}"
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
fn mid_body_failure_counts_against_the_backend() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr));
    let mut c = Conn::open(lb.addr).unwrap();
    // The backend sends a 200 head, then dies mid-body: the client sees an aborted response.
    assert!(c.send("GET", "/fault/close-mid-body", &[], b"").is_err());
    let want = format!(
        "lb_requests_total{{backend=\"{}\",code=\"200\",protocol=\"http1\",upstream=\"api\"}} 1",
        a.addr
    );
    let m = wait_for("the request to be counted", Duration::from_secs(5), || {
        let m = lb.metrics();
        m.contains("code=\"200\"").then_some(m)
    });
    assert!(m.contains(&want), "want {want}\n{m}");
    assert!(
        !m.contains("lb_requests_total{backend=\"\",code=\"200\""),
        "counted as lb's own answer\n{m}"
    );
}
