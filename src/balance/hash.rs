//! The hash strategies, as NGINX computes them so that a migration keeps every client (or key)
//! on the backend it had:
//!
//! * `ip_hash` (ngx_http_upstream_ip_hash_module.c): `hash = 89`, then per try
//!   `hash = (hash·113 + byte) mod 6271` over the first three octets of an IPv4 client (all 16 of
//!   an IPv6 one), `hash mod total_weight` walked over the backends' configured weights in
//!   config order (down backends keep their share of the space); an unusable pick tries again
//!   with the running hash, 20 times, then falls back to round-robin.
//! * `consistent_hash` (ngx_http_upstream_hash_module.c, `hash KEY consistent`): ketama points,
//!   `160 × weight` per backend, point `j` being `crc32(HOST \0 PORT ‖ point[j-1])` (little-endian
//!   previous point, 0 first) over the backend's address *as written* (what NGINX hashes: the
//!   `server` argument, not the resolved address). A key goes to the first point at or after
//!   `crc32(key)`, wrapping; an unusable backend passes the key on to the next points. Removing
//!   one of N backends moves only the keys it had (about 1/N).

use std::sync::Arc;

/// NGINX's tries before `ip_hash` gives up and falls back to round-robin.
const IP_HASH_TRIES: usize = 20;
/// Ketama points per unit of weight (NGINX, Cache::Memcached::Fast).
const POINTS_PER_WEIGHT: u32 = 160;

/// `ip_hash`'s table: each hashed backend's configured weight and index, in config order.
#[derive(Debug, Default)]
pub struct IpTable {
    entries: Box<[(u32, u32)]>,
    total: u32,
}

impl IpTable {
    /// `backends`: (configured weight, index) of every backend the hash covers.
    pub fn new(backends: impl Iterator<Item = (u32, usize)>) -> IpTable {
        let entries: Box<[(u32, u32)]> = backends.map(|(w, i)| (w.max(1), i as u32)).collect();
        let total = entries.iter().map(|e| e.0).sum();
        IpTable { entries, total }
    }

    /// NGINX's pick for a client whose address bytes are `key` (3 for IPv4, 16 for IPv6).
    pub fn pick(&self, key: &[u8], ok: &impl Fn(usize) -> bool) -> Option<usize> {
        if self.total == 0 || key.is_empty() {
            return None;
        }
        let mut hash: u32 = 89;
        for _ in 0..IP_HASH_TRIES {
            for b in key {
                hash = (hash * 113 + *b as u32) % 6271;
            }
            let mut w = hash % self.total;
            let mut p = 0;
            while w >= self.entries[p].0 {
                w -= self.entries[p].0;
                p += 1;
            }
            let i = self.entries[p].1 as usize;
            if ok(i) {
                return Some(i);
            }
        }
        None
    }
}

/// The bytes `ip_hash` hashes: the first three octets of IPv4, the whole IPv6 address (an
/// IPv4-mapped IPv6 client is its IPv4 address).
pub fn ip_key(ip: std::net::IpAddr, buf: &mut [u8; 16]) -> &[u8] {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    match ip {
        std::net::IpAddr::V4(v4) => {
            buf[..3].copy_from_slice(&v4.octets()[..3]);
            &buf[..3]
        }
        std::net::IpAddr::V6(v6) => {
            *buf = v6.octets();
            &buf[..]
        }
    }
}

/// A consistent-hash ring: sorted `(point, backend index)`.
#[derive(Debug)]
pub struct Ring {
    points: Box<[(u32, u32)]>,
    /// What the ring was built from (names, weights, order), to reuse it across rebuilds.
    pub fingerprint: u64,
}

