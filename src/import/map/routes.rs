//! A server's locations → routes, the second pass of [`super`]: each location, after its
//! `try_files` fallback and `internal` are resolved, becomes one route per host its server
//! answers for — an answer of lb's own (`return`, `kafka_topic`) or a proxy to an upstream (or a
//! `split_clients` split), with its settings, rate limits, `allow`/`deny` rules and mirror.

use super::{Host, Mapper, Server};
use crate::import::location::{self, Location};
use crate::import::model::*;
use crate::import::route_settings;
use crate::import::split::{self, SplitClients};
use crate::import::tree::Loc;

/// Where one server's routes go: one route per host it answers for, unless an earlier route
/// has the same host and path.
struct Sink<'r> {
    hosts: &'r [Host],
    /// The server's `server_name`s, for the labels.
    names: String,
    routes: &'r mut Vec<Route>,
}

impl Sink<'_> {
    /// For the comment: `server example.com, location /api/`.
    fn label(&self, host: &Option<String>, what: &str) -> String {
        let names = &self.names;
        match host {
            Some(_) => format!("server {names}, {what}"),
            None if names.is_empty() => format!("default server, {what}"),
            None => format!("default server {names}, {what}"),
        }
    }

    /// `base` once per host (its host, scheme, listeners and label filled in); a copy whose
    /// host and path an earlier route has is skipped with a note at `at` under `directive`.
    fn push_each(&mut self, base: &Route, what: &str, at: &Loc, directive: &str, n: &mut Notes) {
        for h in self.hosts {
            let r = Route {
                host: h.name.clone(),
                scheme: h.scheme,
                listen: h.listen.clone(),
                label: self.label(&h.name, what),
                ..base.clone()
            };
            if let Some(o) = self.routes.iter().find(|o| same(o, &r)) {
                let msg = format!("same host and path as the route from {}, skipped", o.loc);
                n.add(at, directive, msg);
                continue;
            }
            self.routes.push(r);
        }
    }
}

/// Two routes NGINX would never both reach: same host and path, on overlapping schemes and
/// listeners.
fn same(o: &Route, r: &Route) -> bool {
    o.host == r.host
        && o.path == r.path
        && (o.scheme.is_none() || r.scheme.is_none() || o.scheme == r.scheme)
        && (o.listen.is_empty()
            || r.listen.is_empty()
            || o.listen.iter().any(|a| r.listen.contains(a)))
}

/// A route matching `path`, from the line at `loc`, that does nothing yet: no host, target,
/// rules or settings.
fn blank(path: PathMatch, loc: Loc) -> Route {
    Route {
        host: None,
        path,
        skip_regex: false,
        replace_prefix: None,
        upstream: String::new(),
        respond: None,
        kafka: None,
        scheme: None,
        listen: Vec::new(),
        rate_limits: Vec::new(),
        access: Vec::new(),
        loc,
        label: String::new(),
        settings: Default::default(),
        mirror: None,
        split: None,
    }
}

