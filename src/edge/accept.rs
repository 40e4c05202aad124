//! The listening app: every accepted connection is counted against `server.max_connections`
//! (over the cap: a 503 and a lingering close) and wrapped in a [`Guarded`]
//! stream before pingora reads a byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
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

/// The proxy listener's app: pingora-proxy's `HttpProxy` (`inner`) behind the connection cap, with
/// every stream wrapped in a [`Guarded`].
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

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
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
        // HTTP apps serve every request of the connection inside this call and return `None`.
        ServerApp::process_new(
            &self.inner,
            Box::new(Guarded::new(stream, limits, slot)),
            shutdown,
        )
        .await
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
