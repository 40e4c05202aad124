//! Stopping the service wakes every connection that waits for its next request, so idle
//! keep-alive connections close at once instead of holding a graceful stop open.
//!
//! Waiting registers with a `Notify`; one per worker thread (cache-line padded), so that
//! registering never contends across workers.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use tokio::sync::Notify;

#[repr(align(128))]
struct Shard(Notify);

pub(super) struct Stop {
    stopped: AtomicBool,
    shards: Box<[Shard]>,
}

impl Stop {
    pub(super) fn new(threads: usize) -> Stop {
        let n = threads.clamp(1, 64).next_power_of_two();
        Stop {
            stopped: AtomicBool::new(false),
            shards: (0..n).map(|_| Shard(Notify::new())).collect(),
        }
    }

    fn local(&self) -> &Notify {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let id = ID.with(|id| *id);
        &self.shards[id & (self.shards.len() - 1)].0
    }

    /// Resolves once [`Stop::fire`] was called (also if it was called before).
    pub(super) async fn wait(&self) {
        let notified = self.local().notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a `fire` in between cannot be missed.
        poll_fn(|cx| {
            if notified.as_mut().poll(cx).is_ready() || self.stopped.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(super) fn fire(&self) {
        self.stopped.store(true, Ordering::Release);
        for s in self.shards.iter() {
            s.0.notify_waiters();
        }
    }
}
