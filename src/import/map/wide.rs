//! NGINX's server-wide directives → lb's `[server]` keys, `server.tls.min_version` and
//! `[resolver]`: NGINX lets each `server` block have its own `keepalive_timeout`,
//! `client_header_timeout`, `large_client_header_buffers`, `ssl_protocols`, ...; lb has one value
//! for all, so the first server that kept routes decides and the others that differ are noted.

use std::net::SocketAddr;

use super::{Mapper, Server};
use crate::import::model::*;
use crate::import::realip::RealIpLines;
use crate::import::upstream::with_port;

/// `[server]` keys: (key, value as TOML, the NGINX line or default it comes from).
type Keys = Vec<(&'static str, String, String)>;

/// A server-wide line as one level (`http` or a `server`) has it: its arguments.
type Line = At<Vec<String>>;

/// Server-wide lines of one level (`http` or a `server`): lb has one value for all servers.
#[derive(Default, Clone)]
pub(super) struct Wide(Vec<(String, Line)>);

impl Wide {
    pub(super) fn owns(name: &str) -> bool {
        matches!(
            name,
            "keepalive_timeout"
                | "client_header_timeout"
                | "client_body_timeout"
                | "large_client_header_buffers"
                | "resolver"
                | "resolver_timeout"
                | "ssl_protocols"
                | "set_real_ip_from"
                | "real_ip_header"
                | "real_ip_recursive"
        )
    }

    pub(super) fn take(&mut self, d: &crate::import::tree::Directive) -> bool {
        if !Self::owns(&d.name) {
            return false;
        }
        // `set_real_ip_from` lines add up (one address each).
        if d.name == "set_real_ip_from" {
            if let Some((_, v)) = self.0.iter_mut().find(|(n, _)| *n == d.name) {
                v.value.extend(d.args.iter().cloned());
                return true;
            }
        }
        self.0.retain(|(n, _)| *n != d.name);
        let value = At {
            value: d.args.clone(),
            loc: d.loc.clone(),
        };
        self.0.push((d.name.clone(), value));
        true
    }

    pub(super) fn get(&self, name: &str) -> Option<&Line> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The servers that kept routes, over the `http` level's lines: what a server-wide directive is
/// for each of them.
struct Levels<'a> {
    used: Vec<&'a Server>,
    http: &'a Wide,
}

impl Levels<'_> {
    /// `name` as the first used server that `only` admits has it (its own, else the `http`
    /// level's; `None`: NGINX's default); each other such server that differs is noted.
    fn pick(&self, name: &str, only: &dyn Fn(&Server) -> bool, notes: &mut Notes) -> Option<Line> {
        let eff = |s: &Server| s.wide.get(name).or(self.http.get(name)).cloned();
        let set: Vec<(&Server, Option<Line>)> = self
            .used
            .iter()
            .filter(|s| only(s))
            .map(|s| (*s, eff(s)))
            .collect();
        let chosen = set.first().and_then(|(_, v)| v.clone());
        let show = |v: &Option<Line>| {
            v.as_ref()
                .map_or("NGINX's default".to_string(), |v| v.value.join(" "))
        };
        for (s, v) in &set[set.len().min(1)..] {
            if v.as_ref().map(|v| &v.value) != chosen.as_ref().map(|c| &c.value) {
                let loc = v.as_ref().map_or(&s.loc, |v| &v.loc);
                let msg = format!(
                    "lb has one {name} for all servers: {} used, not {}",
                    show(&chosen),
                    show(v)
                );
                notes.add(loc, name, msg);
            }
        }
        chosen
    }

    /// [`Levels::pick`] over every used server.
    fn pick_any(&self, name: &str, notes: &mut Notes) -> Option<Line> {
        self.pick(name, &|_| true, notes)
    }
}

/// A server with a TLS listener.
fn has_tls(s: &Server) -> bool {
    s.listens.iter().any(|l| l.ssl)
}

