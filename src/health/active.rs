//! Active health checks: one task per checked backend, an HTTP `GET` (over HTTP/1.1 or HTTP/2 as
//! the upstream speaks, with its TLS), a TCP connect, or gRPC's `grpc.health.v1.Health/Check`
//! every `interval` with jitter, bounded by `timeout`; `healthy_threshold` passes bring a backend up,
//! `unhealthy_threshold` failures take it down. At start-up one round runs before lb takes traffic.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use std::sync::LazyLock;

use bytes::Bytes;
use pingora_core::connectors::http::v2::{self, H2HandshakeSettings};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as H1Session;
use pingora_core::protocols::http::v2::client::Http2Session;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_http::RequestHeader;
use tokio::net::TcpStream;

use super::announce;
use crate::config::{CheckKind, HealthCheckConfig, Protocol};
use crate::runtime::{Handles, Live};
use crate::state::backend::{BackendState, Health};
use crate::state::outcome::Reason;
use crate::state::registry::BackendKey;
use crate::util::proto::{put_varint, varint};

/// Result of one active check.
pub type CheckResult = Result<(), String>;

/// Runs one check against the backend `peer` (TLS and server name as the upstream connects),
/// bounded by the check's timeout. `h2`: the upstream speaks HTTP/2 (`protocol = "http2"`).
pub async fn check_once(hc: &HealthCheckConfig, peer: &HttpPeer, h2: bool) -> CheckResult {
    match tokio::time::timeout(hc.timeout, probe(hc, peer, h2)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", hc.timeout)),
    }
}

/// Opens the checks' backend connections, TLS included.
static CONNECTOR: LazyLock<TransportConnector> = LazyLock::new(|| TransportConnector::new(None));

async fn probe(hc: &HealthCheckConfig, peer: &HttpPeer, h2: bool) -> CheckResult {
    if hc.kind == CheckKind::Tcp {
        let addr = peer
            .address()
            .as_inet()
            .copied()
            .ok_or("not an IP backend")?;
        TcpStream::connect(addr).await.map_err(|e| io_reason(&e))?;
        return Ok(());
    }
    let stream = CONNECTOR
        .new_stream(peer)
        .await
        .map_err(|e| why(&e, peer))?;
    let req = check_request(hc, peer)?;
    if !h2 {
        return http1_status(stream, peer, req, hc.expected_status).await;
    }
    if peer.is_tls() && stream.selected_alpn_proto() != Some(ALPN::H2) {
        return Err("the backend did not agree to HTTP/2 (ALPN h2)".into());
    }
    let mut settings = H2HandshakeSettings::new();
    settings.max_streams = 1;
    let conn = v2::handshake(stream, settings)
        .await
        .map_err(|e| why(&e, peer))?;
    let mut s = conn
        .spawn_stream()
        .await
        .map_err(|e| why(&e, peer))?
        .ok_or("no HTTP/2 stream")?;
    if hc.kind != CheckKind::Grpc {
        s.write_request_header(Box::new(req), true)
            .map_err(|e| why(&e, peer))?;
        s.read_response_header().await.map_err(|e| why(&e, peer))?;
        let code = s.response_header().map_or(0, |r| r.status.as_u16());
        return status_in(code, hc.expected_status);
    }
    grpc_check(&mut s, peer, req, &hc.service).await
}

/// The check's request head: `GET path`, or gRPC's health call; its `host` and `user-agent`.
fn check_request(hc: &HealthCheckConfig, peer: &HttpPeer) -> Result<RequestHeader, String> {
    let host = hc
        .host
        .clone()
        .unwrap_or_else(|| peer.address().to_string());
    let mut req = match hc.kind {
        CheckKind::Grpc => {
            let mut r = RequestHeader::build("POST", GRPC_HEALTH_CHECK.as_bytes(), Some(4))
                .map_err(|e| why(&e, peer))?;
            r.insert_header("content-type", "application/grpc")
                .and_then(|_| r.insert_header("te", "trailers"))
                .map_err(|e| why(&e, peer))?;
            r
        }
        _ => RequestHeader::build("GET", hc.path.as_bytes(), Some(3)).map_err(|e| why(&e, peer))?,
    };
    req.insert_header("host", host)
        .and_then(|_| req.insert_header("user-agent", "lb-health-check"))
        .map_err(|e| why(&e, peer))?;
    Ok(req)
}

