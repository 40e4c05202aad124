//! Request-edge correctness: routing on the normalized path, listener overlap and bind errors,
//! HTTP/1.1 pipelining, absolute-form request targets, untrusted forwarding headers.

use crate::support::*;

/// Routes `/public/` → `public`, `/` → `internal`.
fn split_routes(public: &Backend, internal: &Backend) -> String {
    format!(
        "[upstreams.public]\nbackends = [\"{}\"]\n[upstreams.internal]\nbackends = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/public/\"\nupstream = \"public\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"internal\"\n",
        public.addr, internal.addr
    )
}

fn echo_path(r: &Response) -> String {
    r.json()["path"].as_str().unwrap_or_default().to_string()
}

#[test]
fn routes_match_the_normalized_path() {
    let (public, internal) = (Backend::start("public"), Backend::start("internal"));
    let lb = Lb::start(&split_routes(&public, &internal));
    assert_eq!(lb.get("/public/echo").backend(), "public");
    for p in [
        "/public/../echo",
        "/public/%2e%2e/echo",
        "/public/%2E%2e/echo",
        "//public/../echo",
        "/public/./../echo",
        "/public//..//echo",
    ] {
        let r = lb.get(p);
        assert_eq!(r.backend(), "internal", "{p}: {} {}", r.status, r.text());
    }
    // Decoded unreserved characters can reach a route; %2F never separates segments.
    assert_eq!(lb.get("/%70ublic/echo").backend(), "public");
    assert_eq!(lb.get("/public%2F..%2Fecho").backend(), "internal");
    assert_eq!(lb.get("/public/a%2F..%2F..%2Fecho").backend(), "public");
    // The default ("route") forwards the path as the client sent it.
    let r = lb.get("/x/../echo?q=%2e");
    assert_eq!(r.backend(), "internal");
    assert_eq!(r.status, 404, "sample-backend sees the raw path");
    for p in ["/../x", "/public/../../x", "/%2e%2e/x", "/a/%zz"] {
        let r = lb.get(p);
        assert_eq!(r.status, 400, "{p}: {}", r.text());
        assert_eq!(r.backend(), "", "{p}: answered by lb");
    }
    // The connection survives a 400 for a bad path.
    let mut c = Conn::open(lb.addr).unwrap();
    assert_eq!(c.send("GET", "/../x", &[], b"").unwrap().status, 400);
    assert_eq!(c.send("GET", "/echo", &[], b"").unwrap().status, 200);
}

#[test]
fn normalize_path_forward_and_off() {
    let (public, internal) = (Backend::start("public"), Backend::start("internal"));
    let routes = split_routes(&public, &internal);
    let fwd = Lb::start_with(&routes, "normalize_path = \"forward\"");
    let r = fwd.get("/public/%2e%2e//%65cho?q=/../%2e");
    assert_eq!(r.backend(), "internal", "{}", r.text());
    assert_eq!(echo_path(&r), "/echo?q=/../%2e", "query kept as sent");
    let r = fwd.get("/echo/a?x=1");
    assert_eq!(
        echo_path(&r),
        "/echo/a?x=1",
        "a normal path is forwarded as is"
    );

    let keep = Lb::start_with(
        &routes,
        "normalize_path = \"forward\"\nmerge_slashes = false",
    );
    let r = keep.get("/public//../echo");
    assert_eq!(
        r.backend(),
        "public",
        "without merging, `//..` leaves /public/"
    );
    assert_eq!(r.status, 404, "forwarded /public/echo");

    let off = Lb::start_with(&routes, "normalize_path = \"off\"");
    assert_eq!(off.get("/public/../echo").backend(), "public");
    assert_eq!(off.get("/../echo").backend(), "internal");
}

