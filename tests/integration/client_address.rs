//! Who the client is (issue 27 item 3): `server.real_ip_from` / `real_ip_header` /
//! `real_ip_recursive` make the address a trusted proxy names the client for the rate limits,
//! the forwarding headers, `access` and the access log; and a route's `access` rules (item 5:
//! NGINX's `allow`/`deny`, first match wins, lb's 403) by source address, hot reloaded. Clients
//! are told apart by binding their socket to 127.0.0.2 and friends (all of 127/8 is local).

use std::net::IpAddr;
use std::time::Duration;

use crate::support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `X-Real-IP` and `X-Forwarded-For` as the backend (sample-backend's `/echo`) received them.
fn forwarded(r: &Response) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.text());
    let h = echo_headers(&r.json());
    let one = |name| header_values(&h, name).join(" | ");
    (one("x-real-ip"), one("x-forwarded-for"))
}

fn pair(real: &str, xff: &str) -> (String, String) {
    (real.to_string(), xff.to_string())
}

#[test]
fn a_trusted_proxy_names_the_client_for_headers_limits_and_the_log() {
    let a = Backend::start("a");
    let log = temp_dir("realip-log").join("access.log");
    let server = format!(
        "real_ip_from = [\"127.0.0.1\"]\nreal_ip_header = \"X-Forwarded-For\"\naccess_log = \"{}\"",
        log.display()
    );
    let body = format!(
        "[rate_limits.per_client]\nkey = \"client_ip\"\nrate = \"1/m\"\nburst = 1\nnodelay = true\n\n\
         [upstreams.api]\n{}\n\n[[routes]]\npath_prefix = \"/echo/limited\"\nupstream = \"api\"\n\
         rate_limits = [\"per_client\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
        backends_toml(&[(&a, 1)])
    );
    let lb = Lb::start_with(&body, &server);
    fn xff(v: &str) -> [(&str, &str); 1] {
        [("X-Forwarded-For", v)]
    }
    // From the trusted peer: the header's last address is the client; the chain is kept and
    // extended with it, as NGINX's `$proxy_add_x_forwarded_for` after realip.
    let r = get_from(
        lb.addr,
        ip("127.0.0.1"),
        "/echo/a",
        &xff("198.51.100.9, 203.0.113.7"),
    );
    assert_eq!(
        forwarded(&r),
        pair("203.0.113.7", "198.51.100.9, 203.0.113.7, 203.0.113.7")
    );
    // From anyone else the header is a claim: the peer is the client, the chain replaced.
    let r = get_from(lb.addr, ip("127.0.0.2"), "/echo/a", &xff("203.0.113.7"));
    assert_eq!(forwarded(&r), pair("127.0.0.2", "127.0.0.2"));
    // No header from the trusted peer: the peer.
    let r = get_from(lb.addr, ip("127.0.0.1"), "/echo/a", &[]);
    assert_eq!(forwarded(&r), pair("127.0.0.1", "127.0.0.1"));

    // Two clients behind the one proxy have a bucket each (burst 1: two pass, then 429).
    let status =
        |client: &str| get_from(lb.addr, ip("127.0.0.1"), "/echo/limited", &xff(client)).status;
    let first: Vec<u16> = (0..3).map(|_| status("192.0.2.1")).collect();
    assert_eq!(first, [200, 200, 429]);
    let second: Vec<u16> = (0..3).map(|_| status("192.0.2.2")).collect();
    assert_eq!(second, [200, 200, 429], "its own bucket, not the proxy's");

    // The access log names the real client (no port: the header carries none).
    let line = wait_for("the access log line", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("\"client\":\"192.0.2.2:0\""))
            .map(str::to_string)
    });
    assert!(line.contains("/echo/limited"), "{line}");

    // Recursive (hot reloaded): the rightmost address outside real_ip_from.
    let server_reloaded = server.replace(
        "\"127.0.0.1\"]",
        "\"127.0.0.0/8\"]\nreal_ip_recursive = true",
    );
    lb.write_raw(&format!(
        "{}\n\n{body}\n",
        lb.header.replace(&server, &server_reloaded)
    ));
    let (code, answer) = lb.reload();
    assert_eq!(code, 200, "{answer}");
    let r = get_from(
        lb.addr,
        ip("127.0.0.1"),
        "/echo/a",
        &xff("198.51.100.9, 127.0.0.5"),
    );
    assert_eq!(
        forwarded(&r),
        pair("198.51.100.9", "198.51.100.9, 127.0.0.5, 198.51.100.9")
    );
}

/// `routes[i].access`: the first matching rule decides, no match allows; lb answers 403 itself
/// (counted like its other answers); a reload swaps the rules.
#[test]
fn access_rules_by_source_address_first_match_wins_and_reload() {
    let a = Backend::start("a");
    let body = |rules: &str| {
        format!(
            "[upstreams.api]\n{}\n\n[[routes]]\npath_prefix = \"/echo/admin\"\nupstream = \"api\"\n\
             access = [{rules}]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
            backends_toml(&[(&a, 1)])
        )
    };
    let lb = Lb::start(&body(
        "\"deny 127.0.0.3\", \"allow 127.0.0.0/29\", \"deny all\"",
    ));
    let status = |from: &str, path: &str| get_from(lb.addr, ip(from), path, &[]).status;
    assert_eq!(status("127.0.0.1", "/echo/admin/x"), 200);
    assert_eq!(
        status("127.0.0.3", "/echo/admin/x"),
        403,
        "the first match wins"
    );
    assert_eq!(status("127.0.0.9", "/echo/admin/x"), 403, "deny all");
    assert_eq!(
        status("127.0.0.9", "/echo/other"),
        200,
        "other routes are open"
    );
    let refused = get_from(lb.addr, ip("127.0.0.9"), "/echo/admin/x", &[]);
    assert_eq!(refused.backend(), "", "answered by lb");
    assert!(refused.text().contains("forbidden"), "{}", refused.text());
    let metrics = lb.metrics();
    assert!(
        metrics.lines().any(|l| l.starts_with("lb_requests_total{")
            && l.contains("code=\"403\"")
            && l.contains("upstream=\"api\"")),
        "403 not counted:\n{metrics}"
    );

    let curl = |from: &str| curl_code(from, &[], &format!("http://{}/echo/admin/y", lb.addr));
    assert_eq!(
        (curl("127.0.0.2"), curl("127.0.0.10")),
        ("200".into(), "403".into())
    );

    lb.write_config(&body("\"allow 127.0.0.10\", \"deny all\""));
    let (code, answer) = lb.reload();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        (curl("127.0.0.2"), curl("127.0.0.10")),
        ("403".into(), "200".into())
    );
}

