//! The NGINX tree → [`Import`]: contexts, `server` blocks (listeners, names, certificates) and
//! their locations (routes), with the proxy settings each level inherits from the one above.
//!
//! Two passes: the first walks the tree in order (so notes come out in file order), maps every
//! `upstream` block and collects servers and locations with their `proxy_pass` target; the
//! second binds each location to its upstream (an `upstream` block of that name, else an
//! implicit one for the address) and turns it into routes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::limit::{self, RateLimit};
use super::location::{self, Location, Settings};
use super::model::*;
use super::tree::{Directive, Loc};
use super::upstream::{upstream, with_port};

/// One `listen` line.
#[derive(Debug, Clone)]
struct Listen {
    addr: String,
    ssl: bool,
    http2: bool,
    default: bool,
    loc: Loc,
}

/// A `server` block, its locations not yet bound to upstreams.
struct Server {
    loc: Loc,
    names: Vec<String>,
    listens: Vec<Listen>,
    http2: Option<Loc>,
    certs: Vec<Certificate>,
    locations: Vec<Location>,
    /// A `return` of the server itself: it answers every request, locations unused.
    ret: Option<(Loc, super::ret::Respond)>,
    /// Its certificate lines (own, else inherited), read once its TLS listeners are known.
    tls_files: TlsFiles,
}

/// Maps a whole loaded tree. `conf_dir` is where relative certificate paths start (NGINX's conf
/// prefix). `Err` when nothing lb could serve came out of it.
pub fn map(tree: &[Directive], conf_dir: &Path, notes: &mut Notes) -> Result<Import, String> {
    let http: Vec<&Directive> = if tree.iter().any(|d| d.name == "http") {
        let mut http = Vec::new();
        for d in tree {
            match d.name.as_str() {
                "http" => http.extend(d.children()),
                _ => top_level(d, notes),
            }
        }
        http
    } else {
        // A file of the http context (conf.d/*.conf, sites-enabled/*) given on its own.
        tree.iter()
            .filter(|d| {
                let skip = matches!(d.name.as_str(), "events" | "stream" | "mail");
                if skip {
                    top_level(d, notes);
                }
                !skip
            })
            .collect()
    };
    let mut m = Mapper {
        conf_dir,
        upstreams: Vec::new(),
        keepalive: Vec::new(),
        servers: Vec::new(),
        skipped: Vec::new(),
        limits: Vec::new(),
    };
    m.http(&http, notes);
    m.finish(notes)
}

fn top_level(d: &Directive, notes: &mut Notes) {
    match d.name.as_str() {
        "events" | "stream" | "mail" => notes.add(
            &d.loc,
            &d.name,
            "context skipped (lb imports the http context only)",
        ),
        _ => notes.unsupported(d),
    }
}

struct Mapper<'a> {
    conf_dir: &'a Path,
    upstreams: Vec<Upstream>,
    keepalive: Vec<At<usize>>,
    servers: Vec<Server>,
    /// `upstream` blocks that could not be imported: locations proxying to them are skipped.
    skipped: Vec<String>,
    /// `limit_req_zone` lines lb can carry, as rate limits (set by the routes using them).
    limits: Vec<RateLimit>,
}

