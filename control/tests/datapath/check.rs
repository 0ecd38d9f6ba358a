//! Independent checks of what the programs output: a reference RFC 1071 checksum (written
//! here, on big-endian words, and cross-checked against known vectors and against
//! `weir_common::csum`), a parser for the frames that come out, and a verifier of every
//! checksum in them (IPv4 header, TCP/UDP with pseudo-header, ICMP, and the headers an ICMP
//! error quotes).

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of big-endian 16-bit words (odd length padded with zero), starting
/// from `seed`, not yet complemented.
fn sum(seed: u32, data: &[u8]) -> u32 {
    let mut s = seed as u64;
    for pair in data.chunks(2) {
        let hi = pair[0] as u64;
        let lo = pair.get(1).copied().unwrap_or(0) as u64;
        s += (hi << 8) | lo;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// The Internet checksum of `data` with a pseudo-header partial sum `seed` (0 for none), as
/// a host-order value to store big-endian.
pub fn csum(seed: u32, data: &[u8]) -> u16 {
    !(sum(seed, data) as u16)
}

/// Partial sum of the IPv4 pseudo-header.
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum(0, &p)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, len: u32, next: u8) -> u32 {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    sum(0, &p)
}

/// Whether `data` (checksum field included) sums to the all-ones value.
fn valid(seed: u32, data: &[u8]) -> bool {
    sum(seed, data) == 0xffff
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn addr(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

/// An IPv4 packet as seen in an output frame (or quoted in an ICMP error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub ihl: usize,
    pub tot_len: usize,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP ports; ICMP echo: identifier in both.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The L4 checksum field.
    pub l4_csum: u16,
    /// ICMP errors: the packet they quote.
    pub inner: Option<Box<Seen>>,
}

/// Parses the IPv4 packet at the start of `p` (which may be a truncated quote).
pub fn parse_ip(p: &[u8]) -> Seen {
    let ihl = (p[0] & 0x0f) as usize * 4;
    let proto = p[9];
    let l4 = p.get(ihl..).unwrap_or(&[]);
    let mut s = Seen {
        ihl,
        tot_len: be16(p, 2) as usize,
        id: be16(p, 4),
        frag: be16(p, 6),
        ttl: p[8],
        proto,
        src: addr(p, 12),
        dst: addr(p, 16),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        l4_csum: 0,
        inner: None,
    };
    let later_fragment = s.frag & 0x1fff != 0;
    if later_fragment {
        return s;
    }
    match proto {
        6 | 17 if l4.len() >= 8 => {
            s.sport = be16(l4, 0);
            s.dport = be16(l4, 2);
            if proto == 6 && l4.len() >= 18 {
                s.tcp_flags = l4[13];
                s.l4_csum = be16(l4, 16);
            } else if proto == 17 {
                s.l4_csum = be16(l4, 6);
            }
        }
        1 if l4.len() >= 8 => {
            s.icmp_type = l4[0];
            s.icmp_code = l4[1];
            s.l4_csum = be16(l4, 2);
            match l4[0] {
                0 | 8 => {
                    s.sport = be16(l4, 4);
                    s.dport = be16(l4, 4);
                }
                3 | 11 | 12 if l4.len() >= 28 => {
                    s.inner = Some(Box::new(parse_ip(&l4[8..])));
                }
                _ => {}
            }
        }
        _ => {}
    }
    s
}

/// An output frame: MACs and the IPv4 packet.
#[derive(Debug)]
pub struct Out {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ip: Seen,
}

pub fn parse(frame: &[u8]) -> Out {
    assert!(frame.len() >= 34, "frame too short to parse: {frame:02x?}");
    assert_eq!(be16(frame, 12), 0x0800, "not IPv4");
    Out {
        dst_mac: frame[..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        ip: parse_ip(&frame[14..]),
    }
}

/// Asserts every checksum of the IPv4 packet `p` is valid: header, L4 (unless it is a
/// fragment, whose L4 checksum covers the whole datagram), and for ICMP errors the quoted
/// header and — when the quote holds the whole quoted segment — its L4 checksum.
pub fn verify_ip(p: &[u8], what: &str) {
    let ihl = (p[0] & 0x0f) as usize * 4;
    assert!(valid(0, &p[..ihl]), "{what}: bad IPv4 header checksum");
    let tot = (be16(p, 2) as usize).min(p.len());
    let frag = be16(p, 6);
    if frag & 0x3fff != 0 {
        return;
    }
    let l4 = &p[ihl..tot];
    let (src, dst) = (addr(p, 12), addr(p, 16));
    match p[9] {
        6 => assert!(
            valid(pseudo(src, dst, 6, l4.len()), l4),
            "{what}: bad TCP checksum"
        ),
        // A zero UDP checksum means "none".
        17 if be16(l4, 6) != 0 => assert!(
            valid(pseudo(src, dst, 17, l4.len()), l4),
            "{what}: bad UDP checksum"
        ),
        1 => {
            assert!(valid(0, l4), "{what}: bad ICMP checksum");
            if matches!(l4[0], 3 | 11 | 12) && l4.len() >= 28 {
                verify_quote(&l4[8..], what);
            }
        }
        _ => {}
    }
}

/// The quoted header of an ICMP error and, if whole, its segment.
fn verify_quote(q: &[u8], what: &str) {
    let ihl = (q[0] & 0x0f) as usize * 4;
    assert!(
        q.len() >= ihl && valid(0, &q[..ihl]),
        "{what}: bad checksum in the quoted IPv4 header"
    );
    let tot = be16(q, 2) as usize;
    if tot > q.len() || be16(q, 6) & 0x3fff != 0 {
        return; // a partial quote: its L4 checksum cannot be recomputed
    }
    let l4 = &q[ihl..tot];
    let (src, dst) = (addr(q, 12), addr(q, 16));
    let ok = match q[9] {
        6 => valid(pseudo(src, dst, 6, l4.len()), l4),
        17 => be16(l4, 6) == 0 || valid(pseudo(src, dst, 17, l4.len()), l4),
        1 => valid(0, l4),
        _ => true,
    };
    assert!(ok, "{what}: bad L4 checksum in the quoted packet");
}

/// [`verify_ip`] on the IPv4 packet of an Ethernet frame.
pub fn verify(frame: &[u8], what: &str) {
    verify_ip(&frame[14..], what);
}

/// An IPv6 packet as seen in an output frame (no extension headers), or quoted in an
/// ICMPv6 error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen6 {
    pub hop_limit: u8,
    pub next: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// TCP/UDP ports; ICMPv6 echo: the identifier in both.
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub inner: Option<Box<Seen6>>,
}

fn addr6(b: &[u8], off: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[off..off + 16]).unwrap())
}

