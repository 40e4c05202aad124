//! The headers lb sets and strips on the way through: `X-Forwarded-For`/`-Proto`/`-Host`,
//! `X-Real-IP` and `Forwarded` replaced for clients outside `server.trusted_proxies` and extended
//! for trusted ones (every line read), and hop-by-hop headers (`Connection` and the headers it
//! names, `Keep-Alive`, `TE`, `Upgrade`, ...) dropped in both directions.

use std::collections::HashMap;

use crate::support::raw::*;
use crate::support::*;

#[test]
fn forwarded_headers_and_hop_by_hop_stripping() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr));
    let r = request(
        lb.addr,
        "GET",
        "/echo?x=1",
        &[
            ("Host", "api.example.com"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "s"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Kept", "yes"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    let headers: HashMap<String, String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(!headers.contains_key(gone), "{gone} forwarded: {headers:?}");
    }
    assert_ne!(
        headers.get("connection").map(|s| s.to_ascii_lowercase()),
        Some("keep-alive, x-secret".into())
    );
    assert_eq!(
        headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1"),
        "untrusted XFF replaced"
    );
    assert_eq!(
        headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        headers.get("x-forwarded-host").map(String::as_str),
        Some("api.example.com")
    );
    assert_eq!(headers.get("x-kept").map(String::as_str), Some("yes"));
    assert_eq!(echo["path"], "/echo?x=1");
}

#[test]
fn forwarded_headers_from_untrusted_clients_are_replaced() {
    let a = Backend::start("a");
    let req = b"GET /echo HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n";

    let lb = Lb::start(&single(a.addr));
    let r = exchange(lb.addr, req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let h = echo_headers(&serde_json::from_slice(r.body()).expect("echo JSON"));
    assert_eq!(header_values(&h, "x-forwarded-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(header_values(&h, "x-forwarded-proto"), ["http"], "{h:?}");
    assert_eq!(
        header_values(&h, "x-forwarded-host"),
        ["api.example.com"],
        "{h:?}"
    );

    // From a trusted proxy the chain is kept and extended.
    let lb = Lb::start_with(&single(a.addr), "trusted_proxies = [\"127.0.0.0/8\"]");
    let r = exchange(lb.addr, req);
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let h = echo_headers(&serde_json::from_slice(r.body()).expect("echo JSON"));
    let xff = header_values(&h, "x-forwarded-for");
    assert_eq!(xff.len(), 1, "{h:?}");
    assert!(
        xff[0].starts_with("6.6.6.6") && xff[0].ends_with(", 127.0.0.1"),
        "{h:?}"
    );
    assert_eq!(header_values(&h, "x-forwarded-proto"), ["https"], "{h:?}");
    assert_eq!(
        header_values(&h, "x-forwarded-host"),
        ["evil.example"],
        "{h:?}"
    );
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
    assert_eq!(
        header_values(&echo_headers(&r.json()), "x-forwarded-for"),
        ["127.0.0.1"]
    );
    assert_eq!(
        header_values(&echo_headers(&r.json()), "x-real-ip"),
        ["127.0.0.1"]
    );
    assert_eq!(
        header_values(&echo_headers(&r.json()), "forwarded"),
        ["for=127.0.0.1;host=\"api.test\";proto=http"]
    );
    // Nothing from the client: lb's own values.
    let r = send(&untrusted);
    assert_eq!(
        header_values(&echo_headers(&r.json()), "x-real-ip"),
        ["127.0.0.1"]
    );
    assert_eq!(
        header_values(&echo_headers(&r.json()), "forwarded"),
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
        header_values(&echo_headers(&r.json()), "x-forwarded-for"),
        ["6.6.6.6, 7.7.7.7, 8.8.8.8, 127.0.0.1"],
        "every line is read"
    );
    assert_eq!(
        header_values(&echo_headers(&r.json()), "x-real-ip"),
        ["6.6.6.6"]
    );
    assert_eq!(
        header_values(&echo_headers(&r.json()), "forwarded"),
        ["for=6.6.6.6;proto=https, for=7.7.7.7, for=127.0.0.1;host=\"api.test\";proto=http"]
    );
}

#[test]
fn hop_by_hop_stripped_from_responses() {
    // A raw backend that sends hop-by-hop headers in its response.
    let addr = raw_backend(|mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=9\r\nX-Public: 1\r\n\r\nok");
    })
    .addr;
    let lb = Lb::start(&format!("[upstreams.api]\nbackends = [\"{addr}\"]\n"));
    let r = lb.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert!(r.header("x-internal").is_none(), "{:?}", r.headers);
    assert!(
        r.header("keep-alive")
            .is_none_or(|v| !v.contains("timeout=9")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-public"), Some("1"));
}

/// One header's values in the `/echo` answer `r`.
fn echoed(r: &Response, name: &str) -> Vec<String> {
    let headers = echo_headers(&r.json());
    header_values(&headers, name)
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[test]
fn connection_cannot_remove_lbs_forwarding_headers_or_host() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let named =
        "close, X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto, X-Forwarded-Host, Host";
    let r = request(
        lb.addr,
        "GET",
        "/echo",
        &[("Host", "app.example"), ("Connection", named)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for (name, want) in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "app.example"),
        ("forwarded", "for=127.0.0.1;host=\"app.example\";proto=http"),
        ("host", "app.example"),
    ] {
        assert_eq!(echoed(&r, name), [want], "{name}: {}", r.text());
    }
    assert!(echoed(&r, "connection").is_empty(), "{}", r.text());
}

#[test]
fn an_http10_request_without_host_reaches_the_backend_with_the_upstreams_name() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let answer = exchange(lb.addr, b"GET /echo HTTP/1.0\r\n\r\n");
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let echo: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(
        header_values(&echo_headers(&echo), "host"),
        ["api"],
        "{}",
        answer.text()
    );
}

#[test]
fn split_cookies_of_an_http2_client_are_one_field_for_an_http1_backend() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "h2c = true");
    // curl sends each -H line as a field of its own.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge"])
        .args(["-H", "Cookie: a=1", "-H", "Cookie: b=2"])
        .arg(format!("http://{}/echo", lb.addr))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "the backend leg is HTTP/1: {body}"
    );
    assert_eq!(
        header_values(&echo_headers(&echo), "cookie"),
        ["a=1; b=2"],
        "{body}"
    );
}

/// An h2c backend is told `:scheme: http` (the scheme lb really speaks to it) and `:authority`
/// the `Host` it gets, whatever the client spoke.
#[test]
fn an_h2c_backend_is_told_the_scheme_lb_speaks_to_it() {
    let b = H2EchoBackend::start();
    let lb = Lb::start(&format!(
        "[upstreams.api]\nprotocol = \"http2\"\nbackends = [\"{}\"]\n",
        b.addr
    ));
    let r = request(lb.addr, "GET", "/", &[("Host", "app.example")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-scheme"), Some("http"), "{:?}", r.headers);
    assert_eq!(
        r.header("x-seen-authority"),
        Some("app.example"),
        "{:?}",
        r.headers
    );
}

/// HTTP/1 header names: by default twelve common ones go out in title case and every other in
/// lower case, on both legs (one header map per head, as HAProxy and Envoy); with
/// `server.preserve_header_case` they keep the spelling they came with (NGINX).
#[test]
fn header_names_keep_their_spelling_only_with_preserve_header_case() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Backend-Thing: raw\r\n\r\nok";
    const REQUEST: &[u8] =
        b"GET / HTTP/1.1\r\nhost: a\r\nX-Custom-Name: 1\r\nConnection: close\r\n\r\n";
    for (preserve, sent, answered) in [
        (
            false,
            ["\r\nHost: a\r\n", "\r\nx-custom-name: 1\r\n"],
            ["\r\nContent-Length: 2\r\n", "\r\nx-backend-thing: raw\r\n"],
        ),
        (
            true,
            ["\r\nhost: a\r\n", "\r\nX-Custom-Name: 1\r\n"],
            ["\r\ncontent-length: 2\r\n", "\r\nX-Backend-Thing: raw\r\n"],
        ),
    ] {
        let (b, heads) = scripted_backend(ANSWER, false);
        let lb = Lb::start_with(
            &single(b.addr),
            &format!("preserve_header_case = {preserve}"),
        );
        let answer = exchange(lb.addr, REQUEST).text();
        let head = heads.lock().unwrap()[0].clone();
        for field in sent {
            assert!(
                head.contains(field),
                "preserve={preserve}: {field:?} not in {head}"
            );
        }
        for field in answered {
            assert!(
                answer.contains(field),
                "preserve={preserve}: {field:?} not in {answer}"
            );
        }
    }
}
