//! Wires a validated config into a pingora server: the proxy service on every `server.listen`
//! address, the admin listener, the health supervisor and the reload watcher. pingora's own CLI is
//! not used; its `Opt`/`ServerConf` are built here.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::health;
use crate::proxy::Proxy;
use crate::reload::Shared;

/// Start-up options that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running lb (graceful binary upgrade).
    pub upgrade: bool,
}

/// pingora's retry loop bound; lb enforces each upstream's own `retries` below it.
const PINGORA_MAX_RETRIES: usize = 128;

/// Runs lb until it is told to stop. Never returns.
pub fn run(config: Config, path: &Path, text_hash: u64, opts: RunOptions) -> ! {
    let shared = Shared::new(config.clone(), path, text_hash);
    // One round of checks before taking traffic. Its runtime is gone before pingora starts its own.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(health::initial_round(&shared)),
        Err(e) => tracing::error!("cannot run start-up health checks: {e}"),
    }
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, path));
    server.bootstrap();

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(shared.clone()),
        "lb proxy",
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    if let Some(admin) = &config.admin {
        let mut svc = Service::new("lb admin".to_string(), Admin::new(shared.clone()));
        svc.add_tcp(&admin.listen.to_string());
        server.add_service(svc);
    }
    server.add_service(background_service("lb health", Background(shared.clone())));
    tracing::info!(
        listen = ?config.server.listen,
        admin = ?config.admin.as_ref().map(|a| a.listen),
        threads = config.server.threads,
        "lb {} starting",
        env!("CARGO_PKG_VERSION")
    );
    server.run_forever()
}

fn server_conf(config: &Config, path: &Path) -> ServerConf {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let tag = format!(
        "{:016x}",
        crate::reload::hash_text(&abs.display().to_string())
    );
    let grace = config.server.grace_period.as_secs().max(1);
    ServerConf {
        threads: config.server.threads,
        // Upstream keep-alive connections per process.
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(grace),
        max_retries: PINGORA_MAX_RETRIES,
        // Per config file, so several lb instances can run side by side and `--upgrade` finds
        // the one serving the same file.
        upgrade_sock: std::env::temp_dir()
            .join(format!("lb-{tag}.upgrade.sock"))
            .display()
            .to_string(),
        pid_file: std::env::temp_dir()
            .join(format!("lb-{tag}.pid"))
            .display()
            .to_string(),
        ..ServerConf::default()
    }
}

/// Health supervisor (and, later, other housekeeping) on pingora's background runtime.
struct Background(Arc<Shared>);

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = health::supervise(self.0.clone()) => {}
            _ = shutdown.changed() => {}
        }
    }
}
