//! `location` blocks → routes, and the proxy settings (`proxy_set_header`, timeouts,
//! `proxy_next_upstream`, `limit_req`) that `http`, `server` and outer locations pass down to them.
//!
//! NGINX inherits a scalar setting unless the inner level sets it, and the `proxy_set_header`
//! and `add_header` lists only when the inner level has none of its own; `proxy_pass` itself is
//! never inherited, so a nested location without one serves files and is skipped like any such
//! location. lb keeps retries and the Host header per upstream: the first location proxying to
//! an upstream sets them, later ones that disagree get a note. Timeouts are the upstream's too
//! (the first location's), and a route of its own for a location that differs
//! ([`super::route_settings`]), as are its other headers and body limit.

use std::borrow::Cow;

use super::limit::LimitUse;
use super::model::*;
use super::ret;
use super::tree::{Directive, Loc};

mod bind;
mod settings;

pub use bind::{bind, target_host};
pub use settings::{Settings, SECURITY};

/// A location's `mirror` lines in effect.
#[derive(Debug, Clone, Default)]
pub struct MirrorUse {
    /// The URIs copies go to (NGINX: each a subrequest through the server's locations).
    pub uris: Vec<At<String>>,
    /// `mirror_request_body off`.
    pub body_off: Option<Loc>,
}

/// A location that proxies, not yet bound to an upstream.
#[derive(Debug, Clone)]
pub struct Location {
    pub loc: Loc,
    /// As written after `location`: `= /x`, `^~ /static/`, `~* \.php$`.
    pub label: String,
    pub path: PathMatch,
    pub skip_regex: bool,
    pub replace_prefix: Option<String>,
    /// `https://` in `proxy_pass`.
    pub https: bool,
    /// The `proxy_pass` host (and port) as written: an upstream name or an address.
    pub target: String,
    pub settings: UseSettings,
    /// Its `limit_req` lines (its own, else inherited).
    pub limits: LimitUse,
    /// `return`: lb answers (no upstream; `target` is empty).
    pub respond: Option<ret::Respond>,
    /// `kafka_topic` (ngx_kafka_module): lb produces the body to this topic (no upstream).
    pub kafka_topic: Option<At<String>>,
    /// The security directives in effect (lb enforces none).
    pub security: Vec<At<String>>,
    /// The `allow`/`deny` lines in effect (`allow 10.0.0.0/8`), in order: the route's `access`.
    pub access: Vec<At<String>>,
    /// `client_max_body_size` in effect.
    pub body_size: Option<At<String>>,
    /// `proxy_set_header` lines in effect besides `Host` and those lb does anyway.
    pub set_headers: Vec<At<(String, String)>>,
    /// `add_header` lines in effect.
    pub add_headers: Vec<At<(String, String, bool)>>,
    /// `location @name`: reached only through `try_files ... @name` (or `error_page`).
    pub named: Option<String>,
    /// A location without `proxy_pass` whose `try_files` falls back to a named location: the
    /// `@name` and its line. [`crate::import::map`] gives it the named location's proxy.
    pub fallback: Option<At<String>>,
    /// Its `mirror` lines.
    pub mirror: MirrorUse,
    /// `internal`: no client reaches it (NGINX answers 404); subrequests such as `mirror`'s do.
    pub internal: bool,
    /// An internal location's `proxy_pass` ended in `$request_uri` (the copy keeps the
    /// client's target, as lb's copies do).
    pub keeps_uri: bool,
}

/// A location's `allow`/`deny` lines as lb's `access` rules (`allow 10.0.0.0/8`, `deny all`);
/// a line lb cannot apply (`unix:`, a name) is left out with a note, and so are the rules
/// after it when it could have matched first.
pub fn access_rules(lines: &[At<String>], notes: &mut Notes) -> Vec<String> {
    let mut rules = Vec::new();
    for line in lines {
        let (verb, net) = line.value.split_once(' ').unwrap_or((&line.value, ""));
        let ok = net == "all" || {
            let ip = net.split_once('/').map_or(net, |(ip, _)| ip);
            ip.parse::<std::net::IpAddr>().is_ok()
        };
        if ok {
            rules.push(format!("{verb} {net}"));
        } else {
            let msg = format!(
                "{net:?}: lb's access rules take IP networks and `all`; this rule is left out"
            );
            notes.add(&line.loc, verb, msg);
        }
    }
    rules
}

