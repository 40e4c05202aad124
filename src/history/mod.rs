//! The load-test history ([`crate::state::history`] keeps it): the sampler ([`run`]), the
//! `/history` and `/history.csv` answers ([`query`]) and the `/report` page ([`report`]).

pub mod query;
pub mod report;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::observe::stream::SummaryRecord;
use crate::runtime::Shared;
use crate::state::history::{Histogram, History, Layout, Second, TickBackend, TickUpstream};
use crate::util::time::unix_ms;

/// The sampler: once a second, on the second.
///
/// With `[analytics.kafka]` it also sends every backend's second as a `summary` record (even with
/// `history = "0s"`, through a store that keeps nothing).
///
/// The tick runs on a blocking thread (`spawn_blocking`): it takes the history lock, which the
/// admin listener also takes (briefly: `/report` and `/history` copy under it and render
/// outside), and the background runtime it would otherwise block is the one thread that also
/// runs health checks, DNS discovery and the Kafka drain.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let now = unix_ms();
        let next = (now / 1000 + 1) * 1000;
        tokio::time::sleep(Duration::from_millis(next - now)).await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || sample(&s, next / 1000 - 1)).await;
    }
}

/// The store of a process that keeps no history (`history = "0s"`) but sends `summary` records:
/// it keeps only each backend's running totals.
fn scratch() -> &'static History {
    static SCRATCH: OnceLock<History> = OnceLock::new();
    SCRATCH.get_or_init(History::default)
}

/// One tick for unix second `t`, then its `summary` records.
fn sample(shared: &Shared, t: u64) {
    let snap = shared.snapshot.load_full();
    let a = &snap.config.analytics;
    let stream = shared.stream.as_ref();
    let keep = !a.history.is_zero();
    if !keep && stream.is_none() {
        return;
    }
    let backends: usize = snap.upstreams.iter().map(|u| u.backends.len()).sum();
    let (store, layout) = if keep {
        let layout = Layout::new(a, snap.upstreams.len(), backends);
        (&shared.history, layout)
    } else {
        let nothing = Layout {
            keep_s: 0,
            backend_s: 1,
        };
        (scratch(), nothing)
    };
    let ups: Vec<TickUpstream> = snap
        .upstreams
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
        .collect();
    let out = store.tick(t, layout, &ups);
    if let Some(stream) = stream {
        for s in out {
            stream.summary(&summary_record(&s));
        }
    }
}

/// At exit, before the Kafka flush: a last, partial sample of the second under way for every
/// backend, so that the `summary` records add up to every request answered (the sampler only
/// ticks at the end of a second). Idempotent per second: a tick that already covered `t`
/// counts nothing twice, as samples are differences of running totals.
pub fn final_sample(shared: &Shared) {
    let t = unix_ms() / 1000;
    sample(shared, t);
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
