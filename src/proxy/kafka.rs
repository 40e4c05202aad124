//! Async routes (`routes[i].kafka`, HTTP → Kafka): the request's body becomes one Kafka record,
//! produced with the route's shared producer ([`crate::state::kafka`]), and lb answers:
//!
//! - `202 Accepted` with `{"topic":…,"partition":…,"offset":…}` once the broker acknowledged the
//!   record as `acks` asks (`all` by default: the 202 is a promise that the record is durable);
//! - `503` with `Retry-After: 1` at once when the producer's queue is full (the send never
//!   waits for room), or when no acknowledgement came within the route's `timeout` (librdkafka
//!   gives the record up then too, see [`crate::state::kafka`]): never a 202 for a record that
//!   can be lost;
//! - `413` for a body over `max_bytes` (by `Content-Length` before reading, else as it is read:
//!   never more than `max_bytes` is buffered), or one the broker refuses as too large;
//! - `405` with `Allow` for a method the route does not take.
//!
//! The record's key is the route's `key` (a header, a path segment, or none); its headers are
//! the request's `content-type` and the headers the route lists, values as sent, so protobuf or
//! Avro bodies go through untouched.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::edge::answer;
use crate::observe::metrics::Metrics;
use crate::snapshot::KafkaTarget;

/// Waited beyond the route's `timeout` for librdkafka's own verdict: it gives the record up
/// at `timeout` (`message.timeout.ms`), but looks for timed-out records once a second, so its
/// verdict can come up to a second late. Waiting that second makes its answer, not lb's clock,
/// decide: a record lb answered 503 for is then one librdkafka gave up, not one that a broker
/// coming back within that second would still receive.
const ACK_GRACE: Duration = Duration::from_secs(1);

/// How a request of a `kafka` route ended, as `lb_kafka_route_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Unavailable,
    TooLarge,
    Refused,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unavailable => "unavailable",
            Outcome::TooLarge => "too_large",
            Outcome::Refused => "refused",
        }
    }
}

/// Produces the request to `target`'s topic and answers it. `path` is the normalized path (for
/// a `path:N` key).
pub(super) async fn serve(
    session: &mut ServerSession,
    target: &KafkaTarget,
    path: &str,
    metrics: &Metrics,
) {
    let outcome = produce(session, target, path, metrics).await;
    metrics
        .kafka_route_requests
        .with_label_values(&[target.route.topic.as_str(), outcome.label()])
        .inc();
}

