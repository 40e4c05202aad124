//! The live state of a running lb: [`Shared`] holds the one `ArcSwap<Snapshot>` every request
//! reads, the registry of per-backend state, the event timeline, the metrics, the access log and
//! the analytics record stream (timeline events go to it too).
//! It rebuilds the snapshot after health changes; config reloads (in [`crate::reload`]) swap in a
//! new one.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora_core::tls::sign::CertifiedKey;
use serde::Serialize;

use crate::config::Config;
use crate::observe::access_log::AccessLogger;
use crate::observe::metrics::Metrics;
use crate::observe::stream::Stream;
use crate::snapshot::Snapshot;
use crate::state::registry::{BackendKey, Draining, Registry};
use crate::tls::{CertSet, Resolver, SniResolver};
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

/// The outcome of the last reload attempt.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadResult {
    pub ok: bool,
    pub time_ms: u64,
    pub trigger: String,
    pub problems: Vec<String>,
    /// Warnings about the new file (as `--check` prints them), when it was applied.
    pub warnings: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub duration_ms: f64,
    #[serde(skip)]
    pub text_hash: u64,
    /// [`files_hash`] of the files the attempt read.
    #[serde(skip)]
    pub files_hash: u64,
}

/// The config file as loaded: its text's hash and when it was loaded (shown in `/status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadedConfig {
    pub hash: u64,
    /// [`files_hash`] of the certificates, keys and token file it was loaded with.
    pub files: u64,
    pub loaded_at_ms: u64,
}

/// Everything the request path, health checks and the admin API share.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    /// Per-second samples of every backend and upstream (`analytics.history`).
    pub history: crate::state::history::History,
    pub config_path: PathBuf,
    pub loaded: Mutex<LoadedConfig>,
    /// Serialises snapshot rebuilds (never taken by requests).
    pub(crate) rebuild: Mutex<()>,
    /// Serialises reloads from reading the file to recording the result, so concurrent triggers
    /// (file watch, SIGHUP, `POST /reload`) apply files in the order they were read: the last
    /// applied is the newest.
    pub(crate) reloading: Mutex<()>,
    pub last_reload: Mutex<Option<ReloadResult>>,
    events: Mutex<VecDeque<Event>>,
    /// Woken after each swap so the health supervisor can follow the new backend set.
    pub changed: tokio::sync::Notify,
    pub started: Instant,
    pub metrics: Metrics,
    /// Set at start-up from `server.access_log` (changing it needs a restart).
    pub access_log: Option<AccessLogger>,
    /// The analytics record stream, from `[analytics.kafka]` at start-up (changing it needs a
    /// restart); `None` without one.
    pub stream: Option<Arc<Stream>>,
    /// Backends removed by a reload, listed in `/status` as `draining` while requests remain.
    pub draining: Mutex<Vec<Draining>>,
    /// The certificate the admin listener presents (`[admin.tls]`); a reload swaps it.
    pub admin_cert: Arc<Resolver>,
    /// The certificates the HTTPS listeners choose from by SNI (`server.tls.certificates`); a
    /// reload swaps them.
    pub server_certs: Arc<SniResolver>,
}