#[test]
fn normalize_path_bad_value_is_a_check_error() {
    let (ok, out) = check_config(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nnormalize_path = \"yes\"\n\
         [upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("server.normalize_path: must be"), "{out}");
}

#[test]
fn overlapping_listeners_are_check_errors() {
    let up = "[upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n";
    let cases = [
        (
            "listen = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
            "admin.listen: overlaps server.listen[0] (127.0.0.1:8080)",
        ),
        (
            "listen = [\"127.0.0.1:8081\", \"0.0.0.0:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
            "admin.listen: overlaps server.listen[1] (0.0.0.0:8080)",
        ),
        (
            "listen = [\"127.0.0.1:8080\", \"0.0.0.0:8080\"]\n",
            "server.listen[1]: overlaps server.listen[0] (127.0.0.1:8080)",
        ),
        (
            "listen = [\"[::1]:8080\", \"[::]:8080\"]\n",
            "server.listen[1]: overlaps server.listen[0] ([::1]:8080)",
        ),
        (
            "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n",
            "server.listen[1]: overlaps server.listen[0] (127.0.0.1:8080)",
        ),
    ];
    for (server, want) in cases {
        let (ok, out) = check_config(&format!("[server]\n{server}{up}"));
        assert!(!ok, "accepted:\n{server}\n{out}");
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let (ok, out) = check_config(&format!(
        "[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.2:8080\", \"[::1]:8080\"]\n\
         [admin]\nlisten = \"127.0.0.1:9090\"\n{up}"
    ));
    assert!(ok, "{out}");
    // IPv6 listeners are v6-only: both wildcards on one port, as in NGINX.
    let (ok, out) = check_config(&format!(
        "[server]\nlisten = [\"0.0.0.0:8080\", \"[::]:8080\"]\n{up}"
    ));
    assert!(ok, "{out}");
}

/// Starts lb on `config` while something else holds one of its addresses: it must exit with
/// status 1 and a one-line error naming the address, quickly (not after pingora's retries).
fn assert_busy_address_fails_fast(tag: &str, config: &str, busy: std::net::SocketAddr) {
    let dir = temp_dir(tag);
    let path = dir.join("lb.toml");
    std::fs::write(&path, config).unwrap();
    let started = std::time::Instant::now();
    let child = std::process::Command::new(LB)
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Proc { child };
    let status = wait_for("lb to exit", std::time::Duration::from_secs(10), || {
        proc.child.try_wait().unwrap()
    });
    let elapsed = started.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(proc.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&busy.to_string()), "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn address_in_use_is_a_fast_one_line_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap();
    let up = "[upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n";
    let free = free_port();
    assert_busy_address_fails_fast(
        "busy-proxy",
        &format!("[server]\nlisten = [\"127.0.0.1:{free}\", \"{busy}\"]\n{up}"),
        busy,
    );
    assert_busy_address_fails_fast(
        "busy-admin",
        &format!("[server]\nlisten = [\"127.0.0.1:{free}\"]\n[admin]\nlisten = \"{busy}\"\n{up}"),
        busy,
    );
}

/// Writes `raw` (several requests) in one write on a fresh connection and reads `n` responses.
fn pipeline(addr: std::net::SocketAddr, raw: &str, n: usize) -> (Conn, Vec<Response>) {
    use std::io::Write;
    let mut c = Conn::open(addr).unwrap();
    c.stream()
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c.stream().write_all(raw.as_bytes()).unwrap();
    let got = (0..n)
        .map(|i| {
            c.read_response(false)
                .unwrap_or_else(|e| panic!("response {i} of {n}: {e}"))
        })
        .collect();
    (c, got)
}

/// The connection is closed by lb (end of stream), not left waiting.
fn assert_closed(c: &mut Conn) {
    use std::io::Read;
    let mut rest = Vec::new();
    match c.stream().read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ));
    let get = |n: u32| format!("GET /echo?n={n} HTTP/1.1\r\nHost: t\r\n\r\n");

    let (_, rs) = pipeline(lb.addr, &format!("{}{}{}", get(1), get(2), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    // A fresh lb's round-robin starts at the first backend and alternates.
    let backends: Vec<String> = rs.iter().map(|r| r.backend()).collect();
    assert_eq!(backends, ["a", "b", "a"]);

    let post = "POST /echo?n=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world";
    let (_, rs) = pipeline(lb.addr, &format!("{}{post}{}", get(1), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    assert_eq!(rs[1].json()["body_bytes"], 11);

    let chunked = "POST /echo?n=2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let (mut c, rs) = pipeline(lb.addr, &format!("{}{chunked}{}", get(1), get(3)), 3);
    let paths: Vec<String> = rs.iter().map(echo_path).collect();
    assert_eq!(paths, ["/echo?n=1", "/echo?n=2", "/echo?n=3"]);
    assert_eq!(rs[1].json()["body_bytes"], 11);
    // The connection is still good for more.
    assert_eq!(c.send("GET", "/echo?n=4", &[], b"").unwrap().status, 200);

    // Answers lb gives itself (400 for a path above /) keep their place in line.
    let (_, rs) = pipeline(
        lb.addr,
        &format!("{}GET /../x HTTP/1.1\r\nHost: t\r\n\r\n{}", get(1), get(3)),
        3,
    );
    let status: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(status, [200, 400, 200]);
    assert_eq!(echo_path(&rs[2]), "/echo?n=3");
}

#[test]
fn pipelined_requests_after_a_closing_answer_are_not_left_waiting() {
    let a = Backend::start("a");
    let dead = free_port();
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{}\"]\n[upstreams.dead]\nbackends = [\"127.0.0.1:{dead}\"]\nretries = 0\n\
         [[routes]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
        a.addr
    ));
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n");
    // A 502 closes the client connection: the requests after it get no answer and the client
    // sees the close at once (it may retry them on a new connection).
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{}{}{}", get("/echo"), get("/dead"), get("/echo")),
        2,
    );
    assert_eq!((rs[0].status, rs[1].status), (200, 502));
    assert_closed(&mut c);
    // A refused (ambiguous) request: answered, then closed.
    let bad = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{}{bad}{}", get("/echo"), get("/echo")),
        2,
    );
    assert_eq!((rs[0].status, rs[1].status), (200, 400));
    assert_closed(&mut c);
}

