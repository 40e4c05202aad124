//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners with `proxy_protocol = true`:
//! the load balancer in front writes the client's address ahead of the connection's first byte,
//! and lb takes it as the connection's peer. Parsed here, strict and bounded (a v1 line is at
//! most 107 bytes, a v2 header at most [`MAX_V2_BODY`] after its 16 fixed bytes), exactly the
//! header's bytes read, so the HTTP or TLS bytes after it are untouched. A connection without a
//! valid header is closed (as NGINX does); the caller bounds the wait with
//! `server.header_timeout`.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Relayed for a client: its address, and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `UNKNOWN` (v1), `LOCAL` or a non-IP family (v2): the sender's own connection (a health
    /// check); the TCP peer stays the client.
    Local,
}

/// Longest v1 line, CRLF included (the spec's bound).
pub const MAX_V1: usize = 107;
/// Longest v2 address block (addresses and TLVs) lb accepts; far above what load balancers send.
pub const MAX_V2_BODY: usize = 2048;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads one PROXY header from the start of `io`; `Err` says why it is not one.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, String> {
    let mut start = [0u8; 6];
    io.read_exact(&mut start).await.map_err(io_err)?;
    if &start == b"PROXY " {
        return read_v1(io).await;
    }
    if start == V2_SIGNATURE[..6] {
        let mut rest = [0u8; 10];
        io.read_exact(&mut rest).await.map_err(io_err)?;
        if rest[..6] != V2_SIGNATURE[6..] {
            return Err("not a PROXY protocol v2 signature".into());
        }
        let len = u16::from_be_bytes([rest[8], rest[9]]) as usize;
        if len > MAX_V2_BODY {
            return Err(format!(
                "PROXY v2 header of {len} bytes (at most {MAX_V2_BODY})"
            ));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await.map_err(io_err)?;
        return parse_v2(rest[6], rest[7], &body);
    }
    Err("the connection does not start with a PROXY protocol header".into())
}

fn io_err(e: std::io::Error) -> String {
    format!("reading the PROXY header: {e}")
}

/// The rest of a v1 line after `PROXY `, read a byte at a time (the stream is buffered) so that
/// nothing after its CRLF is consumed.
async fn read_v1<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, String> {
    let mut line = Vec::with_capacity(MAX_V1);
    loop {
        let b = io.read_u8().await.map_err(io_err)?;
        line.push(b);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() + 6 >= MAX_V1 {
            return Err(format!("PROXY v1 line longer than {MAX_V1} bytes"));
        }
    }
    line.truncate(line.len() - 2);
    let text = std::str::from_utf8(&line).map_err(|_| "PROXY v1 line is not text".to_string())?;
    parse_v1(text)
}

/// `TCP4 SRC DST SPORT DPORT` or `UNKNOWN ...` (the part after `PROXY `, without CRLF).
pub fn parse_v1(text: &str) -> Result<Header, String> {
    let bad = || format!("malformed PROXY v1 line {text:?}");
    let mut words = text.split(' ');
    let family = words.next().ok_or_else(bad)?;
    if family == "UNKNOWN" {
        return Ok(Header::Local);
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad());
    };
    let addr = |ip: &str, port: &str| -> Result<SocketAddr, String> {
        let ip: IpAddr = match family {
            "TCP4" => IpAddr::V4(ip.parse().map_err(|_| bad())?),
            "TCP6" => IpAddr::V6(ip.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        // Ports in decimal without leading zeros (`0` itself is allowed).
        if port.is_empty() || (port.len() > 1 && port.starts_with('0')) {
            return Err(bad());
        }
        Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
    };
    Ok(Header::Proxied {
        source: addr(src, sport)?,
        destination: addr(dst, dport)?,
    })
}

/// A v2 header's version/command byte, family/transport byte and address block.
pub fn parse_v2(ver_cmd: u8, family: u8, body: &[u8]) -> Result<Header, String> {
    if ver_cmd >> 4 != 2 {
        return Err(format!("PROXY v2 header with version {}", ver_cmd >> 4));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(Header::Local),
        1 => {}
        c => return Err(format!("PROXY v2 header with command {c}")),
    }
    let short = || "PROXY v2 address block too short".to_string();
    // TCP or UDP over IPv4 (0x11, 0x12) or IPv6 (0x21, 0x22); anything else (UNIX, UNSPEC)
    // carries no IP address: the connection is taken as local.
    match family {
        0x11 | 0x12 => {
            let a = body.get(..12).ok_or_else(short)?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        0x21 | 0x22 => {
            let a = body.get(..36).ok_or_else(short)?;
            let ip = |i: usize| {
                let octets: [u8; 16] = a[i..i + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => Ok(Header::Local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Header, String>, Vec<u8>) {
        let mut io = bytes;
        let h = read(&mut io).await;
        (h, io.to_vec())
    }

    fn proxied(src: &str, dst: &str) -> Result<Header, String> {
        Ok(Header::Proxied {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        })
    }

    #[tokio::test]
    async fn v1_reads_exactly_the_line() {
        let (h, rest) =
            parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 80\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(h, proxied("192.0.2.1:5000", "198.51.100.2:80"));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\n").await;
        assert_eq!(h, proxied("[2001:db8::1]:65535", "[2001:db8::2]:443"));
        let (h, rest) = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX").await;
        assert_eq!((h, rest), (Ok(Header::Local), b"X".to_vec()));
    }

    #[tokio::test]
    async fn v1_malformed_is_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 5000\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 5000 80\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 05000 80\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 80\r\n",
            b"PROXY TCP5 192.0.2.1 198.51.100.2 5000 80\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 5000 80\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 80\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse(bad).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert!(parse(long.as_bytes()).await.0.is_err(), "over 107 bytes");
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[0x20 | cmd, fam]);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut b4 = vec![192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0, 80];
        b4.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV (NOOP), skipped
        let mut bytes = v2(1, 0x11, &b4);
        bytes.extend_from_slice(b"GET");
        let (h, rest) = parse(&bytes).await;
        assert_eq!(h, proxied("192.0.2.1:5000", "198.51.100.2:80"));
        assert_eq!(rest, b"GET");
        let mut b6 = Vec::new();
        b6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&[0x01, 0xbb, 0x00, 0x50]);
        let (h, _) = parse(&v2(1, 0x21, &b6)).await;
        assert_eq!(h, proxied("[2001:db8::1]:443", "[2001:db8::2]:80"));
        assert_eq!(parse(&v2(0, 0x00, &[])).await.0, Ok(Header::Local));
    }

    #[tokio::test]
    async fn v2_malformed_is_refused() {
        assert!(
            parse(&v2(1, 0x11, &[1, 2, 3])).await.0.is_err(),
            "short block"
        );
        assert!(parse(&v2(2, 0x11, &[0; 12])).await.0.is_err(), "command 2");
        let mut v1_version = v2(1, 0x11, &[0; 12]);
        v1_version[12] = 0x11;
        assert!(parse(&v1_version).await.0.is_err(), "version 1 in v2 form");
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&4000u16.to_be_bytes());
        assert!(parse(&huge).await.0.is_err(), "over MAX_V2_BODY");
        let mut truncated = v2(1, 0x11, &[0; 12]);
        truncated.truncate(20);
        assert!(parse(&truncated).await.0.is_err(), "connection ends inside");
    }
}
