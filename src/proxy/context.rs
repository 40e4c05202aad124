//! Per-request state: the context the request path carries from head to log line (snapshot,
//! chosen backend, in-flight guard, attempts), the set of backends already tried, and the process-wide
//! count of requests in progress (graceful stop waits for it).

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::snapshot::{RouteSettings, Snapshot, Upstream};
use crate::state::backend::InFlightGuard;
use crate::state::outcome::Reason;

/// Backends already tried by this request (small, inline for the common case).
#[derive(Default, Debug)]
pub struct Tried {
    inline: [u32; 4],
    len: usize,
    more: Vec<u32>,
}

impl Tried {
    pub fn push(&mut self, i: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = i as u32;
            self.len += 1;
        } else {
            self.more.push(i as u32);
        }
    }
    pub fn contains(&self, i: usize) -> bool {
        self.inline[..self.len].contains(&(i as u32)) || self.more.contains(&(i as u32))
    }
    pub fn pop(&mut self) {
        if self.more.pop().is_none() && self.len > 0 {
            self.len -= 1;
        }
    }
}

/// Requests between `Ctx::new` and the end of `Ctx` (used to finish a graceful stop early).
static ACTIVE: AtomicI64 = AtomicI64::new(0);

/// Requests currently being handled by this process.
pub fn active_requests() -> i64 {
    ACTIVE.load(Relaxed)
}

/// Counts one request for [`active_requests`] while alive.
pub(super) struct Active;

impl Active {
    pub(super) fn new() -> Active {
        ACTIVE.fetch_add(1, Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Relaxed);
    }
}

/// Per-request context; dropping it releases the in-flight guard, whatever path the request took.
pub struct Ctx {
    /// The copy of this request in progress (`routes[i].mirror`), fed the client's body.
    pub(super) mirror: Option<super::mirror::Tee>,
    /// The snapshot the request was routed with (set once the request reached routing).
    pub(super) snapshot: Option<Arc<Snapshot>>,
    /// The client's address ([`crate::edge::client_ip`]: the peer, or the real client behind a
    /// trusted proxy), computed once when the request is routed; every user of a client
    /// address reads it here. `None` before routing (the log then names the peer).
    pub(super) client: Option<std::net::IpAddr>,
    /// A route matched: `upstream` is its index in the snapshot.
    pub(super) routed: bool,
    pub(super) upstream: usize,
    pub(super) backend: Option<usize>,
    pub(super) guard: Option<InFlightGuard>,
    /// Backend attempts made (connections tried), excluding transparent stale-connection resends.
    pub(super) attempts: u32,
    /// Attempts started, transparent resends included: each one after the first followed a
    /// failed attempt, so `lb_retries_total` counts all but the first.
    pub(super) sends: u32,
    /// Why the last failed attempt failed (what lb's 502/504 answer says, also when the last
    /// step was finding no other backend to retry on).
    pub(super) failure: Option<Reason>,
    /// The current attempt already used its resend.
    pub(super) resent_this_attempt: bool,
    pub(super) tried: Tried,
    pub(super) started: Instant,
    /// The final answer came from lb itself (502/504 after attempts), not from a backend.
    pub(super) own_answer: bool,
    /// The client went away (reset, failed write, EOF) before a response head reached it.
    pub(super) client_gone: bool,
    /// The normalized path to forward instead of the client's (`server.normalize_path =
    /// "forward"` and the path was not already normal).
    pub(super) forward_path: Option<String>,
    /// The normalized path when it differs from the request's and `consistent_hash` hashes it.
    pub(super) key_path: Option<String>,
    /// A gRPC call ([`super::grpc::is_grpc`]): lb's own answers speak gRPC.
    pub(super) grpc: bool,
    /// The `grpc-status` the call ended with (the backend's, or lb's own answer's).
    pub(super) grpc_status: Option<u8>,
    /// The route's header rules, timeouts and body limit (`None`: nothing to change).
    pub(super) settings: Option<Arc<RouteSettings>>,
    /// What the route's header rules render from, taken at the first attempt.
    pub(super) vars: Option<super::rewrite::Vars>,
    /// The `kafka` route's target the request was produced to (the log names `kafka:TOPIC`).
    pub(super) kafka: Option<Arc<crate::snapshot::KafkaTarget>>,
    pub(super) _active: Active,
    // --- edge checks (see `crate::edge`) ---
    /// Request-level limits and the link to the connection's header clock; dropping it (the
    /// request is over) starts the keep-alive/header deadline for the next request.
    pub(super) hardening: crate::edge::RequestState,
}

impl Ctx {
    pub(super) fn new() -> Ctx {
        Ctx {
            mirror: None,
            snapshot: None,
            client: None,
            routed: false,
            upstream: 0,
            backend: None,
            guard: None,
            attempts: 0,
            sends: 0,
            failure: None,
            resent_this_attempt: false,
            tried: Tried::default(),
            started: Instant::now(),
            own_answer: false,
            client_gone: false,
            forward_path: None,
            key_path: None,
            grpc: false,
            grpc_status: None,
            settings: None,
            vars: None,
            kafka: None,
            _active: Active::new(),
            hardening: Default::default(),
        }
    }

    /// Counts an attempt on backend `i` of the request's upstream, holding `guard` (its
    /// in-flight count) until the attempt's end.
    pub(super) fn start_attempt(&mut self, i: usize, guard: InFlightGuard) {
        self.tried.push(i);
        self.attempts += 1;
        self.sends += 1;
        self.backend = Some(i);
        self.guard = Some(guard);
    }

    /// The upstream the request was routed to.
    pub(super) fn upstream(&self) -> Option<&Upstream> {
        match &self.snapshot {
            Some(s) if self.routed => Some(&s.upstreams[self.upstream]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_tracks_many() {
        let mut t = Tried::default();
        for i in 0..10 {
            t.push(i * 3);
        }
        assert!(t.contains(27) && t.contains(0) && !t.contains(1));
        t.pop();
        assert!(!t.contains(27));
    }
}
