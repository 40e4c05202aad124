//! Validation of `[upstreams.*]`: strategy, backends, timeouts, retries, `health_check` and
//! `passive`, and of `[resolver]`, each problem reported with its key path.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::time::Duration;

use toml::Value;

use super::file::*;
use crate::config::validate::{join, Checker};
use crate::config::*;

impl Checker {
    pub(in crate::config) fn upstreams(&mut self, value: Option<Value>) -> Vec<UpstreamConfig> {
        let table = match value {
            None => {
                self.problem("upstreams", "at least one upstream is required");
                return Vec::new();
            }
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.problem(
                    "upstreams",
                    "must be a table of upstreams ([upstreams.NAME])",
                );
                return Vec::new();
            }
        };
        if table.is_empty() {
            self.problem("upstreams", "at least one upstream is required");
        }
        let sorted: BTreeMap<String, Value> = table.into_iter().collect();
        let mut out = Vec::new();
        for (name, v) in sorted {
            let path = format!("upstreams.{name}");
            if let Some(file) = self.decode::<UpstreamFile>(&path, v) {
                if let Some(u) = self.upstream(&path, name, file) {
                    out.push(u);
                }
            }
        }
        out
    }

    fn upstream(&mut self, path: &str, name: String, u: UpstreamFile) -> Option<UpstreamConfig> {
        let strategy = u.strategy.as_deref();
        let strategy = self.choice(
            join(path, "strategy"),
            strategy,
            Strategy::RoundRobin,
            |n| format!("unknown strategy {n:?} (expected {})", Strategy::names()),
        );
        let hash_key = self.hash_key(path, strategy, u.hash_key.as_deref());
        let host_header = self.host_header(path, u.host_header.as_deref());
        let backends = self.backends(path, strategy, u.backends);
        let health_check = u.health_check.and_then(|v| {
            let hpath = join(path, "health_check");
            let file = self.decode::<HealthCheckFile>(&hpath, v)?;
            self.health_check(&hpath, file)
        });
        let passive = match u.passive {
            None => PassiveConfig::default(),
            Some(v) => {
                let ppath = join(path, "passive");
                let file = self.decode::<PassiveFile>(&ppath, v)?;
                self.passive(&ppath, file)
            }
        };
        let protocol = self.protocol(path, u.protocol.as_deref());
        let tls = u.tls.and_then(|t| self.upstream_tls(path, t));
        if let Some(h) = &health_check {
            if h.kind == CheckKind::Grpc && protocol != Protocol::Http2 {
                self.problem(
                    join(path, "health_check.type"),
                    "\"grpc\" checks need protocol = \"http2\" (gRPC runs on HTTP/2)",
                );
            }
        }
        let [connect_timeout, read_timeout, write_timeout, idle_timeout] = [
            (
                "connect_timeout",
                u.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            ),
            ("read_timeout", u.read_timeout, DEFAULT_READ_TIMEOUT),
            ("write_timeout", u.write_timeout, DEFAULT_WRITE_TIMEOUT),
            ("idle_timeout", u.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        ]
        .map(|(key, v, default)| self.duration(&join(path, key), v.as_deref(), default, false));
        Some(UpstreamConfig {
            name,
            strategy,
            backends,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            retries: self.int(
                &join(path, "retries"),
                u.retries,
                0,
                100,
                DEFAULT_RETRIES as i64,
            ) as u32,
            health_check,
            passive,
            protocol,
            tls,
            hash_key,
            host_header,
            rate_limits: self
                .rate_limit_names(&join(path, "rate_limits"), u.rate_limits)
                .unwrap_or_default(),
            set_request_headers: self
                .header_rules(&join(path, "set_request_headers"), u.set_request_headers)
                .unwrap_or_default(),
            add_response_headers: self
                .response_headers(path, u.add_response_headers, u.add_response_headers_always)
                .unwrap_or_default(),
            resolve_interval: self.resolve_interval(path, u.resolve_interval.as_deref()),
        })
    }

    /// `upstreams.X.host_header`: `client`, `client_host`, `upstream` or a literal host.
    fn host_header(&mut self, path: &str, value: Option<&str>) -> HostHeader {
        match value {
            None | Some("client") => HostHeader::Client,
            Some("client_host") => HostHeader::ClientHost,
            Some("upstream") => HostHeader::Upstream,
            Some(literal) => {
                if literal.is_empty() || http::HeaderValue::from_str(literal).is_err() {
                    self.problem(
                        join(path, "host_header"),
                        "must be \"client\", \"client_host\", \"upstream\" or a host name (a valid \
                         header value)",
                    );
                }
                HostHeader::Literal(literal.to_string())
            }
        }
    }

    /// `upstreams.X.backends`: each checked, duplicates left out; backups only with the
    /// strategies that have them, and one backend at least that takes traffic.
    fn backends(
        &mut self,
        path: &str,
        strategy: Strategy,
        files: Vec<Value>,
    ) -> Vec<BackendConfig> {
        if files.is_empty() {
            self.problem(join(path, "backends"), "must list at least one backend");
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for (i, v) in files.into_iter().enumerate() {
            let bpath = format!("{path}.backends[{i}]");
            let Some(b) = self.backend(&bpath, v) else {
                continue;
            };
            if b.backup && !matches!(strategy, Strategy::RoundRobin | Strategy::LeastConnections) {
                self.problem(
                    join(&bpath, "backup"),
                    format!(
                        "backups need strategy \"round_robin\" or \"least_connections\" \
                         (not {:?}, as in NGINX)",
                        strategy.as_str()
                    ),
                );
            }
            if let Some(j) = backends.iter().position(|o| o.address == b.address) {
                self.problem(
                    join(&bpath, "address"),
                    format!("duplicate backend {:?} (also backends[{j}])", b.address),
                );
            } else {
                backends.push(b);
            }
        }
        if !backends.is_empty() && backends.iter().all(|b| b.backup || b.down) {
            self.problem(
                join(path, "backends"),
                "every backend is a backup or down: at least one must take traffic",
            );
        }
        backends
    }

    /// `upstreams.X.resolve_interval`: at least a second.
    fn resolve_interval(&mut self, path: &str, value: Option<&str>) -> Duration {
        let key = join(path, "resolve_interval");
        let d = self.duration(&key, value, DEFAULT_RESOLVE_INTERVAL, false);
        if d < Duration::from_secs(1) {
            self.problem(key, "must be at least 1s");
        }
        d
    }

    fn hash_key(&mut self, path: &str, strategy: Strategy, value: Option<&str>) -> Option<HashKey> {
        let kpath = join(path, "hash_key");
        let Some(value) = value else {
            if strategy == Strategy::ConsistentHash {
                self.problem(
                    kpath,
                    "required with strategy \"consistent_hash\" (\"client_ip\", \"uri\", \
                     \"path\", \"header:NAME\" or \"cookie:NAME\")",
                );
            }
            return None;
        };
        if strategy != Strategy::ConsistentHash {
            self.problem(
                &kpath,
                format!(
                    "only used with strategy \"consistent_hash\" (this upstream's is {:?})",
                    strategy.as_str()
                ),
            );
        }
        let key = parse_key(value);
        if key.is_none() {
            self.problem(
                kpath,
                format!("unknown hash key {value:?} (expected {KEY_NAMES})"),
            );
        }
        key.filter(|_| strategy == Strategy::ConsistentHash)
    }

    fn protocol(&mut self, path: &str, value: Option<&str>) -> Protocol {
        self.choice(join(path, "protocol"), value, Protocol::Http1, |other| {
            format!(
                "unknown protocol {other:?} (expected {})",
                Protocol::names()
            )
        })
    }

    fn upstream_tls(&mut self, path: &str, t: UpstreamTlsFile) -> Option<UpstreamTls> {
        let tpath = join(path, "tls");
        let verify = t.verify.unwrap_or(true);
        if !verify {
            self.warning(
                &join(&tpath, "verify"),
                "backend certificates are not verified: anyone on the path to the backends can \
                 impersonate them",
            );
        }
        // Without sni, an IP backend's certificate is verified against its address (an IP
        // address subject alternative name), see `snapshot::make_peer`.
        if let Some(sni) = &t.sni {
            if sni.is_empty() || sni.parse::<std::net::IpAddr>().is_ok() {
                self.problem(join(&tpath, "sni"), "must be a host name");
            }
        }
        let ca = match t.ca_file.as_deref() {
            None => None,
            Some(f) => match crate::tls::CaCerts::load(std::path::Path::new(f)) {
                Ok(ca) => Some(ca),
                Err(m) => {
                    self.problem(join(&tpath, "ca_file"), m);
                    return None;
                }
            },
        };
        Some(UpstreamTls {
            sni: t.sni,
            ca,
            verify,
        })
    }

    fn backend(&mut self, path: &str, v: Value) -> Option<BackendConfig> {
        let t = self.backend_table(path, v)?;
        let resolve = t.resolve.unwrap_or(false);
        let (address, srv) = match (t.address, t.srv) {
            (Some(a), None) => (a, false),
            (None, Some(s)) => (s, true),
            (Some(_), Some(_)) => {
                self.problem(path, "has both address and srv: give exactly one");
                return None;
            }
            (None, None) => {
                self.problem(path, "needs address (\"host:port\") or srv");
                return None;
            }
        };
        if srv {
            if t.weight.is_some() {
                let msg = "not with srv: SRV records supply the weights";
                self.problem(join(path, "weight"), msg);
            }
            if t.resolve.is_some() {
                let msg = "not with srv: SRV targets are always followed";
                self.problem(join(path, "resolve"), msg);
            }
            if !is_srv_name(&address) {
                self.problem(
                    join(path, "srv"),
                    format!("{address:?} is not an SRV name of the form \"_service._proto.name\""),
                );
                return None;
            }
        }
        let weight = self.weight(path, t.weight);
        let max_conns = self.int(&join(path, "max_conns"), t.max_conns, 0, 1_000_000, 0) as u32;
        let (backup, down) = (t.backup.unwrap_or(false), t.down.unwrap_or(false));
        if backup && down {
            self.problem(
                join(path, "down"),
                "a backend is a backup or down, not both",
            );
        }
        let discovery = match (srv, resolve) {
            (true, _) => Some(Discovery::Srv {
                name: address.clone(),
            }),
            (false, true) => self.resolved_name(path, &address)?,
            (false, false) => None,
        };
        let addr = match discovery {
            Some(_) => Some(SocketAddr::from(([0, 0, 0, 0], 0))),
            None => self.resolve(&join(path, "address"), &address),
        };
        if t.hash_name.as_deref() == Some("") {
            self.problem(
                join(path, "hash_name"),
                "must not be empty (leave it out to hash the address)",
            );
        }
        Some(BackendConfig {
            address,
            addr: addr?,
            discovery,
            weight: weight?,
            backup,
            down,
            max_conns,
            hash_name: t.hash_name.filter(|h| !h.is_empty()),
        })
    }

    /// A backend entry as a table: `"host:port"` is `{ address = "host:port" }`.
    fn backend_table(&mut self, path: &str, v: Value) -> Option<BackendTable> {
        match v {
            Value::String(s) => Some(BackendTable {
                address: Some(s),
                srv: None,
                weight: None,
                backup: None,
                down: None,
                max_conns: None,
                resolve: None,
                hash_name: None,
            }),
            v @ Value::Table(_) => self.decode::<BackendTable>(path, v),
            _ => {
                self.problem(
                    path,
                    "expected \"host:port\" or { address = \"host:port\", weight = N, ... }",
                );
                None
            }
        }
    }

    /// A backend's `weight`: 1 to [`MAX_WEIGHT`], 1 when absent.
    fn weight(&mut self, path: &str, weight: Option<i64>) -> Option<NonZeroU32> {
        match weight {
            Some(w) if w < 1 => {
                self.problem(join(path, "weight"), "must be at least 1");
                None
            }
            Some(w) if w > MAX_WEIGHT => {
                self.problem(
                    join(path, "weight"),
                    format!("must be at most {MAX_WEIGHT}"),
                );
                None
            }
            Some(w) => NonZeroU32::new(w as u32),
            None => NonZeroU32::new(1),
        }
    }

    /// `resolve = true`: the name and port DNS discovery follows. `Some(None)` (a warning) for
    /// an IP address, `None` (a problem) for what is no `host:port`.
    fn resolved_name(&mut self, path: &str, address: &str) -> Option<Option<Discovery>> {
        let literal = host_of(address).is_none();
        match address.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((h, Ok(port))) if !h.is_empty() && !literal => Some(Some(Discovery::Name {
                host: h.to_string(),
                port,
            })),
            _ if literal && address.parse::<SocketAddr>().is_ok() => {
                self.warning(
                    &join(path, "resolve"),
                    format!("{address:?} is an IP address: there is nothing to resolve"),
                );
                Some(None)
            }
            _ => {
                self.problem(
                    join(path, "address"),
                    format!("invalid address {address:?} (expected host:port)"),
                );
                None
            }
        }
    }

    pub(in crate::config) fn resolver(&mut self, r: ResolverFile) -> ResolverConfig {
        let mut nameservers = Vec::new();
        for (i, n) in r.nameservers.iter().enumerate() {
            let parsed = n
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| n.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 53).into()));
            match parsed {
                Some(a) => nameservers.push(a),
                None => self.problem(
                    format!("resolver.nameservers[{i}]"),
                    format!("{n:?} is not an IP address with an optional port (\"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\")"),
                ),
            }
        }
        if r.nameservers.is_empty() {
            self.problem(
                "resolver.nameservers",
                "must list at least one server (leave [resolver] out to use resolv.conf)",
            );
        }
        let timeout = self.duration(
            "resolver.timeout",
            r.timeout.as_deref(),
            DEFAULT_RESOLVER_TIMEOUT,
            false,
        );
        ResolverConfig {
            nameservers,
            timeout,
        }
    }

    fn resolve(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        if let Ok(a) = text.parse() {
            return Some(a);
        }
        let has_port = text
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !has_port {
            self.problem(
                path,
                format!("invalid address {text:?} (expected host:port or ip:port)"),
            );
            return None;
        }
        match text.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => Some(a),
                None => {
                    self.problem(path, format!("{text:?} resolved to no address"));
                    None
                }
            },
            Err(e) => {
                self.problem(path, format!("cannot resolve {text:?}: {e}"));
                None
            }
        }
    }
}

/// `_service._proto.name`: two underscore labels, then at least one more label.
fn is_srv_name(name: &str) -> bool {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.len() >= 3
        && labels[0].len() > 1
        && labels[0].starts_with('_')
        && labels[1].len() > 1
        && labels[1].starts_with('_')
        && labels.iter().all(|l| label_ok(l))
}

/// The forms of a request key (`hash_key`, `rate_limits.X.key`).
pub(in crate::config) const KEY_NAMES: &str =
    "\"client_ip\", \"uri\", \"path\", \"header:NAME\" or \"cookie:NAME\"";

/// A request key: `client_ip`, `uri`, `path`, `header:NAME` or `cookie:NAME`.
pub(in crate::config) fn parse_key(value: &str) -> Option<HashKey> {
    let token = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match value {
        "client_ip" => Some(HashKey::ClientIp),
        "uri" => Some(HashKey::Uri),
        "path" => Some(HashKey::Path),
        _ => match value.split_once(':') {
            Some(("header", n)) if token(n) => Some(HashKey::Header(n.to_ascii_lowercase())),
            Some(("cookie", n)) if token(n) => Some(HashKey::Cookie(n.to_string())),
            _ => None,
        },
    }
}
