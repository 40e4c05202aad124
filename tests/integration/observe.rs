//! Observability: exact Prometheus counts, `/status`, the access log and JSON logs.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// Parses Prometheus text format strictly enough to catch a broken page: every sample line is
/// `name{labels} value` with a declared family.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut families = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            families.insert(parts.next().unwrap().to_string());
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "sample without # TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn metrics_counts_are_exact() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let sick = Backend::start("sick");
    sick.set_health(false);
    let dead = format!("127.0.0.1:{}", free_port());
    let lb = Lb::start(&format!(
        r#"
[upstreams.api]
{}
[upstreams.dead]
backends = ["{dead}"]
retries = 0
[upstreams.down]
backends = ["{}"]
[upstreams.down.health_check]
interval = "10s"
[[routes]]
host = "api"
upstream = "api"
[[routes]]
host = "dead"
upstream = "dead"
[[routes]]
host = "down"
upstream = "down"
"#,
        backends_toml(&[(&a, 1), (&b, 1)]),
        sick.addr
    ));
    let mut conn = Conn::open(lb.addr).unwrap();
    let mut send = |host: &str, path: &str| {
        let r = conn.send("GET", path, &[("Host", host)], b"");
        match r {
            Ok(r) => r.status,
            Err(_) => {
                conn = Conn::open(lb.addr).unwrap();
                conn.send("GET", path, &[("Host", host)], b"")
                    .unwrap()
                    .status
            }
        }
    };
    let mut expect: Vec<(u16, usize)> = Vec::new();
    for (host, path, n, code) in [
        ("api", "/", 10, 200),
        ("api", "/status/400", 4, 400),
        ("dead", "/", 3, 502),
        ("down", "/", 2, 503),
        ("nope", "/", 2, 404),
    ] {
        for _ in 0..n {
            assert_eq!(send(host, path), code, "{host}{path}");
        }
        expect.push((code, n));
    }
    let text = lb.metrics();
    let m = parse_prometheus(&text);
    let (a, b) = (a.addr.to_string(), b.addr.to_string());
    let req = |up: &str, be: &str, code: u16| {
        m.get(&format!(
            "lb_requests_total{{backend=\"{be}\",code=\"{code}\",protocol=\"http1\",upstream=\"{up}\"}}"
        ))
        .copied()
    };
    assert_eq!(req("api", &a, 200), Some(5.0), "{text}");
    assert_eq!(req("api", &b, 200), Some(5.0));
    assert_eq!(req("api", &a, 400), Some(2.0));
    assert_eq!(req("api", &b, 400), Some(2.0));
    assert_eq!(req("dead", "", 502), Some(3.0));
    assert_eq!(req("down", "", 503), Some(2.0));
    assert_eq!(req("", "", 404), Some(2.0));
    let total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("lb_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 21.0);
    let count = |be: &str, up: &str| {
        m.get(&format!(
            "lb_request_duration_seconds_count{{backend=\"{be}\",upstream=\"{up}\"}}"
        ))
        .copied()
    };
    assert_eq!(count(&a, "api"), Some(7.0));
    assert_eq!(count(&b, "api"), Some(7.0));
    assert_eq!(count("", "dead"), Some(3.0));
    let inf = m.get(&format!(
        "lb_request_duration_seconds_bucket{{backend=\"{a}\",upstream=\"api\",le=\"+Inf\"}}"
    ));
    assert_eq!(inf, Some(&7.0));
    assert_eq!(m.get(&format!("lb_upstream_errors_total{{backend=\"{dead}\",kind=\"connect_refused\",upstream=\"dead\"}}")), Some(&3.0));
    assert_eq!(
        m.get(&format!(
            "lb_backend_up{{backend=\"{}\",name=\"\",upstream=\"down\"}}",
            sick.addr
        )),
        Some(&0.0)
    );
    assert_eq!(
        m.get(&format!(
            "lb_backend_up{{backend=\"{a}\",name=\"\",upstream=\"api\"}}"
        )),
        Some(&1.0)
    );
    assert_eq!(
        m.get(&format!(
            "lb_backend_in_flight{{backend=\"{a}\",name=\"\",upstream=\"api\"}}"
        )),
        Some(&0.0)
    );
    assert!(m
        .get(&format!(
            "lb_health_checks_total{{backend=\"{}\",result=\"failure\",upstream=\"down\"}}",
            sick.addr
        ))
        .is_some_and(|v| *v >= 1.0));
    assert!(m.contains_key("lb_build_info{version=\"0.1.0\"}"));
    assert!(m.contains_key("lb_config_last_reload_success_timestamp_seconds"));
    // Exactly our keep-alive connection (the readiness probe's may take a moment to go).
    wait_for("only our connection open", Duration::from_secs(5), || {
        let m = parse_prometheus(&lb.metrics());
        (m.get("lb_downstream_connections") == Some(&1.0)).then_some(())
    });
}

