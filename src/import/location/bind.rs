//! A location bound to its upstream: an `upstream` block of the `proxy_pass` host's name, else
//! an implicit upstream for the address; the location's settings become the upstream's (the
//! first location's win, differences are noted).

use super::Location;
use crate::import::model::*;
use crate::import::tree::Loc;
use crate::import::upstream::{is_ip_literal, with_port};

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
            resolve: !is_ip_literal(&address),
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