/// Maps a `location` block and those nested in it into `out`. Nested prefix and exact locations
/// are routes of their own (NGINX requires them inside the parent's prefix); a nested regex
/// (only tried for URIs whose longest prefix is the parent) and anything nested in a regex or
/// exact location cannot be scoped by lb's routes and are skipped with a note.
pub fn location(d: &Directive, parent: &Settings, out: &mut Vec<Location>, notes: &mut Notes) {
    let label = d.args.join(" ");
    let named = match d.args.as_slice() {
        [one] if one.starts_with('@') => Some(one.clone()),
        _ => None,
    };
    let (path, skip_regex) = match &named {
        Some(n) => (PathMatch::Prefix(n.clone()), false),
        None => match path_match(d, notes) {
            Some(p) => p,
            None => return,
        },
    };
    let mut settings = parent.child();
    for c in d.children() {
        settings.take(c, notes);
    }
    let scoped = matches!(path, PathMatch::Prefix(_)) && named.is_none();
    let lines = Lines::of(d, &label, scoped, &settings, notes);
    let base = Location {
        loc: d.loc.clone(),
        label,
        path,
        skip_regex,
        replace_prefix: None,
        https: false,
        target: String::new(),
        settings: settings.use_settings(),
        limits: LimitUse::default(),
        respond: None,
        kafka_topic: None,
        security: settings.security(),
        access: settings.access(),
        body_size: settings.body_size.clone(),
        set_headers: settings.headers.clone(),
        add_headers: settings.add_headers.clone(),
        named,
        fallback: None,
        mirror: MirrorUse {
            uris: settings.mirror.clone(),
            body_off: settings.mirror_body_off.clone(),
        },
        internal: lines.internal,
        keeps_uri: false,
    };
    let (pass, keeps_uri) = request_uri_pass(lines.pass, lines.internal);
    let pass = pass.as_deref();
    let base = Location { keeps_uri, ..base };
    if let Some(r) = lines.ret {
        returned(r, pass, &settings, base, out, notes);
    } else if let Some(k) = lines.kafka_topic {
        // ngx_kafka_module's content handler: the body goes to the topic instead of a backend.
        if let Some(p) = pass {
            let msg = "kafka_topic handles this location: never used";
            notes.add(&p.loc, "proxy_pass", msg);
        }
        out.push(Location {
            kafka_topic: Some(At {
                value: k.args.first().cloned().unwrap_or_default(),
                loc: k.loc.clone(),
            }),
            ..base
        });
    } else {
        let limits = settings.limits.now.clone();
        match pass {
            None => without_pass(lines.fallback, limits, base, out, notes),
            Some(p) => proxied(p, lines.fallback.as_ref(), limits, base, out, notes),
        }
    }
    out.extend(lines.nested);
}

/// What a `location` block's lines say besides its proxy settings.
struct Lines<'d> {
    pass: Option<&'d Directive>,
    /// The first `return`.
    ret: Option<&'d Directive>,
    kafka_topic: Option<&'d Directive>,
    /// `try_files ... @name`: the named location and the line.
    fallback: Option<At<String>>,
    internal: bool,
    /// The locations nested in it, mapped.
    nested: Vec<Location>,
}

impl<'d> Lines<'d> {
    /// The lines of `d` (labelled `label`), nested locations mapped with `settings` when
    /// `scoped` (a prefix, unnamed parent), the others noted.
    fn of(
        d: &'d Directive,
        label: &str,
        scoped: bool,
        settings: &Settings,
        notes: &mut Notes,
    ) -> Lines<'d> {
        let mut lines = Lines {
            pass: None,
            ret: None,
            kafka_topic: None,
            fallback: None,
            internal: false,
            nested: Vec::new(),
        };
        for c in d.children() {
            match c.name.as_str() {
                "proxy_pass" => lines.pass = Some(c),
                "internal" => lines.internal = true,
                "return" => lines.ret = lines.ret.or(Some(c)),
                "kafka_topic" => lines.kafka_topic = Some(c),
                "try_files" => match c.args.last().filter(|a| a.starts_with('@')) {
                    Some(n) => {
                        lines.fallback = Some(At {
                            value: n.clone(),
                            loc: c.loc.clone(),
                        })
                    }
                    None => notes.unsupported(c),
                },
                "location" => lines.nested_location(c, label, scoped, settings, notes),
                n if Settings::owns(n) => {}
                n if n.ends_with("_by_lua_block") || n.ends_with("_by_lua") => {
                    notes.add(&c.loc, n, "OpenResty Lua code: not supported, skipped")
                }
                _ => notes.unsupported(c),
            }
        }
        lines
    }

    /// A `location` inside one labelled `label`: mapped when lb's routes can scope it.
    fn nested_location(
        &mut self,
        c: &Directive,
        label: &str,
        scoped: bool,
        settings: &Settings,
        notes: &mut Notes,
    ) {
        let inner = c.args.join(" ");
        let regex = matches!(c.args.first().map(String::as_str), Some("~" | "~*"))
            || c.args.first().is_some_and(|a| a.starts_with('~'));
        if scoped && !regex {
            location(c, settings, &mut self.nested, notes);
            return;
        }
        let msg = if scoped {
            format!("nested regex inside location {label}: NGINX tries it only for URIs whose longest prefix is {label}, before the top-level regexes; lb's routes cannot scope a regex like that, so it is skipped and those requests go to the routes lb has")
        } else {
            format!("nested inside location {label}: lb cannot scope a location to a regex, exact or named parent, skipped")
        };
        notes.add(&c.loc, format!("location {inner}"), msg);
    }
}

