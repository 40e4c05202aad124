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

use super::limit::{LimitUse, Limits};
use super::model::*;
use super::ret;
use super::tree::{Directive, Loc};
use super::upstream::with_port;

/// The proxy settings in effect at one level.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// From `proxy_set_header Host ...`; `None`: NGINX's default (`$proxy_host`).
    host: Option<At<HostHeader>>,
    /// The `proxy_set_header` lines seen so far are inherited (the next one starts a new list).
    headers_inherited: bool,
    /// `proxy_set_header` lines other than `Host` and those lb does anyway: (name, value).
    headers: Vec<At<(String, String)>>,
    /// `add_header` lines: (name, value, `always`), inherited as `proxy_set_header` is.
    add_headers: Vec<At<(String, String, bool)>>,
    add_inherited: bool,
    connect: Option<At<String>>,
    read: Option<At<String>>,
    send: Option<At<String>>,
    next_upstream_off: Option<At<bool>>,
    tries: Option<At<u32>>,
    /// `limit_req` and its companions.
    limits: Limits,
    /// The server's first name (`$server_name` in `return`).
    pub server_name: Option<String>,
    /// `default_type`: the Content-Type of `return`'s text.
    pub default_type: Option<String>,
    /// Security directives in effect (`auth_basic`, `auth_request`, `satisfy`, `limit_except`,
    /// `ssl_verify_client`): lb enforces none of them.
    security: Vec<At<String>>,
    /// `allow`/`deny` lines in effect (inherited only by a level without its own).
    access: Vec<At<String>>,
    access_inherited: bool,
    /// `client_max_body_size`.
    pub body_size: Option<At<String>>,
    /// `proxy_ssl_verify`, `proxy_ssl_trusted_certificate`, `proxy_ssl_name`,
    /// `proxy_ssl_server_name`.
    ssl_verify: Option<At<String>>,
    ssl_ca: Option<At<String>>,
    ssl_name: Option<At<String>>,
    ssl_server_name: Option<At<String>>,
    /// `mirror` URIs in effect (inherited only by a level without its own; `off` clears).
    mirror: Vec<At<String>>,
    mirror_inherited: bool,
    /// `mirror_request_body off`.
    mirror_body_off: Option<Loc>,
}

/// Directives that restrict who gets an answer. lb has no equivalent (yet), so a location they
/// cover is refused unless `--allow-insecure` imports it public. (`allow`/`deny` become the
/// route's `access` list.)
pub const SECURITY: &[&str] = &[
    "auth_basic",
    "auth_request",
    "satisfy",
    "limit_except",
    "ssl_verify_client",
];

/// `proxy_set_header` lines that say what lb does anyway (`X-Forwarded-Host $host` is not one:
/// lb sends the client's `Host` with its port, so that line is mapped).
const FORWARDING: &[(&str, &[&str])] = &[
    ("x-real-ip", &["$remote_addr"]),
    ("x-forwarded-for", &["$proxy_add_x_forwarded_for"]),
    ("x-forwarded-proto", &["$scheme"]),
    ("upgrade", &["$http_upgrade"]),
    ("connection", &["upgrade", "$connection_upgrade", ""]),
];

impl Settings {
    /// The directives [`Settings::take`] handles.
    pub fn owns(name: &str) -> bool {
        matches!(
            name,
            "proxy_set_header"
                | "add_header"
                | "proxy_connect_timeout"
                | "proxy_read_timeout"
                | "proxy_send_timeout"
                | "proxy_next_upstream"
                | "proxy_next_upstream_tries"
                | "proxy_http_version"
                | "default_type"
                | "auth_basic_user_file"
                | "auth_request_set"
                | "client_max_body_size"
                | "proxy_ssl_verify"
                | "proxy_ssl_trusted_certificate"
                | "proxy_ssl_name"
                | "proxy_ssl_server_name"
                | "allow"
                | "deny"
                | "mirror"
                | "mirror_request_body"
        ) || SECURITY.contains(&name)
            || Limits::owns(name)
    }

    /// The settings an inner level starts from.
    pub fn child(&self) -> Settings {
        Settings {
            headers_inherited: true,
            add_inherited: true,
            access_inherited: true,
            mirror_inherited: true,
            limits: self.limits.child(),
            ..self.clone()
        }
    }