impl Mapper<'_> {
    fn http(&mut self, http: &[&Directive], notes: &mut Notes) {
        let mut settings = Settings::default();
        let mut tls = TlsFiles::default();
        // Settings apply to every server whatever their order, as NGINX merges them.
        for d in http {
            if !settings.take(d, notes) {
                tls.take(d);
            }
        }
        for d in http {
            match d.name.as_str() {
                "upstream" => self.upstream(d, notes),
                "limit_req_zone" => {
                    if let Some(z) = limit::zone(d, notes) {
                        if self
                            .limits
                            .iter()
                            .any(|l| l.zone.nginx_name == z.nginx_name)
                        {
                            let msg = format!("zone {} defined twice, skipped", z.name);
                            notes.add(&d.loc, "limit_req_zone", msg);
                        } else {
                            self.limits.push(RateLimit::new(z));
                        }
                    }
                }
                "server" => {
                    let s = self.server(d, &settings, &tls, notes);
                    self.servers.push(s);
                }
                _ if Settings::owns(&d.name) || TlsFiles::owns(&d.name) => {}
                _ => notes.unsupported(d),
            }
        }
    }

    fn upstream(&mut self, d: &Directive, notes: &mut Notes) {
        let Some((up, keepalive)) = upstream(d, notes) else {
            self.skipped.extend(d.args.first().cloned());
            return;
        };
        if self.upstreams.iter().any(|u| u.name == up.name) {
            notes.add(
                &d.loc,
                "upstream",
                format!("{}: duplicate, skipped", up.name),
            );
            return;
        }
        self.keepalive.extend(keepalive);
        self.upstreams.push(up);
    }

    fn server(
        &mut self,
        d: &Directive,
        http: &Settings,
        http_tls: &TlsFiles,
        notes: &mut Notes,
    ) -> Server {
        let mut settings = http.child();
        settings.server_name = d
            .children()
            .iter()
            .find(|c| c.name == "server_name")
            .and_then(|c| c.args.first().cloned());
        let mut tls = TlsFiles::default();
        for c in d.children() {
            if !settings.take(c, notes) {
                tls.take(c);
            }
        }
        let tls = tls.or(http_tls);
        let mut s = Server {
            loc: d.loc.clone(),
            names: Vec::new(),
            listens: Vec::new(),
            http2: tls.http2.clone(),
            certs: Vec::new(),
            locations: Vec::new(),
            ret: None,
            tls_files: TlsFiles::default(),
        };
        for c in d.children() {
            match c.name.as_str() {
                "listen" => s.listens.extend(listen(c, notes)),
                "server_name" => s.names.extend(server_names(c, notes)),
                "location" => location::location(c, &settings, &mut s.locations, notes),
                "return" if s.ret.is_some() => notes.add(
                    &c.loc,
                    "return",
                    "after the server's first return: never reached",
                ),
                "return" => {
                    s.ret = super::ret::parse(
                        c,
                        settings.server_name.as_deref(),
                        settings.default_type.as_deref(),
                        notes,
                    )
                    .map(|r| (c.loc.clone(), r));
                }
                n if Settings::owns(n) || TlsFiles::owns(n) => {}
                _ => notes.unsupported(c),
            }
        }
        if s.listens.is_empty() {
            s.listens.push(Listen {
                addr: "0.0.0.0:80".to_string(),
                ssl: false,
                http2: false,
                default: false,
                loc: d.loc.clone(),
            });
        }
        s.tls_files = tls;
        s
    }

    fn finish(mut self, notes: &mut Notes) -> Result<Import, String> {
        let mut out = Import::default();
        // As NGINX: a `listen` of an address some server listens on with `ssl` is TLS too.
        let ssl: HashSet<String> = self
            .servers
            .iter()
            .flat_map(|s| s.listens.iter().filter(|l| l.ssl).map(|l| l.addr.clone()))
            .collect();
        for s in &mut self.servers {
            for l in &mut s.listens {
                l.ssl = ssl.contains(&l.addr);
            }
            if s.listens.iter().any(|l| l.ssl) {
                s.certs = s.tls_files.certificates(self.conf_dir, notes);
            }
        }
        let (plain_default, tls_default) = self.default_servers(notes);
        let servers = std::mem::take(&mut self.servers);
        let listens = || servers.iter().flat_map(|s| &s.listens);
        let (any_plain, any_tls) = (listens().any(|l| !l.ssl), listens().any(|l| l.ssl));
        for (i, s) in servers.iter().enumerate() {
            // A server on plain (or TLS) ports only answers nothing on the others.
            let scheme = match (
                s.listens.iter().all(|l| l.ssl),
                s.listens.iter().any(|l| l.ssl),
            ) {
                (true, _) if any_plain => Some("https"),
                (_, false) if any_tls => Some("http"),
                _ => None,
            };
            // Its routes without a host: for the kinds of listener it is the default of.
            let default = match (plain_default == Some(i), tls_default == Some(i)) {
                (true, true) => Some(scheme),
                (true, false) => Some(any_tls.then_some("http")),
                (false, true) => Some(any_plain.then_some("https")),
                (false, false) => None,
            };
            self.routes(s, default, scheme, &mut out.routes, notes);
        }
        self.listeners(&servers, tls_default.or(plain_default), &mut out, notes);
        if !self.keepalive.is_empty() {
            let total: usize = self.keepalive.iter().map(|k| k.value).sum();
            for k in &self.keepalive {
                let msg = format!("{} idle connections per NGINX worker for this upstream; lb keeps one pool for all upstreams: server.upstream_keepalive_pool_size = {total} (the sum)", k.value);
                notes.add(&k.loc, "keepalive", msg);
            }
            out.keepalive = Some(At {
                value: total,
                loc: self.keepalive[0].loc.clone(),
            });
        }
        if self.upstreams.is_empty() {
            return Err(
                "nothing to import: no upstream and no location with a proxy_pass lb can serve"
                    .to_string(),
            );
        }
        out.upstreams = self.upstreams;
        out.rate_limits = self.limits;
        Ok(out)
    }

    /// The servers whose routes also answer any host, for the plain listeners and for the TLS
    /// ones: the `default_server` of that kind, else the first server with such a listener
    /// (NGINX picks per address; lb per kind).
    fn default_servers(&self, notes: &mut Notes) -> (Option<usize>, Option<usize>) {
        let mut pick = |ssl: bool| {
            let marked: Vec<(usize, &Listen)> = self
                .servers
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.listens
                        .iter()
                        .filter(move |l| l.default && l.ssl == ssl)
                        .map(move |l| (i, l))
                })
                .collect();
            let Some(&(first, _)) = marked.first() else {
                return self
                    .servers
                    .iter()
                    .position(|s| s.listens.iter().any(|l| l.ssl == ssl));
            };
            for (i, l) in &marked {
                if *i != first {
                    let msg = format!(
                        "default_server: lb has one default server for all {} listeners; the one at {} is used",
                        if ssl { "TLS" } else { "plain" },
                        self.servers[first].loc
                    );
                    notes.add(&l.loc, "listen", msg);
                }
            }
            Some(first)
        };
        (pick(false), pick(true))
    }

    /// Routes of one server: one per (name, location), and without a host when it is the default.
    fn routes(
        &mut self,
        s: &Server,
        default: Option<Option<&'static str>>,
        scheme: Option<&'static str>,
        routes: &mut Vec<Route>,
        notes: &mut Notes,
    ) {
        if s.names.is_empty() && default.is_none() {
            if !s.locations.is_empty() || s.ret.is_some() {
                let msg = "no server_name lb can match and not the default server: its locations are not carried over";
                notes.add(&s.loc, "server", msg);
            }
            return;
        }
        let mut hosts: Vec<(Option<String>, Option<&'static str>)> =
            s.names.iter().map(|n| (Some(n.clone()), scheme)).collect();
        if let Some(scheme) = default {
            hosts.push((None, scheme));
        }
        let names = s.names.join(" ");
        let label = |host: &Option<String>, what: &str| match host {
            Some(_) => format!("server {names}, {what}"),
            None if names.is_empty() => format!("default server, {what}"),
            None => format!("default server {names}, {what}"),
        };
        let same = |o: &Route, r: &Route| {
            o.host == r.host
                && o.path == r.path
                && (o.scheme.is_none() || r.scheme.is_none() || o.scheme == r.scheme)
        };
        if let Some((at, respond)) = &s.ret {
            for l in &s.locations {
                let msg = "the server's return answers every request first: never used";
                notes.add(&l.loc, format!("location {}", l.label), msg);
            }
            for (host, scheme) in &hosts {
                let r = Route {
                    host: host.clone(),
                    path: PathMatch::Prefix("/".into()),
                    skip_regex: false,
                    replace_prefix: None,
                    upstream: String::new(),
                    respond: Some(respond.clone()),
                    scheme: *scheme,
                    rate_limits: Vec::new(),
                    loc: at.clone(),
                    label: label(host, "return"),
                };
                if let Some(o) = routes.iter().find(|o| same(o, &r)) {
                    let msg = format!("same host and path as the route from {}, skipped", o.loc);
                    notes.add(at, "return", msg);
                    continue;
                }
                routes.push(r);
            }
            return;
        }
        for l in &s.locations {
            if let Some(respond) = &l.respond {
                for (host, scheme) in &hosts {
                    let r = Route {
                        host: host.clone(),
                        path: l.path.clone(),
                        skip_regex: l.skip_regex,
                        replace_prefix: None,
                        upstream: String::new(),
                        respond: Some(respond.clone()),
                        scheme: *scheme,
                        rate_limits: Vec::new(),
                        loc: l.loc.clone(),
                        label: label(host, &format!("location {}", l.label)),
                    };
                    if let Some(o) = routes.iter().find(|o| same(o, &r)) {
                        let msg =
                            format!("same host and path as the route from {}, skipped", o.loc);
                        notes.add(&l.loc, "location", msg);
                        continue;
                    }
                    routes.push(r);
                }
                continue;
            }
            let host = location::target_host(&l.target);
            if self.skipped.iter().any(|n| n.eq_ignore_ascii_case(host)) {
                let msg = format!("upstream {host} was skipped, so is this location");
                notes.add(&l.loc, format!("location {}", l.label), msg);
                continue;
            }
            let Some(name) = location::bind(l, &mut self.upstreams, notes) else {
                continue;
            };
            let rate_limits = self.rate_limits(l, notes);
            for (host, scheme) in &hosts {
                let r = Route {
                    host: host.clone(),
                    path: l.path.clone(),
                    skip_regex: l.skip_regex,
                    replace_prefix: l.replace_prefix.clone(),
                    upstream: name.clone(),
                    respond: None,
                    scheme: *scheme,
                    rate_limits: rate_limits.clone(),
                    loc: l.loc.clone(),
                    label: label(host, &format!("location {}", l.label)),
                };
                if let Some(o) = routes.iter().find(|o| same(o, &r)) {
                    let msg = format!("same host and path as the route from {}, skipped", o.loc);
                    notes.add(&l.loc, "location", msg);
                    continue;
                }
                routes.push(r);
            }
        }
    }

    /// The zones of a location's `limit_req` lines (each use sets or checks the zone's limit).
    fn rate_limits(&mut self, l: &location::Location, notes: &mut Notes) -> Vec<String> {
        let mut names = Vec::new();
        for r in &l.limits.reqs {
            match self
                .limits
                .iter_mut()
                .find(|z| z.zone.nginx_name == r.value.zone)
            {
                Some(limit) => {
                    limit.use_at(r, &l.limits, notes);
                    if !names.contains(&limit.zone.name) {
                        names.push(limit.zone.name.clone());
                    }
                }
                None => {
                    let msg = format!(
                        "zone {} is not a limit_req_zone lb carries, ignored",
                        r.value.zone
                    );
                    notes.add(&r.loc, "limit_req", msg);
                }
            }
        }
        names
    }

    /// The union of every server's listeners: `ssl` ones are HTTPS (for every server on that
    /// address, as in NGINX).
    fn listeners(
        &self,
        servers: &[Server],
        default: Option<usize>,
        out: &mut Import,
        notes: &mut Notes,
    ) {
        let all: Vec<&Listen> = servers.iter().flat_map(|s| &s.listens).collect();
        let ssl: HashSet<&str> = all
            .iter()
            .filter(|l| l.ssl)
            .map(|l| l.addr.as_str())
            .collect();
        // The default server's certificates first: lb's default certificate.
        let order = default.into_iter().chain(0..servers.len());
        for i in order {
            for c in &servers[i].certs {
                if !out
                    .certificates
                    .iter()
                    .any(|o| o.cert == c.cert && o.key == c.key)
                {
                    out.certificates.push(c.clone());
                }
            }
        }
        let http2_listen = all.iter().find(|l| l.ssl && l.http2).map(|l| l.loc.clone());
        let http2_on = servers
            .iter()
            .filter(|s| s.listens.iter().any(|l| ssl.contains(l.addr.as_str())))
            .find_map(|s| s.http2.clone());
        out.http2 = http2_listen.or(http2_on);
        for l in all {
            let list = if ssl.contains(l.addr.as_str()) {
                &mut out.tls_listen
            } else {
                &mut out.listen
            };
            if !list.iter().any(|o| o.value == l.addr) {
                list.push(At {
                    value: l.addr.clone(),
                    loc: l.loc.clone(),
                });
            }
        }
        if !out.tls_listen.is_empty() && out.certificates.is_empty() {
            for l in out.tls_listen.drain(..) {
                let msg = format!(
                    "{}: ssl without a usable ssl_certificate, listener dropped",
                    l.value
                );
                notes.add(&l.loc, "listen", msg);
            }
        }
    }
}

