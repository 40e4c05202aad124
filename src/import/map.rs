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
use super::route_settings;
use super::split::{self, SplitClients};
use super::tree::{Directive, Loc};
use super::upstream::{upstream, with_port};

mod by_address;

/// Whom a server's routes are for: a name (`None`: the default group), the scheme they are
/// limited to, and the listeners (empty: every listener).
struct Host {
    name: Option<String>,
    scheme: Option<&'static str>,
    listen: Vec<String>,
}

/// One `listen` line.
#[derive(Debug, Clone)]
struct Listen {
    addr: String,
    ssl: bool,
    http2: bool,
    default: bool,
    /// `proxy_protocol`: connections start with a PROXY protocol header.
    proxy_protocol: bool,
    loc: Loc,
}

/// A `server` block, its locations not yet bound to upstreams.
struct Server {
    /// Its server-wide lines (`keepalive_timeout`, `ssl_protocols`, ...).
    wide: Wide,
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

/// How to import.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// `--allow-insecure`: import locations under security directives lb does not enforce
    /// (`auth_basic`, `allow`/`deny`, ...) as public routes, with a note, instead of refusing.
    pub allow_insecure: bool,
}

/// Why an import produced no config.
#[derive(Debug)]
pub enum Failure {
    /// Nothing lb could serve came out of it.
    Nothing(String),
    /// Lines lb would serve differently or less safely than NGINX (each `file:line: ...`).
    Refused(Vec<Note>),
}

/// Maps a whole loaded tree. `conf_dir` is where relative certificate paths start (NGINX's conf
/// prefix).
pub fn map(
    tree: &[Directive],
    conf_dir: &Path,
    options: Options,
    notes: &mut Notes,
) -> Result<Import, Failure> {
    let workers = tree
        .iter()
        .find(|d| d.name == "worker_processes")
        .map(|d| At {
            value: d.args.first().cloned().unwrap_or_default(),
            loc: d.loc.clone(),
        });
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
        options,
        refusals: Vec::new(),
        http_wide: Wide::default(),
        http_body: None,
        workers,
        splits: Vec::new(),
        kafka_brokers: None,
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
    options: Options,
    /// What makes the import fail.
    refusals: Vec<Note>,
    /// The `http` level's server-wide lines.
    http_wide: Wide,
    /// `client_max_body_size` of the `http` level.
    http_body: Option<At<String>>,
    /// `worker_processes` (main context).
    workers: Option<At<String>>,
    /// `split_clients` blocks, by variable.
    splits: Vec<split::Block>,
    /// `kafka_broker_list` (ngx_kafka_module, http level): the brokers of `kafka_topic` routes.
    kafka_brokers: Option<At<Vec<String>>>,
}