#[test]
fn pipelined_heads_are_held_to_the_limits_and_deadlines() {
    let a = Backend::start("a");
    let lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr),
        "header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_header_bytes = 4096\nmax_headers = 10",
    );
    let get = "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n";
    // A pipelined head over max_header_bytes or max_headers: the request before it is answered,
    // then 431 and close.
    let big = format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(6000)
    );
    let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    for second in [big, many] {
        let (mut c, rs) = pipeline(lb.addr, &format!("{get}{second}{get}"), 2);
        assert_eq!((rs[0].status, rs[1].status), (200, 431));
        assert_closed(&mut c);
    }
    // A pipelined head that never completes: answered, then closed within the deadlines.
    let started = std::time::Instant::now();
    let (mut c, rs) = pipeline(
        lb.addr,
        &format!("{get}GET /echo HTTP/1.1\r\nHost: t\r\n"),
        1,
    );
    assert_eq!(rs[0].status, 200);
    match c.read_response(false) {
        Ok(r) => assert_eq!(r.status, 408),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

fn echo_header(r: &Response, name: &str) -> Option<String> {
    r.json()["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str().map(str::to_string))
}

#[test]
fn absolute_form_targets_are_forwarded_in_origin_form() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.a]\nbackends = [\"{}\"]\n[upstreams.b]\nbackends = [\"{}\"]\n\
         [[routes]]\nhost = \"b.test\"\nupstream = \"b\"\n[[routes]]\nupstream = \"a\"\n",
        a.addr, b.addr
    ));
    let send = |raw: &str| pipeline(lb.addr, raw, 1).1.remove(0);

    let r = send("GET http://t/echo?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echo_path(&r), "/echo?x=1");
    assert_eq!(echo_header(&r, "host").as_deref(), Some("t"));

    // Routed and forwarded by the target's authority (here the only host given).
    let r = send("GET http://b.test:8080/echo HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.status, r.backend()),
        (200, "b".to_string()),
        "{}",
        r.text()
    );
    assert_eq!(echo_path(&r), "/echo");
    assert_eq!(echo_header(&r, "host").as_deref(), Some("b.test:8080"));
    let r = send("GET http://b.test/echo HTTP/1.1\r\nHost: b.test\r\n\r\n");
    assert_eq!(r.backend(), "b");

    // A Host header that disagrees with the target's authority is refused, never forwarded
    // (pingora's parser is stricter here than RFC 9112 §3.2.2, which lets the authority win).
    let r = send("GET http://b.test/echo HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!((r.status, r.backend()), (400, String::new()));

    // What `curl -x` sends.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-x",
            &format!("http://{}", lb.addr),
            "http://b.test/echo?y=2",
        ])
        .output();
    if let Ok(out) = out {
        assert!(out.status.success(), "curl: {out:?}");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["backend"], "b");
        assert_eq!(body["path"], "/echo?y=2");
    }
}

/// The values of every `name` line the backend received, in order.
fn echo_headers(r: &Response, name: &str) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn client_forwarding_headers_are_trusted_only_from_trusted_proxies() {
    let a = Backend::start("a");
    let body = format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr);
    let spoof = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-For", "7.7.7.7, 8.8.8.8"),
        ("X-Real-IP", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("Forwarded", "for=7.7.7.7"),
    ];
    let send = |lb: &Lb| {
        let mut c = Conn::open(lb.addr).unwrap();
        c.send("GET", "/echo", &[("Host", "api.test")], b"")
            .unwrap()
    };

    let untrusted = Lb::start(&body);
    let raw: String = spoof.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let (_, rs) = pipeline(
        untrusted.addr,
        &format!("GET /echo HTTP/1.1\r\nHost: api.test\r\n{raw}\r\n"),
        1,
    );
    let r = &rs[0];
    assert_eq!(echo_headers(r, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo_headers(r, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(
        echo_headers(r, "forwarded"),
        ["for=127.0.0.1;host=\"api.test\";proto=http"]
    );
    // Nothing from the client: lb's own values.
    let r = send(&untrusted);
    assert_eq!(echo_headers(&r, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(
        echo_headers(&r, "forwarded"),
        ["for=127.0.0.1;host=\"api.test\";proto=http"]
    );

    let trusted = Lb::start_with(&body, "trusted_proxies = [\"127.0.0.0/8\"]");
    let (_, rs) = pipeline(
        trusted.addr,
        &format!("GET /echo HTTP/1.1\r\nHost: api.test\r\n{raw}\r\n"),
        1,
    );
    let r = &rs[0];
    assert_eq!(
        echo_headers(r, "x-forwarded-for"),
        ["6.6.6.6, 7.7.7.7, 8.8.8.8, 127.0.0.1"],
        "every line is read"
    );
    assert_eq!(echo_headers(r, "x-real-ip"), ["6.6.6.6"]);
    assert_eq!(
        echo_headers(r, "forwarded"),
        ["for=6.6.6.6;proto=https, for=7.7.7.7, for=127.0.0.1;host=\"api.test\";proto=http"]
    );
}
