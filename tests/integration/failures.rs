//! What lb says and counts about failed attempts: one short reason (`connection refused`, `status
//! 503`, …) in its 502 answers and in health events, also once the failing backend is ejected
//! and the last step of a request was finding nothing to retry on; and every failed attempt on a
//! backend counted once under its kind in `lb_upstream_errors_total`, so that, when no request
//! failed, `lb_retries_total` equals the errors counted (every failed attempt was followed by
//! another).

use std::io::Write;
use std::time::Duration;

use crate::support::raw::*;
use crate::support::*;

/// The `/status` timeline's messages.
fn event_messages(lb: &Lb) -> Vec<String> {
    lb.status_json()["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn closed_ports_are_named_in_502s_and_ejection_events() {
    let (d1, d2) = (free_port(), free_port());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"127.0.0.1:{d1}\", \"127.0.0.1:{d2}\"]\nretries = 1\n\
         [upstreams.api.passive]\nconsecutive_failures = 2\n"
    ));
    // The first ejects one backend (2 refusals each); from the third on, the one left is
    // refused and there is no other backend to retry on: still a refused connection.
    for i in 0..4 {
        let r = lb.get("/");
        assert_eq!(r.status, 502, "request {i}: {}", r.text());
        assert!(
            r.text().contains("\"api\"") && r.text().contains(": connection refused"),
            "request {i}: {}",
            r.text()
        );
    }
    let events = event_messages(&lb);
    let ejected: Vec<_> = events.iter().filter(|m| m.contains("-> ejected")).collect();
    assert_eq!(ejected.len(), 1, "{events:?}");
    assert!(
        ejected[0].contains("(2 consecutive failures: connection refused; ejected for"),
        "{events:?}"
    );
    assert!(events.iter().all(|m| !m.contains("  ")), "{events:?}");
}

#[test]
fn failed_active_checks_read_as_one_short_reason() {
    let dead = format!("127.0.0.1:{}", free_port());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{dead}\"]\n[upstreams.api.health_check]\n\
         type = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\n"
    ));
    let events = wait_for("the check's event", Duration::from_secs(5), || {
        let events = event_messages(&lb);
        events
            .iter()
            .any(|m| m.contains("-> down"))
            .then_some(events)
    });
    let down = events.iter().find(|m| m.contains("-> down")).unwrap();
    assert!(
        down.ends_with("(1 failure: connection refused)"),
        "{events:?}"
    );
    assert!(events.iter().all(|m| !m.contains("  ")), "{events:?}");
    let status = lb.status_json();
    let last = &status["upstreams"]["api"]["backends"][0]["last_check_error"];
    assert_eq!(last, "connection refused", "{status}");
}

/// `lb_upstream_errors_total` of `upstream` by kind (non-zero ones), and its sum.
fn errors_by_kind(m: &str, upstream: &str) -> (Vec<String>, f64) {
    let series: Vec<String> = m
        .lines()
        .filter(|l| l.starts_with("lb_upstream_errors_total{"))
        .filter(|l| l.contains(&format!("upstream=\"{upstream}\"")))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_string)
        .collect();
    let sum = metric_sum(&series.join("\n"), "lb_upstream_errors_total");
    (series, sum)
}

#[test]
fn a_backend_killed_under_load_counts_every_retried_attempt() {
    let (a, mut b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n",
        backends_toml(&[(&a, 1), (&b, 1), (&c, 1)])
    ));
    let traffic = Traffic::start(lb.addr, "/", 8);
    wait_for("traffic", Duration::from_secs(5), || {
        (traffic.seen().len() > 300).then_some(())
    });
    b.kill();
    let addr = b.addr.to_string();
    wait_for("b ejected", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "ejected").then_some(())
    });
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "failed requests: {:?}",
        failures(&seen)
    );
    // The last request's counts are made as it is logged, just after its answer went out.
    std::thread::sleep(Duration::from_millis(200));
    let m = lb.metrics();
    let retries = metric_sum(&m, "lb_retries_total{upstream=\"api\"}");
    let (series, errors) = errors_by_kind(&m, "api");
    eprintln!("killed backend: {retries} retries, errors {series:?}");
    assert!(
        errors >= 5.0,
        "b's failures (5 eject it) counted: {series:?}"
    );
    assert_eq!(retries, errors, "retries vs counted failures: {series:?}");
}

#[test]
fn a_reset_after_the_head_counts_as_reset() {
    // Each connection serves one request; on the next one it reads the head and resets the
    // connection (as a backend killed mid-request): lb resends on a fresh connection.
    let b = raw_backend(|mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_none() || s.write_all(OK_RESPONSE).is_err() {
            return;
        }
        if read_request(&mut s, &mut buf).is_some() {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    });
    let lb = Lb::start(&format!(
        "{}[upstreams.api.passive]\nconsecutive_failures = 0\n",
        single(b.addr)
    ));
    let mut conn = Conn::open(lb.addr).unwrap();
    for i in 0..5 {
        let r = conn.send("GET", &format!("/r/{i}"), &[], b"").unwrap();
        assert_eq!((r.status, r.text()), (200, "ok".to_string()), "request {i}");
    }
    std::thread::sleep(Duration::from_millis(100));
    let m = lb.metrics();
    let reset = format!(
        "lb_upstream_errors_total{{backend=\"{}\",kind=\"reset\",upstream=\"api\"}} 4",
        b.addr
    );
    let (series, errors) = errors_by_kind(&m, "api");
    assert!(m.contains(&reset), "want {reset}: {series:?}");
    assert_eq!(errors, 4.0, "{series:?}");
    assert_eq!(metric_sum(&m, "lb_retries_total{upstream=\"api\"}"), 4.0);
}
