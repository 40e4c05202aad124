//! Config reloads (file watch, SIGHUP, `POST /reload`) of the running lb: a [`Reloader`] holds
//! the handles a reload reads and changes.
//!
//! A reload parses and validates the whole file first; on any problem nothing changes. A valid
//! config becomes one new [`Snapshot`] swapped in atomically. Backend state lives in the
//! [`Registry`](crate::state::registry::Registry) keyed by `(upstream, address)`, so every backend still present keeps its health,
//! ejection, in-flight count and slow-start progress. Removed backends are marked `draining`: they
//! get no new requests and finish the ones they have.
//!
//! A `server.tls.certificates` entry that no longer loads (a renewal gone wrong) does not fail the
//! reload while another certificate is usable: the certificate it had keeps serving, while it is
//! valid, and a warning says so.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, Config, Problem};
use crate::observe::metrics::Metrics;
use crate::runtime::{
    admin_cert, files_hash, server_certs, ConfigFile, Events, Live, LoadedConfig, ReloadResult,
    Shared,
};
use crate::snapshot::Snapshot;
use crate::state::backend::Health;
use crate::state::registry::BackendKey;
use crate::tls::{Resolver, SniResolver};
use crate::util::time::unix_ms;

/// What a reload reads and changes: the config file's record, the live snapshot and its
/// registry, the timeline, the metrics and the certificates it swaps. Cheap to clone (handles).
#[derive(Clone)]
pub struct Reloader {
    file: Arc<ConfigFile>,
    live: Arc<Live>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    admin_cert: Arc<Resolver>,
    server_certs: Arc<SniResolver>,
}

impl Reloader {
    /// The reloader of `shared`'s config file.
    pub fn new(shared: &Shared) -> Reloader {
        Reloader {
            file: shared.file.clone(),
            live: shared.live.clone(),
            events: shared.events.clone(),
            metrics: shared.metrics.clone(),
            admin_cert: shared.admin_cert.clone(),
            server_certs: shared.server_certs.clone(),
        }
    }

