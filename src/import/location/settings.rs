//! The proxy settings one level (`http`, `server`, `location`) has in effect, as NGINX
//! inherits them: scalars unless the inner level sets its own, the `proxy_set_header`,
//! `add_header`, `allow`/`deny` and `mirror` lists only when the inner level has none of its own.

use crate::import::limit::Limits;
use crate::import::model::*;
use crate::import::tree::{Directive, Loc};

/// The proxy settings in effect at one level.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// From `proxy_set_header Host ...`; `None`: NGINX's default (`$proxy_host`).
    host: Option<At<HostHeader>>,
    /// The `proxy_set_header` lines seen so far are inherited (the next one starts a new list).
    headers_inherited: bool,
    /// `proxy_set_header` lines other than `Host` and those lb does anyway: (name, value).
    pub(super) headers: Vec<At<(String, String)>>,
    /// `add_header` lines: (name, value, `always`), inherited as `proxy_set_header` is.
    pub(super) add_headers: Vec<At<(String, String, bool)>>,
    add_inherited: bool,
    connect: Option<At<String>>,
    read: Option<At<String>>,
    send: Option<At<String>>,
    next_upstream_off: Option<At<bool>>,
    tries: Option<At<u32>>,
    /// `limit_req` and its companions.
    pub(super) limits: Limits,
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
    pub(super) mirror: Vec<At<String>>,
    mirror_inherited: bool,
    /// `mirror_request_body off`.
    pub(super) mirror_body_off: Option<Loc>,
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
            "mirror" => self.mirror_line(arg, &d.loc),
            "mirror_request_body" => {
                self.mirror_body_off = (arg == "off").then(|| d.loc.clone());
            }
            "allow" | "deny" => self.access_line(d, arg),
            "auth_basic" | "auth_request" | "satisfy" | "limit_except" | "ssl_verify_client" => {
                self.security_line(d, arg)
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
            "proxy_next_upstream_tries" => self.tries(d, arg, notes),
            // lb speaks HTTP/1.1 to backends (or HTTP/2 when told), with keep-alive.
            _ => {}
        }
        true
    }

    /// `mirror URI` (a level's own lines replace the inherited ones; `off` clears them).
    fn mirror_line(&mut self, arg: &str, loc: &Loc) {
        if self.mirror_inherited {
            self.mirror_inherited = false;
            self.mirror.clear();
        }
        match arg {
            "off" => self.mirror.clear(),
            uri => self.mirror.push(At {
                value: uri.to_string(),
                loc: loc.clone(),
            }),
        }
    }

    /// `allow`/`deny` (a level's own lines replace the inherited ones).
    fn access_line(&mut self, d: &Directive, arg: &str) {
        if self.access_inherited {
            self.access_inherited = false;
            self.access.clear();
        }
        self.access.push(At {
            value: format!("{} {arg}", d.name),
            loc: d.loc.clone(),
        });
    }

    /// A security directive: a level's own line replaces the inherited one; `off` (and
    /// `satisfy all`, the default) removes it.
    fn security_line(&mut self, d: &Directive, arg: &str) {
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

    /// `proxy_next_upstream_tries N`.
    fn tries(&mut self, d: &Directive, arg: &str, notes: &mut Notes) {
        match arg.parse() {
            Ok(n) => {
                self.tries = Some(At {
                    value: n,
                    loc: d.loc.clone(),
                })
            }
            Err(_) => notes.add(&d.loc, &d.name, format!("{arg:?} is not a number, ignored")),
        }
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
    pub(super) fn use_settings(&self) -> UseSettings {
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
