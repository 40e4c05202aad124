//! `routes[i].mirror` (NGINX's `mirror`) with real clients: curl against lb in front of a
//! `sample-backend`, the copies going to a recording server that keeps what it received.
//! Every copy arrives with the client's method, target and body byte for byte; a slow mirror
//! adds nothing to the client's latency; a mirror that never answers is bounded by
//! `max_in_flight` (the rest dropped and counted); a mirror that is down costs no request; a
//! share of `percent` is copied.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// One request as the mirror received it.
#[derive(Debug, Clone)]
struct Copy {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A mirror upstream that records each request and answers it after `delay` (`None`: never).
struct Recorder {
    backend: RawBackend,
    seen: Arc<Mutex<Vec<Copy>>>,
}

impl Recorder {
    fn start(delay: Option<Duration>) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let backend = raw_backend(move |s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            while let Some(copy) = read_request(&mut r) {
                log.lock().unwrap().push(copy);
                let Some(d) = delay else {
                    // Never answers: holds the connection until lb gives up on it.
                    let _ = r.read_to_end(&mut Vec::new());
                    return;
                };
                std::thread::sleep(d);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nmirror";
                if w.write_all(answer).is_err() {
                    return;
                }
            }
        });
        Recorder { backend, seen }
    }

    fn copies(&self) -> Vec<Copy> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request off `r` (Content-Length or chunked body), `None` at EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Copy> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok().filter(|&n| n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = header("content-length") {
        body.resize(n.parse().ok()?, 0);
        r.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Copy {
        method,
        target,
        headers,
        body,
    })
}

/// `curl` to lb: (status, body, seconds taken as curl measured them).
fn curl(url: &str, args: &[&str]) -> (u16, String, f64) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{time_total}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split(' ');
    let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs = tail.next().and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
    (status, body.to_string(), secs)
}

/// `lb_mirror_requests_total{upstream="shadow",result=...}`.
fn mirrored(lb: &Lb, result: &str) -> u64 {
    let want = format!("lb_mirror_requests_total{{result=\"{result}\",upstream=\"shadow\"}} ");
    lb.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {want} in /metrics"))
}

fn config(primary: &Backend, shadow: std::net::SocketAddr, mirror: &str) -> String {
    format!(
        r#"[upstreams.api]
backends = ["{}"]

[upstreams.shadow]
backends = ["{shadow}"]
read_timeout = "2s"

[[routes]]
path_prefix = "/"
upstream = "api"
mirror = {{ upstream = "shadow"{mirror} }}
"#,
        primary.addr
    )
}

#[test]
fn copies_arrive_with_the_clients_method_target_and_body() {
    let a = Backend::start("a");
    let shadow = Recorder::start(Some(Duration::ZERO));
    let lb = Lb::start(&config(&a, shadow.backend.addr, ""));
    let url = format!("http://{}", lb.addr);

    let (status, body, _) = curl(&format!("{url}/echo/get?x=1"), &[]);
    assert_eq!(status, 200, "{body}");
    // A body with every byte value, sent with a length, and one sent chunked.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let file = temp_dir("mirror").join("body.bin");
    std::fs::write(&file, &bytes).unwrap();
    let data = format!("@{}", file.display());
    let (status, _, _) = curl(&format!("{url}/echo/post"), &["--data-binary", &data]);
    assert_eq!(status, 200);
    let chunked = ["--data-binary", &data, "-H", "Transfer-Encoding: chunked"];
    let (status, _, _) = curl(&format!("{url}/echo/chunked"), &chunked);
    assert_eq!(status, 200);

    let copies = wait_for("three copies at the mirror", Duration::from_secs(5), || {
        let c = shadow.copies();
        (c.len() >= 3).then_some(c)
    });
    let by_target = |t: &str| {
        copies
            .iter()
            .find(|c| c.target == t)
            .unwrap_or_else(|| panic!("no copy of {t}: {copies:#?}"))
    };
    let get = by_target("/echo/get?x=1");
    assert_eq!(get.method, "GET");
    assert!(get.body.is_empty());
    assert!(
        get.headers.iter().any(|(k, _)| k == "x-forwarded-for"),
        "lb's forwarding fields on the copy: {:?}",
        get.headers
    );
    for t in ["/echo/post", "/echo/chunked"] {
        let c = by_target(t);
        assert_eq!(c.method, "POST");
        assert!(
            c.body == bytes,
            "{t}: {} bytes, not the client's",
            c.body.len()
        );
    }
    wait_for("three answered copies", Duration::from_secs(5), || {
        (mirrored(&lb, "answered") == 3).then_some(())
    });
    assert_eq!(mirrored(&lb, "failed"), 0);
    assert_eq!(mirrored(&lb, "dropped"), 0);
}

