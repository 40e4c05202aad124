//! File structs → runtime [`Config`]: the machinery every section's `check.rs` shares (the
//! [`Checker`] collecting problems and warnings with their key paths, `decode`, `int`,
//! `duration`, `choice`, ...) and the top level, which decodes each section and calls its check
//! in a fixed order (so problems come out in file-reading order). One check per rule; nothing
//! panics on bad input.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Value;

use super::admin::file::AdminFile;
use super::analytics::file::AnalyticsFile;
use super::server::file::ServerFile;
use super::upstream::file::ResolverFile;
use super::*;

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "upstreams",
    "routes",
    "resolver",
    "analytics",
    "rate_limits",
];

pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return Err(vec![syntax_problem(text, &e)]),
    };
    let mut c = Checker::default();
    let config = c.config(table);
    match config {
        Some(config) if c.problems.is_empty() => Ok(Config {
            warnings: c.warnings,
            ..config
        }),
        _ => Err(c.problems),
    }
}

/// The keys (outermost first) of the value in `value` that makes decoding it as `T` fail with
/// `msg`: the one whose removal changes the outcome, followed into nested tables. Empty when no
/// single key is to blame.
fn culprit<T: DeserializeOwned>(value: &Value, msg: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    'deeper: loop {
        let mut here = value;
        for k in &keys {
            here = &here[k.as_str()];
        }
        let Some(table) = here.as_table() else {
            return keys;
        };
        for k in table.keys() {
            let mut without = value.clone();
            let mut t = &mut without;
            for p in &keys {
                t = &mut t[p.as_str()];
            }
            if let Some(t) = t.as_table_mut() {
                t.remove(k);
            }
            let same = matches!(T::deserialize(without), Err(e) if e.message() == msg);
            if !same {
                keys.push(k.clone());
                continue 'deeper;
            }
        }
        return keys;
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    Problem {
        path: String::new(),
        message: format!("TOML syntax error{location}: {}", e.message().trim()),
    }
}

#[derive(Default)]
pub(in crate::config) struct Checker {
    pub(in crate::config) problems: Vec<Problem>,
    /// The names under `[rate_limits]` (checked first: upstreams and routes name them).
    pub(in crate::config) rate_limit_names: Vec<String>,
    pub(in crate::config) warnings: Vec<Problem>,
    /// Listening addresses seen so far, with their key paths.
    pub(in crate::config) listeners: Vec<(String, SocketAddr)>,
    /// `[analytics.kafka].brokers`: the brokers of `kafka` routes that name none.
    pub(in crate::config) analytics_brokers: Option<Vec<String>>,
}

