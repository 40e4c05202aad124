//! The listening app: every accepted connection is counted against `server.max_connections`
//! (over the cap: a 503 and a lingering close) and wrapped in a [`Guarded`] stream before pingora
//! reads a byte. It also runs the connection's keep-alive loop: between requests a connection holds
//! no HTTP session and no buffer, only the guarded socket; the session for the next request is made
//! when that request's first byte has arrived, and handed to the [`RequestApp`] (the proxy).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, ServerApp};
use pingora_core::protocols::http::{ReusableHttpStream, ServerSession};
use pingora_core::protocols::{Shutdown, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::answer::raw_answer;
use super::conn::Guarded;
use crate::runtime::Shared;

/// How long lb keeps reading (and discarding) from a connection it closes after refusing a request.
pub(super) const LINGER_TOTAL: Duration = Duration::from_secs(3);
/// ... and how long it waits for more bytes before giving up early.
pub(super) const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Longest time spent writing a refusal the client does not read.
pub(super) const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One counted client connection; dropping it frees the slot.
pub(super) struct ConnSlot {
    pub(super) active: Arc<AtomicUsize>,
    pub(super) shared: Arc<Shared>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the connection layer runs for each request: the request path. It receives a session
/// whose head is not read yet and returns the connection when it can carry another request.
#[async_trait]
pub trait RequestApp {
    async fn request(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<(ReusableHttpStream, HttpPersistentSettings)>;

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
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, shared: Arc<Shared>) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            shared,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Initial capacity of a request head buffer (pingora's own initial size).
const HEAD_BUFFER: usize = 4096;

/// pingora's keep-alive timeout for a session; lb's own idle timeout (`server.keepalive_timeout`)
/// is enforced by [`Guarded`].
const SESSION_KEEPALIVE_SECS: u64 = 60;

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
        if n > limits.max_connections {
            shed(stream, &self.shared).await;
            drop(slot);
            return None;
        }
        let mut stream = Box::new(Guarded::new(stream, limits, slot));
        let mut carried: Option<(HttpPersistentSettings, Option<BytesMut>)> = None;
        loop {
            // The next request's first bytes: already read with the previous request
            // (pipelined), or waited for here, without a session or its buffers.
            let prefix = match carried.as_mut().and_then(|c| c.1.take()) {
                Some(p) => {
                    if !stream.start_pipelined_head(&p) {
                        // Refused: the read writes the refusal; dropping the stream lingers.
                        let _ = stream.read(&mut [0u8; 1]).await;
                        return None;
                    }
                    p
                }
                None => {
                    let mut byte = [0u8; 1];
                    let n = tokio::select! {
                        biased;
                        n = stream.read(&mut byte) => n.ok()?,
                        _ = self.inner.stopped() => return None,
                    };
                    if n == 0 {
                        return None;
                    }
                    // pingora parses into this buffer and reads the rest of the head after it.
                    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
                    head.extend_from_slice(&byte);
                    head
                }
            };
            let mut session = ServerSession::new_http1(stream);
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
            let (reusable, settings) = self.inner.request(session, shutdown).await?;
            let (next, prefix) = reusable.into_parts();
            // Always the stream made above: the session hands back what it was given.
            stream = next.into_any().downcast::<Guarded>().ok()?;
            carried = Some((settings, prefix));
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
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

/// Half-closes `stream`, then reads and discards until the client closes, pauses for `idle`, or
/// `total` has passed; the socket is then closed.
pub(super) async fn linger(mut stream: Stream, total: Duration, idle: Duration) {
    let drain = async {
        Shutdown::shutdown(stream.as_mut()).await;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(idle, stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(total, drain).await;
}
