//! Active health checks, passive ejection, slow start and the all-down answer.

use std::time::{Duration, Instant};

use crate::support::*;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Time (unix ms) of the newest state-change event for `addr` containing `what`.
fn event_time(lb: &Lb, addr: &str, what: &str) -> u64 {
    let s = lb.status_json();
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| {
            let m = e["message"].as_str().unwrap_or("");
            m.contains(addr) && m.contains(what)
        })
        .and_then(|e| e["time_ms"].as_u64())
        .unwrap_or_else(|| panic!("no event {what} for {addr}: {s}"))
}

fn hc(kind: &str, healthy: u32, unhealthy: u32) -> String {
    format!(
        "[upstreams.api.health_check]\ntype = \"{kind}\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = {healthy}\nunhealthy_threshold = {unhealthy}\n"
    )
}

#[test]
fn http_check_removes_and_restores_backend_without_failures() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n{}",
        backends_toml(&[(&a, 1), (&b, 1), (&c, 1)]),
        hc("http", 2, 2)
    ));
    let traffic = Traffic::start(lb.addr, "/", 4);
    wait_for("traffic", Duration::from_secs(5), || {
        (traffic.seen().len() > 100).then_some(())
    });

    // Bound from the issue: interval × threshold + timeout (×1.1 for the check jitter).
    let bound_ms = (100 * 2) as f64 * 1.1 + 100.0;
    let baddr = b.addr.to_string();
    let down_sent = unix_ms();
    let down_at = Instant::now();
    b.set_health(false);
    wait_for("b marked down", Duration::from_secs(5), || {
        (lb.backend_state("api", &baddr) == "down").then_some(())
    });
    let detect = event_time(&lb, &baddr, "-> down") - down_sent;
    // Small slack for the check itself and the scheduler on a loaded 2-core machine.
    assert!(
        (detect as f64) < bound_ms + 150.0,
        "took {detect} ms to mark b down (bound {bound_ms} ms)"
    );
    let quiet_from = down_at + Duration::from_millis(bound_ms as u64 + 300);
    wait_for("traffic after the bound", Duration::from_secs(5), || {
        (traffic.since(quiet_from + Duration::from_millis(300)).len() > 50).then_some(())
    });
    let after = traffic.since(quiet_from);
    assert!(
        after.iter().all(|s| s.backend != "b"),
        "b still got requests after it was marked down"
    );

    let up_sent = unix_ms();
    b.set_health(true);
    let back = wait_for("b back", Duration::from_secs(5), || {
        (lb.backend_state("api", &baddr) == "up").then(Instant::now)
    });
    let ret = event_time(&lb, &baddr, "-> up") - up_sent;
    assert!(
        (ret as f64) < bound_ms + 150.0,
        "took {ret} ms to return (bound {bound_ms} ms)"
    );
    wait_for("traffic after recovery", Duration::from_secs(5), || {
        (traffic.since(back + Duration::from_millis(50)).len() > 300).then_some(())
    });
    let recent = traffic.since(back + Duration::from_millis(50));
    let share = recent.iter().filter(|s| s.backend == "b").count() as f64 / recent.len() as f64;
    assert!(
        (0.25..0.42).contains(&share),
        "b's share after recovery: {share:.3}"
    );
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "failed requests: {:?}",
        failures(&seen).len()
    );
    eprintln!("http check: marked down {detect} ms after the backend failed, back {ret} ms after it recovered");
    assert!(
        lb.log_text().contains("consecutive failures: status 503"),
        "reason logged"
    );
}

#[test]
fn tcp_check_marks_killed_backend_down() {
    let (a, mut b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n{}",
        backends_toml(&[(&a, 1), (&b, 1)]),
        hc("tcp", 1, 1)
    ));
    let traffic = Traffic::start(lb.addr, "/", 2);
    wait_for("traffic", Duration::from_secs(5), || {
        (traffic.seen().len() > 50).then_some(())
    });
    b.kill();
    let addr = b.addr.to_string();
    wait_for("b down", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "down").then_some(())
    });
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "failures: {:?}",
        failures(&seen)
    );
    assert!(
        lb.log_text().contains("connection refused"),
        "reason logged"
    );
}

#[test]
fn passive_ejection_without_active_checks() {
    let (a, mut b) = (Backend::start("a"), Backend::start("b"));
    let addr = b.addr;
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n[upstreams.api.passive]\nconsecutive_failures = 2\nejection_time = \"300ms\"\nmax_ejection_time = \"2s\"\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ));
    let traffic = Traffic::start(lb.addr, "/", 4);
    wait_for("traffic", Duration::from_secs(5), || {
        (traffic.seen().len() > 50).then_some(())
    });
    b.kill();
    wait_for("b ejected", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr.to_string()) == "ejected").then_some(())
    });
    // The ejection expires, b is tried again, fails and is ejected again (for longer).
    wait_for("b ejected twice", Duration::from_secs(5), || {
        let events = lb.status_json()["events"].to_string();
        (events.matches("ejection expired").count() >= 1
            && events.matches("-> ejected").count() >= 2)
            .then_some(())
    });
    let events = lb.status_json()["events"].to_string();
    assert!(
        events.contains("ejected for 300ms") && events.contains("ejected for 600ms"),
        "doubling: {events}"
    );
    // b comes back on the same address: after its ejection expires it serves again.
    let b2 = Backend::start_at("b", &addr.to_string(), &[]);
    let t = Instant::now();
    wait_for("b serving again", Duration::from_secs(6), || {
        traffic
            .since(t)
            .iter()
            .any(|s| s.backend == "b")
            .then_some(())
    });
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "failed requests: {:?}",
        failures(&seen)
    );
    drop(b2);
}

