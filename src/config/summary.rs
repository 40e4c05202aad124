//! The human summary `lb --check` prints, and its warning lines: one section a step (listeners,
//! admin, upstreams, routes), each appending its lines.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use super::{BackendConfig, Config, Discovery, Named, RouteConfig, RouteTarget, UpstreamConfig};

impl Config {
    /// Each warning as `FILE: KEY: warning: MESSAGE`.
    pub fn warning_lines(&self, file: &Path) -> Vec<String> {
        let file = file.display();
        self.warnings
            .iter()
            .map(|w| format!("{file}: {}: warning: {}", w.path, w.message))
            .collect()
    }

    /// The short human summary printed by `lb --check`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.summarize_listeners(&mut s);
        if let Some(admin) = &self.admin {
            let _ = writeln!(s, "admin: {}", admin.summary());
        }
        let _ = writeln!(s, "threads: {}", self.server.threads);
        for u in &self.upstreams {
            summarize_upstream(&mut s, u);
        }
        if self.routes.is_empty() {
            let _ = writeln!(s, "routes: all traffic -> {}", self.upstreams[0].name);
        }
        for r in &self.routes {
            summarize_route(&mut s, r);
        }
        s
    }

    /// `listeners: ...` and, with `[server.tls]`, `https listeners: ...`.
    fn summarize_listeners(&self, s: &mut String) {
        let h2c = if self.server.h2c { " (h2c too)" } else { "" };
        let _ = writeln!(s, "listeners: {}{h2c}", joined(&self.server.listen, ", "));
        if let Some(tls) = &self.server.tls {
            let names: Vec<String> = tls.certificates.iter().map(|c| c.names.join(" ")).collect();
            let alpn = if tls.http2 {
                "h2, http/1.1"
            } else {
                "http/1.1"
            };
            let reject = if tls.reject_unknown_sni {
                "; unknown SNI refused"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "https listeners: {} ({alpn}; certificates: {}{reject})",
                joined(&tls.listen, ", "),
                names.join(" | ")
            );
        }
    }
}

/// Addresses as text, joined by `sep`.
fn joined(addrs: &[SocketAddr], sep: &str) -> String {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    addrs.join(sep)
}

/// `upstream NAME (...):` and a line per backend.
fn summarize_upstream(s: &mut String, u: &UpstreamConfig) {
    let _ = writeln!(
        s,
        "upstream {} ({}, retries {}, connect_timeout {:?}, read_timeout {:?}{}):",
        u.name,
        u.strategy.as_str(),
        u.retries,
        u.connect_timeout,
        u.read_timeout,
        if u.health_check.is_some() {
            ", health checked"
        } else {
            ""
        }
    );
    for b in &u.backends {
        summarize_backend(s, b);
    }
}

/// `  ADDRESS (RESOLVED) weight N FLAGS`.
fn summarize_backend(s: &mut String, b: &BackendConfig) {
    let mut flags = String::new();
    if b.backup {
        flags.push_str(" backup");
    }
    if b.down {
        flags.push_str(" down");
    }
    if b.max_conns > 0 {
        let _ = write!(flags, " max_conns {}", b.max_conns);
    }
    let resolved = match &b.discovery {
        None => b.addr.to_string(),
        Some(Discovery::Name { .. }) => "A/AAAA, followed".to_string(),
        Some(Discovery::Srv { .. }) => "SRV, followed".to_string(),
    };
    let _ = writeln!(s, "  {} ({resolved}) weight {}{flags}", b.address, b.weight);
}

/// `route host=H PATH EXTRA -> TARGET`.
fn summarize_route(s: &mut String, r: &RouteConfig) {
    let mut extra = String::new();
    if r.skip_regex {
        extra.push_str(" skip_regex");
    }
    if let Some(p) = &r.replace_prefix {
        let _ = write!(extra, " replace_prefix={p}");
    }
    if let Some(scheme) = r.scheme {
        let _ = write!(extra, " scheme={scheme:?}");
    }
    if let Some(listen) = &r.listen {
        let _ = write!(extra, " listen={}", joined(listen, ","));
    }
    if r.fault.is_some() {
        extra.push_str(" fault");
    }
    let _ = writeln!(
        s,
        "route host={} {}{extra} -> {}",
        r.host.as_deref().unwrap_or("(default)"),
        r.path.describe(),
        describe_target(&r.target),
    );
}

/// A route's target as the summary names it.
fn describe_target(target: &RouteTarget) -> String {
    match target {
        RouteTarget::Upstream(u) => u.clone(),
        RouteTarget::Split(sp) => {
            let parts: Vec<String> = sp
                .parts
                .iter()
                .map(|p| match p.share {
                    Some(n) => format!("{} {}%", p.upstream, n as f64 / 100.0),
                    None => format!("{} *", p.upstream),
                })
                .collect();
            format!("split by {}: {}", sp.by.describe(), parts.join(", "))
        }
        RouteTarget::Respond(a) => format!(
            "respond {}{}",
            a.status,
            a.location
                .as_ref()
                .map_or(String::new(), |l| format!(" {l}"))
        ),
        RouteTarget::Kafka(k) => format!("kafka:{}", k.topic),
    }
}
