//! Stable, non-cryptographic hashing.

/// 64-bit FNV-1a: stable across runs and builds (the config hash in `/status` must not change
/// between processes for the same text).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// MurmurHash2 (seed 0) as NGINX's `ngx_murmur_hash2`, which `split_clients` hashes its string
/// with: the same key picks the same share in lb and in NGINX.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    #[test]
    fn murmur2_reference_values() {
        // From the reference MurmurHash2 (Austin Appleby), seed 0, as NGINX computes it.
        assert_eq!(super::murmur2(b""), 0);
        assert_eq!(super::murmur2(b"a"), 0x92685f5e);
        assert_eq!(super::murmur2(b"hello"), 0xe56129cb);
    }

    #[test]
    fn fnv1a64_reference_values() {
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