impl Mapper<'_> {
    fn http(&mut self, http: &[&Directive], notes: &mut Notes) {
        let mut settings = Settings::default();
        let mut tls = TlsFiles::default();
        // Settings apply to every server whatever their order, as NGINX merges them.
        for d in http {
            if !settings.take(d, notes) && !tls.take(d) {
                self.http_wide.take(d);
            }
        }
        self.http_body = settings.body_size.clone();
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
                "split_clients" => match split::block(d) {
                    Some(b) => self.splits.push(b),
                    None => notes.add(&d.loc, "split_clients", "expected a string and a $variable"),
                },
                // ngx_kafka_module: its switch needs nothing in lb; the brokers go to the
                // `kafka` routes of its `kafka_topic` locations.
                "kafka" => {}
                "kafka_broker_list" => {
                    self.kafka_brokers = Some(At {
                        value: d.args.clone(),
                        loc: d.loc.clone(),
                    })
                }
                _ if Settings::owns(&d.name) || TlsFiles::owns(&d.name) || Wide::owns(&d.name) => {}
                _ => notes.unsupported(d),
            }
        }
    }

    /// A `kafka_topic` location's `kafka` route target; `None` (noted) without a
    /// `kafka_broker_list`.
    fn kafka(&self, l: &Location, notes: &mut Notes) -> Option<Option<KafkaRoute>> {
        let Some(topic) = &l.kafka_topic else {
            return Some(None);
        };
        let Some(brokers) = &self.kafka_brokers else {
            let msg = "no kafka_broker_list at the http level: lb's kafka route needs its brokers, location skipped";
            notes.add(&topic.loc, "kafka_topic", msg);
            return None;
        };
        let msg = "mapped to a kafka route: lb answers 202 once the broker acknowledged the record (acks = \"all\"), 503 when it cannot, where ngx_kafka_module answers without waiting for the broker";
        notes.add(&topic.loc, "kafka_topic", msg);
        Some(Some(KafkaRoute {
            topic: topic.clone(),
            brokers: brokers.clone(),
        }))
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
        let mut wide = Wide::default();
        for c in d.children() {
            if !settings.take(c, notes) && !tls.take(c) {
                wide.take(c);
            }
        }
        let tls = tls.or(http_tls);
        let mut s = Server {
            wide,
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
                n if Settings::owns(n) || TlsFiles::owns(n) || Wide::owns(n) => {}
                n if n.ends_with("_by_lua_block") || n.ends_with("_by_lua") => {
                    notes.add(&c.loc, n, "OpenResty Lua code: not supported, skipped")
                }
                _ => notes.unsupported(c),
            }
        }
        if s.listens.is_empty() {
            s.listens.push(Listen {
                addr: "0.0.0.0:80".to_string(),
                ssl: false,
                http2: false,
                default: false,
                proxy_protocol: false,
                loc: d.loc.clone(),
            });
        }
        if let Some(on) = &tls.ssl_on {
            // Legacy `ssl on;`: every listener of the server speaks TLS.
            for l in &mut s.listens {
                l.ssl = true;
            }
            let msg = "legacy ssl on: this server's listeners are TLS (as `listen ... ssl`)";
            notes.add(on, "ssl", msg);
        }
        s.tls_files = tls;
        s
    }

    fn finish(mut self, notes: &mut Notes) -> Result<Import, Failure> {
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
        // One address per kind of listener: per-kind defaults and `scheme` say it all. More:
        // every route names its server's addresses, each address has its default server.
        let by_address = by_address::needed(&self.servers);
        // (Per address, several `default_server` marks of one kind are no conflict.)
        let mut unused = Notes(Vec::new());
        let defaults = self.default_servers(if by_address { &mut unused } else { notes });
        let (plain_default, tls_default) = defaults;
        let servers = std::mem::take(&mut self.servers);
        let listens = || servers.iter().flat_map(|s| &s.listens);
        let (any_plain, any_tls) = (listens().any(|l| !l.ssl), listens().any(|l| l.ssl));
        let mut live = vec![false; servers.len()];
        let mut claimed = HashSet::new();
        for (i, s) in servers.iter().enumerate() {
            let hosts = match by_address {
                true => by_address::hosts(&servers, i, &mut claimed, notes),
                false => by_kind(s, i, defaults, (any_plain, any_tls)),
            };
            let why = match s.names.is_empty() {
                true => "no server_name lb can match and not the default server of its address",
                false => "its names belong to earlier servers on its addresses and it is not the default server of any of them",
            };
            let before = out.routes.len();
            self.routes(s, hosts, why, &mut out.routes, notes);
            live[i] = out.routes.len() > before;
        }
        by_address::default_without_routes(&servers, &live, notes);
        split::unused(&self.splits, notes);
        self.listeners(
            &servers,
            &live,
            tls_default.or(plain_default),
            &mut out,
            notes,
        );
        if by_address {
            by_address::keep_listened(&mut out, notes);
        }
        self.server_wide(&servers, &live, &mut out, notes);
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
        self.max_conns(notes);
        if !self.refusals.is_empty() {
            let mut seen = HashSet::new();
            let refusals = std::mem::take(&mut self.refusals)
                .into_iter()
                .filter(|n| seen.insert(n.to_string()))
                .collect();
            return Err(Failure::Refused(refusals));
        }
        if self.upstreams.is_empty() && out.routes.is_empty() {
            return Err(Failure::Nothing(
                "nothing to import: no upstream, no location with a proxy_pass and no return lb can serve"
                    .to_string(),
            ));
        }
        if self.upstreams.is_empty() {
            // Only `return`s (the usual redirect to HTTPS): lb's config needs one upstream.
            let loc = out.routes[0].loc.clone();
            let msg = "only return routes: lb's config needs one upstream, so an unused one (upstreams.unused, 127.0.0.1:9) is written; no route reaches it";
            notes.add(&loc, "return", msg);
            self.upstreams.push(Upstream {
                name: "unused".to_string(),
                loc: loc.clone(),
                label: "no NGINX line: lb needs one upstream, no route uses it".to_string(),
                strategy: None,
                hash_key: None,
                backends: vec![Backend::new("127.0.0.1:9".to_string(), loc)],
                passive: Passive {
                    consecutive_failures: 0,
                    fail_timeout: None,
                    slow_start: None,
                    why: "never used".to_string(),
                },
                tls: false,
                settings: None,
                zone: false,
            });
        }
        out.upstreams = self.upstreams;
        out.rate_limits = self.limits;
        Ok(out)
    }

    /// `[server]` keys for NGINX's server-wide directives (lb has one value for all servers),
    /// `server.tls.min_version` and `[resolver]`.
    fn server_wide(&self, servers: &[Server], live: &[bool], out: &mut Import, notes: &mut Notes) {
        let used: Vec<&Server> = servers
            .iter()
            .zip(live)
            .filter(|(_, l)| **l)
            .map(|(s, _)| s)
            .collect();
        let pick = |name: &str, only: &dyn Fn(&Server) -> bool, notes: &mut Notes| {
            let eff = |s: &Server| s.wide.get(name).or(self.http_wide.get(name)).cloned();
            let set: Vec<(&Server, Option<At<Vec<String>>>)> = used
                .iter()
                .filter(|s| only(s))
                .map(|s| (*s, eff(s)))
                .collect();
            let chosen = set.first().and_then(|(_, v)| v.clone());
            for (s, v) in &set[set.len().min(1)..] {
                if v.as_ref().map(|v| &v.value) != chosen.as_ref().map(|c| &c.value) {
                    let show = |v: &Option<At<Vec<String>>>| {
                        v.as_ref()
                            .map_or("NGINX's default".to_string(), |v| v.value.join(" "))
                    };
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
        };
        let all = |_: &Server| true;
        let mut keys = Vec::new();
        let times = [
            ("keepalive_timeout", "keepalive_timeout", "75s"),
            ("client_header_timeout", "header_timeout", "60s"),
            ("client_body_timeout", "body_timeout", "60s"),
        ];
        for (name, key, default) in times {
            let v = pick(name, &all, notes);
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
                Some(d) if d != "0s" => keys.push((key, super::emit::string(&d), why)),
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
        let buffers = pick("large_client_header_buffers", &all, notes);
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
        match (n, bytes) {
            (Some(n), Some(size)) => {
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
            _ => {
                if let Some(b) = &buffers {
                    notes.add(
                        &b.loc,
                        "large_client_header_buffers",
                        "expects a number and a size, ignored",
                    );
                }
            }
        }
        // client_max_body_size: lb has one limit, the http level's (locations that differ
        // are noted with their routes).
        let (body, why) = match &self.http_body {
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
                if let Some(b) = &self.http_body {
                    notes.add(
                        &b.loc,
                        "client_max_body_size",
                        format!("{body:?} is not a size, ignored"),
                    );
                }
            }
        }
        let real_ip = super::realip::RealIpLines {
            from: pick("set_real_ip_from", &all, notes),
            header: pick("real_ip_header", &all, notes),
            recursive: pick("real_ip_recursive", &all, notes),
        };
        real_ip.keys(&out.proxy_protocol, &mut keys, notes);
        out.server_keys = keys;
        // ssl_protocols: the lowest version any TLS server accepts.
        let tls = |s: &Server| s.listens.iter().any(|l| l.ssl);
        if !out.tls_listen.is_empty() {
            let v = pick("ssl_protocols", &tls, notes);
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
            let loc = v.as_ref().map_or(
                servers.iter().find(|s| tls(s)).map(|s| s.loc.clone()),
                |v| Some(v.loc.clone()),
            );
            if let Some(loc) = loc {
                if old {
                    notes.add(
                        &loc,
                        "ssl_protocols",
                        "lb speaks TLS 1.2 and 1.3 only: older versions are not offered",
                    );
                }
                if !protos.iter().any(|p| p == "TLSv1.3") {
                    notes.add(&loc, "ssl_protocols", "no TLSv1.3: lb offers TLS 1.3 as well (it has a lowest version, not a list)");
                }
                out.tls_min_version = Some(At {
                    value: min.to_string(),
                    loc,
                });
            }
        }
        // resolver: the http level's, else the first server's.
        let resolver = self
            .http_wide
            .get("resolver")
            .cloned()
            .or_else(|| servers.iter().find_map(|s| s.wide.get("resolver").cloned()));
        if let Some(r) = resolver {
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
            if !nameservers.is_empty() {
                out.resolver = Some(Resolver {
                    nameservers,
                    timeout,
                    loc: r.loc.clone(),
                });
            }
        }
    }

    /// `max_conns` without a `zone` is per NGINX worker: lb's limit is for the whole process.
    fn max_conns(&mut self, notes: &mut Notes) {
        let workers = self.workers.clone();
        for u in self.upstreams.iter_mut().filter(|u| !u.zone) {
            for b in u.backends.iter_mut() {
                let Some(m) = b.max_conns else { continue };
                let msg = match workers.as_ref().map(|w| (w, w.value.parse::<u32>())) {
                    None => "max_conns without zone counts per NGINX worker; worker_processes is not set here (NGINX's default 1): kept as is".to_string(),
                    Some((w, Ok(n))) => {
                        let total = m.saturating_mul(n.max(1));
                        b.max_conns = Some(total);
                        format!("max_conns without zone counts per NGINX worker: {m} x worker_processes {n} (at {}) = {total} for lb's one process", w.loc)
                    }
                    Some((w, Err(_))) => format!("max_conns without zone counts per NGINX worker and worker_processes is {:?} (at {}): kept as {m}, multiply it by NGINX's worker count", w.value, w.loc),
                };
                notes.add(&b.loc, "server", msg);
            }
        }
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
        hosts: Vec<Host>,
        why: &str,
        routes: &mut Vec<Route>,
        notes: &mut Notes,
    ) {
        if hosts.is_empty() {
            if !s.locations.is_empty() || s.ret.is_some() {
                let msg = format!("{why}: its locations are not carried over");
                notes.add(&s.loc, "server", msg);
            }
            return;
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
                && (o.listen.is_empty()
                    || r.listen.is_empty()
                    || o.listen.iter().any(|a| r.listen.contains(a)))
        };
        if let Some((at, respond)) = &s.ret {
            for l in &s.locations {
                let msg = "the server's return answers every request first: never used";
                notes.add(&l.loc, format!("location {}", l.label), msg);
            }
            for h in &hosts {
                let r = Route {
                    host: h.name.clone(),
                    path: PathMatch::Prefix("/".into()),
                    skip_regex: false,
                    replace_prefix: None,
                    upstream: String::new(),
                    respond: Some(respond.clone()),
                    kafka: None,
                    scheme: h.scheme,
                    listen: h.listen.clone(),
                    rate_limits: Vec::new(),
                    access: Vec::new(),
                    loc: at.clone(),
                    label: label(&h.name, "return"),
                    settings: Default::default(),
                    mirror: None,
                    split: None,
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
            if l.named.is_some() {
                continue;
            }
            let l = &match &l.fallback {
                None => l.clone(),
                Some(f) => match s
                    .locations
                    .iter()
                    .find(|n| n.named.as_deref() == Some(&f.value))
                {
                    Some(n) if !n.target.is_empty() || n.respond.is_some() => {
                        let msg = format!("NGINX serves files that exist first and sends the rest to {}; lb sends every request under location {} to {}'s proxy (static files stay behind)", f.value, l.label, f.value);
                        notes.add(&f.loc, "try_files", msg);
                        let mut security = l.security.clone();
                        security.extend(n.security.iter().cloned());
                        // NGINX checks both locations' rules (before try_files, and after the
                        // jump); lb's route has one list: the named location's when the first
                        // has none (or the same).
                        let access = if l.access.is_empty() || same_rules(&l.access, &n.access) {
                            n.access.clone()
                        } else {
                            if !n.access.is_empty() {
                                let msg = format!("NGINX also applies {}'s allow/deny after try_files; lb's route keeps location {}'s only", f.value, l.label);
                                notes.add(&f.loc, "try_files", msg);
                            }
                            l.access.clone()
                        };
                        Location {
                            target: n.target.clone(),
                            https: n.https,
                            settings: n.settings.clone(),
                            respond: n.respond.clone(),
                            security,
                            access,
                            fallback: None,
                            ..l.clone()
                        }
                    }
                    _ => {
                        let msg = format!("{} is not a named location of this server that proxies: location {} stays behind (NGINX serves files here)", f.value, l.label);
                        notes.add(&f.loc, "try_files", msg);
                        continue;
                    }
                },
            };
            let internal;
            let l = if l.internal {
                // No client reaches it in NGINX (404); only subrequests (`mirror`) do.
                let msg = "internal: NGINX answers 404 to clients here, and so does lb (a respond route); mirror copies still reach its upstream";
                notes.add(&l.loc, format!("location {}", l.label), msg);
                internal = Location {
                    respond: Some(super::ret::Respond {
                        status: 404,
                        body: None,
                        location: None,
                        content_type: None,
                    }),
                    ..l.clone()
                };
                &internal
            } else {
                l
            };
            let Some(kafka) = self.kafka(l, notes) else {
                continue;
            };
            if l.respond.is_some() || kafka.is_some() {
                // A `return` answers before NGINX's access phase; ngx_kafka_module's content
                // handler runs after it, so its location keeps its allow/deny (and refusals).
                let access = match &kafka {
                    Some(_) if !self.secure(l, notes) => continue,
                    Some(_) => location::access_rules(&l.access, notes),
                    None => Vec::new(),
                };
                for h in &hosts {
                    let r = Route {
                        host: h.name.clone(),
                        path: l.path.clone(),
                        skip_regex: l.skip_regex,
                        replace_prefix: None,
                        upstream: String::new(),
                        respond: l.respond.clone(),
                        kafka: kafka.clone(),
                        scheme: h.scheme,
                        listen: h.listen.clone(),
                        rate_limits: Vec::new(),
                        access: access.clone(),
                        loc: l.loc.clone(),
                        label: label(&h.name, &format!("location {}", l.label)),
                        settings: Default::default(),
                        mirror: None,
                        split: None,
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
            let split = match split::variable(&l.target) {
                None => None,
                Some(var) => match self.split_of(l, var, notes) {
                    Some(s) => Some(s),
                    None => continue,
                },
            };
            // A split's location stands for each of its targets in turn.
            let targets: Vec<Location> = match &split {
                None => vec![l.clone()],
                Some(s) => s
                    .parts
                    .iter()
                    .map(|p| Location {
                        target: p.value.clone(),
                        ..l.clone()
                    })
                    .collect(),
            };
            if let Some(host) = targets
                .iter()
                .map(|t| location::target_host(&t.target))
                .find(|host| self.skipped.iter().any(|n| n.eq_ignore_ascii_case(host)))
            {
                let msg = format!("upstream {host} was skipped, so is this location");
                notes.add(&l.loc, format!("location {}", l.label), msg);
                continue;
            }
            if !self.secure(l, notes) {
                continue;
            }
            let names: Option<Vec<String>> = targets
                .iter()
                .map(|t| location::bind(t, &mut self.upstreams, notes))
                .collect();
            let Some(names) = names else {
                continue;
            };
            let name = names[0].clone();
            let l = &targets[0];
            let split = split.map(|s| RouteSplit {
                by: s.by,
                parts: s.parts.into_iter().map(|p| p.percent).zip(names).collect(),
                loc: s.loc,
            });
            let up = self.upstreams.iter().find(|u| u.name == name);
            let http_body = self.http_body.as_ref();
            let Some(settings) = route_settings::of(l, up, http_body, &mut self.refusals, notes)
            else {
                continue;
            };
            let rate_limits = self.rate_limits(l, notes);
            let access = location::access_rules(&l.access, notes);
            let mirror = self.mirror_of(l, &s.locations, notes);
            for h in &hosts {
                let r = Route {
                    host: h.name.clone(),
                    path: l.path.clone(),
                    skip_regex: l.skip_regex,
                    replace_prefix: l.replace_prefix.clone(),
                    upstream: name.clone(),
                    respond: None,
                    kafka: None,
                    scheme: h.scheme,
                    listen: h.listen.clone(),
                    rate_limits: rate_limits.clone(),
                    access: access.clone(),
                    loc: l.loc.clone(),
                    label: label(&h.name, &format!("location {}", l.label)),
                    settings: settings.clone(),
                    mirror: mirror.clone(),
                    split: split.clone(),
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

    /// The upstream location `l`'s `mirror` copies go to: the location of its server that
    /// NGINX's subrequest to the URI reaches (exact, else the longest prefix), bound as any
    /// proxying location is. `None` (noted) when there is none or it does not proxy.
    fn mirror_of(
        &mut self,
        l: &Location,
        locations: &[Location],
        notes: &mut Notes,
    ) -> Option<String> {
        let first = l.mirror.uris.first()?;
        for extra in &l.mirror.uris[1..] {
            let msg = format!(
                "lb copies a route's requests to one mirror ({}); this one is left out",
                first.value
            );
            notes.add(&extra.loc, "mirror", msg);
        }
        let uri = first.value.as_str();
        let exact = locations
            .iter()
            .find(|t| matches!(&t.path, PathMatch::Exact(p) if p == uri));
        let prefix = || {
            locations
                .iter()
                .filter(|t| t.named.is_none())
                .filter_map(|t| match &t.path {
                    PathMatch::Prefix(p) if uri.starts_with(p.as_str()) => Some((p.len(), t)),
                    _ => None,
                })
                .max_by_key(|(n, _)| *n)
                .map(|(_, t)| t)
        };
        let Some(t) = exact.or_else(prefix).filter(|t| !t.target.is_empty()) else {
            let msg =
                format!("{uri}: no location of this server proxies it, so lb makes no copies");
            notes.add(&first.loc, "mirror", msg);
            return None;
        };
        if !t.keeps_uri {
            let msg = format!("NGINX's copies go to {uri} itself (location {}'s proxy_pass has no $request_uri); lb's copies keep the client's target", t.label);
            notes.add(&first.loc, "mirror", msg);
        }
        if let Some(at) = &l.mirror.body_off {
            let msg = "lb's copies carry the body (up to the mirror's max_body_bytes, 1 MiB)";
            notes.add(at, "mirror_request_body", msg);
        }
        location::bind(t, &mut self.upstreams, notes)
    }

    /// The `split_clients` block a location's `proxy_pass http://$variable` names; `None`
    /// (noted, or refused) when there is none lb can carry.
    fn split_of(&mut self, l: &Location, var: &str, notes: &mut Notes) -> Option<SplitClients> {
        let location = format!("location {}", l.label);
        let refusals = &mut self.refusals;
        split::for_location(&mut self.splits, var, &location, &l.loc, refusals, notes)
    }

    /// Security directives over a proxying location: a refusal, or with `--allow-insecure` a
    /// note that it became public. `false` when the location is refused.
    fn secure(&mut self, l: &Location, notes: &mut Notes) -> bool {
        for d in &l.security {
            let name = d.value.split(' ').next().unwrap_or_default().to_string();
            if self.options.allow_insecure {
                let msg = format!("`{}` is not enforced by lb (--allow-insecure): location {} at {} is PUBLIC in lb", d.value, l.label, l.loc);
                notes.add(&d.loc, name, msg);
            } else {
                let msg = format!("`{}` restricts location {} at {}, and lb cannot enforce it: the location would become public, import refused (--allow-insecure imports it as public)", d.value, l.label, l.loc);
                self.refusals.push(Note {
                    loc: d.loc.clone(),
                    name,
                    message: msg,
                });
            }
        }
        self.options.allow_insecure || l.security.is_empty()
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
        live: &[bool],
        default: Option<usize>,
        out: &mut Import,
        notes: &mut Notes,
    ) {
        let all: Vec<&Listen> = servers
            .iter()
            .zip(live)
            .filter(|(_, l)| **l)
            .flat_map(|(s, _)| &s.listens)
            .collect();
        // A listener only servers without routes had would answer with the others' routes.
        for (s, _) in servers.iter().zip(live).filter(|(_, l)| !**l) {
            for l in &s.listens {
                if !all.iter().any(|a| a.addr == l.addr) {
                    let msg = format!(
                        "{}: no server on this address has a route lb can serve (the server at {} has none: see its notes), listener dropped: lb would serve nothing there that NGINX serves",
                        l.addr, s.loc
                    );
                    notes.add(&l.loc, "listen", msg);
                }
            }
        }
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
            .zip(live)
            .filter(|(s, l)| **l && s.listens.iter().any(|l| ssl.contains(l.addr.as_str())))
            .find_map(|(s, _)| s.http2.clone());
        out.http2 = http2_listen.or(http2_on);
        for l in all {
            let list = if ssl.contains(l.addr.as_str()) {
                &mut out.tls_listen
            } else {
                &mut out.listen
            };
            if l.proxy_protocol && !out.proxy_protocol.contains(&l.addr) {
                out.proxy_protocol.push(l.addr.clone());
            }
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

/// Whom server `i`'s routes are for while each kind of listener has one address: its names,
/// and no host for the kinds it is the default server of; limited to a `scheme` when it
/// listens on one kind only and the import has both.
fn by_kind(
    s: &Server,
    i: usize,
    (plain_default, tls_default): (Option<usize>, Option<usize>),
    (any_plain, any_tls): (bool, bool),
) -> Vec<Host> {
    let scheme = match (
        s.listens.iter().all(|l| l.ssl),
        s.listens.iter().any(|l| l.ssl),
    ) {
        (true, _) if any_plain => Some("https"),
        (_, false) if any_tls => Some("http"),
        _ => None,
    };
    let default = match (plain_default == Some(i), tls_default == Some(i)) {
        (true, true) => Some(scheme),
        (true, false) => Some(any_tls.then_some("http")),
        (false, true) => Some(any_plain.then_some("https")),
        (false, false) => None,
    };
    let named = s.names.iter().map(|n| Host {
        name: Some(n.clone()),
        scheme,
        listen: Vec::new(),
    });
    let default = default.map(|scheme| Host {
        name: None,
        scheme,
        listen: Vec::new(),
    });
    named.chain(default).collect()
}

/// Two `allow`/`deny` lists with the same rules.
fn same_rules(a: &[At<String>], b: &[At<String>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.value == y.value)
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
        proxy_protocol: false,
        loc: d.loc.clone(),
    };
    for p in &d.args[1..] {
        match p.as_str() {
            "ssl" => l.ssl = true,
            "http2" => l.http2 = true,
            "default_server" | "default" => l.default = true,
            "proxy_protocol" => l.proxy_protocol = true,
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
    /// Legacy `ssl on;`.
    ssl_on: Option<Loc>,
}

impl TlsFiles {
    fn owns(name: &str) -> bool {
        matches!(
            name,
            "ssl_certificate" | "ssl_certificate_key" | "http2" | "ssl"
        )
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
            "ssl" => self.ssl_on = (value.value == "on").then_some(d.loc.clone()),
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
            ssl_on: self.ssl_on.or_else(|| http.ssl_on.clone()),
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

/// Server-wide lines of one level (`http` or a `server`): lb has one value for all servers.
#[derive(Default, Clone)]
struct Wide(Vec<(String, At<Vec<String>>)>);

impl Wide {
    fn owns(name: &str) -> bool {
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

    fn take(&mut self, d: &Directive) -> bool {
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

    fn get(&self, name: &str) -> Option<&At<Vec<String>>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
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