/// `proxy_pass http://shadow$request_uri` in an internal location (the `mirror` target's
/// usual form): the line without `$request_uri`, and `true` (the copies keep the client's
/// target). Any other line as it is.
fn request_uri_pass(
    pass: Option<&Directive>,
    internal: bool,
) -> (Option<Cow<'_, Directive>>, bool) {
    let Some(p) = pass else {
        return (None, false);
    };
    let url = p.args.first().and_then(|u| u.strip_suffix("$request_uri"));
    match url.filter(|_| internal) {
        Some(url) => {
            let mut p = p.clone();
            p.args[0] = url.to_string();
            (Some(Cow::Owned(p)), true)
        }
        None => (Some(Cow::Borrowed(p)), false),
    }
}

/// A location whose `return` (NGINX's rewrite phase) answers before the content phase would
/// proxy.
fn returned(
    r: &Directive,
    pass: Option<&Directive>,
    settings: &Settings,
    base: Location,
    out: &mut Vec<Location>,
    notes: &mut Notes,
) {
    if let Some(p) = pass {
        let msg = "return answers every request here first: never used";
        notes.add(&p.loc, "proxy_pass", msg);
    }
    let server_name = settings.server_name.as_deref();
    let default_type = settings.default_type.as_deref();
    if let Some(respond) = ret::parse(r, server_name, default_type, notes) {
        out.push(Location {
            respond: Some(respond),
            // `return` runs in the rewrite phase, before any access check.
            security: Vec::new(),
            access: Vec::new(),
            ..base
        });
    }
}

/// A location without `proxy_pass`: kept when its `try_files` falls back to a named location
/// ([`crate::import::map`] gives it that location's proxy), else noted and skipped.
fn without_pass(
    fallback: Option<At<String>>,
    limits: LimitUse,
    base: Location,
    out: &mut Vec<Location>,
    notes: &mut Notes,
) {
    let why = match fallback {
        Some(f) => {
            out.push(Location {
                limits,
                fallback: Some(f),
                ..base
            });
            return;
        }
        None if base.named.is_some() => {
            "named location without proxy_pass (lb only proxies), skipped"
        }
        None => {
            "no proxy_pass: NGINX serves files here (static files, ACME challenges); lb only proxies, so this location stays behind, skipped"
        }
    };
    notes.add(&base.loc, format!("location {}", base.label), why);
}

/// A location that proxies: its target, and the prefix its `proxy_pass` URI part replaces.
fn proxied(
    p: &Directive,
    fallback: Option<&At<String>>,
    limits: LimitUse,
    base: Location,
    out: &mut Vec<Location>,
    notes: &mut Notes,
) {
    if let Some(f) = fallback {
        let msg = format!("try_files before proxy_pass: NGINX serves existing files first and then {}; lb proxies every request", f.value);
        notes.add(&f.loc, "try_files", msg);
    }
    let Some((https, target, uri)) = proxy_pass(p, notes) else {
        return;
    };
    let replace_prefix = uri.and_then(|uri| match &base.path {
        PathMatch::Prefix(_) if base.named.is_some() => {
            let msg = format!("URI part {uri} in a named location (NGINX refuses it), ignored");
            notes.add(&p.loc, "proxy_pass", msg);
            None
        }
        PathMatch::Prefix(_) => Some(uri),
        PathMatch::Exact(x) => {
            let msg = format!("URI part {uri}: lb replaces path prefixes only, so {x} goes to the backend unchanged");
            notes.add(&p.loc, "proxy_pass", msg);
            None
        }
        PathMatch::Regex(_) => {
            let msg = format!("URI part {uri} in a regex location (NGINX refuses it), ignored");
            notes.add(&p.loc, "proxy_pass", msg);
            None
        }
    });
    out.push(Location {
        replace_prefix,
        https,
        target,
        limits,
        ..base
    });
}

