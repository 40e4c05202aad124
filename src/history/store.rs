//! The load-test history store: per-second samples of every backend (answers by status class, a
//! latency histogram, requests in flight, state) and per-upstream totals, kept in memory for
//! `analytics.history` (read by [`super::query`] and [`super::report`]: `/history`, `/history.csv`, `/report`).
//!
//! Nothing is added to the request path: the sampler reads each backend's running totals
//! ([`RequestStats::totals`](crate::state::stats::RequestStats::totals)) once a second and
//! [`History::tick`] stores the differences. Percentiles of any window come from the merged histograms of its
//! samples, never from averaged percentiles.
//!
//! Memory is bounded: a sample is [`SAMPLE_BYTES`] bytes; per-upstream totals always stay at one
//! second; when `backends × history` per-second samples would pass `history_max_memory`,
//! per-backend samples cover 2, 3, … seconds each instead ([`Layout`]). When that changes while
//! lb runs (the backend count crosses a threshold, a reload), the samples already kept are
//! merged into the coarser resolution: the history of a running test is never dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::config::AnalyticsConfig;
use crate::state::stats::{Totals, DURATION_BUCKETS, DURATION_BUCKETS_LEN};

/// Latency buckets of a sample (the last: over 30 s).
pub const BUCKETS: usize = DURATION_BUCKETS_LEN + 1;

/// One series' counts over `seconds` seconds from `t` (unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub t: u64,
    pub seconds: u32,
    /// Answers by class: 1xx..5xx.
    pub classes: [u32; 5],
    pub latency: [u32; BUCKETS],
    /// Requests in flight at the end of the sample.
    pub in_flight: u32,
    /// [`crate::state::backend::Health`] as u8; 255: an upstream total.
    pub state: u8,
}

/// Bytes one stored sample takes.
pub const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>();

impl Sample {
    pub fn requests(&self) -> u64 {
        self.classes.iter().map(|&n| n as u64).sum()
    }

    /// Extends the sample by `other`, the next stretch of the same series.
    fn add(&mut self, other: &Sample) {
        absorb(self, other);
        self.in_flight = other.in_flight;
        self.state = other.state;
        self.seconds += other.seconds;
    }
}

/// A latency histogram merged over any number of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Histogram(pub [u64; BUCKETS]);

impl Histogram {
    pub fn add(&mut self, s: &Sample) {
        for (a, b) in self.0.iter_mut().zip(s.latency) {
            *a += b as u64;
        }
    }

    /// The `q` quantile in milliseconds, linearly interpolated inside its bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0.0;
        for (i, &n) in self.0.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let next = seen + n as f64;
            if next >= rank {
                let lo = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
                let hi = DURATION_BUCKETS.get(i).copied().unwrap_or(lo * 2.0);
                let f = ((rank - seen) / n as f64).clamp(0.0, 1.0);
                return Some((lo + (hi - lo) * f) * 1000.0);
            }
            seen = next;
        }
        None
    }
}

/// How the memory budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Seconds kept.
    pub keep_s: u64,
    /// Seconds per backend sample (1 unless the budget forces more).
    pub backend_s: u64,
}

impl Layout {
    pub fn new(a: &AnalyticsConfig, upstreams: usize, backends: usize) -> Layout {
        let keep_s = a.history.as_secs();
        let totals = (upstreams as u64) * keep_s * SAMPLE_BYTES as u64;
        let left = a.history_max_memory.saturating_sub(totals).max(1);
        let per_second = (backends as u64) * keep_s * SAMPLE_BYTES as u64;
        Layout {
            keep_s,
            backend_s: per_second.div_ceil(left).max(1),
        }
    }

    /// Bytes the history takes at most.
    pub fn bytes(&self, upstreams: usize, backends: usize) -> u64 {
        let samples =
            upstreams as u64 * self.keep_s + backends as u64 * self.keep_s.div_ceil(self.backend_s);
        samples * SAMPLE_BYTES as u64
    }
}

