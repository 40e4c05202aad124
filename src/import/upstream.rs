//! `upstream NAME { ... }` → `[upstreams.NAME]`: servers, balancing method, failure accounting.
//!
//! NGINX counts `max_fails` failures within `fail_timeout` and then skips the server for
//! `fail_timeout`; lb ejects after `consecutive_failures` in a row for `ejection_time`. The import
//! maps one onto the other (`max_ejection_time = ejection_time` so ejections do not grow, and
//! `max_ejected_percent = 100` since NGINX has no cap). NGINX keeps these per server and lb per
//! upstream, so differing servers get the most common values and a note. A group of one server
//! never ejects it, as NGINX ignores `max_fails` then.

use std::collections::HashMap;

use super::model::*;
use super::tree::Directive;

/// NGINX's `max_fails` default.
const DEFAULT_MAX_FAILS: u32 = 1;
/// NGINX's `fail_timeout` default.
const DEFAULT_FAIL_TIMEOUT: &str = "10s";

/// One `server` line's failure settings, for the per-upstream vote.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Failures {
    max_fails: u32,
    fail_timeout: String,
    slow_start: Option<String>,
}

/// Maps an `upstream` block; `None` (with notes) when nothing of it can be used.
pub fn upstream(d: &Directive, notes: &mut Notes) -> Option<(Upstream, Option<At<usize>>)> {
    let Some(name) = d.args.first().filter(|_| d.args.len() == 1) else {
        notes.add(&d.loc, "upstream", "expects one name, skipped");
        return None;
    };
    let mut up = Upstream {
        name: name.clone(),
        loc: d.loc.clone(),
        label: format!("upstream {name}"),
        strategy: None,
        hash_key: None,
        backends: Vec::new(),
        passive: passive(&[], notes, d),
        tls: false,
        settings: None,
        zone: false,
    };
    let mut keepalive = None;
    let mut failures = Vec::new();
    let mut written = Vec::new();
    for c in d.children() {
        match c.name.as_str() {
            "server" => {
                if let Some((b, f)) = server(c, notes) {
                    up.backends.push(b);
                    failures.push(f);
                    written.extend(c.args.first().cloned());
                }
            }
            "least_conn" | "ip_hash" | "hash" | "random" => balancing(&mut up, c, notes),
            "zone" => up.zone = true,
            "keepalive" => match c.args.first().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if c.args.len() == 1 => {
                    keepalive = Some(At {
                        value: n,
                        loc: c.loc.clone(),
                    })
                }
                _ => notes.add(&c.loc, "keepalive", "expects a number, ignored"),
            },
            _ => notes.unsupported(c),
        }
    }
    if up.backends.is_empty() {
        notes.add(
            &d.loc,
            "upstream",
            format!("{name}: no server lb can use, skipped (and the locations proxying to it)"),
        );
        return None;
    }
    check_backup(&mut up, notes);
    if up.strategy == Some("consistent_hash") {
        // NGINX hashes each `server` argument as written: `10.0.0.1` is not `10.0.0.1:80`.
        for (b, c) in up.backends.iter_mut().zip(written) {
            if b.address != c && b.srv.is_none() {
                b.hash_name = Some(c);
            }
        }
    }
    up.passive = passive(&failures, notes, d);
    Some((up, keepalive))
}