impl Shared {
    /// Builds the first snapshot from an already validated config.
    pub fn new(config: Config, path: &Path, text_hash: u64) -> Arc<Shared> {
        let registry = Registry::default();
        let access_log = AccessLogger::start(&config.server.access_log);
        let metrics = Metrics::new();
        let stream = config.analytics.kafka.clone().map(|k| {
            let records = &metrics.analytics_records;
            let (sent, dropped) = (
                records.with_label_values(&["sent"]),
                records.with_label_values(&["dropped"]),
            );
            Arc::new(Stream::new(k, sent, dropped))
        });
        let admin_cert = Arc::new(Resolver::new(admin_cert(&config)));
        let server_certs = Arc::new(SniResolver::new(server_certs(&config)));
        let files = files_hash(&config);
        let snapshot = Snapshot::build(Arc::new(config), &registry);
        registry.finish_startup();
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            history: Default::default(),
            config_path: path.to_owned(),
            loaded: Mutex::new(LoadedConfig {
                hash: text_hash,
                files,
                loaded_at_ms: unix_ms(),
            }),
            rebuild: Mutex::new(()),
            reloading: Mutex::new(()),
            last_reload: Mutex::new(None),
            events: Mutex::new(VecDeque::with_capacity(EVENT_CAPACITY)),
            changed: tokio::sync::Notify::new(),
            started: Instant::now(),
            metrics,
            access_log,
            stream,
            draining: Mutex::new(Vec::new()),
            admin_cert,
            server_certs,
        })
    }

    /// Rebuilds the snapshot from the current config (after health or slow-start changes), so the
    /// balancers' schedules only hold usable backends.
    pub fn rebuild(&self) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let config = self.snapshot.load().config.clone();
        self.snapshot
            .store(Arc::new(Snapshot::build(config, &self.registry)));
    }

    /// Backends in the registry that the live snapshot no longer has (removed by a reload, or
    /// an address DNS no longer gives) become draining: never picked again, listed until their
    /// last request ends. Call with the rebuild lock held, after storing the snapshot.
    pub fn retire_missing(&self) {
        let snap = self.snapshot.load();
        let keys: std::collections::HashSet<BackendKey> = snap
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(move |b| BackendKey::new(u.name(), &b.address))
            })
            .collect();
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        // Re-added backends have fresh state in the registry; finished ones need no listing.
        draining.retain(|(k, s)| s.in_flight() > 0 && !keys.contains(k));
        for (key, gone) in self.registry.retain(&keys) {
            gone.set_draining();
            draining.push((key, gone));
        }
    }

    /// Rebuilds the snapshot and retires what it no longer has ([`retire_missing`]).
    ///
    /// [`retire_missing`]: Self::retire_missing
    pub fn rebuild_and_retire(&self) {
        let _g = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let config = self.snapshot.load().config.clone();
        self.snapshot
            .store(Arc::new(Snapshot::build(config, &self.registry)));
        self.retire_missing();
    }

    /// Records a timeline event (and logs nothing: callers log with their own level).
    pub fn event(&self, kind: &'static str, message: String) {
        self.event_about(kind, message, None, None);
    }

    /// [`event`](Self::event) about an upstream, or one of its backends: the analytics stream's
    /// record carries (and is keyed by) them.
    pub fn event_about(
        &self,
        kind: &'static str,
        message: String,
        upstream: Option<&str>,
        backend: Option<&str>,
    ) {
        if let Some(s) = &self.stream {
            s.event(kind, &message, upstream, backend);
        }
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if ev.len() == EVENT_CAPACITY {
            ev.pop_front();
        }
        ev.push_back(Event {
            time_ms: unix_ms(),
            kind,
            message,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
    /// Counts an answer lb gave before any routing (`lb_requests_total{upstream="",backend=""}`).
    pub fn record_own_answer(&self, code: u16, elapsed: Duration) {
        // The connection layer's own answers are to HTTP/1 clients (HTTP/2 frames requests itself).
        let http1 = crate::state::stats::ClientProtocol::Http1;
        self.snapshot.load().no_route.record(code, elapsed, http1);
    }

    /// The Prometheus page: current backends, and removed ones while requests remain on them.
    pub fn render_metrics(&self) -> String {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|(_, s)| s.in_flight() > 0);
        let dropped = self
            .access_log
            .as_ref()
            .map_or(0, |l| l.dropped.load(std::sync::atomic::Ordering::Relaxed));
        self.metrics
            .render(&self.snapshot.load(), &draining, dropped)
    }

    /// The configured graceful-stop budget.
    pub fn config_grace(&self) -> Duration {
        self.snapshot.load().config.server.grace_period
    }
}

/// A hash of the contents of `config`'s [`Config::watched_files`] (an unreadable file counts
/// as its error), so that the file watcher reloads when a certificate is renewed in place.
pub fn files_hash(config: &Config) -> u64 {
    let mut all = Vec::new();
    for path in config.watched_files() {
        all.extend_from_slice(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(bytes) => all.extend_from_slice(&bytes),
            Err(e) => all.extend_from_slice(e.to_string().as_bytes()),
        }
        all.push(0);
    }
    crate::util::hash::fnv1a64(&all)
}

/// The HTTPS listeners' certificates in `config` (none without `[server.tls]`).
pub fn server_certs(config: &Config) -> CertSet {
    config
        .server
        .tls
        .as_ref()
        .map_or_else(CertSet::default, |t| {
            CertSet::new(&t.certificates, t.reject_unknown_sni)
        })
}

/// The admin listener's certificate in `config`, if it serves HTTPS.
pub fn admin_cert(config: &Config) -> Option<Arc<CertifiedKey>> {
    let tls = config.admin.as_ref()?.tls.as_ref()?;
    Some(tls.key.clone())
}