/// One series: an upstream's totals (`backend` empty) or one backend's samples.
#[derive(Debug, Default)]
pub struct Series {
    pub upstream: Arc<str>,
    pub backend: Arc<str>,
    /// The DNS entry a discovered backend came from.
    pub name: Option<Arc<str>>,
    pub samples: VecDeque<Sample>,
    /// A backend sample being filled until it covers `Layout::backend_s` seconds.
    open: Option<Sample>,
    /// The running totals at the last tick.
    last: Totals,
}

/// The stored history.
#[derive(Debug, Default)]
pub struct Store {
    pub layout: Option<Layout>,
    /// Keyed by (upstream, backend).
    pub series: HashMap<(Arc<str>, Arc<str>), Series>,
    /// Unix seconds of the first and last tick.
    pub first_t: u64,
    pub last_t: u64,
}

/// The history, shared by the sampler and the admin listener.
#[derive(Debug, Default)]
pub struct History {
    pub store: Mutex<Store>,
}

impl History {
    /// One tick at unix second `t`: the differences since the last tick, per backend and per
    /// upstream (`own`: lb's own answers for the upstream).
    ///
    /// Returns this second's sample of every backend (for the Kafka summary records), whatever
    /// resolution the stored backend samples have.
    pub fn tick(&self, t: u64, layout: Layout, upstreams: &[TickUpstream]) -> Vec<Second> {
        let mut out = Vec::new();
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match store.layout {
            Some(old) if old != layout => relayout(&mut store, old, layout),
            _ => store.layout = Some(layout),
        }
        if store.first_t == 0 {
            store.first_t = t;
        }
        store.last_t = t;
        let oldest = t.saturating_sub(layout.keep_s);
        let mut live = std::collections::HashSet::new();
        for up in upstreams {
            let mut total = Sample {
                t,
                seconds: 1,
                state: 255,
                ..Sample::default()
            };
            let own = diff(&mut store, &up.name, "", None, &up.own, 0, 255);
            absorb(&mut total, &own);
            for b in &up.backends {
                let s = diff(
                    &mut store,
                    &up.name,
                    &b.address,
                    b.name.clone(),
                    &b.totals,
                    b.in_flight,
                    b.state,
                );
                absorb(&mut total, &s);
                total.in_flight = total.in_flight.saturating_add(s.in_flight);
                out.push(Second {
                    upstream: up.name.clone(),
                    backend: b.address.clone(),
                    sample: Sample { t, ..s },
                });
                live.insert((up.name.clone(), b.address.clone()));
                let series = store
                    .series
                    .get_mut(&(up.name.clone(), b.address.clone()))
                    .expect("diff made it");
                let open = series.open.get_or_insert(Sample {
                    t,
                    ..Sample::default()
                });
                open.add(&s);
                if open.seconds as u64 >= layout.backend_s {
                    let done = series.open.take().expect("open");
                    series.samples.push_back(done);
                }
                trim(&mut series.samples, oldest);
            }
            total.state = 255;
            let key = (up.name.clone(), Arc::<str>::from(""));
            let series = store.series.get_mut(&key).expect("diff made it");
            series.samples.push_back(total);
            trim(&mut series.samples, oldest);
            live.insert(key);
        }
        // Backends that left keep their samples until they age out.
        store
            .series
            .retain(|k, s| live.contains(k) || s.samples.back().is_some_and(|x| x.t >= oldest));
        out
    }
}

