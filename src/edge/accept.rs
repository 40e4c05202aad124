//! The listening app: every accepted connection is counted against `server.max_connections`
//! (over the cap: a 503 and a lingering close) and wrapped in a [`Guarded`] stream before pingora
//! reads a byte. It also runs the connection's keep-alive loop: between requests a connection holds
//! no HTTP session and no buffer, only the guarded socket; the session for the next request is made
//! when that request's first byte has arrived, and handed to the [`RequestApp`] (the proxy).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::v2;
use pingora_core::protocols::http::{ReusableHttpStream, ServerSession};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Digest, Stream, ALPN};
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::answer::raw_answer;
use super::conn::{linger, ConnSlot, Guarded};
use super::proxy_protocol;
use crate::config::Limits;
use crate::runtime::Shared;

/// How a request ended, for the connection it came on.
pub struct Served {
    /// The connection, when it can carry another request (HTTP/1).
    pub next: Option<(ReusableHttpStream, HttpPersistentSettings)>,
    /// The client left before its answer was complete (a reset HTTP/2 stream, a closed
    /// connection).
    pub abandoned: bool,
}

/// What the connection layer runs for each request: the request path. It receives a session
/// whose head is not read yet.
#[async_trait]
pub trait RequestApp {
    async fn request(self: &Arc<Self>, session: ServerSession, shutdown: &ShutdownWatch) -> Served;

    /// Resolves when the service stops: connections waiting for a request close.
    async fn stopped(&self);

    /// The service stopped listening.
    async fn cleanup(&self) {}
}

/// The proxy listener's app: the request path (`inner`) behind the connection cap, with every
/// stream wrapped in a [`Guarded`].
pub struct GuardedApp<A> {
    inner: Arc<A>,
    pub(super) shared: Arc<Shared>,
    pub(super) active: Arc<AtomicUsize>,
    tls: Option<TlsListeners>,
    /// Listeners whose connections start with a PROXY protocol header (plain and HTTPS ones).
    proxied: Vec<SocketAddr>,
}

/// The HTTPS listeners, whose TLS handshake the connection layer runs itself (pingora's
/// listening service would run it before lb sees the connection, outside `max_connections`
/// and under its own fixed 60 s timeout).
pub struct TlsListeners {
    /// The addresses of `server.tls.listen` (their listeners are plain TCP in pingora).
    pub addrs: Vec<std::net::SocketAddr>,
    pub acceptor: Acceptor,
}

/// Whether a connection that arrived on `local` came to one of the listeners `addrs`.
fn listens_on(addrs: &[SocketAddr], local: Option<SocketAddr>) -> bool {
    let Some(local) = local else {
        return false;
    };
    addrs
        .iter()
        .any(|a| a.port() == local.port() && (a.ip() == local.ip() || a.ip().is_unspecified()))
}

/// The connection's local address (which listener it came to).
fn local_addr(stream: &Stream) -> Option<SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
}

impl<A> GuardedApp<A> {
    /// `proxied`: the listeners with `proxy_protocol = true`.
    pub fn new(
        inner: A,
        shared: Arc<Shared>,
        tls: Option<TlsListeners>,
        proxied: Vec<SocketAddr>,
    ) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            shared,
            active: Arc::new(AtomicUsize::new(0)),
            tls,
            proxied,
        }
    }

    /// The acceptor when a connection to `local` came to an HTTPS listener.
    fn tls_for(&self, local: Option<SocketAddr>) -> Option<&Acceptor> {
        let tls = self.tls.as_ref()?;
        listens_on(&tls.addrs, local).then_some(&tls.acceptor)
    }

    /// Reads the PROXY protocol header a connection starts with, within
    /// `server.header_timeout`, and makes its source address the connection's peer (a `LOCAL`
    /// header, a load balancer's own check, keeps the TCP peer). `None`: no valid header in
    /// time, and the connection is closed (as NGINX does).
    async fn proxy_header(stream: Stream, limits: &Limits) -> Option<Stream> {
        use std::os::unix::io::AsRawFd;
        let mut l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
        let read = proxy_protocol::read(&mut l4);
        let header = match tokio::time::timeout(limits.header_timeout, read).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::debug!("connection closed: {e}");
                return None;
            }
            Err(_) => {
                tracing::debug!("no PROXY protocol header within server.header_timeout");
                return None;
            }
        };
        if let proxy_protocol::Header::Proxied { source, .. } = header {
            let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
            let _ = digest.peer_addr.set(Some(source.into()));
            l4.set_socket_digest(digest);
        }
        Some(Box::new(l4))
    }

    /// The TLS handshake of a connection to an HTTPS listener, within `server.header_timeout`
    /// (the connection is already counted against `max_connections`). `None`: the handshake
    /// failed or took too long, and the connection is closed.
    async fn tls_handshake(acceptor: &Acceptor, stream: Stream, limits: &Limits) -> Option<Stream> {
        let l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
        // Boxed: the handshake's state (about 12 KiB with rustls) is not kept for the
        // connection's whole life in its task.
        let handshake = Box::pin(acceptor.tls_handshake(l4));
        match tokio::time::timeout(limits.header_timeout, handshake).await {
            Ok(Ok(s)) => Some(Box::new(s)),
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake not done within server.header_timeout");
                None
            }
        }
    }
}

