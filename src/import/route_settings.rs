//! A location's own settings as its route's keys: `proxy_set_header` → `set_request_headers`,
//! `add_header` → `add_response_headers` (`always` → `add_response_headers_always`),
//! `proxy_connect_timeout`/`proxy_read_timeout`/`proxy_send_timeout` that differ from the
//! upstream's → the route's `connect_timeout`/`read_timeout`/`write_timeout`, and a
//! `client_max_body_size` that differs from the http level's → `max_body_bytes`.
//!
//! A header value with a variable lb cannot render refuses the import at that line: the
//! location would otherwise lose a header silently.

use super::location::Location;
use super::map::size;
use super::model::*;
use super::tree::Loc;
use crate::config::headers::{rule_name, Template};

/// NGINX's default `proxy_*_timeout`, for a location without one when its upstream has one.
const NGINX_TIMEOUT: &str = "60s";

/// The route settings of location `l` proxying to `up`; `None` (and a refusal) when a header
/// cannot be rendered by lb.
pub fn of(
    l: &Location,
    up: Option<&Upstream>,
    http_body: Option<&At<String>>,
    refusals: &mut Vec<Note>,
    notes: &mut Notes,
) -> Option<RouteSettings> {
    let mut out = RouteSettings::default();
    let mut refused = false;
    let mut check = |directive: &str, name: &str, value: &str, at: &Loc| {
        let why = rule_name(name)
            .err()
            .or_else(|| Template::parse(value).err());
        if let Some(why) = why {
            let message = format!("{name} {value:?}: {why}; location {} at {} cannot be imported without it, import refused", l.label, l.loc);
            refusals.push(Note {
                loc: at.clone(),
                name: directive.to_string(),
                message,
            });
            refused = true;
        }
    };
    for h in &l.set_headers {
        let (name, value) = &h.value;
        check("proxy_set_header", name, value, &h.loc);
        out.set_headers.push(h.clone());
    }
    for h in &l.add_headers {
        let (name, value, _) = &h.value;
        if value.is_empty() {
            // NGINX adds nothing for an empty value.
            continue;
        }
        check("add_header", name, value, &h.loc);
        out.add_headers.push(h.clone());
    }
    if refused {
        return None;
    }
    if let Some(host) = up.and_then(|u| host(l, u)) {
        out.set_headers.insert(0, host);
    }
    timeouts(l, up, &mut out);
    out.max_body_bytes = body_limit(l, http_body, notes);
    Some(out)
}

/// `Host` as the location sends it, when its upstream's `host_header` (the first location's)
/// is another: NGINX's `$proxy_host` when the location has no `proxy_set_header Host`.
fn host(l: &Location, up: &Upstream) -> Option<At<(String, String)>> {
    let want = l.settings.host_header.clone().unwrap_or_else(|| At {
        value: match up.label.starts_with("upstream ") {
            true => HostHeader::Upstream,
            false => HostHeader::Literal(l.target.clone()),
        },
        loc: l.loc.clone(),
    });
    let have = up.settings.as_ref().and_then(|s| s.host_header.as_ref());
    if have.is_some_and(|h| h.value == want.value) {
        return None;
    }
    let value = match &want.value {
        HostHeader::Client => "$http_host".to_string(),
        HostHeader::ClientHost => "$host".to_string(),
        HostHeader::Upstream => l.target.clone(),
        HostHeader::Literal(v) => v.clone(),
    };
    Some(At {
        value: ("Host".to_string(), value),
        loc: want.loc,
    })
}

/// The location's timeouts where they differ from those its upstream got (the first
/// location's): NGINX's default where the location has none.
fn timeouts(l: &Location, up: Option<&Upstream>, out: &mut RouteSettings) {
    let have = up.and_then(|u| u.settings.clone()).unwrap_or_default();
    let s = &l.settings;
    for (key, have, want) in [
        ("connect_timeout", &have.connect_timeout, &s.connect_timeout),
        ("read_timeout", &have.read_timeout, &s.read_timeout),
        ("write_timeout", &have.write_timeout, &s.write_timeout),
    ] {
        let value = |v: &Option<At<String>>| v.as_ref().map(|a| a.value.clone());
        if value(have) == value(want) {
            continue;
        }
        let at = match want {
            Some(w) => w.clone(),
            None => At {
                value: NGINX_TIMEOUT.to_string(),
                loc: l.loc.clone(),
            },
        };
        out.timeouts.push((key, at));
    }
}

/// `client_max_body_size` in effect at the location when it differs from the http level's
/// (`server.max_body_bytes`).
fn body_limit(l: &Location, http: Option<&At<String>>, notes: &mut Notes) -> Option<At<u64>> {
    let b = l.body_size.as_ref()?;
    let global = http.map_or("1m", |h| h.value.as_str());
    let n = size(&b.value);
    if n.is_none() {
        let msg = format!("{:?} is not a size, ignored", b.value);
        notes.add(&b.loc, "client_max_body_size", msg);
    }
    n.filter(|n| Some(*n) != size(global)).map(|value| At {
        value,
        loc: b.loc.clone(),
    })
}