#[test]
fn status_reflects_health_and_reloads() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let hc = "[upstreams.api.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n{hc}",
        backends_toml(&[(&a, 2), (&b, 1)])
    ));
    for _ in 0..6 {
        assert_eq!(lb.get("/").status, 200);
    }
    let s = lb.status_json();
    assert_eq!(s["upstreams"]["api"]["strategy"], "round_robin");
    let backends = s["upstreams"]["api"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let first = &backends[0];
    for key in [
        "address",
        "weight",
        "effective_weight",
        "state",
        "in_flight",
        "requests",
        "errors",
        "latency_p50_ms",
        "latency_p99_ms",
    ] {
        assert!(first.get(key).is_some(), "missing {key}: {first}");
    }
    assert_eq!(first["requests"], 4);
    assert!(first["latency_p50_ms"].as_f64().is_some());
    let hash = s["config"]["hash"].clone();
    assert!(s["config"]["path"].as_str().unwrap().ends_with("lb.toml"));

    b.set_health(false);
    let baddr = b.addr.to_string();
    wait_for("b down in /status", Duration::from_secs(5), || {
        (lb.backend_state("api", &baddr) == "down").then_some(())
    });
    lb.write_config(&format!(
        "[upstreams.api]\nstrategy = \"least_connections\"\n{}\n{hc}",
        backends_toml(&[(&a, 2), (&b, 1)])
    ));
    lb.reload();
    let s = lb.status_json();
    assert_eq!(s["upstreams"]["api"]["strategy"], "least_connections");
    assert_ne!(s["config"]["hash"], hash);
    assert_eq!(s["config"]["last_reload"]["ok"], true);
    let events = s["events"].to_string();
    assert!(
        events.contains("-> down") && events.contains("config reloaded"),
        "{events}"
    );
}

#[test]
fn access_log_lines() {
    let a = Backend::start("a");
    let dir = temp_dir("access");
    let path = dir.join("access.log");
    let lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr),
        &format!("access_log = \"{}\"", path.display()),
    );
    let r = request(lb.addr, "POST", "/loadTest?x=1", &[], b"{\"k\":1}");
    assert_eq!(r.status, 200);
    lb.get("/status/404");
    let lines = wait_for("2 access log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    });
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/loadTest?x=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], "api");
    assert_eq!(first["backend"], a.addr.to_string());
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["bytes_in"], 7);
    assert!(first["bytes_out"].as_u64().unwrap() > 10);
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(first["protocol"], "http1");
    assert!(first.get("grpc_status").is_none());
    let second: serde_json::Value = serde_json::from_str(lines.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["status"], 404);
}

#[test]
fn json_log_format() {
    let dir = temp_dir("jsonlog");
    let cfg = dir.join("lb.toml");
    let (port, dead) = (free_port(), free_port());
    std::fs::write(&cfg, format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:{dead}\"]\n[upstreams.api.health_check]\ntype = \"tcp\"\n")).unwrap();
    let child = std::process::Command::new(LB)
        .args(["--log-format", "json", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc { child };
    let stderr = p.child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Some(Ok(line)) = lines.next() else { break };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(v);
    }
    assert!(
        seen.iter().any(|v| v["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("connection refused"))),
        "{seen:?}"
    );
    drop(p);
}
