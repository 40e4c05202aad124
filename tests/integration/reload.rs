//! Hot reload and zero-downtime operation: reload storms under load, draining, state carry-over,
//! graceful stop, binary upgrade.

use std::time::{Duration, Instant};

use crate::support::*;

fn upstream(strategy: &str, list: &[(&Backend, u32)]) -> String {
    format!(
        "[upstreams.api]\nstrategy = \"{strategy}\"\n{}\n",
        backends_toml(list)
    )
}

#[test]
fn reload_storm_under_load_loses_nothing() {
    let pool: Vec<Backend> = (0..5).map(|i| Backend::start(&format!("b{i}"))).collect();
    let lb = Lb::start(&upstream("round_robin", &[(&pool[0], 1), (&pool[1], 1)]));
    let traffic = Traffic::start(lb.addr, "/", 32);
    let started = Instant::now();
    let mut reloads = 0;
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..40 {
        if i == 20 {
            lb.write_raw(
                "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [] # invalid\n",
            );
            // Writes close together may be read as one; make sure this one was seen on its own.
            wait_for(
                "the invalid config rejected",
                Duration::from_secs(5),
                || {
                    lb.metrics()
                        .contains("lb_config_reloads_total{result=\"failure\"} 1")
                        .then_some(())
                },
            );
        } else {
            let mask = (next() % 31 + 1) as usize; // a non-empty subset of the 5
            let list: Vec<(&Backend, u32)> = (0..5)
                .filter(|j| mask & (1 << j) != 0)
                .map(|j| (&pool[j], (next() % 5 + 1) as u32))
                .collect();
            let strategy = if next() % 2 == 0 {
                "round_robin"
            } else {
                "least_connections"
            };
            lb.write_config(&upstream(strategy, &list));
        }
        reloads += 1;
        // Pacing, not waiting for something: spreads the 40 reloads over ~8 s of load.
        std::thread::sleep(Duration::from_millis(200));
    }
    // Final set: b3 and b4 only.
    lb.write_config(&upstream(
        "least_connections",
        &[(&pool[3], 1), (&pool[4], 2)],
    ));
    let want = {
        let mut v = vec![pool[3].addr.to_string(), pool[4].addr.to_string()];
        v.sort();
        v
    };
    wait_for("final config applied", Duration::from_secs(5), || {
        (lb.backend_set("api") == want).then_some(())
    });
    let applied = Instant::now();
    let after = wait_for(
        "200 answers after the final config",
        Duration::from_secs(10),
        || {
            let after = traffic.since(applied + Duration::from_millis(100));
            (after.len() >= 200).then_some(after)
        },
    );
    let stale = traffic.stale.load(std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.stop();
    let elapsed = started.elapsed();
    let fails = failures(&seen);
    eprintln!(
        "reload storm: {} requests, {} reloads (1 invalid) in {elapsed:?}, {} failed, {stale} stale connections",
        seen.len(),
        reloads,
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} failed requests, e.g. {:?}",
        fails.len(),
        &fails[..fails.len().min(5)]
    );
    assert_eq!(stale, 0, "lb closed keep-alive connections during reloads");
    assert!(seen.len() > 1000, "too little load: {}", seen.len());
    assert!(
        after.iter().all(|s| s.backend == "b3" || s.backend == "b4"),
        "final backend set not obeyed"
    );
    let m = lb.metrics();
    assert!(
        m.contains("lb_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    wait_for("in-flight back to 0", Duration::from_secs(5), || {
        let s = lb.status_json();
        s["upstreams"]["api"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["in_flight"] == 0)
            .then_some(())
    });
}

#[test]
fn removed_backend_finishes_its_in_flight_request() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&upstream("round_robin", &[(&b, 1)]));
    let addr = lb.addr;
    let slow = std::thread::spawn(move || request(addr, "GET", "/delay/1500", &[], b""));
    wait_for(
        "slow request in flight on b",
        Duration::from_secs(5),
        || {
            let s = lb.status_json();
            (s["upstreams"]["api"]["backends"][0]["in_flight"] == 1).then_some(())
        },
    );
    lb.write_config(&upstream("round_robin", &[(&a, 1)]));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    let status = lb.status_json();
    let listed: Vec<(String, String)> = status["upstreams"]["api"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(a.addr.to_string(), "up".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(b.addr.to_string(), "draining".into())),
        "{listed:?}"
    );
    assert_eq!(lb.get("/").backend(), "a", "new requests go to the new set");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "b");
}

