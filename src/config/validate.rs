//! `file` structs → runtime [`Config`]. One check per rule; every problem is collected with its key
//! path, nothing panics on bad input.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Value;

use super::file::*;
use super::*;

#[cfg(test)]
mod balancing_tests;

mod headers;
mod kafka_route;
mod mirror;

mod route_listen;
mod split;

use route_listen::RouteKey;

/// Largest accepted backend weight.
pub const MAX_WEIGHT: i64 = 10_000;
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

    fn routes(&mut self, value: Option<Value>, upstreams: &[UpstreamConfig]) -> Vec<RouteConfig> {
        let items = match value {
            None => return Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => {
                self.problem("routes", "must be an array of tables ([[routes]])");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut seen: Vec<RouteKey> = Vec::new();
        for (i, v) in items.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(mut r) = self.decode::<RouteFile>(&path, v) else {
                continue;
            };
            let target = self.route_target(&path, &r, upstreams);
            // lb answers itself (`respond`) or produces to Kafka: nothing is proxied.
            let responds = (r.respond.is_some() || r.kafka.is_some())
                && r.upstream.is_none()
                && r.split.is_none();
            let host = r.host.as_deref().map(str::to_ascii_lowercase);
            if let Some(h) = &host {
                if let Err(m) = check_route_host(h) {
                    self.problem(join(&path, "host"), m);
                }
            }
            let Some(matcher) = self.path_match(&path, &r) else {
                continue;
            };
            let skip_regex = r.skip_regex.unwrap_or(false);
            let is_prefix = matches!(matcher, PathMatch::Prefix(_));
            if skip_regex && !is_prefix {
                self.problem(
                    join(&path, "skip_regex"),
                    "only applies to path_prefix routes (NGINX `^~`)",
                );
            }
            if let Some(rp) = &r.replace_prefix {
                if responds {
                    self.problem(
                        join(&path, "replace_prefix"),
                        "only applies to routes with an upstream",
                    );
                } else if !is_prefix {
                    self.problem(
                        join(&path, "replace_prefix"),
                        "only applies to path_prefix routes (NGINX refuses a URI in proxy_pass \
                         inside regex and exact locations too)",
                    );
                } else if !rp.starts_with('/') {
                    self.problem(join(&path, "replace_prefix"), "must start with '/'");
                } else if http::uri::PathAndQuery::try_from(rp.as_str()).is_err()
                    || rp.contains('?')
                {
                    self.problem(
                        join(&path, "replace_prefix"),
                        "must be a valid path (no query, no spaces)",
                    );
                }
            }
            let scheme = r.scheme.as_deref().and_then(|name| {
                let scheme = Scheme::parse(name);
                if scheme.is_none() {
                    let msg = format!("expected {}, got {name:?}", Scheme::names());
                    self.problem(join(&path, "scheme"), msg);
                }
                scheme
            });
            let listen = self.route_listen(&path, r.listen.take(), scheme);
            // Routes for different schemes or listeners do not clash.
            let key = RouteKey {
                host: host.clone(),
                path: matcher.describe(),
                scheme,
                listen: listen.clone(),
            };
            if seen.iter().any(|k| k.clashes(&key)) {
                self.problem(
                    &path,
                    format!(
                        "duplicate route: same host and {} as an earlier route",
                        matcher.describe()
                    ),
                );
            }
            seen.push(key);
            if r.rate_limits.is_some() && responds {
                self.problem(
                    join(&path, "rate_limits"),
                    "only applies to routes with an upstream (as in NGINX, where `return` \
                     answers before `limit_req`)",
                );
            }
            if responds {
                self.proxied_only(&path, &r);
            }
            let timeouts = self.route_timeouts(&path, &r);
            let rate_limits = self.rate_limit_names(&join(&path, "rate_limits"), r.rate_limits);
            let set_request_headers =
                self.header_rules(&join(&path, "set_request_headers"), r.set_request_headers);
            let add_response_headers =
                self.response_headers(&path, r.add_response_headers, r.add_response_headers_always);
            let max_body_bytes = self.route_body_limit(&path, r.max_body_bytes);
            let access = r.access.map(|a| self.access(&join(&path, "access"), a));
            let mirror = self.route_mirror(&path, r.mirror.take(), upstreams);
            let fault = if responds {
                None
            } else {
                self.fault(&path, r.fault)
            };
            let Some(target) = target else {
                continue;
            };
            out.push(RouteConfig {
                host,
                path: matcher,
                skip_regex,
                replace_prefix: r.replace_prefix,
                rate_limits,
                access,
                scheme,
                listen,
                target,
                set_request_headers,
                add_response_headers,
                timeouts,
                max_body_bytes,
                mirror,
                fault,
            });
        }
        out
    }

    /// Exactly one of `path_exact`, `path_prefix` (the default, "/") and `path_regex`.
    /// `upstream`, or `respond` with its `body` or `location`, or `kafka`: exactly one.
    fn route_target(
        &mut self,
        path: &str,
        r: &RouteFile,
        upstreams: &[UpstreamConfig],
    ) -> Option<RouteTarget> {
        if r.kafka.is_some() {
            return self.kafka_route(path, r);
        }
        if r.split.is_some() {
            let other = [
                ("upstream", r.upstream.is_some()),
                ("respond", r.respond.is_some()),
            ];
            if let Some((key, _)) = other.iter().find(|(_, set)| *set) {
                let msg = format!("a route has `{key}` or `split`, not both");
                self.problem(join(path, key), msg);
                return None;
            }
            self.only_respond(path, r);
            return self.split(path, r, upstreams).map(RouteTarget::Split);
        }
        if r.split_by.is_some() {
            self.problem(join(path, "split_by"), "only with `split`");
        }
        let status = match (&r.upstream, r.respond) {
            (Some(_), Some(_)) => {
                self.problem(
                    join(path, "respond"),
                    "a route has `upstream` (proxy) or `respond` (lb answers), not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    join(path, "upstream"),
                    "required (or `respond = STATUS` for an answer from lb itself)",
                );
                return None;
            }
            (Some(u), None) => {
                self.only_respond(path, r);
                self.known_upstream(&join(path, "upstream"), u, upstreams);
                return Some(RouteTarget::Upstream(u.clone()));
            }
            (None, Some(s)) => s,
        };
        let before = self.problems.len();
        if !(200..=599).contains(&status) {
            self.problem(join(path, "respond"), "must be a status from 200 to 599");
        }
        let status = status.clamp(200, 599) as u16;
        let mut template = |key: &str, text: &Option<String>| {
            let t = text.as_deref().map(respond::Template::parse)?;
            t.map_err(|m| self.problem(join(path, key), m)).ok()
        };
        let body = template("body", &r.body);
        let location = template("location", &r.location);
        if r.location
            .as_deref()
            .is_some_and(|l| l.chars().any(char::is_control))
        {
            self.problem(
                join(path, "location"),
                "must not contain control characters (it is a header value)",
            );
        }
        if matches!(status, 204 | 304) && r.body.is_some() {
            self.problem(join(path, "body"), format!("a {status} answer has no body"));
        }
        if let Some(t) = &r.content_type {
            let valid = !t.trim().is_empty() && http::HeaderValue::from_str(t).is_ok();
            if !valid {
                self.problem(
                    join(path, "content_type"),
                    "must be a header value, e.g. \"application/json\"",
                );
            } else if respond::is_redirect(status) || matches!(status, 204 | 304) {
                self.problem(join(path, "content_type"), "only for an answer with a body");
            }
        }
        if respond::is_redirect(status) {
            if r.location.is_none() {
                self.problem(
                    join(path, "location"),
                    format!("required with respond = {status} (where to)"),
                );
            }
            if r.body.is_some() {
                self.problem(
                    join(path, "body"),
                    "not with a redirect (lb writes a short one naming the location)",
                );
            }
        } else if r.location.is_some() {
            self.problem(
                join(path, "location"),
                "only with a redirect status (301, 302, 303, 307, 308)",
            );
        }
        (self.problems.len() == before).then_some(RouteTarget::Respond(respond::Respond {
            status,
            body,
            location,
            content_type: r.content_type.clone(),
        }))
    }

    /// `body`, `location` and `content_type` belong to `respond` routes.
    fn only_respond(&mut self, path: &str, r: &RouteFile) {
        let only_respond = [
            ("body", &r.body),
            ("location", &r.location),
            ("content_type", &r.content_type),
        ];
        for (key, v) in only_respond {
            if v.is_some() {
                self.problem(join(path, key), "only with `respond`");
            }
        }
    }

    fn path_match(&mut self, path: &str, r: &RouteFile) -> Option<PathMatch> {
        let given = [
            ("path_exact", &r.path_exact),
            ("path_prefix", &r.path_prefix),
            ("path_regex", &r.path_regex),
        ];
        let set: Vec<&str> = given
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        if set.len() > 1 {
            self.problem(
                join(path, set[1]),
                format!(
                    "give one of path_exact, path_prefix and path_regex (also {})",
                    set[0]
                ),
            );
            return None;
        }
        for (key, value) in &given[..2] {
            if value.as_deref().is_some_and(|p| !p.starts_with('/')) {
                self.problem(join(path, key), "must start with '/'");
            }
        }
        if let Some(p) = &r.path_exact {
            return Some(PathMatch::Exact(p.clone()));
        }
        if let Some(re) = &r.path_regex {
            return match PathRegex::new(re) {
                Ok(re) => Some(PathMatch::Regex(re)),
                Err(e) => {
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or("").trim();
                    self.problem(
                        join(path, "path_regex"),
                        format!("invalid regular expression {re:?}: {last}"),
                    );
                    None
                }
            };
        }
        Some(PathMatch::Prefix(
            r.path_prefix.clone().unwrap_or_else(|| "/".to_string()),
        ))
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

/// A route's `host`: a name, `*.name` (any subdomain), `.name` (the name and its subdomains) or
/// `name.*` (the name followed by any suffix).
fn check_route_host(h: &str) -> Result<(), String> {
    let name = h
        .strip_prefix("*.")
        .or_else(|| h.strip_prefix('.'))
        .or_else(|| h.strip_suffix(".*"))
        .unwrap_or(h);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if h.is_empty() {
        return Err("must not be empty (leave it out for the default group)".into());
    }
    if name.contains('*') {
        return Err(format!(
            "{h:?}: a wildcard is only allowed as a leading \"*.\" (e.g. \"*.example.com\") or a \
             trailing \".*\" (e.g. \"www.example.*\")"
        ));
    }
    if name.parse::<std::net::Ipv6Addr>().is_ok()
        || name.split('.').all(label_ok) && name.len() <= 253
    {
        return Ok(());
    }
    Err(format!(
        "{h:?} is not a host name (\"example.com\", \"*.example.com\", \".example.com\" or \
         \"www.example.*\"; no port)"
    ))
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
