//! Who the client is and whether it may ask: `server.real_ip_from` / `real_ip_header` /
//! `real_ip_recursive` (NGINX's realip module) and a route's `access` list (NGINX's
//! `allow`/`deny`). Pure types and their evaluation; the request path reads them from the
//! snapshot. The checks of these keys are in `check`.

use std::net::IpAddr;

mod check;

use super::Cidr;

/// `server.real_ip_*`: NGINX's `set_real_ip_from`, `real_ip_header`, `real_ip_recursive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    /// Peers whose `header` is believed. Empty: the client is always the peer.
    pub from: Vec<Cidr>,
    /// The request header naming the client (`X-Forwarded-For`, `X-Real-IP`, any other): a
    /// list of addresses, the last one (or, recursive, the rightmost untrusted one) is it.
    pub header: http::HeaderName,
    /// Skip addresses in `from` from the right of the header (`real_ip_recursive on`).
    pub recursive: bool,
}

/// Default `server.real_ip_header`, as NGINX's (`X-Real-IP` there; `X-Forwarded-For` is what
/// cloud load balancers send, and what `lb import-nginx` writes when NGINX names it).
pub const DEFAULT_REAL_IP_HEADER: &str = "x-real-ip";

impl Default for RealIp {
    fn default() -> Self {
        RealIp {
            from: Vec::new(),
            header: http::HeaderName::from_static(DEFAULT_REAL_IP_HEADER),
            recursive: false,
        }
    }
}

impl RealIp {
    /// Whether `ip` is one of the trusted peers of `real_ip_from`.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|c| c.contains(ip))
    }

    /// The client address a header's values give (from a trusted peer): the last address, or
    /// (recursive) the rightmost one not in `from`; `None` when the last value is not an
    /// address (the peer stays the client, as NGINX).
    pub fn from_header<'a>(
        &self,
        values: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        // Every address of every line, right to left.
        let mut addrs = values.rev().flat_map(|v| v.rsplit(|b| *b == b','));
        let mut last = None;
        for a in addrs.by_ref() {
            let a = std::str::from_utf8(a).map(str::trim).unwrap_or("?");
            if a.is_empty() {
                continue;
            }
            // A value that is not an address ends the walk where it is (NGINX: the last
            // address taken stays; none taken, the peer stays).
            let Some(ip) = parse_addr(a) else {
                return last;
            };
            if !self.recursive || !self.trusts(ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
        // Every address trusted: the leftmost one (NGINX's `real_ip_recursive` does the same).
        last
    }
}

/// An address as a forwarding header writes it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// with or without `:port`.
fn parse_addr(a: &str) -> Option<IpAddr> {
    if let Ok(ip) = a.parse() {
        return Some(ip);
    }
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// One line of a route's `access` list: `allow CIDR`, `deny CIDR`, `allow all`, `deny all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    /// `None`: `all`.
    pub net: Option<Cidr>,
}

/// Whether `client` may use a route with `rules`: the first rule that matches decides; no match
/// (and no client address, which only a non-IP socket has) allows, as NGINX.
pub fn access_allows(rules: &[AccessRule], client: Option<IpAddr>) -> bool {
    rules
        .iter()
        .find(|r| match (r.net, client) {
            (None, _) => true,
            (Some(net), Some(ip)) => net.contains(ip),
            (Some(_), None) => false,
        })
        .is_none_or(|r| r.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    fn real(recursive: bool) -> RealIp {
        RealIp {
            from: vec![cidr("10.0.0.0/8"), cidr("127.0.0.1/32")],
            recursive,
            ..RealIp::default()
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn last_address_without_recursive() {
        let lines: [&[u8]; 2] = [b"1.1.1.1, 2.2.2.2", b"3.3.3.3 , 10.0.0.5"];
        assert_eq!(real(false).from_header(lines.into_iter()), ip("10.0.0.5"));
    }

    #[test]
    fn rightmost_untrusted_with_recursive() {
        let lines: [&[u8]; 2] = [b"1.1.1.1, 2.2.2.2", b"3.3.3.3 , 10.0.0.5"];
        assert_eq!(real(true).from_header(lines.into_iter()), ip("3.3.3.3"));
        let all: [&[u8]; 1] = [b"10.1.1.1, 127.0.0.1"];
        assert_eq!(real(true).from_header(all.into_iter()), ip("10.1.1.1"));
    }

    #[test]
    fn addresses_with_ports_and_brackets() {
        for (v, want) in [
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("2001:db8::2", "2001:db8::2"),
            ("192.0.2.1:8080", "192.0.2.1"),
        ] {
            assert_eq!(
                real(false).from_header([v.as_bytes()].into_iter()),
                ip(want)
            );
        }
        assert_eq!(real(false).from_header([&b"unknown"[..]].into_iter()), None);
        assert_eq!(real(false).from_header([&b""[..]].into_iter()), None);
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = [
            AccessRule {
                allow: false,
                net: Some(cidr("10.1.0.0/16")),
            },
            AccessRule {
                allow: true,
                net: Some(cidr("10.0.0.0/8")),
            },
            AccessRule {
                allow: false,
                net: None,
            },
        ];
        assert!(!access_allows(&rules, ip("10.1.2.3")));
        assert!(access_allows(&rules, ip("10.2.2.3")));
        assert!(!access_allows(&rules, ip("192.0.2.1")));
        assert!(
            access_allows(&rules[1..2], ip("192.0.2.1")),
            "no match allows"
        );
        assert!(access_allows(&[], ip("192.0.2.1")));
    }
}
