//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).
//!
//! All values are raw memory words: load a big-endian field into a native integer without
//! swapping and pass it here; one's-complement sums are byte-order independent, so the
//! results can be stored back the same way. The eBPF side uses [`diff32`]/[`diff16`] to feed
//! `bpf_l4_csum_replace` (size 0 = "`to` is a precomputed delta") and [`replace32`] /
//! [`replace16`] where it patches a checksum itself; tests check both against [`checksum`].

/// Folds a 32-bit one's-complement accumulator to 16 bits (two steps always suffice).
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a 64-bit accumulator to a 32-bit one's-complement partial sum (a `__wsum`).
#[inline(always)]
pub const fn fold64(sum: u64) -> u32 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as u32
}

/// The checksum field after one 16-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// The checksum field after one 32-bit word (e.g. an IPv4 address) changed.
#[inline(always)]
pub const fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let c = replace16(check, old as u16, new as u16);
    replace16(c, (old >> 16) as u16, (new >> 16) as u16)
}

/// The partial-sum delta for a 32-bit word changing from `old` to `new`, as
/// `bpf_csum_diff` would compute it.
#[inline(always)]
pub const fn diff32(old: u32, new: u32) -> u32 {
    fold64(!old as u64 + new as u64)
}

/// The partial-sum delta for a 16-bit word changing from `old` to `new`.
#[inline(always)]
pub const fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// Adds two partial-sum deltas.
#[inline(always)]
pub const fn add(a: u32, b: u32) -> u32 {
    fold64(a as u64 + b as u64)
}

/// Applies a partial-sum delta to a checksum field.
#[inline(always)]
pub const fn apply(check: u16, delta: u32) -> u16 {
    !fold(add(!check as u32, delta))
}

/// The RFC 1071 checksum of `data` (odd lengths padded with a zero byte), starting from
/// a partial sum `seed` (0, or a pseudo-header sum). Reference implementation for tests
/// and the control plane; the datapath never sums whole packets.
pub fn checksum(seed: u32, data: &[u8]) -> u16 {
    let mut sum = seed as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_ne_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u64;
    }
    !fold(fold64(sum))
}

/// The partial sum of an IPv4 pseudo-header (addresses as raw words, length in host order).
pub fn pseudo_header(saddr: u32, daddr: u32, proto: u8, l4_len: u16) -> u32 {
    let sum = saddr as u64
        + daddr as u64
        + u16::from_ne_bytes([0, proto]) as u64
        + u16::from_ne_bytes(l4_len.to_be_bytes()) as u64;
    fold64(sum)
}

/// The partial sum of raw 32-bit words (a fixed-size header, or addresses): what the
/// datapath sums when it builds a message itself (a neighbour advertisement).
#[inline(always)]
pub const fn sum_words(words: &[u32]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < words.len() {
        sum += words[i] as u64;
        i += 1;
    }
    sum
}

