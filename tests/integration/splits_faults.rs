//! Traffic splits (`split`, NGINX's `split_clients`) and fault injection (`fault`, Envoy's fault
//! filter) with real lb and sample-backend processes: a 90/10 split over 1000 requests, a split
//! sticky by header and by client address, a reload that changes the percentages and keeps every
//! backend's state, a delay measured by curl, aborts (HTTP and gRPC) counted in `/metrics`, and
//! the start-up warning while a fault is configured.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Two upstreams, `v1` on `a` and `v2` on `b`, and `routes`.
fn two_upstreams(a: &Backend, b: &Backend, routes: &str) -> String {
    format!(
        "[upstreams.v1]\nbackends = [\"{}\"]\n\n[upstreams.v2]\nbackends = [\"{}\"]\n\n{routes}",
        a.addr, b.addr
    )
}

fn split_route(v1: u32, v2: u32, by: &str) -> String {
    format!(
        "[[routes]]\nsplit = [{{ upstream = \"v1\", percent = {v1} }}, {{ upstream = \"v2\", percent = {v2} }}]\nsplit_by = \"{by}\"\n"
    )
}

/// A backend's `requests` count in `/status`.
fn requests_of(lb: &Lb, upstream: &str, addr: std::net::SocketAddr) -> u64 {
    let s = lb.status_json();
    s["upstreams"][upstream]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["address"] == addr.to_string()))
        .and_then(|b| b["requests"].as_u64())
        .unwrap_or_else(|| panic!("no {upstream}/{addr} in {s}"))
}

#[test]
fn a_random_90_10_split_lands_within_tolerance() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&two_upstreams(&a, &b, &split_route(90, 10, "random")));
    let (statuses, backends) = load(lb.addr, "/", 4, 250);
    assert_eq!(statuses.get(&200), Some(&1000), "{statuses:?}");
    // 100 expected on b, σ ≈ 9.5: ±40 is over 4σ.
    let on_b = backends.get("b").copied().unwrap_or(0);
    assert!((60..=140).contains(&on_b), "{backends:?}");
    assert_eq!(backends.get("a").copied().unwrap_or(0) + on_b, 1000);
    // Each chosen upstream counts its own requests.
    let m = lb.metrics();
    let per_upstream = |up: &str| -> f64 {
        let tail = format!("upstream=\"{up}\"}}");
        let lines = m.lines().filter(|l| l.starts_with("lb_requests_total{"));
        let mine = lines.filter(|l| l.split(' ').next().is_some_and(|s| s.ends_with(&tail)));
        mine.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(per_upstream("v2") as usize, on_b, "{m}");
    assert_eq!(per_upstream("v1") as usize, 1000 - on_b, "{m}");
}

#[test]
fn a_split_by_header_keeps_each_key_on_one_upstream() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&two_upstreams(
        &a,
        &b,
        &split_route(50, 50, "header:x-user"),
    ));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let first = request(lb.addr, "GET", "/", &[("x-user", &user)], b"").backend();
        for _ in 0..4 {
            let again = request(lb.addr, "GET", "/", &[("x-user", &user)], b"").backend();
            assert_eq!(again, first, "{user} moved");
        }
        *seen.entry(first).or_default() += 1;
    }
    // 40 keys at 50/50: both sides get some (all on one side: 2^-39).
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn a_split_by_client_keeps_each_address_on_one_upstream() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // The default key: the client's address.
    let routes =
        "[[routes]]\nsplit = [{ upstream = \"v2\", percent = 50 }, { upstream = \"v1\" }]\n";
    let lb = Lb::start(&two_upstreams(&a, &b, routes));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 1..=30u8 {
        let from = std::net::IpAddr::from([127, 0, 3, i]);
        let first = get_from(lb.addr, from, "/", &[]).backend();
        for _ in 0..3 {
            assert_eq!(get_from(lb.addr, from, "/", &[]).backend(), first, "{from}");
        }
        *seen.entry(first).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn a_reload_changing_percentages_keeps_backend_state() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&two_upstreams(&a, &b, &split_route(50, 50, "random")));
    let (statuses, _) = load(lb.addr, "/", 2, 100);
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    let (before_a, before_b) = (
        requests_of(&lb, "v1", a.addr),
        requests_of(&lb, "v2", b.addr),
    );
    assert_eq!(before_a + before_b, 200);
    assert!(before_b > 0 && before_a > 0, "{before_a} {before_b}");

    lb.write_config(&two_upstreams(&a, &b, &split_route(1, 99, "random")));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    let (statuses, backends) = load(lb.addr, "/", 2, 100);
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert!(
        backends.get("b").copied().unwrap_or(0) >= 180,
        "{backends:?}"
    );
    // The backends' counters went on from where they were: the same state, not a new one.
    let (after_a, after_b) = (
        requests_of(&lb, "v1", a.addr),
        requests_of(&lb, "v2", b.addr),
    );
    assert_eq!(after_a + after_b, 400);
    assert!(after_a >= before_a && after_b >= before_b + 180);
}