    /// Reloads only when the file's text differs from what is loaded (file-watch events are
    /// noisy: editors write several times, directories see unrelated files).
    pub fn reload_if_changed(&self, trigger: &str) -> Option<ReloadResult> {
        let _g = self
            .file
            .reloading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.file.path).ok()?;
        let current = {
            let loaded = self.file.loaded.lock().unwrap_or_else(|e| e.into_inner());
            (loaded.hash, loaded.files)
        };
        let last_failed = self
            .file
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| (r.ok, (r.text_hash, r.files_hash)));
        let h = hash_text(&text);
        // Certificates and keys renewed in place change no config text.
        let files = files_hash(&self.live.snapshot.load().config);
        if last_failed == Some((false, (h, files))) {
            return None;
        }
        if (h, files) == current {
            // Back to the running config after a failed attempt (the file was fixed by undoing
            // the edit): nothing to apply, but the attempt succeeded and `/status` says so.
            if last_failed.is_some_and(|(ok, _)| !ok) {
                return Some(self.record_unchanged(trigger, h, files));
            }
            return None;
        }
        Some(self.reload_locked(trigger))
    }

    /// Records a successful attempt that found the running config: nothing added or removed.
    fn record_unchanged(&self, trigger: &str, text_hash: u64, files_hash: u64) -> ReloadResult {
        let result = ReloadResult {
            ok: true,
            time_ms: unix_ms(),
            trigger: trigger.to_string(),
            text_hash,
            files_hash,
            ..Default::default()
        };
        tracing::info!(
            trigger,
            "config file is the running config again; nothing to apply"
        );
        self.events.record(
            "reload",
            format!("config file is the running config again ({trigger}); nothing changed"),
        );
        self.metrics.reload(true);
        *self
            .file
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(result.clone());
        result
    }

    /// Reads the config file again and applies it if valid.
    pub fn reload(&self, trigger: &str) -> ReloadResult {
        let _g = self
            .file
            .reloading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.reload_locked(trigger)
    }

    /// [`Reloader::reload`] with the `reloading` lock held.
    fn reload_locked(&self, trigger: &str) -> ReloadResult {
        let started = Instant::now();
        let text = std::fs::read_to_string(&self.file.path);
        let parsed = match &text {
            Ok(t) => config::parse(t),
            Err(e) => Err(vec![Problem {
                path: String::new(),
                message: format!("cannot read file: {e}"),
            }]),
        };
        let mut result = ReloadResult {
            text_hash: text.as_deref().map(hash_text).unwrap_or_default(),
            trigger: trigger.to_string(),
            time_ms: unix_ms(),
            ..Default::default()
        };
        result.files_hash = match &parsed {
            Ok(new) => files_hash(new),
            Err(_) => files_hash(&self.live.snapshot.load().config),
        };
        match parsed {
            Err(problems) => {
                let file = self.file.path.display();
                result.problems = problems.iter().map(|p| format!("{file}: {p}")).collect();
                tracing::error!(trigger, problems = ?result.problems, "config rejected; keeping the running config");
                self.events.record(
                    "reload_rejected",
                    format!(
                        "config rejected ({trigger}): {}",
                        result.problems.join("; ")
                    ),
                );
                self.metrics.reload(false);
            }
            Ok(new) => {
                let hash = text.as_deref().map(hash_text).unwrap_or_default();
                result.warnings = new.warning_lines(&self.file.path);
                for w in &result.warnings {
                    tracing::warn!(trigger, "{w}");
                }
                self.apply(new, &mut result);
                *self.file.loaded.lock().unwrap_or_else(|e| e.into_inner()) = LoadedConfig {
                    hash,
                    files: result.files_hash,
                    loaded_at_ms: unix_ms(),
                };
                result.ok = true;
                self.metrics.reload(true);
            }
        }
        result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        *self
            .file
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(result.clone());
        result
    }

    fn apply(&self, mut new: Config, result: &mut ReloadResult) {
        let _g = self.live.lock_rebuilds();
        let old = self.live.snapshot.load().config.clone();
        result.needs_restart = restart_only_changes(&old, &new);
        keep_restart_only(&old, &mut new);
        let now = unix_ms() as i64 / 1000;
        for w in keep_running_certificates(&old, &mut new, now) {
            let line = format!(
                "{}: {}: warning: {}",
                self.file.path.display(),
                w.path,
                w.message
            );
            tracing::warn!(trigger = result.trigger, "{line}");
            result.warnings.push(line);
        }
        let keys = |c: &Config| -> HashSet<BackendKey> {
            c.upstreams
                .iter()
                .flat_map(|u| {
                    u.backends
                        .iter()
                        .map(move |b| BackendKey::new(&u.name, &b.address))
                })
                .collect()
        };
        let (old_keys, new_keys) = (keys(&old), keys(&new));
        result.added = diff(&new_keys, &old_keys);
        result.removed = diff(&old_keys, &new_keys);
        let freed = self.release_unchecked(&new);
        let mut upstreams: HashSet<String> = new.upstreams.iter().map(|u| u.name.clone()).collect();
        // The request counts of `kafka` routes are kept under `kafka:TOPIC` too.
        upstreams.extend(new.routes.iter().filter_map(|r| match &r.target {
            crate::config::RouteTarget::Kafka(k) => Some(format!("kafka:{}", k.topic)),
            _ => None,
        }));
        // Before the snapshot: a request that sees the new config's token also sees its certificate.
        self.admin_cert.store(admin_cert(&new));
        self.server_certs.store(server_certs(&new));
        let discovered = |u: &str, e: &str| {
            new.upstreams
                .iter()
                .any(|c| c.name == u && c.backends.iter().any(|b| b.address == e))
        };
        self.live.registry.discovered.retain(discovered);
        let snapshot = Snapshot::build(Arc::new(new), &self.live.registry);
        self.live.snapshot.store(Arc::new(snapshot));
        self.live.registry.retain_upstreams(&upstreams);
        for (upstream, backend, msg) in freed {
            tracing::info!("{msg}");
            self.events
                .record_about("backend", msg, Some(&upstream), Some(&backend));
        }
        self.live.retire_missing();
        let msg = format!(
            "config reloaded ({}): {} backend(s) added, {} removed{}",
            result.trigger,
            result.added.len(),
            result.removed.len(),
            if result.needs_restart.is_empty() {
                String::new()
            } else {
                format!("; needs a restart: {}", result.needs_restart.join(", "))
            }
        );
        tracing::info!(added = ?result.added, removed = ?result.removed, needs_restart = ?result.needs_restart, "{msg}");
        self.events.record("reload", msg);
        self.live.changed.notify_waiters();
    }

    /// Backends that only an active check kept out (`down`, or `checking`) in upstreams that no
    /// longer have one: nothing would ever bring them back, so they serve again (passive ejection
    /// still applies). Returns (upstream, backend, message) per backend, for the timeline.
    fn release_unchecked(&self, new: &Config) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for u in new.upstreams.iter().filter(|u| u.health_check.is_none()) {
            for b in &u.backends {
                let Some(state) = self.live.registry.get(&u.name, &b.address) else {
                    continue;
                };
                for from in [Health::Down, Health::Checking] {
                    if state.state_cas(from, Health::Up).is_ok() {
                        let msg = format!(
                            "{}/{}: {} -> up (active health check removed)",
                            u.name,
                            b.address,
                            from.as_str()
                        );
                        out.push((u.name.clone(), b.address.clone(), msg));
                    }
                }
            }
        }
        out
    }
}