/// Initial capacity of a request head buffer (pingora's own initial size).
const HEAD_BUFFER: usize = 4096;

/// pingora's keep-alive timeout for a session; lb's own idle timeout (`server.keepalive_timeout`)
/// is enforced by [`Guarded`].
const SESSION_KEEPALIVE_SECS: u64 = 60;

/// What a kept-alive connection carries from one request to the next: the session's settings
/// and the bytes of the next request read with this one (pipelined).
type Carried = (HttpPersistentSettings, Option<BytesMut>);

#[async_trait]
impl<A: RequestApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.shared.snapshot.load().config.server.limits.clone();
        let n = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ConnSlot {
            active: self.active.clone(),
            shared: self.shared.clone(),
        };
        let local = local_addr(&stream);
        let tls = self.tls_for(local);
        if n > limits.max_connections {
            // A 503 in plain text means nothing to a TLS client: it is only closed.
            if tls.is_none() {
                shed(stream, &self.shared).await;
            }
            drop(slot);
            return None;
        }
        // The PROXY header comes first, before a TLS handshake.
        let stream = if listens_on(&self.proxied, local) {
            Self::proxy_header(stream, &limits).await?
        } else {
            stream
        };
        let stream = match tls {
            Some(acceptor) => Self::tls_handshake(acceptor, stream, &limits).await?,
            None => stream,
        };
        let (stream, h2) = match stream.selected_alpn_proto() {
            Some(ALPN::H2) => (stream, true),
            _ if stream.get_ssl_digest().is_none()
                && self.shared.snapshot.load().config.server.h2c =>
            {
                h2c_preface(stream, limits.header_timeout).await?
            }
            _ => (stream, false),
        };
        if h2 {
            self.serve_h2(stream, &limits, shutdown).await;
            drop(slot);
            return None;
        }
        self.serve_h1(stream, limits, slot, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

impl<A: RequestApp + Send + Sync + 'static> GuardedApp<A> {
    /// An HTTP/1 connection: the keep-alive loop, each request a `ServerSession` made when its
    /// first byte arrives (an idle connection holds no session and no buffer).
    async fn serve_h1(
        &self,
        stream: Stream,
        limits: Limits,
        slot: ConnSlot,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let preserve_case = limits.preserve_header_case;
        let mut stream = Box::new(Guarded::new(stream, limits, slot));
        let mut carried: Option<Carried> = None;
        loop {
            let prefix = self.next_head(&mut stream, &mut carried).await?;
            let mut session = ServerSession::new_http1(stream);
            // Without `server.preserve_header_case`, one header map per request instead of two.
            session.set_preserve_header_case(preserve_case);
            if *shutdown.borrow() {
                // Stopping: this is the connection's last request.
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(SESSION_KEEPALIVE_SECS));
            }
            if let Some((settings, _)) = carried.take() {
                settings.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(prefix);
            let (reusable, settings) = self.inner.request(session, shutdown).await.next?;
            let (next, prefix) = reusable.into_parts();
            // Always the stream made above: the session hands back what it was given.
            stream = next.into_any().downcast::<Guarded>().ok()?;
            carried = Some((settings, prefix));
        }
    }

    /// The next request's first bytes: already read with the previous request (pipelined), or
    /// waited for here, without a session or its buffers. `None`: the connection ends.
    async fn next_head(
        &self,
        stream: &mut Guarded,
        carried: &mut Option<Carried>,
    ) -> Option<BytesMut> {
        if let Some(p) = carried.as_mut().and_then(|c| c.1.take()) {
            if !stream.start_pipelined_head(&p) {
                // Refused: the read writes the refusal; dropping the stream lingers.
                let _ = stream.read(&mut [0u8; 1]).await;
                return None;
            }
            return Some(p);
        }
        let mut byte = [0u8; 1];
        let n = if carried.is_some() {
            // An idle keep-alive connection closes when the service stops.
            tokio::select! {
                biased;
                n = stream.read(&mut byte) => n.ok()?,
                _ = self.inner.stopped() => return None,
            }
        } else {
            // A new connection's first request is served even when stopping (as last
            // request): the client sent it, or is sending it, to a listener that accepted it —
            // closing would lose it, as NGINX does not either. The header timeout bounds the
            // wait.
            stream.read(&mut byte).await.ok()?
        };
        if n == 0 {
            return None;
        }
        // pingora parses into this buffer and reads the rest of the head after it.
        let mut head = BytesMut::with_capacity(HEAD_BUFFER);
        head.extend_from_slice(&byte);
        Some(head)
    }

    /// An HTTP/2 connection (ALPN `h2`, or h2c with prior knowledge): pingora-core's HTTP/2
    /// accept loop (graceful shutdown by GOAWAY, idle timeout), each stream a request of its own
    /// on a task of its own, through the same [`RequestApp`] as HTTP/1 requests.
    async fn serve_h2(&self, stream: Stream, limits: &Limits, shutdown: &ShutdownWatch) {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        // The client's preface and settings are its "head": bounded by the header deadline.
        let handshake = v2::server::handshake(stream, Some(h2_options(limits)));
        let conn = match tokio::time::timeout(limits.header_timeout, handshake).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!("HTTP/2 handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/2 handshake not done within server.header_timeout");
                return;
            }
        };
        let app = self.inner.clone();
        let stop = shutdown.clone();
        let resets = Arc::new(ResetCount::default());
        let count = resets.clone();
        let accept = v2::server::accept_downstream_sessions(
            conn,
            digest,
            shutdown.clone(),
            Some(limits.keepalive_timeout),
            |h2_stream, guard| {
                let (app, stop, count) = (app.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    // Held while the stream is served: the idle timeout sees a busy connection.
                    let _guard = guard;
                    let served = app
                        .request(ServerSession::new_http2(h2_stream), &stop)
                        .await;
                    count.record(served.abandoned);
                });
            },
        );
        tokio::select! {
            _ = accept => {}
            _ = resets.flood.notified() => {
                // Dropping the connection's accept loop closes it; its streams end with it.
                tracing::warn!(
                    client = ?client,
                    resets = resets.abandoned.load(Ordering::Relaxed),
                    streams = resets.streams.load(Ordering::Relaxed),
                    "HTTP/2 client abandons most of its streams (rapid reset): connection closed"
                );
            }
        }
    }
}

