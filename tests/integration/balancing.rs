//! Balancing: smooth weighted round robin's exact sequence, least connections steering away from
//! a slow backend (and in-flight counts back to zero), slow start for a recovered backend and for
//! one added by a reload under either strategy, and health state following the config (removing
//! the health check frees backends it had marked down).

use std::time::Duration;

use crate::support::*;

#[test]
fn smooth_weighted_round_robin_exact_sequence() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n",
        backends_toml(&[(&a, 5), (&b, 1), (&c, 1)])
    ));
    let mut conn = Conn::open(lb.addr).unwrap();
    let seq: Vec<String> = (0..700)
        .map(|_| conn.send("GET", "/", &[], b"").unwrap().backend())
        .collect();
    let expected: Vec<&str> = "a a b a c a a".split(' ').collect();
    for (i, got) in seq.iter().enumerate() {
        assert_eq!(
            got,
            expected[i % 7],
            "request {i}: sequence {:?}",
            &seq[..14]
        );
    }
    let count = |n: &str| seq.iter().filter(|s| *s == n).count();
    assert_eq!((count("a"), count("b"), count("c")), (500, 100, 100));
}

#[test]
fn least_connections_avoids_slow_backend() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let slow = Backend::start_with("slow", &["--delay", "200ms"]);
    let list = backends_toml(&[(&a, 1), (&b, 1), (&slow, 1)]);
    let lb = Lb::start(&format!(
        "[upstreams.api]\nstrategy = \"least_connections\"\n{list}\n"
    ));
    let (statuses, backends) = load(lb.addr, "/", 32, 3000 / 32);
    let total: usize = statuses.values().sum();
    assert_eq!(statuses.get(&200), Some(&total), "{statuses:?}");
    let slow_share = *backends.get("slow").unwrap_or(&0) as f64 / total as f64;
    assert!(
        slow_share < 0.10,
        "slow backend got {slow_share:.3} of requests: {backends:?}"
    );
    assert_in_flight_zero(&lb);

    // Round-robin, same set-up: the slow backend gets its third.
    // Round-robin, same set-up: one shared position, so 576 picks give every backend exactly
    // 192, however the 32 clients interleave.
    let lb_rr = Lb::start(&format!(
        "[upstreams.api]\nstrategy = \"round_robin\"\n{list}\n"
    ));
    let (statuses, backends) = load(lb_rr.addr, "/", 32, 576 / 32);
    assert_eq!(statuses.get(&200), Some(&576), "{statuses:?}");
    for name in ["a", "b", "slow"] {
        assert_eq!(backends.get(name), Some(&192), "{name}: {backends:?}");
    }
}

fn assert_in_flight_zero(lb: &Lb) {
    wait_for("in-flight counts back to 0", Duration::from_secs(5), || {
        let s = lb.status_json();
        let all_zero = s["upstreams"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|u| u["backends"].as_array().unwrap().clone())
            .all(|b| b["in_flight"] == 0);
        all_zero.then_some(())
    });
    let m = lb.metrics();
    for line in m.lines().filter(|l| l.starts_with("lb_backend_in_flight{")) {
        assert!(line.ends_with(" 0"), "{line}");
    }
}

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