/// Watches the config file's directory (so write-and-rename editors and Kubernetes ConfigMap
/// symlink swaps are seen) and reloads after a burst of events settles, when the text changed.
pub async fn watch_file(reloader: Reloader) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = match reloader.file.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the config file ({e}); use SIGHUP or POST /reload");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), "cannot watch the config directory ({e}); use SIGHUP or POST /reload");
        return;
    }
    let mut watched = vec![dir];
    loop {
        // Certificates, keys and the token file may live elsewhere; a reload may move them.
        for file in reloader.live.snapshot.load().config.watched_files() {
            let Some(d) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
                continue;
            };
            if !watched.iter().any(|w| w == d) {
                match watcher.watch(d, RecursiveMode::NonRecursive) {
                    Ok(()) => watched.push(d.to_owned()),
                    Err(e) => {
                        tracing::warn!(dir = %d.display(), "cannot watch ({e}); changes to {} need SIGHUP or POST /reload", file.display())
                    }
                }
            }
        }
        if rx.recv().await.is_none() {
            break;
        }
        // Debounce: wait until no event arrived for DEBOUNCE.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload_if_changed("file")).await;
    }
}

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Reloads on every SIGHUP.
pub async fn on_sighup(reloader: Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    while hup.recv().await.is_some() {
        let r = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || r.reload("sighup")).await;
    }
}

fn diff(a: &HashSet<BackendKey>, b: &HashSet<BackendKey>) -> Vec<String> {
    let mut v: Vec<String> = a.difference(b).map(BackendKey::to_string).collect();
    v.sort();
    v
}

/// A setting only a restart changes (it is read once, at start-up): its key, whether two configs
/// differ in it, and how the running value is carried into a new config.
struct RestartOnly {
    key: &'static str,
    changed: fn(&Config, &Config) -> bool,
    keep: fn(&Config, &mut Config),
}

/// A restart-only setting at a plain path of the config: one line declares it.
macro_rules! restart_only {
    ($key:literal, $($path:ident).+) => {
        RestartOnly {
            key: $key,
            changed: |o, n| o.$($path).+ != n.$($path).+,
            keep: |o, n| n.$($path).+ = o.$($path).+.clone(),
        }
    };
}

/// A field of `[server.tls]` when both configs have the table (adding or removing it is the
/// `server.tls` entry).
macro_rules! tls_field {
    ($key:literal, $field:ident) => {
        RestartOnly {
            key: $key,
            changed: |o, n| {
                matches!((&o.server.tls, &n.server.tls), (Some(o), Some(n)) if o.$field != n.$field)
            },
            keep: |o, n| {
                if let (Some(o), Some(n)) = (&o.server.tls, &mut n.server.tls) {
                    n.$field = o.$field.clone();
                }
            },
        }
    };
}

