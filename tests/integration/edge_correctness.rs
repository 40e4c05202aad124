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
            "listen = [\"0.0.0.0:8080\", \"[::]:8080\"]\n",
            "server.listen[1]: overlaps server.listen[0] (0.0.0.0:8080)",
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
