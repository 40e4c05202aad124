//! The NGINX tree → [`Import`]: contexts, `server` blocks (listeners, names, certificates) and
//! their locations (routes), with the proxy settings each level inherits from the one above.
//!
//! Two passes: the first walks the tree in order (so notes come out in file order), maps every
//! `upstream` block and collects servers and locations with their `proxy_pass` target; the
//! second binds each location to its upstream (an `upstream` block of that name, else an
//! implicit one for the address) and turns it into routes.

use std::collections::HashSet;
use std::path::Path;

use super::limit::{self, RateLimit};
use super::location::{self, Location, Settings};
use super::model::*;
use super::split;
use super::tree::{Directive, Loc};
use super::upstream::upstream;

mod by_address;
mod listen;
mod routes;
mod tls;
mod wide;

use listen::{listen, server_names};
use tls::TlsFiles;
pub use wide::size;
use wide::Wide;

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

    /// The second pass: servers' locations bound to upstreams and turned into routes, then
    /// listeners, server-wide keys and the checks over the whole import.
    fn finish(mut self, notes: &mut Notes) -> Result<Import, Failure> {
        let mut out = Import::default();
        self.spread_ssl(notes);
        // One address per kind of listener: per-kind defaults and `scheme` say it all. More:
        // every route names its server's addresses, each address has its default server.
        let by_address = by_address::needed(&self.servers);
        // (Per address, several `default_server` marks of one kind are no conflict.)
        let mut unused = Notes(Vec::new());
        let defaults = self.default_servers(if by_address { &mut unused } else { notes });
        let servers = std::mem::take(&mut self.servers);
        let live = self.server_routes(&servers, by_address, defaults, &mut out.routes, notes);
        by_address::default_without_routes(&servers, &live, notes);
        split::unused(&self.splits, notes);
        let (plain_default, tls_default) = defaults;
        let default = tls_default.or(plain_default);
        self.listeners(&servers, &live, default, &mut out, notes);
        if by_address {
            by_address::keep_listened(&mut out, notes);
        }
        self.server_wide(&servers, &live, &mut out, notes);
        self.keepalive_pool(&mut out, notes);
        self.max_conns(notes);
        self.refused()?;
        if self.upstreams.is_empty() && out.routes.is_empty() {
            return Err(Failure::Nothing(
                "nothing to import: no upstream, no location with a proxy_pass and no return lb can serve"
                    .to_string(),
            ));
        }
        if self.upstreams.is_empty() {
            self.unused_upstream(&out.routes[0].loc, notes);
        }
        out.upstreams = self.upstreams;
        out.rate_limits = self.limits;
        Ok(out)
    }

    /// As NGINX: a `listen` of an address some server listens on with `ssl` is TLS too; the
    /// servers with a TLS listener read their certificates.
    fn spread_ssl(&mut self, notes: &mut Notes) {
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
    }

    /// Every server's routes into `routes`; which servers kept any (`live`).
    fn server_routes(
        &mut self,
        servers: &[Server],
        by_address: bool,
        defaults: (Option<usize>, Option<usize>),
        routes: &mut Vec<Route>,
        notes: &mut Notes,
    ) -> Vec<bool> {
        let listens = || servers.iter().flat_map(|s| &s.listens);
        let (any_plain, any_tls) = (listens().any(|l| !l.ssl), listens().any(|l| l.ssl));
        let mut live = vec![false; servers.len()];
        let mut claimed = HashSet::new();
        for (i, s) in servers.iter().enumerate() {
            let hosts = match by_address {
                true => by_address::hosts(servers, i, &mut claimed, notes),
                false => listen::by_kind(s, i, defaults, (any_plain, any_tls)),
            };
            let why = match s.names.is_empty() {
                true => "no server_name lb can match and not the default server of its address",
                false => "its names belong to earlier servers on its addresses and it is not the default server of any of them",
            };
            let before = routes.len();
            self.routes(s, hosts, why, routes, notes);
            live[i] = routes.len() > before;
        }
        live
    }

    /// `keepalive` of the upstreams → `server.upstream_keepalive_pool_size`, their sum.
    fn keepalive_pool(&self, out: &mut Import, notes: &mut Notes) {
        let Some(first) = self.keepalive.first() else {
            return;
        };
        let total: usize = self.keepalive.iter().map(|k| k.value).sum();
        for k in &self.keepalive {
            let msg = format!("{} idle connections per NGINX worker for this upstream; lb keeps one pool for all upstreams: server.upstream_keepalive_pool_size = {total} (the sum)", k.value);
            notes.add(&k.loc, "keepalive", msg);
        }
        out.keepalive = Some(At {
            value: total,
            loc: first.loc.clone(),
        });
    }

    /// `Err` with the refusals (each once) when there are any.
    fn refused(&mut self) -> Result<(), Failure> {
        if self.refusals.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let refusals = std::mem::take(&mut self.refusals)
            .into_iter()
            .filter(|n| seen.insert(n.to_string()))
            .collect();
        Err(Failure::Refused(refusals))
    }

    /// Only `return`s (the usual redirect to HTTPS): lb's config needs one upstream, so an
    /// unused one is added (noted at the first route's line, `at`).
    fn unused_upstream(&mut self, at: &Loc, notes: &mut Notes) {
        let msg = "only return routes: lb's config needs one upstream, so an unused one (upstreams.unused, 127.0.0.1:9) is written; no route reaches it";
        notes.add(at, "return", msg);
        self.upstreams.push(Upstream {
            name: "unused".to_string(),
            loc: at.clone(),
            label: "no NGINX line: lb needs one upstream, no route uses it".to_string(),
            strategy: None,
            hash_key: None,
            backends: vec![Backend::new("127.0.0.1:9".to_string(), at.clone())],
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
}
