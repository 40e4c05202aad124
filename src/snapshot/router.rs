//! Routing as NGINX does it: a router per kind of listener (plain, HTTPS, and each listener
//! routes name), host groups (exact, leading and trailing wildcards, default), then within a
//! group exact paths, prefixes and regexes in NGINX's order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::route::{KafkaTarget, Route, RouteFault, RouteSettings, Target};
use crate::config::{Config, PathMatch, PathRegex, RouteConfig, Scheme};

/// What routing found for a request.
#[derive(Debug)]
pub enum Routed<'a> {
    To(&'a Route),
    /// The path is a `path_prefix` route's prefix without its trailing slash: lb answers 301 to
    /// the path with the slash, as NGINX's `auto_redirect` does for proxied locations.
    AddSlash,
}

/// The routes of one host group, in NGINX's matching order (see [`Router`]).
#[derive(Debug, Default)]
struct Group {
    exact: Vec<(Box<str>, Route)>,
    /// Longest first (file order among equal lengths); `true`: `skip_regex`.
    prefixes: Vec<(Box<str>, bool, Route)>,
    /// File order.
    regexes: Vec<(PathRegex, Route)>,
}

impl Group {
    /// Exact path; else the longest prefix if it has `skip_regex`; else the first regex that
    /// matches; else the longest prefix (`ngx_http_core_find_location`).
    ///
    /// Before the prefixes, NGINX's `auto_redirect`: a path that is a prefix route's prefix minus
    /// its trailing slash is redirected to it (an exact route of that path wins).
    #[inline]
    fn find(&self, path: &str) -> Option<Routed<'_>> {
        if let Some((_, r)) = self.exact.iter().find(|(p, _)| **p == *path) {
            return Some(Routed::To(r));
        }
        let slash = |p: &str| p.len() == path.len() + 1 && p.ends_with('/') && p.starts_with(path);
        let proxied = |r: &Route| !matches!(r.target, Target::Respond(_));
        if self.prefixes.iter().any(|(p, _, r)| slash(p) && proxied(r)) {
            return Some(Routed::AddSlash);
        }
        let longest = self.prefixes.iter().find(|(p, ..)| path.starts_with(&**p));
        if let Some((_, true, r)) = longest {
            return Some(Routed::To(r));
        }
        if let Some((_, r)) = self.regexes.iter().find(|(re, _)| re.is_match(path)) {
            return Some(Routed::To(r));
        }
        longest.map(|(_, _, r)| Routed::To(r))
    }

    /// Adds `route` for `path` (`skip_regex`: a prefix that wins over regexes).
    fn insert(&mut self, path: &PathMatch, skip_regex: bool, route: Route) {
        match path {
            PathMatch::Exact(p) => self.exact.push((p.as_str().into(), route)),
            PathMatch::Prefix(p) => self.prefixes.push((p.as_str().into(), skip_regex, route)),
            PathMatch::Regex(re) => self.regexes.push((re.clone(), route)),
        }
    }
}

/// NGINX's routing model: the request's host (port and a trailing dot ignored, any case) picks
/// a group — exact name, else the longest leading wildcard (`*.example.com`: subdomains only;
/// `.example.com`: the name and its subdomains; `*.` first at equal length), else the longest
/// trailing wildcard (`www.example.*`), else the routes without `host` — and the group's routes
/// match the path ([`Group::find`]).
#[derive(Debug, Default)]
pub(super) struct Router {
    hosts: HashMap<Box<str>, Group>,
    /// (suffix with its leading dot, `*.` form), longest suffix first.
    wildcards: Vec<(Box<str>, bool, Group)>,
    /// Trailing wildcards: the name before `*`, with its dot (`www.example.`), longest first.
    trailing: Vec<(Box<str>, Group)>,
    default: Group,
}

impl Router {
    /// The router of the plain listeners (`tls` false) or of the HTTPS ones: routes with a
    /// `scheme` are only in that one. `listener`: the router of that one listener (routes
    /// naming it and routes without `listen`); `None`: of the listeners no route names (routes
    /// without `listen` only).
    fn build(
        config: &Config,
        faults: &[Option<Arc<RouteFault>>],
        kafka: &[Option<Arc<KafkaTarget>>],
        tls: bool,
        listener: Option<SocketAddr>,
    ) -> Router {
        let mut router = Router::default();
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        let mine = |r: &&RouteConfig| {
            let here = match (&r.listen, listener) {
                (None, _) => true,
                (Some(ls), Some(l)) => ls.contains(&l),
                (Some(_), None) => false,
            };
            here && r.scheme.is_none_or(|s| s == scheme)
        };
        // With one upstream, a kind of listener no route is for sends everything to it (e.g.
        // HTTPS, when the only route redirects plain HTTP there). Not once routes name
        // listeners: a listener without routes then answers 404, never another one's traffic.
        let none_mine = !config.routes.iter().any(|r| mine(&r));
        let by_listener = config.routes.iter().any(|r| r.listen.is_some());
        if none_mine && !by_listener && config.upstreams.len() == 1 {
            let all = Route {
                target: Target::Upstream(0),
                replace: None,
                limits: None,
                settings: RouteSettings::build(None, &config.upstreams[0]),
                access: None,
                mirror: None,
                fault: None,
            };
            router.default.prefixes.push(("/".into(), false, all));
        }
        for (n, r) in config.routes.iter().enumerate().filter(|(_, r)| mine(r)) {
            let fault = faults.get(n).cloned().flatten();
            let kafka = kafka.get(n).cloned().flatten();
            if let Some(route) = Route::build(config, r, fault, kafka) {
                let group = router.group_mut(r.host.as_deref());
                group.insert(&r.path, r.skip_regex, route);
            }
        }
        router.sort();
        router
    }

