//! Header work on the way through: the request's host (absolute-form targets included), origin
//! form for backends, the forwarded path, `X-Forwarded-*`/`X-Real-IP`/`Forwarded`, and hop-by-hop
//! stripping of responses.

use std::net::IpAddr;

use std::io::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora_core::protocols::http::authority::raw_target_authority;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// The request's host: the authority of an absolute-form target (`GET http://h/p`), which wins
/// over a `Host` header (RFC 9112 §3.2.2), else the `Host` header.
pub(super) fn request_host(req: &RequestHeader) -> Option<&str> {
    target_authority(req).or_else(|| {
        req.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
    })
}

/// The authority of an absolute-form request target, if the request has one.
pub(super) fn target_authority(req: &RequestHeader) -> Option<&str> {
    let authority = raw_target_authority(req.raw_path()).authority()?;
    std::str::from_utf8(authority).ok()
}

/// An absolute-form request (what clients send to a proxy) goes to the backend in origin form
/// (`GET /p?q`), as NGINX does, with `Host` set to the target's authority.
pub(super) fn to_origin_form(req: &mut RequestHeader) -> Result<()> {
    let Some(authority) = target_authority(req).map(str::to_owned) else {
        return Ok(());
    };
    req.insert_header(header::HOST, authority)?;
    // pingora keeps the path and query of an absolute-form target in the URI, and the target
    // itself separately for the wire; setting the URI drops the latter.
    req.set_uri(req.uri.clone());
    Ok(())
}

/// An HTTP/2 request carries its host as `:authority` (in the URI), which an HTTP/1 backend
/// needs as `Host` (RFC 9113 §8.3.1); a `Host` the client sent as well is kept.
pub(super) fn authority_to_host(req: &mut RequestHeader) -> Result<()> {
    if req.headers.contains_key(header::HOST) {
        return Ok(());
    }
    let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) else {
        return Ok(());
    };
    req.insert_header(header::HOST, authority)
}

/// The target of a request to an HTTP/2 backend: `:scheme` the one lb speaks to it (`http` for
/// h2c, which pingora-core would otherwise send as `https`), `:authority` the `Host` it gets.
pub(super) fn h2_target(req: &mut RequestHeader, tls: bool) -> Result<()> {
    let scheme = if tls { "https" } else { "http" };
    let authority = match req.headers.get(header::HOST) {
        Some(h) => h.as_bytes().to_vec(),
        None => match req.uri.authority() {
            Some(a) => a.as_str().as_bytes().to_vec(),
            None => return Ok(()),
        },
    };
    let path = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "HTTP/2 target", e))?;
    req.set_uri(uri);
    Ok(())
}

/// Joins the `cookie` fields an HTTP/2 client may send one per cookie into the one field an
/// HTTP/1 backend expects, separated by `"; "` (RFC 9113 §8.2.3). Untouched with one or none.
pub(super) fn join_cookies(req: &mut RequestHeader) -> Result<()> {
    let mut cookies = req.headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return Ok(());
    };
    let mut joined = Vec::with_capacity(first.len() * 4);
    for (i, v) in req.headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    let joined = HeaderValue::from_maybe_shared(Bytes::from(joined))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "cookie", e))?;
    req.insert_header(header::COOKIE, joined)
}

/// Sets the `Host` the backend gets (`upstreams.X.host_header`). A target with an authority
/// (HTTP/2 clients) loses it, so that the new `Host` is also the backend's `:authority`.
pub(super) fn set_host(req: &mut RequestHeader, host: &str) -> Result<()> {
    if req.uri.authority().is_some() {
        let origin = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = http::Uri::try_from(origin)
            .map_err(|e| Error::because(ErrorType::InternalError, "origin form", e))?;
        req.set_uri(uri);
    }
    req.insert_header(header::HOST, host)
}

/// NGINX's `$host` as the `Host` (`host_header = "client_host"`): the client's host lower-cased,
/// without port or trailing dot. Untouched when already in that form, or absent.
pub(super) fn host_name_only(req: &mut RequestHeader) -> Result<()> {
    let Some(sent) = req.headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let name = crate::snapshot::host_name(sent);
    if name.len() == sent.len() && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(());
    }
    let name = name.to_ascii_lowercase();
    set_host(req, &name)
}