/// A `server ADDR [params]` line.
fn server(d: &Directive, notes: &mut Notes) -> Option<(Backend, Failures)> {
    let Some(addr) = d.args.first() else {
        notes.add(&d.loc, "server", "no address, skipped");
        return None;
    };
    if addr.starts_with("unix:") {
        notes.add(
            &d.loc,
            "server",
            format!("{addr}: unix sockets are not supported, skipped"),
        );
        return None;
    }
    let mut b = Backend::new(with_port(addr, 80), d.loc.clone());
    let mut service = None;
    let mut f = Failures {
        max_fails: DEFAULT_MAX_FAILS,
        fail_timeout: DEFAULT_FAIL_TIMEOUT.to_string(),
        slow_start: None,
    };
    for p in &d.args[1..] {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        let number = value.parse::<u32>().ok();
        let time = duration(value);
        match (key, number, time) {
            ("weight", Some(n), _) if n >= 1 => b.weight = (n != 1).then_some(n),
            ("max_conns", Some(n), _) => b.max_conns = (n != 0).then_some(n),
            ("max_fails", Some(n), _) => f.max_fails = n,
            ("fail_timeout", _, Some(t)) => f.fail_timeout = t,
            ("slow_start", _, Some(t)) => f.slow_start = Some(t),
            ("backup", ..) if value.is_empty() => b.backup = true,
            ("down", ..) if value.is_empty() => b.down = true,
            ("resolve", ..) if value.is_empty() => b.resolve = true,
            ("service", ..) if !value.is_empty() => service = Some(value.to_string()),
            _ => notes.add(&d.loc, "server", format!("parameter {p}: {NOT_SUPPORTED}")),
        }
    }
    if let Some(service) = service {
        // NGINX: `service=http` asks `_http._tcp.HOST`; a name with dots is joined to HOST.
        let host = addr.as_str();
        let srv = if service.contains('.') {
            format!("{service}.{host}")
        } else {
            format!("_{service}._tcp.{host}")
        };
        let mut msg = format!("service={service}: SRV records of {srv} (srv = \"{srv}\")");
        if b.weight.is_some() {
            msg.push_str("; weight dropped (SRV records supply the weights)");
            b.weight = None;
        }
        notes.add(&d.loc, "server", msg);
        b.srv = Some(srv);
        b.resolve = false;
    } else if !b.resolve && !is_ip_literal(addr) {
        b.resolve = true;
        let msg = format!("{addr}: NGINX resolves the name at start and makes every A/AAAA address a server; lb does that and keeps following DNS (resolve = true)");
        notes.add(&d.loc, "server", msg);
    }
    Some((b, f))
}

/// Whether a `server`/`proxy_pass` host (with or without a port) is an IP address rather than
/// a name to resolve.
pub fn is_ip_literal(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() || addr.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>().is_ok()
}

/// `host` → `host:default`; `host:port` and `[v6]:port` as they are; `[v6]` → `[v6]:default`.
pub fn with_port(addr: &str, default: u16) -> String {
    let has_port = match addr.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => addr.contains(':'),
    };
    if has_port {
        addr.to_string()
    } else {
        format!("{addr}:{default}")
    }
}

/// `least_conn`, `ip_hash`, `hash KEY [consistent]`, `random [two [least_conn]]`.
fn balancing(up: &mut Upstream, d: &Directive, notes: &mut Notes) {
    if let Some(before) = up.strategy {
        let msg = format!("replaces the balancing method set before ({before})");
        notes.add(&d.loc, &d.name, msg);
    }
    up.hash_key = None;
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    up.strategy = match (d.name.as_str(), args.as_slice()) {
        ("least_conn", []) => Some("least_connections"),
        ("ip_hash", []) => Some("ip_hash"),
        ("random", []) => Some("random"),
        ("random", ["two"]) | ("random", ["two", "least_conn"]) => Some("two_choices"),
        ("hash", [key, rest @ ..]) if rest.is_empty() || rest == ["consistent"] => {
            match hash_key(key) {
                Some(k) => {
                    if rest.is_empty() {
                        let msg = "plain hash: lb hashes consistently (ketama), so a key moves \
                                   once to another backend compared with NGINX";
                        notes.add(&d.loc, "hash", msg);
                    }
                    up.hash_key = Some(k);
                    Some("consistent_hash")
                }
                None => {
                    let msg = format!("key {key:?}: lb hashes the client address, URI, path, a header or a cookie; round_robin used instead");
                    notes.add(&d.loc, "hash", msg);
                    None
                }
            }
        }
        _ => {
            let msg = format!("{}: unknown arguments, round_robin used", args.join(" "));
            notes.add(&d.loc, &d.name, msg);
            None
        }
    };
}