/// `access` sees the real client behind a trusted proxy, not the proxy.
#[test]
fn access_rules_see_the_real_client() {
    let a = Backend::start("a");
    let lb = Lb::start_with(
        &format!(
            "[upstreams.api]\n{}\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n\
             access = [\"allow 10.0.0.0/8\", \"deny all\"]\n",
            backends_toml(&[(&a, 1)])
        ),
        "real_ip_from = [\"127.0.0.1\"]",
    );
    // NGINX's default header, X-Real-IP.
    let get = |from: &str, real: &str| {
        get_from(lb.addr, ip(from), "/echo/x", &[("X-Real-IP", real)]).status
    };
    assert_eq!(get("127.0.0.1", "10.1.2.3"), 200);
    assert_eq!(get("127.0.0.1", "192.0.2.1"), 403);
    assert_eq!(
        get("127.0.0.2", "10.1.2.3"),
        403,
        "an untrusted peer's claim"
    );
}

#[test]
fn client_address_settings_are_checked_by_key_path() {
    let (ok, out) = check_config(
        "[server]\nlisten = [\"127.0.0.1:1\", { address = \"127.0.0.1:3\", proxy_protocl = true }]\nreal_ip_from = [\"10.0.0.0/33\"]\n\
         real_ip_header = \"bad header\"\n\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n\
         access = [\"allow 10.0.0.0/8\", \"permit all\", \"deny 1.2.3\"]\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "server.listen[1].proxy_protocl: unknown key",
        "server.real_ip_from[0]",
        "server.real_ip_header",
        "routes[0].access[1]",
        "routes[0].access[2]",
    ] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
    assert!(!out.contains("routes[0].access[0]"), "{out}");
}

/// lb on a plain listener and a `proxy_protocol = true` one, in front of `body`'s upstreams;
/// returns it and the PROXY listener's address.
fn lb_with_proxy_listener(body: &str) -> (Lb, std::net::SocketAddr) {
    let (port, pp, admin) = (free_port(), free_port(), free_port());
    let dir = temp_dir("proxy-protocol");
    let header = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\", {{ address = \"127.0.0.1:{pp}\", \
         proxy_protocol = true }}]\nthreads = 2\ngrace_period = \"3s\"\n\n[admin]\n\
         listen = \"127.0.0.1:{admin}\""
    );
    std::fs::write(dir.join("lb.toml"), format!("{header}\n\n{body}\n")).unwrap();
    let lb = Lb::spawn(dir, port, admin, header);
    lb.wait_ready();
    (lb, format!("127.0.0.1:{pp}").parse().unwrap())
}

/// `bytes` then a GET of /echo/pp on a new connection to `addr`: the answer, or the error of a
/// connection lb closed.
fn after_prefix(addr: std::net::SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(bytes)?;
    Conn::from_stream(s)?.send("GET", "/echo/pp", &[], b"")
}

/// PROXY protocol v1 and v2 (issue 27 item 3): the header's source address is the client; a
/// connection without a valid header is closed; curl's `--haproxy-protocol` (v1) is served.
#[test]
fn proxy_protocol_listener_takes_the_client_from_the_header() {
    let a = Backend::start("a");
    let (lb, pp) = lb_with_proxy_listener(&single(a.addr));
    let r = after_prefix(pp, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n").unwrap();
    assert_eq!(forwarded(&r), pair("203.0.113.9", "203.0.113.9"));
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v2.extend_from_slice(&[0x15, 0xb3, 0x00, 0x50]);
    let r = after_prefix(pp, &v2).unwrap();
    assert_eq!(forwarded(&r), pair("2001:db8::7", "2001:db8::7"));
    // No header, or a broken one: closed without an answer.
    for bad in [
        &b""[..],
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555\r\n",
        b"PROXY TCP9 x\r\n",
    ] {
        let r = after_prefix(pp, bad);
        assert!(
            r.is_err(),
            "{:?} answered: {r:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // The plain listener next to it takes no header.
    let r = after_prefix(lb.addr, b"").unwrap();
    assert_eq!(forwarded(&r), pair("127.0.0.1", "127.0.0.1"));

    let curl = |extra: &[&str]| curl_code("127.0.0.2", extra, &format!("http://{pp}/echo/curl"));
    assert_eq!(curl(&["--haproxy-protocol"]), "200");
    assert_eq!(curl(&[]), "000", "no PROXY header: closed");
}

/// curl's status code (`000`: no answer) for `url`, sent from the source address `from` (its
/// `--interface` binds the client socket) with `extra` arguments.
fn curl_code(from: &str, extra: &[&str], url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            from,
        ])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