/// `listen` → address and flags; `None` (noted) for what lb cannot listen on.
fn listen(d: &Directive, notes: &mut Notes) -> Option<Listen> {
    let Some(first) = d.args.first() else {
        notes.add(&d.loc, "listen", "no address, ignored");
        return None;
    };
    let Some(addr) = listen_addr(first) else {
        let msg = format!("{first}: lb listens on IP addresses and ports only, ignored");
        notes.add(&d.loc, "listen", msg);
        return None;
    };
    let mut l = Listen {
        addr,
        ssl: false,
        http2: false,
        default: false,
        loc: d.loc.clone(),
    };
    for p in &d.args[1..] {
        match p.as_str() {
            "ssl" => l.ssl = true,
            "http2" => l.http2 = true,
            "default_server" | "default" => l.default = true,
            _ => notes.add(&d.loc, "listen", format!("parameter {p}: {NOT_SUPPORTED}")),
        }
    }
    Some(l)
}

/// NGINX's `listen` address forms as a socket address lb can parse.
fn listen_addr(a: &str) -> Option<String> {
    if a.starts_with("unix:") {
        return None;
    }
    let full = if a.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{a}")
    } else {
        with_port(a, 80)
    };
    let full = match full.split_once(':') {
        Some(("*", port)) => format!("0.0.0.0:{port}"),
        Some(("localhost", port)) => format!("127.0.0.1:{port}"),
        _ => full,
    };
    full.parse::<SocketAddr>().ok().map(|s| s.to_string())
}