impl Mapper<'_> {
    /// `[server]` keys for NGINX's server-wide directives (lb has one value for all servers),
    /// `server.tls.min_version` and `[resolver]`.
    pub(super) fn server_wide(
        &self,
        servers: &[Server],
        live: &[bool],
        out: &mut Import,
        notes: &mut Notes,
    ) {
        let levels = Levels {
            used: servers
                .iter()
                .zip(live)
                .filter(|(_, l)| **l)
                .map(|(s, _)| s)
                .collect(),
            http: &self.http_wide,
        };
        let mut keys = Vec::new();
        timeouts(&levels, &mut keys, notes);
        header_buffers(&levels, &mut keys, notes);
        body_size(self.http_body.as_ref(), &mut keys, notes);
        let real_ip = RealIpLines {
            from: levels.pick_any("set_real_ip_from", notes),
            header: levels.pick_any("real_ip_header", notes),
            recursive: levels.pick_any("real_ip_recursive", notes),
        };
        real_ip.keys(&out.proxy_protocol, &mut keys, notes);
        out.server_keys = keys;
        if !out.tls_listen.is_empty() {
            if let Some(min) = min_tls_version(&levels, servers, notes) {
                out.tls_min_version = Some(min);
            }
        }
        if let Some(r) = self.resolver(servers, notes) {
            out.resolver = Some(r);
        }
    }

    /// `resolver` (the http level's, else the first server's) and `resolver_timeout` as
    /// `[resolver]`; `None` without a name server lb can use.
    fn resolver(&self, servers: &[Server], notes: &mut Notes) -> Option<Resolver> {
        let r = self
            .http_wide
            .get("resolver")
            .cloned()
            .or_else(|| servers.iter().find_map(|s| s.wide.get("resolver").cloned()))?;
        let mut nameservers = Vec::new();
        for a in &r.value {
            if let Some((k, _)) = a.split_once('=') {
                let why = match k {
                    "valid" => "lb follows each answer's TTL (at least every resolve_interval)",
                    "ipv6" => "lb asks for A and AAAA records",
                    _ => NOT_SUPPORTED,
                };
                notes.add(&r.loc, "resolver", format!("{a}: {why}, ignored"));
                continue;
            }
            let full = if a.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{a}]:53")
            } else {
                with_port(a, 53)
            };
            match full.parse::<SocketAddr>() {
                Ok(sa) => nameservers.push(sa.to_string()),
                Err(_) => notes.add(
                    &r.loc,
                    "resolver",
                    format!("{a}: lb takes IP addresses only, skipped"),
                ),
            }
        }
        let timeout = self
            .http_wide
            .get("resolver_timeout")
            .and_then(|t| t.value.first().and_then(|t| duration(t)));
        (!nameservers.is_empty()).then(|| Resolver {
            nameservers,
            timeout,
            loc: r.loc.clone(),
        })
    }
}

/// `keepalive_timeout`, `client_header_timeout`, `client_body_timeout` → `keepalive_timeout`,
/// `header_timeout`, `body_timeout` (NGINX's defaults when unset).
fn timeouts(levels: &Levels, keys: &mut Keys, notes: &mut Notes) {
    let times = [
        ("keepalive_timeout", "keepalive_timeout", "75s"),
        ("client_header_timeout", "header_timeout", "60s"),
        ("client_body_timeout", "body_timeout", "60s"),
    ];
    for (name, key, default) in times {
        let v = levels.pick_any(name, notes);
        let (text, why) = match &v {
            Some(v) => (
                v.value.first().cloned().unwrap_or_default(),
                format!("{}: {name}", v.loc),
            ),
            None => (default.to_string(), format!("{name}: NGINX's default")),
        };
        if let Some(extra) = v.as_ref().and_then(|v| v.value.get(1).map(|x| (x, &v.loc))) {
            let msg = format!(
                "second argument {}: lb sends no Keep-Alive header, ignored",
                extra.0
            );
            notes.add(extra.1, name, msg);
        }
        match duration(&text) {
            Some(d) if d != "0s" => keys.push((key, crate::import::emit::string(&d), why)),
            _ => {
                if let Some(v) = &v {
                    let msg = format!(
                        "{text:?}: lb needs a time above 0 here, ignored (lb's default stays)"
                    );
                    notes.add(&v.loc, name, msg);
                }
            }
        }
    }
}