/// A new memory budget (the backend count crossed a threshold, or a reload changed `history` or
/// `history_max_memory`): what is kept is coarsened, never dropped. Backend samples are merged
/// into samples of at least the new `backend_s` seconds (a finer new resolution leaves the
/// coarser samples already kept as they are: each says how many seconds it covers); a shorter
/// `history` trims the oldest seconds at the next tick, as ever.
fn relayout(store: &mut Store, old: Layout, new: Layout) {
    store.layout = Some(new);
    if new.backend_s <= old.backend_s {
        return;
    }
    for series in store.series.values_mut() {
        if series.backend.is_empty() {
            continue;
        }
        let mut merged = VecDeque::with_capacity(series.samples.len() / new.backend_s as usize + 1);
        let mut acc: Option<Sample> = None;
        for s in series.samples.drain(..).chain(series.open.take()) {
            let a = acc.get_or_insert(Sample {
                t: s.t,
                seconds: 0,
                ..Sample::default()
            });
            a.add(&s);
            if a.seconds as u64 >= new.backend_s {
                merged.push_back(acc.take().expect("acc"));
            }
        }
        series.samples = merged;
        // The rest fills up with the next ticks.
        series.open = acc;
    }
}

/// One series' samples of a window, copied out of the store.
#[derive(Debug, Clone)]
pub struct SeriesCopy {
    pub upstream: Arc<str>,
    /// Empty: the upstream's totals.
    pub backend: Arc<str>,
    pub name: Option<Arc<str>>,
    pub samples: Vec<Sample>,
}

/// What `/history`, `/history.csv` and `/report` read: a window of the store, copied under its
/// lock (a copy of plain 112-byte samples), so that they render without holding it — the
/// sampler's tick waits on that lock.
#[derive(Debug, Clone, Default)]
pub struct Copy {
    pub layout: Option<Layout>,
    pub first_t: u64,
    pub last_t: u64,
    /// Sorted by (upstream, backend); upstream totals (empty backend) first in each upstream.
    pub series: Vec<SeriesCopy>,
}

impl History {
    /// The samples of every series with `from <= t <= to`.
    pub fn copy(&self, from: u64, to: u64) -> Copy {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let series: Vec<SeriesCopy> = store
            .series
            .values()
            .map(|s| SeriesCopy {
                upstream: s.upstream.clone(),
                backend: s.backend.clone(),
                name: s.name.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|x| x.t >= from && x.t <= to)
                    .copied()
                    .collect(),
            })
            .collect();
        let (layout, first_t, last_t) = (store.layout, store.first_t, store.last_t);
        drop(store);
        let mut series = series;
        series.sort_by(|a, b| (&a.upstream, &a.backend).cmp(&(&b.upstream, &b.backend)));
        Copy {
            layout,
            first_t,
            last_t,
            series,
        }
    }
}

/// Adds `s`'s answers and latencies to an upstream total.
fn absorb(total: &mut Sample, s: &Sample) {
    for (a, b) in total.classes.iter_mut().zip(s.classes) {
        *a = a.saturating_add(b);
    }
    for (a, b) in total.latency.iter_mut().zip(s.latency) {
        *a = a.saturating_add(b);
    }
}

fn trim(samples: &mut VecDeque<Sample>, oldest: u64) {
    while samples.front().is_some_and(|s| s.t < oldest) {
        samples.pop_front();
    }
}

/// The sample since the last tick of one series (created at its first tick, counted from then).
fn diff(
    store: &mut Store,
    upstream: &Arc<str>,
    backend: &str,
    name: Option<Arc<str>>,
    now: &Totals,
    in_flight: u64,
    state: u8,
) -> Sample {
    let key = (upstream.clone(), Arc::<str>::from(backend));
    // A new series counts from zero (everything its backend answered so far).
    let series = store.series.entry(key.clone()).or_insert_with(|| Series {
        upstream: upstream.clone(),
        backend: key.1.clone(),
        name: name.clone(),
        ..Series::default()
    });
    series.name = name;
    // Running totals that went down are a new backend state (a reload removed and re-added the
    // backend): its series continues, counting from zero again.
    if (0..5).any(|i| now.classes[i] < series.last.classes[i]) {
        series.last = Totals::default();
    }
    let mut s = Sample {
        seconds: 1,
        in_flight: in_flight.min(u32::MAX as u64) as u32,
        state,
        ..Sample::default()
    };
    for i in 0..5 {
        s.classes[i] = now.classes[i].saturating_sub(series.last.classes[i]) as u32;
    }
    for i in 0..BUCKETS {
        s.latency[i] = now.buckets[i].saturating_sub(series.last.buckets[i]) as u32;
    }
    series.last = *now;
    s
}

