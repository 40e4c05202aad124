//! Idle backend connections, kept per worker thread (lb's workers never share a task, so a
//! connection is only ever used by the thread that pools it): taking and returning one is a
//! thread-local `Vec` push/pop under the backend's pool key (computed once per snapshot), with no
//! lock and no watcher task per request (pingora-core's pool has both).
//!
//! HTTP/2 backend connections carry many requests at once, so they are not taken out: `h2`
//! keeps each worker's open connections per backend and hands out streams on the first one with
//! room, opening another when all are full. Every `SWEEP_EVERY` streams, all of the worker's
//! HTTP/2 connections are checked too, so those to a backend no request asks for any more (one
//! a reload removed) close once idle for their upstream's `idle_timeout`.
//!
//! An attempt's (or a mirror copy's) HTTP/1 session is made here on a pooled or new connection
//! ([`h1_connect`]), and its connection comes back when the backend keeps it alive
//! ([`h1_release`]).
//!
//! Like NGINX's upstream keepalive, a pooled connection is checked when it is taken, without a
//! system call unless the backend sent something: a connection the backend closed (or wrote to
//! out of turn) reads as ready and is dropped. Connections idle longer than the upstream's
//! `idle_timeout` are dropped when met, and by a sweep every `SWEEP_EVERY` returns, so the pool
//! of a backend that is gone empties within that time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Error;
use tokio::io::{AsyncRead, ReadBuf};

/// Returns between two sweeps of expired connections.
const SWEEP_EVERY: u32 = 1024;

struct Idle {
    stream: Stream,
    /// `crate::util::time::process_ms` when it was returned.
    since_ms: u64,
}

