//! gRPC end to end through lb with Python grpcio on both sides (tests/grpc/peer.py: a client and
//! a server lb did not write): unary, server-streaming and bidirectional calls, an error status
//! passed through, deadlines; lb's own answers in gRPC's terms (checked with curl); HTTP/2 to the
//! backends in cleartext (h2c) and over TLS with a private CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/peer.py")
}

/// A grpcio server named `name` (its answers start with `name:`), killed on drop.
struct GrpcServer {
    addr: String,
    child: Child,
}

impl GrpcServer {
    fn start(name: &str, tls: Option<(&Path, &Path)>) -> GrpcServer {
        let port = free_port();
        let mut cmd = Command::new(venv_python());
        cmd.arg(peer_script())
            .args(["server", "--port", &port.to_string(), "--name", name]);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the grpcio server");
        let addr = format!("127.0.0.1:{port}");
        wait_for("the grpcio server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        });
        GrpcServer { addr, child }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one client case (see peer.py) against `target`; returns its JSON line.
fn call(target: &str, case: &str, tls: Option<(&str, &str)>) -> serde_json::Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(peer_script()).args(["client", "--target", target]);
    if let Some((ca, authority)) = tls {
        cmd.args(["--ca", ca, "--authority", authority]);
    }
    let out = cmd.arg(case).output().expect("run the grpcio client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{case}: no JSON from the client ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// lb with h2c on its plain listener, an HTTPS listener (`api.test`), and `upstreams` after.
fn start_lb(dir: &Path, upstreams: &str) -> (Lb, u16) {
    let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let d = dir.display();
    let header = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\nh2c = true\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\""
    );
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\nh2c = true\n\
         [server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n\
         certificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}]\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{upstreams}\n"
    );
    std::fs::write(dir.join("lb.toml"), text).unwrap();
    let lb = Lb::spawn(dir.to_owned(), port, admin_port, header);
    lb.wait_ready();
    (lb, tls_port)
}

fn setup(tag: &str) -> (PathBuf, Ca, String) {
    let dir = temp_dir(tag);
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
    (dir, ca, cacert.display().to_string())
}

/// [`call`] over h2c with `:authority` `authority`.
fn call_as(target: &str, case: &str, authority: &str) -> serde_json::Value {
    let out = Command::new(venv_python())
        .arg(peer_script())
        .args(["client", "--target", target, "--authority", authority, case])
        .output()
        .expect("run the grpcio client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{case}: {e}: {text}"))
}