/// Every restart-only setting, declared once: reloads report the ones a new config changes
/// ([`restart_only_changes`]) and keep their running values ([`keep_restart_only`]).
const RESTART_ONLY: &[RestartOnly] = &[
    restart_only!("server.listen", server.listen),
    restart_only!("server.listen.proxy_protocol", server.proxy_protocol),
    restart_only!("server.threads", server.threads),
    restart_only!("server.grace_period", server.grace_period),
    restart_only!("server.work_stealing", server.work_stealing),
    restart_only!(
        "server.upstream_keepalive_pool_size",
        server.upstream_keepalive_pool_size
    ),
    restart_only!("server.log", server.log),
    restart_only!("server.access_log", server.access_log),
    restart_only!("server.h2c", server.h2c),
    // HTTPS listeners and their protocol settings are fixed at start; certificates apply at
    // once. Adding or removing `[server.tls]` needs a restart: the running one stays.
    RestartOnly {
        key: "server.tls",
        changed: |o, n| o.server.tls.is_some() != n.server.tls.is_some(),
        keep: |o, n| {
            if o.server.tls.is_some() != n.server.tls.is_some() {
                n.server.tls = o.server.tls.clone();
            }
        },
    },
    tls_field!("server.tls.listen", listen),
    tls_field!("server.tls.listen.proxy_protocol", proxy_protocol),
    tls_field!("server.tls.http2", http2),
    tls_field!("server.tls.min_version", min_version),
    // The admin listener's address and whether it speaks TLS are fixed at start; its token,
    // public paths, allow-list and certificate apply at once.
    RestartOnly {
        key: "admin",
        changed: |o, n| o.admin.is_some() != n.admin.is_some(),
        keep: |o, n| {
            if o.admin.is_some() != n.admin.is_some() {
                n.admin = o.admin.clone();
            }
        },
    },
    RestartOnly {
        key: "admin.listen",
        changed: |o, n| matches!((&o.admin, &n.admin), (Some(o), Some(n)) if o.listen != n.listen),
        keep: |o, n| {
            if let (Some(o), Some(n)) = (&o.admin, &mut n.admin) {
                n.listen = o.listen;
            }
        },
    },
    RestartOnly {
        key: "admin.tls",
        changed: |o, n| matches!((&o.admin, &n.admin), (Some(o), Some(n)) if o.tls.is_some() != n.tls.is_some()),
        keep: |o, n| {
            if let (Some(o), Some(n)) = (&o.admin, &mut n.admin) {
                if o.tls.is_some() != n.tls.is_some() {
                    n.tls = o.tls.clone();
                }
            }
        },
    },
    // The record stream and its producer are made at start.
    restart_only!("analytics.kafka", analytics.kafka),
];

/// The restart-only settings `new` changes.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    RESTART_ONLY
        .iter()
        .filter(|s| (s.changed)(old, new))
        .map(|s| s.key.to_string())
        .collect()
}

/// Carries the running values of restart-only settings into `new`, so the live config (and
/// everything that reads it) only ever shows what is applied.
fn keep_restart_only(old: &Config, new: &mut Config) {
    for s in RESTART_ONLY {
        (s.keep)(old, new);
    }
}

/// Entries of `server.tls.certificates` that no longer load keep the certificate the running
/// config has from the same files while it is still valid at `now` (Unix seconds), in their place
/// in the list. Returns a warning per entry kept.
fn keep_running_certificates(old: &Config, new: &mut Config, now: i64) -> Vec<Problem> {
    let (Some(o), Some(n)) = (&old.server.tls, &mut new.server.tls) else {
        return Vec::new();
    };
    let (mut warnings, mut still_skipped) = (Vec::new(), Vec::new());
    for s in std::mem::take(&mut n.skipped) {
        let running = o
            .certificates
            .iter()
            .find(|c| c.cert_path == s.cert_path && c.key_path == s.key_path && c.not_after > now);
        let Some(c) = running else {
            still_skipped.push(s);
            continue;
        };
        // Entries listed before this one are served, except those still skipped.
        n.certificates
            .insert(s.index - still_skipped.len(), c.clone());
        warnings.push(Problem {
            path: format!("server.tls.certificates[{}].cert", s.index),
            message: format!(
                "the certificate loaded before from these files (valid until {}) keeps serving \
                 until they are fixed",
                crate::util::time::utc_date(c.not_after)
            ),
        });
    }
    n.skipped = still_skipped;
    warnings
}