#[test]
fn max_ejected_percent_holds() {
    let live = Backend::start("live");
    let dead: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{}\", \"{}\", \"{}\"]\nretries = 3\n[upstreams.api.passive]\nconsecutive_failures = 1\nejection_time = \"30s\"\nmax_ejected_percent = 50\n",
        live.addr, dead[0], dead[1], dead[2]
    ));
    let (statuses, _) = load(lb.addr, "/", 2, 50);
    assert_eq!(statuses.get(&200), Some(&100), "{statuses:?}");
    let s = lb.status_json();
    let ejected = s["upstreams"]["api"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "ejected")
        .count();
    assert_eq!(ejected, 2, "50% of 4 backends: {s}");
}

#[test]
fn slow_start_ramps_recovered_backend() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n{}[upstreams.api.passive]\nslow_start = \"3s\"\n",
        backends_toml(&[(&a, 10), (&b, 10)]),
        hc("http", 1, 1)
    ));
    b.set_health(false);
    let addr = b.addr.to_string();
    wait_for("b down", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "down").then_some(())
    });
    let traffic = Traffic::start(lb.addr, "/", 4);
    b.set_health(true);
    wait_for("b up", Duration::from_secs(5), || {
        (lb.backend_state("api", &addr) == "up").then_some(())
    });
    // When lb marked it up (its own event time), on this test's Instant clock.
    let (now, now_ms) = (Instant::now(), unix_ms());
    let up = now - Duration::from_millis(now_ms.saturating_sub(event_time(&lb, &addr, "-> up")));
    // The whole ramp plus the window after it must be observed: wait until traffic covers it.
    wait_for("traffic past the ramp", Duration::from_secs(10), || {
        traffic
            .seen()
            .iter()
            .any(|s| s.at > up + Duration::from_millis(3500))
            .then_some(())
    });
    let seen = traffic.stop();
    let share = |from: u64, to: u64| {
        let w: Vec<_> = seen
            .iter()
            .filter(|s| {
                s.at > up + Duration::from_millis(from) && s.at <= up + Duration::from_millis(to)
            })
            .collect();
        w.iter().filter(|s| s.backend == "b").count() as f64 / w.len().max(1) as f64
    };
    let (early, late) = (share(0, 500), share(2800, 3500));
    eprintln!("slow start: b's share {early:.3} in the first 0.5 s, {late:.3} after 2.8 s");
    assert!(
        early < 0.25,
        "early share {early:.3} (full weight would give 0.5)"
    );
    assert!(late > 0.4, "late share {late:.3}");
    assert!(failures(&seen).is_empty());
}

#[test]
fn all_down_is_503_at_once() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n{}",
        backends_toml(&[(&a, 1), (&b, 1)]),
        hc("http", 1, 1)
    ));
    a.set_health(false);
    b.set_health(false);
    wait_for("all down", Duration::from_secs(5), || {
        let s = lb.status_json();
        s["upstreams"]["api"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["state"] == "down")
            .then_some(())
    });
    let mut conn = Conn::open(lb.addr).unwrap();
    for _ in 0..20 {
        let t = Instant::now();
        let r = conn.send("GET", "/", &[], b"").unwrap();
        assert_eq!(r.status, 503);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "503 took {:?}",
            t.elapsed()
        );
    }
    let log = lb.log_text();
    assert_eq!(
        log.matches("no usable backend").count(),
        1,
        "logged once per state change, not per request:\n{log}"
    );
}

#[test]
fn startup_round_keeps_dead_backend_out_of_first_requests() {
    let a = Backend::start("a");
    let dead = format!("127.0.0.1:{}", free_port());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{dead}\"]\n[upstreams.api.health_check]\ntype = \"tcp\"\ninterval = \"10s\"\ntimeout = \"200ms\"\n",
        a.addr
    ));
    let mut conn = Conn::open(lb.addr).unwrap();
    for _ in 0..10 {
        assert_eq!(conn.send("GET", "/", &[], b"").unwrap().backend(), "a");
    }
    let m = lb.metrics();
    // Series exist at 0 from the start: only non-zero values count.
    let counted = |prefix: &str| {
        m.lines()
            .any(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
    };
    assert!(
        !counted(&format!("lb_upstream_errors_total{{backend=\"{dead}\"")),
        "dead backend was tried:\n{m}"
    );
    assert!(
        !counted("lb_retries_total{upstream=\"api\"}"),
        "no retries needed"
    );
}