/// One backend's last second.
#[derive(Debug, Clone)]
pub struct Second {
    pub upstream: Arc<str>,
    pub backend: Arc<str>,
    pub sample: Sample,
}

/// What the sampler reads of one upstream at a tick.
pub struct TickUpstream {
    pub name: Arc<str>,
    pub own: Totals,
    pub backends: Vec<TickBackend>,
}

pub struct TickBackend {
    pub address: Arc<str>,
    pub name: Option<Arc<str>>,
    pub totals: Totals,
    pub in_flight: u64,
    pub state: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(ok: u64, e5: u64, bucket: usize) -> Totals {
        let mut t = Totals::default();
        t.classes[1] = ok;
        t.classes[4] = e5;
        t.buckets[bucket] = ok + e5;
        t
    }

    fn tick(h: &History, t: u64, layout: Layout, a: Totals, b: Totals) {
        let up = TickUpstream {
            name: "api".into(),
            own: Totals::default(),
            backends: vec![
                TickBackend {
                    address: "a".into(),
                    name: None,
                    totals: a,
                    in_flight: 0,
                    state: 0,
                },
                TickBackend {
                    address: "b".into(),
                    name: None,
                    totals: b,
                    in_flight: 2,
                    state: 0,
                },
            ],
        };
        h.tick(t, layout, &[up]);
    }

    #[test]
    fn samples_are_differences_and_totals_add_up() {
        let h = History::default();
        let layout = Layout {
            keep_s: 3,
            backend_s: 1,
        };
        tick(&h, 100, layout, totals(10, 0, 3), totals(5, 1, 6));
        tick(&h, 101, layout, totals(15, 0, 3), totals(5, 3, 6));
        tick(&h, 102, layout, totals(20, 0, 3), totals(6, 3, 6));
        let store = h.store.lock().unwrap();
        let up = &store.series[&(Arc::from("api"), Arc::from(""))];
        let reqs: Vec<u64> = up.samples.iter().map(Sample::requests).collect();
        // Everything answered so far, then 5+2 and 5+1.
        assert_eq!(reqs, vec![16, 7, 6]);
        let b = &store.series[&(Arc::from("api"), Arc::from("b"))];
        assert_eq!(b.samples[1].classes[4], 2);
        assert_eq!(up.samples[2].in_flight, 2);
        drop(store);
        tick(&h, 104, layout, totals(20, 0, 3), totals(6, 3, 6));
        let store = h.store.lock().unwrap();
        let up = &store.series[&(Arc::from("api"), Arc::from(""))];
        assert_eq!(up.samples.front().unwrap().t, 101, "older than 3 s dropped");
    }

    #[test]
    fn coarse_backend_samples_under_a_small_budget() {
        let a = AnalyticsConfig {
            history: std::time::Duration::from_secs(3600),
            history_max_memory: 64 << 20,
            kafka: None,
        };
        let layout = Layout::new(&a, 10, 1000);
        assert!(layout.backend_s > 1, "{layout:?}");
        assert!(
            layout.bytes(10, 1000) <= 64 << 20,
            "{}",
            layout.bytes(10, 1000)
        );
        let small = Layout::new(&a, 1, 10);
        assert_eq!(small.backend_s, 1);
        let h = History::default();
        let layout = Layout {
            keep_s: 100,
            backend_s: 2,
        };
        for t in 0..6 {
            tick(&h, 1000 + t, layout, totals(10 * t, 0, 3), totals(0, 0, 3));
        }
        let store = h.store.lock().unwrap();
        let a = &store.series[&(Arc::from("api"), Arc::from("a"))];
        assert_eq!(a.samples.len(), 3);
        assert!(a.samples.iter().all(|s| s.seconds == 2));
        assert_eq!(a.samples.iter().map(Sample::requests).sum::<u64>(), 50);
    }

