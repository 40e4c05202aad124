//! `sample-backend`: a small, fast HTTP/1.1 origin server used as the upstream in
//! lb's integration tests, hardening tests and benchmarks.
//!
//! It is a hand-rolled keep-alive HTTP/1.1 server on raw tokio sockets (not hyper)
//! so that the `/fault/*` endpoints can put exact, deliberately broken bytes on the
//! wire. It supports pipelining, `Content-Length` and chunked request bodies,
//! `Expect: 100-continue`, `Connection: close` and HTTP/1.0 (always closed).
//! Malformed requests get 400, heads over 64 KiB get 431; both then close.
//!
//! Usage: `sample-backend --listen ADDR --name NAME [--delay DURATION] [--threads N]`
//!
//! Every response carries `x-backend: NAME`. Endpoints (any method unless noted):
//! - `/` → 200 `{"backend":NAME}`; `--delay` applies
//! - `POST /loadTest` → 200 `{"backend","bytes","checksum"}` (FNV-1a 64 of the body,
//!   16 hex digits), 400 `{"error":"invalid JSON: ..."}`; `--delay` applies
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
mod head;
mod response;
mod routes;
mod server;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::response::State;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    let args = Args::parse();
    let res = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
        .and_then(|rt| {
            let state = State::new(args.name, args.delay);
            let res = rt.block_on(server::run(&args.listen, state));
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
