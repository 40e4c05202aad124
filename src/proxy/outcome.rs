//! How a request ends: lb's answer when it could not be proxied ([`Proxy::fail`]: 502, 503,
//! 504, 408, or nothing to a client that left), and its count (per backend, per upstream or as
//! a request no route matched) and access-log line ([`Proxy::log`]).

use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::PeerOptions;
use pingora_error::{Error, ErrorSource, ErrorType};

use super::attempt::AT_MAX_CONNS;
use super::context::Ctx;
use super::{grpc, Proxy};
use crate::edge::answer;
use crate::health::Reason;
use crate::observe::access_log::Entry;
use crate::runtime::Shared;
use crate::snapshot::Snapshot;
use crate::state::stats::ClientProtocol;
use crate::util::time::process_ms_at;

impl Proxy {
    /// The request could not be proxied: answers with the error's status unless a response head
    /// already went out or the client is gone.
    pub(super) async fn fail(&self, session: &mut ServerSession, ctx: &mut Ctx, e: &Error) {
        let code = error_status(e);
        // A client that left was waiting on the backend (if one was picked): its 499 counts
        // there, like NGINX's `$upstream_addr` on a 499. It is not a backend failure.
        ctx.client_gone = code == 0;
        // A backend that sent its response head and then failed answered the request itself.
        ctx.own_answer = session.response_written().is_none() && !ctx.client_gone;
        tracing::debug!(
            error = %e,
            status = code,
            attempts = ctx.attempts,
            request = %session.request_summary(),
            "request failed"
        );
        if code == 0 {
            return;
        }
        let name = ctx.upstream().map_or("", |u| u.name());
        let reason = error_reason(code, name, ctx.attempts, ctx.failure, e);
        if ctx.grpc {
            // Before the response head: trailers-only; after it: the call's trailers.
            let status = grpc::status_for(code);
            ctx.grpc_status = Some(status);
            let _ = match session.response_written() {
                None => grpc::answer(session, status, &reason).await,
                Some(_) => grpc::end(session, status, &reason).await,
            };
        } else if session.response_written().is_none() {
            // lb's own answer, like its others (no `Server: Pingora`, no pingora cache fields);
            // the connection is not reused after a failed request.
            let _ = answer::write(session, code, &reason, true).await;
        }
    }

    /// Counts the request's outcome (per backend, or as lb's own answer) and writes its
    /// access-log line.
    pub(super) fn log(&self, session: &ServerSession, ctx: &mut Ctx) {
        // The request's second and last clock read (the first is `Ctx::new`).
        let end = std::time::Instant::now();
        let elapsed = end.saturating_duration_since(ctx.started);
        // Once a response head was sent, that status is what the client got (also when it left
        // during the body, as NGINX logs it); before that, a client that left is a 499.
        let code = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None if ctx.client_gone => CLIENT_CLOSED_REQUEST,
            None => 0,
        };
        let protocol = match session {
            ServerSession::H2(_) => ClientProtocol::Http2,
            _ => ClientProtocol::Http1,
        };
        let stream = self.shared.stream.as_ref();
        if self.shared.access_log.is_some() || stream.is_some_and(|s| s.config.request_records) {
            log_entry(&self.shared, session, ctx, code, elapsed, protocol);
        }
        if let Some(k) = &ctx.kafka {
            // As lb's own answers of an upstream: `upstream="kafka:TOPIC"`, `backend=""` (and by
            // result in `lb_kafka_route_requests_total`), not as a request no route matched.
            k.stats.record(code, elapsed, protocol);
            return;
        }
        let Some(up) = ctx.upstream() else {
            let stats = |s: &Snapshot| {
                s.no_route.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    s.no_route.record_grpc(g);
                }
            };
            match &ctx.snapshot {
                Some(s) => stats(s),
                None => stats(&self.shared.snapshot.load()),
            }
            return;
        };
        let resent = ctx.sends.saturating_sub(1);
        if resent > 0 {
            self.shared
                .metrics
                .retries
                .with_label_values(&[up.name()])
                .inc_by(resent as u64);
        }
        match ctx.backend.filter(|_| !ctx.own_answer) {
            Some(i) => {
                let b = &up.backends[i];
                // The backend did not answer a client that left: no latency sample.
                if code != CLIENT_CLOSED_REQUEST {
                    b.state.record_latency(elapsed, process_ms_at(end));
                }
                b.state.stats.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    b.state.stats.record_grpc(g);
                }
            }
            None => {
                up.state.own.record(code, elapsed, protocol);
                if let Some(g) = ctx.grpc_status {
                    up.state.own.record_grpc(g);
                }
            }
        }
        // Only now: a removed backend's series are dropped once nothing is in flight on it, so
        // its last answer must be counted first.
        ctx.guard = None;
    }
}

