use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn limits() -> Limits {
    Limits {
        max_header_bytes: 16 * 1024,
        max_headers: 100,
        max_uri_bytes: 8 * 1024,
        max_body_bytes: 10 * 1024 * 1024,
        max_body_bytes_any_route: 10 * 1024 * 1024,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(60),
        max_connections: 10_000,
        preserve_header_case: false,
    }
}

fn status(raw: &str) -> u16 {
    match check_head(raw.as_bytes(), &limits()) {
        Ok(_) => 200,
        Err(r) => r.status,
    }
}

#[test]
fn tchar_table() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_tchar(b), want, "{b:#x}");
    }
}

#[test]
fn accepts_ordinary_requests() {
    let ok = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "\r\nGET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-A:\r\nX-B: \t v \t\r\n\r\n",
        "POST /u HTTP/1.1\nHost: a\nContent-Length: 5\n\n",
        "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n",
    ];
    for raw in ok {
        assert_eq!(status(raw), 200, "{raw:?}");
    }
    let info = check_head(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\n\r\n",
        &limits(),
    )
    .unwrap();
    assert!(info.chunked && info.upgrade && info.content_length.is_none());
}

#[test]
fn refuses_bad_framing_and_syntax() {
    let cases: &[(&str, u16)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000000\r\n\r\n", 413),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x01\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x00\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7f\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n", 400),
        ];
    for (raw, want) in cases {
        assert_eq!(status(raw), *want, "{raw:?}");
    }
}

#[test]
fn refuses_over_limits() {
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(status(&long_uri), 414);
    let huge_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20000));
    assert_eq!(status(&huge_uri), 414);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17000)
    );
    assert_eq!(status(&big), 431);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
        431
    );
    let hundred: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{hundred}\r\n")),
        200
    );
}

#[test]
fn scan_finds_head_end_and_limits() {
    let l = limits();
    let mut s = HeadScan::default();
    assert_eq!(s.feed(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n", &l), Scan::More);
    assert_eq!(s.feed(b"\r\nbody", &l), Scan::Done);
    let mut s = HeadScan::default();
    assert_eq!(s.feed(b"GET / HTTP/1.1\nA: b\n\n", &l), Scan::Done);
    let mut s = HeadScan::default();
    let uri = vec![b'a'; 9000];
    assert_eq!(s.feed(b"GET /", &l), Scan::More);
    assert_eq!(s.feed(&uri, &l), Scan::Refuse(414));
    let mut s = HeadScan::default();
    assert_eq!(s.feed(b"GET / HTTP/1.1\r\nX: ", &l), Scan::More);
    assert_eq!(s.feed(&vec![b'x'; 17000], &l), Scan::Refuse(431));
    let mut s = HeadScan::default();
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        s.feed(format!("GET / HTTP/1.1\r\n{many}").as_bytes(), &l),
        Scan::Refuse(431)
    );
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn value() -> impl Strategy<Value = String> {
    "[ -~]{0,24}".prop_map(|v| v.trim().to_string())
}

/// A valid request head and the header lines it is built from.
fn valid_head() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        "/[A-Za-z0-9/._~%-]{0,40}",
        "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}",
        prop::collection::vec((token(), value()), 0..12),
    )
        .prop_map(|(m, path, host, extra)| {
            let mut headers = vec![("Host".to_string(), host)];
            headers.extend(extra.into_iter().filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !matches!(n.as_str(), "host" | "content-length" | "transfer-encoding")
            }));
            let mut raw = format!("{m} {path} HTTP/1.1\r\n");
            for (n, v) in &headers {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            (raw, headers)
        })
}

