//! Request keys: the bytes of a request that `hash_key`, `split_by` and `rate_limits.X.key`
//! name, and the entry to the rate limits' verdict ([`check`], over [`crate::state::limit`],
//! which keeps the tables and decides).

use std::net::IpAddr;

use pingora_core::protocols::http::ServerSession;

use crate::config::split::SplitBy;
use crate::config::HashKey;
use crate::snapshot::{Route, Snapshot};
pub use crate::state::limit::Limited;

/// Room on the stack for a key made by lb (a client address).
pub type KeyBuf = [u8; 64];

/// The verdict of `route`'s rate limits on this request; `upstream` is the one it goes to,
/// `path` its normalized path, `client` its client address. Each limit counts its verdict.
pub fn check(
    session: &ServerSession,
    snapshot: &Snapshot,
    (route, upstream): (&Route, usize),
    path: &str,
    client: Option<IpAddr>,
) -> Limited {
    let ids = snapshot.limits_of(route, Some(upstream));
    if ids.is_empty() {
        return Limited::Pass;
    }
    // The client's address as text, formatted once, and only when a limit is keyed by it.
    let mut buf: KeyBuf = [0; 64];
    let by_client = ids
        .iter()
        .any(|&i| snapshot.limits[i].config.key == HashKey::ClientIp);
    let ip = match client {
        Some(ip) if by_client => super::headers::format_ip(ip, &mut buf).as_bytes(),
        _ => &[][..],
    };
    let key = |l: &crate::state::limit::Limit| match &l.config.key {
        HashKey::ClientIp => ip,
        k => session_key(session, k, path),
    };
    let now = crate::util::time::process_ms();
    crate::state::limit::verdict(&snapshot.limits, ids, now, key)
}

/// The bytes `key` names in this request (empty when it has none); `path` is the normalized
/// path, `client` the request's client address ([`crate::edge::client_ip`]).
pub fn request_key<'a>(
    session: &'a ServerSession,
    key: &HashKey,
    path: &'a str,
    client: Option<IpAddr>,
    buf: &'a mut KeyBuf,
) -> &'a [u8] {
    match key {
        HashKey::ClientIp => match client {
            Some(ip) => super::headers::format_ip(ip, buf).as_bytes(),
            None => &[],
        },
        k => session_key(session, k, path),
    }
}

/// The bytes `key` names in the request's head or path (a client address is not there).
fn session_key<'a>(session: &'a ServerSession, key: &HashKey, path: &'a str) -> &'a [u8] {
    let req = session.req_header();
    match key {
        HashKey::ClientIp => &[],
        HashKey::Uri => req.raw_path(),
        HashKey::Path => path.as_bytes(),
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map_or(&[][..], |v| v.as_bytes()),
        HashKey::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie(v.as_bytes(), name.as_bytes()))
            .unwrap_or(&[]),
    }
}

/// The hash `by` gives this request, as NGINX's `split_clients`: MurmurHash2 of the key (an
/// absent header or cookie hashes as the empty string), or a fresh draw for `random`.
pub fn split_hash(
    session: &ServerSession,
    by: &SplitBy,
    path: &str,
    client: Option<IpAddr>,
) -> u32 {
    match by {
        SplitBy::Random => fastrand::u32(..),
        SplitBy::Key(key) => {
            let mut buf: KeyBuf = [0; 64];
            crate::util::hash::murmur2(request_key(session, key, path, client, &mut buf))
        }
    }
}

/// The value of cookie `name` (any case, as NGINX's `$cookie_NAME`) in a `Cookie` header line.
fn cookie<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    line.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        pair[..eq]
            .trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::cookie;

    #[test]
    fn cookies_by_name() {
        let line = b"a=1; session = xyz ;b=";
        assert_eq!(cookie(line, b"session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(line, b"b"), Some(&b""[..]));
        assert_eq!(cookie(line, b"c"), None);
        // NGINX's `$cookie_NAME` matches the name in any case.
        assert_eq!(cookie(line, b"SESSION"), Some(&b"xyz"[..]));
    }
}
