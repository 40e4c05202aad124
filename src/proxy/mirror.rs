//! Request mirroring (`routes[i].mirror`, NGINX's `mirror`, Envoy's request mirror policy): a
//! share of a route's requests is copied to another upstream, and the copy's answer is read and
//! discarded. The client never waits on it: the copy runs on a task of its own, its latency is
//! never added to the client's, its failures are never retried and never count against the
//! mirror's backends' health.
//!
//! The copy's head is the head lb forwards (the mirror upstream's `host_header`, lb's forwarding
//! fields), built once when the request is routed. Its body follows the client's as it is read:
//! each piece is handed over by reference count (a `Tee` on the exchange loops' reads), never
//! copied. A copy is dropped, and counted as such, when the mirror upstream already has
//! `max_in_flight` copies in progress, when the body is longer than `max_body_bytes`, or when the
//! mirror falls behind the client's body by more than [`PIECES`] pieces: never is the client's
//! request slowed for it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::ServerSession;
use tokio::sync::mpsc;

use super::pool::{h1_connect, h1_release};
use super::upstream_head::{write_head, Head};
use crate::runtime::Shared;
use crate::snapshot::{Mirror, Snapshot};
use crate::util::time::process_ms;

/// Body pieces a copy may be behind the client before it is dropped.
const PIECES: usize = 32;

/// What the exchange loops hand to a copy in progress.
enum Piece {
    Body(Bytes),
    /// The client's request is complete.
    End,
}

/// The client's side of a copy in progress: its body pieces go to the copy's task. Dropping it
/// before the end (the client went away, the copy fell behind) aborts the copy.
pub(super) struct Tee {
    tx: mpsc::Sender<Piece>,
    /// Body bytes the copy may still take (`max_body_bytes`).
    left: u64,
}

impl Tee {
    /// Hands a piece of the client's body (and, with `end`, the end of the request) to the copy;
    /// a copy that cannot take it is dropped (`tee` becomes `None`).
    pub(super) fn piece(tee: &mut Option<Tee>, body: Option<&Bytes>, end: bool) {
        let Some(t) = tee.as_mut() else {
            return;
        };
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            let len = b.len() as u64;
            if len > t.left || t.tx.try_send(Piece::Body(b.clone())).is_err() {
                *tee = None;
                return;
            }
            t.left -= len;
        }
        if end {
            // A full channel here drops the copy, as a piece would.
            let _ = t.tx.try_send(Piece::End);
            *tee = None;
        }
    }
}

/// Releases the copy's place in the mirror upstream's `max_in_flight`.
struct Slot {
    snapshot: Arc<Snapshot>,
    upstream: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let state = &self.snapshot.upstreams[self.upstream].state;
        state.mirror_in_flight.fetch_sub(1, Relaxed);
    }
}

/// Everything [`start`] needs from the request path.
pub(super) struct Request<'a> {
    pub shared: &'a Arc<Shared>,
    pub connector: &'a Arc<TransportConnector>,
    pub snapshot: &'a Arc<Snapshot>,
    pub mirror: &'a Mirror,
    pub client: Option<std::net::IpAddr>,
    pub trusted: bool,
    pub forward_path: Option<&'a str>,
    /// The request's `Content-Length`, if any (checked against `max_body_bytes` up front).
    pub content_length: Option<u64>,
}