/// Parses the IPv6 packet at the start of `p` (which may be a truncated quote).
pub fn parse_ip6(p: &[u8]) -> Seen6 {
    let (next, l4) = (p[6], p.get(40..).unwrap_or(&[]));
    let mut s = Seen6 {
        hop_limit: p[7],
        next,
        src: addr6(p, 8),
        dst: addr6(p, 24),
        sport: 0,
        dport: 0,
        icmp_type: 0,
        inner: None,
    };
    match next {
        6 | 17 if l4.len() >= 8 => (s.sport, s.dport) = (be16(l4, 0), be16(l4, 2)),
        58 if l4.len() >= 8 => {
            s.icmp_type = l4[0];
            match l4[0] {
                128 | 129 => (s.sport, s.dport) = (be16(l4, 4), be16(l4, 4)),
                1..=4 if l4.len() >= 48 => s.inner = Some(Box::new(parse_ip6(&l4[8..]))),
                _ => {}
            }
        }
        _ => {}
    }
    s
}

/// Asserts the upper-layer checksum of the IPv6 packet `p` is valid (TCP, UDP — whose zero
/// checksum is illegal over IPv6 — and ICMPv6), and for an ICMPv6 error, the quoted
/// packet's when the quote holds all of it.
pub fn verify_ip6(p: &[u8], what: &str) {
    let len = be16(p, 4) as usize;
    assert_eq!(p.len(), 40 + len, "{what}: payload length");
    let (src, dst, next, l4) = (addr6(p, 8), addr6(p, 24), p[6], &p[40..]);
    let name = match next {
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        _ => return,
    };
    if next == 17 {
        assert_ne!(be16(l4, 6), 0, "{what}: a zero UDP checksum over IPv6");
    }
    assert!(
        valid(pseudo6(src, dst, len as u32, next), l4),
        "{what}: bad {name} checksum"
    );
    if next == 58 && (1..=4).contains(&l4[0]) && l4.len() >= 48 {
        let q = &l4[8..];
        if 40 + be16(q, 4) as usize == q.len() {
            verify_ip6(q, &format!("{what} (quoted)"));
        }
    }
}

/// [`verify_ip6`] on the IPv6 packet of an Ethernet frame.
pub fn verify6(frame: &[u8], what: &str) {
    assert_eq!(be16(frame, 12), 0x86dd, "{what}: not IPv6");
    verify_ip6(&frame[14..], what);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference itself, on vectors computed by hand: RFC 1071 §3's example words and the
    /// classic IPv4 header whose checksum is 0xb861.
    #[test]
    fn reference_checksum_known_vectors() {
        // 0001 + f203 + f4f5 + f6f7 = 0x2ddf0 -> fold 0xddf2 -> checksum 0x220d.
        assert_eq!(
            sum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            csum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(csum(0, &h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(valid(0, &h));
        // Odd length: the last byte is the high byte of a zero-padded word.
        assert_eq!(sum(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    /// The datapath's own arithmetic (native-endian words) agrees with the reference.
    #[test]
    fn reference_agrees_with_weir_common() {
        let mut x = 0x9e37_79b9u32;
        for len in 0..80usize {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let theirs = weir_common::csum::checksum(0, &data);
            assert_eq!(
                csum(0, &data).to_be_bytes(),
                theirs.to_ne_bytes(),
                "len {len}"
            );
        }
    }
}
