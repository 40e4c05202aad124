//! lb's own answers (refusals, errors, and the answers of `respond` routes): one plain-text body
//! format, written through a pingora session or as raw bytes by the connection layer.

use bytes::Bytes;
use http::header;
use pingora_core::protocols::http::ServerSession;
use pingora_error::Result;
use pingora_http::ResponseHeader;

use super::head::Reject;

/// The body of every answer lb gives itself: `{status} {phrase}: {reason}` and a newline.
pub fn body(status: u16, reason: &str) -> String {
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{status} {phrase}: {reason}\n")
}

/// Writes lb's own answer to a refused request and marks the connection for closing.
pub(super) async fn answer(session: &mut ServerSession, r: Reject) -> Result<()> {
    write(session, r.status, r.reason, true).await
}

/// Writes lb's own plain-text answer through a pingora session. The connection closes after it
/// when `close` is set or when the request's body was not read (unread bytes would be taken for
/// the next request); otherwise it stays open for the next request.
pub async fn write(
    session: &mut ServerSession,
    status: u16,
    reason: &str,
    close: bool,
) -> Result<()> {
    write_with(session, status, body(status, reason), close, None).await
}

/// A 301 to `location` (lb's NGINX-style redirect to a prefix route's name with its slash).
pub async fn redirect(session: &mut ServerSession, location: &str) -> Result<()> {
    let reason = format!("see {location}");
    write_with(session, 301, body(301, &reason), false, Some(location)).await
}

/// A route's own answer (`respond`): `status` with `body` as written, or a redirect to
/// `location` with lb's short body naming it.
pub async fn respond(
    session: &mut ServerSession,
    status: u16,
    body_text: String,
    location: Option<&str>,
    content_type: Option<&str>,
) -> Result<()> {
    if matches!(status, 204 | 304) {
        // No body, so no Content-Length or Content-Type either (RFC 9110 §8.6, §15.3.5).
        let resp = ResponseHeader::build(status, Some(0))?;
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp)).await?;
        return session.write_response_body(Bytes::new(), true).await;
    }
    let text = match location {
        Some(l) => body(status, &format!("see {l}")),
        None => body_text,
    };
    let content_type = content_type.unwrap_or(PLAIN);
    write_typed(session, status, text, false, location, content_type).await
}

/// The Content-Type of lb's own answers.
const PLAIN: &str = "text/plain; charset=utf-8";

async fn write_with(
    session: &mut ServerSession,
    status: u16,
    body: String,
    close: bool,
    location: Option<&str>,
) -> Result<()> {
    write_typed(session, status, body, close, location, PLAIN).await
}

async fn write_typed(
    session: &mut ServerSession,
    status: u16,
    body: String,
    close: bool,
    location: Option<&str>,
    content_type: &str,
) -> Result<()> {
    let resp = plain_head(status, body.len(), close, location, content_type)?;
    if close || !session.is_body_empty() {
        session.set_keepalive(None);
    }
    let head = session.req_header().method == http::Method::HEAD;
    write_head_and_body(session, resp, body, head).await
}

/// lb's 400 for a request head pingora's parser refused: there is no parsed request to look at
/// (no method, no body), and the connection closes after it.
pub async fn malformed(session: &mut ServerSession) -> Result<()> {
    let body = body(400, "malformed request head");
    let resp = plain_head(400, body.len(), true, None, PLAIN)?;
    session.set_keepalive(None);
    write_head_and_body(session, resp, body, false).await
}

/// The head of one of lb's own answers: its type and length, a `Location`, `Connection: close`.
fn plain_head(
    status: u16,
    len: usize,
    close: bool,
    location: Option<&str>,
    content_type: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    if let Some(l) = location {
        resp.insert_header(header::LOCATION, l)?;
    }
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, len)?;
    if close {
        resp.insert_header(header::CONNECTION, "close")?;
    }
    Ok(resp)
}

async fn write_head_and_body(
    session: &mut ServerSession,
    resp: ResponseHeader,
    body: String,
    head: bool,
) -> Result<()> {
    session.write_response_header(Box::new(resp)).await?;
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    session.write_response_body(body, true).await
}

/// A complete raw HTTP/1.1 answer written by the connection layer itself.
pub(super) fn raw_answer(status: u16, reason: &str) -> Vec<u8> {
    let body = body(status, reason);
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry = if status == 503 {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
