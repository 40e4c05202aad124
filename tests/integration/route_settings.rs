//! A route's (or its upstream's) header rules, timeouts and body limit, with real clients:
//! `set_request_headers` (literals, variables, removal; a route's list replaces its upstream's),
//! `add_response_headers` on the statuses NGINX's `add_header` adds to (any with `always`),
//! a route's `read_timeout` longer than its upstream's, a route's `max_body_bytes` (413 or no
//! limit), and a header changed by a hot reload.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `curl -i`: (status, response headers lower-cased, body).
fn curl(url: &str, args: &[&str]) -> (u16, Vec<(String, String)>, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The request headers the sample backend saw, from its `/echo` answer.
fn seen(body: &str) -> Vec<(String, String)> {
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    echo_headers(&echo)
}

#[test]
fn request_headers_are_set_removed_and_rendered() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        r#"[upstreams.api]
backends = ["{}"]
set_request_headers = {{ "X-Upstream-Level" = "yes" }}

[[routes]]
path_prefix = "/echo/route"
upstream = "api"
set_request_headers = {{ "X-Literal" = "one two", "X-Host" = "$host", "X-Http-Host" = "$http_host", "X-Port" = "$server_port", "X-Scheme" = "$scheme", "X-Remote" = "$remote_addr", "X-Chain" = "$proxy_add_x_forwarded_for", "X-Request-Id" = "$request_id", "X-Secret" = "", "X-Forwarded-For" = "via-$remote_addr", "Host" = "backend.internal" }}

[[routes]]
path_prefix = "/"
upstream = "api"
"#,
        a.addr
    ));
    let port = lb.addr.port().to_string();
    let url = format!("http://{}/echo/route", lb.addr);
    let host = format!("Api.Example:{port}");
    let (status, _, body) = curl(&url, &["-H", &format!("Host: {host}"), "-H", "X-Secret: s"]);
    assert_eq!(status, 200, "{body}");
    let h = seen(&body);
    let one = |n: &str| header_values(&h, n).join("|");
    assert_eq!(one("x-literal"), "one two");
    assert_eq!(one("x-host"), "api.example");
    assert_eq!(one("x-http-host"), host);
    assert_eq!(one("x-port"), port);
    assert_eq!(one("x-scheme"), "http");
    assert_eq!(one("x-remote"), "127.0.0.1");
    assert_eq!(one("x-chain"), "127.0.0.1");
    assert_eq!(one("x-forwarded-for"), "via-127.0.0.1", "replaces lb's own");
    assert_eq!(one("host"), "backend.internal");
    assert!(header_values(&h, "x-secret").is_empty(), "removed: {h:?}");
    // The route's list replaces the upstream's whole.
    assert!(header_values(&h, "x-upstream-level").is_empty(), "{h:?}");
    let id = one("x-request-id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    let (_, _, again) = curl(&url, &[]);
    assert_ne!(header_values(&seen(&again), "x-request-id"), [id.as_str()]);

    // A route without a list of its own gets its upstream's.
    let (status, _, body) = curl(&format!("http://{}/echo/other", lb.addr), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(header_values(&seen(&body), "x-upstream-level"), ["yes"]);
}

#[test]
fn response_headers_are_added_as_add_header_does() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        r#"[upstreams.api]
backends = ["{}"]
add_response_headers = {{ "X-Frame-Options" = "DENY", "X-Id" = "$request_id" }}

[[routes]]
path_prefix = "/always/"
replace_prefix = "/"
upstream = "api"
add_response_headers = {{ "Strict-Transport-Security" = "max-age=60" }}
add_response_headers_always = true

[[routes]]
path_prefix = "/"
upstream = "api"
"#,
        a.addr
    ));
    let get = |path: &str| curl(&format!("http://{}{path}", lb.addr), &[]);
    let has = |h: &[(String, String)], n: &str| header_values(h, n).len();

    let (status, h, _) = get("/echo");
    assert_eq!(status, 200);
    assert_eq!(header_values(&h, "x-frame-options"), ["DENY"], "{h:?}");
    let id = header_values(&h, "x-id").join("");
    assert_eq!(id.len(), 32, "{h:?}");
    let (status, h, _) = get("/status/404");
    assert_eq!(status, 404);
    assert_eq!(
        has(&h, "x-frame-options"),
        0,
        "not on a 404 without always: {h:?}"
    );

    let (status, h, _) = get("/always/echo");
    assert_eq!(status, 200);
    assert_eq!(
        header_values(&h, "strict-transport-security"),
        ["max-age=60"]
    );
    assert_eq!(
        has(&h, "x-frame-options"),
        0,
        "the route's list replaces: {h:?}"
    );
    let (status, h, _) = get("/always/status/404");
    assert_eq!(status, 404);
    assert_eq!(
        header_values(&h, "strict-transport-security"),
        ["max-age=60"],
        "always: {h:?}"
    );
}