#[test]
fn a_reload_changing_percentages_keeps_an_ejected_backend_ejected() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let upstreams = format!(
        "[upstreams.v1]\nbackends = [\"{}\"]\n\n[upstreams.v2]\nbackends = [\"{}\", \"{}\"]\n\
         [upstreams.v2.passive]\nconsecutive_failures = 1\neject_on_5xx = true\n\
         ejection_time = \"60s\"\nmax_ejection_time = \"60s\"\n\n",
        a.addr, b.addr, c.addr
    );
    let lb = Lb::start(&format!(
        "{upstreams}{}",
        split_route(50, 50, "header:x-user")
    ));
    // A key the split sends to v2 (each key has one chance in two).
    let key = (0..64)
        .map(|i| format!("k{i}"))
        .find(|k| request(lb.addr, "GET", "/", &[("x-user", k)], b"").backend() != "a")
        .expect("a key on v2");
    let r = request(lb.addr, "GET", "/status/500", &[("x-user", &key)], b"");
    assert_eq!(r.status, 500);
    let (failed, other) = match r.backend().as_str() {
        "b" => (b.addr, "c"),
        _ => (c.addr, "b"),
    };
    wait_for("the failed backend ejected", Duration::from_secs(5), || {
        (lb.backend_state("v2", &failed.to_string()) == "ejected").then_some(())
    });

    lb.write_config(&format!(
        "{upstreams}{}",
        split_route(10, 90, "header:x-user")
    ));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    // The same state: still ejected (a new one would start up), its count kept.
    assert_eq!(lb.backend_state("v2", &failed.to_string()), "ejected");
    assert!(requests_of(&lb, "v2", failed) >= 1);
    // The key's hash is in v2's half, so in its 90% too: only the backend left takes it.
    for _ in 0..10 {
        let r = request(lb.addr, "GET", "/", &[("x-user", &key)], b"");
        assert_eq!((r.status, r.backend()), (200, other.to_string()));
    }
}