    #[test]
    fn a_new_budget_coarsens_the_history_and_keeps_it() {
        // Issue 28, item 2: crossing the memory threshold (more backends) used to wipe it.
        let h = History::default();
        let fine = Layout {
            keep_s: 100,
            backend_s: 1,
        };
        for t in 0..10 {
            tick(&h, 1000 + t, fine, totals(10 * t, 0, 3), totals(t, 0, 3));
        }
        let coarse = Layout {
            keep_s: 100,
            backend_s: 3,
        };
        for t in 10..12 {
            tick(&h, 1000 + t, coarse, totals(10 * t, 0, 3), totals(t, 0, 3));
        }
        let store = h.store.lock().unwrap();
        assert_eq!(store.first_t, 1000, "the record of the test is kept");
        assert_eq!(store.layout, Some(coarse));
        let up = &store.series[&(Arc::from("api"), Arc::from(""))];
        assert_eq!(up.samples.len(), 12, "upstream totals stay per second");
        assert_eq!(
            up.samples.iter().map(Sample::requests).sum::<u64>(),
            110 + 11
        );
        let a = &store.series[&(Arc::from("api"), Arc::from("a"))];
        assert_eq!(a.samples.front().unwrap().t, 1000);
        assert!(a.samples.iter().all(|s| s.seconds >= 3), "{:?}", a.samples);
        let kept: u64 = a.samples.iter().map(Sample::requests).sum::<u64>()
            + a.open.map_or(0, |s| s.requests());
        assert_eq!(kept, 110, "every answer still counted");
        let secs: u64 = a.samples.iter().map(|s| s.seconds as u64).sum::<u64>()
            + a.open.map_or(0, |s| s.seconds as u64);
        assert_eq!(secs, 12);
    }

    #[test]
    fn a_backend_removed_and_re_added_counts_on_in_its_series() {
        // Issue 28, item 11: the re-added backend's counters restart at 0; its series goes on
        // and counts them (it counted nothing until they passed the old totals).
        let h = History::default();
        let layout = Layout {
            keep_s: 100,
            backend_s: 1,
        };
        tick(&h, 100, layout, totals(50, 0, 3), totals(0, 0, 3));
        tick(&h, 101, layout, totals(7, 0, 3), totals(0, 0, 3));
        let store = h.store.lock().unwrap();
        let a = &store.series[&(Arc::from("api"), Arc::from("a"))];
        let reqs: Vec<u64> = a.samples.iter().map(Sample::requests).collect();
        assert_eq!(reqs, vec![50, 7]);
    }

    #[test]
    fn quantiles_come_from_merged_histograms() {
        let mut h = Histogram::default();
        // 90 answers in (1 ms, 2.5 ms], 10 in (100 ms, 250 ms].
        let mut fast = Sample::default();
        fast.latency[4] = 90;
        let mut slow = Sample::default();
        slow.latency[10] = 10;
        h.add(&fast);
        h.add(&slow);
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((1.0..=2.5).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((100.0..=250.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }
}

#[cfg(test)]
mod size {
    /// The README's memory figures are computed from this size.
    #[test]
    fn sample_size_is_as_documented() {
        assert_eq!(super::SAMPLE_BYTES, 112);
        let a = crate::config::AnalyticsConfig::default();
        let l = super::Layout::new(&a, 10, 1000);
        assert_eq!(
            l.backend_s, 7,
            "1,000 backends × 1 h within 64 MiB: 7-second samples"
        );
        assert_eq!(super::Layout::new(&a, 10, 100).backend_s, 1);
    }
}
