//! Slow, stalled and departed clients: whose fault a stall is and who pays for it. A client that
//! stops sending its body gets 408 after `server.body_timeout` and costs the backend nothing; a
//! client that stops reading is cut after `server.send_timeout` and gives back its backend slot;
//! one that leaves is logged as 499 with its slot freed (`client_close = "abort"`, the default, as
//! NGINX), also while a rate limit delays it; on a shared HTTP/2 backend connection one client
//! that does not read cannot freeze the others' streams.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::raw::{scripted_backend, OK_RESPONSE};
use crate::support::*;

/// lb in front of `backend` (upstream `api`, one passive failure ejects), with `server_extra` in
/// `[server]` and `upstream_extra` in `[upstreams.api]`.
fn lb_for(backend: SocketAddr, server_extra: &str, upstream_extra: &str) -> Lb {
    Lb::start_with(
        &format!(
            "[upstreams.api]\nbackends = [\"{backend}\"]\n{upstream_extra}\n[upstreams.api.passive]\nconsecutive_failures = 1\n"
        ),
        server_extra,
    )
}

fn backend_status(lb: &Lb) -> serde_json::Value {
    lb.status_json()["upstreams"]["api"]["backends"][0].clone()
}

fn wait_in_flight(lb: &Lb, n: u64, bound: Duration) {
    wait_for(&format!("in_flight = {n}"), bound, || {
        (backend_status(lb)["in_flight"].as_u64() == Some(n)).then_some(())
    });
}

/// The sum of `lb_requests_total` series with `code`.
fn requests_with_code(lb: &Lb, code: u16) -> u64 {
    let label = format!("code=\"{code}\"");
    lb.metrics()
        .lines()
        .filter(|l| l.starts_with("lb_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A client socket with a small receive buffer (set before connecting, so the window stays small).
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

#[test]
fn a_stalled_request_body_is_a_408_and_never_the_backends_fault() {
    let a = Backend::start("a");
    // The backend's read timeout is shorter than the body timeout: blaming the backend shows.
    let lb = lb_for(
        a.addr,
        "body_timeout = \"1500ms\"",
        "read_timeout = \"500ms\"",
    );
    for _ in 0..3 {
        let mut s = TcpStream::connect(lb.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(1000), "{answer}");
    }
    let b = backend_status(&lb);
    assert_eq!(
        (b["state"].as_str(), b["errors"].as_u64()),
        (Some("up"), Some(0)),
        "{b}"
    );
    let m = lb.metrics();
    let counted: Vec<_> = m
        .lines()
        .filter(|l| l.starts_with("lb_upstream_errors_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(counted.is_empty(), "{counted:?}");
    assert_eq!(request(lb.addr, "GET", "/", &[], b"").status, 200);
}

#[test]
fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    let a = Backend::start("a");
    let lb = lb_for(a.addr, "send_timeout = \"1s\"", "");
    let mut s = small_window_client(lb.addr);
    s.write_all(b"GET /bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_in_flight(&lb, 1, Duration::from_secs(5));
    let stalled = Instant::now();
    // Never read: lb's writes stall, and after send_timeout it gives up the request.
    wait_in_flight(&lb, 0, Duration::from_secs(10));
    assert!(stalled.elapsed() >= Duration::from_millis(900));
    // The connection is closed: reading what was sent ends (EOF or reset), well short of 50 MB.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < 50_000_000, "{got} bytes");
}

#[test]
fn clients_that_leave_are_499_and_free_their_slot_by_default() {
    let a = Backend::start("a");
    let lb = lb_for(a.addr, "", "");
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr).unwrap();
            s.write_all(b"GET /delay/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    wait_in_flight(&lb, 5, Duration::from_secs(3));
    let gone = Instant::now();
    drop(clients); // a plain close (FIN), as a client that gives up sends
    wait_in_flight(&lb, 0, Duration::from_secs(2));
    assert!(gone.elapsed() < Duration::from_secs(2));
    wait_for("five 499s", Duration::from_secs(2), || {
        (requests_with_code(&lb, 499) == 5).then_some(())
    });
    assert_eq!(requests_with_code(&lb, 200), 0);
    let b = backend_status(&lb);
    assert_eq!(
        (b["state"].as_str(), b["errors"].as_u64()),
        (Some("up"), Some(0)),
        "{b}"
    );
}

#[test]
fn a_request_delayed_by_a_rate_limit_is_not_sent_once_its_client_left() {
    let (backend, heads) = scripted_backend(OK_RESPONSE, false);
    // One request a second and a burst of 5 that waits its turn: the 2nd waits 1 s, the 3rd 2 s.
    let lb = Lb::start(&format!(
        "[rate_limits.slow]\nkey = \"client_ip\"\nrate = \"1/s\"\nburst = 5\n\n[upstreams.api]\nbackends = [\"{}\"]\nrate_limits = [\"slow\"]\n",
        backend.addr
    ));
    assert_eq!(request(lb.addr, "GET", "/first", &[], b"").status, 200);
    let mut delayed = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(lb.addr).unwrap();
        s.write_all(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        delayed.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(delayed); // both leave while delayed
    wait_for("two 499s", Duration::from_secs(5), || {
        (requests_with_code(&lb, 499) == 2).then_some(())
    });
    // Past both delays: still only the first request reached the backend.
    std::thread::sleep(Duration::from_millis(2500));
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
}

#[test]
fn one_client_that_does_not_read_leaves_other_streams_of_a_shared_http2_connection_flowing() {
    let a = Backend::start_with("a", &["--h2c"]);
    // One worker: its pool holds the one backend connection every stream below shares.
    let (port, admin_port) = (free_port(), free_port());
    let dir = temp_dir("h2-window");
    let header = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\""
    );
    let text = format!(
        "{header}\n\n[upstreams.api]\nbackends = [\"{}\"]\nprotocol = \"http2\"\n",
        a.addr
    );
    std::fs::write(dir.join("lb.toml"), text).unwrap();
    let lb = Lb::spawn(dir, port, admin_port, header);
    lb.wait_ready();
    // Warm one backend connection, so that every request below is a stream on it.
    assert_eq!(request(lb.addr, "GET", "/", &[], b"").status, 200);
    let mut stuck = small_window_client(lb.addr);
    stuck
        .write_all(b"GET /bytes/40000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_in_flight(&lb, 1, Duration::from_secs(5));
    // Give the stuck stream time to fill whatever windows it can.
    std::thread::sleep(Duration::from_millis(1500));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let addr = lb.addr;
            std::thread::spawn(move || {
                let mut c = Conn::open(addr).unwrap();
                c.stream()
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                c.send("GET", "/bytes/3000000", &[], b"")
                    .map(|r| (r.status, r.body.len()))
            })
        })
        .collect();
    for r in readers {
        let got = r.join().unwrap();
        assert!(matches!(got, Ok((200, 3_000_000))), "{got:?}");
    }
    drop(stuck);
}