/// gRPC's `Health/Check` for `service` on the HTTP/2 stream `s`: passes when the call's status
/// is 0 and the answer says `SERVING`.
async fn grpc_check(
    s: &mut Http2Session,
    peer: &HttpPeer,
    req: RequestHeader,
    service: &str,
) -> CheckResult {
    s.write_request_header(Box::new(req), false)
        .map_err(|e| why(&e, peer))?;
    s.write_request_body(grpc_health_request(service), true)
        .await
        .map_err(|e| why(&e, peer))?;
    s.read_response_header().await.map_err(|e| why(&e, peer))?;
    let head = s.response_header().cloned().ok_or("no response head")?;
    if head.status.as_u16() != 200 {
        return Err(Reason::Status(head.status.as_u16()).to_string());
    }
    let mut body = Vec::new();
    while let Some(chunk) = s.read_response_body().await.map_err(|e| why(&e, peer))? {
        body.extend_from_slice(&chunk);
        if body.len() > 1024 {
            return Err("health answer too long".into());
        }
    }
    // The call's status: in the trailers, or in the head of a trailers-only answer.
    let trailers = s.read_trailers().await.map_err(|e| why(&e, peer))?;
    let fields = trailers.as_ref().unwrap_or(&head.headers);
    let status = fields.get("grpc-status").and_then(|v| v.to_str().ok());
    if status != Some("0") {
        let message = fields
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let status = status.unwrap_or("missing");
        return Err(if message.is_empty() {
            format!("grpc-status {status}")
        } else {
            format!("grpc-status {status}: {message}")
        });
    }
    match grpc_serving_status(&body) {
        Some(1) => Ok(()),
        Some(2) => Err("NOT_SERVING".into()),
        Some(3) => Err("SERVICE_UNKNOWN".into()),
        other => Err(format!("status {}", other.unwrap_or(0))),
    }
}

/// `grpc.health.v1.Health/Check`.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// One gRPC message: `HealthCheckRequest { string service = 1; }` behind the 5-byte frame
/// prefix (not compressed, length).
fn grpc_health_request(service: &str) -> Bytes {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

/// `HealthCheckResponse { ServingStatus status = 1; }` from one framed message: the status
/// (0 when absent, as protobuf defaults), `None` when the bytes are not such a message.
fn grpc_serving_status(framed: &[u8]) -> Option<u64> {
    let (&flag, rest) = framed.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if flag != 0 {
        return None; // compressed: lb asked for none
    }
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while let Some((&tag, after)) = msg.split_first() {
        let (value, after) = varint(after)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = value,
            (_, 0) => {}
            (_, 2) => {
                msg = after.get(value as usize..)?;
                continue;
            }
            _ => return None,
        }
        msg = after;
    }
    Some(status)
}

/// An HTTP/1.1 check over `stream`: the status of the answer to `req`.
async fn http1_status(
    stream: pingora_core::protocols::Stream,
    peer: &HttpPeer,
    req: RequestHeader,
    expected: (u16, u16),
) -> CheckResult {
    let mut s = H1Session::new_with_options(stream, peer);
    let mut req = req;
    req.insert_header("connection", "close")
        .map_err(|e| why(&e, peer))?;
    s.write_request_header(Box::new(req))
        .await
        .map_err(|e| why(&e, peer))?;
    s.read_response().await.map_err(|e| why(&e, peer))?;
    let code = s.resp_header().map_or(0, |r| r.status.as_u16());
    status_in(code, expected)
}

fn status_in(code: u16, (lo, hi): (u16, u16)) -> CheckResult {
    if (lo..=hi).contains(&code) {
        Ok(())
    } else {
        Err(Reason::Status(code).to_string())
    }
}

/// A failed TCP check's reason: [`Reason::of_io`], else the system's words.
fn io_reason(e: &std::io::Error) -> String {
    Reason::of_io(e).map_or_else(|| e.to_string(), |r| r.to_string())
}

/// A failed check's reason, as the request path words a failed attempt ([`Reason`]).
fn why(e: &pingora_error::Error, peer: &HttpPeer) -> String {
    Reason::of(e, &peer.options).to_string()
}

/// Applies one check result to a backend's counters and state.
pub fn apply_check(
    h: &Handles,
    upstream: &str,
    address: &str,
    hc: &HealthCheckConfig,
    state: &BackendState,
    result: CheckResult,
) {
    h.metrics.health_check(upstream, address, result.is_ok());
    let (from, to, reason) = {
        let mut c = state.check.lock().unwrap_or_else(|e| e.into_inner());
        let current = state.state();
        match &result {
            Ok(()) => {
                c.failures = 0;
                c.passes += 1;
                c.last_error = None;
                let rise = current == Health::Checking
                    || (current == Health::Down && c.passes >= hc.healthy_threshold);
                if !rise {
                    return;
                }
                (
                    current,
                    Health::Up,
                    format!("{} consecutive passing checks", c.passes),
                )
            }
            Err(why) => {
                c.passes = 0;
                c.failures += 1;
                c.last_error = Some(why.clone());
                let fall = current == Health::Checking
                    || (matches!(current, Health::Up | Health::Ejected)
                        && c.failures >= hc.unhealthy_threshold);
                if !fall {
                    return;
                }
                (current, Health::Down, super::failures(c.failures, why))
            }
        }
    };
    if state.state_cas(from, to).is_ok() {
        announce(&h.live, &h.events, upstream, address, from, to, &reason);
    }
}