#[derive(Default)]
struct Pool {
    /// By [`crate::snapshot::Backend::pool_key`].
    by_key: HashMap<u64, Vec<Idle>>,
    total: usize,
    returns: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// A usable idle connection to the backend `key`, most recently returned first.
pub(super) fn take(key: u64, now_ms: u64, idle_timeout_ms: u64) -> Option<Stream> {
    POOL.with_borrow_mut(|p| {
        let list = p.by_key.get_mut(&key)?;
        while let Some(mut idle) = list.pop() {
            p.total -= 1;
            if now_ms.saturating_sub(idle.since_ms) < idle_timeout_ms && quiet(&mut idle.stream) {
                return Some(idle.stream);
            }
        }
        None
    })
}

/// Keeps `stream` for the next request to the backend `key`, unless the worker already holds `cap` idle
/// connections. `now_ms` is the start of the request that used it (the request path reads the
/// clock only at its start and end), so its idle time is counted conservatively: a connection
/// that carried a request longer than `idle_timeout` is not kept.
pub(super) fn put(key: u64, stream: Stream, now_ms: u64, cap: usize, idle_timeout_ms: u64) {
    POOL.with_borrow_mut(|p| {
        p.returns = p.returns.wrapping_add(1);
        if p.returns % SWEEP_EVERY == 0 || p.total >= cap {
            sweep(p, now_ms, idle_timeout_ms);
        }
        if p.total >= cap {
            return;
        }
        p.total += 1;
        p.by_key.entry(key).or_default().push(Idle {
            stream,
            since_ms: now_ms,
        });
    })
}

/// Drops expired connections (oldest first in each list) and empty lists.
fn sweep(p: &mut Pool, now_ms: u64, idle_timeout_ms: u64) {
    let mut dropped = 0;
    p.by_key.retain(|_, list| {
        let keep_from = list
            .iter()
            .position(|i| now_ms.saturating_sub(i.since_ms) < idle_timeout_ms)
            .unwrap_or(list.len());
        dropped += keep_from;
        list.drain(..keep_from);
        !list.is_empty()
    });
    p.total -= dropped;
}

/// Whether nothing arrived on an idle connection: no data, no end of stream, no error. Reads
/// without blocking; tokio answers from its readiness state without a system call unless the
/// socket became readable.
fn quiet(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// A backend HTTP/1 session on `stream`; response header names keep their spelling only with
/// `server.preserve_header_case` (otherwise one header map instead of two).
fn h1_session(
    stream: pingora_core::protocols::Stream,
    peer: &HttpPeer,
    preserve_case: bool,
) -> Box<H1Upstream> {
    // Boxed: the session (about 500 bytes) then moves through connect, exchange and release as
    // a pointer.
    let mut s = Box::new(H1Upstream::new_with_options(stream, peer));
    s.set_preserve_header_case(preserve_case);
    s
}

/// An HTTP/1 session to the backend `key` at `peer`: on an idle pooled connection (`true`) or a
/// new one. `(now_ms, idle_ms)`: the time and the upstream's `idle_timeout`.
pub(super) async fn h1_connect(
    connector: &TransportConnector,
    key: u64,
    peer: &HttpPeer,
    (now_ms, idle_ms): (u64, u64),
    preserve_case: bool,
) -> Result<(Box<H1Upstream>, bool), Box<Error>> {
    match take(key, now_ms, idle_ms) {
        Some(s) => Ok((h1_session(s, peer, preserve_case), true)),
        None => connector
            .new_stream(peer)
            .await
            .map(|s| (h1_session(s, peer, preserve_case), false)),
    }
}

/// Returns an exchange's connection to the worker's pool when the backend keeps it alive.
pub(super) async fn h1_release(
    mut h1: Box<H1Upstream>,
    key: u64,
    (now_ms, idle_ms): (u64, u64),
    cap: usize,
) {
    h1.respect_keepalive();
    if let Some(stream) = h1.reuse().await {
        put(key, stream, now_ms, cap, idle_ms);
    }
}

/// The worker's HTTP/2 backend connections.
pub(super) mod h2 {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use pingora_core::connectors::http::v2::ConnectionRef;
    use pingora_core::protocols::http::v2::client::Http2Session;

    struct Open {
        conn: ConnectionRef,
        /// `crate::util::time::process_ms` of the last stream opened on it.
        used_ms: u64,
        /// Its upstream's `idle_timeout`, for sweeps started by other upstreams' requests.
        idle_timeout_ms: u64,
    }

    impl Open {
        /// Closed, closing, or without streams for its idle timeout.
        fn expired(&self, now_ms: u64) -> bool {
            let idle =
                self.conn.is_idle() && now_ms.saturating_sub(self.used_ms) >= self.idle_timeout_ms;
            self.conn.is_closed() || self.conn.is_shutting_down() || idle
        }
    }

    #[derive(Default)]
    struct Conns {
        by_key: HashMap<u64, Vec<Open>>,
        streams: u32,
    }

    thread_local! {
        static CONNS: RefCell<Conns> = RefCell::default();
    }

    /// Lets go of every expired connection of the worker, whatever its backend, and of empty
    /// lists.
    fn sweep(c: &mut Conns, now_ms: u64) {
        c.by_key.retain(|_, list| {
            list.retain(|o| !o.expired(now_ms));
            !list.is_empty()
        });
    }

    /// A new stream on an open connection to the backend `key` that has room for one.
    /// Connections that closed, are closing, or sat without streams for their idle timeout are
    /// let go on the way (the last reference closes them).
    pub(in crate::proxy) async fn stream(key: u64, now_ms: u64) -> Option<Http2Session> {
        loop {
            let conn = CONNS.with_borrow_mut(|c| {
                c.streams = c.streams.wrapping_add(1);
                if c.streams % super::SWEEP_EVERY == 0 {
                    sweep(c, now_ms);
                }
                let list = c.by_key.get_mut(&key)?;
                list.retain(|o| !o.expired(now_ms));
                let open = list.iter_mut().find(|o| o.conn.more_streams_allowed())?;
                open.used_ms = now_ms;
                Some(open.conn.clone())
            })?;
            match conn.spawn_stream().await {
                Ok(Some(s)) => return Some(s),
                // Full meanwhile, or closing: the next one.
                Ok(None) => continue,
                Err(_) => {
                    conn.mark_shutdown();
                    continue;
                }
            }
        }
    }

    /// Keeps `conn` (just opened) for the backend `key`'s next requests.
    pub(in crate::proxy) fn keep(key: u64, conn: ConnectionRef, now_ms: u64, idle_timeout_ms: u64) {
        CONNS.with_borrow_mut(|c| {
            c.by_key.entry(key).or_default().push(Open {
                conn,
                used_ms: now_ms,
                idle_timeout_ms,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connection, its server side, and a pool key of its own.
    async fn pair() -> (Stream, TcpStream, u64) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (Box::new(L4Stream::from(c)), s, addr.port() as u64)
    }

    #[tokio::test]
    async fn reuses_quiet_connections_and_drops_closed_or_expired_ones() {
        let (a, _server_a, addr) = pair().await;
        put(addr, a, 1_000, 8, 60_000);
        assert!(
            take(addr, 2_000, 60_000).is_some(),
            "a quiet connection is reused"
        );
        assert!(take(addr, 2_000, 60_000).is_none(), "taken once");

        let (mut b, mut server_b, addr) = pair().await;
        assert!(quiet(&mut b));
        server_b.shutdown().await.unwrap();
        drop(server_b);
        // Poll (bounded) until the close has reached the socket.
        let mut closed = false;
        for _ in 0..200 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if !quiet(&mut b) {
                closed = true;
                break;
            }
        }
        assert!(closed, "the close was never seen");
        put(addr, b, 1_000, 8, 60_000);
        assert!(
            take(addr, 2_000, 60_000).is_none(),
            "a closed connection is not reused"
        );

        let (c, _server_c, addr) = pair().await;
        put(addr, c, 1_000, 8, 500);
        assert!(
            take(addr, 1_600, 500).is_none(),
            "idle longer than idle_timeout"
        );
    }

    #[tokio::test]
    async fn holds_at_most_cap_connections() {
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let (s, server, addr) = pair().await;
            servers.push(server);
            addrs.push(addr);
            put(addr, s, 1_000, 2, 60_000);
        }
        let kept = addrs
            .iter()
            .filter(|a| take(**a, 1_001, 60_000).is_some())
            .count();
        assert_eq!(kept, 2);
    }
}