    /// Applies `d` if it is a proxy setting (noting what lb does not do); `false` otherwise.
    pub fn take(&mut self, d: &Directive, notes: &mut Notes) -> bool {
        if !Self::owns(&d.name) {
            return false;
        }
        if self.limits.take(d, notes) {
            return true;
        }
        let arg = d.args.first().map(String::as_str).unwrap_or_default();
        let at = |v: &str| At {
            value: v.to_string(),
            loc: d.loc.clone(),
        };
        let time = |notes: &mut Notes| {
            let t = duration(arg);
            if t.is_none() {
                notes.add(&d.loc, &d.name, format!("{arg:?} is not a time, ignored"));
            }
            t.map(|value| At {
                value,
                loc: d.loc.clone(),
            })
        };
        match d.name.as_str() {
            "proxy_set_header" => self.header(d, notes),
            "add_header" => self.add_header(d, notes),
            "proxy_connect_timeout" => self.connect = time(notes).or(self.connect.take()),
            "proxy_read_timeout" => self.read = time(notes).or(self.read.take()),
            "proxy_send_timeout" => self.send = time(notes).or(self.send.take()),
            "proxy_next_upstream" => self.next_upstream(d, notes),
            "default_type" => self.default_type = d.args.first().cloned(),
            "mirror" => {
                if self.mirror_inherited {
                    self.mirror_inherited = false;
                    self.mirror.clear();
                }
                match arg {
                    "off" => self.mirror.clear(),
                    uri => self.mirror.push(at(uri)),
                }
            }
            "mirror_request_body" => {
                self.mirror_body_off = (arg == "off").then(|| d.loc.clone());
            }
            "allow" | "deny" => {
                if self.access_inherited {
                    self.access_inherited = false;
                    self.access.clear();
                }
                self.access.push(At {
                    value: format!("{} {arg}", d.name),
                    loc: d.loc.clone(),
                });
            }
            "auth_basic" | "auth_request" | "satisfy" | "limit_except" | "ssl_verify_client" => {
                // A level's own line replaces the inherited one; `off` (and `satisfy all`, the
                // default) removes it.
                self.security
                    .retain(|s| s.value.split(' ').next() != Some(d.name.as_str()));
                let off = arg == "off" || (d.name == "satisfy" && arg == "all");
                if !off {
                    self.security.push(At {
                        value: format!("{} {}", d.name, d.args.join(" ")),
                        loc: d.loc.clone(),
                    });
                }
            }
            "client_max_body_size" => self.body_size = Some(at(arg)),
            "proxy_ssl_verify" => self.ssl_verify = Some(at(arg)),
            "proxy_ssl_trusted_certificate" => self.ssl_ca = Some(at(arg)),
            "proxy_ssl_name" => self.ssl_name = Some(at(arg)),
            "proxy_ssl_server_name" => {
                self.ssl_server_name = Some(at(arg));
                let msg = "lb sends SNI (the backend's host name, or upstreams.X.tls.sni) whenever the backend is a name, and none to an IP address; no switch, ignored";
                notes.add(&d.loc, "proxy_ssl_server_name", msg);
            }
            "proxy_next_upstream_tries" => match arg.parse() {
                Ok(n) => {
                    self.tries = Some(At {
                        value: n,
                        loc: d.loc.clone(),
                    })
                }
                Err(_) => notes.add(&d.loc, &d.name, format!("{arg:?} is not a number, ignored")),
            },
            // lb speaks HTTP/1.1 to backends (or HTTP/2 when told), with keep-alive.
            _ => {}
        }
        true
    }