#[test]
fn health_state_survives_unrelated_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let hc = "[upstreams.api.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let lb = Lb::start(&format!(
        "{}{hc}",
        upstream("round_robin", &[(&a, 1), (&b, 1)])
    ));
    b.set_health(false);
    let baddr = b.addr.to_string();
    wait_for("b down", Duration::from_secs(5), || {
        (lb.backend_state("api", &baddr) == "down").then_some(())
    });
    // Unrelated edit: retries and weights of a.
    lb.write_config(&format!(
        "{}retries = 3\n{hc}",
        upstream("round_robin", &[(&a, 2), (&b, 1)])
    ));
    let (code, _) = lb.reload();
    assert_eq!(code, 200);
    assert_eq!(
        lb.backend_state("api", &baddr),
        "down",
        "state carried over, not reset to checking"
    );
    let mut conn = Conn::open(lb.addr).unwrap();
    for _ in 0..20 {
        assert_eq!(conn.send("GET", "/", &[], b"").unwrap().backend(), "a");
    }
}

#[test]
fn invalid_reload_keeps_old_config_and_reports_every_problem() {
    let a = Backend::start("a");
    let lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    let good = std::fs::read_to_string(&lb.config).unwrap();
    lb.write_raw(&good.replace(
        "[upstreams.api]",
        "[upstreams.api]\nretries = -1\nbogus = true",
    ));
    let (code, result) = lb.reload();
    assert_eq!(code, 422);
    assert_eq!(result["ok"], false);
    let problems = result["problems"].to_string();
    assert!(
        problems.contains("upstreams.api.bogus: unknown key"),
        "{problems}"
    );
    assert!(
        problems.contains("upstreams.api.retries: must be at least 0"),
        "{problems}"
    );
    assert_eq!(lb.get("/").status, 200, "old config still serving");
    let status = lb.status_json();
    assert_eq!(status["config"]["last_reload"]["ok"], false);
    assert!(lb
        .metrics()
        .contains("lb_config_reloads_total{result=\"failure\"}"));

    // Listener changes need a restart; the rest applies.
    let b = Backend::start("b");
    let moved = good
        .replace(&lb.addr.to_string(), "127.0.0.1:1")
        .replace(&a.addr.to_string(), &b.addr.to_string());
    lb.write_raw(&moved);
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["needs_restart"][0], "server.listen");
    assert_eq!(lb.get("/").backend(), "b");
}

#[test]
fn sighup_and_file_watch_trigger_reloads() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    // File watch: an atomic rename is noticed without any signal.
    lb.write_config(&upstream("round_robin", &[(&b, 1)]));
    wait_for("file watch reload", Duration::from_secs(5), || {
        (lb.get("/").backend() == "b").then_some(())
    });
    // SIGHUP: overwrite in place then signal.
    let text = std::fs::read_to_string(&lb.config)
        .unwrap()
        .replace(&b.addr.to_string(), &c.addr.to_string());
    std::fs::write(&lb.config, text).unwrap();
    lb.proc.signal("-HUP");
    wait_for("sighup reload", Duration::from_secs(5), || {
        (lb.get("/").backend() == "c").then_some(())
    });
    let reloads = lb.status_json()["events"].to_string();
    assert!(reloads.contains("config reloaded"), "{reloads}");
}

