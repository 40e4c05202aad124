//! gRPC on the request path: which requests are gRPC, their deadline (`grpc-timeout`), and lb's
//! own answers in gRPC's terms. A gRPC client reads the outcome from `grpc-status`, not from the
//! HTTP status, so when lb itself fails a gRPC call it answers HTTP 200 with
//! `content-type: application/grpc` and a trailers-only `grpc-status`: 4 DEADLINE_EXCEEDED when
//! a timeout ran out (the client's `grpc-timeout` or the upstream's `read_timeout`), 14
//! UNAVAILABLE for everything else (no route, no usable backend, connect failure, reset).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use pingora_core::protocols::http::ServerSession;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// `UNAVAILABLE`.
pub const UNAVAILABLE: u8 = 14;
/// A quota ran out: lb's answer to a call over a rate limit (as Envoy's
/// `rate_limited_as_resource_exhausted`).
pub const RESOURCE_EXHAUSTED: u8 = 8;
/// `UNIMPLEMENTED`: a call to a path lb answers itself (a `respond` route).
pub const UNIMPLEMENTED: u8 = 12;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A gRPC request: a `POST` with `content-type: application/grpc` or `application/grpc+FORMAT`
/// (gRPC-Web, which carries its trailers in the body, is plain HTTP to lb). Other methods cost
/// no header lookup.
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.method == http::Method::POST
        && req
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("application/grpc"))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

/// The call's deadline from `grpc-timeout` (`1..=99999999` and a unit `H M S m u n`); `None`
/// when absent or malformed (gRPC servers ignore those too).
pub fn deadline(req: &RequestHeader) -> Option<Duration> {
    let v = req.headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for an HTTP status lb would have answered with.
pub fn status_for(http_status: u16) -> u8 {
    match http_status {
        504 | 408 => DEADLINE_EXCEEDED,
        _ => UNAVAILABLE,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec): bytes outside printable ASCII and
/// `%` itself.
fn encode_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The status fields of an answer: `grpc-status` and `grpc-message`.
fn status_fields(status: u8, message: &str) -> http::HeaderMap {
    let mut m = http::HeaderMap::with_capacity(2);
    m.insert(GRPC_STATUS, HeaderValue::from(u16::from(status)));
    if let Ok(v) = HeaderValue::from_str(&encode_message(message)) {
        m.insert(GRPC_MESSAGE, v);
    }
    m
}

/// lb's own answer to a gRPC call that has had no response head yet: HTTP 200,
/// `content-type: application/grpc`, and `grpc-status`/`grpc-message` in a trailers-only
/// response (one HEADERS frame ending the stream).
pub async fn answer(session: &mut ServerSession, status: u8, message: &str) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(CONTENT_TYPE, "application/grpc")?;
    for (name, value) in status_fields(status, message) {
        if let Some(name) = name {
            resp.insert_header(name, value)?;
        }
    }
    match session {
        ServerSession::H2(h2) => h2.write_response_header(Box::new(resp), true),
        _ => {
            session.write_response_header(Box::new(resp)).await?;
            session.write_response_body(Bytes::new(), true).await
        }
    }
}

/// Ends a gRPC call whose response head already went out with `status` in its trailers.
pub async fn end(session: &mut ServerSession, status: u8, message: &str) -> Result<()> {
    session
        .write_response_trailers(status_fields(status, message))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        for (n, v) in fields {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn recognises_grpc_and_its_deadline() {
        assert!(is_grpc(&req(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&req(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&req(&[("content-type", "application/grpc-web")])));
        assert!(!is_grpc(&req(&[("content-type", "application/json")])));
        let mut get = RequestHeader::build("GET", b"/pkg.Svc/Call", None).unwrap();
        get.append_header("content-type", "application/grpc")
            .unwrap();
        assert!(!is_grpc(&get), "gRPC calls are POSTs");
        let d = |v| deadline(&req(&[("grpc-timeout", v)]));
        assert_eq!(d("250m"), Some(Duration::from_millis(250)));
        assert_eq!(d("2S"), Some(Duration::from_secs(2)));
        assert_eq!(d("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(d("123456789m"), None, "at most 8 digits");
        assert_eq!(d("m"), None);
        assert_eq!(d("10x"), None);
        assert_eq!(deadline(&req(&[])), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            encode_message("no backend: 100% gone\n"),
            "no backend: 100%25 gone%0A"
        );
        assert_eq!(status_for(504), DEADLINE_EXCEEDED);
        assert_eq!(status_for(502), UNAVAILABLE);
    }
}
