//! Validation of `[[routes]]`: what a route matches (host, path, scheme, listeners), what it
//! does (proxies to an upstream or a split, answers itself, produces to Kafka) and its own
//! settings, each problem with its key path. Its `listen` is checked in [`super::listen`], its
//! `mirror` in [`super::mirror`]; `respond`, `split`, `fault`, `kafka` and the header rules in
//! their own sections' checks.

use std::time::Duration;

use toml::Value;

use super::file::*;
use super::listen::RouteKey;
use crate::config::validate::{join, Checker};
use crate::config::*;

impl Checker {
    pub(in crate::config) fn routes(
        &mut self,
        value: Option<Value>,
        upstreams: &[UpstreamConfig],
    ) -> Vec<RouteConfig> {
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
            let Some(r) = self.decode::<RouteFile>(&path, v) else {
                continue;
            };
            out.extend(self.route(&path, r, upstreams, &mut seen));
        }
        out
    }

    /// One `[[routes]]` entry, every problem reported before `None` for an unusable one.
    fn route(
        &mut self,
        path: &str,
        mut r: RouteFile,
        upstreams: &[UpstreamConfig],
        seen: &mut Vec<RouteKey>,
    ) -> Option<RouteConfig> {
        let target = self.route_target(path, &r, upstreams);
        // lb answers itself (`respond`) or produces to Kafka: nothing is proxied.
        let responds =
            (r.respond.is_some() || r.kafka.is_some()) && r.upstream.is_none() && r.split.is_none();
        let host = r.host.as_deref().map(str::to_ascii_lowercase);
        if let Some(h) = &host {
            if let Err(m) = check_route_host(h) {
                self.problem(join(path, "host"), m);
            }
        }
        let matcher = self.path_match(path, &r)?;
        let skip_regex = r.skip_regex.unwrap_or(false);
        let is_prefix = matches!(matcher, PathMatch::Prefix(_));
        if skip_regex && !is_prefix {
            self.problem(
                join(path, "skip_regex"),
                "only applies to path_prefix routes (NGINX `^~`)",
            );
        }
        self.replace_prefix(path, r.replace_prefix.as_deref(), responds, is_prefix);
        let scheme = self.route_scheme(path, r.scheme.as_deref());
        let listen = self.route_listen(path, r.listen.take(), scheme);
        let key = RouteKey {
            host: host.clone(),
            path: matcher.describe(),
            scheme,
            listen: listen.clone(),
        };
        self.unique_route(path, key, seen);
        if r.rate_limits.is_some() && responds {
            self.problem(
                join(path, "rate_limits"),
                "only applies to routes with an upstream (as in NGINX, where `return` \
                 answers before `limit_req`)",
            );
        }
        if responds {
            self.proxied_only(path, &r);
        }
        let timeouts = self.route_timeouts(path, &r);
        let rate_limits = self.rate_limit_names(&join(path, "rate_limits"), r.rate_limits);
        let set_request_headers =
            self.header_rules(&join(path, "set_request_headers"), r.set_request_headers);
        let add_response_headers =
            self.response_headers(path, r.add_response_headers, r.add_response_headers_always);
        let max_body_bytes = self.route_body_limit(path, r.max_body_bytes);
        let access = r.access.map(|a| self.access(&join(path, "access"), a));
        let mirror = self.route_mirror(path, r.mirror.take(), upstreams);
        let fault = if responds {
            None
        } else {
            self.fault(path, r.fault)
        };
        let target = target?;
        Some(RouteConfig {
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
        })
    }

    /// `replace_prefix`: a path, on a proxied `path_prefix` route.
    fn replace_prefix(&mut self, path: &str, value: Option<&str>, responds: bool, is_prefix: bool) {
        let Some(rp) = value else {
            return;
        };
        if responds {
            self.problem(
                join(path, "replace_prefix"),
                "only applies to routes with an upstream",
            );
        } else if !is_prefix {
            self.problem(
                join(path, "replace_prefix"),
                "only applies to path_prefix routes (NGINX refuses a URI in proxy_pass \
                 inside regex and exact locations too)",
            );
        } else if !rp.starts_with('/') {
            self.problem(join(path, "replace_prefix"), "must start with '/'");
        } else if http::uri::PathAndQuery::try_from(rp).is_err() || rp.contains('?') {
            self.problem(
                join(path, "replace_prefix"),
                "must be a valid path (no query, no spaces)",
            );
        }
    }

    /// `scheme`: which of the listeners' schemes the route serves (`None`: both).
    fn route_scheme(&mut self, path: &str, value: Option<&str>) -> Option<Scheme> {
        value.and_then(|name| {
            let scheme = Scheme::parse(name);
            if scheme.is_none() {
                let msg = format!("expected {}, got {name:?}", Scheme::names());
                self.problem(join(path, "scheme"), msg);
            }
            scheme
        })
    }

    /// A route clashes with an earlier one of the same host and path, unless their schemes or
    /// listeners differ.
    fn unique_route(&mut self, path: &str, key: RouteKey, seen: &mut Vec<RouteKey>) {
        if seen.iter().any(|k| k.clashes(&key)) {
            let msg = format!(
                "duplicate route: same host and {} as an earlier route",
                key.path
            );
            self.problem(path, msg);
        }
        seen.push(key);
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
        match (&r.upstream, r.respond) {
            (Some(_), Some(_)) => {
                self.problem(
                    join(path, "respond"),
                    "a route has `upstream` (proxy) or `respond` (lb answers), not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    join(path, "upstream"),
                    "required (or `respond = STATUS` for an answer from lb itself)",
                );
                None
            }
            (Some(u), None) => {
                self.only_respond(path, r);
                self.known_upstream(&join(path, "upstream"), u, upstreams);
                Some(RouteTarget::Upstream(u.clone()))
            }
            (None, Some(status)) => self.respond(path, r, status),
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

    /// The keys of a `respond` route that only mean something for proxied requests.
    pub(in crate::config) fn proxied_only(&mut self, path: &str, r: &RouteFile) {
        let set = [
            ("set_request_headers", r.set_request_headers.is_some()),
            ("add_response_headers", r.add_response_headers.is_some()),
            ("connect_timeout", r.connect_timeout.is_some()),
            ("read_timeout", r.read_timeout.is_some()),
            ("write_timeout", r.write_timeout.is_some()),
            ("mirror", r.mirror.is_some()),
            ("fault", r.fault.is_some()),
        ];
        for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
            self.problem(join(path, key), "only applies to routes with an upstream");
        }
    }

    /// A route's `connect_timeout`, `read_timeout` and `write_timeout`.
    pub(in crate::config) fn route_timeouts(&mut self, path: &str, r: &RouteFile) -> RouteTimeouts {
        let mut one = |key: &str, v: &Option<String>| {
            let v = v.as_deref()?;
            Some(self.duration(&join(path, key), Some(v), Duration::ZERO, false))
                .filter(|d| !d.is_zero())
        };
        RouteTimeouts {
            connect: one("connect_timeout", &r.connect_timeout),
            read: one("read_timeout", &r.read_timeout),
            write: one("write_timeout", &r.write_timeout),
        }
    }

    /// A route's `max_body_bytes`: `0` is no limit (NGINX's `client_max_body_size 0`).
    pub(in crate::config) fn route_body_limit(
        &mut self,
        path: &str,
        v: Option<i64>,
    ) -> Option<u64> {
        let n = self.int(&join(path, "max_body_bytes"), Some(v?), 0, i64::MAX, 0);
        Some(if n == 0 { u64::MAX } else { n as u64 })
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
