//! The request path: balancing, retries, routing, error answers, header handling.

use std::collections::HashMap;
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
fn routes_by_host_and_longest_prefix() {
    let (web, api, v2, other) = (
        Backend::start("web"),
        Backend::start("api"),
        Backend::start("v2"),
        Backend::start("other"),
    );
    let body = format!(
        r#"
[upstreams.web]
backends = ["{}"]
[upstreams.api]
backends = ["{}"]
[upstreams.v2]
backends = ["{}"]
[upstreams.other]
backends = ["{}"]

[[routes]]
path_prefix = "/"
host = "www.example.com"
upstream = "web"
[[routes]]
path_prefix = "/api"
upstream = "api"
[[routes]]
path_prefix = "/api/v2"
upstream = "v2"
[[routes]]
host = "other.example.com"
path_prefix = "/api"
upstream = "other"
"#,
        web.addr, api.addr, v2.addr, other.addr
    );
    let lb = Lb::start(&body);
    let get = |host: &str, path: &str| request(lb.addr, "GET", path, &[("Host", host)], b"");
    // NGINX's model: the host picks a group (here www.example.com's, other.example.com's, or
    // the routes without host), then the longest prefix within it.
    assert_eq!(get("www.example.com", "/index").backend(), "web");
    assert_eq!(get("www.example.com", "/api/x").backend(), "web");
    assert_eq!(get("anything", "/api/v2/users").backend(), "v2");
    assert_eq!(get("anything", "/api/users").backend(), "api");
    assert_eq!(get("other.example.com:8080", "/api/x").backend(), "other");
    assert_eq!(
        get("OTHER.example.com", "/api/v2/x").backend(),
        "other",
        "the host's group only"
    );
    let miss = get("other.example.com", "/index");
    assert_eq!(
        miss.status, 404,
        "other.example.com's group has no route for /index"
    );
    assert!(miss.backend().is_empty());
    let miss = get("nobody.example.com", "/index");
    assert_eq!(miss.status, 404, "nor has the default group");
}

#[test]
fn forwarded_headers_and_hop_by_hop_stripping() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr));
    let r = request(
        lb.addr,
        "GET",
        "/echo?x=1",
        &[
            ("Host", "api.example.com"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "s"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Kept", "yes"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    let headers: HashMap<String, String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(!headers.contains_key(gone), "{gone} forwarded: {headers:?}");
    }
    assert_ne!(
        headers.get("connection").map(|s| s.to_ascii_lowercase()),
        Some("keep-alive, x-secret".into())
    );
    assert_eq!(
        headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1"),
        "untrusted XFF replaced"
    );
    assert_eq!(
        headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        headers.get("x-forwarded-host").map(String::as_str),
        Some("api.example.com")
    );
    assert_eq!(headers.get("x-kept").map(String::as_str), Some("yes"));
    assert_eq!(echo["path"], "/echo?x=1");
}

#[test]
fn hop_by_hop_stripped_from_responses() {
    // A raw backend that sends hop-by-hop headers in its response.
    let addr = raw_backend(|mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=9\r\nX-Public: 1\r\n\r\nok");
    })
    .addr;
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{addr}\"]\n"));
    let r = lb.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert!(r.header("x-internal").is_none(), "{:?}", r.headers);
    assert!(
        r.header("keep-alive")
            .is_none_or(|v| !v.contains("timeout=9")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-public"), Some("1"));
}

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