/// `curl -o /dev/null -w "%{http_code} %{time_total}"`: (status, seconds).
fn curl_timed(url: &str, headers: &[&str]) -> (u16, f64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "--max-time", "10"]);
    cmd.args(["-w", "%{http_code} %{time_total}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, time) = text.split_once(' ').unwrap_or(("0", "0"));
    (
        code.parse().unwrap_or(0),
        time.trim().parse().unwrap_or(0.0),
    )
}

#[test]
fn a_fault_delay_is_served_to_requests_with_its_header() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let routes = "[[routes]]\nupstream = \"v1\"\n\
                  fault = { delay = \"400ms\", delay_percent = 100, header = \"x-fault\" }\n";
    let lb = Lb::start(&two_upstreams(&a, &b, routes));
    let url = format!("http://{}/", lb.addr);
    let (code, plain) = curl_timed(&url, &[]);
    assert_eq!(code, 200);
    assert!(plain < 0.3, "no header, no delay: {plain}s");
    let (code, delayed) = curl_timed(&url, &["x-fault: 1"]);
    assert_eq!(code, 200);
    assert!((0.4..2.0).contains(&delayed), "delayed: {delayed}s");
    let m = lb.metrics();
    assert!(
        m.contains("lb_faults_injected_total{kind=\"delay\",route=\"path_prefix=/\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("lb_faults_injected_total{kind=\"abort\",route=\"path_prefix=/\"} 0\n"),
        "{m}"
    );
    // A warning at start while a fault is configured...
    let warnings = || lb.log_text().matches("fault injection is on").count();
    assert_eq!(warnings(), 1, "{}", lb.log_text());

    // ...and at each reload that keeps one; the route's count goes on.
    let routes = "[[routes]]\nupstream = \"v1\"\nfault = { delay = \"500ms\" }\n";
    lb.write_config(&two_upstreams(&a, &b, routes));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    assert_eq!(warnings(), 2, "{}", lb.log_text());
    let (code, delayed) = curl_timed(&url, &[]);
    assert_eq!(code, 200);
    assert!(
        (0.5..2.5).contains(&delayed),
        "every request now: {delayed}s"
    );
    let m = lb.metrics();
    assert!(
        m.contains("lb_faults_injected_total{kind=\"delay\",route=\"path_prefix=/\"} 2\n"),
        "{m}"
    );

    // Without a fault: no delay, no series, no warning.
    lb.write_config(&two_upstreams(&a, &b, "[[routes]]\nupstream = \"v1\"\n"));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    assert_eq!(warnings(), 2, "{}", lb.log_text());
    let (_, plain) = curl_timed(&url, &[]);
    assert!(plain < 0.4, "{plain}s");
    assert!(!lb.metrics().contains("lb_faults_injected_total"));
}

#[test]
fn fault_aborts_answer_their_status_and_are_counted() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let routes = "[[routes]]\npath_prefix = \"/all/\"\nupstream = \"v1\"\n\
                  fault = { abort_status = 503, abort_percent = 100 }\n\
                  [[routes]]\npath_prefix = \"/half/\"\nreplace_prefix = \"/\"\nupstream = \"v2\"\n\
                  fault = { abort_status = 429, abort_percent = 50 }\n";
    let lb = Lb::start(&two_upstreams(&a, &b, routes));
    for _ in 0..5 {
        let (code, _) = curl_timed(&format!("http://{}/all/x", lb.addr), &[]);
        assert_eq!(code, 503);
    }
    let (statuses, _) = load(lb.addr, "/half/", 2, 200);
    let aborted = statuses.get(&429).copied().unwrap_or(0);
    // 200 expected, σ = 10.
    assert!((150..=250).contains(&aborted), "{statuses:?}");
    assert_eq!(
        statuses.get(&200).copied().unwrap_or(0) + aborted,
        400,
        "{statuses:?}"
    );
    let m = lb.metrics();
    let count = |route: &str| {
        metric_sum(
            &m,
            &format!("lb_faults_injected_total{{kind=\"abort\",route=\"{route}\"}}"),
        ) as usize
    };
    assert_eq!(count("path_prefix=/all/"), 5, "{m}");
    assert_eq!(count("path_prefix=/half/"), aborted, "{m}");
    // Aborted requests never reached a backend.
    assert_eq!(requests_of(&lb, "v1", a.addr), 0);
}

#[test]
fn a_grpc_abort_answers_200_with_its_grpc_status() {
    let (a, b) = (Backend::start_with("a", &["--h2c"]), Backend::start("b"));
    let body = format!(
        "[upstreams.g]\nprotocol = \"http2\"\nbackends = [\"{}\"]\n[upstreams.v2]\nbackends = [\"{}\"]\n\
         [[routes]]\nupstream = \"g\"\nfault = {{ abort_grpc_status = 14, abort_percent = 100 }}\n",
        a.addr, b.addr
    );
    let lb = Lb::start_with(&body, "h2c = true");
    // One empty message, framed.
    let message = lb.dir.join("message.bin");
    std::fs::write(&message, [0u8; 5]).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--http2-prior-knowledge"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--data-binary")
        .arg(format!("@{}", message.display()))
        .arg(format!("http://{}/pkg.Svc/Call", lb.addr))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.contains("grpc-status: 14\r\n"), "{text}");
    let m = lb.metrics();
    assert!(
        m.contains("lb_faults_injected_total{kind=\"abort\",route=\"path_prefix=/\"} 1\n"),
        "{m}"
    );
}
