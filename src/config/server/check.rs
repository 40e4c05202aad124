//! Validation of `[server]`: the listeners (each an address or `{ address, proxy_protocol }`),
//! threads, logging, trusted proxies and client addresses, the client-side limits and timeouts
//! and path handling, each problem with its key path. `[server.tls]` is checked in
//! [`super::tls`].

use std::net::SocketAddr;

use toml::Value;

use super::file::*;
use crate::config::validate::{parse_cidr, Checker};
use crate::config::*;

impl Checker {
    pub(in crate::config) fn server(&mut self, mut s: ServerFile) -> Option<ServerSettings> {
        let tls_listens = s.tls.as_ref().is_some_and(|t| !t.listen.is_empty());
        if s.listen.is_empty() && !tls_listens {
            self.problem(
                "server.listen",
                "at least one listener is required (here or in server.tls.listen)",
            );
        }
        let (listen, proxy_protocol) =
            self.listeners("server.listen", std::mem::take(&mut s.listen));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.int("server.threads", s.threads, 1, 1024, cpus as i64) as usize;
        let access_log = self.access_log(s.access_log.as_deref());
        let mut trusted_proxies = Vec::new();
        for (i, t) in s.trusted_proxies.iter().enumerate() {
            match parse_cidr(t) {
                Ok(c) => trusted_proxies.push(c),
                Err(m) => self.problem(format!("server.trusted_proxies[{i}]"), m),
            }
        }
        let real_ip_from = std::mem::take(&mut s.real_ip_from);
        let real_ip = self.real_ip(real_ip_from, s.real_ip_header.take(), s.real_ip_recursive);
        let limits = self.limits(&s);
        Some(ServerSettings {
            listen,
            threads,
            grace_period: self.duration(
                "server.grace_period",
                s.grace_period.as_deref(),
                DEFAULT_GRACE_PERIOD,
                true,
            ),
            access_log,
            log: s.log,
            trusted_proxies,
            real_ip,
            proxy_protocol,
            limits,
            upstream_keepalive_pool_size: self.int(
                "server.upstream_keepalive_pool_size",
                s.upstream_keepalive_pool_size,
                0,
                1_000_000,
                DEFAULT_UPSTREAM_POOL as i64,
            ) as usize,
            work_stealing: s.work_stealing.unwrap_or(DEFAULT_WORK_STEALING),
            normalize_path: self.normalize_path(s.normalize_path.as_deref()),
            merge_slashes: s.merge_slashes.unwrap_or(DEFAULT_MERGE_SLASHES),
            client_close: self.client_close(s.client_close.as_deref()),
            h2c: s.h2c.unwrap_or(false),
            tls: s.tls.and_then(|t| self.server_tls(t)),
        })
    }

    /// `server.access_log`: "off" (the default), "stdout" or a file path.
    fn access_log(&mut self, value: Option<&str>) -> AccessLog {
        match value {
            None | Some("off") => AccessLog::Off,
            Some("stdout") => AccessLog::Stdout,
            Some("") => {
                self.problem(
                    "server.access_log",
                    "must be \"off\", \"stdout\" or a file path",
                );
                AccessLog::Off
            }
            Some(p) => AccessLog::File(p.into()),
        }
    }

    /// The client-side limits and timeouts of `[server]`; `max_body_bytes_any_route` is set
    /// once the routes are known.
    fn limits(&mut self, s: &ServerFile) -> Limits {
        Limits {
            max_header_bytes: self.int(
                "server.max_header_bytes",
                s.max_header_bytes,
                1024,
                1 << 20,
                DEFAULT_MAX_HEADER_BYTES as i64,
            ) as usize,
            max_headers: self.int(
                "server.max_headers",
                s.max_headers,
                1,
                1000,
                DEFAULT_MAX_HEADERS as i64,
            ) as usize,
            max_uri_bytes: self.int(
                "server.max_uri_bytes",
                s.max_uri_bytes,
                16,
                1 << 20,
                DEFAULT_MAX_URI_BYTES as i64,
            ) as usize,
            max_body_bytes: self.int(
                "server.max_body_bytes",
                s.max_body_bytes,
                0,
                i64::MAX,
                DEFAULT_MAX_BODY_BYTES as i64,
            ) as u64,
            // Set once the routes are known.
            max_body_bytes_any_route: 0,
            header_timeout: self.duration(
                "server.header_timeout",
                s.header_timeout.as_deref(),
                DEFAULT_HEADER_TIMEOUT,
                false,
            ),
            body_timeout: self.duration(
                "server.body_timeout",
                s.body_timeout.as_deref(),
                DEFAULT_BODY_TIMEOUT,
                false,
            ),
            send_timeout: self.duration(
                "server.send_timeout",
                s.send_timeout.as_deref(),
                DEFAULT_SEND_TIMEOUT,
                false,
            ),
            keepalive_timeout: self.duration(
                "server.keepalive_timeout",
                s.keepalive_timeout.as_deref(),
                DEFAULT_KEEPALIVE_TIMEOUT,
                false,
            ),
            max_connections: self.int(
                "server.max_connections",
                s.max_connections,
                1,
                10_000_000,
                DEFAULT_MAX_CONNECTIONS as i64,
            ) as usize,
            preserve_header_case: s.preserve_header_case.unwrap_or(false),
        }
    }

    /// The addresses of a `listen` list (each `"ADDRESS"` or `{ address, proxy_protocol }`,
    /// decoded at its own key path), and those of its entries with `proxy_protocol = true`.
    pub(super) fn listeners(
        &mut self,
        key: &str,
        entries: Vec<Value>,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let (mut listen, mut proxied) = (Vec::new(), Vec::new());
        for (i, v) in entries.into_iter().enumerate() {
            let path = format!("{key}[{i}]");
            let entry = match v {
                Value::String(address) => Some(ListenTable {
                    address,
                    proxy_protocol: None,
                }),
                v @ Value::Table(_) => self.decode::<ListenTable>(&path, v),
                _ => {
                    let msg = "expected an address (\"127.0.0.1:8080\") or a table \
                               ({ address = \"...\", proxy_protocol = true })";
                    self.problem(&path, msg);
                    None
                }
            };
            let Some(entry) = entry else {
                continue;
            };
            if let Some(addr) = self.socket_addr(&path, &entry.address) {
                self.listener(path, addr);
                listen.push(addr);
                if entry.proxy_protocol == Some(true) {
                    proxied.push(addr);
                }
            }
        }
        (listen, proxied)
    }

    fn client_close(&mut self, value: Option<&str>) -> ClientClose {
        self.choice(
            "server.client_close",
            value,
            DEFAULT_CLIENT_CLOSE,
            |other| format!("must be {}, not {other:?}", ClientClose::names()),
        )
    }

    fn normalize_path(&mut self, value: Option<&str>) -> NormalizePath {
        self.choice(
            "server.normalize_path",
            value,
            DEFAULT_NORMALIZE_PATH,
            |other| format!("must be {}, not {other:?}", NormalizePath::names()),
        )
    }
}