/// An NGINX hash key expression as lb's `hash_key`.
fn hash_key(key: &str) -> Option<String> {
    let var = key.strip_prefix('$')?;
    let header_name = |n: &str| n.replace('_', "-");
    Some(match var {
        "request_uri" => "uri".to_string(),
        "uri" => "path".to_string(),
        "remote_addr" | "binary_remote_addr" => "client_ip".to_string(),
        v if v.starts_with("http_") && v.len() > 5 => format!("header:{}", header_name(&v[5..])),
        v if v.starts_with("cookie_") && v.len() > 7 => format!("cookie:{}", &v[7..]),
        _ => return None,
    })
}

/// NGINX refuses `backup` with hash and random balancing; lb would not know what it means there.
fn check_backup(up: &mut Upstream, notes: &mut Notes) {
    let hashing = matches!(
        up.strategy,
        Some("ip_hash" | "consistent_hash" | "random" | "two_choices")
    );
    if !hashing {
        return;
    }
    for b in up.backends.iter_mut().filter(|b| b.backup) {
        b.backup = false;
        let msg = format!(
            "backup: NGINX refuses it with {} balancing; imported as a regular backend",
            up.strategy.unwrap_or_default()
        );
        notes.add(&b.loc, "server", msg);
    }
}

/// `[upstreams.X.passive]` from the servers' `max_fails` / `fail_timeout` / `slow_start`.
fn passive(failures: &[Failures], notes: &mut Notes, d: &Directive) -> Passive {
    if failures.len() <= 1 {
        return Passive {
            consecutive_failures: 0,
            fail_timeout: None,
            slow_start: None,
            why: "one server: NGINX never marks it failed, so lb does not eject it".to_string(),
        };
    }
    let mut counts: HashMap<&Failures, usize> = HashMap::new();
    for f in failures {
        *counts.entry(f).or_default() += 1;
    }
    // The most common; ties go to the one written first.
    let best = failures
        .iter()
        .max_by_key(|f| {
            (
                counts[f],
                std::cmp::Reverse(failures.iter().position(|g| g == *f)),
            )
        })
        .cloned()
        .unwrap_or_else(|| failures[0].clone());
    if counts.len() > 1 {
        let msg = format!(
            "servers differ in max_fails/fail_timeout/slow_start; lb has one setting per upstream: used the most common (max_fails={} fail_timeout={})",
            best.max_fails, best.fail_timeout
        );
        notes.add(&d.loc, "upstream", msg);
    }
    if best.max_fails == 0 {
        return Passive {
            consecutive_failures: 0,
            fail_timeout: None,
            slow_start: best.slow_start,
            why: "max_fails=0: NGINX never marks a server failed".to_string(),
        };
    }
    let timeout = match best.fail_timeout.as_str() {
        "0s" => {
            notes.add(
                &d.loc,
                "upstream",
                "fail_timeout=0: lb needs an ejection time, used 1s",
            );
            "1s".to_string()
        }
        t => t.to_string(),
    };
    Passive {
        consecutive_failures: best.max_fails,
        why: format!(
            "NGINX max_fails={} fail_timeout={}: NGINX counts failures within fail_timeout, lb counts them in a row",
            best.max_fails, best.fail_timeout
        ),
        fail_timeout: Some(timeout),
        slow_start: best.slow_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::tree::parse;

    fn map(text: &str) -> (Option<Upstream>, Vec<String>) {
        let tree = parse(text, "n.conf").unwrap();
        let mut notes = Notes::default();
        let up = upstream(&tree[0], &mut notes).map(|(u, _)| u);
        let notes = notes.0.iter().map(|n| n.to_string());
        (
            up,
            notes.filter(|n| !n.contains("resolves the name")).collect(),
        )
    }

    #[test]
    fn servers_and_their_parameters() {
        let (up, notes) = map(
            "upstream api {\n server a.example weight=3 max_conns=10;\n server 10.0.0.2:8080 backup;\n \
             server [::1] down resolve;\n server unix:/tmp/s;\n server b drain;\n}",
        );
        let up = up.unwrap();
        let addrs: Vec<&str> = up.backends.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(addrs, ["a.example:80", "10.0.0.2:8080", "[::1]:80", "b:80"]);
        assert_eq!(up.backends[0].weight, Some(3));
        assert_eq!(up.backends[0].max_conns, Some(10));
        assert!(up.backends[1].backup);
        assert!(up.backends[2].down && up.backends[2].resolve);
        assert_eq!(
            notes,
            [
                "n.conf:5: server: unix:/tmp/s: unix sockets are not supported, skipped",
                "n.conf:6: server: parameter drain: not supported, ignored",
            ]
        );
    }

    #[test]
    fn balancing_methods() {
        let cases = [
            ("least_conn;", Some("least_connections"), None),
            ("ip_hash;", Some("ip_hash"), None),
            ("random;", Some("random"), None),
            ("random two;", Some("two_choices"), None),
            ("random two least_conn;", Some("two_choices"), None),
            (
                "hash $request_uri consistent;",
                Some("consistent_hash"),
                Some("uri"),
            ),
            (
                "hash $uri consistent;",
                Some("consistent_hash"),
                Some("path"),
            ),
            (
                "hash $remote_addr consistent;",
                Some("consistent_hash"),
                Some("client_ip"),
            ),
            (
                "hash $binary_remote_addr consistent;",
                Some("consistent_hash"),
                Some("client_ip"),
            ),
            (
                "hash $http_x_user_id consistent;",
                Some("consistent_hash"),
                Some("header:x-user-id"),
            ),
            (
                "hash $cookie_session consistent;",
                Some("consistent_hash"),
                Some("cookie:session"),
            ),
            ("hash $request_uri;", Some("consistent_hash"), Some("uri")),
            ("hash $host$uri consistent;", None, None),
        ];
        for (line, strategy, key) in cases {
            let (up, _) = map(&format!("upstream u {{ {line} server a; server b; }}"));
            let up = up.unwrap();
            assert_eq!(up.strategy, strategy, "{line}");
            assert_eq!(up.hash_key.as_deref(), key, "{line}");
        }
        let (_, notes) = map("upstream u { hash $request_uri; server a; }");
        assert!(
            notes[0].contains("keys move") || notes[0].contains("moves once"),
            "{notes:?}"
        );
        let (_, notes) = map("upstream u { hash $host$uri consistent; server a; }");
        assert!(notes[0].contains("round_robin used instead"), "{notes:?}");
    }

    #[test]
    fn backup_with_hashing_is_refused_like_nginx() {
        let (up, notes) = map("upstream u { ip_hash; server a; server b backup; }");
        assert!(!up.unwrap().backends[1].backup);
        assert!(
            notes[0].starts_with("n.conf:1: server: backup: NGINX refuses it"),
            "{notes:?}"
        );
    }

    #[test]
    fn failures_map_to_passive_ejection() {
        let (up, _) = map("upstream u { server a; server b; }");
        let p = up.unwrap().passive;
        assert_eq!(p.consecutive_failures, 1);
        assert_eq!(p.fail_timeout.as_deref(), Some("10s"));
        let (up, notes) = map(
            "upstream u { server a max_fails=3 fail_timeout=30s; server b max_fails=3 fail_timeout=30s slow_start=20s; server c max_fails=3 fail_timeout=30s; }",
        );
        let p = up.unwrap().passive;
        assert_eq!(
            (p.consecutive_failures, p.fail_timeout.as_deref()),
            (3, Some("30s"))
        );
        assert_eq!(p.slow_start, None);
        assert!(notes[0].contains("used the most common"), "{notes:?}");
        let (up, _) = map("upstream u { server a max_fails=0; server b max_fails=0; }");
        assert_eq!(up.unwrap().passive.consecutive_failures, 0);
        let (up, _) = map("upstream u { server a max_fails=5; }");
        assert_eq!(
            up.unwrap().passive.consecutive_failures,
            0,
            "one server is never ejected"
        );
    }

    #[test]
    fn an_upstream_without_usable_servers_is_skipped() {
        let (up, notes) = map("upstream u { server unix:/a; }");
        assert!(up.is_none());
        assert!(notes[1].contains("no server lb can use"), "{notes:?}");
    }
}