/// Replaces the request's path, keeping its query as sent.
pub(super) fn set_path(req: &mut RequestHeader, path: &str) -> Result<()> {
    let mut path = path.to_string();
    if let Some(q) = req.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let uri = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InternalError, "normalized path", e))?;
    req.set_uri(uri);
    Ok(())
}

/// Sets `X-Forwarded-For/-Proto/-Host`, `X-Real-IP` and `Forwarded` (RFC 7239). From a client
/// in `server.trusted_proxies` the chains are extended (every `X-Forwarded-For` / `Forwarded`
/// line, joined) and its `X-Real-IP`/`-Proto`/`-Host` kept; from anyone else every one of these
/// headers is replaced by lb's own values, never passed through.
pub fn set_forwarded(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    trusted: bool,
    https: bool,
) -> Result<()> {
    let proto = if https { "https" } else { "http" };
    // The client's address, formatted once on the stack and shared by three headers.
    let mut ip_buf = [0u8; 64];
    let ip = client.map_or("", |ip| format_ip(ip, &mut ip_buf));
    let ip_value = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(ip.as_bytes()))
        .map_err(|e| Error::because(ErrorType::InternalError, "client address", e))?;
    let host = req.headers.get(header::HOST).cloned();
    let chain = |req: &RequestHeader, name: &HeaderName| -> Option<String> {
        if !trusted {
            return None;
        }
        let lines: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        (!lines.is_empty()).then(|| lines.join(", "))
    };
    match chain(req, &X_FORWARDED_FOR) {
        Some(prev) => req.insert_header_name(
            &X_FORWARDED_FOR,
            "x-forwarded-for",
            value(format!("{prev}, {ip}"))?,
        ),
        None => req.insert_header_name(&X_FORWARDED_FOR, "x-forwarded-for", ip_value.clone()),
    }
    let element = forwarded_element(
        client,
        ip,
        host.as_ref().and_then(|h| h.to_str().ok()),
        proto,
    );
    let forwarded = match chain(req, &header::FORWARDED) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    req.insert_header_name(&header::FORWARDED, "forwarded", value(forwarded)?);
    if !(trusted && req.headers.contains_key(&X_REAL_IP)) {
        req.insert_header_name(&X_REAL_IP, "x-real-ip", ip_value);
    }
    if !(trusted && req.headers.contains_key(&X_FORWARDED_PROTO)) {
        req.insert_header_name(
            &X_FORWARDED_PROTO,
            "x-forwarded-proto",
            HeaderValue::from_static(proto),
        );
    }
    if !(trusted && req.headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(host) => req.insert_header_name(&X_FORWARDED_HOST, "x-forwarded-host", host),
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
    }
    Ok(())
}