/// Starts a copy of the routed request when it is sampled and fits the mirror's bounds: the
/// [`Tee`] to feed the client's body to (`None` when there is no copy or it has no body to
/// take).
pub(super) fn start(r: Request<'_>, session: &mut ServerSession) -> Option<Tee> {
    let m = r.mirror;
    // A tunnel (WebSocket) is not a request to copy.
    if u64::from(fastrand::u32(..)) >= m.below || session.is_upgrade_req() {
        return None;
    }
    let up = &r.snapshot.upstreams[m.upstream];
    let dropped = || {
        let labels = [up.name(), "dropped"];
        r.shared
            .metrics
            .mirror_requests
            .with_label_values(&labels)
            .inc();
    };
    if r.content_length.is_some_and(|n| n > m.max_body_bytes) {
        dropped();
        return None;
    }
    if up.state.mirror_in_flight.fetch_add(1, Relaxed) >= m.max_in_flight {
        up.state.mirror_in_flight.fetch_sub(1, Relaxed);
        dropped();
        return None;
    }
    let slot = Slot {
        snapshot: r.snapshot.clone(),
        upstream: m.upstream,
    };
    let to = super::upstream_head::HeadFor {
        forward_path: r.forward_path,
        client: r.client,
        trusted: r.trusted,
        upstream: &up.config,
        rules: None,
    };
    let head = super::upstream_head::head(session, &to).ok()?;
    let (tx, rx) = mpsc::channel(PIECES);
    let body = !session.is_body_empty();
    if !body {
        let _ = tx.try_send(Piece::End);
    }
    let copy = Copy {
        shared: r.shared.clone(),
        connector: r.connector.clone(),
        slot,
    };
    tokio::spawn(copy.run(head, rx));
    body.then_some(Tee {
        tx,
        left: m.max_body_bytes,
    })
}

/// A copy's task.
struct Copy {
    shared: Arc<Shared>,
    connector: Arc<TransportConnector>,
    slot: Slot,
}

/// How a copy ended, as `lb_mirror_requests_total` counts it.
enum Outcome {
    Answered,
    Failed(String),
    Dropped,
}

impl Copy {
    async fn run(self, head: Head, rx: mpsc::Receiver<Piece>) {
        let outcome = self.exchange(head, rx).await;
        let up = &self.slot.snapshot.upstreams[self.slot.upstream];
        let result = match &outcome {
            Outcome::Answered => "answered",
            Outcome::Failed(why) => {
                tracing::debug!(upstream = up.name(), "mirror copy failed: {why}");
                "failed"
            }
            Outcome::Dropped => "dropped",
        };
        let labels = [up.name(), result];
        self.shared
            .metrics
            .mirror_requests
            .with_label_values(&labels)
            .inc();
    }

    /// Sends the copy to one of the mirror upstream's backends and reads its answer to the end.
    async fn exchange(&self, head: Head, mut rx: mpsc::Receiver<Piece>) -> Outcome {
        let snapshot = &self.slot.snapshot;
        let up = &snapshot.upstreams[self.slot.upstream];
        let Some(i) = up.balancer.pick(&up.backends, |_| false) else {
            return Outcome::Failed("no usable backend".into());
        };
        let backend = &up.backends[i];
        let peer = &backend.peer;
        let idle_ms = up.config.idle_timeout.as_millis() as u64;
        let case = snapshot.config.server.limits.preserve_header_case;
        let key = backend.pool_key;
        let mut h1 =
            match h1_connect(&self.connector, key, peer, (process_ms(), idle_ms), case).await {
                Ok((h1, _)) => h1,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
        // The upstream's timeouts bound every step: a mirror that stops answering ends the copy.
        h1.read_timeout = peer.options.read_timeout;
        h1.write_timeout = peer.options.write_timeout;
        if let Err(e) = write_head(&mut h1, head).await {
            return Outcome::Failed(e.to_string());
        }
        loop {
            match rx.recv().await {
                Some(Piece::Body(b)) => {
                    if let Err(e) = h1.write_body(&b).await {
                        return Outcome::Failed(e.to_string());
                    }
                }
                Some(Piece::End) => break,
                // The client's side let go before the end: no complete copy to send.
                None => return Outcome::Dropped,
            }
        }
        if let Err(e) = h1.finish_body().await {
            return Outcome::Failed(e.to_string());
        }
        // Informational answers (`100 Continue`) come before the real one.
        loop {
            if let Err(e) = h1.read_response().await {
                return Outcome::Failed(e.to_string());
            }
            if !h1
                .resp_header()
                .is_some_and(|h| h.status.is_informational())
            {
                break;
            }
        }
        loop {
            match h1.read_body_bytes().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Outcome::Failed(e.to_string()),
            }
        }
        let cap = snapshot.config.server.upstream_keepalive_pool_size;
        h1_release(h1, key, (process_ms(), idle_ms), cap).await;
        Outcome::Answered
    }
}