/// The access log line and the analytics stream's `request` record of one finished request.
fn log_entry(
    shared: &Shared,
    session: &ServerSession,
    ctx: &Ctx,
    status: u16,
    duration: std::time::Duration,
    protocol: ClientProtocol,
) {
    let req = session.req_header();
    let up = ctx.upstream();
    let backend = match (up, ctx.backend) {
        (Some(up), Some(i)) if !ctx.own_answer => up.backends[i].address.as_str(),
        _ => "",
    };
    let entry = Entry {
        client: client_addr(session, ctx),
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        status,
        upstream: match (up, &ctx.kafka) {
            (Some(u), _) => u.name(),
            (None, Some(k)) => &k.label,
            (None, None) => "",
        },
        backend,
        attempts: ctx.attempts,
        duration,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        protocol: protocol.label(),
        grpc_status: ctx.grpc_status,
    };
    if let Some(log) = &shared.access_log {
        log.log(&entry);
    }
    if let Some(stream) = &shared.stream {
        stream.request(&entry);
    }
}

/// The client's address for the log: the peer's (with its port), or the real client's behind a
/// trusted proxy (port 0: a forwarding header carries none, as NGINX's `$remote_port` is then
/// empty).
fn client_addr(session: &ServerSession, ctx: &Ctx) -> Option<std::net::SocketAddr> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
    match (ctx.client, peer) {
        (Some(ip), Some(p)) if ip != p.ip() => Some(std::net::SocketAddr::new(ip, 0)),
        (Some(ip), None) => Some(std::net::SocketAddr::new(ip, 0)),
        _ => peer,
    }
}

/// NGINX's non-standard status for a request whose client went away before the answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Status for a request that could not be proxied (0: the client is gone, answer nothing).
fn error_status(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout | WriteTimedout if *e.esource() == ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                // An HTTP/2 stream the client reset is as gone as a closed connection.
                WriteError | ReadError | ConnectionClosed | H2Error => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Why lb answers `code` itself, for the body of that answer (and `grpc-message`). A 502 or 504
/// names the last failed attempt's reason (`failure`), not the request's last error, which after
/// an ejection can be that no other backend was left to retry on.
fn error_reason(
    code: u16,
    upstream: &str,
    attempts: u32,
    failure: Option<Reason>,
    e: &Error,
) -> String {
    let why = || failure.unwrap_or_else(|| Reason::of(e, &PeerOptions::new()));
    match code {
        502 => format!(
            "upstream {upstream:?}: {attempts} attempt{} failed: {}",
            if attempts == 1 { "" } else { "s" },
            why()
        ),
        503 if e
            .context
            .as_ref()
            .is_some_and(|c| c.as_str() == AT_MAX_CONNS) =>
        {
            format!("upstream {upstream:?}: every usable backend is at its max_conns")
        }
        503 => format!("upstream {upstream:?} has no usable backend"),
        504 => format!("upstream {upstream:?} did not answer in time: {}", why()),
        _ => e.etype().as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        let down = |t| {
            let mut e = Error::new(t);
            e.as_down();
            e
        };
        assert_eq!(error_status(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::ConnectRefused)), 502);
        assert_eq!(error_status(&down(ErrorType::ConnectionClosed)), 0);
        assert_eq!(error_status(&down(ErrorType::H2Error)), 0);
        assert_eq!(error_status(&down(ErrorType::ReadTimedout)), 408);
        assert_eq!(error_status(&Error::new(ErrorType::HTTPStatus(503))), 503);
    }

    #[test]
    fn error_reasons_name_the_last_failed_attempt() {
        // After an ejection the request's last error is that nothing was left to retry on.
        let none_left = Error::explain(ErrorType::HTTPStatus(502), "no other backend to retry on");
        let refused = Some(Reason::Text("connection refused"));
        assert_eq!(
            error_reason(502, "api", 1, refused, &none_left),
            "upstream \"api\": 1 attempt failed: connection refused"
        );
        let read = Some(Reason::After(
            "read timed out",
            std::time::Duration::from_secs(1),
        ));
        let e = Error::new(ErrorType::ReadTimedout);
        assert_eq!(
            error_reason(504, "api", 1, read, &e),
            "upstream \"api\" did not answer in time: read timed out after 1s"
        );
        // No attempt failed before: the error's own reason.
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(
            error_reason(502, "api", 2, None, &e),
            "upstream \"api\": 2 attempts failed: connection refused"
        );
    }
}
