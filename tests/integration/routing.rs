//! Routing: which upstream a request reaches. The host picks a group of routes, the longest path
//! prefix wins within it; routes match the normalized path (`server.normalize_path`, and what is
//! forwarded under each setting); absolute-form targets are routed by their authority and sent
//! in origin form; listeners that overlap are `--check` errors and a busy address a fast one-line
//! failure.

use crate::support::raw::*;
use crate::support::*;

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

/// Routes `/public/` → `public`, `/` → `internal`.
fn split_routes(public: &Backend, internal: &Backend) -> String {
    format!(
        "[upstreams.public]\nbackends = [\"{}\"]\n[upstreams.internal]\nbackends = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/public/\"\nupstream = \"public\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"internal\"\n",
        public.addr, internal.addr
    )
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
    assert_eq!(
        header_values(&echo_headers(&r.json()), "host")
            .first()
            .copied(),
        Some("t")
    );

    // Routed and forwarded by the target's authority (here the only host given).
    let r = send("GET http://b.test:8080/echo HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.status, r.backend()),
        (200, "b".to_string()),
        "{}",
        r.text()
    );
    assert_eq!(echo_path(&r), "/echo");
    assert_eq!(
        header_values(&echo_headers(&r.json()), "host")
            .first()
            .copied(),
        Some("b.test:8080")
    );
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

/// `(status, x-backend)` of curl's `GET http://ADDR/PATH` with `Host: HOST`.
fn curl_backend(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "-H"])
        .arg(format!("Host: {host}"))
        .args(["-w", "%{http_code} %header{x-backend}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, backend) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), backend.to_string())
}

/// `routes[i].listen`: NGINX picks the server by the address a connection came to, then by
/// name. Each listener gets its own default group and host groups; a reload moves routes
/// between listeners; an unknown listener address is a reload error that changes nothing.
#[test]
fn routes_by_listener_and_reload() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let (p1, p2) = (free_port(), free_port());
    let (one, two): (std::net::SocketAddr, std::net::SocketAddr) = (
        format!("127.0.0.1:{p1}").parse().unwrap(),
        format!("127.0.0.1:{p2}").parse().unwrap(),
    );
    let routes = |first: std::net::SocketAddr, second: std::net::SocketAddr| {
        format!(
            "[upstreams.a]\nbackends = [\"{}\"]\n[upstreams.b]\nbackends = [\"{}\"]\n\
             [upstreams.c]\nbackends = [\"{}\"]\n\
             [[routes]]\nlisten = \"{first}\"\nupstream = \"a\"\n\
             [[routes]]\nlisten = [\"{second}\"]\nupstream = \"b\"\n\
             [[routes]]\nlisten = \"{one}\"\nhost = \"api.example\"\nupstream = \"c\"\n\
             [[routes]]\nlisten = \"{two}\"\nhost = \"api.example\"\nupstream = \"a\"\n\
             [[routes]]\npath_prefix = \"/shared/\"\nhost = \"www.example\"\nupstream = \"c\"\n",
            a.addr, b.addr, c.addr
        )
    };
    let lb = Lb::start_listening(p1, &[two], &routes(one, two), "", &[]);
    // The backend that answered (sample-backend's own 404 for a path it lacks included), or
    // lb's status when lb answered.
    let seen = |addr, host: &str, path: &str| match curl_backend(addr, host, path) {
        (_, b) if !b.is_empty() => b,
        (code, _) => code.to_string(),
    };
    let ok = |name: &str| name.to_string();
    // Before: two ports merged, unknown hosts on :p2 reached :p1's default server.
    assert_eq!(seen(one, "unknown.example", "/"), ok("a"));
    assert_eq!(seen(two, "unknown.example", "/"), ok("b"));
    assert_eq!(seen(one, "api.example", "/x"), ok("c"));
    assert_eq!(
        seen(two, "API.example:8080", "/x"),
        ok("a"),
        "same name, per port"
    );
    // Routes without `listen` serve every listener.
    assert_eq!(seen(one, "www.example", "/shared/x"), ok("c"));
    assert_eq!(seen(two, "www.example", "/shared/x"), ok("c"));
    assert_eq!(
        seen(two, "www.example", "/other"),
        "404",
        "www's group only"
    );
    // One keep-alive connection per listener routes each request by its listener.
    for (addr, want) in [(one, "a"), (two, "b")] {
        let mut conn = Conn::open(addr).unwrap();
        for _ in 0..3 {
            let r = conn.send("GET", "/", &[("Host", "x")], b"").unwrap();
            assert_eq!(r.backend(), want);
        }
    }

    // A reload swaps the two default servers.
    lb.write_config(&routes(two, one));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    assert_eq!(seen(one, "unknown.example", "/"), ok("b"));
    assert_eq!(seen(two, "unknown.example", "/"), ok("a"));
    assert_eq!(seen(one, "api.example", "/"), ok("c"));

    // A listener lb does not have is a problem with its key path; nothing changes.
    let missing: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    lb.write_config(&routes(one, missing));
    let (code, result) = lb.reload();
    assert_ne!(code, 200, "{result}");
    let text = result.to_string();
    assert!(
        text.contains("routes[1].listen[0]")
            && text.contains("is not one of server.listen or server.tls.listen"),
        "{text}"
    );
    assert_eq!(seen(one, "unknown.example", "/"), ok("b"));
    assert_eq!(seen(two, "unknown.example", "/"), ok("a"));
}
