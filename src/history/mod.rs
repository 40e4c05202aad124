//! The load-test history: its store ([`store`]), the sampler ([`Sampler`]), the `/history` and
//! `/history.csv` answers ([`query`]) and the `/report` page ([`report`]). The store is held by
//! the sampler and the admin listener, nothing else.

pub mod query;
pub mod report;
pub mod store;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::observe::stream::{Stream, SummaryRecord};
use crate::runtime::Shared;
use crate::snapshot::Snapshot;
use crate::util::time::unix_ms;
use store::{Histogram, History, Layout, Second, TickBackend, TickUpstream};

/// What the sampler reads (the live snapshot's backends) and where it writes (the store, and
/// the analytics stream's `summary` records).
pub struct Sampler {
    snapshot: Arc<ArcSwap<Snapshot>>,
    history: Arc<History>,
    stream: Option<Arc<Stream>>,
}

impl Sampler {
    /// The sampler of `shared`'s snapshot into `history`.
    pub fn new(shared: &Shared, history: Arc<History>) -> Arc<Sampler> {
        Arc::new(Sampler {
            snapshot: shared.snapshot.clone(),
            history,
            stream: shared.stream.clone(),
        })
    }

    /// Samples once a second, on the second.
    ///
    /// With `[analytics.kafka]` it also sends every backend's second as a `summary` record (even with
    /// `history = "0s"`, through a store that keeps nothing).
    ///
    /// The tick runs on a blocking thread (`spawn_blocking`): it takes the history lock, which the
    /// admin listener also takes (briefly: `/report` and `/history` copy under it and render
    /// outside), and the background runtime it would otherwise block is the one thread that also
    /// runs health checks, DNS discovery and the Kafka drain.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = unix_ms();
            let next = (now / 1000 + 1) * 1000;
            tokio::time::sleep(Duration::from_millis(next - now)).await;
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || s.sample(next / 1000 - 1)).await;
        }
    }

    /// At exit, before the Kafka flush: a last, partial sample of the second under way for
    /// every backend, so that the `summary` records add up to every request answered (the
    /// sampler only ticks at the end of a second). Idempotent per second: a tick that already
    /// covered `t` counts nothing twice, as samples are differences of running totals.
    pub fn final_sample(&self) {
        self.sample(unix_ms() / 1000);
    }

    /// One tick for unix second `t`, then its `summary` records.
    fn sample(&self, t: u64) {
        let snap = self.snapshot.load_full();
        let a = &snap.config.analytics;
        let stream = self.stream.as_ref();
        let keep = !a.history.is_zero();
        if !keep && stream.is_none() {
            return;
        }
        let backends: usize = snap.upstreams.iter().map(|u| u.backends.len()).sum();
        let (store, layout) = if keep {
            let layout = Layout::new(a, snap.upstreams.len(), backends);
            (&*self.history, layout)
        } else {
            let nothing = Layout {
                keep_s: 0,
                backend_s: 1,
            };
            (scratch(), nothing)
        };
        let out = store.tick(t, layout, &tick_upstreams(&snap));
        if let Some(stream) = stream {
            for s in out {
                stream.summary(&summary_record(&s));
            }
        }
    }
}

/// The store of a process that keeps no history (`history = "0s"`) but sends `summary` records:
/// it keeps only each backend's running totals.
fn scratch() -> &'static History {
    static SCRATCH: OnceLock<History> = OnceLock::new();
    SCRATCH.get_or_init(History::default)
}

/// Every upstream's and backend's running totals in `snap`, for a tick.
fn tick_upstreams(snap: &Snapshot) -> Vec<TickUpstream> {
    snap.upstreams
        .iter()
        .map(|u| TickUpstream {
            name: u.name().into(),
            own: u.state.own.totals(),
            backends: u
                .backends
                .iter()
                .map(|b| TickBackend {
                    address: b.address.as_str().into(),
                    name: b.name.clone(),
                    totals: b.state.stats.totals(),
                    in_flight: b.state.in_flight(),
                    state: if b.down { 1 } else { b.state.state() as u8 },
                })
                .collect(),
        })
        .collect()
}

/// A backend's second as a Kafka `summary` record.
fn summary_record(s: &Second) -> SummaryRecord {
    let mut h = Histogram::default();
    h.add(&s.sample);
    SummaryRecord {
        ts_ms: s.sample.t * 1000,
        upstream: s.upstream.to_string(),
        backend: s.backend.to_string(),
        requests: s.sample.requests(),
        errors_4xx: s.sample.classes[3] as u64,
        errors_5xx: s.sample.classes[4] as u64,
        p50_ms: h.quantile_ms(0.50),
        p90_ms: h.quantile_ms(0.90),
        p99_ms: h.quantile_ms(0.99),
        in_flight: s.sample.in_flight as u64,
        state: query::state_name(s.sample.state).to_string(),
    }
}
