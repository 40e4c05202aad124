//! Wires a validated config into a pingora server: the proxy service on every `server.listen`
//! address, the admin listener, the health supervisor and the reload watcher. pingora's own CLI is
//! not used; its `Opt`/`ServerConf` are built here.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use std::net::SocketAddr;

use pingora_core::listeners::tls::Acceptor;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use pingora_core::tls::CryptoProvider;

use crate::config::{Config, ServerTls, TlsVersion};
use crate::health;
use crate::history::store::History;
use crate::history::Sampler;
use crate::observe::stream::Stream;
use crate::proxy::Proxy;
use crate::reload::{self, Reloader};
use crate::runtime::Shared;

/// Start-up options that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running lb (graceful binary upgrade).
    pub upgrade: bool,
}

/// Read-ahead buffer per client connection, allocated for the connection's whole life. pingora's
/// default (64 KiB) costs ~90 KiB of RSS per idle keep-alive connection. The connection layer reads
/// a request's first byte through it, which pulls a typical API request head in with the same
/// system call; larger reads bypass it (pingora reads heads and bodies into its own buffers).
const CLIENT_READ_BUFFER: usize = 1024;

/// pingora's retry loop bound; lb enforces each upstream's own `retries` below it.
const PINGORA_MAX_RETRIES: usize = 128;

/// Binds every listening address once and lets it go again, so that an address already in use
/// is one clear error at start: pingora itself retries a busy address 30 times, a second apart,
/// and then panics. Not for `--upgrade`, where the running lb still holds the addresses.
pub fn check_listeners(config: &Config) -> Result<(), String> {
    let server = config.server.listen.iter().enumerate();
    let server = server.map(|(i, a)| (format!("server.listen[{i}]"), *a));
    let tls = config
        .server
        .tls
        .iter()
        .flat_map(|t| t.listen.iter().enumerate());
    let server = server.chain(tls.map(|(i, a)| (format!("server.tls.listen[{i}]"), *a)));
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin.listen".to_string(), a.listen));
    for (key, addr) in server.chain(admin) {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
    }
    Ok(())
}

/// Runs lb until it is told to stop. Never returns.
pub fn run(config: Config, path: &Path, text_hash: u64, opts: RunOptions) -> ! {
    let shared = Shared::new(config.clone(), path, text_hash);
    startup_round(&shared);
    let conf = server_conf(&config, path);
    let pid_file = conf.pid_file.clone();
    let upgrade = opts.upgrade && request_handover(&pid_file, path, &config);
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        tracing::warn!(pid_file, "cannot write pid file: {e}");
    }
    let proxy = proxy_service(&config, &shared, &server);
    server.add_service(proxy);
    let history = Arc::new(History::default());
    if let Some(admin) = &config.admin {
        let admin = crate::admin::service(shared.clone(), history.clone(), admin);
        server.add_service(admin);
    }
    let sampler = Sampler::new(&shared, history);
    let background = Background {
        shared: shared.clone(),
        sampler: sampler.clone(),
        pid_file: pid_file.clone(),
    };
    server.add_service(background_service("lb health", background));
    tracing::info!(
        listen = ?config.server.listen,
        admin = ?config.admin.as_ref().map(|a| a.listen),
        threads = config.server.threads,
        "lb {} starting",
        env!("CARGO_PKG_VERSION")
    );
    // Not `run_forever`: it exits the process without the clean-up below (fast stop, SIGINT).
    server.run(RunArgs::default());
    before_exit(&shared, &sampler, &pid_file);
    std::process::exit(0)
}

/// One round of discovery and checks before taking traffic. Its runtime is gone before pingora
/// starts its own.
fn startup_round(shared: &Shared) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            // Discovered addresses first, so that the checks' round covers them too.
            crate::discovery::initial_round(&shared.handles()).await;
            health::initial_round(&shared.handles()).await
        }),
        Err(e) => tracing::error!("cannot run start-up health checks: {e}"),
    }
}

/// The proxy behind lb's connection-level defences (connection cap, header deadline, head
/// size, keep-alive idle timeout: see `crate::edge`), on every plain and HTTPS listener.
/// HTTPS listeners are plain TCP listeners to pingora: the connection layer runs the TLS
/// handshake itself, counted against `max_connections` and within `header_timeout`.
fn proxy_service(
    config: &Config,
    shared: &Arc<Shared>,
    server: &Server,
) -> Service<crate::edge::GuardedApp<Proxy>> {
    let tls = config
        .server
        .tls
        .as_ref()
        .and_then(|tls| match tls_acceptor(shared, tls) {
            Ok(acceptor) => Some(crate::edge::TlsListeners {
                addrs: tls.listen.clone(),
                acceptor,
            }),
            Err(e) => {
                tracing::error!(listen = ?tls.listen, "cannot set up TLS: {e}");
                None
            }
        });
    let tls_addrs = tls.as_ref().map(|t| t.addrs.clone()).unwrap_or_default();
    let proxied: Vec<_> = config
        .server
        .proxy_protocol
        .iter()
        .chain(config.server.tls.iter().flat_map(|t| &t.proxy_protocol))
        .copied()
        .collect();
    let mut proxy = Service::new(
        "lb proxy".to_string(),
        crate::edge::GuardedApp::new(
            Proxy::new(shared.clone(), &server.configuration),
            shared.clone(),
            tls,
            proxied,
        ),
    );
    for addr in config.server.listen.iter().chain(&tls_addrs) {
        proxy.add_listener(listener(addr));
    }
    proxy
}

