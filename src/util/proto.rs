//! Protobuf base-128 varints, for the few gRPC messages lb and sample-backend encode themselves
//! (health checks, the sample `lb.LoadTest` service).

/// Appends `v` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint from the start of `bytes` and what follows it; `None` when truncated or longer than
/// ten bytes.
pub fn varint(mut bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some((v, bytes));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b.push(0xAA);
            assert_eq!(varint(&b), Some((v, &[0xAA][..])), "{v}");
        }
        assert_eq!(varint(&[0x80]), None, "truncated");
    }
}
