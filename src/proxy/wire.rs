//! The common request's head for an HTTP/1 backend, written straight from the client's head
//! into the bytes that go out: no copy of the client's header map, no fields inserted into one,
//! no second serialization. lb's other path ([`super::upstream_head`]: clone, edit,
//! serialize) builds every other head, and both give the backend the same fields.
//!
//! The common request is an HTTP/1 request in origin form with one `Host`, no `Upgrade`, a
//! `Connection` (if any) of `keep-alive`/`close` only, at most one `Content-Length`, from a
//! client that is not a trusted proxy, on a route without header rules to an upstream that
//! passes the client's `Host`, on a server that does not keep header case. What the other path
//! does to it, this one does too: hop-by-hop fields are left out, lb's forwarding fields
//! (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`)
//! replace the client's, a body without a length goes chunked, and the version is HTTP/1.1.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::Version;
use pingora_http::{titled_header_name, RequestHeader};

use super::headers::{
    format_ip, forwarded_element, target_authority, HOP_BY_HOP_REQUEST, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP,
};
use crate::edge::head::trim_ows;

/// A head written by [`head`]: what the backend session keeps of it (method and version), the
/// bytes, and how the body is framed (`None`: chunked).
pub(super) struct Wire {
    pub req: Box<RequestHeader>,
    pub bytes: Vec<u8>,
    pub body_length: Option<usize>,
}

/// The head of `req` for an HTTP/1 backend, or `None` when it is not the common request (see
/// the module's header) and the other path must build it. The caller has checked the route,
/// upstream and client conditions; this checks the head's own.
pub(super) fn head(
    req: &RequestHeader,
    forward_path: Option<&str>,
    client: Option<IpAddr>,
    https: bool,
    has_body: bool,
) -> Option<Wire> {
    if !matches!(req.version, Version::HTTP_11 | Version::HTTP_10) || req.has_case() {
        return None;
    }
    if target_authority(req).is_some() {
        return None;
    }
    let (host, length) = framing_fields(req)?;
    let mut w = Vec::with_capacity(256 + req.raw_path().len() + 64 * req.headers.len());
    w.extend_from_slice(req.method.as_str().as_bytes());
    w.push(b' ');
    match forward_path {
        None => w.extend_from_slice(req.raw_path()),
        Some(path) => {
            // The route's path (normalized, prefix replaced) with the client's query.
            w.extend_from_slice(path.as_bytes());
            if let Some(q) = req.uri.query() {
                w.push(b'?');
                w.extend_from_slice(q.as_bytes());
            }
        }
    }
    w.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        if !replaced(name) {
            field(&mut w, name, value.as_bytes());
        }
    }
    let mut ip_buf = [0u8; 64];
    let ip = client.map_or("", |ip| format_ip(ip, &mut ip_buf));
    let proto = if https { "https" } else { "http" };
    let forwarded = forwarded_element(client, ip, host.to_str().ok(), proto);
    field(&mut w, &X_FORWARDED_FOR, ip.as_bytes());
    field(&mut w, &header::FORWARDED, forwarded.as_bytes());
    field(&mut w, &X_REAL_IP, ip.as_bytes());
    field(&mut w, &X_FORWARDED_PROTO, proto.as_bytes());
    field(&mut w, &X_FORWARDED_HOST, host.as_bytes());
    let body_length = match (has_body, length) {
        (true, None) => {
            field(&mut w, &header::TRANSFER_ENCODING, b"chunked");
            None
        }
        (_, n) => Some(n.unwrap_or(0)),
    };
    w.extend_from_slice(b"\r\n");
    // What the backend session reads of the head it sent: the method (a HEAD's answer has no
    // body) and the version; none of its fields (no `Connection`, no `Upgrade` went out).
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method.clone();
    parts.uri = req.uri.clone();
    parts.version = Version::HTTP_11;
    Some(Wire {
        req: Box::new(RequestHeader::from(parts)),
        bytes: w,
        body_length,
    })
}

/// The request's one `Host` and its `Content-Length`; `None` when it has several of either, an
/// `Upgrade`, or a `Connection` naming more than `keep-alive`/`close` (the other path's cases).
fn framing_fields(req: &RequestHeader) -> Option<(&HeaderValue, Option<usize>)> {
    let mut host = None;
    let mut length = None;
    for (name, value) in &req.headers {
        if *name == header::HOST {
            if host.replace(value).is_some() {
                return None;
            }
        } else if *name == header::CONTENT_LENGTH {
            if length.is_some() {
                return None;
            }
            length = Some(std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()?);
        } else if *name == header::UPGRADE
            || (*name == header::CONNECTION && !plain_connection(value))
        {
            return None;
        }
    }
    Some((host?, length))
}

