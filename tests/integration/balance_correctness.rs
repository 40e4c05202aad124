//! Balancing and backend-state behaviour that must hold at any request rate: slow start for any
//! weight and for backends added later, health state following the config, bounded resends and
//! answers counted against the backend that gave them.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

fn hc() -> &'static str {
    "[upstreams.api.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n"
}

/// Share of `backend` among `n` sequential requests (one client, so least_connections always sees
/// every backend idle and must fall back to its weighted tie-break).
fn sequential_share(lb: &Lb, backend: &str, n: usize) -> f64 {
    let (statuses, backends) = load(lb.addr, "/", 1, n);
    assert_eq!(statuses.get(&200), Some(&n), "{statuses:?}");
    *backends.get(backend).unwrap_or(&0) as f64 / n as f64
}

fn slow_start_recovered(strategy: &str) {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Lb::start(&format!(
        "[upstreams.api]\nstrategy = \"{strategy}\"\n{}\n{}[upstreams.api.passive]\nslow_start = \"60s\"\n",
        backends_toml(&[(&a, 1), (&b, 1), (&c, 1)]),
        hc()
    ));
    let addr = c.addr.to_string();
    c.set_health(false);
    wait_for("c down", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "down").then_some(())
    });
    c.set_health(true);
    wait_for("c up", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "up").then_some(())
    });
    // A few seconds into a 60 s ramp, c's weight is a few percent of 1: far below a third.
    let share = sequential_share(&lb, "c", 300);
    assert!(
        share < 0.1,
        "{strategy}: recovered weight-1 backend got {share:.3} of requests (full weight: 0.333)"
    );
    let s = lb.status_json();
    let eff = s["upstreams"]["api"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr.as_str())
        .unwrap()["effective_weight"]
        .as_f64()
        .unwrap();
    assert!(
        eff > 0.0 && eff < 0.5,
        "effective weight {eff} while ramping: {s}"
    );
}

#[test]
fn slow_start_ramps_recovered_weight_one_backend_round_robin() {
    slow_start_recovered("round_robin");
}

#[test]
fn slow_start_ramps_recovered_weight_one_backend_least_connections() {
    slow_start_recovered("least_connections");
}

fn slow_start_added(strategy: &str) {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let body = |list: &[(&Backend, u32)]| {
        format!(
            "[upstreams.api]\nstrategy = \"{strategy}\"\n{}\n[upstreams.api.passive]\nslow_start = \"60s\"\n",
            backends_toml(list)
        )
    };
    let lb = Lb::start(&body(&[(&a, 1), (&b, 1)]));
    // Backends present at start-up take their full share at once: round-robin alternates exactly;
    // least_connections may see a's last request still in flight and break the tie differently.
    let share = sequential_share(&lb, "a", 100);
    if strategy == "round_robin" {
        assert_eq!(share, 0.5, "a's share at start");
    } else {
        assert!((0.4..=0.6).contains(&share), "a's share at start {share}");
    }
    lb.write_config(&body(&[(&a, 1), (&b, 1), (&c, 1)]));
    let (code, answer) = lb.reload();
    assert_eq!(code, 200, "{answer}");
    let share = sequential_share(&lb, "c", 300);
    assert!(
        share < 0.1,
        "{strategy}: backend added by reload got {share:.3} of requests at once (full weight: 0.333)"
    );
}

#[test]
fn slow_start_ramps_backend_added_by_reload_round_robin() {
    slow_start_added("round_robin");
}

#[test]
fn slow_start_ramps_backend_added_by_reload_least_connections() {
    slow_start_added("least_connections");
}

#[test]
fn removing_health_check_frees_down_backends() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let upstream = format!("[upstreams.api]\n{}\n", backends_toml(&[(&a, 1), (&b, 1)]));
    let lb = Lb::start(&format!("{upstream}{}", hc()));
    a.set_health(false);
    b.set_health(false);
    for x in [&a, &b] {
        let addr = x.addr.to_string();
        wait_for("down", Duration::from_secs(5), || {
            (lb.backend_state("api", &addr) == "down").then_some(())
        });
    }
    assert_eq!(lb.get("/").status, 503);
    // Without active checks only passive ejection decides: the backends serve again.
    lb.write_config(&upstream);
    let (code, answer) = lb.reload();
    assert_eq!(code, 200, "{answer}");
    for x in [&a, &b] {
        assert_eq!(lb.backend_state("api", &x.addr.to_string()), "up");
    }
    let (statuses, _) = load(lb.addr, "/", 1, 10);
    assert_eq!(statuses.get(&200), Some(&10), "{statuses:?}");
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