    fn header(&mut self, d: &Directive, notes: &mut Notes) {
        if self.headers_inherited {
            self.headers_inherited = false;
            self.host = None;
            self.headers.clear();
        }
        let (Some(name), Some(value)) = (d.args.first(), d.args.get(1)) else {
            notes.add(
                &d.loc,
                "proxy_set_header",
                "expects a name and a value, ignored",
            );
            return;
        };
        let lower = name.to_ascii_lowercase();
        if lower == "host" {
            let host = match value.as_str() {
                "$host" => Some(HostHeader::ClientHost),
                "$http_host" => Some(HostHeader::Client),
                "$proxy_host" => Some(HostHeader::Upstream),
                v if !v.contains('$') && !v.is_empty() => Some(HostHeader::Literal(v.to_string())),
                _ => None,
            };
            match host {
                Some(value) => {
                    self.host = Some(At {
                        value,
                        loc: d.loc.clone(),
                    })
                }
                None => notes.add(
                    &d.loc,
                    format!("proxy_set_header Host {value}"),
                    "lb sends the client's Host, the upstream's name or a fixed value; not supported, ignored",
                ),
            }
            return;
        }
        let known = FORWARDING
            .iter()
            .any(|(n, values)| *n == lower && values.contains(&value.as_str()));
        if !known {
            // A route's `set_request_headers` (checked when the route is made).
            self.headers.push(At {
                value: (name.clone(), value.clone()),
                loc: d.loc.clone(),
            });
        }
    }

    /// `add_header NAME VALUE [always]`: a route's `add_response_headers`.
    fn add_header(&mut self, d: &Directive, notes: &mut Notes) {
        if self.add_inherited {
            self.add_inherited = false;
            self.add_headers.clear();
        }
        let always = d.args.get(2).is_some_and(|a| a == "always");
        match (d.args.first(), d.args.get(1)) {
            (Some(name), Some(value)) if d.args.len() == 2 || always => self.add_headers.push(At {
                value: (name.clone(), value.clone(), always),
                loc: d.loc.clone(),
            }),
            _ => notes.add(
                &d.loc,
                "add_header",
                "expects a name, a value and maybe `always`, ignored",
            ),
        }
    }

    fn next_upstream(&mut self, d: &Directive, notes: &mut Notes) {
        let off = d.args.iter().any(|a| a == "off");
        self.next_upstream_off = Some(At {
            value: off,
            loc: d.loc.clone(),
        });
        let other: Vec<&str> = d
            .args
            .iter()
            .map(String::as_str)
            .filter(|a| !matches!(*a, "error" | "timeout" | "off"))
            .collect();
        if !other.is_empty() {
            let msg = format!(
                "{}: lb retries failed connections (and idempotent requests a backend dropped), not answers; these conditions are ignored",
                other.join(" ")
            );
            notes.add(&d.loc, "proxy_next_upstream", msg);
        }
    }

    /// What a location with these settings asks of its upstream.
    fn use_settings(&self) -> UseSettings {
        let retries = match (&self.next_upstream_off, &self.tries) {
            (Some(off), _) if off.value => Some(At {
                value: 0,
                loc: off.loc.clone(),
            }),
            (_, Some(t)) if t.value > 0 => Some(At {
                value: t.value - 1,
                loc: t.loc.clone(),
            }),
            _ => None,
        };
        UseSettings {
            host_header: self.host.clone(),
            connect_timeout: self.connect.clone(),
            read_timeout: self.read.clone(),
            write_timeout: self.send.clone(),
            retries,
            ssl_verify: self.ssl_verify.clone(),
            ssl_ca: self.ssl_ca.clone(),
            ssl_name: self.ssl_name.clone(),
            ssl_server_name: self.ssl_server_name.clone(),
        }
    }

    /// The security directives in effect here (lb enforces none of them).
    pub fn security(&self) -> Vec<At<String>> {
        self.security.clone()
    }