/// A client listener on `addr`: a small read-ahead buffer (see [`CLIENT_READ_BUFFER`]); an IPv6
/// address takes IPv6 only, so `0.0.0.0:443` and `[::]:443` can both be listed, as in NGINX.
fn listener(addr: &SocketAddr) -> ListenerConfig {
    let mut l = ListenerConfig::tcp(addr.to_string())
        .l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER));
    if addr.is_ipv6() {
        let mut options = TcpSocketOptions::default();
        options.ipv6_only = Some(true);
        l = l.tcp_socket_options(options);
    }
    l
}

/// The TLS side of an HTTPS listener, built by lb on rustls' own API (pingora's
/// `Acceptor::from_server_config`): certificates chosen by SNI from `shared.server_certs`
/// (swapped by reloads), ALPN `h2` + `http/1.1` (or `http/1.1` alone), TLS 1.2+ or 1.3 only,
/// the cipher suite chosen in the server's order ([`aes128_first`]).
fn tls_acceptor(shared: &Shared, tls: &ServerTls) -> Result<Acceptor, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(aes128_first())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(shared.server_certs.clone());
    config.alpn_protocols = match tls.http2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    config.ignore_client_order = true;
    Ok(Acceptor::from_server_config(Arc::new(config)))
}

/// The TLS listeners' crypto: aws-lc-rs (assembly X25519 and P-256; ring's portable X25519 made
/// a full handshake about a third more expensive than NGINX's, measured), with the AES-128-GCM
/// suites first, chosen in the server's order. OpenSSL clients ask for AES-256-GCM with SHA-384
/// first; AES-128-GCM with SHA-256 is as safe for this use and is what Mozilla's intermediate
/// profile lists first.
fn aes128_first() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !s.suite()
            .as_str()
            .is_some_and(|n| n.contains("AES_128_GCM"))
    });
    Arc::new(provider)
}

/// What every exit path does last: write out the access log, send the analytics records still
/// queued, and remove the pid file (unless it already names the process that took over the
/// sockets).
fn before_exit(shared: &Shared, sampler: &Sampler, pid_file: &str) {
    if let Some(log) = &shared.access_log {
        if !log.flush(crate::observe::access_log::FLUSH_TIMEOUT) {
            tracing::warn!("access log not fully written before exit");
        }
    }
    if let Some(stream) = &shared.stream {
        // The second under way, sampled now: its `summary` records go out with the flush.
        sampler.final_sample();
        match stream.flush(crate::observe::stream::FLUSH_TIMEOUT) {
            Some(0) | None => {}
            Some(n) => tracing::warn!(
                unsent = n,
                "analytics: records not taken by Kafka before exit"
            ),
        }
    }
    let ours =
        std::fs::read_to_string(pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(pid_file);
    }
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
        work_stealing: config.server.work_stealing,
        // A backstop only: lb's own drain (below) exits as soon as in-flight requests finish.
        grace_period_seconds: Some(grace + 1),
        graceful_shutdown_timeout_seconds: Some(1),
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

/// Health supervisor, DNS discovery, reload triggers and the analytics producer on pingora's
/// background runtime; the second field is the pid file to remove on exit.
/// lb's background tasks: health checks, DNS discovery, the history sampler, the Kafka producer,
/// config reloads and the drain on stop signals, each given its own handles.
struct Background {
    shared: Arc<Shared>,
    sampler: Arc<Sampler>,
    pid_file: String,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let s = &self.shared;
        // Outlive the shutdown broadcast below, which arrives together with the signal: the drain
        // exits the process; until then, the requests finishing in the grace period are still
        // sampled each second and their records still streamed (the exit flush sends the rest).
        let (sampler, pid_file) = (self.sampler.clone(), self.pid_file.clone());
        tokio::spawn(drain_on_stop_signals(s.clone(), sampler, pid_file));
        tokio::spawn(self.sampler.clone().run());
        tokio::spawn(analytics(s.stream.clone()));
        // join!, not select!: one task ending (e.g. no file watcher available) must not stop the others.
        let work = async {
            tokio::join!(
                health::supervise(s.handles()),
                crate::discovery::supervise(s.handles()),
                reload::watch_file(Reloader::new(s)),
                reload::on_sighup(Reloader::new(s)),
            )
        };
        tokio::select! {
            _ = work => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The Kafka producer of `[analytics.kafka]` (nothing without one).
async fn analytics(stream: Option<Arc<Stream>>) {
    if let Some(stream) = stream {
        crate::analytics::kafka::run(stream).await;
    }
}

/// pingora's graceful stop always sleeps its whole grace period; lb exits as soon as the requests
/// in flight have finished (or the grace period is over). SIGTERM: pingora stops accepting and
/// closes keep-alive connections; SIGQUIT (upgrade): the new process has the sockets after
/// pingora's 5 s hand-over window, then the same drain.
async fn drain_on_stop_signals(shared: Arc<Shared>, sampler: Arc<Sampler>, pid_file: String) {
    let grace = shared.config_grace();
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut quit)) =
        (signal(SignalKind::terminate()), signal(SignalKind::quit()))
    else {
        return;
    };
    let delay = tokio::select! {
        _ = term.recv() => Duration::from_millis(50),
        _ = quit.recv() => UPGRADE_HANDOVER,
    };
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let deadline = Instant::now() + grace;
        // Requests in flight, and requests arriving (a head under way, a new connection's
        // first request not sent yet): both are served if they finish within the grace period.
        let busy = || crate::proxy::active_requests() + crate::edge::requests_arriving() > 0;
        while busy() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        match crate::proxy::active_requests() + crate::edge::requests_arriving() {
            0 => tracing::info!("graceful stop complete; exiting"),
            cut => tracing::warn!(
                cut,
                grace_period = ?grace,
                "graceful stop: grace period over with requests still in flight; they are cut"
            ),
        }
        before_exit(&shared, &sampler, &pid_file);
        std::process::exit(0);
    });
    std::future::pending::<()>().await;
}

