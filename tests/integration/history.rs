//! The per-second history (`GET /history`, `/history.csv`) and the `/report` page: counts add up
//! exactly to the requests sent, bad parameters are a 400 saying why, and the report renders in
//! headless Chromium.

use std::time::{Duration, Instant};

use crate::support::webdriver::{Browser, BrowserPaths};
use crate::support::*;

/// Requests the upstream totals of `/history` count (all samples).
fn counted(lb: &Lb) -> (u64, serde_json::Value) {
    let h = request(lb.admin, "GET", "/history", &[], b"").json();
    let n = h["upstreams"]["api"]["samples"].as_array().map_or(0, |v| {
        v.iter().map(|s| s["requests"].as_u64().unwrap_or(0)).sum()
    });
    (n, h)
}

#[test]
fn history_counts_every_request_once() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[analytics]\nhistory = \"10m\"\n[upstreams.api]\nbackends = [\"{}\", \"{}\"]\n",
        a.addr, b.addr
    ));
    // Spread over more than two seconds, some of them errors.
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    while start.elapsed() < Duration::from_millis(2500) {
        let path = if sent % 10 == 0 { "/status/503" } else { "/" };
        let r = lb.get(path);
        sent += 1;
        if r.status >= 500 {
            errors += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(errors > 0);
    let h = wait_for(
        "the history to count every request",
        Duration::from_secs(5),
        || {
            let (n, h) = counted(&lb);
            (n == sent).then_some(h)
        },
    );
    let up = &h["upstreams"]["api"];
    assert!(up["samples"].as_array().unwrap().len() >= 2, "{up}");
    assert_eq!(up["summary"]["requests"], sent);
    assert_eq!(up["summary"]["errors_5xx"], errors);
    let per_backend: u64 = ["a", "b"]
        .iter()
        .zip([&a, &b])
        .map(|(_, be)| {
            up["backends"][be.addr.to_string()]["summary"]["requests"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(per_backend, sent, "backends add up to the upstream");
    let p99 = up["summary"]["p99_ms"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 1000.0, "{p99}");

    // A window: only the samples inside it.
    let t = up["samples"][1]["t"].as_u64().unwrap();
    let one = request(
        lb.admin,
        "GET",
        &format!("/history?from={t}&to={t}"),
        &[],
        b"",
    )
    .json();
    assert_eq!(
        one["upstreams"]["api"]["samples"].as_array().unwrap().len(),
        1
    );
    let rfc = request(
        lb.admin,
        "GET",
        "/history?from=2020-01-01T00:00:00Z",
        &[],
        b"",
    );
    assert_eq!(rfc.status, 200);

    // CSV: a header and one line per sample; requests add up too.
    let csv = request(lb.admin, "GET", "/history.csv", &[], b"");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (backend, requests) = (col("backend"), col("requests"));
    let total: u64 = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[backend].is_empty())
        .map(|f| f[requests].parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, sent);

    for bad in [
        "/history?from=yesterday",
        "/history?since=1",
        "/history.csv?from=5&to=1",
    ] {
        let r = request(lb.admin, "GET", bad, &[], b"");
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.text().starts_with("bad query: "), "{bad}: {}", r.text());
    }
}

#[test]
fn history_off_keeps_nothing() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[analytics]\nhistory = \"0s\"\n[upstreams.api]\nbackends = [\"{}\"]\n",
        a.addr
    ));
    for _ in 0..20 {
        assert_eq!(lb.get("/").status, 200);
    }
    std::thread::sleep(Duration::from_millis(2200));
    let (n, h) = counted(&lb);
    assert_eq!(n, 0, "{h}");
}