/// One round of checks on every health-checked backend, concurrently (used at start-up, before
/// lb takes traffic, so a dead backend never sees the first requests).
pub async fn initial_round(h: &Handles) {
    let snap = h.live.snapshot.load_full();
    let mut tasks = Vec::new();
    for up in &snap.upstreams {
        let Some(hc) = up.config.health_check.clone() else {
            continue;
        };
        for b in &up.backends {
            let (hc, peer) = (hc.clone(), b.peer.clone());
            let h2 = up.config.protocol == Protocol::Http2;
            let (name, address, state) =
                (up.name().to_string(), b.address.clone(), b.state.clone());
            tasks.push(async move {
                let r = check_once(&hc, &peer, h2).await;
                (name, address, state, hc, r)
            });
        }
    }
    for (name, address, state, hc, r) in join_spawned(tasks).await {
        apply_check(h, &name, &address, &hc, &state, r);
        // Backends present at start-up have no warm peers to protect: no slow start for them.
        state.up_since_ms.store(0, Relaxed);
    }
    h.live.rebuild();
}

async fn join_spawned<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Keeps one checker task per health-checked backend of the current snapshot. Tasks look
/// themselves up in the latest snapshot each round and stop when their backend or check is gone.
pub async fn supervise(h: Handles) {
    let running: Arc<std::sync::Mutex<std::collections::HashSet<BackendKey>>> = Default::default();
    loop {
        let snap = h.live.snapshot.load_full();
        for up in &snap.upstreams {
            if up.config.health_check.is_none() {
                continue;
            }
            for b in &up.backends {
                let key = BackendKey::new(up.name(), &b.address);
                if running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone())
                {
                    let (h, running) = (h.clone(), running.clone());
                    tokio::spawn(async move {
                        check_loop(&h, &key.upstream, &key.address).await;
                        running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                    });
                }
            }
        }
        if snap.upstreams.iter().any(|u| u.ramping()) {
            h.live.rebuild(); // slow start: let effective weights grow
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), h.live.changed.notified()).await;
    }
}

async fn check_loop(h: &Handles, upstream: &str, address: &str) {
    let mut first = true;
    loop {
        let (hc, peer, h2, state) = {
            let snap = h.live.snapshot.load();
            let Some(up) = snap.upstream(upstream) else {
                return;
            };
            let Some(hc) = up.config.health_check.clone() else {
                return;
            };
            let Some(i) = up.backends.iter().position(|b| b.address == address) else {
                return;
            };
            let h2 = up.config.protocol == Protocol::Http2;
            (
                hc,
                up.backends[i].peer.clone(),
                h2,
                up.backends[i].state.clone(),
            )
        };
        // Spread checks over the interval instead of hitting every backend at once.
        let wait = if first && state.state() == Health::Checking {
            Duration::ZERO
        } else if first {
            hc.interval.mul_f64(fastrand::f64())
        } else {
            hc.interval.mul_f64(0.9 + 0.2 * fastrand::f64())
        };
        first = false;
        tokio::time::sleep(wait).await;
        let r = check_once(&hc, &peer, h2).await;
        if is_current(&h.live, upstream, address, &state) {
            apply_check(h, upstream, address, &hc, &state, r);
        }
    }
}

/// Whether `state` is still the state of this backend in the live snapshot, and the backend is
/// still actively checked. A check takes time; if meanwhile the backend was removed (and perhaps
/// added again, with fresh state) or its upstream's check was removed, the result belongs to
/// nobody.
pub(crate) fn is_current(
    live: &Live,
    upstream: &str,
    address: &str,
    state: &Arc<BackendState>,
) -> bool {
    let snap = live.snapshot.load();
    snap.upstream(upstream)
        .filter(|u| u.config.health_check.is_some())
        .and_then(|u| u.backends.iter().find(|b| b.address == address))
        .is_some_and(|b| Arc::ptr_eq(&b.state, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages() {
        // HealthCheckRequest { service: "" } is an empty message; with a name, field 1.
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&grpc_health_request("api")[..], b"\0\0\0\0\x05\x0a\x03api");
        // HealthCheckResponse: SERVING, NOT_SERVING, absent (UNKNOWN), unknown fields skipped.
        assert_eq!(grpc_serving_status(b"\0\0\0\0\x02\x08\x01"), Some(1));
        assert_eq!(grpc_serving_status(b"\0\0\0\0\x02\x08\x02"), Some(2));
        assert_eq!(grpc_serving_status(b"\0\0\0\0\0"), Some(0));
        assert_eq!(
            grpc_serving_status(b"\0\0\0\0\x06\x12\x02hi\x08\x01"),
            Some(1)
        );
        assert_eq!(
            grpc_serving_status(b"\x01\0\0\0\x02\x08\x01"),
            None,
            "compressed"
        );
        assert_eq!(grpc_serving_status(b"\0\0\0\0\x09\x08"), None, "truncated");
    }
}
