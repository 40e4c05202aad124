//! Request keys (what `hash_key` and `rate_limits.X.key` name) and the rate limits' verdict on
//! a routed request.
//!
//! A request passes every limit of its route (or of its upstream, when the route names none).
//! With several, each is asked first without counting the request, and the request is counted
//! in all of them only if none refuses it (NGINX's `limit_req` does the same): a refused
//! request costs no limit anything. The longest delay any of them asks for is served.

use std::net::IpAddr;
use std::time::Duration;

use pingora_core::protocols::http::ServerSession;

use crate::config::HashKey;
use crate::snapshot::{Route, Snapshot};
use crate::state::limit::Verdict;

/// Room on the stack for a key made by lb (a client address).
pub type KeyBuf = [u8; 64];

/// What the rate limits decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Limited {
    Pass,
    /// Hold the request this long first.
    Delay(Duration),
    /// Refused by this limit (an index into [`Snapshot::limits`]).
    Reject(usize),
}

/// The verdict of `route`'s rate limits on this request; `path` is its normalized path. Counts
/// the verdict of each limit.
pub fn check(session: &ServerSession, snapshot: &Snapshot, route: &Route, path: &str) -> Limited {
    let ids = snapshot.limits_of(route);
    if ids.is_empty() {
        return Limited::Pass;
    }
    let now = crate::util::time::process_ms();
    let mut buf: KeyBuf = [0; 64];
    if ids.len() > 1 {
        for &i in ids {
            let l = &snapshot.limits[i];
            let key = request_key(session, &l.config.key, path, &mut buf);
            let refused = !key.is_empty()
                && !l.config.dry_run
                && l.table.check(&l.config, key, now, false) == Verdict::Reject;
            if refused {
                l.table.count(Verdict::Reject, false);
                return Limited::Reject(i);
            }
        }
    }
    let mut delay = Duration::ZERO;
    for &i in ids {
        let l = &snapshot.limits[i];
        let key = request_key(session, &l.config.key, path, &mut buf);
        // An empty key (no such header or cookie) is not limited, as in NGINX.
        if key.is_empty() {
            continue;
        }
        let v = l.table.check(&l.config, key, now, true);
        l.table.count(v, l.config.dry_run);
        match v {
            _ if l.config.dry_run => {}
            Verdict::Pass => {}
            Verdict::Delay(d) => delay = delay.max(d),
            // Only when another request of the key came in between the two rounds.
            Verdict::Reject => return Limited::Reject(i),
        }
    }
    if delay.is_zero() {
        Limited::Pass
    } else {
        Limited::Delay(delay)
    }
}

/// The client's address (the connection's).
pub fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The bytes `key` names in this request (empty when it has none); `path` is the normalized
/// path.
pub fn request_key<'a>(
    session: &'a ServerSession,
    key: &HashKey,
    path: &'a str,
    buf: &'a mut KeyBuf,
) -> &'a [u8] {
    let req = session.req_header();
    match key {
        HashKey::ClientIp => {
            let Some(ip) = client_ip(session) else {
                return &[];
            };
            super::headers::format_ip(ip, buf).as_bytes()
        }
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

/// The value of cookie `name` in a `Cookie` header line.
fn cookie<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    line.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
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
    }
}