/// A value lb built (from the client's own bytes, so it may be refused).
fn value(v: String) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(v))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "forwarding header", e))
}

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Formats an address into `buf` without the formatting machinery for IPv4 (the common case: four
/// octets, digit by digit); IPv6 goes through `Display`.
pub(super) fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{v6}");
            64 - w.len()
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// lb's hop as an RFC 7239 `Forwarded` element: `for=192.0.2.1;host="h";proto=http`, built in
/// one allocation.
/// `ip` is `client` already formatted.
pub(super) fn forwarded_element(
    client: Option<IpAddr>,
    ip: &str,
    host: Option<&str>,
    proto: &str,
) -> String {
    let mut e = String::with_capacity(64 + host.map_or(0, str::len));
    match client {
        Some(IpAddr::V4(_)) => {
            e.push_str("for=");
            e.push_str(ip);
        }
        Some(IpAddr::V6(_)) => {
            e.push_str("for=\"[");
            e.push_str(ip);
            e.push_str("]\"");
        }
        None => e.push_str("for=unknown"),
    }
    if let Some(h) = host {
        e.push_str(";host=\"");
        if h.bytes().any(|b| b == b'\\' || b == b'"') {
            for c in h.chars() {
                if c == '\\' || c == '"' {
                    e.push('\\');
                }
                e.push(c);
            }
        } else {
            // The common host: nothing to escape, copied whole.
            e.push_str(h);
        }
        e.push('"');
    }
    e.push_str(";proto=");
    e.push_str(proto);
    e
}

/// Hop-by-hop headers never cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Makes the client's head fit to forward (RFC 9110 §7.6.1): `Connection`, every field it names
/// and the standard hop-by-hop fields are removed; a WebSocket upgrade (HTTP/1.1, `Upgrade:
/// websocket`, `Connection: upgrade`) keeps exactly `Connection: Upgrade` and `Upgrade:
/// websocket`, any other upgrade is not forwarded. A body without a length goes chunked. For an
/// HTTP/2 backend (`h2_backend`) `TE: trailers` stays, upgrades go, and nothing is chunked.
pub(super) fn prepare_request(
    req: &mut RequestHeader,
    has_body: bool,
    h2_backend: bool,
) -> Result<()> {
    let hops = Hops::scan(&req.headers, HOP_BY_HOP_REQUEST);
    let mut websocket = false;
    let mut te_trailers = false;
    if hops.connection || hops.listed {
        // `TE: trailers` is the one hop-by-hop field HTTP/2 keeps (RFC 9113 §8.2.2); gRPC
        // servers refuse requests without it.
        te_trailers = h2_backend && has_token(req.headers.get_all(header::TE), "trailers");
        websocket = req.version == http::Version::HTTP_11
            && hops.connection
            && hops.upgrade
            && has_token(req.headers.get_all(header::CONNECTION), "upgrade")
            && has_token(req.headers.get_all(header::UPGRADE), "websocket");
        if hops.connection {
            // `Host` is end-to-end whatever `Connection` says: an HTTP/1.1 request needs it.
            for name in connection_named(&req.headers, false).filter(|n| *n != header::HOST) {
                req.remove_header(&name);
            }
            req.remove_header(&header::CONNECTION);
        }
        if hops.listed {
            for name in HOP_BY_HOP_REQUEST {
                req.remove_header(*name);
            }
        }
    }
    if websocket && !h2_backend {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        req.insert_header(header::UPGRADE, "websocket")?;
    }
    if te_trailers {
        req.insert_header(header::TE, "trailers")?;
    }
    if h2_backend {
        // HTTP/2 frames the body itself.
        return Ok(());
    }
    // `Connection` may have named `Content-Length`: look again only then.
    let has_length = if hops.connection {
        req.headers.contains_key(header::CONTENT_LENGTH)
    } else {
        hops.content_length
    };
    if has_body && !has_length {
        req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    req.set_version(http::Version::HTTP_11);
    Ok(())
}

/// Which hop-by-hop fields a head carries, found in one pass over its field names. Most heads
/// carry none, and then nothing is looked up or removed.
#[derive(Default)]
struct Hops {
    connection: bool,
    upgrade: bool,
    /// A field in the list given to [`Hops::scan`].
    listed: bool,
    content_length: bool,
}

impl Hops {
    fn scan(headers: &http::HeaderMap, listed: &[&str]) -> Hops {
        let mut hops = Hops::default();
        for name in headers.keys() {
            if *name == header::CONNECTION {
                hops.connection = true;
            } else if *name == header::CONTENT_LENGTH {
                hops.content_length = true;
            } else {
                hops.upgrade |= *name == header::UPGRADE;
                hops.listed |= listed.contains(&name.as_str());
            }
        }
        hops
    }
}

/// The fields a message's `Connection` header names (hop-by-hop, RFC 9110 §7.6.1), `upgrade`
/// left out when `keep_upgrade`. A few names, kept on the stack; standard names parse without
/// allocating.
fn connection_named(
    headers: &http::HeaderMap,
    keep_upgrade: bool,
) -> impl Iterator<Item = HeaderName> {
    let mut named: [Option<HeaderName>; 8] = Default::default();
    let mut more = Vec::new();
    let mut n = 0;
    let tokens = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !(t.is_empty() || keep_upgrade && t.eq_ignore_ascii_case("upgrade")));
    for name in tokens.filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()) {
        if n < named.len() {
            named[n] = Some(name);
            n += 1;
        } else {
            more.push(name);
        }
    }
    named.into_iter().flatten().chain(more)
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(values: http::header::GetAll<'_, http::HeaderValue>, token: &str) -> bool {
    values.iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Hop-by-hop request fields besides `Connection` (and the ones it names).
pub(super) const HOP_BY_HOP_REQUEST: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Removes `Connection`, every header it names, and the standard hop-by-hop headers, keeping
/// `Connection`/`Upgrade` on a `101 Switching Protocols`.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    let hops = Hops::scan(&resp.headers, HOP_BY_HOP);
    if !(hops.connection || hops.listed) {
        return;
    }
    let upgrade = resp.status.as_u16() == 101;
    for name in connection_named(&resp.headers, upgrade) {
        resp.remove_header(&name);
    }
    if upgrade {
        resp.remove_header("keep-alive");
        return;
    }
    resp.remove_header(&header::CONNECTION);
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_host_is_nginx_host() {
        for (sent, want) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "example.com"),
            ("x.example.com.", "x.example.com"),
            ("X.Example.com.:80", "x.example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:80", "127.0.0.1"),
        ] {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.insert_header("host", sent).unwrap();
            host_name_only(&mut r).unwrap();
            assert_eq!(r.headers["host"], want, "{sent}");
        }
        let mut none = RequestHeader::build("GET", b"/", None).unwrap();
        host_name_only(&mut none).unwrap();
        assert!(none.headers.get("host").is_none());
    }

    #[test]
    fn strips_connection_and_nominated() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("connection", "close, x-secret").unwrap();
        r.append_header("x-secret", "1").unwrap();
        r.append_header("keep-alive", "timeout=5").unwrap();
        r.append_header("x-kept", "1").unwrap();
        strip_hop_by_hop(&mut r);
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("x-kept").is_some());
    }

    #[test]
    fn request_loses_hop_by_hop_fields_and_keeps_a_websocket_upgrade() {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.append_header("connection", "keep-alive, X-Secret")
            .unwrap();
        r.append_header("connection", "Upgrade").unwrap();
        r.append_header("upgrade", "websocket").unwrap();
        r.append_header("x-secret", "1").unwrap();
        r.append_header("te", "trailers").unwrap();
        r.append_header("proxy-authorization", "Basic x").unwrap();
        r.append_header("x-kept", "1").unwrap();
        prepare_request(&mut r, true, false).unwrap();
        let get = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("connection").as_deref(), Some("Upgrade"));
        assert_eq!(get("upgrade").as_deref(), Some("websocket"));
        assert_eq!(get("transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(get("x-kept").as_deref(), Some("1"));
        for gone in ["x-secret", "te", "proxy-authorization", "keep-alive"] {
            assert_eq!(get(gone), None, "{gone}");
        }
        // Any other upgrade is not forwarded; a body with a length keeps it.
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("connection", "upgrade").unwrap();
        r.append_header("upgrade", "h2c").unwrap();
        r.append_header("content-length", "3").unwrap();
        prepare_request(&mut r, true, false).unwrap();
        assert!(r.headers.get("connection").is_none() && r.headers.get("upgrade").is_none());
        assert!(r.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn response_keeps_upgrade_fields_on_101_only() {
        let mut r = ResponseHeader::build(101, None).unwrap();
        r.append_header("connection", "Upgrade, X-Secret").unwrap();
        r.append_header("upgrade", "websocket").unwrap();
        r.append_header("x-secret", "1").unwrap();
        strip_hop_by_hop(&mut r);
        assert!(r.headers.get("connection").is_some() && r.headers.get("upgrade").is_some());
        assert!(r.headers.get("x-secret").is_none());
    }

    #[test]
    fn forwarded_replaces_untrusted() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "api.example").unwrap();
        r.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        set_forwarded(&mut r, Some("10.1.2.3".parse().unwrap()), false, false).unwrap();
        assert_eq!(r.headers.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(r.headers.get("x-forwarded-host").unwrap(), "api.example");
        let mut r2 = RequestHeader::build("GET", b"/", None).unwrap();
        r2.insert_header("x-forwarded-for", "1.1.1.1").unwrap();
        set_forwarded(&mut r2, Some("10.0.0.1".parse().unwrap()), true, false).unwrap();
        assert_eq!(
            r2.headers.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 10.0.0.1"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut r = RequestHeader::build("GET", b"http://Api.test:81/a/b?c=d", None).unwrap();
        r.insert_header("host", "Api.test:81").unwrap();
        assert_eq!(request_host(&r), Some("Api.test:81"));
        to_origin_form(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/a/b?c=d");
        assert_eq!(r.headers.get("host").unwrap(), "Api.test:81");
        let mut o = RequestHeader::build("GET", b"/x", None).unwrap();
        o.insert_header("host", "h").unwrap();
        to_origin_form(&mut o).unwrap();
        assert_eq!((o.raw_path(), request_host(&o)), (&b"/x"[..], Some("h")));
    }

    #[test]
    fn forwarding_headers_from_untrusted_clients_are_replaced() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "api.example").unwrap();
        r.append_header("x-real-ip", "6.6.6.6").unwrap();
        r.append_header("forwarded", "for=6.6.6.6").unwrap();
        r.append_header("forwarded", "for=7.7.7.7").unwrap();
        set_forwarded(&mut r, Some("2001:db8::1".parse().unwrap()), false, false).unwrap();
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "2001:db8::1");
        let fwd: Vec<_> = r.headers.get_all("forwarded").iter().collect();
        assert_eq!(
            fwd,
            ["for=\"[2001:db8::1]\";host=\"api.example\";proto=http"]
        );
    }

    #[test]
    fn every_forwarded_for_line_is_read_from_trusted_proxies() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("x-forwarded-for", "1.1.1.1").unwrap();
        r.append_header("x-forwarded-for", "2.2.2.2, 3.3.3.3")
            .unwrap();
        r.append_header("x-real-ip", "1.1.1.1").unwrap();
        r.append_header("forwarded", "for=1.1.1.1").unwrap();
        r.append_header("forwarded", "for=2.2.2.2").unwrap();
        set_forwarded(&mut r, Some("10.0.0.1".parse().unwrap()), true, false).unwrap();
        let xff: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]);
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "1.1.1.1");
        let fwd: Vec<_> = r.headers.get_all("forwarded").iter().collect();
        assert_eq!(fwd, ["for=1.1.1.1, for=2.2.2.2, for=10.0.0.1;proto=http"]);
    }

    #[test]
    fn addresses_format_like_display() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "10.0.9.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(format_ip(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn forwarding_fields_reach_the_wire_with_the_parsed_head() {
        let mut r = RequestHeader::build("GET", b"/", Some(2)).unwrap();
        r.append_header("Host", "h").unwrap();
        r.reserve(6);
        set_forwarded(&mut r, Some("192.0.2.7".parse().unwrap()), false, false).unwrap();
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        for line in [
            "Host: h\r\n",
            "x-forwarded-for: 192.0.2.7\r\n",
            "x-real-ip: 192.0.2.7\r\n",
            "forwarded: for=192.0.2.7;host=\"h\";proto=http\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: h\r\n",
        ] {
            assert!(wire.contains(line), "{line:?} in {wire:?}");
        }
    }

    #[test]
    fn connection_cannot_name_host() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("host", "h").unwrap();
        r.append_header("connection", "close, host").unwrap();
        prepare_request(&mut r, false, false).unwrap();
        assert_eq!(r.headers.get("host").unwrap(), "h");
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("cookie", "a=1").unwrap();
        r.append_header("cookie", "b=2").unwrap();
        r.append_header("cookie", "c=3").unwrap();
        join_cookies(&mut r).unwrap();
        let all: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = RequestHeader::build("GET", b"/", None).unwrap();
        one.append_header("cookie", "a=1").unwrap();
        join_cookies(&mut one).unwrap();
        assert_eq!(one.headers.get("cookie").unwrap(), "a=1");
    }

    #[test]
    fn a_length_named_by_connection_goes_and_the_body_is_chunked() {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.append_header("connection", "content-length").unwrap();
        r.append_header("content-length", "3").unwrap();
        prepare_request(&mut r, true, false).unwrap();
        assert!(r.headers.get("content-length").is_none());
        assert_eq!(r.headers.get("transfer-encoding").unwrap(), "chunked");
        // Nothing hop-by-hop: nothing changes but the version.
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("x-a", "1").unwrap();
        prepare_request(&mut r, false, false).unwrap();
        assert_eq!(r.headers.len(), 1);
    }
}
