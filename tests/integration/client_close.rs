//! A client that goes away while lb waits for the backend: the request is aborted and its backend
//! slot released at once when the client is provably gone (reset, EOF in the middle of the
//! request), and on a half-close after a complete request as `server.client_close` says. Such a
//! request counts as 499 against the backend it was waiting on and never as a backend failure.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

/// How long a released slot may take to show in `/status`: far below the backend's 5 s delay.
const RELEASE_BOUND: Duration = Duration::from_secs(2);

struct Setup {
    backend: Backend,
    lb: Lb,
    access_log: PathBuf,
}

/// One backend behind lb; a single passive failure would eject it, so a client that goes away
/// being counted against the backend shows up in its state.
fn setup(server_extra: &str) -> Setup {
    let backend = Backend::start("a");
    let access_log = temp_dir("client-close").join("access.log");
    let lb = Lb::start_with(
        &format!(
            "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.api.passive]\nconsecutive_failures = 1\n",
            backend.addr
        ),
        &format!("access_log = \"{}\"\n{server_extra}", access_log.display()),
    );
    Setup {
        backend,
        lb,
        access_log,
    }
}

impl Setup {
    fn backend_status(&self) -> serde_json::Value {
        self.lb.status_json()["upstreams"]["api"]["backends"][0].clone()
    }

    fn in_flight(&self) -> u64 {
        self.backend_status()["in_flight"].as_u64().unwrap()
    }

    fn wait_in_flight(&self, n: u64, bound: Duration) {
        wait_for(&format!("in_flight = {n}"), bound, || {
            (self.in_flight() == n).then_some(())
        });
    }

    /// A client with a request (possibly incomplete) that lb is waiting on the backend for.
    fn waiting_client(&self, request: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(self.lb.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        self.wait_in_flight(1, Duration::from_secs(2));
        s
    }

    fn requests_total(&self, code: u16) -> u64 {
        let series = format!(
            "lb_requests_total{{backend=\"{}\",code=\"{code}\",protocol=\"http1\",upstream=\"api\"}} ",
            self.backend.addr
        );
        self.lb
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
            .unwrap_or(0)
    }

    /// The client's going away was recorded as 499 against the backend it waited on, in the
    /// metrics and the access log, and did not count as a backend failure.
    fn assert_recorded_as_499(&self) {
        wait_for("499 in lb_requests_total", Duration::from_secs(2), || {
            (self.requests_total(499) == 1).then_some(())
        });
        let line = wait_for("an access log line", Duration::from_secs(2), || {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            text.lines().next().map(str::to_owned)
        });
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["status"], 499, "{line}");
        assert_eq!(entry["backend"], self.backend.addr.to_string(), "{line}");
        let m = self.lb.metrics();
        assert!(
            !m.lines()
                .any(|l| l.starts_with("lb_requests_total{") && l.contains("code=\"5")),
            "{m}"
        );
        let b = self.backend_status();
        assert_eq!(
            (b["state"].as_str(), b["errors"].as_u64()),
            (Some("up"), Some(0))
        );
    }
}

/// Reads until the connection closes; the bytes lb sent.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn client_reset_releases_the_backend_slot_at_once() {
    let t = setup("");
    let s = t.waiting_client(b"GET /delay/5000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let gone = Instant::now();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s); // SO_LINGER 0: the close sends a reset
    t.wait_in_flight(0, RELEASE_BOUND);
    assert!(gone.elapsed() < RELEASE_BOUND);
    t.assert_recorded_as_499();
}

#[test]
fn client_eof_in_the_middle_of_the_body_releases_the_slot_at_once() {
    let t = setup("");
    let mut s = t.waiting_client(
        b"POST /delay/5000 HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
    );
    s.shutdown(Shutdown::Write).unwrap();
    t.wait_in_flight(0, RELEASE_BOUND);
    assert_eq!(
        read_to_close(&mut s),
        b"",
        "no answer to an incomplete request"
    );
    t.assert_recorded_as_499();
}

#[test]
fn half_close_after_the_request_aborts_with_client_close_abort() {
    let t = setup("client_close = \"abort\"");
    let mut s = t.waiting_client(b"GET /delay/5000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let gone = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    t.wait_in_flight(0, RELEASE_BOUND);
    assert_eq!(
        read_to_close(&mut s),
        b"",
        "an aborted request gets no answer"
    );
    assert!(gone.elapsed() < RELEASE_BOUND);
    t.assert_recorded_as_499();
}

/// `"finish"` (`streaming::half_closed_client_still_gets_its_response` covers GET and POST; the
/// default is `"abort"`, `flow_control::clients_that_leave_are_499_and_free_their_slot_by_default`):
/// the half-closed client still gets the backend's answer.
#[test]
fn half_close_after_the_request_is_answered_with_client_close_finish() {
    let t = setup("client_close = \"finish\"");
    let mut s = t.waiting_client(b"GET /delay/500 HTTP/1.1\r\nHost: a\r\n\r\n");
    s.shutdown(Shutdown::Write).unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("slept_ms"), "{answer}");
    wait_for("200 in lb_requests_total", Duration::from_secs(2), || {
        (t.requests_total(200) == 1).then_some(())
    });
    assert_eq!(t.requests_total(499), 0);
    t.wait_in_flight(0, Duration::from_secs(2));
}

#[test]
fn unknown_client_close_value_is_a_check_error() {
    let (ok, out) = check_config(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nclient_close = \"later\"\n\n[upstreams.api]\nbackends = [\"127.0.0.1:9000\"]\n",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("server.client_close"), "{out}");
    assert!(out.contains("\"later\""), "{out}");
}