#[test]
fn report_is_one_self_contained_page_and_renders() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{}\"]\n[upstreams.api.health_check]\ninterval = \"300ms\"\n",
        a.addr, b.addr
    ));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut down = false;
    while start.elapsed() < Duration::from_millis(3000) {
        assert_eq!(lb.get("/").status, 200);
        sent += 1;
        if !down && start.elapsed() > Duration::from_millis(1200) {
            b.set_health(false); // an event on the time axis
            down = true;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    wait_for(
        "the history to count every request",
        Duration::from_secs(5),
        || (counted(&lb).0 == sent).then_some(()),
    );
    let r = request(lb.admin, "GET", "/report", &[], b"");
    assert_eq!(r.status, 200);
    let html = r.text();
    for external in ["<script", "<link", "@import", "url(", "https://"] {
        assert!(!html.contains(external), "report references {external}");
    }
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(html.contains(&format!("api/{}", a.addr)));
    let events = &html[html.find("<ul id=\"events\">").expect("event list")..];
    assert!(
        events.contains("-&gt; down"),
        "the backend going down is listed: {events}"
    );
    let Some(paths) = BrowserPaths::require_or_skip("report_in_headless_chromium") else {
        return;
    };
    let browser = Browser::start(&paths, &lb.dir.join("chromium"), 1280, 1000);
    browser.goto(&format!("http://{}/report", lb.admin));
    let rows = browser.eval("return document.querySelectorAll('#summary tbody tr').length");
    assert_eq!(rows.as_u64(), Some(3), "upstream total and two backends");
    let lines = browser.eval(
        "return [...document.querySelectorAll('polyline.series')].filter(p => p.getTotalLength() > 50).length",
    );
    assert!(lines.as_u64().unwrap_or(0) >= 6, "drawn lines: {lines}");
    let events = browser.eval("return document.querySelector('#events').innerText");
    assert!(events.as_str().unwrap_or("").contains("down"), "{events}");
    let shot = browser.screenshot(&lb.dir.join("report.png"));
    assert!(shot.len() > 10_000, "screenshot of {} bytes", shot.len());
    std::fs::copy(
        lb.dir.join("report.png"),
        std::env::temp_dir().join("lb-report-latest.png"),
    )
    .unwrap();
}

#[test]
fn dashboard_opened_mid_test_shows_the_test_so_far() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\", \"{}\"]\n[upstreams.api.health_check]\ninterval = \"300ms\"\n",
        a.addr, b.addr
    ));
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        assert_eq!(lb.get("/").status, 200);
        sent += 1;
        if sent == 50 {
            b.set_health(false);
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    wait_for("b to be down", Duration::from_secs(5), || {
        (lb.backend_state("api", &b.addr.to_string()) == "down").then_some(())
    });
    let Some(paths) = BrowserPaths::require_or_skip("dashboard_loads_history") else {
        return;
    };
    let browser = Browser::start(&paths, &lb.dir.join("chromium"), 1280, 900);
    browser.goto(&format!("http://{}/", lb.admin));
    // Before the live polls could draw anything (they need two), the history is on the charts.
    let points = wait_for("the history to load", Duration::from_secs(5), || {
        let v = browser.eval("return +document.body.getAttribute('data-history-points') || 0");
        v.as_u64().filter(|n| *n >= 3)
    });
    let polls = browser.eval("return +document.body.getAttribute('data-polls') || 0");
    assert!(
        polls.as_u64().unwrap_or(0) <= 2,
        "{points} points after {polls} polls"
    );
    let drawn = browser.eval(
        "return [...document.querySelectorAll('svg polyline')].filter(p => p.getTotalLength() > 20).length",
    );
    assert!(drawn.as_u64().unwrap_or(0) >= 1, "no line drawn: {drawn}");
    let marks = wait_for("an event mark", Duration::from_secs(5), || {
        let n = browser.eval("return document.querySelectorAll('line.ev-mark.ev-down').length");
        n.as_u64().filter(|n| *n >= 1)
    });
    assert!(marks >= 1);
    browser.screenshot(&lb.dir.join("dashboard-history.png"));
    std::fs::copy(
        lb.dir.join("dashboard-history.png"),
        std::env::temp_dir().join("lb-dashboard-history-latest.png"),
    )
    .unwrap();
}

#[test]
fn health_checks_keep_their_interval_while_large_reports_render() {
    // Issue 28, item 3: /report rendered under the history lock, and the sampler waited for it
    // on the one-thread background runtime that also runs health checks. 1,000 backends with
    // per-second samples make a report of ~10 MB; two clients ask for it back to back while a
    // 100 ms health check is counted.
    let a = Backend::start("a");
    let many: String = (0..1000)
        .map(|i| format!("\"127.0.{}.{}:9\", ", 1 + i / 250, 1 + i % 250))
        .collect();
    let lb = Lb::start(&format!(
        "[analytics]\nhistory = \"60s\"\n\n[upstreams.many]\nbackends = [{many}]\n\n\
         [upstreams.hc]\nbackends = [\"{}\"]\n[upstreams.hc.health_check]\ninterval = \"100ms\"\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"hc\"\n",
        a.addr
    ));
    // Some seconds of samples first.
    std::thread::sleep(Duration::from_secs(6));
    let checks = |lb: &Lb| {
        let m = lb.metrics();
        let hc: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("lb_health_checks_total{") && l.contains("upstream=\"hc\""))
            .collect();
        metric_sum(&hc.join("\n"), "lb_health_checks_total")
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = lb.admin;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = request(admin, "GET", "/report", &[], b"");
                    assert_eq!(r.status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let before = checks(&lb);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let done = checks(&lb) - before;
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reports: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    eprintln!("{done} health checks in {secs:.1} s while {reports} reports rendered");
    assert!(reports >= 2, "{reports} reports");
    // 100 ms interval: ~50; allow for a loaded 2-core machine.
    assert!(done >= 0.6 * secs * 10.0, "{done} checks in {secs:.1} s");
}
