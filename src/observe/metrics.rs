//! Prometheus metrics (own registry, encoded by the admin listener's `GET /metrics`). Gauges that
//! mirror backend state (`lb_backend_up`, `lb_backend_in_flight`) are filled from the current
//! snapshot at scrape time, so the request path only touches counters and histograms.
//!
//! Every series whose labels are known in advance exists from the first scrape, at 0, so
//! `absent()` alerts work and `rate()` sees the first increment: reload results, per-upstream
//! retries, per-backend error kinds (a closed set), health-check results for health-checked
//! upstreams, and the duration histogram. Series whose labels are open (`code`) appear when first
//! seen. A removed backend's series stay while it drains and go at the first scrape after.

use std::collections::HashSet;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::snapshot::Snapshot;
use crate::state::backend::Health;
use crate::state::outcome::FailureKind;
use crate::state::registry::Draining;

const CHECK_RESULTS: [&str; 2] = ["success", "failure"];
/// `lb_mirror_requests_total`'s results.
pub const MIRROR_RESULTS: [&str; 3] = ["answered", "failed", "dropped"];
/// `lb_kafka_route_requests_total`'s results.
pub const KAFKA_ROUTE_RESULTS: [&str; 4] = ["accepted", "unavailable", "too_large", "refused"];

/// Every metric lb exports.
pub struct Metrics {
    registry: Registry,
    backend_up: IntGaugeVec,
    backend_in_flight: IntGaugeVec,
    pub upstream_errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub health_checks: IntCounterVec,
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    pub downstream_connections: IntGauge,
    access_log_dropped: prometheus::IntCounter,
    /// Admin listener requests by path and access decision; the admin listener creates the
    /// series of its known paths at start.
    pub admin_requests: IntCounterVec,
    dns_resolutions: IntCounterVec,
    /// `lb_analytics_records_total{result}`: its series exist only with `[analytics.kafka]`.
    pub analytics_records: IntCounterVec,
    /// `lb_mirror_requests_total{upstream, result}`: copies of `routes[i].mirror`.
    pub mirror_requests: IntCounterVec,
    /// `lb_kafka_route_requests_total{topic, result}`: requests of `kafka` routes.
    pub kafka_route_requests: IntCounterVec,
    /// `lb_kafka_route_ack_seconds{topic}`: from the send to the broker's acknowledgement.
    pub kafka_route_ack: prometheus::HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` (made with valid options, under a name of its own) in `registry`.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// The counters, as `(name, help, labels)`, in the order [`Metrics::new`] takes them.
const COUNTERS: [(&str, &str, &[&str]); 9] = [
    (
        "lb_upstream_errors_total",
        "Failed backend attempts by kind",
        &["upstream", "backend", "kind"],
    ),
    (
        "lb_retries_total",
        "Attempts retried on another backend",
        &["upstream"],
    ),
    (
        "lb_health_checks_total",
        "Active health checks by result",
        &["upstream", "backend", "result"],
    ),
    (
        "lb_config_reloads_total",
        "Config reloads by result",
        &["result"],
    ),
    (
        "lb_admin_requests_total",
        "Admin listener requests by path and result (allowed, unauthorized, forbidden, cross_site, bad_host)",
        &["path", "result"],
    ),
    (
        "lb_dns_resolutions_total",
        "DNS resolutions of discovered backend entries by result (ok, nxdomain, nodata, error)",
        &["upstream", "name", "result"],
    ),
    (
        "lb_analytics_records_total",
        "Analytics stream records by result: sent (acknowledged as analytics.kafka.acks says) or dropped (queue full, broker away)",
        &["result"],
    ),
    (
        "lb_mirror_requests_total",
        "Mirrored request copies by mirror upstream and result: answered (the mirror's answer arrived and was discarded), failed (connect or exchange error, never retried) or dropped (over max_in_flight or max_body_bytes, or the mirror fell behind the client's body)",
        &["upstream", "result"],
    ),
    (
        "lb_kafka_route_requests_total",
        "Requests of kafka routes by topic and result: accepted (202, the broker acknowledged the record), unavailable (503: producer queue full, broker away past the route's timeout), too_large (413: over max_bytes) or refused (405: a method the route does not take; 400/408: an unreadable or stalled body)",
        &["topic", "result"],
    ),
];

impl Metrics {
    /// Every metric, registered; the series known in advance exist at 0.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let [upstream_errors, retries, health_checks, reloads, admin_requests, dns_resolutions, analytics_records, mirror_requests, kafka_route_requests] =
            COUNTERS.map(|(name, help, labels)| {
                let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
                register(&registry, c)
            });
        for result in CHECK_RESULTS {
            reloads.with_label_values(&[result]);
        }
        let (backend_up, backend_in_flight) = Self::backend_gauges(&registry);
        let (last_reload_success, access_log_dropped, downstream_connections) =
            Self::process_metrics(&registry);
        Metrics {
            backend_up,
            backend_in_flight,
            upstream_errors,
            retries,
            health_checks,
            reloads,
            last_reload_success,
            downstream_connections,
            access_log_dropped,
            admin_requests,
            dns_resolutions,
            analytics_records,
            mirror_requests,
            kafka_route_requests,
            kafka_route_ack: Self::kafka_route_ack(&registry),
            registry,
        }
    }

    /// `lb_backend_up` and `lb_backend_in_flight` (filled at scrape time), and `lb_build_info`.
    fn backend_gauges(registry: &Registry) -> (IntGaugeVec, IntGaugeVec) {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(registry, g)
        };
        // `name`: the DNS entry a discovered backend (`backend` = ip:port) came from, else "".
        let backend_up = gauge(
            "lb_backend_up",
            "1 if the backend takes traffic (ejected or checking count as 0)",
            &["upstream", "backend", "name"],
        );
        let backend_in_flight = gauge(
            "lb_backend_in_flight",
            "Requests in flight to the backend",
            &["upstream", "backend", "name"],
        );
        let build = gauge("lb_build_info", "Build information", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        (backend_up, backend_in_flight)
    }

    /// The last successful load's time (set to now), dropped access log lines and open client
    /// connections.
    fn process_metrics(registry: &Registry) -> (Gauge, prometheus::IntCounter, IntGauge) {
        let last_reload_success = Gauge::new(
            "lb_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
        )
        .expect("valid metric");
        let last_reload_success = register(registry, last_reload_success);
        last_reload_success.set(crate::util::time::unix_ms() as f64 / 1000.0);
        let access_log_dropped = prometheus::IntCounter::new(
            "lb_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )
        .expect("valid metric");
        let downstream_connections =
            IntGauge::new("lb_downstream_connections", "Open client connections")
                .expect("valid metric");
        (
            last_reload_success,
            register(registry, access_log_dropped),
            register(registry, downstream_connections),
        )
    }

    /// `lb_kafka_route_ack_seconds{topic}`, on the request durations' buckets.
    fn kafka_route_ack(registry: &Registry) -> prometheus::HistogramVec {
        let opts = prometheus::HistogramOpts::new(
            "lb_kafka_route_ack_seconds",
            "Time from a kafka route's send to the broker's acknowledgement, by topic (accepted records only)",
        )
        .buckets(crate::state::stats::DURATION_BUCKETS.to_vec());
        let ack = prometheus::HistogramVec::new(opts, &["topic"]).expect("valid metric");
        register(registry, ack)
    }

    pub fn upstream_error(&self, upstream: &str, backend: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[upstream, backend, kind])
            .inc();
    }

    pub fn health_check(&self, upstream: &str, backend: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.health_checks
            .with_label_values(&[upstream, backend, result])
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            self.last_reload_success
                .set(crate::util::time::unix_ms() as f64 / 1000.0);
        }
    }

    /// Counts one resolution of a discovered entry.
    pub fn dns_resolution(&self, upstream: &str, name: &str, result: &str) {
        self.dns_resolutions
            .with_label_values(&[upstream, name, result])
            .inc();
    }

    /// The Prometheus text page, with state gauges refreshed from `snapshot`. `draining` lists
    /// removed backends that still have requests in flight.
    /// The Prometheus page. `access_log_dropped` is the access log's running count of dropped
    /// lines (it lives with the writer).
    pub fn render(
        &self,
        snapshot: &Snapshot,
        draining: &[Draining],
        access_log_dropped: u64,
    ) -> String {
        let seen = self.access_log_dropped.get();
        self.access_log_dropped
            .inc_by(access_log_dropped.saturating_sub(seen));
        let ports: Vec<u16> = snapshot
            .config
            .server
            .listen
            .iter()
            .map(|a| a.port())
            .collect();
        self.downstream_connections
            .set(established_connections(&ports));
        self.sync_series(snapshot, draining);
        self.backend_up.reset();
        self.backend_in_flight.reset();
        for up in &snapshot.upstreams {
            for b in &up.backends {
                let labels = [
                    up.name(),
                    b.address.as_str(),
                    b.name.as_deref().unwrap_or(""),
                ];
                self.backend_up
                    .with_label_values(&labels)
                    .set((b.state.state() == Health::Up) as i64);
                self.backend_in_flight
                    .with_label_values(&labels)
                    .set(b.state.in_flight() as i64);
            }
        }
        for (key, state) in draining {
            let labels = [key.upstream.as_str(), key.address.as_str(), ""];
            self.backend_up.with_label_values(&labels).set(0);
            self.backend_in_flight
                .with_label_values(&labels)
                .set(state.in_flight() as i64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        let mut series: Vec<(&str, &str, &crate::state::stats::RequestStats)> =
            vec![("", "", &snapshot.no_route)];
        for up in &snapshot.upstreams {
            series.push((up.name(), "", &up.state.own));
            for b in &up.backends {
                series.push((up.name(), &b.address, &b.state.stats));
            }
        }
        for (label, stats) in &snapshot.kafka_stats {
            series.push((label, "", stats));
        }
        for (key, state) in draining {
            series.push((&key.upstream, &key.address, &state.stats));
        }
        crate::state::stats::render(&mut text, &series);
        render_limits(&mut text, snapshot);
        render_faults(&mut text, snapshot);
        text
    }

    /// Creates, at 0, every labelled series of the current upstreams and backends, and removes
    /// those of upstreams and backends that are neither configured nor draining.
    fn sync_series(&self, snapshot: &Snapshot, draining: &[Draining]) {
        let mut upstreams: HashSet<&str> = HashSet::new();
        let mut backends: HashSet<(&str, &str)> = HashSet::new();
        for up in &snapshot.upstreams {
            upstreams.insert(up.name());
            self.retries.with_label_values(&[up.name()]);
            for b in &up.backends {
                backends.insert((up.name(), &b.address));
                for kind in FailureKind::ALL {
                    self.upstream_errors
                        .with_label_values(&[up.name(), &b.address, kind.as_str()]);
                }
                if up.config.health_check.is_some() {
                    for result in CHECK_RESULTS {
                        self.health_checks
                            .with_label_values(&[up.name(), &b.address, result]);
                    }
                }
            }
        }
        for m in snapshot
            .config
            .routes
            .iter()
            .filter_map(|r| r.mirror.as_ref())
        {
            for result in MIRROR_RESULTS {
                self.mirror_requests
                    .with_label_values(&[m.upstream.as_str(), result]);
            }
        }
        for r in &snapshot.config.routes {
            if let crate::config::RouteTarget::Kafka(k) = &r.target {
                self.kafka_route_ack.with_label_values(&[k.topic.as_str()]);
                for result in KAFKA_ROUTE_RESULTS {
                    self.kafka_route_requests
                        .with_label_values(&[k.topic.as_str(), result]);
                }
            }
        }
        for (key, _) in draining {
            upstreams.insert(&key.upstream);
            backends.insert((&key.upstream, &key.address));
        }
        for labels in label_values(&self.retries, &["upstream"]) {
            if !upstreams.contains(labels[0].as_str()) {
                let _ = self.retries.remove_label_values(&[&labels[0]]);
            }
        }
        for (vec, last) in [
            (&self.upstream_errors, "kind"),
            (&self.health_checks, "result"),
        ] {
            for l in label_values(vec, &["upstream", "backend", last]) {
                if !backends.contains(&(l[0].as_str(), l[1].as_str())) {
                    let _ = vec.remove_label_values(&[&l[0], &l[1], &l[2]]);
                }
            }
        }
    }
}

/// `lb_rate_limit_requests_total{limit, result}` and `lb_rate_limit_keys{limit}` of the
/// configured `[rate_limits]` (counted by their tables, which reloads keep).
fn render_limits(text: &mut String, snapshot: &Snapshot) {
    use crate::state::limit::RESULTS;
    use std::fmt::Write;
    if snapshot.limits.is_empty() {
        return;
    }
    text.push_str(
        "# HELP lb_rate_limit_requests_total Requests checked by a rate limit, by result (passed, \
         delayed, rejected; with dry_run: delayed_dry_run, rejected_dry_run)\n\
         # TYPE lb_rate_limit_requests_total counter\n",
    );
    for l in &snapshot.limits {
        let counts = l.table.counts();
        for (result, n) in RESULTS.iter().zip(counts) {
            let _ = writeln!(
                text,
                "lb_rate_limit_requests_total{{limit=\"{}\",result=\"{result}\"}} {n}",
                l.config.name
            );
        }
    }
    text.push_str(
        "# HELP lb_rate_limit_keys Keys a rate limit remembers now (at most its max_keys)\n\
         # TYPE lb_rate_limit_keys gauge\n",
    );
    for l in &snapshot.limits {
        let _ = writeln!(
            text,
            "lb_rate_limit_keys{{limit=\"{}\"}} {}",
            l.config.name,
            l.table.len()
        );
    }
}

/// `lb_faults_injected_total{kind, route}` of the routes with a `fault` (both kinds from the
/// first scrape, at 0; counted in the registry, which reloads keep).
fn render_faults(text: &mut String, snapshot: &Snapshot) {
    use std::fmt::Write;
    if snapshot.faults.is_empty() {
        return;
    }
    text.push_str(
        "# HELP lb_faults_injected_total Faults injected by routes' `fault`, by kind (delay, abort)\n\
         # TYPE lb_faults_injected_total counter\n",
    );
    for (route, counts) in &snapshot.faults {
        let route = route.replace('\\', "\\\\").replace('"', "\\\"");
        for (kind, n) in counts.counts() {
            let _ = writeln!(
                text,
                "lb_faults_injected_total{{kind=\"{kind}\",route=\"{route}\"}} {n}"
            );
        }
    }
}

/// The values of `names`, in that order, of every series `metric` holds.
fn label_values(metric: &impl Collector, names: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for family in metric.collect() {
        for m in family.get_metric() {
            let value = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map_or(String::new(), |l| l.value().to_string())
            };
            out.push(names.iter().map(|n| value(n)).collect());
        }
    }
    out
}

/// Open client connections on lb's listening ports, read from the kernel's socket table at scrape
/// time (pingora has no connection open/close hook, and counting here keeps the request path
/// free of it). Includes connections waiting in the accept queue.
pub fn established_connections(ports: &[u16]) -> i64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let mut cols = line.split_whitespace().skip(1);
                    let (Some(local), Some(_), Some(state)) =
                        (cols.next(), cols.next(), cols.next())
                    else {
                        return false;
                    };
                    let port = local
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    state == "01" && port.is_some_and(|p| ports.contains(&p))
                })
                .count() as i64
        })
        .sum()
}