/// The names of a `server_name` lb can route on: exact, `*.suffix`, `.suffix`, `prefix.*`.
fn server_names(d: &Directive, notes: &mut Notes) -> Vec<String> {
    let mut out = Vec::new();
    for n in &d.args {
        let n = n.to_ascii_lowercase();
        let trailing = n.strip_suffix(".*").is_some_and(|p| !p.contains('*'));
        let why = if n.is_empty() || n == "_" {
            continue;
        } else if n.starts_with('~') {
            "regex names are not supported"
        } else if n.contains('$') {
            "variables are not supported"
        } else if n.chars().skip(1).any(|c| c == '*') && !trailing {
            "only leading (*.example.com) and trailing (www.example.*) wildcards are supported"
        } else {
            out.push(n);
            continue;
        };
        notes.add(&d.loc, "server_name", format!("{n}: {why}, skipped"));
    }
    out
}

/// `ssl_certificate` / `ssl_certificate_key` lines and `http2 on`, inherited from `http`.
#[derive(Default, Clone)]
struct TlsFiles {
    certs: Vec<At<String>>,
    keys: Vec<At<String>>,
    http2: Option<Loc>,
}

impl TlsFiles {
    fn owns(name: &str) -> bool {
        matches!(name, "ssl_certificate" | "ssl_certificate_key" | "http2")
    }