impl Mapper<'_> {
    /// Routes of one server: one per (name, location), and without a host when it is the default.
    pub(super) fn routes(
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
        let mut sink = Sink {
            hosts: &hosts,
            names: s.names.join(" "),
            routes,
        };
        if let Some((at, respond)) = &s.ret {
            for l in &s.locations {
                let msg = "the server's return answers every request first: never used";
                notes.add(&l.loc, format!("location {}", l.label), msg);
            }
            let r = Route {
                respond: Some(respond.clone()),
                ..blank(PathMatch::Prefix("/".into()), at.clone())
            };
            sink.push_each(&r, "return", at, "return", notes);
            return;
        }
        for l in &s.locations {
            if l.named.is_some() {
                continue;
            }
            let Some(l) = with_fallback(s, l, notes) else {
                continue;
            };
            let l = internal_404(l, notes);
            self.location_routes(&l, &s.locations, &mut sink, notes);
        }
    }

    /// The routes of one (unnamed, resolved) location.
    fn location_routes(
        &mut self,
        l: &Location,
        locations: &[Location],
        sink: &mut Sink,
        notes: &mut Notes,
    ) {
        let Some(kafka) = self.kafka(l, notes) else {
            return;
        };
        if l.respond.is_some() || kafka.is_some() {
            self.answered(l, kafka, sink, notes);
        } else {
            self.proxied(l, locations, sink, notes);
        }
    }

    /// A location lb answers itself: `return`, or a `kafka_topic` produced to Kafka.
    fn answered(
        &mut self,
        l: &Location,
        kafka: Option<KafkaRoute>,
        sink: &mut Sink,
        notes: &mut Notes,
    ) {
        // A `return` answers before NGINX's access phase; ngx_kafka_module's content
        // handler runs after it, so its location keeps its allow/deny (and refusals).
        let access = match &kafka {
            Some(_) if !self.secure(l, notes) => return,
            Some(_) => location::access_rules(&l.access, notes),
            None => Vec::new(),
        };
        let r = Route {
            skip_regex: l.skip_regex,
            respond: l.respond.clone(),
            kafka,
            access,
            ..blank(l.path.clone(), l.loc.clone())
        };
        let what = format!("location {}", l.label);
        sink.push_each(&r, &what, &l.loc, "location", notes);
    }

    /// A location that proxies: to one upstream, or split over several.
    fn proxied(
        &mut self,
        l: &Location,
        locations: &[Location],
        sink: &mut Sink,
        notes: &mut Notes,
    ) {
        let Some((split, targets)) = self.targets(l, notes) else {
            return;
        };
        if !self.secure(l, notes) {
            return;
        }
        let names: Option<Vec<String>> = targets
            .iter()
            .map(|t| location::bind(t, &mut self.upstreams, notes))
            .collect();
        let Some(names) = names else {
            return;
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
        let Some(settings) = route_settings::of(l, up, http_body, &mut self.refusals, notes) else {
            return;
        };
        let r = Route {
            skip_regex: l.skip_regex,
            replace_prefix: l.replace_prefix.clone(),
            upstream: name,
            rate_limits: self.rate_limits(l, notes),
            access: location::access_rules(&l.access, notes),
            settings,
            mirror: self.mirror_of(l, locations, notes),
            split,
            ..blank(l.path.clone(), l.loc.clone())
        };
        let what = format!("location {}", l.label);
        sink.push_each(&r, &what, &l.loc, "location", notes);
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
    fn rate_limits(&mut self, l: &Location, notes: &mut Notes) -> Vec<String> {
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

    /// The location's `split_clients` block (if it proxies to `$variable`) and the locations it
    /// stands for: itself, or itself with each of the split's targets in turn. `None` (noted)
    /// when the split cannot be carried or a target is an upstream that was skipped.
    fn targets(
        &mut self,
        l: &Location,
        notes: &mut Notes,
    ) -> Option<(Option<SplitClients>, Vec<Location>)> {
        let split = match split::variable(&l.target) {
            None => None,
            Some(var) => Some(self.split_of(l, var, notes)?),
        };
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
            return None;
        }
        Some((split, targets))
    }
}

/// `l` itself, or for a location whose `try_files` falls back to a named location, `l` with
/// that location's proxy (or answer), settings and rules. `None` (noted) when the fallback is
/// no named location of the server that proxies or answers.
fn with_fallback(s: &Server, l: &Location, notes: &mut Notes) -> Option<Location> {
    let Some(f) = &l.fallback else {
        return Some(l.clone());
    };
    let named = s
        .locations
        .iter()
        .find(|n| n.named.as_deref() == Some(&f.value));
    let Some(n) = named.filter(|n| !n.target.is_empty() || n.respond.is_some()) else {
        let msg = format!("{} is not a named location of this server that proxies: location {} stays behind (NGINX serves files here)", f.value, l.label);
        notes.add(&f.loc, "try_files", msg);
        return None;
    };
    let msg = format!("NGINX serves files that exist first and sends the rest to {}; lb sends every request under location {} to {}'s proxy (static files stay behind)", f.value, l.label, f.value);
    notes.add(&f.loc, "try_files", msg);
    let mut security = l.security.clone();
    security.extend(n.security.iter().cloned());
    // NGINX checks both locations' rules (before try_files, and after the jump); lb's route
    // has one list: the named location's when the first has none (or the same).
    let access = if l.access.is_empty() || same_rules(&l.access, &n.access) {
        n.access.clone()
    } else {
        if !n.access.is_empty() {
            let msg = format!("NGINX also applies {}'s allow/deny after try_files; lb's route keeps location {}'s only", f.value, l.label);
            notes.add(&f.loc, "try_files", msg);
        }
        l.access.clone()
    };
    Some(Location {
        target: n.target.clone(),
        https: n.https,
        settings: n.settings.clone(),
        respond: n.respond.clone(),
        security,
        access,
        fallback: None,
        ..l.clone()
    })
}

/// An `internal` location answers clients 404 (a respond route), as NGINX does; only
/// subrequests (`mirror`) reach its upstream.
fn internal_404(l: Location, notes: &mut Notes) -> Location {
    if !l.internal {
        return l;
    }
    let msg = "internal: NGINX answers 404 to clients here, and so does lb (a respond route); mirror copies still reach its upstream";
    notes.add(&l.loc, format!("location {}", l.label), msg);
    Location {
        respond: Some(crate::import::ret::Respond {
            status: 404,
            body: None,
            location: None,
            content_type: None,
        }),
        ..l
    }
}

/// Two `allow`/`deny` lists with the same rules.
fn same_rules(a: &[At<String>], b: &[At<String>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.value == y.value)
}
