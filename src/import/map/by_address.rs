//! NGINX picks a `server` block by the address a connection came to, then by `server_name`.
//! While each kind of listener (plain, TLS) has one address, lb's per-kind default server and
//! `scheme` express that exactly. With more (80 and 8080, or `0.0.0.0:80` and `[::]:80`),
//! every route names its server's addresses (`routes[i].listen`), and each address gets its
//! own default server's routes without `host`.

use std::collections::HashSet;

use super::{Host, Server};
use crate::import::model::Import;
use crate::import::notes::Notes;

/// Whether some kind of listener has more than one address.
pub(super) fn needed(servers: &[Server]) -> bool {
    [false, true].into_iter().any(|ssl| {
        let addrs: HashSet<&str> = servers
            .iter()
            .flat_map(|s| &s.listens)
            .filter(|l| l.ssl == ssl)
            .map(|l| l.addr.as_str())
            .collect();
        addrs.len() > 1
    })
}

/// NGINX's default server of `addr`: the first one marked `default_server` there, else the
/// first one listening there.
fn default_of(servers: &[Server], addr: &str) -> Option<usize> {
    let on = |s: &Server, marked: bool| {
        s.listens
            .iter()
            .any(|l| l.addr == addr && (l.default || !marked))
    };
    let marked = servers.iter().position(|s| on(s, true));
    marked.or_else(|| servers.iter().position(|s| on(s, false)))
}

/// A server's addresses, each once, in its order.
fn addresses(s: &Server) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::with_capacity(s.listens.len());
    for l in &s.listens {
        if !out.contains(&l.addr.as_str()) {
            out.push(&l.addr);
        }
    }
    out
}

/// Whom server `i`'s routes are for: each of its names on its addresses where no earlier
/// server had that name (NGINX keeps the first server of a conflicting name), and no host on
/// the addresses it is the default server of. `claimed`: the (name, address) pairs taken.
pub(super) fn hosts(
    servers: &[Server],
    i: usize,
    claimed: &mut HashSet<(String, String)>,
    notes: &mut Notes,
) -> Vec<Host> {
    let s = &servers[i];
    let addrs = addresses(s);
    let mut out = Vec::new();
    for name in &s.names {
        let mut listen = Vec::new();
        for a in &addrs {
            if claimed.insert((name.clone(), a.to_string())) {
                listen.push(a.to_string());
            }
        }
        if listen.is_empty() {
            let msg = format!("{name}: an earlier server has this name on each of this server's addresses; NGINX uses the earlier one (conflicting server name), so does lb");
            notes.add(&s.loc, "server_name", msg);
            continue;
        }
        out.push(Host {
            name: Some(name.clone()),
            scheme: None,
            listen,
        });
    }
    let default: Vec<String> = addrs
        .iter()
        .filter(|a| default_of(servers, a) == Some(i))
        .map(|a| a.to_string())
        .collect();
    if !default.is_empty() {
        out.push(Host {
            name: None,
            scheme: None,
            listen: default,
        });
    }
    out
}

/// Notes each address whose default server has no route while another server there has some:
/// lb answers 404 to the hosts no other server there names, where NGINX answers from the
/// default server (files, its own answers).
pub(super) fn default_without_routes(servers: &[Server], live: &[bool], notes: &mut Notes) {
    let mut seen = HashSet::new();
    for s in servers {
        for l in &s.listens {
            if !seen.insert(l.addr.as_str()) {
                continue;
            }
            let Some(d) = default_of(servers, &l.addr) else {
                continue;
            };
            let others_live = servers
                .iter()
                .enumerate()
                .any(|(j, o)| live[j] && j != d && o.listens.iter().any(|m| m.addr == l.addr));
            if live[d] || !others_live {
                continue;
            }
            let at = servers[d].listens.iter().find(|m| m.addr == l.addr);
            let msg = format!(
                "{}: the default server of this address (at {}) has no location lb can serve (see its notes), so lb answers 404 to the hosts no other server here names, where NGINX answers them from that server",
                l.addr, servers[d].loc
            );
            notes.add(at.map_or(&servers[d].loc, |m| &m.loc), "listen", msg);
        }
    }
}

/// Takes from routes the addresses lb does not listen on (a TLS listener without a
/// certificate is dropped); a route left with none is dropped too.
pub(super) fn keep_listened(out: &mut Import, notes: &mut Notes) {
    let listened: HashSet<String> = out
        .listen
        .iter()
        .chain(&out.tls_listen)
        .map(|l| l.value.clone())
        .collect();
    out.routes.retain_mut(|r| {
        r.listen.retain(|a| listened.contains(a));
        if r.listen.is_empty() {
            let msg = format!(
                "{}: none of its server's listeners is kept, route dropped",
                r.label
            );
            notes.add(&r.loc, "listen", msg);
        }
        !r.listen.is_empty()
    });
}