#[test]
fn a_slow_mirror_adds_nothing_to_the_clients_latency() {
    let a = Backend::start("a");
    let shadow = Recorder::start(Some(Duration::from_millis(1500)));
    let lb = Lb::start(&config(&a, shadow.backend.addr, ""));
    // Well under the mirror's 1.5 s each (a copy waited for would show), with room for a
    // loaded machine.
    for i in 0..3 {
        let (status, _, secs) = curl(&format!("http://{}/echo/{i}", lb.addr), &[]);
        assert_eq!(status, 200);
        assert!(secs < 1.0, "request {i} took {secs}s behind a 1.5s mirror");
    }
    wait_for("the slow copies answered", Duration::from_secs(10), || {
        (mirrored(&lb, "answered") == 3).then_some(())
    });
}

#[test]
fn a_mirror_that_never_answers_is_bounded_and_one_that_is_down_costs_nothing() {
    let a = Backend::start("a");
    let shadow = Recorder::start(None);
    let lb = Lb::start(&config(&a, shadow.backend.addr, ", max_in_flight = 2"));
    for i in 0..6 {
        let (status, _, secs) = curl(&format!("http://{}/echo/{i}", lb.addr), &[]);
        assert_eq!(status, 200);
        assert!(secs < 0.5, "request {i} took {secs}s");
    }
    // Two copies wait on the silent mirror; the other four found no room.
    assert_eq!(mirrored(&lb, "dropped"), 4);
    wait_for("the two copies timed out", Duration::from_secs(10), || {
        (mirrored(&lb, "failed") == 2).then_some(())
    });
    assert_eq!(shadow.copies().len(), 2);
    drop(lb);

    // A mirror that is down: every copy fails, no request does; a body over max_body_bytes is
    // not copied at all.

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lb = Lb::start(&config(&a, closed, ", max_body_bytes = 10"));
    for i in 0..5 {
        let (status, body, _) = curl(&format!("http://{}/echo/{i}", lb.addr), &[]);
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = curl(
        &format!("http://{}/echo/big", lb.addr),
        &["--data-binary", "more than ten bytes"],
    );
    assert_eq!(status, 200);
    wait_for("five failed copies", Duration::from_secs(5), || {
        (mirrored(&lb, "failed") == 5).then_some(())
    });
    assert_eq!(mirrored(&lb, "dropped"), 1);
    // The mirror's failures are not the primary's: no retries, no errors counted there.
    let metrics = lb.metrics();
    assert!(
        metrics.contains("lb_retries_total{upstream=\"api\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_share_of_requests_is_copied_and_a_reload_changes_it() {
    let a = Backend::start("a");
    let shadow = Recorder::start(Some(Duration::ZERO));
    let lb = Lb::start(&config(&a, shadow.backend.addr, ", percent = 25"));
    let n = 400;
    let mut conn = Conn::open(lb.addr).unwrap();
    for i in 0..n {
        let r = conn.send("GET", &format!("/echo/{i}"), &[], b"").unwrap();
        assert_eq!(r.status, 200);
    }
    let answered = wait_for("the copies settled", Duration::from_secs(5), || {
        let a = mirrored(&lb, "answered");
        (a == shadow.copies().len() as u64).then_some(a)
    });
    // 25% of 400 is 100; a binomial's 5 standard deviations are about 43.
    assert!((57..=143).contains(&answered), "{answered} of {n} copied");

    lb.write_config(&config(&a, shadow.backend.addr, ", percent = 100"));
    let (code, body) = lb.reload();
    assert_eq!(code, 200, "{body}");
    let before = shadow.copies().len();
    for i in 0..20 {
        let r = conn
            .send("GET", &format!("/echo/after/{i}"), &[], b"")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    wait_for(
        "every request copied after the reload",
        Duration::from_secs(5),
        || (shadow.copies().len() == before + 20).then_some(()),
    );
}
