//! The live state of a running lb, as handles a task takes in its constructor: [`Live`] (the one
//! `ArcSwap<Snapshot>` every request reads, the registry of per-backend state it is rebuilt
//! from, the draining backends), [`Events`] (the timeline; its events also go to the analytics
//! record stream) and the metrics. [`Handles`] is the set a task that changes backends takes
//! (health checks, DNS discovery); [`Shared`] holds every handle, with what the request path,
//! reloads and the admin listener read besides (access log, record stream, certificates, the
//! loaded config's identity). Config reloads (in [`crate::reload`]) swap in new snapshots.

mod events;
mod live;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora_core::tls::sign::CertifiedKey;
use serde::Serialize;

pub use events::{Event, Events, EVENT_CAPACITY};
pub use live::Live;

use crate::config::Config;
use crate::observe::access_log::AccessLogger;
use crate::observe::metrics::Metrics;
use crate::observe::stream::Stream;
use crate::snapshot::Snapshot;
use crate::tls::{CertSet, Resolver, SniResolver};
use crate::util::time::unix_ms;

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

/// The config file lb runs: its path, what was loaded from it and the last reload attempt
/// (read by `/status`, written by reloads).
pub struct ConfigFile {
    pub path: PathBuf,
    pub loaded: Mutex<LoadedConfig>,
    /// Serialises reloads from reading the file to recording the result, so concurrent triggers
    /// (file watch, SIGHUP, `POST /reload`) apply files in the order they were read: the last
    /// applied is the newest.
    pub(crate) reloading: Mutex<()>,
    pub last_reload: Mutex<Option<ReloadResult>>,
}

/// What a task that changes which backends take requests holds (health checks, DNS
/// discovery): the live snapshot and its registry, the timeline, the metrics.
#[derive(Clone)]
pub struct Handles {
    pub live: Arc<Live>,
    pub events: Arc<Events>,
    pub metrics: Arc<Metrics>,
}

/// Every handle, and what the request path, reloads and the admin listener read besides.
pub struct Shared {
    /// What a request loads, once: the same swap as `live.snapshot`.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub live: Arc<Live>,
    pub events: Arc<Events>,
    pub file: Arc<ConfigFile>,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    /// Set at start-up from `server.access_log` (changing it needs a restart).
    pub access_log: Option<AccessLogger>,
    /// The analytics record stream, from `[analytics.kafka]` at start-up (changing it needs a
    /// restart); `None` without one.
    pub stream: Option<Arc<Stream>>,
    /// The certificate the admin listener presents (`[admin.tls]`); a reload swaps it.
    pub admin_cert: Arc<Resolver>,
    /// The certificates the HTTPS listeners choose from by SNI (`server.tls.certificates`); a
    /// reload swaps them.
    pub server_certs: Arc<SniResolver>,
}

impl Shared {
    /// Builds the first snapshot from an already validated config.
    pub fn new(config: Config, path: &Path, text_hash: u64) -> Arc<Shared> {
        let access_log = AccessLogger::start(&config.server.access_log);
        let metrics = Arc::new(Metrics::new());
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
        let live = Arc::new(Live::new(config));
        Arc::new(Shared {
            snapshot: live.snapshot.clone(),
            live,
            events: Arc::new(Events::new(stream.clone())),
            file: Arc::new(ConfigFile {
                path: path.to_owned(),
                loaded: Mutex::new(LoadedConfig {
                    hash: text_hash,
                    files,
                    loaded_at_ms: unix_ms(),
                }),
                reloading: Mutex::new(()),
                last_reload: Mutex::new(None),
            }),
            started: Instant::now(),
            metrics,
            access_log,
            stream,
            admin_cert,
            server_certs,
        })
    }

    /// The handles of a task that changes backends.
    pub fn handles(&self) -> Handles {
        Handles {
            live: self.live.clone(),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Counts an answer lb gave before any routing (`lb_requests_total{upstream="",backend=""}`).
    pub fn record_own_answer(&self, code: u16, elapsed: Duration) {
        // The connection layer's own answers are to HTTP/1 clients (HTTP/2 frames requests itself).
        let http1 = crate::state::stats::ClientProtocol::Http1;
        self.snapshot.load().no_route.record(code, elapsed, http1);
    }

    /// The Prometheus page: current backends, and removed ones while requests remain on them.
    pub fn render_metrics(&self) -> String {
        let draining = self.live.draining();
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
