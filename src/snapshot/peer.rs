//! The pingora peer each snapshot backend is built with: address, TLS and its server name,
//! timeouts, HTTP/2; and the key that keeps its idle connections apart from other upstreams'.

use std::net::SocketAddr;

use pingora_core::upstreams::peer::{HttpPeer, Peer};

use crate::config::{Protocol, UpstreamConfig};

/// The pool key of a backend of `upstream` ([`super::Backend::pool_key`]).
pub(super) fn pool_key(upstream: &str, peer: &HttpPeer) -> u64 {
    let mut bytes = upstream.as_bytes().to_vec();
    bytes.extend_from_slice(&peer.reuse_hash().to_le_bytes());
    crate::util::hash::fnv1a64(&bytes)
}

/// Most streams lb opens at once on one HTTP/2 backend connection (pingora's default is 1).
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

/// The peer of a backend of `u` at `addr` (`host`: its server name for TLS, when a name).
pub(super) fn make_peer(u: &UpstreamConfig, addr: SocketAddr, host: Option<&str>) -> HttpPeer {
    let (tls, sni) = match &u.tls {
        None => (false, String::new()),
        Some(t) => {
            let sni = t
                .sni
                .clone()
                .or_else(|| host.map(|h| h.trim_end_matches('.').to_owned()))
                .unwrap_or_default();
            (true, sni)
        }
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(u.connect_timeout);
    o.read_timeout = Some(u.read_timeout);
    o.write_timeout = Some(u.write_timeout);
    o.idle_timeout = Some(u.idle_timeout);
    if let Some(t) = &u.tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca = t.ca.as_ref().map(|c| c.parsed.clone());
    }
    if u.protocol == Protocol::Http2 {
        // With TLS, ALPN offers h2 only; without, prior knowledge.
        o.set_http_version(2, 2);
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}