impl Ring {
    /// `backends`: (address as written, configured weight, index).
    pub fn build<'a>(backends: impl Iterator<Item = (&'a str, u32, usize)> + Clone) -> Ring {
        let fingerprint = Ring::fingerprint(backends.clone());
        let mut points = Vec::new();
        for (name, weight, index) in backends {
            // NGINX splits the name at the last ':' followed only by digits.
            let (host, port) = match name.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
                _ => (name, ""),
            };
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let base = base.finalize();
            let mut prev: u32 = 0;
            for _ in 0..weight.max(1) * POINTS_PER_WEIGHT {
                let mut h = crc32fast::Hasher::new_with_initial(base);
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, index as u32));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring {
            points: points.into(),
            fingerprint,
        }
    }

    pub fn fingerprint<'a>(backends: impl Iterator<Item = (&'a str, u32, usize)>) -> u64 {
        let mut bytes = Vec::new();
        for (name, weight, index) in backends {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&weight.to_le_bytes());
            bytes.extend_from_slice(&(index as u32).to_le_bytes());
        }
        crate::util::hash::fnv1a64(&bytes)
    }

    /// The first usable backend at or after the key's point.
    pub fn pick(&self, key: &[u8], ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let h = crc32fast::hash(key);
        let start = self.points.partition_point(|p| p.0 < h);
        (0..n)
            .map(|t| self.points[(start + t) % n].1 as usize)
            .find(|&i| ok(i))
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A ring shared across snapshot rebuilds while the backends it was built from stay the same.
pub fn ring_for<'a>(
    cache: &std::sync::Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    backends: impl Iterator<Item = (&'a str, u32, usize)> + Clone,
) -> Arc<Ring> {
    let fingerprint = Ring::fingerprint(backends.clone());
    let mut slot = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ring) = slot
        .as_ref()
        .and_then(|r| r.clone().downcast::<Ring>().ok())
    {
        if ring.fingerprint == fingerprint {
            return ring;
        }
    }
    let ring = Arc::new(Ring::build(backends));
    *slot = Some(ring.clone());
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(names: &[&str]) -> Ring {
        Ring::build(names.iter().enumerate().map(|(i, n)| (*n, 1, i)))
    }

    #[test]
    fn ip_hash_follows_nginx() {
        // NGINX 1.22, `ip_hash` over three equal servers: clients 10.0.0.x share a backend,
        // the index is ((((89·113+10)%6271)·113+0)%6271·113+0)%6271 mod 3.
        let t = IpTable::new([(1, 0), (1, 1), (1, 2)].into_iter());
        let mut h: u32 = 89;
        for b in [10u8, 0, 0] {
            h = (h * 113 + b as u32) % 6271;
        }
        let mut buf = [0; 16];
        let key = ip_key("10.0.0.7".parse().unwrap(), &mut buf).to_vec();
        assert_eq!(key, vec![10, 0, 0]);
        assert_eq!(t.pick(&key, &|_| true), Some((h % 3) as usize));
        let other = ip_key("10.0.0.200".parse().unwrap(), &mut buf).to_vec();
        assert_eq!(t.pick(&key, &|_| true), t.pick(&other, &|_| true));
        // An unusable pick goes on with the running hash, not to the neighbour.
        let first = t.pick(&key, &|_| true).unwrap();
        let next = t.pick(&key, &|i| i != first).unwrap();
        assert_ne!(next, first);
    }

    #[test]
    fn ip_hash_weights_split_the_space() {
        let t = IpTable::new([(3, 0), (1, 1)].into_iter());
        let mut counts = [0; 2];
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                counts[t.pick(&[10, a, b], &|_| true).unwrap()] += 1;
            }
        }
        let share = counts[0] as f64 / (counts[0] + counts[1]) as f64;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }

    #[test]
    fn ring_points_are_nginx_ketama() {
        // crc32("127.0.0.1\08080") continued with four zero bytes is the first point.
        let r = Ring::build([("127.0.0.1:8080", 1, 0)].into_iter());
        assert_eq!(r.len(), 160);
        let mut data = b"127.0.0.1\x008080".to_vec();
        data.extend_from_slice(&[0, 0, 0, 0]);
        let first = crc32fast::hash(&data);
        assert!(r.points.iter().any(|p| p.0 == first));
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let names: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let full = ring(&all);
        let fewer = ring(&all[..9]);
        let (mut moved, n) = (0, 20_000);
        for k in 0..n {
            let key = format!("/item/{k}");
            let a = full.pick(key.as_bytes(), &|_| true).unwrap();
            let b = fewer.pick(key.as_bytes(), &|_| true).unwrap();
            if a != 9 {
                assert_eq!(a, b, "a key of a remaining backend moved");
            } else {
                moved += 1;
            }
        }
        let share = moved as f64 / n as f64;
        assert!((0.06..0.14).contains(&share), "moved {share:.3}");
    }

    #[test]
    fn an_unusable_backend_passes_its_keys_on() {
        let r = ring(&["a:1", "b:1", "c:1"]);
        for k in 0..200 {
            let key = k.to_string();
            let first = r.pick(key.as_bytes(), &|_| true).unwrap();
            let next = r.pick(key.as_bytes(), &|i| i != first).unwrap();
            assert_ne!(first, next);
        }
        assert_eq!(r.pick(b"x", &|_| false), None);
    }
}
