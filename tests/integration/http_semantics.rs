//! What lb says on the wire, message by message, where HTTP and NGINX fix the answer: the
//! forwarding headers a client cannot remove, the `Host` an HTTP/1.0 request gets upstream,
//! cookies of HTTP/2 clients joined for HTTP/1 backends, no 1xx to HTTP/1.0 clients, bodies without
//! a length rechunked on kept-alive connections, request targets with spaces and invalid `Host`s
//! refused, no network-path redirects, and lb's own error answers without pingora's fields.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

fn single(addr: SocketAddr) -> String {
    format!("[upstreams.api]\nbackends = [\"{addr}\"]\n")
}

/// Writes `req` on a new connection and reads until lb closes it.
fn raw_exchange(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of header `name` in the sample backend's `/echo` answer.
fn echoed(r: &Response, name: &str) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

/// A backend that answers every request with the raw bytes `answer` and records each head.
fn scripted_backend(answer: &'static [u8], close: bool) -> (RawBackend, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let log = heads.clone();
    let b = raw_backend(move |mut s| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                log.lock().unwrap().push(head);
                if s.write_all(answer).is_err() || close {
                    return;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (b, heads)
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
    assert_eq!(echoed(&r, "x-forwarded-for"), ["127.0.0.1"], "{}", r.text());
    assert_eq!(echoed(&r, "x-real-ip"), ["127.0.0.1"], "{}", r.text());
    assert_eq!(echoed(&r, "x-forwarded-proto"), ["http"], "{}", r.text());
    assert_eq!(
        echoed(&r, "x-forwarded-host"),
        ["app.example"],
        "{}",
        r.text()
    );
    assert_eq!(
        echoed(&r, "forwarded"),
        ["for=127.0.0.1;host=\"app.example\";proto=http"],
        "{}",
        r.text()
    );
    assert_eq!(echoed(&r, "host"), ["app.example"], "{}", r.text());
    assert!(echoed(&r, "connection").is_empty(), "{}", r.text());
}

#[test]
fn an_http10_request_without_host_reaches_the_backend_with_the_upstreams_name() {
    let a = Backend::start("a");
    let lb = Lb::start(&single(a.addr));
    let answer = raw_exchange(lb.addr, b"GET /echo HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let hosts: Vec<_> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"))
        .map(|h| h[1].clone())
        .collect();
    assert_eq!(hosts, ["api"], "{body}");
}

#[test]
fn split_cookies_of_an_http2_client_are_one_field_for_an_http1_backend() {
    let a = Backend::start("a");
    let lb = Lb::start_with(&single(a.addr), "h2c = true");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-H",
            "Cookie: a=1",
            "-H",
            "Cookie: b=2",
        ])
        .arg(format!("http://{}/echo", lb.addr))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let cookies: Vec<_> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("cookie"))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["a=1; b=2"], "{body}");
}

#[test]
fn no_interim_answer_reaches_an_http10_client() {
    let (b, _) = scripted_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    );
    let lb = Lb::start(&single(b.addr));
    let old = raw_exchange(lb.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(!old.contains("103"), "{old}");
    assert!(old.ends_with("ok"), "{old}");
    // An HTTP/1.1 client gets the hint first.
    let new = raw_exchange(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(new.starts_with("HTTP/1.1 103"), "{new}");
    assert!(new.contains("HTTP/1.1 200"), "{new}");
}

#[test]
fn a_body_without_length_is_rechunked_and_the_connection_kept() {
    // An HTTP/1.0 backend: no length, the end of its body is its close.
    let (b, _) = scripted_backend(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
        true,
    );
    let lb = Lb::start(&single(b.addr));
    let mut c = Conn::open(lb.addr).unwrap();
    for _ in 0..2 {
        let r = c.send("GET", "/", &[], b"").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "{:?}",
            r.headers
        );
        assert_ne!(r.header("connection"), Some("close"), "{:?}", r.headers);
    }
    // An HTTP/1.0 client gets the body up to the close, told so.
    let old = raw_exchange(lb.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(
        old.to_ascii_lowercase().contains("connection: close"),
        "{old}"
    );
    assert!(old.ends_with("\r\n\r\nhello"), "{old}");
}

#[test]
fn a_space_in_the_request_target_is_a_400_and_not_forwarded() {
    let (b, heads) = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    let lb = Lb::start(&single(b.addr));
    for req in [
        &b"GET /c26 x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /a?b=c d HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = raw_exchange(lb.addr, req);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("pingora"), "{answer}");
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "{:?}",
        heads.lock().unwrap()
    );
}

#[test]
fn an_invalid_host_is_a_400_before_routing_or_redirects() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[[routes]]\npath_prefix = \"/old/\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n\n{}",
        single(a.addr)
    ));
    for host in [
        "evil.example/foo?",
        "a b",
        "user@evil.example",
        "x..y",
        "h:80:80",
    ] {
        let answer = raw_exchange(
            lb.addr,
            format!("GET /old/x HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
        assert!(!answer.contains("Location"), "{host}: {answer}");
    }
    let ok = raw_exchange(
        lb.addr,
        b"GET /old/x HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 301"), "{ok}");
    assert!(
        ok.contains("location: https://shop.example/old/x\r\n")
            || ok.contains("Location: https://shop.example/old/x\r\n"),
        "{ok}"
    );
}

#[test]
fn a_redirect_to_the_request_uri_never_names_another_host() {
    let a = Backend::start("a");
    let lb = Lb::start(&format!(
        "[[routes]]\npath_prefix = \"/\"\nrespond = 301\nlocation = \"$request_uri/\"\n\n{}",
        single(a.addr)
    ));
    for target in [
        "//evil.example/../old/x",
        "/\\evil.example/x",
        "///evil.example",
    ] {
        let answer = raw_exchange(
            lb.addr,
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let location = answer
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{target}: {answer}"));
        assert!(location.starts_with('/'), "{target}: {location}");
        assert!(
            !location.starts_with("//") && !location.starts_with("/\\"),
            "{target}: {location}"
        );
    }
}

#[test]
fn lbs_own_error_answers_carry_no_pingora_fields() {
    // Nothing listens on the backend's port: 502 from lb itself.
    let closed = format!("127.0.0.1:{}", free_port());
    let lb = Lb::start(&format!(
        "[upstreams.api]\nbackends = [\"{closed}\"]\nretries = 0\n"
    ));
    let r = request(lb.addr, "GET", "/", &[], b"");
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.text());
    assert_eq!(r.header("server"), None, "{:?}", r.headers);
    assert_eq!(r.header("cache-control"), None, "{:?}", r.headers);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(
        r.text().starts_with(&format!("{} ", r.status)),
        "{}",
        r.text()
    );
}