    /// The `allow`/`deny` lines in effect here (a level's own replace the inherited ones).
    pub fn access(&self) -> Vec<At<String>> {
        self.access.clone()
    }
}

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
    let mut pass = None;
    let mut ret_line = None;
    let mut kafka_topic = None;
    let mut fallback = None;
    let mut internal = false;
    let mut nested = Vec::new();
    for c in d.children() {
        match c.name.as_str() {
            "proxy_pass" => pass = Some(c),
            "internal" => internal = true,
            "return" => ret_line = ret_line.or(Some(c)),
            "kafka_topic" => kafka_topic = Some(c),
            "try_files" => match c.args.last().filter(|a| a.starts_with('@')) {
                Some(n) => {
                    fallback = Some(At {
                        value: n.clone(),
                        loc: c.loc.clone(),
                    })
                }
                None => notes.unsupported(c),
            },
            "location" => {
                let inner = c.args.join(" ");
                let scoped = matches!(path, PathMatch::Prefix(_)) && named.is_none();
                let regex = matches!(c.args.first().map(String::as_str), Some("~" | "~*"))
                    || c.args.first().is_some_and(|a| a.starts_with('~'));
                if !scoped || regex {
                    let msg = if scoped {
                        format!("nested regex inside location {label}: NGINX tries it only for URIs whose longest prefix is {label}, before the top-level regexes; lb's routes cannot scope a regex like that, so it is skipped and those requests go to the routes lb has")
                    } else {
                        format!("nested inside location {label}: lb cannot scope a location to a regex, exact or named parent, skipped")
                    };
                    notes.add(&c.loc, format!("location {inner}"), msg);
                    continue;
                }
                location(c, &settings, &mut nested, notes);
            }
            n if Settings::owns(n) => {}
            n if n.ends_with("_by_lua_block") || n.ends_with("_by_lua") => {
                notes.add(&c.loc, n, "OpenResty Lua code: not supported, skipped")
            }
            _ => notes.unsupported(c),
        }
    }
    let base = Location {
        loc: d.loc.clone(),
        label: label.clone(),
        path: path.clone(),
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
        named: named.clone(),
        fallback: None,
        mirror: MirrorUse {
            uris: settings.mirror.clone(),
            body_off: settings.mirror_body_off.clone(),
        },
        internal,
        keeps_uri: false,
    };
    // `proxy_pass http://shadow$request_uri` in an internal location (the `mirror` target's
    // usual form): the upstream, and the copies keep the client's target.
    let stripped;
    let mut keeps_uri = false;
    let pass = match pass {
        Some(p) if internal => match p.args.first().and_then(|u| u.strip_suffix("$request_uri")) {
            Some(url) => {
                keeps_uri = true;
                let mut p = p.clone();
                p.args[0] = url.to_string();
                stripped = p;
                Some(&stripped)
            }
            None => Some(p),
        },
        other => other,
    };
    let base = Location { keeps_uri, ..base };
    if let Some(r) = ret_line {
        // NGINX's rewrite phase: `return` answers before the content phase would proxy.
        if let Some(p) = pass {
            let msg = "return answers every request here first: never used";
            notes.add(&p.loc, "proxy_pass", msg);
        }
        if let Some(respond) = ret::parse(
            r,
            settings.server_name.as_deref(),
            settings.default_type.as_deref(),
            notes,
        ) {
            out.push(Location {
                respond: Some(respond),
                // `return` runs in the rewrite phase, before any access check.
                security: Vec::new(),
                access: Vec::new(),
                ..base
            });
        }
        out.extend(nested);
        return;
    }
    if let Some(k) = kafka_topic {
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
        out.extend(nested);
        return;
    }
    match pass {
        None => match fallback {
            Some(f) => out.push(Location {
                limits: settings.limits.now.clone(),
                fallback: Some(f),
                ..base
            }),
            None if named.is_some() => notes.add(
                &d.loc,
                format!("location {label}"),
                "named location without proxy_pass (lb only proxies), skipped",
            ),
            None => notes.add(
                &d.loc,
                format!("location {label}"),
                "no proxy_pass: NGINX serves files here (static files, ACME challenges); lb only proxies, so this location stays behind, skipped",
            ),
        },
        Some(p) => {
            if let Some(f) = &fallback {
                let msg = format!("try_files before proxy_pass: NGINX serves existing files first and then {}; lb proxies every request", f.value);
                notes.add(&f.loc, "try_files", msg);
            }
            if let Some((https, target, uri)) = proxy_pass(p, notes) {
                let replace_prefix = uri.and_then(|uri| match &path {
                    PathMatch::Prefix(_) if named.is_some() => {
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
                    limits: settings.limits.now.clone(),
                    ..base
                });
            }
        }
    }
    out.extend(nested);
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

/// The upstream a location proxies to (made for a direct address when needed), with the
/// location's settings applied; `None` when its upstream was skipped.
pub fn bind(l: &Location, upstreams: &mut Vec<Upstream>, notes: &mut Notes) -> Option<String> {
    let host = target_host(&l.target);
    let named = upstreams
        .iter()
        .position(|u| u.label.starts_with("upstream ") && u.name.eq_ignore_ascii_case(host));
    let (i, default_host) = match named {
        Some(i) => (i, HostHeader::Upstream),
        None => {
            let i = direct(l, upstreams);
            (i, HostHeader::Literal(l.target.clone()))
        }
    };
    let up = &mut upstreams[i];
    if l.https && !up.tls {
        if up.settings.is_some() {
            let msg = format!(
                "https to {}, which other locations reach over http: lb uses TLS for all of them",
                up.name
            );
            notes.add(&l.loc, "proxy_pass", msg);
        }
        up.tls = true;
    }
    let mut s = l.settings.clone();
    s.host_header.get_or_insert(At {
        value: default_host,
        loc: l.loc.clone(),
    });
    apply(up, s, &l.loc, notes);
    Some(up.name.clone())
}

/// The host of a `proxy_pass` target (`api:8080` → `api`), which names an `upstream` block
/// whatever the port.
pub fn target_host(target: &str) -> &str {
    match target.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => target,
    }
}

