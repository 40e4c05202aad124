//! The lifetime of labelled metric series: every series exists from the first scrape (a backend
//! added by a reload gets its own at once, before any traffic), and a removed backend's series go
//! once it has drained, not before.

use std::time::Duration;

use crate::support::*;

/// Lines of the metrics page naming `backend`.
fn series_of(metrics: &str, backend: &str) -> Vec<String> {
    let needle = format!("backend=\"{backend}\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn labelled_series_exist_from_the_first_scrape() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let hc = "[upstreams.api.health_check]\ninterval = \"1h\"\n";
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n{hc}",
        a.addr
    ));
    let m = lb.metrics();
    let a_labels = format!("backend=\"{}\"", a.addr);
    for line in [
        "lb_config_reloads_total{result=\"success\"} 0".to_string(),
        "lb_config_reloads_total{result=\"failure\"} 0".to_string(),
        "lb_retries_total{upstream=\"api\"} 0".to_string(),
        format!("lb_health_checks_total{{{a_labels},result=\"failure\",upstream=\"api\"}} 0"),
        format!(
            "lb_upstream_errors_total{{{a_labels},kind=\"connect_refused\",upstream=\"api\"}} 0"
        ),
        format!("lb_upstream_errors_total{{{a_labels},kind=\"read_timeout\",upstream=\"api\"}} 0"),
        format!("lb_request_duration_seconds_count{{{a_labels},upstream=\"api\"}} 0"),
    ] {
        assert!(m.lines().any(|l| l == line), "missing `{line}` in:\n{m}");
    }
    // A backend added by a reload gets its series at once, before any traffic or check failure.
    lb.write_config(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{}\"]\n{hc}",
        a.addr, b.addr
    ));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    let m = lb.metrics();
    let line = format!(
        "lb_upstream_errors_total{{backend=\"{}\",kind=\"reset\",upstream=\"api\"}} 0",
        b.addr
    );
    assert!(m.lines().any(|l| l == line), "missing `{line}` in:\n{m}");
    assert!(
        m.contains("lb_config_reloads_total{result=\"success\"} 1"),
        "{m}"
    );
}

#[test]
fn removed_backend_series_go_once_it_has_drained() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let hc = "[upstreams.api.health_check]\ninterval = \"100ms\"\n";
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n{hc}",
        b.addr
    ));
    let addr = lb.addr;
    assert_eq!(lb.get("/").backend(), "b");
    let slow = std::thread::spawn(move || request(addr, "GET", "/delay/1500", &[], b""));
    wait_for(
        "slow request in flight on b",
        Duration::from_secs(5),
        || (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 1).then_some(()),
    );
    lb.write_config(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n{hc}",
        a.addr
    ));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    let baddr = b.addr.to_string();
    let draining = lb.metrics();
    assert!(
        series_of(&draining, &baddr)
            .iter()
            .any(|l| l.starts_with("lb_requests_total")),
        "a draining backend keeps its series while requests remain:\n{draining}"
    );
    assert_eq!(slow.join().unwrap().backend(), "b");
    let left = wait_for("b's series removed", Duration::from_secs(5), || {
        let m = lb.metrics();
        series_of(&m, &baddr).is_empty().then_some(m)
    });
    assert!(!series_of(&left, &a.addr.to_string()).is_empty(), "{left}");
}