/// `location [=|^~|~|~*] PATH`: the match and whether it stops regex matching.
fn path_match(d: &Directive, notes: &mut Notes) -> Option<(PathMatch, bool)> {
    let label = d.args.join(" ");
    let (modifier, path) = match d.args.as_slice() {
        [m, p] => (m.as_str(), p.clone()),
        [one] => match ["=", "^~", "~*", "~"].iter().find(|m| one.starts_with(**m)) {
            Some(m) if one.len() > m.len() => (*m, one[m.len()..].to_string()),
            _ => ("", one.clone()),
        },
        _ => {
            notes.add(&d.loc, "location", "expects a path, skipped");
            return None;
        }
    };
    let skip = |why: String, notes: &mut Notes| {
        notes.add(
            &d.loc,
            format!("location {label}"),
            format!("{why}, skipped"),
        );
        None
    };
    match modifier {
        "=" => Some((PathMatch::Exact(path), false)),
        "^~" => Some((PathMatch::Prefix(path), true)),
        "" if path.starts_with('/') => Some((PathMatch::Prefix(path), false)),
        "~" | "~*" => {
            let re = if modifier == "~*" {
                format!("(?i){path}")
            } else {
                path
            };
            match regex_problem(&re) {
                Some(why) => skip(why, notes),
                None => Some((PathMatch::Regex(re), false)),
            }
        }
        _ => skip(format!("unknown modifier or path {label:?}"), notes),
    }
}

/// Why lb's regex engine (Rust's `regex`: no backtracking) cannot take an NGINX (PCRE) regex.
pub fn regex_problem(re: &str) -> Option<String> {
    for (needle, what) in [
        ("(?=", "lookahead"),
        ("(?!", "negative lookahead"),
        ("(?<=", "lookbehind"),
        ("(?<!", "negative lookbehind"),
        ("(?>", "atomic group"),
    ] {
        if re.contains(needle) {
            return Some(format!(
                "PCRE {what} {needle} is not supported by lb's regex engine"
            ));
        }
    }
    let mut chars = re.chars().peekable();
    let mut class = false;
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n.is_ascii_digit() && n != '0' && !class {
                        return Some(format!(
                            "backreference \\{n} is not supported by lb's regex engine"
                        ));
                    }
                }
                prev = 'x';
                continue;
            }
            '[' if !class => class = true,
            ']' if class => class = false,
            '+' if !class && matches!(prev, '*' | '+' | '?' | '}') => {
                return Some(format!(
                    "possessive quantifier {prev}+ is not supported by lb's regex engine"
                ));
            }
            _ => {}
        }
        // `a++` is possessive, `a+++` is not a thing: a quantifier's own `+` ends the run.
        prev = if !class && c == '+' && matches!(prev, '*' | '+' | '?' | '}') {
            ' '
        } else {
            c
        };
    }
    regex::Regex::new(re).err().map(|e| {
        format!(
            "regex not accepted by lb: {}",
            e.to_string().replace('\n', " ")
        )
    })
}

/// `proxy_pass http[s]://TARGET[/URI]` → (https, target, URI part); `None` (noted) otherwise.
fn proxy_pass(d: &Directive, notes: &mut Notes) -> Option<(bool, String, Option<String>)> {
    let url = d.args.first().map(String::as_str).unwrap_or_default();
    let skip = |why: &str, notes: &mut Notes| {
        notes.add(
            &d.loc,
            "proxy_pass",
            format!("{url}: {why}, location skipped"),
        );
        None
    };
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return skip("only http:// and https:// are supported", notes),
    };
    // A bare variable may be a `split_clients` one, which `map` resolves (or notes).
    if super::split::variable(rest)
        .is_some_and(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Some((https, rest.to_string(), None));
    }
    if url.contains('$') {
        return skip("variables are not supported", notes);
    }
    if rest.starts_with("unix:") {
        return skip("unix sockets are not supported", notes);
    }
    let (target, uri) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if target.is_empty() {
        return skip("no host", notes);
    }
    Some((https, target.to_string(), uri))
}