async fn produce(
    session: &mut ServerSession,
    target: &KafkaTarget,
    path: &str,
    metrics: &Metrics,
) -> Outcome {
    let route = &target.route;
    if !route.methods.contains(&session.req_header().method) {
        let why = "this route produces to Kafka and takes only the methods in Allow";
        let text = answer::body(405, why);
        let _ = write(session, 405, &text, Some((header::ALLOW, &target.allow))).await;
        return Outcome::Refused;
    }
    let body = match read_body(session, route.max_bytes).await {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let producer = match &target.producer {
        Ok(p) => p,
        Err(e) => return unavailable(session, &format!("no Kafka producer: {e}")).await,
    };
    let req = session.req_header();
    let mut record = FutureRecord::<[u8], [u8]>::to(&route.topic).payload(&body[..]);
    if let Some(key) = route.key.of(path, &req.headers) {
        record = record.key(key);
    }
    if let Some(h) = record_headers(target, &req.headers) {
        record = record.headers(h);
    }
    let delivery = match producer.send_result(record) {
        Ok(d) => d,
        Err((e, _)) => return refused_send(session, &e).await,
    };
    let sent = std::time::Instant::now();
    let acked = tokio::time::timeout(route.timeout + ACK_GRACE, delivery).await;
    match acked {
        Ok(Ok(Ok(d))) => {
            metrics
                .kafka_route_ack
                .with_label_values(&[route.topic.as_str()])
                .observe(sent.elapsed().as_secs_f64());
            let json = format!(
                "{{\"topic\":\"{}\",\"partition\":{},\"offset\":{}}}\n",
                route.topic, d.partition, d.offset
            );
            let _ = write(session, 202, &json, None).await;
            Outcome::Accepted
        }
        Ok(Ok(Err((e, _)))) => refused_send(session, &e).await,
        Ok(Err(_canceled)) => unavailable(session, "the Kafka producer went away").await,
        Err(_) => {
            let why = format!("no acknowledgement from Kafka within {:?}", route.timeout);
            unavailable(session, &why).await
        }
    }
}

/// The record headers: `content-type`, then the route's `headers`, each value as sent (`None`:
/// none of them is in the request).
fn record_headers(target: &KafkaTarget, headers: &http::HeaderMap) -> Option<OwnedHeaders> {
    let names = std::iter::once(&header::CONTENT_TYPE).chain(target.route.headers.iter());
    let mut out: Option<OwnedHeaders> = None;
    for name in names {
        for v in headers.get_all(name) {
            let h = out
                .take()
                .unwrap_or_else(|| OwnedHeaders::new_with_capacity(4));
            out = Some(h.insert(Header {
                key: name.as_str(),
                value: Some(v.as_bytes()),
            }));
        }
    }
    out
}

/// The whole body, or the answered outcome: 413 over `max` (by its `Content-Length` before
/// reading anything, else once more than `max` bytes came), 408 when it stalls past
/// `server.body_timeout`, 400 when it cannot be read.
async fn read_body(session: &mut ServerSession, max: u64) -> Result<Bytes, Outcome> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(session, max).await);
    }
    // lb is the origin here: a client waiting for `100 Continue` is told to send the body (a
    // proxied request gets its backend's).
    let expects = session.req_header().headers.get(header::EXPECT);
    if expects.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && session.write_continue_response().await.is_err()
    {
        return Err(Outcome::Refused);
    }
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    loop {
        let piece = match session.read_request_body().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                // `server.body_timeout` ran out (408, as for proxied requests), or a bad body.
                let (code, why) = match e.etype() {
                    pingora_error::ErrorType::ReadTimedout => {
                        (408, "the request body did not arrive in time")
                    }
                    _ => (400, "the request body could not be read"),
                };
                let _ = write_closing(session, code, &answer::body(code, why)).await;
                return Err(Outcome::Refused);
            }
        };
        let read = first.as_ref().map_or(0, Bytes::len) + more.len() + piece.len();
        if read as u64 > max {
            return Err(too_large(session, max).await);
        }
        match &first {
            None if more.is_empty() => first = Some(piece),
            _ => {
                if let Some(f) = first.take() {
                    more.reserve(
                        declared
                            .map_or(0, |n| n as usize)
                            .max(f.len() + piece.len()),
                    );
                    more.extend_from_slice(&f);
                }
                more.extend_from_slice(&piece);
            }
        }
    }
    Ok(first.unwrap_or_else(|| more.freeze()))
}

async fn too_large(session: &mut ServerSession, max: u64) -> Outcome {
    let why = format!("request body larger than the route's kafka.max_bytes ({max})");
    let _ = write_closing(session, 413, &answer::body(413, &why)).await;
    Outcome::TooLarge
}

/// A send librdkafka refused or gave up: 413 for a record too large, else 503.
async fn refused_send(session: &mut ServerSession, e: &KafkaError) -> Outcome {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    ) {
        let why = format!("Kafka refused the record as too large: {e}");
        let _ = write_closing(session, 413, &answer::body(413, &why)).await;
        return Outcome::TooLarge;
    }
    let why = match code {
        Some(RDKafkaErrorCode::QueueFull) => "the Kafka producer's queue is full".to_string(),
        _ => format!("Kafka did not take the record: {e}"),
    };
    unavailable(session, &why).await
}

/// 503 with `Retry-After: 1`.
async fn unavailable(session: &mut ServerSession, why: &str) -> Outcome {
    let text = answer::body(503, why);
    let _ = write(session, 503, &text, Some((header::RETRY_AFTER, "1"))).await;
    Outcome::Unavailable
}

/// An answer whose request body was (perhaps) not read: the connection closes after it.
async fn write_closing(
    session: &mut ServerSession,
    status: u16,
    text: &str,
) -> pingora_error::Result<()> {
    session.set_keepalive(None);
    // HTTP/2 has no Connection header (the stream ends; the connection goes on).
    let close = session.as_http1().is_some();
    let extra = close.then_some((header::CONNECTION, "close"));
    write(session, status, text, extra).await
}

/// lb's answer: a JSON body for the 202, plain text for the others, with one extra header.
async fn write(
    session: &mut ServerSession,
    status: u16,
    text: &str,
    extra: Option<(header::HeaderName, &str)>,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    let ct = match status {
        202 => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    resp.insert_header(header::CONTENT_TYPE, ct)?;
    resp.insert_header(header::CONTENT_LENGTH, text.len())?;
    if let Some((name, value)) = extra {
        resp.insert_header(name, value)?;
    }
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp)).await?;
    let body = Bytes::copy_from_slice(text.as_bytes());
    session.write_response_body(body, true).await
}
