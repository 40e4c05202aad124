//! The request head a backend gets: the client's with hop-by-hop fields left out and lb's
//! forwarding fields added, written straight into bytes for the common HTTP/1 request
//! ([`super::wire`]) or built as a header map ([`upstream_head`]), and sent by [`write_head`].
//! Attempts ([`super::attempt`]) and a route's copies ([`super::mirror`]) both make theirs here.

use pingora_core::protocols::http::v1::client::HttpSession as H1Upstream;
use pingora_core::protocols::http::ServerSession;
use pingora_error::Result;
use pingora_http::RequestHeader;

use super::headers::{
    authority_to_host, h2_target, host_name_only, join_cookies, prepare_request, set_forwarded,
    set_host, set_path, to_origin_form,
};
use super::rewrite::{set_request, Vars};
use crate::config::headers::HeaderRule;
use crate::config::{HostHeader, ServerSettings};

/// Whether the connection's peer is a proxy whose forwarding headers are kept and extended: one
/// in `server.trusted_proxies`, or in `server.real_ip_from` (whose header names the client, so
/// its chain is the client's, as NGINX's `$proxy_add_x_forwarded_for` keeps it).
pub(super) fn peer_is_trusted(session: &ServerSession, server: &ServerSettings) -> bool {
    crate::edge::peer_ip(session).is_some_and(|ip| {
        server.trusted_proxies.iter().any(|c| c.contains(ip)) || server.real_ip.trusts(ip)
    })
}

/// The head an attempt sends: built as a header map ([`upstream_head`]), or, for the common
/// request to an HTTP/1 backend, written as bytes straight from the client's ([`super::wire`]).
pub(super) enum Head {
    Built(Box<RequestHeader>),
    Wire(super::wire::Wire),
}

/// What the backend's head is made from besides the client's head.
pub(super) struct HeadFor<'a> {
    /// The path to send instead of the client's (`replace_prefix`, `normalize_path`).
    pub forward_path: Option<&'a str>,
    pub client: Option<std::net::IpAddr>,
    /// The peer is a trusted proxy ([`peer_is_trusted`]): its forwarding fields are extended.
    pub trusted: bool,
    pub upstream: &'a crate::config::UpstreamConfig,
    /// The route's `set_request_headers` and what their variables render from.
    pub rules: Option<(&'a [HeaderRule], &'a Vars)>,
}

/// The head of an attempt on `to.upstream`: [`super::wire`]'s when the request, the route and
/// the upstream allow it, else [`upstream_head`]'s.
pub(super) fn head(session: &mut ServerSession, to: &HeadFor<'_>) -> Result<Head> {
    let upstream = to.upstream;
    let plain = upstream.protocol == crate::config::Protocol::Http1
        && !to.trusted
        && to.rules.is_none_or(|(r, _)| r.is_empty())
        && upstream.host_header == HostHeader::Client;
    if plain {
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let has_body = !session.is_body_empty();
        let req = session.req_header();
        if let Some(w) = super::wire::head(req, to.forward_path, to.client, https, has_body) {
            return Ok(Head::Wire(w));
        }
    }
    upstream_head(session, to).map(Head::Built)
}

/// Sends `head` on an HTTP/1 backend session, whichever way it was made.
pub(super) async fn write_head(up: &mut H1Upstream, head: Head) -> Result<usize> {
    match head {
        Head::Built(h) => up.write_request_header(h).await,
        Head::Wire(w) => up.write_request_wire(w.req, &w.bytes, w.body_length).await,
    }
}

/// The head as a header map: the client's, cloned and edited (every request [`super::wire`]
/// does not write): in origin form, with the forwarded path, `X-Forwarded-*` and hop-by-hop
/// fields removed (an upgrade to WebSocket keeps its `Connection: Upgrade`). Every attempt
/// starts from the client's head again.
fn upstream_head(session: &mut ServerSession, to: &HeadFor<'_>) -> Result<Box<RequestHeader>> {
    let upstream = to.upstream;
    let h2_backend = upstream.protocol == crate::config::Protocol::Http2;
    let has_body = !session.is_body_empty();
    let mut req = Box::new(session.req_header().clone());
    // Room for the fields lb adds, so that they do not regrow the cloned map one by one.
    req.reserve(6);
    to_origin_form(&mut req)?;
    if req.version == http::Version::HTTP_2 {
        authority_to_host(&mut req)?;
        if !h2_backend {
            // HTTP/2 may split `cookie` into several fields; HTTP/1 wants one (RFC 9113 §8.2.3).
            join_cookies(&mut req)?;
        }
    }
    if let Some(path) = to.forward_path {
        set_path(&mut req, path)?;
    }
    // Hop-by-hop fields go first, so that a `Connection` naming lb's own fields cannot remove
    // them: what lb adds below is never stripped.
    prepare_request(&mut req, has_body, h2_backend)?;

    let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    set_forwarded(&mut req, to.client, to.trusted, https)?;
    // After set_forwarded: `X-Forwarded-Host` is the client's host either way.
    match &upstream.host_header {
        HostHeader::Client => {}
        HostHeader::ClientHost => host_name_only(&mut req)?,
        HostHeader::Upstream => set_host(&mut req, &upstream.name)?,
        HostHeader::Literal(host) => set_host(&mut req, host)?,
    }
    if let Some((rules, vars)) = to.rules {
        // Last: a configured header replaces lb's own (`Host`, `X-Forwarded-For`, ...).
        set_request(&mut req, rules, vars)?;
    }
    if !req.headers.contains_key(http::header::HOST) {
        // An HTTP/1.0 request may come without a host; the backend still gets one, the
        // upstream's name (NGINX's `$proxy_host`).
        set_host(&mut req, &upstream.name)?;
    }
    if h2_backend {
        h2_target(&mut req, upstream.tls.is_some())?;
    }
    Ok(req)
}
