//! The live dashboard (`GET /` on the admin listener), driven in a real headless Chromium over
//! WebDriver: rates move under load, screenshots change, a failed health check shows up as `down`.
//! Skips loudly when Chromium is not installed, unless `LB_REQUIRE_BROWSER=1`.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::webdriver::{Browser, BrowserPaths};
use crate::support::*;

#[test]
fn dashboard_page_is_self_contained() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr));
    let r = request(lb.admin, "GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let html = r.text();
    for needle in [
        "id=\"total-rps\"",
        "fetch(\"/status\"",
        "<svg",
        "data-backend",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    for external in [
        "<script src",
        "<link",
        "@import",
        "url(",
        "//cdn",
        "https://",
    ] {
        assert!(
            !html.contains(external),
            "page references an external asset: {external}"
        );
    }
}

/// Background load through lb, bounded in time, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize, max: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + max;
        let threads = (0..clients)
            .map(|i| {
                let (stop, sent) = (stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<Conn> = None;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let mut c = match conn.take() {
                            Some(c) => c,
                            None => match Conn::open(addr) {
                                Ok(c) => c,
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        if let Ok(r) = c.send("GET", "/", &[], b"") {
                            sent.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") != Some("close") {
                                conn = Some(c);
                            }
                        }
                        // A modest, slowly varying pace (~150-450 req/s per client): light on a small box.
                        n += 1;
                        let pause = 2 + (n / 400 + i as u64) % 3;
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            threads,
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Parses the dashboard's rate text ("0.52", "87.3", "1234", "12.3k").
fn parse_rate(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.strip_suffix('k') {
        Some(k) => k.parse::<f64>().ok().map(|v| v * 1000.0),
        None => s.parse().ok(),
    }
}

fn row_state(browser: &Browser, address: &str) -> Option<String> {
    browser.text(&format!("tr[data-backend=\"{address}\"] .state"))
}

#[test]
fn dashboard_in_headless_chromium() {
    let Some(paths) = BrowserPaths::require_or_skip("dashboard_in_headless_chromium") else {
        return;
    };
    let started = Instant::now();
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let list = backends_toml(&[(&backends[0], 1), (&backends[1], 1), (&backends[2], 1)]);
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{list}\n\n[upstreams.api.health_check]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n"
    ));
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    wait_for(
        "all backends up in /status",
        Duration::from_secs(10),
        || {
            addrs
                .iter()
                .all(|a| lb.backend_state("api", a) == "up")
                .then_some(())
        },
    );

    let browser = Browser::start(&paths, &lb.dir.join("chromium"), 1280, 800);
    browser.goto(&format!("http://{}/", lb.admin));
    wait_for(
        "the page to list every backend as up",
        Duration::from_secs(15),
        || {
            addrs
                .iter()
                .all(|a| row_state(&browser, a).as_deref() == Some("up"))
                .then_some(())
        },
    );

    // Under load the total rate becomes positive, and keeps moving.
    let load = Load::start(lb.addr, 2, Duration::from_secs(40));
    let first = wait_for(
        "a positive #total-rps under load",
        Duration::from_secs(15),
        || {
            let text = browser.text("#total-rps")?;
            parse_rate(&text).filter(|v| *v > 0.0).map(|_| text)
        },
    );
    let shot1 = browser.screenshot(&lb.dir.join("dashboard-1.png"));
    // A later reading, not a fixed pause: let the page poll twice more first.
    let polls = || {
        browser
            .eval("return +document.body.getAttribute('data-polls') || 0")
            .as_u64()
            .unwrap_or(0)
    };
    let polled = polls();
    wait_for("two more polls", Duration::from_secs(10), || {
        (polls() >= polled + 2).then_some(())
    });
    let second = wait_for(
        "#total-rps to change from its first reading",
        Duration::from_secs(15),
        || {
            let text = browser.text("#total-rps")?;
            (text != first && parse_rate(&text).is_some_and(|v| v > 0.0)).then_some(text)
        },
    );
    let shot2 = browser.screenshot(&lb.dir.join("dashboard-2.png"));
    assert_ne!(shot1, shot2, "the page did not change between screenshots");
    for a in &addrs {
        let rps = browser
            .text(&format!("tr[data-backend=\"{a}\"] td.rps"))
            .unwrap_or_default();
        assert!(
            parse_rate(&rps).is_some_and(|v| v > 0.0),
            "backend {a} shows rate {rps:?}"
        );
    }
    let polls = browser.eval("return +document.body.getAttribute('data-polls') || 0");
    assert!(
        polls.as_u64().unwrap_or(0) >= 3,
        "page polled {polls} times"
    );

    // A backend failing its health check shows as down, in its row and in the timeline.
    let victim = &backends[1];
    let addr = victim.addr.to_string();
    victim.set_health(false);
    let t_down = Instant::now();
    wait_for(
        "the page to show the backend down",
        Duration::from_secs(10),
        || (row_state(&browser, &addr).as_deref() == Some("down")).then_some(()),
    );
    let down_after = t_down.elapsed();
    let row_attr = browser.eval(&format!(
        "return document.querySelector('tr[data-backend=\"{addr}\"]').getAttribute('data-state')"
    ));
    assert_eq!(row_attr, "down");
    wait_for(
        "the event timeline to show the state change",
        Duration::from_secs(5),
        || {
            let top = browser.text("#events li")?;
            (top.contains(&addr) && top.contains("-> down")).then_some(())
        },
    );
    for other in [&addrs[0], &addrs[2]] {
        assert_eq!(row_state(&browser, other).as_deref(), Some("up"));
    }
    browser.screenshot(&lb.dir.join("dashboard-down.png"));
    let sent = load.finish();
    assert!(sent > 0);
    eprintln!(
        "dashboard: #total-rps {first} then {second}; down shown after {down_after:?}; {sent} requests; \
         screenshots in {}; {:?} in all",
        lb.dir.display(),
        started.elapsed()
    );
}

#[test]
fn the_first_poll_shows_rates_and_sparklines_from_the_servers_history() {
    // Issue 28, item 8: a screenshot-style load (--dump-dom after 600 ms of virtual time: one
    // poll) used to show "–" for every rate and empty sparklines: rates needed two polls.
    let Some(paths) = BrowserPaths::require_or_skip("the_first_poll_shows_rates") else {
        return;
    };
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ));
    let load = Load::start(lb.addr, 2, Duration::from_secs(20));
    // A few complete seconds of history with traffic.
    wait_for("history with traffic", Duration::from_secs(10), || {
        let h = request(lb.admin, "GET", "/history", &[], b"").json();
        let samples = h["upstreams"]["api"]["samples"].as_array()?.clone();
        (samples
            .iter()
            .filter(|s| s["requests"].as_u64() > Some(0))
            .count()
            >= 3)
            .then_some(())
    });
    let dir = lb.dir.join("chromium-dump");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(&paths.chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=600",
            &format!("--user-data-dir={}", dir.display()),
            "--dump-dom",
            &format!("http://{}/", lb.admin),
        ])
        .output()
        .expect("run chromium");
    load.finish();
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let attr = |id: &str, name: &str| -> String {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} in {dom}"));
        let tag = &dom[dom[..at].rfind('<').unwrap()..];
        let tag = &tag[..tag.find('>').unwrap()];
        let key = format!("{name}=\"");
        tag.find(&key)
            .map(|i| {
                let v = &tag[i + key.len()..];
                v[..v.find('"').unwrap()].to_string()
            })
            .unwrap_or_default()
    };
    assert!(dom.contains("data-polls=\"1\""), "one poll only: {dom}");
    let rps: f64 = attr("total-rps", "data-value").parse().unwrap_or(0.0);
    assert!(rps > 0.0, "#total-rps from the history: {rps}");
    // Each backend row's Req/s is a number and its sparkline has a line.
    assert!(
        dom.matches("<polyline points=").count() >= 2,
        "sparklines drawn for both backends"
    );
    assert!(dom.contains("data-rate-source=\"history\""), "{dom}");
}
