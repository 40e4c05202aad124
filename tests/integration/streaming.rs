//! Bodies and connections passed through: POST bodies both ways, HTTP/1.1 pipelining (answers in
//! order, whatever the bodies' framing; nothing left waiting after a closing answer), WebSocket
//! bytes tunnelled only after the backend's 101, a client that half-closes after its request
//! still answered, and full-duplex exchanges (a backend that answers while it reads the body). A client going away mid-request is `client_close.rs`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::raw::*;
use crate::support::*;

#[test]
fn post_body_is_proxied_both_ways() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr));
    let body = format!(
        "{{\"items\": [{}]}}",
        (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = request(
        lb.addr,
        "POST",
        "/loadTest",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], body.len());
    let bad = request(lb.addr, "POST", "/loadTest", &[], b"not json");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("JSON"), "{}", bad.text());
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ));
    let get = |n: u32| format!("GET /echo?n={n} HTTP/1.1\r\nHost: t\r\n\r\n");

    let (_, rs) = pipeline(lb.addr, &format!("{}{}{}", get(1), get(2), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    // A fresh lb's round-robin starts at the first backend and alternates.
    let backends: Vec<String> = rs.iter().map(|r| r.backend()).collect();
    assert_eq!(backends, ["a", "b", "a"]);

    let post = "POST /echo?n=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world";
    let (_, rs) = pipeline(lb.addr, &format!("{}{post}{}", get(1), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    assert_eq!(rs[1].json()["body_bytes"], 11);

    let chunked = "POST /echo?n=2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let (mut c, rs) = pipeline(lb.addr, &format!("{}{chunked}{}", get(1), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    assert_eq!(rs[1].json()["body_bytes"], 11);
    // The connection is still good for more.
    assert_eq!(c.send("GET", "/echo?n=4", &[], b"").unwrap().status, 200);

    // Answers lb gives itself (400 for a path above /) keep their place in line.
    let (_, rs) = pipeline(
        lb.addr,
        &format!("{}GET /../x HTTP/1.1\r\nHost: t\r\n\r\n{}", get(1), get(3)),
        3,
    );
    let status: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(status, [200, 400, 200]);
    assert_eq!(echo_path(&rs[2]), "/echo?n=3");
}

#[test]
fn pipelined_requests_after_a_closing_answer_are_not_left_waiting() {
    let a = Backend::start("a");
    let dead = free_port();
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.dead]\nbackends = [\"127.0.0.1:{dead}\"]\nretries = 0\n\
         [[routes]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
        a.addr
    ));
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n");
    // A 502 closes the client connection: the requests after it get no answer and the client
    // sees the close at once (it may retry them on a new connection).
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{}{}{}", get("/echo"), get("/dead"), get("/echo")),
        2,
    );
    assert_eq!((rs[0].status, rs[1].status), (200, 502));
    assert_closed(&mut c);
    // A refused (ambiguous) request: answered, then closed.
    let bad = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{}{bad}{}", get("/echo"), get("/echo")),
        2,
    );
    assert_eq!((rs[0].status, rs[1].status), (200, 400));
    assert_closed(&mut c);
}

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

/// With `client_close = "finish"` (the default is NGINX's abort: `flow_control`).
#[test]
fn half_closed_client_still_gets_its_response() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "client_close = \"finish\"");
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

/// A backend that streams the body back as it reads it, 64 KiB at a time, blocking on each write:
/// if lb stopped reading the answer while it writes the body (or the other way round), both
/// would wait for each other for ever.
fn echo_while_reading_backend() -> RawBackend {
    raw_backend(|mut s| {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
            .unwrap_or(0);
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if s.write_all(answer.as_bytes()).is_err() || s.write_all(&buf[head_end..]).is_err() {
            return;
        }
        let mut left = len - (buf.len() - head_end);
        while left > 0 {
            let n = match s.read(&mut chunk[..left.min(64 * 1024)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    })
}

/// Uploads `len` bytes through lb while reading the answer at the same time (a writer thread),
/// as a full-duplex client does; the answer's status and body length.
fn upload_while_reading(lb: std::net::SocketAddr, len: usize) -> (u16, usize) {
    let s = connect(lb);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
        w.write_all(head.as_bytes())?;
        let piece = vec![b'u'; 256 * 1024];
        for _ in 0..len / piece.len() {
            w.write_all(&piece)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let r = Conn::from_stream(s).unwrap().read_response(false);
    let r = r.unwrap_or_else(|e| panic!("the answer to the upload: {e}"));
    writer.join().unwrap().unwrap();
    (r.status, r.body.len())
}

#[test]
fn a_backend_answering_while_it_reads_a_large_upload_is_served_both_ways_at_once() {
    const LEN: usize = 32 << 20;
    let b = echo_while_reading_backend();
    let lb = Lb::start_with(&single(b.addr), "max_body_bytes = 67108864");
    assert_eq!(upload_while_reading(lb.addr, LEN), (200, LEN));
}

/// The same over an HTTP/2 backend stream: tests/h2/duplex_echo.py (the `h2` library) echoes as
/// it reads and gives back window only once the echo is out, so every byte of the upload goes up
/// through lb's flow-controlled, cancel-safe writes while the echo comes down. (Before lb wrote
/// and read in one poll, this exchange happened to complete anyway: the client's body pieces are
/// far smaller than lb's 1 MiB stream window, which lb drained between them.)
#[test]
fn an_http2_backend_answering_while_it_reads_a_large_upload_is_served_both_ways_at_once() {
    const LEN: usize = 32 << 20;
    let b = H2EchoBackend::start();
    let lb = Lb::start_with(
        &format!(
            "[upstreams.api]\nprotocol = \"http2\"\nbackends = [\"{}\"]\n",
            b.addr
        ),
        "max_body_bytes = 67108864",
    );
    assert_eq!(upload_while_reading(lb.addr, LEN), (200, LEN));
}
