//! What lb says on the wire, message by message, where HTTP and NGINX fix the answer: no 1xx to
//! HTTP/1.0 clients, bodies without a length rechunked on kept-alive connections, request targets with spaces and invalid `Host`s
//! refused, no network-path redirects, and lb's own error answers without pingora's fields.

use crate::support::raw::{exchange, scripted_backend, OK_RESPONSE};
use crate::support::*;

#[test]
fn no_interim_answer_reaches_an_http10_client() {
    let (b, _) = scripted_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    );
    let lb = Lb::start(&single(b.addr));
    let old = exchange(lb.addr, b"GET / HTTP/1.0\r\n\r\n").text();
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(!old.contains("103"), "{old}");
    assert!(old.ends_with("ok"), "{old}");
    // An HTTP/1.1 client gets the hint first.
    let new = exchange(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text();
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
    let old = exchange(lb.addr, b"GET / HTTP/1.0\r\n\r\n").text();
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(
        old.to_ascii_lowercase().contains("connection: close"),
        "{old}"
    );
    assert!(old.ends_with("\r\n\r\nhello"), "{old}");
}

#[test]
fn a_space_in_the_request_target_is_a_400_and_not_forwarded() {
    let (b, heads) = scripted_backend(OK_RESPONSE, false);
    let lb = Lb::start(&single(b.addr));
    for req in [
        &b"GET /c26 x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /a?b=c d HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = exchange(lb.addr, req).text();
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
        let answer = exchange(
            lb.addr,
            format!("GET /old/x HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .text();
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
        assert!(!answer.contains("Location"), "{host}: {answer}");
    }
    let ok = exchange(
        lb.addr,
        b"GET /old/x HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: close\r\n\r\n",
    )
    .text();
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
        let answer = exchange(
            lb.addr,
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .text();
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

/// A backend's `Content-Length` frames its answer as RFC 9110 §8.6 (and hyper) decide:
/// identical duplicates, and a comma list of one value, are that value; values that differ, or
/// one that is not a number, make the answer unusable (lb's 502), never a misframed body.
#[test]
fn backend_content_length_duplicates_are_reconciled_or_refused() {
    use crate::support::raw::{exchange, scripted_backend};
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let cases: [(&'static [u8], u16, &str); 5] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            200,
            "ok",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2 , 2\r\n\r\nok",
            200,
            "ok",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            502,
            "",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 502, ""),
    ];
    for (answer, status, body) in cases {
        let (b, _) = scripted_backend(answer, true);
        let lb = Lb::start(&single(b.addr));
        let r = exchange(lb.addr, REQUEST);
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(r.status(), Some(status), "{shown:?}: {}", r.text());
        if status == 200 {
            assert_eq!(r.body(), body.as_bytes(), "{shown:?}");
        }
    }
}