/// The partial sum of an IPv6 pseudo-header (RFC 8200 §8.1: addresses as raw words, a 32-bit
/// upper-layer length in host order, the next header).
pub const fn pseudo_header6(saddr: &[u32; 4], daddr: &[u32; 4], next: u8, l4_len: u32) -> u32 {
    fold64(
        sum_words(saddr)
            + sum_words(daddr)
            + u32::from_ne_bytes(l4_len.to_be_bytes()) as u64
            + u32::from_ne_bytes([0, 0, 0, next]) as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMPv6 echo request captured from `ping -6` (fd00::2 → fd00::1, id 0x1234, seq 1,
    /// payload "abcd"), whose checksum the kernel computed.
    #[test]
    fn known_icmpv6_checksum() {
        let a = |s: &str| crate::addr::from_std6(s.parse().unwrap());
        let mut msg = [0x80u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];
        let seed = pseudo_header6(&a("fd00::2"), &a("fd00::1"), 58, msg.len() as u32);
        let c = checksum(seed, &msg);
        msg[2..4].copy_from_slice(&c.to_ne_bytes());
        // A correct checksum sums the whole message, pseudo-header included, to zero.
        assert_eq!(checksum(seed, &msg), 0);
        // And it is the one an independent big-endian 16-bit sum gives.
        let mut sum: u32 = 0;
        let octets = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let pseudo = [
            &octets("fd00::2")[..],
            &octets("fd00::1")[..],
            &(msg.len() as u32).to_be_bytes()[..],
            &[0, 0, 0, 58][..],
        ]
        .concat();
        let mut zeroed = msg;
        zeroed[2] = 0;
        zeroed[3] = 0;
        for w in pseudo.chunks(2).chain(zeroed.chunks(2)) {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(
            u16::from_be_bytes(msg[2..4].try_into().unwrap()),
            !(sum as u16)
        );
    }

    fn word16(d: &[u8], off: usize) -> u16 {
        u16::from_ne_bytes([d[off], d[off + 1]])
    }
    fn word32(d: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]])
    }

    #[test]
    fn known_ipv4_header() {
        // Example header from RFC 1071 discussions (checksum field zeroed, then filled).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(0, &h);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(h[10..12], [0xb8, 0x61]);
        assert_eq!(checksum(0, &h), 0);
    }

    proptest! {
        /// Incremental 32-bit replacement agrees with recomputing from scratch, at any
        /// even offset, for any data (including results that wrap to 0xffff/0x0000).
        #[test]
        fn replace32_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                       new in any::<u32>(), at in 0usize..64) {
            let len = data.len() & !1;
            data.truncate(len);
            let off = (at % (len - 4 + 1)) & !1;
            let before = checksum(0, &data);
            let old = word32(&data, off);
            data[off..off + 4].copy_from_slice(&new.to_ne_bytes());
            let after = checksum(0, &data);
            let inc = replace32(before, old, new);
            // 0x0000 and 0xffff are the same one's-complement number.
            prop_assert!(inc == after || (inc ^ after) == 0xffff && (inc == 0 || after == 0),
                "inc {inc:#x} full {after:#x}");
        }

        #[test]
        fn replace16_and_deltas_match_recompute(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                                new in any::<u16>(), new32 in any::<u32>(), at in 0usize..64) {
            let len = data.len() & !1;
            data.truncate(len);
            let off = (at % (len - 4 + 1)) & !1;
            let before = checksum(0, &data);
            let old16 = word16(&data, off);
            let old32 = word32(&data, off);
            // 16-bit change through replace16 and through a delta.
            let mut d16 = data.clone();
            d16[off..off + 2].copy_from_slice(&new.to_ne_bytes());
            let full16 = checksum(0, &d16);
            for got in [replace16(before, old16, new), apply(before, diff16(old16, new))] {
                prop_assert!(got == full16 || (got ^ full16) == 0xffff && (got == 0 || full16 == 0));
            }
            // 32-bit change through a delta.
            let mut d32 = data.clone();
            d32[off..off + 4].copy_from_slice(&new32.to_ne_bytes());
            let full32 = checksum(0, &d32);
            let got = apply(before, diff32(old32, new32));
            prop_assert!(got == full32 || (got ^ full32) == 0xffff && (got == 0 || full32 == 0));
        }

        /// A pseudo-header-covered checksum (TCP/UDP) stays valid when an address changes,
        /// which is what SNAT/DNAT do with BPF_F_PSEUDO_HDR.
        #[test]
        fn pseudo_header_update(payload in proptest::collection::vec(any::<u8>(), 8..64),
                                saddr in any::<u32>(), daddr in any::<u32>(), nsaddr in any::<u32>()) {
            let len = payload.len() as u16;
            let c = checksum(pseudo_header(saddr, daddr, 17, len), &payload);
            let expect = checksum(pseudo_header(nsaddr, daddr, 17, len), &payload);
            let got = replace32(c, saddr, nsaddr);
            prop_assert!(got == expect || (got ^ expect) == 0xffff && (got == 0 || expect == 0));
        }
    }
    /// Reference: the RFC 1071 checksum by its definition — big-endian words summed as plain
    /// integers, reduced modulo 0xffff (a nonzero multiple of 0xffff is "negative zero",
    /// 0xffff), complemented — independent of this module's folding and byte-order shortcuts.
    fn reference(seed: u64, data: &[u8]) -> u16 {
        let words: u64 = data
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]) as u64)
            .sum();
        let s = seed + words;
        let ones = if s == 0 {
            0
        } else {
            ((s - 1) % 0xffff + 1) as u16
        };
        !ones
    }

    /// 0x0000 and 0xffff are the same one's-complement number (both verify).
    fn same(a: u16, b: u16) -> bool {
        a == b || (a ^ b) == 0xffff && (a == 0 || b == 0)
    }

    proptest! {
        /// `checksum` (native-endian words) agrees with the by-definition reference on any
        /// data, odd lengths included, and with any pseudo-header seed.
        #[test]
        fn checksum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..200),
                                      s in any::<u32>(), d in any::<u32>(), proto in any::<u8>(),
                                      len in any::<u16>()) {
            prop_assert_eq!(checksum(0, &data).to_ne_bytes(), reference(0, &data).to_be_bytes());
            // The pseudo-header as bytes on the wire: addresses, zero, protocol, length.
            let mut ph = Vec::new();
            ph.extend_from_slice(&s.to_ne_bytes());
            ph.extend_from_slice(&d.to_ne_bytes());
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&len.to_be_bytes());
            let with_seed = checksum(pseudo_header(s, d, proto, len), &data);
            ph.extend_from_slice(&data);
            prop_assert!(same(with_seed, checksum(0, &ph)),
                "seeded {:#x} vs concatenated {:#x}", with_seed, checksum(0, &ph));
        }

        /// Folding keeps the value modulo 0xffff (resp. 0xffff_ffff) and yields zero only
        /// for zero: what makes the partial sums safe to chain.
        #[test]
        fn folds_preserve_the_ones_complement_value(x in any::<u32>(), y in any::<u64>()) {
            prop_assert_eq!(fold(x) as u64 % 0xffff, x as u64 % 0xffff);
            prop_assert_eq!(fold(x) == 0, x == 0);
            prop_assert_eq!(fold64(y) as u64 % 0xffff_ffff, y % 0xffff_ffff);
            prop_assert_eq!(fold64(y) == 0, y == 0);
            // Deltas add like numbers modulo 0xffff.
            let (a, b) = (x, (y >> 3) as u32);
            prop_assert_eq!(fold(add(a, b)) as u64 % 0xffff, (a as u64 + b as u64) % 0xffff);
        }

        /// Any number of 16- and 32-bit rewrites (overlapping or not, as NAT of addresses,
        /// ports, quoted headers and their checksums does) gives the recomputed checksum,
        /// whether applied one by one (`replace*`) or accumulated into one delta (`add` of
        /// `diff*`, as `bpf_l4_csum_replace` with size 0 receives it).
        #[test]
        fn accumulated_rewrites_match_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 8..128),
            changes in proptest::collection::vec((any::<usize>(), any::<u32>(), any::<bool>()), 1..8),
        ) {
            let len = data.len() & !1;
            data.truncate(len);
            let before = checksum(0, &data);
            let (mut one_by_one, mut delta) = (before, 0u32);
            for (at, new, wide) in changes {
                if wide {
                    let off = (at % (len - 3)) & !1;
                    let old = word32(&data, off);
                    one_by_one = replace32(one_by_one, old, new);
                    delta = add(delta, diff32(old, new));
                    data[off..off + 4].copy_from_slice(&new.to_ne_bytes());
                } else {
                    let off = (at % (len - 1)) & !1;
                    let (old, new) = (word16(&data, off), new as u16);
                    one_by_one = replace16(one_by_one, old, new);
                    delta = add(delta, diff16(old, new));
                    data[off..off + 2].copy_from_slice(&new.to_ne_bytes());
                }
            }
            let full = checksum(0, &data);
            prop_assert!(same(one_by_one, full), "replace: {:#x} vs {:#x}", one_by_one, full);
            let applied = apply(before, delta);
            prop_assert!(same(applied, full), "delta: {:#x} vs {:#x}", applied, full);
        }
    }
}