/// Streams of one HTTP/2 connection, and how many of them the client abandoned (reset before
/// the answer was complete). A client that opens streams only to reset them makes lb start work
/// (a backend request) for nothing; the h2 crate already cuts off clients that reset streams
/// before lb has accepted them (after 20, with `GOAWAY ENHANCE_YOUR_CALM`), this catches the
/// paced variant that waits for each stream to be accepted: [`H2_ABANDON_LIMIT`] abandoned
/// streams, most of the connection's, close it.
#[derive(Default)]
struct ResetCount {
    streams: std::sync::atomic::AtomicU32,
    abandoned: std::sync::atomic::AtomicU32,
    flood: tokio::sync::Notify,
}

/// Abandoned streams after which an HTTP/2 connection is closed when they are most of its
/// streams.
pub const H2_ABANDON_LIMIT: u32 = 100;

impl ResetCount {
    fn record(&self, abandoned: bool) {
        let streams = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        if !abandoned {
            return;
        }
        let n = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= H2_ABANDON_LIMIT && n * 2 >= streams {
            self.flood.notify_one();
        }
    }
}

/// Most streams an HTTP/2 client may have open at once on one connection (NGINX's
/// `http2_max_concurrent_streams` default).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// HTTP/2 settings from lb's request limits: the header list is bounded like an HTTP/1 head,
/// and a client may have [`H2_MAX_CONCURRENT_STREAMS`] streams open. The h2 crate's limits on
/// streams reset before they are accepted and on CONTINUATION frames stay on.
fn h2_options(limits: &Limits) -> v2::server::H2Options {
    let mut o = v2::server::default_h2_options();
    o.max_header_list_size(limits.max_header_bytes as u32);
    o.max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    o
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// On a plain listener with `server.h2c`: whether the connection starts with the HTTP/2
/// preface. Reads only until the bytes differ from it (one read for any HTTP/1 request) and
/// puts what it read back, so either protocol reads the connection from its first byte. A
/// connection that sends nothing within `header_timeout` is closed (`None`).
async fn h2c_preface(stream: Stream, header_timeout: Duration) -> Option<(Stream, bool)> {
    if !stream.as_any().is::<L4Stream>() {
        return Some((stream, false));
    }
    let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let read = async {
        while n < buf.len() && buf[..n] == H2_PREFACE[..n] {
            match l4.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => n += k,
            }
        }
        true
    };
    if !tokio::time::timeout(header_timeout, read)
        .await
        .unwrap_or(false)
    {
        return None;
    }
    let h2 = buf[..] == H2_PREFACE[..];
    l4.rewind(&buf[..n]);
    Some((l4, h2))
}

/// Refuses a connection over `server.max_connections`: a 503, then a short lingering close.
pub(super) async fn shed(mut stream: Stream, shared: &Shared) {
    shared.record_own_answer(503, Duration::ZERO);
    tracing::debug!("connection shed: server.max_connections reached");
    let resp = raw_answer(503, "too many connections (server.max_connections)");
    let write = async {
        stream.write_all(&resp).await?;
        stream.flush().await
    };
    if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), write).await {
        linger(
            stream,
            Duration::from_millis(500),
            Duration::from_millis(200),
        )
        .await;
    }
}