/// The config hash shown in `/status`: FNV-1a of the file's text.
pub fn hash_text(text: &str) -> u64 {
    crate::util::hash::fnv1a64(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file in a fresh directory and the live state loaded from it.
    fn load(tag: &str, text: &str) -> (PathBuf, Arc<Shared>) {
        let dir = crate::util::testdir::fresh(tag);
        let path = dir.join("lb.toml");
        std::fs::write(&path, text).unwrap();
        let config = config::parse(text).unwrap();
        (path.clone(), Shared::new(config, &path, hash_text(text)))
    }

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n";

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let text =
            format!("{BASE}grace_period = \"3s\"\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n");
        let (path, shared) = load("restart-only", &text);
        let before = shared.snapshot.load().config.server.clone();
        let changed = format!(
            "{BASE}grace_period = \"9s\"\nwork_stealing = true\nupstream_keepalive_pool_size = 7\nlog = \"debug\"\naccess_log = \"/dev/null\"\nthreads = 3\n[upstreams.api]\nbackends = [\"127.0.0.1:3\"]\n"
        );
        std::fs::write(&path, changed).unwrap();
        let result = Reloader::new(&shared).reload("test");
        assert!(result.ok, "{:?}", result.problems);
        let now = shared.snapshot.load().config.clone();
        assert_eq!(now.upstreams[0].backends[0].address, "127.0.0.1:3");
        assert_eq!(now.server.grace_period, before.grace_period);
        assert_eq!(now.server.work_stealing, before.work_stealing);
        assert_eq!(
            now.server.upstream_keepalive_pool_size,
            before.upstream_keepalive_pool_size
        );
        assert_eq!(now.server.log, before.log);
        assert_eq!(now.server.access_log, before.access_log);
        assert_eq!(now.server.threads, before.threads);
    }

    #[test]
    fn own_answer_stats_of_a_removed_upstream_are_dropped() {
        let with = format!("{BASE}[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n[upstreams.web]\nbackends = [\"127.0.0.1:3\"]\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n");
        let without = format!("{BASE}[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n");
        let (path, shared) = load("own", &with);
        let http1 = crate::state::stats::ClientProtocol::Http1;
        shared
            .live
            .registry
            .own_stats("web")
            .record(502, Duration::ZERO, http1);
        std::fs::write(&path, &without).unwrap();
        assert!(Reloader::new(&shared).reload("test").ok);
        std::fs::write(&path, &with).unwrap();
        assert!(Reloader::new(&shared).reload("test").ok);
        assert_eq!(shared.live.registry.own_stats("web").count(), 0);
    }

    /// A self-signed certificate for `localhost` written to `dir`; returns (cert, key) paths.
    fn write_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn admin_text(token: &std::path::Path, extra: &str) -> String {
        format!(
            "{BASE}[admin]\nlisten = \"127.0.0.1:9\"\ntoken_file = \"{}\"\n{extra}\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n",
            token.display()
        )
    }

    #[test]
    fn admin_token_and_rules_apply_on_reload_switching_tls_needs_a_restart() {
        let dir = crate::util::testdir::fresh("admin-files");
        let token = dir.join("admin.token");
        std::fs::write(&token, "first-token-0123456789\n").unwrap();
        let (path, shared) = load("admin", &admin_text(&token, ""));
        let (cert, key) = write_cert(&dir, "a");
        std::fs::write(&token, "second-token-0123456789\n").unwrap();
        let tls = format!(
            "allow = [\"10.0.0.0/8\"]\n[admin.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        );
        std::fs::write(&path, admin_text(&token, &tls)).unwrap();
        let result = Reloader::new(&shared).reload("test");
        assert!(result.ok, "{:?}", result.problems);
        assert_eq!(result.needs_restart, vec!["admin.tls"]);
        let admin = shared.snapshot.load().config.admin.clone().unwrap();
        assert_eq!(admin.token.unwrap().secret(), b"second-token-0123456789");
        assert_eq!(admin.allow.unwrap().len(), 1);
        assert!(admin.tls.is_none(), "the listener still speaks plain HTTP");
        assert!(shared.admin_cert.current().is_none());
    }

    #[test]
    fn restart_only_settings_are_reported_by_key_and_kept() {
        let up = "[upstreams.api]\nbackends = [\"127.0.0.1:9001\"]\n";
        let old = config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:18001\"]\nthreads = 2\n\n{up}"
        ))
        .unwrap();
        let mut new = config::parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:18002\"]\nthreads = 3\nh2c = true\n\n\
             [admin]\nlisten = \"127.0.0.1:19001\"\n\n{up}"
        ))
        .unwrap();
        let mut keys = restart_only_changes(&old, &new);
        keys.sort();
        assert_eq!(
            keys,
            ["admin", "server.h2c", "server.listen", "server.threads"]
        );
        keep_restart_only(&old, &mut new);
        assert!(restart_only_changes(&old, &new).is_empty());
        assert_eq!((new.server.threads, new.admin.is_none()), (2, true));
    }

    #[test]
    fn a_reload_swaps_the_admin_certificate() {
        let dir = crate::util::testdir::fresh("admin-tls-files");
        let token = dir.join("admin.token");
        std::fs::write(&token, "first-token-0123456789\n").unwrap();
        let (cert, key) = write_cert(&dir, "a");
        let tls = |c: &PathBuf, k: &PathBuf| {
            admin_text(
                &token,
                &format!(
                    "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"",
                    c.display(),
                    k.display()
                ),
            )
        };
        let (path, shared) = load("admin-tls", &tls(&cert, &key));
        let first = shared.admin_cert.current().unwrap();
        let (cert2, key2) = write_cert(&dir, "b");
        std::fs::write(&path, tls(&cert2, &key2)).unwrap();
        let result = Reloader::new(&shared).reload("test");
        assert!(result.ok, "{:?}", result.problems);
        assert!(
            result.needs_restart.is_empty(),
            "{:?}",
            result.needs_restart
        );
        let second = shared.admin_cert.current().unwrap();
        assert_ne!(first.cert, second.cert);
        // A broken replacement fails the reload and keeps the certificate.
        std::fs::write(&cert2, "not a certificate").unwrap();
        std::fs::write(&path, tls(&cert2, &key2) + "\n").unwrap();
        let result = Reloader::new(&shared).reload("test");
        assert!(!result.ok);
        assert!(
            result.problems[0].contains("admin.tls.cert"),
            "{:?}",
            result.problems
        );
        assert_eq!(shared.admin_cert.current().unwrap().cert, second.cert);
    }

    /// File-watch, SIGHUP and `POST /reload` reloads race while the file changes: the reload
    /// triggered after the last write must leave the last written text applied.
    #[test]
    fn concurrent_reloads_end_with_the_newest_file() {
        let version = |v: usize| {
            let backends: Vec<String> = (0..300)
                .map(|i| format!("\"127.0.{}.{}:{}\"", i / 250, 1 + i % 250, 1000 + v))
                .collect();
            format!(
                "{BASE}[upstreams.api]\nbackends = [{}]\n",
                backends.join(", ")
            )
        };
        let (path, shared) = load("race", &version(0));
        let write = |text: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        for round in 1..=40 {
            write(&version(2 * round));
            let newest = version(2 * round + 1);
            let start = Arc::new(std::sync::Barrier::new(4));
            let racers: Vec<_> = (0..3)
                .map(|_| {
                    let (shared, start) = (shared.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Reloader::new(&shared).reload("racer");
                    })
                })
                .collect();
            start.wait();
            write(&newest);
            Reloader::new(&shared).reload("last");
            for r in racers {
                r.join().unwrap();
            }
            let applied = shared.file.loaded.lock().unwrap().hash;
            assert_eq!(
                applied,
                hash_text(&newest),
                "round {round}: an older file won"
            );
            let port = shared.snapshot.load().upstreams[0].config.backends[0]
                .addr
                .port();
            assert_eq!(port as usize, 1000 + 2 * round + 1, "round {round}");
        }
    }

    /// A check that was under way when its backend was removed (and added again) is not
    /// applied (moved here from `health::active`: it drives a reload).
    #[tokio::test]
    async fn check_result_for_a_replaced_backend_is_dropped() {
        use crate::health::active::is_current;
        use crate::health::testing::shared;
        let (shared, path) = shared("[upstreams.api.health_check]\ninterval = \"1h\"", 2);
        let old = shared.snapshot.load().upstreams[0].backends[1]
            .state
            .clone();
        let text = std::fs::read_to_string(&path).unwrap();
        let without = text.replace(", \"127.0.0.1:11\"", "");
        std::fs::write(&path, &without).unwrap();
        assert!(Reloader::new(&shared).reload("test").ok);
        std::fs::write(&path, &text).unwrap();
        assert!(Reloader::new(&shared).reload("test").ok);
        assert!(!is_current(&shared.live, "api", "127.0.0.1:11", &old));
        let new = shared.snapshot.load().upstreams[0].backends[1]
            .state
            .clone();
        assert!(is_current(&shared.live, "api", "127.0.0.1:11", &new));
        // The removed backend's old state is never usable again, whatever snapshot lists it.
        assert!(old.is_draining() && !old.usable());
    }
}