/// pingora keeps serving for this long after handing its sockets to an upgraded process.
const UPGRADE_HANDOVER: Duration = Duration::from_secs(5);

/// With `--upgrade`: asks the running lb serving this config (found through the pid file) to
/// hand over its sockets. Returns false, after saying why, when there is no such lb: the caller
/// then starts normally, which this allows only when nothing else holds the listeners (exits
/// with status 1 otherwise).
fn request_handover(pid_file: &str, config_path: &Path, config: &Config) -> bool {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if serves_config(pid, config_path) => {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                tracing::info!(
                    old_pid = pid,
                    "--upgrade: asking the running lb for its listening sockets"
                );
                let _ = std::process::Command::new("kill")
                    .args(["-QUIT", &pid.to_string()])
                    .status();
            });
            return true;
        }
        Some(pid) => tracing::warn!(
            pid_file,
            pid,
            "--upgrade: pid {pid} is not an lb serving this config; starting normally"
        ),
        None => tracing::warn!(
            pid_file,
            "--upgrade: no running lb found (no pid file); starting normally"
        ),
    }
    if let Err(e) = listeners_free(config) {
        tracing::error!("--upgrade: cannot start normally: {e}");
        std::process::exit(1);
    }
    false
}

/// Whether `pid` is an lb started with this config file: its command line names an `lb` binary
/// (or one named like ours, e.g. after a rename) and an argument that resolves to the same file.
/// `/proc/PID/exe` may end in " (deleted)" after an in-place binary swap; only names are compared.
fn serves_config(pid: u32, config: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let base = |p: &Path| {
        p.file_name().map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
    };
    let ours = std::env::current_exe().ok().and_then(|p| base(&p));
    let theirs = [
        args.first().and_then(|a| base(Path::new(a))),
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| base(&p)),
    ];
    let named_lb = theirs
        .iter()
        .flatten()
        .any(|n| n == "lb" || Some(n) == ours.as_ref());
    let Ok(want) = std::fs::canonicalize(config) else {
        return false;
    };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    named_lb
        && args.iter().skip(1).any(|a| {
            let a = a.strip_prefix("--config=").unwrap_or(a);
            std::fs::canonicalize(cwd.join(a)).is_ok_and(|p| p == want)
        })
}

/// Binds (and releases) every listening address of `config`; names the first one in use.
fn listeners_free(config: &Config) -> Result<(), String> {
    let admin = config.admin.as_ref().map(|a| ("admin.listen", a.listen));
    let proxy = config.server.listen.iter().map(|a| ("server.listen", *a));
    for (key, addr) in proxy.chain(admin) {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(format!("{key} {addr} is in use ({e})"));
        }
    }
    Ok(())
}