/// `name: value` and its line end.
fn field(w: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    w.extend_from_slice(titled_header_name(name).as_bytes());
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// A `Connection` value that names no field: `keep-alive`, `close` (in any case, listed).
fn plain_connection(value: &HeaderValue) -> bool {
    value.as_bytes().split(|&b| b == b',').all(|t| {
        let t = trim_ows(t);
        t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
    })
}

/// The client's fields that do not go to the backend as sent: hop-by-hop fields (the list lb's
/// other path strips) and the forwarding fields lb writes itself.
fn replaced(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "connection"
        || HOP_BY_HOP_REQUEST.contains(&n)
        || matches!(
            n,
            "x-forwarded-for"
                | "forwarded"
                | "x-real-ip"
                | "x-forwarded-proto"
                | "x-forwarded-host"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::{prepare_request, set_forwarded};

    /// The fields lb's other path sends for `req` (clone, strip, forwarding fields, serialize),
    /// one line each, sorted.
    fn other_path(
        req: &RequestHeader,
        client: Option<IpAddr>,
        https: bool,
        body: bool,
    ) -> Vec<String> {
        let mut r = req.clone();
        prepare_request(&mut r, body, false).unwrap();
        set_forwarded(&mut r, client, false, https).unwrap();
        let mut buf = bytes::BytesMut::new();
        r.header_to_h1_wire(&mut buf);
        let mut lines: Vec<String> = String::from_utf8(buf.to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn wire_fields(w: &Wire) -> Vec<String> {
        let text = String::from_utf8(w.bytes.clone()).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn request(line: &[&str], version: Version) -> RequestHeader {
        let mut r = RequestHeader::build_no_case("POST", b"/a/b?c=d", None).unwrap();
        r.set_version(version);
        for l in line {
            let (k, v) = l.split_once(": ").unwrap();
            r.append_header(k.to_string(), v).unwrap();
        }
        r
    }

    #[test]
    fn the_common_request_gets_the_fields_of_the_other_path() {
        let client = Some("192.0.2.7".parse().unwrap());
        let cases: &[(&[&str], bool)] = &[
            (&["host: api.example"], false),
            (
                &["host: api.example", "connection: keep-alive", "accept: */*"],
                false,
            ),
            (
                &[
                    "host: api.example:8080",
                    "x-forwarded-for: 6.6.6.6",
                    "forwarded: for=6.6.6.6",
                    "x-real-ip: 6.6.6.6",
                    "x-forwarded-proto: https",
                    "x-forwarded-host: evil",
                    "keep-alive: timeout=5",
                    "proxy-authorization: Basic x",
                    "te: trailers",
                ],
                false,
            ),
            (
                &["host: a", "content-length: 5", "content-type: text/plain"],
                true,
            ),
            (&["host: a", "transfer-encoding: chunked"], true),
            (
                &["host: a", "cookie: a=1", "cookie: b=2", "x-custom: 1"],
                false,
            ),
        ];
        for (fields, body) in cases {
            for version in [Version::HTTP_11, Version::HTTP_10] {
                for https in [false, true] {
                    let req = request(fields, version);
                    let w = head(&req, None, client, https, *body).expect("the common request");
                    assert_eq!(
                        wire_fields(&w),
                        other_path(&req, client, https, *body),
                        "{fields:?}"
                    );
                    let first = String::from_utf8_lossy(&w.bytes)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string();
                    assert_eq!(first, "POST /a/b?c=d HTTP/1.1");
                    let length = match (
                        *body,
                        fields.iter().any(|f| f.starts_with("content-length")),
                    ) {
                        (true, false) => None,
                        (true, true) => Some(5),
                        (false, _) => Some(0),
                    };
                    assert_eq!(w.body_length, length, "{fields:?}");
                }
            }
        }
    }

    #[test]
    fn other_requests_go_the_other_path() {
        for fields in [
            &["connection: upgrade", "upgrade: websocket", "host: a"][..],
            &["host: a", "connection: x-secret"],
            &["host: a", "host: b"],
            &["accept: */*"],
            &["host: a", "content-length: 1", "content-length: 1"],
        ] {
            let req = request(fields, Version::HTTP_11);
            assert!(head(&req, None, None, false, false).is_none(), "{fields:?}");
        }
        let mut absolute = RequestHeader::build_no_case("GET", b"http://a/p", None).unwrap();
        absolute.append_header("host", "a").unwrap();
        assert!(head(&absolute, None, None, false, false).is_none());
        let forwarded = request(&["host: a"], Version::HTTP_11);
        let w = head(&forwarded, Some("/v2/b"), None, false, false).unwrap();
        assert!(w.bytes.starts_with(b"POST /v2/b?c=d HTTP/1.1\r\n"));
    }
}
