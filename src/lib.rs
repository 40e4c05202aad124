//! lb: an HTTP load balancer and reverse proxy on pingora.
//!
//! # Layers
//!
//! Each module uses only the modules below it (`scripts/check-layers.py`, run by the test
//! command, fails the build otherwise), so there is no import cycle and every module can be read
//! knowing only what is under it:
//!
//! ```text
//!  server      start-up, pingora services, graceful stop, socket hand-over upgrade
//!  admin       admin listener: /healthz /metrics /status /reload and the dashboard
//!  reload      config reloads: file watch, SIGHUP, POST /reload; restart-only settings
//!  proxy       the request path (pingora-core): route, pick, retry, forward, answer
//!  edge        client connections (HTTP/1 keep-alive loop, HTTP/2 and h2c) and request heads:
//!              limits, refusals, paths
//!  health      active checks, passive ejection, state-change announcements
//!  discovery   DNS discovery: `resolve = true` names and SRV entries followed (hickory-resolver)
//!  history     the per-second history: its store, sampler, /history JSON and CSV, /report
//!  analytics   the Kafka producer of `[analytics.kafka]` (rdkafka), fed by observe's record stream
//!  runtime     handles: Live (the ArcSwap<Snapshot>, registry), Events, metrics; Shared
//!  observe     Prometheus metrics, JSON access log, the analytics record stream, logging
//!  snapshot    the immutable view a request reads: routes, upstreams, balancers, peers
//!  balance     backend choice: the weighted order, round_robin, least_connections
//!  state       per-backend state (health, in-flight, counters), the registry, stats
//!  import      `lb import-nginx`: NGINX config → lb TOML, with notes on what was left behind
//!  config      file structs → validated runtime types, every problem with its key path
//!  tls         certificate files loaded and checked; swappable certificates (one, or chosen by SNI)
//!  util        clocks, hashing, protobuf varints, Host syntax
//! ```
//!
//! The binaries (`src/main.rs`, `src/bin/sample-backend`) are thin: flags, config, run. They
//! share `src/alloc.rs`, the global allocator (mimalloc's plain entry points where the layout
//! allows), kept out of the library because the library forbids `unsafe`.
//!
//! Reports that go up the stack at run time (a failed attempt ejecting a backend, an answer
//! counted in metrics) are plain calls downwards: the request path ([`proxy`]) sits above
//! [`health`] and [`observe`], so it calls them directly; nothing below the request path needs
//! to know it exists.
//!
//! # One request
//!
//! 1. [`edge::accept::GuardedApp`] counts the connection against `server.max_connections`.
//!    On HTTPS listeners (`[server.tls]`, plain TCP listeners to pingora) it then runs the TLS
//!    handshake itself, within `server.header_timeout`, with the certificate
//!    [`tls::SniResolver`] chooses. An HTTP/2 connection (ALPN `h2`, or the h2c preface on a plain
//!    listener with `server.h2c`) runs pingora-core's HTTP/2 accept loop, each stream a
//!    `ServerSession` on a task of its own. An HTTP/1 connection is wrapped in an
//!    [`edge::conn::Guarded`] (header deadline, idle timeout, head-size limits) and runs the
//!    keep-alive loop: an idle connection holds no HTTP session and no buffer; a request's first
//!    byte makes pingora-core's `ServerSession`. Either way the session goes to the request path
//!    ([`edge::RequestApp`]).
//! 2. [`proxy::Proxy`] (pingora-core directly, no pingora-proxy) reads the head and runs one
//!    straight-line `async fn`: [`edge::early_request_filter`] runs [`edge::check_head`]
//!    (framing, syntax, limits: lb answers 400/413/414/431/501 itself).
//! 3. Routing (`proxy::route`) loads the snapshot once (`ArcSwap::load_full`: the only shared
//!    read of the request), then decides in a pure step (`decide`: a `Decision`, lb's own
//!    answer or a request to forward, nothing written) and carries the decision out. It
//!    normalizes the path ([`edge::path`]) and routes it as NGINX does
//!    ([`snapshot::Snapshot::route_on`]: host group, then exact path, prefix, regex; a
//!    `replace_prefix` rewrites the forwarded path; plain and HTTPS listeners have a router
//!    each, as routes may name a `scheme`, and so has each listener a route's `listen` names,
//!    chosen by the connection's local address); no route → 404, no usable backend → 503; a
//!    `respond` route is answered by lb ([`proxy::respond`], NGINX's `return`); a `kafka` route
//!    produces the body to a topic with a producer shared across reloads
//!    ([`state::kafka`]) and answers 202 once the broker acknowledged it ([`proxy::kafka`]).
//!    The client address is computed once here ([`edge::client_ip`]: the peer, or the real
//!    client a `server.real_ip_from` proxy names) and every later user reads it from the
//!    context. The route's (or its upstream's) rate limits then pass, delay or refuse it
//!    ([`proxy::keys`] names the request's key, [`state::limit`] decides: NGINX's
//!    `limit_req`, sharded per-key buckets), then its `access` rules (NGINX's `allow`/`deny`,
//!    lb's 403), then its `fault` (Envoy's fault filter: a delay, an abort). A `split` route
//!    picks its upstream here, by the MurmurHash2 of its `split_by` key against bounds built
//!    into the snapshot (NGINX's `split_clients`).
//!    A route's own settings ([`snapshot::RouteSettings`]: timeouts, `max_body_bytes`, header
//!    rules) were built into the snapshot; [`proxy::rewrite`] renders its
//!    `set_request_headers` onto the backend's head and `add_response_headers` onto the answer.
//!    A route with a `mirror` starts its copy here ([`proxy::mirror`]: a task of its own, fed the
//!    client's body pieces by reference as the exchange reads them, never waited for).
//! 4. Each attempt picks a backend with the upstream's [`balance::Balancer`] (lock-free: one
//!    atomic position per upstream, in-flight counters per backend; primaries before backups,
//!    `max_conns` honoured; `ip_hash`/`consistent_hash` hash the client or a request key as
//!    NGINX does), takes an RAII
//!    [`state::backend::InFlightGuard`] and an idle backend connection from the worker's pool
//!    (`proxy::pool`; a new one from pingora-core's `TransportConnector` when none is idle).
//!    The backend's head is the client's with hop-by-hop fields left out and lb's forwarding
//!    fields added ([`proxy::upstream_head`]): for the common HTTP/1 request written straight
//!    into bytes ([`proxy::wire`]), else built as a header map ([`proxy::headers`],
//!    [`proxy::rewrite`]).
//!    [`proxy::forward`] streams both bodies at once, writes and reads polled together (full
//!    duplex), in one `select!` loop on the request's task, the same loop for an HTTP/1
//!    connection and an HTTP/2 stream (each a small `Leg`: write a piece, read a piece) (101 →
//!    byte tunnel; on an HTTP/2 backend, one stream of a pooled connection, trailers included;
//!    gRPC calls get lb's own failures as `grpc-status`, [`proxy::grpc`]). Failed attempts go
//!    to [`health::passive_failure`] and are retried on other
//!    backends within `retries` ([`proxy::retry`]).
//! 5. The answer streams back with hop-by-hop headers stripped; the outcome is recorded in the
//!    backend's [`state::stats::RequestStats`] (rendered by [`observe::metrics`] at scrape time)
//!    and the access log.
//!
//! # One reload
//!
//! [`reload`] reads and validates the whole file ([`config::parse`]); on any problem nothing
//! changes. A valid config becomes one new [`snapshot::Snapshot`], built from the
//! [`state::registry::Registry`] so every backend still configured keeps its state, and is
//! swapped in with one store. Removed backends are marked draining (never picked again, from any
//! snapshot) and listed until their last request ends. Health changes rebuild the snapshot the
//! same way ([`runtime::Live::rebuild`]).
//!
//! # Where state lives
//!
//! - Per discovered entry (`resolve = true`, `srv`), keyed by (upstream, entry): the addresses
//!   DNS gave ([`state::discovery`]), each of which is then a backend keyed by (upstream, ip:port).
//! - Per backend, keyed by (upstream, address): [`state::backend::BackendState`] in an `Arc` in
//!   the registry — health, in-flight count, passive-failure run, ejection, slow-start clock,
//!   request stats and latency window. Snapshots hold clones of the `Arc`.
//! - Per upstream: [`state::backend::UpstreamState`] in the registry — the balancer position
//!   (so a rebuild continues the round-robin sequence), the ejection lock and the stats of lb's
//!   own answers.
//! - Per rate limit, keyed by its name: the table of per-key buckets
//!   ([`state::limit::Limiter`]) in the registry's [`state::limit::Limiters`], kept while the
//!   limit's key and size stay; each snapshot holds a [`state::limit::Limit`] per limit.
//! - Per Kafka broker set, `acks` and `timeout` of `kafka` routes: one librdkafka producer in the
//!   registry ([`state::kafka::Producers`]), kept for the process's life.
//! - Per process: [`runtime::Live`] — the current snapshot, the registry, the draining
//!   backends; [`runtime::Events`] — the event timeline; the metrics; [`runtime::ConfigFile`] —
//!   the loaded file's identity and the last reload result; [`runtime::Shared`] holds them with
//!   the access log writer and the certificates. Long-lived tasks take only the handles they use
//!   ([`runtime::Handles`]: health checks, DNS discovery; [`reload::Reloader`]: reloads); the
//!   history store ([`history::store`]) is held by its sampler and the admin listener alone.
//! - Per worker thread: idle backend connections (`proxy::pool`), thread-local, keyed by address.
//! - Per request: the proxy's context (snapshot, chosen backend, in-flight guard, attempts).
#![forbid(unsafe_code)]

pub mod admin;
pub mod analytics;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod edge;
pub mod health;
pub mod history;
pub mod import;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod util;
