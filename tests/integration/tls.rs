//! HTTPS and HTTP/2 on the client side, with clients lb did not write: curl (HTTP/1.1 and
//! HTTP/2 over TLS, h2c with prior knowledge) and h2load. Certificates are chosen by SNI and
//! swapped without a restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// lb with a plain listener (`h2c` on) and an HTTPS listener, two certificates (`api.test` first,
/// then `*.other.test`), and two upstreams routed by host.
struct Tls {
    lb: Lb,
    _backends: (Backend, Backend),
    dir: PathBuf,
    ca: Ca,
    cacert: String,
    tls_port: u16,
}

impl Tls {
    fn start(tls_extra: &str) -> Tls {
        Tls::start_with(tls_extra, |a, b, _| {
            format!(
                "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.other]\nbackends = [\"{}\"]\n\n\
                 [[routes]]\nhost = \"x.other.test\"\nupstream = \"other\"\n[[routes]]\nupstream = \"api\"\n",
                a.addr, b.addr
            )
        })
    }

    /// [`Tls::start`] with other upstreams and routes: `body(a, b, tls_port)`.
    fn start_with(tls_extra: &str, body: impl FnOnce(&Backend, &Backend, u16) -> String) -> Tls {
        let dir = temp_dir("tls");
        let ca = Ca::new();
        let cacert = dir.join("ca.pem");
        ca.write(&cacert);
        ca.leaf_for(
            &["api.test"],
            "api one",
            90,
            &dir.join("api.pem"),
            &dir.join("api.key"),
        );
        ca.leaf_for(
            &["*.other.test"],
            "other",
            90,
            &dir.join("other.pem"),
            &dir.join("other.key"),
        );
        let (a, b) = (Backend::start("a"), Backend::start("b"));
        let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
        let header = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\nh2c = true\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\""
        );
        let d = dir.display();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\nh2c = true\n\
             [server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n{tls_extra}\n\
             certificates = [\n  {{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }},\n  {{ cert = \"{d}/other.pem\", key = \"{d}/other.key\" }},\n]\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{}",
            body(&a, &b, tls_port)
        );
        std::fs::write(dir.join("lb.toml"), text).unwrap();
        let lb = Lb::spawn(dir.clone(), port, admin_port, header);
        lb.wait_ready();
        Tls {
            lb,
            _backends: (a, b),
            dir,
            ca,
            cacert: cacert.display().to_string(),
            tls_port,
        }
    }

    /// `https://NAME:PORT/PATH` resolved to 127.0.0.1 (so SNI is NAME), verified against the CA.
    fn https(&self, name: &str, path: &str, args: &[&str]) -> Curl {
        let resolve = format!("{name}:{}:127.0.0.1", self.tls_port);
        let url = format!("https://{name}:{}{path}", self.tls_port);
        let mut all = vec!["--cacert", &self.cacert, "--resolve", &resolve];
        all.extend_from_slice(args);
        curl(&url, &all)
    }

    /// The subject of the certificate a new handshake for `name` gets.
    fn subject(&self, name: &str) -> String {
        let c = self.https(name, "/", &["-v"]);
        assert_eq!(c.code, 200, "{}", c.err);
        c.err
            .lines()
            .find_map(|l| l.split_once("subject: ").map(|(_, s)| s.to_string()))
            .unwrap_or_else(|| panic!("no subject in curl -v output:\n{}", c.err))
    }
}

/// What curl reported: status, HTTP version (`1.1`, `2`), body, stderr.
struct Curl {
    code: u16,
    version: String,
    body: String,
    err: String,
}

fn curl(url: &str, args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut tail = tail.split(' ');
    Curl {
        code: tail.next().and_then(|c| c.parse().ok()).unwrap_or(0),
        version: tail.next().unwrap_or("").to_string(),
        body: body.to_string(),
        err: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// h2load's `N succeeded, M failed` and the count of 2xx answers.
fn h2load(url: &str, requests: usize) -> (usize, usize, usize, String) {
    let out = Command::new("h2load")
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            "4",
            "-m",
            "10",
            "-T",
            "10",
            url,
        ])
        .output()
        .expect("h2load runs (scripts/setup.sh installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let num = |line: &str, after: &str| -> usize {
        line.split(after)
            .nth(1)
            .and_then(|r| r.trim().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX)
    };
    let requests_line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary from h2load:\n{text}"));
    let status_line = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("");
    (
        num(requests_line, "started,").min(num(requests_line, "done,")),
        num(requests_line, "errored,"),
        num(status_line, "status codes:"),
        text,
    )
}

#[test]
fn https_with_certificates_by_sni_http1_and_http2() {
    let t = Tls::start("");
    // SNI picks the certificate: exact name, wildcard, and the first one for anything else.
    assert!(t.subject("api.test").contains("api one"));
    assert!(t.subject("x.other.test").contains("other"));
    let c = t.https("unknown.test", "/", &["-k", "-v"]);
    assert_eq!(c.code, 200, "{}", c.err);
    assert!(
        c.err.contains("api one"),
        "the first certificate is the default"
    );

    // ALPN: HTTP/2 by default, HTTP/1.1 when asked; routing by :authority as by Host.
    let h2 = t.https("x.other.test", "/echo", &["--http2"]);
    assert_eq!((h2.code, h2.version.as_str()), (200, "2"), "{}", h2.err);
    assert!(h2.body.contains("\"backend\":\"b\""), "{}", h2.body);
    let h1 = t.https("api.test", "/echo", &["--http1.1"]);
    assert_eq!((h1.code, h1.version.as_str()), (200, "1.1"), "{}", h1.err);
    assert!(h1.body.contains("\"backend\":\"a\""), "{}", h1.body);
    for body in [&h2.body, &h1.body] {
        // The backend (HTTP/1.1) is told the client spoke HTTPS.
        assert!(body.contains("[\"x-forwarded-proto\",\"https\"]"), "{body}");
        assert!(body.contains("proto=https"), "{body}");
        assert!(body.contains("\"version\":\"HTTP/1.1\""), "{body}");
    }
    // :authority became Host for the HTTP/1.1 backend.
    let lower = h2.body.to_ascii_lowercase();
    assert!(lower.contains("[\"host\",\"x.other.test:"), "{}", h2.body);

    // A POST body over HTTP/2 reaches the backend (no length: streamed, chunked upstream).
    let post = t.https(
        "api.test",
        "/echo",
        &["--http2", "--data-binary", "0123456789"],
    );
    assert_eq!(post.code, 200, "{}", post.err);
    assert!(post.body.contains("\"body_bytes\":10"), "{}", post.body);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = curl(&format!("http://127.0.0.1:{}/", t.tls_port), &[]);
    assert_ne!(plain.code, 200);

    // h2load, many streams over few connections.
    let url = format!("https://127.0.0.1:{}/", t.tls_port);
    let (done, errored, ok, text) = h2load(&url, 2000);
    assert_eq!((done, errored, ok), (2000, 0, 2000), "{text}");
}

#[test]
fn h2c_with_prior_knowledge_and_http1_on_one_plain_listener() {
    let t = Tls::start("");
    let url = format!("http://{}/echo", t.lb.addr);
    let h2 = curl(&url, &["--http2-prior-knowledge"]);
    assert_eq!((h2.code, h2.version.as_str()), (200, "2"), "{}", h2.err);
    assert!(
        h2.body.contains("[\"x-forwarded-proto\",\"http\"]"),
        "{}",
        h2.body
    );
    let h1 = curl(&url, &[]);
    assert_eq!((h1.code, h1.version.as_str()), (200, "1.1"), "{}", h1.err);

    // A request shorter than the HTTP/2 preface is answered at once: telling the protocols
    // apart never waits for bytes that will not come.
    let mut c = Conn::open(t.lb.addr).unwrap();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    std::io::Write::write_all(c.stream(), b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_response(false).expect("answered within 2 s");
    assert_eq!(r.status, 200);

    let (done, errored, ok, text) = h2load(&format!("http://{}/", t.lb.addr), 2000);
    assert_eq!((done, errored, ok), (2000, 0, 2000), "{text}");
}

#[test]
fn certificates_swap_without_restart_and_without_failed_requests() {
    let t = Tls::start("");
    assert!(t.subject("api.test").contains("api one"));

    // New connections (one handshake each) keep coming while the certificate changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let (cacert, port) = (t.cacert.clone(), t.tls_port);
        std::thread::spawn(move || {
            let resolve = format!("api.test:{port}:127.0.0.1");
            let url = format!("https://api.test:{port}/");
            let mut errors = Vec::new();
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = curl(&url, &["--cacert", &cacert, "--resolve", &resolve]);
                done.fetch_add(1, Ordering::Relaxed);
                if c.code != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("{} {}", c.code, c.err));
                }
            }
            errors
        })
    };
    let seen = |n: usize| {
        wait_for("requests during the swap", Duration::from_secs(20), || {
            (done.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    seen(5);

    // Renewed in place (write and rename): the file watcher reloads, no signal needed.
    let api = (t.dir.join("api.pem"), t.dir.join("api.key"));
    t.ca.leaf_for(&["api.test"], "api two", 60, &api.0, &api.1);
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        t.subject("api.test").contains("api two").then_some(())
    });
    let after = done.load(Ordering::Relaxed);
    seen(after + 5);

    // An expired replacement does not fail the reload (the other certificate is usable): it is
    // warned about with its key path, and the running certificate from those files stays.
    t.ca.leaf_for(&["api.test"], "api expired", -1, &api.0, &api.1);
    let (code, body) = t.lb.reload();
    assert_eq!(code, 200, "{body}");
    let text = body.to_string();
    for want in [
        "server.tls.certificates[0].cert: warning: the certificate expired on",
        "server.tls.certificates[0].cert: warning: the certificate loaded before from these files",
    ] {
        assert!(text.contains(want), "{want:?} in {body}");
    }
    assert!(t.subject("api.test").contains("api two"));
    assert!(t.subject("x.other.test").contains("other"));
    // A good one applies (SIGHUP, or the watcher if it is first).
    t.ca.leaf_for(&["api.test"], "api three", 60, &api.0, &api.1);
    t.lb.proc.signal("-HUP");
    wait_for(
        "the certificate after SIGHUP",
        Duration::from_secs(10),
        || t.subject("api.test").contains("api three").then_some(()),
    );
    let after = done.load(Ordering::Relaxed);
    seen(after + 5);

    stop.store(true, Ordering::Relaxed);
    let errors = client.join().unwrap();
    assert!(
        errors.is_empty(),
        "failed requests during the swaps: {errors:?}"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[test]
fn tls_1_3_only_refuses_tls_1_2() {
    let t = Tls::start("min_version = \"1.3\"\nhttp2 = false");
    let ok = t.https("api.test", "/", &["--tlsv1.3"]);
    assert_eq!((ok.code, ok.version.as_str()), (200, "1.1"), "{}", ok.err);
    let old = t.https("api.test", "/", &["--tls-max", "1.2"]);
    assert_eq!(old.code, 0, "TLS 1.2 must fail the handshake: {}", old.err);
    // http2 = false: ALPN offers HTTP/1.1 only, so curl's HTTP/2 request falls back.
    let h = t.https("api.test", "/", &["--http2"]);
    assert_eq!((h.code, h.version.as_str()), (200, "1.1"), "{}", h.err);
}

fn tls_config(server_tls: &str, listen: &str) -> String {
    format!(
        "[server]\nlisten = [{listen}]\n[server.tls]\n{server_tls}\n[upstreams.api]\nbackends = [\"127.0.0.1:9\"]\n"
    )
}

#[test]
fn check_reports_tls_problems_with_key_paths() {
    let dir = temp_dir("tls-check");
    let ca = Ca::new();
    let d = dir.display();
    ca.leaf_for(&["a.test"], "a", 90, &dir.join("a.pem"), &dir.join("a.key"));
    ca.leaf_for(
        &["a.test", "b.test"],
        "ab",
        90,
        &dir.join("ab.pem"),
        &dir.join("ab.key"),
    );
    ca.leaf_for(
        &["old.test"],
        "old",
        -2,
        &dir.join("old.pem"),
        &dir.join("old.key"),
    );
    ca.leaf_for(
        &["soon.test"],
        "soon",
        5,
        &dir.join("soon.pem"),
        &dir.join("soon.key"),
    );

    // TLS only (no plain listener) is fine; a name covered twice and a certificate expiring
    // soon are warnings.
    let good = tls_config(
        &format!(
            "listen = [\"0.0.0.0:8443\", \"[::]:8443\"]\ncertificates = [{{ cert = \"{d}/a.pem\", key = \"{d}/a.key\" }}, {{ cert = \"{d}/ab.pem\", key = \"{d}/ab.key\" }}, {{ cert = \"{d}/soon.pem\", key = \"{d}/soon.key\" }}]"
        ),
        "",
    );
    let (ok, out) = check_config(&good);
    assert!(ok, "{out}");
    // IPv6 listeners are v6-only, so both wildcards can be listed, as in NGINX.
    assert!(out.contains("https listeners: 0.0.0.0:8443, [::]:8443 (h2, http/1.1; certificates: a.test | a.test b.test | soon.test)"), "{out}");
    assert!(
        out.contains("server.tls.certificates[1].cert: warning: a.test is also covered by server.tls.certificates[0]"),
        "{out}"
    );
    assert!(
        out.contains("server.tls.certificates[2].cert: warning: ") && out.contains("expires"),
        "{out}"
    );

    // Errors, all named: an expired certificate, an unreadable key, an unknown version, and
    // (separately) an empty certificate list and no listener at all.
    let bad = tls_config(
        &format!(
            "listen = [\"127.0.0.1:8443\"]\nmin_version = \"1.1\"\ncertificates = [{{ cert = \"{d}/old.pem\", key = \"{d}/old.key\" }}, {{ cert = \"{d}/a.pem\", key = \"{d}/missing.key\" }}]"
        ),
        "\"127.0.0.1:8080\"",
    );
    let (ok, out) = check_config(&bad);
    assert!(!ok, "{out}");
    for want in [
        "server.tls.certificates[0].cert: the certificate expired on",
        "server.tls.certificates[1].key: cannot read",
        "server.tls.min_version: unknown TLS version \"1.1\"",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let (ok, out) = check_config(&tls_config(
        "listen = [\"127.0.0.1:8443\"]\ncertificates = []",
        "",
    ));
    assert!(!ok);
    assert!(
        out.contains("server.tls.certificates: at least one certificate is required"),
        "{out}"
    );
    assert!(
        !out.contains("server.listen:"),
        "TLS listeners count as listeners: {out}"
    );
    let (ok, out) =
        check_config("[server]\nlisten = []\n[upstreams.api]\nbackends = [\"127.0.0.1:9\"]\n");
    assert!(!ok);
    assert!(
        out.contains("server.listen: at least one listener is required"),
        "{out}"
    );
}

/// tests/h2/rapid_reset.py against `addr`: `streams` opened and reset, `pause_ms` between the
/// two; returns (streams sent before the connection closed, whether it closed).
fn rapid_reset(addr: std::net::SocketAddr, streams: usize, pause_ms: u64) -> (u64, bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/rapid_reset.py");
    let out = Command::new(venv_python())
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            streams.to_string(),
            pause_ms.to_string(),
        ])
        .output()
        .expect("run tests/h2/rapid_reset.py (scripts/setup.sh installs its h2 library)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (v["sent"].as_u64().unwrap(), v["closed"] == true, text)
}

#[test]
fn http2_rapid_reset_floods_are_cut_off_while_other_clients_are_served() {
    // A backend that takes a while, so every stream lb starts costs something.
    let b = Backend::start_with("slow", &["--delay", "20ms"]);
    let lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", b.addr),
        "h2c = true",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let served = {
        let (stop, url) = (stop.clone(), format!("http://{}/", lb.addr));
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) && codes.len() < 500 {
                codes.push(curl(&url, &["--http2-prior-knowledge"]).code);
            }
            codes
        })
    };

    // Streams reset as fast as they are opened: the h2 layer sends GOAWAY within a few hundred.
    let (sent, closed, text) = rapid_reset(lb.addr, 20_000, 0);
    assert!(closed && sent < 2_000, "{text}");
    // Paced so that lb accepts (and forwards) each stream before its reset: lb closes the
    // connection once most of its streams were abandoned.
    let (sent, closed, text) = rapid_reset(lb.addr, 2_000, 5);
    assert!(closed && sent <= 200, "{text}");
    let log = lb.log_text();
    assert!(log.contains("(rapid reset): connection closed"), "{log}");
    // A client that cancels some requests is not cut off.
    let (sent, closed, text) = rapid_reset(lb.addr, 40, 5);
    assert!(!closed && sent == 40, "{text}");

    stop.store(true, Ordering::Relaxed);
    let codes = served.join().unwrap();
    assert!(!codes.is_empty());
    assert!(codes.iter().all(|c| *c == 200), "other clients: {codes:?}");
}