impl Checker {
    pub(in crate::config) fn problem(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `value` as one of `T`'s names (`None`: `default`); an unknown name is a problem at
    /// `path`, worded by `message` from the name, and gives `default`.
    pub(in crate::config) fn choice<T: Named>(
        &mut self,
        path: impl Into<String>,
        value: Option<&str>,
        default: T,
        message: impl FnOnce(&str) -> String,
    ) -> T {
        let Some(name) = value else {
            return default;
        };
        T::parse(name).unwrap_or_else(|| {
            self.problem(path, message(name));
            default
        })
    }

    pub(in crate::config) fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a listening address, reporting every earlier one it collides with.
    pub(in crate::config) fn listener(&mut self, path: String, addr: SocketAddr) {
        let clashes: Vec<String> = self
            .listeners
            .iter()
            .filter(|(_, other)| listeners::overlap(addr, *other))
            .map(|(key, other)| format!("overlaps {key} ({other})"))
            .collect();
        for c in clashes {
            self.problem(path.clone(), c);
        }
        self.listeners.push((path, addr));
    }

    /// Decodes `value` into a file struct. Unknown keys are reported one by one (each at its own
    /// path) and removed, so a single typo does not hide the rest of the table.
    /// Decodes the table at `path`; an unknown key or a value of the wrong type is reported with
    /// its own key path (`server.tls.http2: invalid type: ...`).
    pub(in crate::config) fn decode<T: DeserializeOwned>(
        &mut self,
        path: &str,
        mut value: Value,
    ) -> Option<T> {
        for _ in 0..64 {
            match T::deserialize(value.clone()) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let msg = e.message().to_string();
                    let unknown = msg
                        .strip_prefix("unknown field `")
                        .and_then(|rest| rest.split_once('`'));
                    match (unknown, value.as_table_mut()) {
                        (Some((key, expected)), Some(table)) if table.contains_key(key) => {
                            let expected = expected.trim_start_matches(", ");
                            self.problem(join(path, key), format!("unknown key ({expected})"));
                            table.remove(key);
                        }
                        _ => {
                            let at = culprit::<T>(&value, &msg)
                                .iter()
                                .fold(path.to_string(), |p, k| join(&p, k));
                            self.problem(at, msg.trim().to_string());
                            return None;
                        }
                    }
                }
            }
        }
        None
    }

    fn config(&mut self, mut table: toml::Table) -> Option<Config> {
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.problems.push(Problem {
                    path: key.clone(),
                    message: "unknown key (expected one of `server`, `admin`, `upstreams`, \
                              `routes`, `resolver`, `analytics`, `rate_limits`)"
                        .into(),
                });
            }
        }
        let server = match table.remove("server") {
            Some(v) => self.decode::<ServerFile>("server", v),
            None => Some(ServerFile::default()),
        };
        let server = server.and_then(|s| self.server(s));
        let admin = table
            .remove("admin")
            .and_then(|v| self.decode::<AdminFile>("admin", v))
            .and_then(|a| self.admin(a));
        let resolver = table
            .remove("resolver")
            .and_then(|v| self.decode::<ResolverFile>("resolver", v))
            .map(|r| self.resolver(r));
        let analytics = table
            .remove("analytics")
            .and_then(|v| self.decode::<AnalyticsFile>("analytics", v))
            .map(|a| self.analytics(a))
            .unwrap_or_default();
        self.analytics_brokers = analytics.kafka.as_ref().map(|k| k.brokers.clone());
        // Before the upstreams and routes, which name them.
        let rate_limits = self.rate_limits(table.remove("rate_limits"));
        let upstreams = self.upstreams(table.remove("upstreams"));
        let routes = self.routes(table.remove("routes"), &upstreams);
        if upstreams.len() > 1 && routes.is_empty() && self.problems.is_empty() {
            self.problem(
                "routes",
                "required when more than one upstream is defined (which upstream gets traffic?)",
            );
        }
        let mut server = server?;
        let limits = &mut server.limits;
        limits.max_body_bytes_any_route = routes
            .iter()
            .filter_map(|r| match &r.target {
                RouteTarget::Kafka(k) => Some(k.max_bytes),
                _ => r.max_body_bytes,
            })
            .fold(limits.max_body_bytes, u64::max);
        Some(Config {
            server,
            admin,
            upstreams,
            routes,
            resolver,
            analytics,
            rate_limits,
            warnings: Vec::new(),
        })
    }

    pub(in crate::config) fn int(
        &mut self,
        path: &str,
        v: Option<i64>,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        match v {
            None => default,
            Some(n) if n < min => {
                self.problem(path, format!("must be at least {min}"));
                default
            }
            Some(n) if n > max => {
                self.problem(path, format!("must be at most {max}"));
                default
            }
            Some(n) => n,
        }
    }

    pub(in crate::config) fn duration(
        &mut self,
        path: &str,
        v: Option<&str>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) if d.is_zero() && !zero_ok => {
                self.problem(path, "must be greater than zero");
                default
            }
            Some(Ok(d)) => d,
            Some(Err(m)) => {
                self.problem(path, m);
                default
            }
        }
    }

    pub(in crate::config) fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    path,
                    format!("invalid address {text:?} (expected ip:port, e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        }
    }
}

pub(in crate::config) fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

pub(in crate::config) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let addr: std::net::IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| format!("invalid CIDR {text:?} (expected e.g. \"10.0.0.0/8\")"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid prefix length in {text:?} (0..={max})"))?,
    };
    Ok(Cidr { addr, prefix })
}

/// Every problem `text` has, as `path: message` (none when it parses): for the sections' tests.
#[cfg(test)]
pub(in crate::config) fn problems_of(text: &str) -> Vec<String> {
    match crate::config::parse(text) {
        Ok(_) => Vec::new(),
        Err(ps) => ps
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        parse_cidr(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn cidr_parsing() {
        let c = cidr("10.0.0.0/8");
        assert_eq!((c.addr.to_string(), c.prefix), ("10.0.0.0".into(), 8));
        assert_eq!(cidr("127.0.0.1").prefix, 32, "a bare address is one host");
        assert_eq!(cidr("::1").prefix, 128);
        assert_eq!(cidr("fd00::/8").prefix, 8);
        assert_eq!(cidr("0.0.0.0/0").prefix, 0);
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/x",
            "",
            "/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cidr_membership() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(cidr("127.0.0.0/8").contains(ip("127.0.0.2")));
        assert!(cidr("127.0.0.1/32").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(cidr("10.1.0.0/20").contains(ip("10.1.15.255")));
        assert!(!cidr("10.1.0.0/20").contains(ip("10.1.16.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(
            !cidr("0.0.0.0/0").contains(ip("::1")),
            "families do not mix"
        );
        assert!(
            cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")),
            "an IPv4-mapped client is its IPv4 address"
        );
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe80::1")));
    }
}