#[test]
fn reload_of_1000_backends_is_fast() {
    let a = Backend::start("a");
    let mut list = vec![format!("\"{}\"", a.addr)];
    list.extend((0..999).map(|i| format!("\"127.0.{}.{}:9\"", 1 + i / 250, 1 + i % 250)));
    let body = format!("[upstreams.api]\nbackends = [{}]\n", list.join(", "));
    let lb = Lb::start(&body);
    lb.write_config(&format!("{body}retries = 1\n"));
    let (code, result) = lb.reload();
    assert_eq!(code, 200);
    let ms = result["duration_ms"].as_f64().unwrap();
    eprintln!("reload of 1000 backends took {ms:.2} ms");
    assert!(ms < 2000.0, "{ms} ms");
    assert_eq!(lb.backend_set("api").len(), 1000);
}

#[test]
fn a_connection_accepted_before_a_stop_gets_its_first_request_answered() {
    let a = Backend::start("a");
    let mut lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    let addr = lb.addr;
    // Keeps lb draining for 2 s.
    let slow = std::thread::spawn(move || try_request(addr, "GET", "/delay/2000", &[], b""));
    wait_for("request in flight", Duration::from_secs(10), || {
        (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 1).then_some(())
    });
    // Connected (and accepted: nothing observable, so a pause) before the stop, request after
    // it: what a client racing a stop or an upgrade's hand-over does.
    let mut fresh = Conn::open(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    lb.proc.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let r = fresh
        .send("GET", "/", &[], b"")
        .expect("the first request of a connection lb accepted is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"), "its last request");
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let a = Backend::start("a");
    let mut lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    let addr = lb.addr;
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || try_request(addr, "GET", "/delay/2000", &[], b"")))
        .collect();
    wait_for("requests in flight", Duration::from_secs(10), || {
        (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 3).then_some(())
    });
    let t = Instant::now();
    lb.proc.signal("-TERM");
    for h in slow {
        let r = h.join().unwrap().expect("in-flight request completed");
        assert_eq!(r.status, 200);
    }
    let exited = wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap().map(|_| Instant::now())
    });
    let took = exited - t;
    eprintln!("SIGTERM: in-flight requests finished, exit after {took:?} (grace 3s)");
    assert!(
        took < Duration::from_millis(3500),
        "exit took {took:?} (grace 3s)"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

/// Established TCP connections (this host's /proc/net/tcp) whose remote end is `port`.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&remote) && f[3] == "01"
        })
        .count()
}

/// The HTTP/2 connections each worker keeps to a backend a reload removed close once idle, even
/// though no request asks for that backend again (the pool's sweep covers every backend).
#[test]
fn http2_connections_to_a_removed_backend_are_closed_once_idle() {
    let (a, b) = (
        Backend::start_with("a", &["--h2c"]),
        Backend::start_with("b", &["--h2c"]),
    );
    let h2 = |to: &Backend| {
        format!(
            "[upstreams.api]\nprotocol = \"http2\"\nidle_timeout = \"1s\"\nbackends = [\"{}\"]\n",
            to.addr
        )
    };
    let lb = Lb::start(&h2(&a));
    let (statuses, _) = load(lb.addr, "/", 4, 50);
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert!(connections_to(a.addr.port()) > 0);
    lb.write_config(&h2(&b));
    assert_eq!(lb.reload().0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    // Streams for a sweep on every worker (two; each sweeps after its own streams, and which
    // worker takes a connection is the kernel's choice, so rounds go on until both have); none
    // of them goes to `a`.
    wait_for(
        "no connection to the removed backend",
        Duration::from_secs(20),
        || {
            let (statuses, backends) = load(lb.addr, "/", 8, 250);
            assert_eq!(statuses.get(&200), Some(&2000), "{statuses:?}");
            assert_eq!(backends.keys().collect::<Vec<_>>(), ["b"]);
            (connections_to(a.addr.port()) == 0).then_some(())
        },
    );
}

/// A request whose head is still arriving when SIGTERM comes is served: the graceful stop waits
/// for it as for a request in flight (it used to exit at once, cutting it).
#[test]
fn a_request_whose_head_is_arriving_at_sigterm_is_served() {
    let a = Backend::start("a");
    let mut lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    let mut s = std::net::TcpStream::connect(lb.addr).unwrap();
    std::io::Write::write_all(&mut s, b"GET /delay/100 HTTP/1.1\r\nHost: a\r\n").unwrap();
    // The head's first line is in: lb is reading it.
    std::thread::sleep(Duration::from_millis(200));
    lb.proc.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut s, b"Connection: close\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    wait_for("lb exit", Duration::from_secs(5), || {
        lb.proc.child.try_wait().unwrap()
    });
}