fn code(v: &serde_json::Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

#[test]
fn grpc_calls_pass_through_over_h2c_and_tls() {
    let (dir, _ca, cacert) = setup("grpc");
    let (g1, g2) = (GrpcServer::start("g1", None), GrpcServer::start("g2", None));
    let upstreams = format!(
        "[upstreams.grpc]\nprotocol = \"http2\"\nbackends = [\"{}\", \"{}\"]\n",
        g1.addr, g2.addr
    );
    let (lb, tls_port) = start_lb(&dir, &upstreams);
    let plain = lb.addr.to_string();
    let tls_target = format!("127.0.0.1:{tls_port}");
    let tls = Some((cacert.as_str(), "api.test"));

    for (target, tls) in [(plain.as_str(), None), (tls_target.as_str(), tls)] {
        let r = call(target, "unary", tls);
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["reply"].as_str().unwrap().ends_with(":hello"), "{r}");
        let r = call(target, "stream", tls);
        assert_eq!(r["replies"].as_array().map(Vec::len), Some(5), "{r}");
        // Bidirectional: every answer arrived before the next message was sent.
        let r = call(target, "chat", tls);
        let replies: Vec<&str> = r["replies"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(replies.len(), 5, "{r}");
        assert!(replies[4].ends_with(":m4"), "{r}");
        // The backend's error status and message arrive intact (trailers-only answer).
        let r = call(target, "fail", tls);
        assert_eq!(code(&r), "INVALID_ARGUMENT", "{r}");
        assert_eq!(r["details"], "bad request from the test: x", "{r}");
        let r = call(target, "deadline", tls);
        assert_eq!(code(&r), "DEADLINE_EXCEEDED", "{r}");
    }
    // The backends' own statuses are counted per backend: OK, and INVALID_ARGUMENT (3) twice.
    let m = lb.metrics();
    let count = |addr: &str, status: &str| -> u64 {
        let prefix =
            format!("lb_grpc_requests_total{{backend=\"{addr}\",grpc_status=\"{status}\",");
        m.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(count(&g1.addr, "0") > 0 && count(&g2.addr, "0") > 0, "{m}");
    assert_eq!(count(&g1.addr, "3") + count(&g2.addr, "3"), 2, "{m}");
    // Calls spread over both backends, on shared HTTP/2 connections.
    let r = call(&plain, "many", None);
    assert_eq!(r["count"], 200, "{r}");
    assert_eq!(r["backends"], serde_json::json!(["g1", "g2"]), "{r}");
}

/// curl's view of a unary gRPC call (`body` framed as one message): its status line and headers
/// (a trailers-only answer has `grpc-status` there). `host` sets `:authority`/`Host`.
fn curl_grpc(
    url: &str,
    path: &str,
    host: Option<&str>,
    body: &[u8],
    http2: bool,
    headers: &[&str],
) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("lb-grpc-body-{}-{n}", std::process::id()));
    let mut framed = vec![0u8, 0, 0, 0, body.len() as u8];
    framed.extend_from_slice(body);
    std::fs::write(&file, framed).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10"]);
    if http2 {
        cmd.arg("--http2-prior-knowledge");
    }
    if let Some(h) = host {
        cmd.args(["-H", &format!("host: {h}")]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}{path}"))
        .output()
        .expect("curl runs");
    let _ = std::fs::remove_file(&file);
    format!(
        "{}{}(curl: {})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    )
}

#[test]
fn lb_answers_grpc_calls_in_grpc_terms() {
    let (dir, _ca, _cacert) = setup("grpc-own");
    let g = GrpcServer::start("g", None);
    // Port 9 (discard): nothing listens there, so connecting is refused at once.
    let dead = "127.0.0.1:9";
    let upstreams = format!(
        "[upstreams.slow]\nprotocol = \"http2\"\nread_timeout = \"300ms\"\nbackends = [\"{}\"]\n\
         [upstreams.gone]\nprotocol = \"http2\"\nretries = 0\nbackends = [\"{dead}\"]\n\
         [upstreams.h1]\nbackends = [\"{}\"]\n\
         [[routes]]\nhost = \"gone.test\"\nupstream = \"gone\"\n\
         [[routes]]\nhost = \"limited.test\"\nrate_limits = [\"calls\"]\nupstream = \"slow\"\n\
         [[routes]]\nhost = \"answer.test\"\nrespond = 200\nbody = \"ok\"\n\
         [[routes]]\npath_prefix = \"/h1/\"\nupstream = \"h1\"\n\
         [[routes]]\nupstream = \"slow\"\n\
         [rate_limits.calls]\nrate = \"1/m\"\n",
        g.addr, g.addr
    );
    let (lb, _) = start_lb(&dir, &upstreams);
    let url = format!("http://{}", lb.addr);

    // lb's read_timeout ran out: DEADLINE_EXCEEDED, as HTTP 200 + application/grpc.
    let out = curl_grpc(&url, "/lb.test.LoadTest/Slow", None, b"3000", true, &[]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("content-type: application/grpc"), "{out}");
    assert!(out.contains("grpc-status: 4\r\n"), "{out}");
    assert!(out.contains("did not answer in time"), "{out}");
    // The same short reason as a plain-text answer's body.
    assert!(
        out.contains("grpc-message: upstream \"slow\" did not answer in time: read timed out after 300ms\r\n"),
        "{out}"
    );

    // The call's own deadline before any backend head: one HEADERS frame that ends the stream
    // (trailers-only), as nghttp shows the frames.
    let msg = dir.join("slow-3000.bin");
    std::fs::write(&msg, b"\x00\x00\x00\x00\x043000").unwrap();
    let out = Command::new("nghttp")
        .args([
            "-v",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ])
        .args(["-H", "grpc-timeout: 200m", "-d"])
        .arg(&msg)
        .arg(format!("{url}/lb.test.LoadTest/Slow"))
        .output()
        .expect("nghttp (nghttp2-client, installed with h2load by scripts/setup.sh)");
    let frames = String::from_utf8_lossy(&out.stdout);
    let heads: Vec<&str> = frames
        .lines()
        .filter(|l| l.contains("recv HEADERS frame"))
        .collect();
    assert_eq!(heads.len(), 1, "{frames}");
    assert!(heads[0].contains("flags=0x05"), "{frames}");
    assert!(frames.contains("grpc-status: 4"), "{frames}");
    assert!(!frames.contains("recv DATA"), "{frames}");

    // Nothing to connect to: UNAVAILABLE (curl, and grpcio's own reading of it).
    let out = curl_grpc(
        &url,
        "/lb.test.LoadTest/Process",
        Some("gone.test"),
        b"x",
        true,
        &[],
    );
    assert!(out.contains("grpc-status: 14\r\n"), "{out}");
    assert!(
        out.contains("grpc-message: upstream \"gone\": 1 attempt failed: connection refused\r\n"),
        "{out}"
    );
    let r = call_as(&lb.addr.to_string(), "unavailable", "gone.test");
    assert_eq!(code(&r), "UNAVAILABLE", "{r}");

    // Over a rate limit: RESOURCE_EXHAUSTED (a quota ran out), not UNAVAILABLE.
    let first = call_as(&lb.addr.to_string(), "unavailable", "limited.test");
    assert_eq!(code(&first), "", "the first call passes: {first}");
    let r = call_as(&lb.addr.to_string(), "unavailable", "limited.test");
    assert_eq!(code(&r), "RESOURCE_EXHAUSTED", "{r}");
    assert_eq!(r["details"], "rate limit \"calls\" exceeded", "{r}");

    // A path lb answers itself is no gRPC service: UNIMPLEMENTED, not a plain-text 200.
    let r = call_as(&lb.addr.to_string(), "unavailable", "answer.test");
    assert_eq!(code(&r), "UNIMPLEMENTED", "{r}");

    // A gRPC call routed to an HTTP/1 upstream would lose its trailers: refused, UNAVAILABLE.
    let out = curl_grpc(&url, "/h1/lb.test.LoadTest/Process", None, b"x", true, &[]);
    assert!(out.contains("grpc-status: 14\r\n"), "{out}");
    assert!(out.contains("gRPC needs protocol = \"http2\""), "{out}");

    // Counted by the client's protocol and the call's grpc-status (lb's own and the backend's).
    let m = lb.metrics();
    let has = |prefix: &str| m.lines().any(|l| l.starts_with(prefix));
    assert!(
        has("lb_grpc_requests_total{backend=\"\",grpc_status=\"14\",upstream=\"gone\"}"),
        "{m}"
    );
    assert!(
        has("lb_grpc_requests_total{backend=\"\",grpc_status=\"4\",upstream=\"slow\"}"),
        "{m}"
    );
    assert!(m.contains("protocol=\"http2\""), "{m}");

    // gRPC over HTTP/1.1 gets a clear refusal.
    let out = curl_grpc(&url, "/lb.test.LoadTest/Process", None, b"x", false, &[]);
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
    assert!(out.contains("gRPC needs HTTP/2"), "{out}");
}

#[test]
fn http2_to_backends_over_tls_verified_against_a_private_ca() {
    let (dir, ca, cacert) = setup("grpc-tls");
    ca.leaf_for(
        &["grpc.internal"],
        "grpc backend",
        30,
        &dir.join("g.pem"),
        &dir.join("g.key"),
    );
    let g = GrpcServer::start("secure", Some((&dir.join("g.pem"), &dir.join("g.key"))));
    let other = Ca::new();
    let other_pem = dir.join("other-ca.pem");
    other.write(&other_pem);
    let upstreams = format!(
        "[upstreams.good]\nprotocol = \"http2\"\nbackends = [\"{a}\"]\n[upstreams.good.tls]\nsni = \"grpc.internal\"\nca_file = \"{cacert}\"\n\
         [upstreams.good.health_check]\ntype = \"grpc\"\ninterval = \"200ms\"\n\
         [upstreams.wrong]\nprotocol = \"http2\"\nretries = 0\nbackends = [\"{a}\"]\n[upstreams.wrong.tls]\nsni = \"grpc.internal\"\nca_file = \"{o}\"\n\
         [upstreams.unverified]\nprotocol = \"http2\"\nbackends = [\"{a}\"]\n[upstreams.unverified.tls]\nsni = \"grpc.internal\"\nca_file = \"{o}\"\nverify = false\n\
         [[routes]]\nhost = \"wrong.test\"\nupstream = \"wrong\"\n\
         [[routes]]\nhost = \"unverified.test\"\nupstream = \"unverified\"\n\
         [[routes]]\nupstream = \"good\"\n",
        a = g.addr,
        o = other_pem.display()
    );
    let (lb, tls_port) = start_lb(&dir, &upstreams);
    let log = lb.log_text();
    assert!(
        log.contains(
            "upstreams.unverified.tls.verify: warning: backend certificates are not verified"
        ),
        "{log}"
    );
    // gRPC health checks over TLS and HTTP/2 keep it up.
    assert_eq!(lb.backend_state("good", &g.addr), "up");
    let target = format!("127.0.0.1:{tls_port}");
    let r = call(&target, "unary", Some((&cacert, "api.test")));
    assert_eq!(r["reply"], "secure:hello", "{r}");
    let r = call(&target, "chat", Some((&cacert, "api.test")));
    assert_eq!(r["replies"].as_array().map(Vec::len), Some(5), "{r}");

    // A backend certificate the configured CA did not sign: no connection, UNAVAILABLE.
    let url = format!("http://{}", lb.addr);
    let path = "/lb.test.LoadTest/Process";
    let out = curl_grpc(&url, path, Some("wrong.test"), b"x", true, &[]);
    assert!(out.contains("grpc-status: 14\r\n"), "{out}");
    // verify = false accepts it (and was warned about).
    let out = curl_grpc(&url, path, Some("unverified.test"), b"x", true, &[]);
    assert!(out.contains("HTTP/2 200"), "{out}");
    assert!(!out.contains("grpc-status: 14"), "{out}");
}

#[test]
fn grpc_health_checks_take_a_not_serving_backend_out() {
    let (dir, _ca, _cacert) = setup("grpc-health");
    let (g1, g2) = (GrpcServer::start("g1", None), GrpcServer::start("g2", None));
    let upstreams = format!(
        "[upstreams.grpc]\nprotocol = \"http2\"\nbackends = [\"{}\", \"{}\"]\n\
         [upstreams.grpc.health_check]\ntype = \"grpc\"\ninterval = \"200ms\"\nunhealthy_threshold = 1\n",
        g1.addr, g2.addr
    );
    let (lb, _) = start_lb(&dir, &upstreams);
    assert_eq!(lb.backend_state("grpc", &g1.addr), "up");
    assert_eq!(lb.backend_state("grpc", &g2.addr), "up");
    // g1 reports NOT_SERVING from now on (its own health service, asked directly).
    assert_eq!(call(&g1.addr, "down", None)["ok"], true);
    wait_for("g1 down", Duration::from_secs(10), || {
        (lb.backend_state("grpc", &g1.addr) == "down").then_some(())
    });
    let r = call(&lb.addr.to_string(), "many", None);
    assert_eq!(r["backends"], serde_json::json!(["g2"]), "{r}");
    assert_eq!(lb.backend_state("grpc", &g2.addr), "up");
}

#[test]
fn check_reports_backend_protocol_problems_with_key_paths() {
    let dir = temp_dir("grpc-check");
    let bad_ca = dir.join("not-a-ca.pem");
    std::fs::write(&bad_ca, "hello").unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
         [upstreams.a]\nprotocol = \"http3\"\nbackends = [\"127.0.0.1:9\"]\n\
         [upstreams.b]\nbackends = [\"127.0.0.1:9\"]\n[upstreams.b.health_check]\ntype = \"grpc\"\n\
         [upstreams.c]\nprotocol = \"http2\"\nbackends = [\"127.0.0.1:9\"]\n[upstreams.c.tls]\nca_file = \"{}\"\n\
         [upstreams.d]\nprotocol = \"http2\"\nbackends = [\"127.0.0.1:9\"]\n[upstreams.d.tls]\nca_file = \"{}/missing.pem\"\nsni = \"10.0.0.1\"\n",
        bad_ca.display(),
        dir.display()
    );
    let (ok, out) = check_config(&text);
    assert!(!ok, "{out}");
    for want in [
        "upstreams.a.protocol: unknown protocol \"http3\"",
        "upstreams.b.health_check.type: \"grpc\" checks need protocol = \"http2\"",
        "upstreams.c.tls.ca_file: no certificate in",
        "upstreams.d.tls.ca_file: cannot read",
        "upstreams.d.tls.sni: must be a host name",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    // verify = false is a warning; an IP backend without sni is not (its certificate is verified
    // against the address).
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
         [upstreams.e]\nprotocol = \"http2\"\nbackends = [\"127.0.0.1:9\"]\n[upstreams.e.tls]\nverify = false\n\
         [upstreams.f]\nbackends = [\"127.0.0.1:9\"]\n[upstreams.f.tls]\n\
         [[routes]]\nupstream = \"e\"\n";
    let (ok, out) = check_config(text);
    assert!(ok, "{out}");
    assert!(
        out.contains("upstreams.e.tls.verify: warning: backend certificates are not verified"),
        "{out}"
    );
    assert!(!out.contains("upstreams.f.tls"), "{out}");
}

#[test]
fn sample_backend_speaks_grpc_over_h2c_behind_lb() {
    let (dir, _ca, _cacert) = setup("grpc-sample");
    let (sb1, sb2) = (
        Backend::start_with("sb1", &["--h2c"]),
        Backend::start_with("sb2", &["--h2c"]),
    );
    let upstreams = format!(
        "[upstreams.grpc]\nprotocol = \"http2\"\nbackends = [\"{}\", \"{}\"]\n\
         [upstreams.grpc.health_check]\ntype = \"grpc\"\ninterval = \"200ms\"\nunhealthy_threshold = 1\n",
        sb1.addr, sb2.addr
    );
    let (lb, _) = start_lb(&dir, &upstreams);
    let target = lb.addr.to_string();
    let r = call(&target, "sb-unary", None);
    let reply = &r["reply"];
    assert_eq!(reply["bytes"], 5, "{r}");
    // FNV-1a 64 of "hello", as POST /loadTest reports it.
    assert_eq!(reply["checksum"], "a430d84680aabd0b", "{r}");
    let r = call(&target, "sb-stream", None);
    assert_eq!(r["replies"].as_array().map(Vec::len), Some(3), "{r}");
    let r = call(&target, "sb-chat", None);
    let sizes: Vec<u64> = r["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .filter_map(|v| v["bytes"].as_u64())
        .collect();
    assert_eq!(sizes, [1, 2, 3], "{r}");
    // Plain HTTP/1.1 clients reach the same HTTP/2 backends (any combination of legs).
    let r = lb.get("/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"backend\":\"sb"), "{}", r.text());
    // Its health follows /healthz: flipped over HTTP/2 by curl, seen by lb's gRPC check.
    assert_eq!(
        call(&sb1.addr.to_string(), "sb-health", None)["serving"],
        true
    );
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-X", "POST"])
        .arg(format!("http://{}/control/health/down", sb1.addr))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"healthy\":false"));
    assert_eq!(
        call(&sb1.addr.to_string(), "sb-health", None)["serving"],
        false
    );
    wait_for("sb1 down", Duration::from_secs(10), || {
        (lb.backend_state("grpc", &sb1.addr.to_string()) == "down").then_some(())
    });
    for _ in 0..4 {
        assert_eq!(call(&target, "sb-unary", None)["reply"]["backend"], "sb2");
    }
}

