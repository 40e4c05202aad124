//! Request keys (what `hash_key` and `rate_limits.X.key` name) and the rate limits' verdict on
//! a routed request.
//!
//! A request passes every limit of its route (or of its upstream, when the route names none).
//! With several, each is asked first without counting the request, and the request is counted
//! in all of them only if none refuses it (NGINX's `limit_req` does the same): a refused
//! request costs the other limits nothing (a dry-run limit that would refuse is counted as such,
//! and the request goes on counted nowhere else, as NGINX's `limit_req_dry_run`). The longest
//! delay any of them asks for is served.

use std::net::IpAddr;
use std::time::Duration;

use pingora_core::protocols::http::ServerSession;

use crate::config::split::SplitBy;
use crate::config::HashKey;
use crate::snapshot::{Route, Snapshot};
use crate::state::limit::{Mode, Verdict};

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
    let now = crate::util::time::process_ms();
    let mut buf: KeyBuf = [0; 64];
    if let [i] = *ids {
        // One limit: one lookup.
        let l = &snapshot.limits[i];
        let key = request_key(session, &l.config.key, path, client, &mut buf);
        // An empty key (no such header or cookie) is not limited, as in NGINX.
        if key.is_empty() {
            return Limited::Pass;
        }
        return match l.table.check(&l.config, key, now, Mode::Take) {
            _ if l.config.dry_run => Limited::Pass,
            Verdict::Pass => Limited::Pass,
            Verdict::Delay(d) => Limited::Delay(d),
            Verdict::Reject => Limited::Reject(i),
        };
    }
    // Several: a first round only looks. If any limit refuses, the request is counted in none
    // of them (NGINX's rule), and refused unless every limit that refuses is a dry run.
    let (mut refused, mut refusing) = (None, false);
    for &i in ids {
        let l = &snapshot.limits[i];
        let key = request_key(session, &l.config.key, path, client, &mut buf);
        if key.is_empty() || l.table.check(&l.config, key, now, Mode::Peek) != Verdict::Reject {
            continue;
        }
        refusing = true;
        // Counts the refusal (the bucket can only have filled since the look).
        l.table.check(&l.config, key, now, Mode::Take);
        if !l.config.dry_run && refused.is_none() {
            refused = Some(i);
        }
    }
    if let Some(i) = refused {
        return Limited::Reject(i);
    }
    if refusing {
        return Limited::Pass;
    }
    let mut delay = Duration::ZERO;
    for &i in ids {
        let l = &snapshot.limits[i];
        let key = request_key(session, &l.config.key, path, client, &mut buf);
        if key.is_empty() {
            continue;
        }
        if let Verdict::Delay(d) = l.table.check(&l.config, key, now, Mode::Force) {
            if !l.config.dry_run {
                delay = delay.max(d);
            }
        }
    }
    if delay.is_zero() {
        Limited::Pass
    } else {
        Limited::Delay(delay)
    }
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
    let req = session.req_header();
    match key {
        HashKey::ClientIp => {
            let Some(ip) = client else {
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