    /// The group of routes with `host` (`None`: without one), added if new.
    fn group_mut(&mut self, host: Option<&str>) -> &mut Group {
        let Some(h) = host else {
            return &mut self.default;
        };
        if let Some(prefix) = h.strip_suffix('*').filter(|_| h.ends_with(".*")) {
            let at = self.trailing.iter().position(|(p, _)| **p == *prefix);
            let at = at.unwrap_or_else(|| {
                self.trailing.push((prefix.into(), Group::default()));
                self.trailing.len() - 1
            });
            return &mut self.trailing[at].1;
        }
        let Some(suffix) = h
            .strip_prefix('*')
            .or_else(|| h.starts_with('.').then_some(h))
        else {
            return self.hosts.entry(h.into()).or_default();
        };
        let star = h.starts_with('*');
        let at = self
            .wildcards
            .iter()
            .position(|(s, st, _)| **s == *suffix && *st == star);
        let at = at.unwrap_or_else(|| {
            self.wildcards.push((suffix.into(), star, Group::default()));
            self.wildcards.len() - 1
        });
        &mut self.wildcards[at].2
    }

    /// Puts every group's prefixes longest first, and the wildcards in matching order.
    fn sort(&mut self) {
        let sort = |g: &mut Group| g.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        sort(&mut self.default);
        self.hosts.values_mut().for_each(sort);
        for (_, _, g) in &mut self.wildcards {
            sort(g);
        }
        for (_, g) in &mut self.trailing {
            sort(g);
        }
        self.trailing
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self.wildcards
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.1.cmp(&a.1)));
    }

    /// The route for `path` in the group of `host`.
    #[inline]
    pub(super) fn find(&self, host: Option<&str>, path: &str) -> Option<Routed<'_>> {
        self.group(host).find(path)
    }

    #[inline]
    fn group(&self, host: Option<&str>) -> &Group {
        let Some(host) = host else {
            return &self.default;
        };
        if self.hosts.is_empty() && self.wildcards.is_empty() && self.trailing.is_empty() {
            return &self.default;
        }
        let host = host_name(host);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let lower: Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if let Some(g) = self.hosts.get(&*lower) {
            return g;
        }
        let wild = self.wildcards.iter().find(|(suffix, star, _)| {
            lower.ends_with(&**suffix) && (lower.len() > suffix.len() || !star)
                || (!star && *lower == suffix[1..])
        });
        if let Some((_, _, g)) = wild {
            return g;
        }
        let trailing = self
            .trailing
            .iter()
            .find(|(prefix, _)| lower.starts_with(&**prefix) && lower.len() > prefix.len());
        trailing.map_or(&self.default, |(_, g)| g)
    }
}

/// The plain and HTTPS routers, then one per listener some route names, with the index of
/// each such listener's router.
pub(super) fn build_routers(
    config: &Config,
    faults: &[Option<Arc<RouteFault>>],
    kafka: &[Option<Arc<KafkaTarget>>],
) -> (Vec<Router>, Box<[(SocketAddr, usize)]>) {
    let mut routers = vec![
        Router::build(config, faults, kafka, false, None),
        Router::build(config, faults, kafka, true, None),
    ];
    let mut listeners: Vec<(SocketAddr, usize)> = Vec::new();
    let named = config.routes.iter().filter_map(|r| r.listen.as_deref());
    for &addr in named.flatten() {
        if listeners.iter().any(|(l, _)| *l == addr) {
            continue;
        }
        let tls = config
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.listen.contains(&addr));
        listeners.push((addr, routers.len()));
        routers.push(Router::build(config, faults, kafka, tls, Some(addr)));
    }
    (routers, listeners.into())
}

/// A `Host` (or `:authority`) without its port and a trailing dot, as NGINX names the host
/// (`[v6]:port` keeps its brackets). Routing matches it in any case; `host_header =
/// "client_host"` sends it lower-cased.
pub fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}
