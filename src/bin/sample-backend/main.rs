//! `sample-backend`: a small, fast HTTP/1.1 origin server used as the upstream in
//! lb's integration tests, hardening tests and benchmarks.
//!
//! It is a hand-rolled keep-alive HTTP/1.1 server on raw tokio sockets (not hyper)
//! so that the `/fault/*` endpoints can put exact, deliberately broken bytes on the
//! wire. It supports pipelining, `Content-Length` and chunked request bodies,
//! `Expect: 100-continue`, `Connection: close` and HTTP/1.0 (always closed).
//! Malformed requests get 400, heads over 64 KiB get 431; both then close.
//!
//! Usage: `sample-backend --listen ADDR --name NAME [--delay DURATION] [--threads N]
//! [--tls-cert PEM --tls-key PEM] [--h2c] [--kafka-brokers LIST --kafka-topic TOPIC]`
//!
//! With `--tls-cert`/`--tls-key` it speaks HTTPS: HTTP/2 or HTTP/1.1 by ALPN, over TLS 1.2/1.3,
//! the certificate loaded and checked by lb's own `tls` module. `--h2c` makes a plain listener
//! speak cleartext HTTP/2 (prior knowledge) instead of HTTP/1.1. Over HTTP/2 the same endpoints
//! answer, and gRPC calls reach the `lb.LoadTest` service (`loadtest.proto`: unary `Process`,
//! server-streaming `ProcessStream`, bidirectional `Chat`) and `grpc.health.v1.Health/Check`,
//! which `POST /control/health/down` flips to `NOT_SERVING` ([`h2srv`]).
//!
//! Every response carries `x-backend: NAME`. Endpoints (any method unless noted):
//! - `/` → 200 `{"backend":NAME}`; `--delay` applies
//! - `POST /loadTest` → 200 `{"backend","bytes","checksum"}` (FNV-1a 64 of the body,
//!   16 hex digits), 400 `{"error":"invalid JSON: ..."}`; `--delay` applies
//! - `GET /worker` → 200 `{"backend","topic","records","invalid","bytes","checksum"}`: what
//!   worker mode (`--kafka-brokers`, `--kafka-topic`, [`worker`]) consumed from Kafka, doing
//!   the work of `/loadTest` on each record (checksum: XOR of their FNV-1a 64)
//! - `/echo` → 200 JSON: method, path (with query), version, headers in received
//!   order as `[name, value]` pairs, body_bytes
//! - `/healthz` → 200 `ok`, or 503 after `POST /control/health/down` (`/up` restores)
//! - `/delay/{ms}`, `/fault/sleep/{ms}` → sleep, then 200
//! - `/status/{code}` → that status (200..=599) with a small JSON body
//! - `GET /ws` with `Connection: Upgrade` + `Upgrade: websocket` → 101, then a raw
//!   byte echo until EOF (no websocket framing); 426 without the upgrade headers
//! - `/fault/close-mid-body` → `Content-Length: 1000`, 10 body bytes, close
//! - `/fault/close-mid-chunked` → chunked head, one chunk, close without last-chunk
//! - `/fault/garbage` → `this is not http\r\n\r\n`, close
//! - `/fault/close` → close without any response
//!
//! Modules: [`server`] accepts connections; [`conn`] (the connection loop) reads each request
//! with [`head`]; [`routes`] dispatches it to a handler (its own, [`control`], [`faults`] or
//! [`ws`]), which writes through [`response::Resp`] and returns a [`response::Action`] for the
//! loop.

mod conn;
mod control;
mod faults;
mod h2srv;
mod head;
mod response;
mod routes;
mod server;
mod worker;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::response::State;

#[path = "../../alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sample-backend",
    about = "Sample HTTP/1.1 backend for lb tests and benchmarks"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long)]
    listen: String,
    /// Backend name, reported in the `x-backend` header and in JSON bodies.
    #[arg(long, value_parser = parse_name)]
    name: String,
    /// Extra latency for `/` and `/loadTest`, e.g. 50ms, 2s, 1m, 0s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    delay: Duration,
    /// Number of tokio worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Speak cleartext HTTP/2 (prior knowledge) instead of HTTP/1.1 on a plain listener.
    #[arg(long, conflicts_with = "tls_cert")]
    h2c: bool,
    /// Worker mode: consume this Kafka topic (needs --kafka-brokers) and do the work of
    /// `/loadTest` on each record; `GET /worker` reports it.
    #[arg(long, requires = "kafka_brokers")]
    kafka_topic: Option<String>,
    /// The bootstrap brokers of worker mode, `host:port[,host:port...]`.
    #[arg(long, requires = "kafka_topic")]
    kafka_brokers: Option<String>,
}

fn parse_name(s: &str) -> Result<String, String> {
    match http::HeaderValue::from_str(s) {
        Ok(_) if !s.is_empty() => Ok(s.to_string()),
        _ => Err("name must be a non-empty, header-safe string".to_string()),
    }
}

/// lb's config duration syntax (`50ms`, `2s`, `1m`), plus a bare `0`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    match s {
        "0" => Ok(Duration::ZERO),
        _ => lb::config::parse_duration(s),
    }
}

/// A TLS acceptor for `cert`/`key`, or the problems found in them.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<pingora_core::tls::TlsAcceptor, String> {
    let now = lb::util::time::unix_ms() as i64 / 1000;
    let (loaded, issues) = lb::tls::Certificate::load(cert, key, now);
    let Some(loaded) = loaded else {
        let all: Vec<String> = issues.into_iter().map(|i| i.message).collect();
        return Err(all.join("; "));
    };
    pingora_core::tls::install_default_crypto_provider();
    let resolver = std::sync::Arc::new(lb::tls::Resolver::new(Some(loaded.key)));
    let mut config = pingora_core::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(pingora_core::tls::TlsAcceptor::from(std::sync::Arc::new(
        config,
    )))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => match tls_acceptor(c, k) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("sample-backend: --tls-cert/--tls-key: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let res = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
        .and_then(|rt| {
            let state = State::new(args.name, args.delay);
            if let (Some(b), Some(t)) = (args.kafka_brokers, args.kafka_topic) {
                worker::spawn(b, t, args.delay, state.consumed.clone());
            }
            let transport = match tls {
                Some(t) => server::Transport::Tls(t),
                None if args.h2c => server::Transport::H2c,
                None => server::Transport::Plain,
            };
            let res = rt.block_on(server::run(&args.listen, state, transport));
            rt.shutdown_timeout(Duration::from_millis(100));
            res
        });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["5", "ms", "1x", "", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