#[test]
fn a_route_read_timeout_outlasts_its_upstreams() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        r#"[upstreams.api]
backends = ["{}"]
read_timeout = "300ms"
retries = 0

[[routes]]
path_prefix = "/ws/"
replace_prefix = "/"
upstream = "api"
read_timeout = "5s"

[[routes]]
path_prefix = "/"
upstream = "api"
"#,
        a.addr
    ));
    let (status, _, body) = curl(&format!("http://{}/ws/delay/1000", lb.addr), &[]);
    assert_eq!(status, 200, "the route's 5s: {body}");
    let (status, _, body) = curl(&format!("http://{}/delay/1000", lb.addr), &[]);
    assert_eq!(status, 504, "the upstream's 300ms: {body}");
    assert!(body.contains("300ms"), "{body}");
}

#[test]
fn a_route_body_limit_refuses_or_lifts_the_servers() {
    let a = Backend::start("a");
    let lb = Lb::start_with(
        &format!(
            r#"[upstreams.api]
backends = ["{}"]

[[routes]]
path_prefix = "/upload/"
replace_prefix = "/"
upstream = "api"
max_body_bytes = 0

[[routes]]
path_prefix = "/small/"
replace_prefix = "/"
upstream = "api"
max_body_bytes = 100

[[routes]]
path_prefix = "/"
upstream = "api"
"#,
            a.addr
        ),
        "max_body_bytes = 1000",
    );
    let body = "b".repeat(5000);
    let post = |path: &str, body: &str, chunked: bool| {
        let mut args = vec!["-X", "POST", "--data-binary", body];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        curl(&format!("http://{}{path}", lb.addr), &args).0
    };
    assert_eq!(post("/upload/echo", &body, false), 200, "0: no limit");
    assert_eq!(post("/upload/echo", &body, true), 200, "chunked, no limit");
    assert_eq!(post("/echo", &body, false), 413, "server.max_body_bytes");
    assert_eq!(post("/echo", &body[..900], false), 200);
    assert_eq!(
        post("/small/echo", &body[..500], false),
        413,
        "the route's 100"
    );
    assert_eq!(
        post("/small/echo", &body[..500], true),
        413,
        "counted chunks"
    );
    assert_eq!(post("/small/echo", &body[..50], false), 200);
}

#[test]
fn a_reload_changes_a_header() {
    let a = Backend::start("a");
    let config = |v: &str| {
        format!(
            "[upstreams.api]\nbackends = [\"{}\"]\nset_request_headers = {{ \"X-Version\" = \"{v}\" }}\n",
            a.addr
        )
    };
    let lb = Lb::start(&config("one"));
    let url = format!("http://{}/echo", lb.addr);
    let (_, _, body) = curl(&url, &[]);
    assert_eq!(header_values(&seen(&body), "x-version"), ["one"]);
    lb.write_config(&config("two"));
    let (status, answer) = lb.reload();
    assert_eq!(status, 200, "{answer}");
    wait_for("the new header", Duration::from_secs(10), || {
        let (_, _, body) = curl(&url, &[]);
        (header_values(&seen(&body), "x-version") == ["two"]).then_some(())
    });
}
