//! Micro-benchmarks of backend choice: `Balancer::pick` for each unkeyed strategy and the round-robin
//! schedule build (`smooth_schedule`).
//!
//! Groups (all times are per pick unless noted):
//! * `pick/single` — one thread, every backend up and idle, 2 / 100 / 1,000 / 10,000 backends.
//! * `pick/contended4` — 4 threads pick from the same balancer at once (they share its cursor
//!   atomic). Measured with `iter_custom` as the *CPU time per pick* averaged over the threads
//!   (`CLOCK_THREAD_CPUTIME_ID`), so it is comparable with `pick/single` even though this machine
//!   has fewer cores than threads (wall time would count time spent descheduled).
//! * `pick/down90` — 1,000 backends, 90 % `Down`: `spread` (every 10th up) or `clustered` (one
//!   contiguous block of 900 down). `rr-stale` uses a schedule built while all were up (the state
//!   between a health change and the next snapshot rebuild); `rr-rebuilt` one built over the usable
//!   backends only.
//! * `pick/lc_loaded` — least_connections when backends hold in-flight requests (`InFlightGuard`s):
//!   `all-busy` (every backend has 1–3 in flight: the scan cannot stop early and visits all of
//!   them) and `half-busy` (every other backend idle).
//! * `schedule` — building the round-robin period for 1,000 and 10,000 equal-weight backends and
//!   for 1,000 mixed weights (per build, not per pick).
//!
//! Run: `cargo bench --bench balance` (about a minute; measurement times are set short below),
//! or add `-- --quick`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb::balance::{smooth_schedule, Balancer, Candidate, WEIGHT_SCALE};
use lb::config::Strategy;
use lb::state::backend::{BackendState, Health, InFlightGuard, UpstreamState};

const SIZES: [usize; 4] = [2, 100, 1_000, 10_000];
const STRATEGIES: [(Strategy, &str); 4] = [
    (Strategy::RoundRobin, "rr"),
    (Strategy::LeastConnections, "lc"),
    (Strategy::Random, "random"),
    (Strategy::TwoChoices, "two"),
];
const CONTENDING_THREADS: usize = 4;

/// The smallest `Candidate`: shared state plus a fixed weight.
struct Backend {
    state: Arc<BackendState>,
    weight: u32,
}

impl Candidate for Backend {
    fn state(&self) -> &Arc<BackendState> {
        &self.state
    }
    fn weight(&self) -> u64 {
        self.weight as u64 * WEIGHT_SCALE
    }
}

fn pool(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|_| Backend {
            state: Arc::new(BackendState::new(Health::Up)),
            weight: 1,
        })
        .collect()
}

fn balancer(strategy: Strategy, backends: &[Backend]) -> Balancer {
    Balancer::new(strategy, backends, Arc::new(UpstreamState::default()))
}

#[inline]
fn pick(lb: &Balancer, backends: &[Backend]) -> Option<usize> {
    lb.pick(black_box(backends), |_| false)
}

fn bench_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick/single");
    for (strategy, name) in STRATEGIES {
        for n in SIZES {
            let backends = pool(n);
            let lb = balancer(strategy, &backends);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| pick(&lb, &backends))
            });
        }
    }
    g.finish();
}

/// CPU time consumed so far by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `iters` picks on each of `CONTENDING_THREADS` threads started together; returns the mean
/// per-thread CPU time, so criterion reports CPU time per pick under contention.
fn contended(lb: &Balancer, backends: &[Backend], iters: u64) -> Duration {
    let start = Barrier::new(CONTENDING_THREADS);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONTENDING_THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t0 = thread_cpu_time();
                    for _ in 0..iters {
                        black_box(pick(lb, backends));
                    }
                    thread_cpu_time() - t0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total / CONTENDING_THREADS as u32
}

fn bench_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick/contended4");
    for (strategy, name) in STRATEGIES {
        for n in SIZES {
            let backends = pool(n);
            let lb = balancer(strategy, &backends);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| contended(&lb, &backends, iters))
            });
        }
    }
    g.finish();
}

/// Marks 90 % of `backends` down: every backend but each 10th (`spread`), or the first 900 of
/// every 1,000 (`clustered`, the worst case for a linear scan).
fn take_down_90(backends: &[Backend], clustered: bool) {
    for (i, b) in backends.iter().enumerate() {
        let down = if clustered {
            i % 1000 < 900
        } else {
            i % 10 != 0
        };
        if down {
            b.state.set_state(Health::Down);
        }
    }
}

fn bench_down(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick/down90");
    const N: usize = 1_000;
    for (layout, clustered) in [("spread", false), ("clustered", true)] {
        let backends = pool(N);
        let stale = balancer(Strategy::RoundRobin, &backends);
        take_down_90(&backends, clustered);
        let rebuilt = balancer(Strategy::RoundRobin, &backends);
        let lc = balancer(Strategy::LeastConnections, &backends);
        for (name, lb) in [("rr-stale", &stale), ("rr-rebuilt", &rebuilt), ("lc", &lc)] {
            g.bench_function(BenchmarkId::new(name, format!("{layout}/{N}")), |b| {
                b.iter(|| pick(lb, &backends))
            });
        }
    }
    g.finish();
}

/// Holds 1–3 in-flight guards on every backend (`every` = 1) or on every other one (`every` = 2).
fn load(backends: &[Backend], every: usize) -> Vec<InFlightGuard> {
    backends
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .flat_map(|(i, b)| (0..1 + i % 3).map(|_| InFlightGuard::new(&b.state)))
        .collect()
}

fn bench_lc_loaded(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick/lc_loaded");
    let cases = [
        ("all-busy", 1, 100),
        ("all-busy", 1, 1_000),
        ("all-busy", 1, 10_000),
        ("half-busy", 2, 1_000),
    ];
    for (name, every, n) in cases {
        let backends = pool(n);
        let _guards = load(&backends, every);
        let lb = balancer(Strategy::LeastConnections, &backends);
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| pick(&lb, &backends))
        });
    }
    g.finish();
}

fn bench_schedule(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule");
    for n in [1_000, 10_000] {
        let weights = vec![1u32; n];
        let usable = vec![true; n];
        g.bench_with_input(BenchmarkId::new("equal", n), &n, |b, _| {
            b.iter(|| smooth_schedule(black_box(&weights), black_box(&usable)))
        });
    }
    // Mixed weights 1..=5: period 3,000 over 1,000 backends, still the exact NGINX simulation.
    let weights: Vec<u32> = (0..1_000).map(|i| 1 + (i % 5) as u32).collect();
    let usable = vec![true; weights.len()];
    g.bench_with_input(BenchmarkId::new("weights1-5", 1_000), &1_000, |b, _| {
        b.iter(|| smooth_schedule(black_box(&weights), black_box(&usable)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_single, bench_contended, bench_down, bench_lc_loaded, bench_schedule
}
criterion_main!(benches);