/// Requests still in flight when the grace period ends are cut, and the log says so at WARN
/// with how many, not INFO.
#[test]
fn requests_cut_at_the_end_of_the_grace_period_are_a_warning() {
    let a = Backend::start("a");
    let mut lb = Lb::start_with(
        &upstream("round_robin", &[(&a, 1)]),
        "grace_period = \"1s\"",
    );
    let addr = lb.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || try_request(addr, "GET", "/delay/10000", &[], b"")))
        .collect();
    wait_for("requests in flight", Duration::from_secs(10), || {
        (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 2).then_some(())
    });
    lb.proc.signal("-TERM");
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    for h in slow {
        assert!(h.join().unwrap().is_err(), "a cut request got an answer");
    }
    let log = lb.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("grace period over"))
        .unwrap_or_else(|| panic!("{log}"));
    // The log is coloured: drop the escape sequences.
    let mut plain = String::new();
    let mut escape = false;
    for c in line.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    assert!(plain.contains("WARN") && plain.contains("cut=2"), "{plain}");
    assert!(!log.contains("graceful stop complete"), "{log}");
}

#[test]
fn upgrade_hands_over_sockets_under_load() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut old = Lb::start(&upstream("round_robin", &[(&a, 1), (&b, 1)]));
    let traffic = Traffic::start(old.addr, "/", 8);
    wait_for("traffic", Duration::from_secs(5), || {
        (traffic.seen().len() > 100).then_some(())
    });
    let log = std::fs::File::create(old.dir.join("new.log")).unwrap();
    let new = std::process::Command::new(LB)
        .arg("--config")
        .arg(&old.config)
        .arg("--upgrade")
        .stderr(log)
        .spawn()
        .unwrap();
    let new = Proc { child: new };
    wait_for("old process exits", Duration::from_secs(20), || {
        old.proc.child.try_wait().unwrap()
    });
    let t = Instant::now();
    wait_for("traffic after the handover", Duration::from_secs(5), || {
        (traffic.since(t).len() > 100).then_some(())
    });
    let stale = traffic.stale.load(std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.stop();
    let fails = failures(&seen);
    eprintln!(
        "upgrade: {} requests, {} failed, {stale} idle connections closed by the old process",
        seen.len(),
        fails.len()
    );
    assert!(
        fails.is_empty(),
        "{} failed, e.g. {:?}",
        fails.len(),
        &fails[..fails.len().min(5)]
    );
    assert_eq!(
        request(old.admin, "GET", "/healthz", &[], b"").status,
        200,
        "admin listener handed over too"
    );
    drop(new);
}

#[test]
fn a_file_changed_back_to_the_running_config_after_a_failed_reload_is_a_success() {
    // Issue 28, item 10: the file watch finds the running config again (nothing to apply),
    // which still is a successful attempt.
    let a = Backend::start("a");
    let lb = Lb::start(&upstream("round_robin", &[(&a, 1)]));
    let good = std::fs::read_to_string(&lb.config).unwrap();
    let ok = |lb: &Lb| lb.status_json()["config"]["last_reload"]["ok"].clone();
    lb.write_raw(&format!("{good}\n[upstreams.broken\n"));
    wait_for("the bad file rejected", Duration::from_secs(10), || {
        (ok(&lb) == false).then_some(())
    });
    lb.write_raw(&good);
    wait_for(
        "last_reload.ok true after the file is back",
        Duration::from_secs(10),
        || (ok(&lb) == true).then_some(()),
    );
    let status = lb.status_json();
    assert_eq!(status["config"]["last_reload"]["trigger"], "file");
    assert_eq!(
        status["config"]["last_reload"]["problems"],
        serde_json::json!([])
    );
    assert_eq!(lb.get("/").status, 200);
}