/// `large_client_header_buffers N SIZE` → `max_uri_bytes` (one buffer) and `max_header_bytes`
/// (all of them).
fn header_buffers(levels: &Levels, keys: &mut Keys, notes: &mut Notes) {
    let buffers = levels.pick_any("large_client_header_buffers", notes);
    let (n, bytes, why) = match &buffers {
        Some(b) => (
            b.value.first().and_then(|n| n.parse::<u64>().ok()),
            b.value.get(1).and_then(|s| size(s)),
            format!("{}: large_client_header_buffers", b.loc),
        ),
        None => (
            Some(4),
            Some(8192),
            "large_client_header_buffers 4 8k: NGINX's default".to_string(),
        ),
    };
    let (Some(n), Some(size)) = (n, bytes) else {
        if let Some(b) = &buffers {
            let msg = "expects a number and a size, ignored";
            notes.add(&b.loc, "large_client_header_buffers", msg);
        }
        return;
    };
    keys.push((
        "max_uri_bytes",
        size.clamp(16, 1 << 20).to_string(),
        format!("{why} (a request line fits one buffer)"),
    ));
    keys.push((
        "max_header_bytes",
        (n * size).clamp(1024, 1 << 20).to_string(),
        format!("{why} (all buffers together)"),
    ));
}

/// `client_max_body_size` → `max_body_bytes`: lb has one limit, the http level's (locations
/// that differ are noted with their routes).
fn body_size(http_body: Option<&At<String>>, keys: &mut Keys, notes: &mut Notes) {
    let (body, why) = match http_body {
        Some(b) => (b.value.clone(), format!("{}: client_max_body_size", b.loc)),
        None => (
            "1m".to_string(),
            "client_max_body_size 1m: NGINX's default".to_string(),
        ),
    };
    match size(&body) {
        Some(0) => keys.push((
            "max_body_bytes",
            i64::MAX.to_string(),
            format!("{why} (0: no limit)"),
        )),
        Some(n) => keys.push(("max_body_bytes", n.to_string(), why)),
        None => {
            if let Some(b) = http_body {
                let msg = format!("{body:?} is not a size, ignored");
                notes.add(&b.loc, "client_max_body_size", msg);
            }
        }
    }
}

/// `ssl_protocols` → `server.tls.min_version`: the lowest version any TLS server accepts.
fn min_tls_version(levels: &Levels, servers: &[Server], notes: &mut Notes) -> Option<At<String>> {
    let v = levels.pick("ssl_protocols", &has_tls, notes);
    let protos: Vec<String> = match &v {
        Some(v) => v.value.clone(),
        None => vec!["TLSv1.2".into(), "TLSv1.3".into()],
    };
    let old = protos
        .iter()
        .any(|p| matches!(p.as_str(), "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1"));
    let min = if protos.iter().all(|p| p == "TLSv1.3") {
        "1.3"
    } else {
        "1.2"
    };
    let loc = match &v {
        Some(v) => v.loc.clone(),
        None => servers.iter().find(|s| has_tls(s))?.loc.clone(),
    };
    if old {
        let msg = "lb speaks TLS 1.2 and 1.3 only: older versions are not offered";
        notes.add(&loc, "ssl_protocols", msg);
    }
    if !protos.iter().any(|p| p == "TLSv1.3") {
        let msg = "no TLSv1.3: lb offers TLS 1.3 as well (it has a lowest version, not a list)";
        notes.add(&loc, "ssl_protocols", msg);
    }
    Some(At {
        value: min.to_string(),
        loc,
    })
}

/// NGINX's size syntax (`512`, `8k`, `10m`, `1g`) in bytes.
pub fn size(text: &str) -> Option<u64> {
    let (digits, scale) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}
