//! Listeners and hosts: `listen` lines → lb's listeners (plain, HTTPS, PROXY protocol, HTTP/2),
//! `server_name` → the hosts routes match, and whom a server's routes are for while each kind
//! of listener has one address ([`by_kind`]; more addresses: [`super::by_address`]).

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Host, Listen, Mapper, Server};
use crate::import::model::*;
use crate::import::tree::Directive;
use crate::import::upstream::with_port;

impl Mapper<'_> {
    /// The union of every server's listeners: `ssl` ones are HTTPS (for every server on that
    /// address, as in NGINX).
    pub(super) fn listeners(
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
pub(super) fn by_kind(
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

/// `listen` → address and flags; `None` (noted) for what lb cannot listen on.
pub(super) fn listen(d: &Directive, notes: &mut Notes) -> Option<Listen> {
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
pub(super) fn server_names(d: &Directive, notes: &mut Notes) -> Vec<String> {
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
