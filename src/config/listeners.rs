//! When two listening addresses would collide. Kept in one place: the answer depends on socket
//! options lb sets (IPv6 listeners are `IPV6_V6ONLY`, as NGINX's, so `[::]:443` and
//! `0.0.0.0:443` can both be listed).

use std::net::{IpAddr, SocketAddr};

/// Whether an IPv6 wildcard listener (`[::]`) also accepts IPv4 connections. False: lb sets
/// `IPV6_V6ONLY` on every IPv6 listener (proxy, HTTPS and admin), so `[::]:80` leaves
/// `0.0.0.0:80` free.
pub const V6_WILDCARD_IS_DUAL_STACK: bool = false;

/// True when `a` and `b` cannot both be bound: the same port and the same IP, or one of them is
/// a wildcard covering the other (`0.0.0.0` covers every IPv4 address, `[::]` every IPv6 one,
/// and IPv4 ones too if it were dual-stack). Port 0 (any free port) never collides.
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (x, y) = (canonical(a.ip()), canonical(b.ip()));
    x == y || covers(x, y) || covers(y, x)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address they map.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn covers(wildcard: IpAddr, other: IpAddr) -> bool {
    match wildcard {
        IpAddr::V4(w) => w.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified() && (other.is_ipv6() || V6_WILDCARD_IS_DUAL_STACK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(a: &str, b: &str) -> bool {
        let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(overlap(a, b), overlap(b, a), "symmetric");
        overlap(a, b)
    }

    #[test]
    fn overlapping_listeners() {
        assert!(o("127.0.0.1:80", "127.0.0.1:80"));
        assert!(o("0.0.0.0:80", "127.0.0.1:80"));
        assert!(o("0.0.0.0:80", "0.0.0.0:80"));
        assert!(o("[::]:80", "[::1]:80"));
        assert!(o("[::ffff:127.0.0.1]:80", "127.0.0.1:80"));
    }

    #[test]
    fn separate_listeners() {
        assert!(!o("127.0.0.1:80", "127.0.0.1:81"));
        assert!(!o("127.0.0.1:80", "127.0.0.2:80"));
        assert!(!o("0.0.0.0:80", "[::1]:80"));
        assert!(!o("[::1]:80", "127.0.0.1:80"));
        assert!(!o("127.0.0.1:0", "127.0.0.1:0"));
        // IPv6 listeners are v6-only: the two wildcards side by side, as in NGINX.
        assert!(!o("[::]:80", "0.0.0.0:80"));
        assert!(!o("[::]:80", "10.0.0.1:80"));
    }
}