    /// Takes `d` if it is one of ours; `false` otherwise.
    fn take(&mut self, d: &Directive) -> bool {
        let value = At {
            value: d.args.first().cloned().unwrap_or_default(),
            loc: d.loc.clone(),
        };
        match d.name.as_str() {
            "ssl_certificate" => self.certs.push(value),
            "ssl_certificate_key" => self.keys.push(value),
            "http2" => self.http2 = (value.value == "on").then_some(d.loc.clone()),
            _ => return false,
        }
        true
    }

    /// A server's own lines, else the inherited ones (as NGINX merges arrays).
    fn or(self, http: &TlsFiles) -> TlsFiles {
        TlsFiles {
            certs: if self.certs.is_empty() {
                http.certs.clone()
            } else {
                self.certs
            },
            keys: if self.keys.is_empty() {
                http.keys.clone()
            } else {
                self.keys
            },
            http2: self.http2.or_else(|| http.http2.clone()),
        }
    }

    fn certificates(&self, conf_dir: &Path, notes: &mut Notes) -> Vec<Certificate> {
        let mut out = Vec::new();
        for (i, c) in self.certs.iter().enumerate() {
            let Some(k) = self.keys.get(i) else {
                notes.add(
                    &c.loc,
                    "ssl_certificate",
                    "no matching ssl_certificate_key, skipped",
                );
                continue;
            };
            if c.value.contains('$') || k.value.contains('$') || c.value.starts_with("data:") {
                let msg = "variables and data: certificates are not supported, skipped";
                notes.add(&c.loc, "ssl_certificate", msg);
                continue;
            }
            let full = |p: &str| conf_dir.join(p).display().to_string();
            out.push(Certificate {
                cert: full(&c.value),
                key: full(&k.value),
                loc: c.loc.clone(),
            });
        }
        out
    }
}