#[test]
fn https_to_http1_backends_verified_against_a_private_ca() {
    let dir = temp_dir("tls-backend");
    let ca = Ca::new();
    let cacert = dir.join("ca.pem");
    ca.write(&cacert);
    let (cert, key) = (dir.join("b.pem"), dir.join("b.key"));
    ca.leaf_for(&["backend.internal"], "backend", 30, &cert, &key);
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let b = Backend::start_with("secure", &["--tls-cert", &c, "--tls-key", &k]);
    let other = Ca::new();
    let other_pem = dir.join("other.pem");
    other.write(&other_pem);
    let body = format!(
        "[upstreams.good]\nbackends = [\"{a}\"]\n[upstreams.good.tls]\nsni = \"backend.internal\"\nca_file = \"{ca}\"\n\
         [upstreams.good.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\n\
         [upstreams.wrong]\nretries = 0\nbackends = [\"{a}\"]\n[upstreams.wrong.tls]\nsni = \"backend.internal\"\nca_file = \"{o}\"\n\
         [[routes]]\npath_prefix = \"/wrong/\"\nupstream = \"wrong\"\n[[routes]]\nupstream = \"good\"\n",
        a = b.addr,
        ca = cacert.display(),
        o = other_pem.display()
    );
    let lb = Lb::start(&body);
    // The HTTP health check speaks TLS to it too.
    assert_eq!(lb.backend_state("good", &b.addr.to_string()), "up");
    let r = lb.get("/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "secure");
    // More requests over the pooled TLS connections.
    for _ in 0..20 {
        assert_eq!(lb.get("/").status, 200);
    }
    // A certificate the configured CA did not sign: the connection fails, 502.
    let r = lb.get("/wrong/x");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn plain_requests_redirect_to_https_and_lb_answers_respond_routes() {
    // NGINX's `server { listen 80; return 301 https://$host$request_uri; }` beside the HTTPS
    // server, and a `location = /healthz { return 200 "ok"; }` on both.
    let tls = Tls::start_with("", |a, _, tls_port| {
        format!(
            "[upstreams.api]\nbackends = [\"{}\"]\n\n\
             [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host:{tls_port}$request_uri\"\n\
             [[routes]]\nscheme = \"https\"\nupstream = \"api\"\n\
             [[routes]]\npath_exact = \"/healthz\"\nrespond = 200\nbody = \"ok from $scheme\\n\"\n",
            a.addr
        )
    });
    let (port, tls_port) = (tls.lb.addr.port(), tls.tls_port);
    // Plain requests, api.test resolved for both listeners (curl -L goes from one to the other).
    let run = |url: &str, extra: &[&str]| {
        let resolve = [
            format!("api.test:{port}:127.0.0.1"),
            format!("api.test:{tls_port}:127.0.0.1"),
        ];
        let mut args = vec!["--cacert", &tls.cacert];
        for r in &resolve {
            args.extend(["--resolve", r.as_str()]);
        }
        args.extend_from_slice(extra);
        curl(url, &args)
    };
    // Plain: a 301 naming the HTTPS URL, query kept, host lower-cased without its port.
    let plain = format!("http://API.test:{port}/echo/x?y=1");
    let r = run(&plain, &["-D", "-"]);
    assert_eq!(r.code, 301, "{} {}", r.body, r.err);
    let location = r
        .body
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("location"))
        })
        .map(|(_, v)| v.trim().to_string());
    assert_eq!(
        location,
        Some(format!("https://api.test:{tls_port}/echo/x?y=1")),
        "{}",
        r.body
    );
    // curl follows it to the HTTPS listener, which proxies.
    let r = run(&plain, &["-L"]);
    assert_eq!(r.code, 200, "{} {}", r.body, r.err);
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["path"], "/echo/x?y=1", "{echo}");
    // /healthz is lb's own answer on both listeners, never a redirect.
    let r = run(&format!("http://api.test:{port}/healthz"), &[]);
    assert_eq!((r.code, r.body.as_str()), (200, "ok from http\n"));
    let r = tls.https("api.test", "/healthz", &[]);
    assert_eq!((r.code, r.body.as_str()), (200, "ok from https\n"));
    // Nothing reached the backend but the followed request.
    let m = tls.lb.metrics();
    let line = m
        .lines()
        .find(|l| l.starts_with("lb_requests_total{") && l.contains("backend=\"127.0.0.1"))
        .unwrap_or_else(|| panic!("{m}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// `sample-backend` serving HTTPS with a certificate for `names` signed by `ca`.
fn tls_backend(ca: &Ca, dir: &std::path::Path, name: &str, names: &[&str]) -> Backend {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    ca.leaf_for(names, name, 30, &cert, &key);
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    Backend::start_with(name, &["--tls-cert", &c, "--tls-key", &k])
}

#[test]
fn ip_backends_without_sni_are_verified_against_their_address() {
    let dir = temp_dir("tls-ip-backend");
    let ca = Ca::new();
    let cacert = dir.join("ca.pem");
    ca.write(&cacert);
    // Both on 127.0.0.1, both signed by the configured CA; only one names 127.0.0.1.
    let ip = tls_backend(&ca, &dir, "ip", &["127.0.0.1"]);
    let named = tls_backend(&ca, &dir, "named", &["backend.internal"]);
    let body = format!(
        "[upstreams.ip]\nbackends = [\"{ip}\"]\n[upstreams.ip.tls]\nca_file = \"{ca}\"\n\
         [upstreams.named]\nretries = 0\nbackends = [\"{named}\"]\n[upstreams.named.tls]\nca_file = \"{ca}\"\n\
         [upstreams.unverified]\nbackends = [\"{named}\"]\n[upstreams.unverified.tls]\nverify = false\n\
         [[routes]]\npath_prefix = \"/named/\"\nupstream = \"named\"\n\
         [[routes]]\npath_prefix = \"/unverified/\"\nreplace_prefix = \"/\"\nupstream = \"unverified\"\n\
         [[routes]]\nupstream = \"ip\"\n",
        ip = ip.addr,
        named = named.addr,
        ca = cacert.display()
    );
    let lb = Lb::start(&body);
    // The certificate names the address: verified, served.
    let r = lb.get("/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "ip");
    // A certificate from the right CA that does not name 127.0.0.1 is refused: 502.
    let r = lb.get("/named/x");
    assert_eq!(r.status, 502, "{}", r.text());
    // verify = false still connects to it (nothing checked, as configured and warned about).
    let r = lb.get("/unverified/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "named");
    // No sni for an IP backend is no longer a warning: there is something to verify.
    let (ok, out) = check_config(&format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n{body}"));
    assert!(ok, "{out}");
    assert!(!out.contains(".tls.sni"), "{out}");
}

/// `[server.tls]` on 127.0.0.1:`tls_port` with `certificates` (cert, key) in `dir`, one upstream.
fn server_tls_config(
    port: u16,
    tls_port: u16,
    dir: &std::path::Path,
    certs: &[&str],
    backend: &str,
) -> String {
    let d = dir.display();
    let entries: Vec<String> = certs
        .iter()
        .map(|n| format!("{{ cert = \"{d}/{n}.pem\", key = \"{d}/{n}.key\" }}"))
        .collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\n\
         [server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncertificates = [{}]\n\n\
         [upstreams.api]\nbackends = [\"{backend}\"]\n",
        entries.join(", ")
    )
}

#[test]
fn one_unusable_certificate_among_several_is_left_out_with_a_warning() {
    let dir = temp_dir("tls-one-bad");
    let ca = Ca::new();
    let cacert = dir.join("ca.pem");
    ca.write(&cacert);
    let leaf = |n: &str, names: &[&str], days: i64| {
        ca.leaf_for(
            names,
            n,
            days,
            &dir.join(format!("{n}.pem")),
            &dir.join(format!("{n}.key")),
        )
    };
    leaf("old", &["old.test"], -1);
    leaf("api", &["api.test"], 90);
    leaf("nosan", &[], 90);
    leaf("other", &["*.other.test"], 90);
    let b = Backend::start("a");
    let (port, tls_port) = (free_port(), free_port());
    let all = ["old", "api", "nosan", "other"];
    let text = server_tls_config(port, tls_port, &dir, &all, &b.addr.to_string());

    // --check: warnings naming each bad entry, exit 0; the summary lists what is served.
    let (ok, out) = check_config(&text);
    assert!(ok, "{out}");
    for want in [
        "server.tls.certificates[0].cert: warning: the certificate expired on",
        "server.tls.certificates[2].cert: warning: the certificate has no subject alternative name",
        "this certificate is not served (the other certificates are)",
        "certificates: api.test | *.other.test)",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    // Only unusable certificates: errors, as before, and lb does not start.
    let bad = server_tls_config(port, tls_port, &dir, &["old", "nosan"], &b.addr.to_string());
    let (ok, out) = check_config(&bad);
    assert!(!ok, "{out}");
    assert!(
        out.contains("server.tls.certificates[0].cert: the certificate expired on")
            && out.contains("server.tls.certificates[1].cert: the certificate has no subject"),
        "{out}"
    );
    assert!(!out.contains("warning: the certificate expired"), "{out}");
    let bad_path = dir.join("bad.toml");
    std::fs::write(&bad_path, &bad).unwrap();
    let run = Command::new(LB)
        .arg("--config")
        .arg(&bad_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(
        err.contains("server.tls.certificates[0].cert: the certificate expired on"),
        "{err}"
    );

    // lb starts with the usable ones and serves them over HTTPS.
    let admin_port = free_port();
    let header = format!("[server]\nlisten = [\"127.0.0.1:{port}\"]");
    std::fs::write(
        dir.join("lb.toml"),
        format!("{text}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"),
    )
    .unwrap();
    let lb = Lb::spawn(dir.clone(), port, admin_port, header);
    lb.wait_ready();
    let cacert = cacert.display().to_string();
    let https = |name: &str| {
        let resolve = format!("{name}:{tls_port}:127.0.0.1");
        let url = format!("https://{name}:{tls_port}/");
        curl(&url, &["--cacert", &cacert, "--resolve", &resolve, "-v"])
    };
    for name in ["api.test", "x.other.test"] {
        let c = https(name);
        assert_eq!(c.code, 200, "{name}: {}", c.err);
    }
    assert!(lb
        .log_text()
        .contains("server.tls.certificates[0].cert: warning: the certificate expired on"));

    // A reload where a served certificate has gone bad keeps serving it (while it is valid) and
    // the others, with a warning.
    leaf("other", &["*.other.test"], -1);
    let (code, body) = lb.reload();
    assert_eq!(code, 200, "{body}");
    let reloaded = body.to_string();
    for want in [
        "server.tls.certificates[3].cert: warning: the certificate expired on",
        "server.tls.certificates[3].cert: warning: the certificate loaded before from these files",
    ] {
        assert!(reloaded.contains(want), "{want:?} in {body}");
    }
    for name in ["api.test", "x.other.test"] {
        let c = https(name);
        assert_eq!(c.code, 200, "{name}: {}", c.err);
    }
}

#[test]
fn reject_unknown_sni_refuses_handshakes_no_certificate_covers() {
    let t = Tls::start("reject_unknown_sni = true");
    // Known names: exact and wildcard.
    assert!(t.subject("api.test").contains("api one"));
    assert!(t.subject("x.other.test").contains("other"));
    // A name no certificate covers: no certificate at all, the handshake fails (even with -k).
    let c = t.https("unknown.test", "/", &["-k"]);
    assert_eq!(c.code, 0, "{} {}", c.body, c.err);
    // No SNI (curl sends none for an IP address): refused too.
    let c = curl(&format!("https://127.0.0.1:{}/", t.tls_port), &["-k"]);
    assert_eq!(c.code, 0, "{} {}", c.body, c.err);
    // Off (the default), https_with_certificates_by_sni_http1_and_http2: the first certificate.
    let (ok, out) = check_config(&tls_config(
        &format!(
            "listen = [\"127.0.0.1:8443\"]\nreject_unknown_sni = true\ncertificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}]",
            d = t.dir.display()
        ),
        "",
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("(h2, http/1.1; certificates: api.test; unknown SNI refused)"),
        "{out}"
    );
    let (ok, out) = check_config(&tls_config(
        "listen = [\"127.0.0.1:8443\"]\nreject_unknown_sni = \"yes\"\ncertificates = []",
        "",
    ));
    assert!(!ok);
    assert!(
        out.contains(
            "server.tls.reject_unknown_sni: invalid type: string \"yes\", expected a boolean"
        ),
        "{out}"
    );
}

/// A TLS handshake is part of the connection lb counts and times: a client that connects to an
/// HTTPS listener and never says hello holds one of `server.max_connections` (so the cap sheds
/// others) and is closed after `server.header_timeout`, not after pingora's own 60 s.
#[test]
fn tls_handshakes_count_against_max_connections_and_header_timeout() {
    let dir = temp_dir("tls-limits");
    let ca = Ca::new();
    let cacert = dir.join("ca.pem");
    ca.write(&cacert);
    ca.leaf_for(
        &["api.test"],
        "api",
        30,
        &dir.join("api.pem"),
        &dir.join("api.key"),
    );
    let a = Backend::start("a");
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let server = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\n\
         header_timeout = \"4s\"\nmax_connections = 2\n"
    );
    let header = format!("{server}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"");
    let d = dir.display();
    let text = format!(
        "{server}[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n\
         certificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}]\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[upstreams.api]\nbackends = [\"{}\"]\n",
        a.addr
    );
    std::fs::write(dir.join("lb.toml"), text).unwrap();
    let lb = Lb::spawn(dir.clone(), port, admin_port, header);
    lb.wait_ready();

    // Two connections that never say hello hold both connection slots. (One that lb accepts
    // after the plain request below is itself over the cap and closed: it is opened again.)
    let open = |s: &std::net::TcpStream| {
        s.set_nonblocking(true).unwrap();
        let alive =
            matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        alive
    };
    let mut silent: Vec<std::net::TcpStream> = Vec::new();
    let mut opened = std::time::Instant::now();
    wait_for(
        "a plain request shed by the cap",
        Duration::from_secs(3),
        || {
            silent.retain(|s| open(s));
            while silent.len() < 2 {
                silent.push(std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap());
                opened = std::time::Instant::now();
            }
            let r = try_request(lb.addr, "GET", "/", &[], b"").ok()?;
            (r.status == 503).then_some(())
        },
    );
    // ... until header_timeout closes them.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let read = std::io::Read::read(&mut s, &mut [0u8; 1]);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    let resolve = format!("api.test:{tls_port}:127.0.0.1");
    let c = curl(
        &format!("https://api.test:{tls_port}/"),
        &[
            "--cacert",
            &cacert.display().to_string(),
            "--resolve",
            &resolve,
        ],
    );
    assert_eq!(c.code, 200, "{}", c.err);
}

/// `routes[i].listen` on an HTTPS listener: its routes serve TLS connections there (HTTP/1.1
/// and HTTP/2 streams alike), the plain listener keeps its own (also over h2c).
#[test]
fn routes_by_listener_over_https_and_http2() {
    let t = Tls::start_with("", |a, b, tls_port| {
        format!(
            "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.other]\nbackends = [\"{}\"]\n\n\
             [[routes]]\nlisten = \"127.0.0.1:{tls_port}\"\nupstream = \"other\"\n\
             [[routes]]\nupstream = \"api\"\npath_prefix = \"/echo/plain/\"\n",
            a.addr, b.addr
        )
    });
    let backend = |c: &Curl| {
        assert_eq!(c.code, 200, "{} {}", c.body, c.err);
        c.body.contains("\"backend\":\"b\"")
    };
    for args in [&["--http2"][..], &["--http1.1"]] {
        assert!(backend(&t.https("api.test", "/echo/x", args)), "{args:?}");
        // Routes without `listen` are on every listener; the TLS one's own default wins
        // only where they do not match.
        let plain = t.https("api.test", "/echo/plain/x", args);
        assert!(!backend(&plain), "{args:?}");
    }
    let on_plain = format!("http://{}/echo/x", t.lb.addr);
    let h2c = curl(&on_plain, &["--http2-prior-knowledge"]);
    assert_eq!((h2c.code, h2c.version.as_str()), (404, "2"), "{}", h2c.body);
    let h2c = curl(
        &format!("http://{}/echo/plain/x", t.lb.addr),
        &["--http2-prior-knowledge"],
    );
    assert_eq!(h2c.code, 200, "{}", h2c.err);
    assert!(h2c.body.contains("\"backend\":\"a\""), "{}", h2c.body);
}