#[test]
fn lb_enforces_the_calls_grpc_timeout_on_backends_that_do_not() {
    let (dir, _ca, _cacert) = setup("grpc-deadline");
    // sample-backend ignores grpc-timeout and answers Process after 2 s.
    let sb = Backend::start_with("late", &["--h2c", "--delay", "2s"]);
    let upstreams = format!(
        "[upstreams.grpc]\nprotocol = \"http2\"\nbackends = [\"{}\"]\n",
        sb.addr
    );
    let (lb, _) = start_lb(&dir, &upstreams);
    let url = format!("http://{}", lb.addr);
    let path = "/lb.LoadTest/Process";
    // Without a deadline the call completes, late (lb's read_timeout is 30 s).
    let t = std::time::Instant::now();
    let out = curl_grpc(&url, path, None, b"\x0a\x01x", true, &[]);
    assert!(out.contains("grpc-status: 0"), "{out}");
    assert!(t.elapsed() >= Duration::from_secs(2));
    // With grpc-timeout: 300m lb ends it at 300 ms with DEADLINE_EXCEEDED.
    let t = std::time::Instant::now();
    let out = curl_grpc(
        &url,
        path,
        None,
        b"\x0a\x01x",
        true,
        &["grpc-timeout: 300m"],
    );
    let took = t.elapsed();
    assert!(out.contains("grpc-status: 4\r\n"), "{out}");
    assert!(took < Duration::from_millis(1500), "{took:?}: {out}");
}