/// The implicit upstream of a `proxy_pass` to an address (one per address).
fn direct(l: &Location, upstreams: &mut Vec<Upstream>) -> usize {
    let address = with_port(&l.target, if l.https { 443 } else { 80 });
    let name: String = address
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = format!("direct_{}", name.trim_matches('_'));
    if let Some(i) = upstreams.iter().position(|u| u.name == name) {
        return i;
    }
    upstreams.push(Upstream {
        name,
        loc: l.loc.clone(),
        label: format!(
            "proxy_pass {}://{}",
            if l.https { "https" } else { "http" },
            l.target
        ),
        strategy: None,
        hash_key: None,
        backends: vec![Backend {
            // A name: NGINX makes every A/AAAA address a server; lb follows DNS.
            resolve: !super::upstream::is_ip_literal(&address),
            ..Backend::new(address, l.loc.clone())
        }],
        passive: Passive {
            consecutive_failures: 0,
            fail_timeout: None,
            slow_start: None,
            why: "one server: NGINX never marks it failed, so lb does not eject it".to_string(),
        },
        tls: l.https,
        settings: None,
        zone: false,
    });
    upstreams.len() - 1
}

/// Gives `up` a location's settings: the first location's win, differences are noted.
fn apply(up: &mut Upstream, s: UseSettings, at: &Loc, notes: &mut Notes) {
    let Some(have) = &mut up.settings else {
        up.settings = Some(s);
        return;
    };
    let on = |v: &Option<At<String>>| v.as_ref().is_some_and(|v| v.value == "on");
    if on(&s.ssl_verify) && !on(&have.ssl_verify) {
        // Never weaker than NGINX: one location verifying makes the upstream verify.
        let msg = format!(
            "lb has one TLS setting per upstream: {} verifies its backends for every location, as this one asks",
            up.name
        );
        notes.add(at, "proxy_ssl_verify", msg);
        have.ssl_verify = s.ssl_verify.clone();
        have.ssl_ca = s.ssl_ca.clone().or(have.ssl_ca.take());
        have.ssl_name = s.ssl_name.clone().or(have.ssl_name.take());
    }
    let have = &*have;
    let name = &up.name;
    let differ = |key: &str,
                  directive: &str,
                  have: &Option<At<String>>,
                  want: &Option<At<String>>,
                  notes: &mut Notes| {
        let show = |v: &Option<At<String>>| match v {
            Some(a) => format!("{:?} (from {})", a.value, a.loc),
            None => "lb's default".to_string(),
        };
        if have.as_ref().map(|a| &a.value) != want.as_ref().map(|a| &a.value) {
            let loc = want.as_ref().map_or(at, |w| &w.loc);
            let msg = format!(
                "lb has one {key} per upstream: {name} keeps {} rather than {}",
                show(have),
                show(want)
            );
            notes.add(loc, directive, msg);
        }
    };
    let retries = |v: &Option<At<u32>>| {
        v.as_ref().map(|a| At {
            value: a.value.to_string(),
            loc: a.loc.clone(),
        })
    };
    let (have, want) = (retries(&have.retries), retries(&s.retries));
    differ("retries", "proxy_next_upstream", &have, &want, notes);
}