/// The byte-at-a-time definition of [`HeadScan::feed`], the model the fast version must match.
fn reference_scan(bytes: &[u8], l: &Limits) -> Scan {
    let (mut total, mut started, mut line1_done, mut spaces, mut target, mut fields) =
        (0usize, false, false, 0u8, 0usize, 0usize);
    let (mut lf, mut lf_cr) = (false, false);
    for &b in bytes {
        total += 1;
        if total > l.max_header_bytes {
            let uri = !line1_done || target > l.max_uri_bytes;
            return Scan::Refuse(if uri { 414 } else { 431 });
        }
        if !started {
            if b == b'\r' || b == b'\n' {
                continue;
            }
            started = true;
        }
        if !line1_done {
            match b {
                b'\n' => {
                    line1_done = true;
                    lf = true;
                }
                b' ' => spaces = spaces.saturating_add(1),
                _ if spaces == 1 => {
                    target += 1;
                    if target > l.max_uri_bytes {
                        return Scan::Refuse(414);
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'\n' if lf => return Scan::Done,
            b'\n' => {
                (lf, lf_cr) = (true, false);
                fields += 1;
                if fields > l.max_headers {
                    return Scan::Refuse(431);
                }
            }
            b'\r' if lf && !lf_cr => lf_cr = true,
            _ => (lf, lf_cr) = (false, false),
        }
    }
    Scan::More
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = check_head(&raw, &limits());
        let mut s = HeadScan::default();
        let _ = s.feed(&raw, &limits());
    }

    #[test]
    fn scan_verdict_does_not_depend_on_read_boundaries(
        raw in prop::collection::vec(prop::sample::select(b"GET /a\r\n :xH".to_vec()), 0..400),
        cuts in prop::collection::vec(0usize..400, 0..8),
        max_header in 20usize..300,
        max_uri in 1usize..40,
        max_headers in 1usize..10,
    ) {
        let l = Limits { max_header_bytes: max_header, max_uri_bytes: max_uri, max_headers, ..limits() };
        let want = reference_scan(&raw, &l);
        let mut whole = HeadScan::default();
        prop_assert_eq!(whole.feed(&raw, &l), reference_scan(&raw, &l));
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(raw.len())).collect();
        cuts.sort_unstable();
        let mut parts = HeadScan::default();
        let mut got = Scan::More;
        let mut from = 0;
        for to in cuts.into_iter().chain([raw.len()]) {
            got = parts.feed(&raw[from..to], &l);
            from = to;
            if got != Scan::More {
                break;
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn valid_heads_pass((raw, _) in valid_head()) {
        prop_assert!(check_head(raw.as_bytes(), &limits()).is_ok(), "{:?}", raw);
        // The incremental scan agrees on where the head ends, however it is split.
        let mut s = HeadScan::default();
        let mid = raw.len() / 2;
        let first = s.feed(&raw.as_bytes()[..mid], &limits());
        prop_assert_eq!(first, Scan::More);
        prop_assert_eq!(s.feed(&raw.as_bytes()[mid..], &limits()), Scan::Done);
    }

    #[test]
    fn a_control_byte_in_a_value_is_refused(
        (raw, _) in valid_head(),
        ctl in prop::sample::select((0u8..0x20).filter(|b| *b != b'\t' && *b != b'\n').chain([0x7f]).collect::<Vec<u8>>()),
    ) {
        // Insert the byte inside the Host value (always the first header line).
        let at = raw.find("Host: ").unwrap() + "Host: ".len();
        let mut bad = raw.as_bytes().to_vec();
        bad.insert(at, ctl);
        prop_assert_eq!(check_head(&bad, &limits()).map(|_| ()).unwrap_err().status, 400);
    }

    #[test]
    fn framing_smuggling_shapes_are_refused(
        (raw, _) in valid_head(),
        shape in 0usize..7,
        n in 0u64..100_000,
    ) {
        let extra = match shape {
            0 => format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
            1 => format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
            2 => format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
            3 => "Transfer-Encoding: chunked, chunked\r\n".to_string(),
            4 => format!("Content-Length: {n}, {n}\r\n"),
            5 => "Host: second.example\r\n".to_string(),
            _ => "X-Fold: a\r\n  folded\r\n".to_string(),
        };
        let bad = raw.replacen("\r\n", &format!("\r\n{extra}"), 1);
        prop_assert_eq!(check_head(bad.as_bytes(), &limits()).map(|_| ()).unwrap_err().status, 400, "{:?}", bad);
    }
}

#[test]
fn http2_heads_are_checked_for_target_fields_and_length() {
    let l = Limits {
        max_uri_bytes: 16,
        max_headers: 2,
        max_body_bytes: 100,
        max_body_bytes_any_route: 100,
        ..limits()
    };
    let fields = |pairs: &[(&'static str, &'static str)]| {
        let mut m = http::HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, http::HeaderValue::from_static(v));
        }
        m
    };
    let ok = check_h2_head("/a", None, &fields(&[("content-length", "5")]), &l).unwrap();
    assert_eq!((ok.content_length, ok.chunked), (Some(5), false));
    // No length: the body is counted as it arrives.
    assert!(check_h2_head("/a", None, &fields(&[]), &l).unwrap().chunked);
    let status = |r: Result<HeadInfo, Reject>| r.unwrap_err().status;
    assert_eq!(
        status(check_h2_head(
            "/a-target-longer-than-16",
            None,
            &fields(&[]),
            &l
        )),
        414
    );
    let many = fields(&[("a", "1"), ("b", "2"), ("c", "3")]);
    assert_eq!(status(check_h2_head("/a", None, &many, &l)), 431);
    assert_eq!(
        status(check_h2_head(
            "/a",
            None,
            &fields(&[("content-length", "101")]),
            &l
        )),
        413
    );
    assert_eq!(
        status(check_h2_head(
            "/a",
            None,
            &fields(&[("content-length", "x")]),
            &l
        )),
        400
    );
    let two = fields(&[("content-length", "1"), ("content-length", "1")]);
    assert_eq!(status(check_h2_head("/a", None, &two, &l)), 400);
}

#[test]
fn host_must_be_a_valid_authority() {
    for ok in [
        "a",
        "api.example.com",
        "api.example.com:8080",
        "127.0.0.1:80",
        "[::1]",
        "[2001:db8::1]:443",
        "x_y-z.example.",
        "",
    ] {
        assert!(is_valid_host(ok.as_bytes()), "{ok:?}");
        let raw = format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n");
        assert_eq!(status(&raw), 200, "{raw:?}");
    }
    for bad in [
        "evil.example/foo?",
        "a b",
        "user@host",
        "h:80:80",
        "h:port",
        "a..b",
        "[::1",
        "[zz]",
        "h\\x",
        "h#x",
        "h:123456",
    ] {
        assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(status(&raw), 400, "{raw:?}");
    }
    let h = http::HeaderMap::new();
    let l = limits();
    assert!(check_h2_head("/", Some(b"ok.example:8443"), &h, &l).is_ok());
    assert_eq!(
        check_h2_head("/", Some(b"evil/x"), &h, &l)
            .unwrap_err()
            .status,
        400
    );
}
