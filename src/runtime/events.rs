//! The event timeline: state changes, reloads, rejected configs and DNS changes, the last
//! [`EVENT_CAPACITY`] of them for `/status`, the dashboard and the report; each one also goes to
//! the analytics record stream, when there is one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::observe::stream::Stream;
use crate::util::time::unix_ms;

/// How many timeline events `/status` and the dashboard keep.
pub const EVENT_CAPACITY: usize = 200;

/// One entry of the event timeline (state changes, reloads, rejected configs).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub kind: &'static str,
    pub message: String,
}

/// The timeline, and the analytics stream its events also go to.
#[derive(Default)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    /// The analytics record stream (`None` without `[analytics.kafka]`).
    stream: Option<Arc<Stream>>,
}

impl Events {
    /// An empty timeline whose events also go to `stream`.
    pub fn new(stream: Option<Arc<Stream>>) -> Events {
        Events {
            ring: Mutex::new(VecDeque::with_capacity(EVENT_CAPACITY)),
            stream,
        }
    }

    /// Records an event (and logs nothing: callers log with their own level).
    pub fn record(&self, kind: &'static str, message: String) {
        self.record_about(kind, message, None, None);
    }

    /// [`record`](Self::record) about an upstream, or one of its backends: the analytics
    /// stream's record carries (and is keyed by) them.
    pub fn record_about(
        &self,
        kind: &'static str,
        message: String,
        upstream: Option<&str>,
        backend: Option<&str>,
    ) {
        if let Some(s) = &self.stream {
            s.event(kind, &message, upstream, backend);
        }
        let mut ev = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ev.len() == EVENT_CAPACITY {
            ev.pop_front();
        }
        ev.push_back(Event {
            time_ms: unix_ms(),
            kind,
            message,
        });
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
