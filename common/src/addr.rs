//! Addresses and ports as the datapath stores them: in network byte order, exactly as they
//! appear in packets, so the eBPF side never swaps bytes.

/// An IPv4 address in network byte order (the in-memory bytes are the dotted quad).
pub type Ipv4Be = u32;
/// An IPv6 address as four words whose in-memory bytes are the address's, in order: the form
/// of `bpf_fib_lookup`'s and `bpf_sock_addr`'s fields, compared word by word (a `[u8; 16]`
/// would cost byte loads and loops the verifier must walk).
pub type Ipv6Be = [u32; 4];
/// A port (or ICMP echo identifier) in network byte order.
pub type PortBe = u16;

/// `a.b.c.d` as an [`Ipv4Be`].
pub const fn ipv4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Be {
    u32::from_ne_bytes([a, b, c, d])
}

/// The dotted-quad octets of an [`Ipv4Be`].
pub const fn octets(ip: Ipv4Be) -> [u8; 4] {
    ip.to_ne_bytes()
}

/// A host-order port as a [`PortBe`].
pub const fn port_be(port: u16) -> PortBe {
    port.to_be()
}

/// A [`PortBe`] back in host order.
pub const fn port_host(port: PortBe) -> u16 {
    u16::from_be(port)
}

/// 127.0.0.0/8.
pub const fn is_loopback(ip: Ipv4Be) -> bool {
    octets(ip)[0] == 127
}

/// 224.0.0.0/4 multicast or the limited broadcast address.
pub const fn is_multicast_or_broadcast(ip: Ipv4Be) -> bool {
    let o = octets(ip);
    (o[0] & 0xf0) == 0xe0 || ip == u32::MAX
}

/// The first two bytes of an [`Ipv6Be`] (what most special prefixes are judged by).
#[inline(always)]
const fn head6(ip: &Ipv6Be) -> [u8; 2] {
    let b = ip[0].to_ne_bytes();
    [b[0], b[1]]
}

/// `fe80::/10`: legal only for neighbour discovery, never for data (a data packet from it
/// would be routed as "not forwarded", i.e. to the host, past policy).
#[inline(always)]
pub const fn is_link_local6(ip: &Ipv6Be) -> bool {
    let h = head6(ip);
    h[0] == 0xfe && (h[1] & 0xc0) == 0x80
}

/// `ff00::/8`.
#[inline(always)]
pub const fn is_multicast6(ip: &Ipv6Be) -> bool {
    head6(ip)[0] == 0xff
}

/// `::`.
#[inline(always)]
pub const fn is_unspecified6(ip: &Ipv6Be) -> bool {
    ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == 0
}

/// `::1`, `::` and `::ffff:0:0/96` (IPv4-mapped): never a source or destination on a wire.
#[inline(always)]
pub const fn is_martian6(ip: &Ipv6Be) -> bool {
    ip[0] == 0 && ip[1] == 0 && (ip[2] == 0 || ip[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]))
}

/// The control plane's view of an [`Ipv6Be`].
#[cfg(any(feature = "std", test))]
pub fn from_std6(ip: std::net::Ipv6Addr) -> Ipv6Be {
    let o = ip.octets();
    core::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// An [`Ipv6Be`] as a `std` address.
#[cfg(any(feature = "std", test))]
pub fn to_std6(ip: Ipv6Be) -> std::net::Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in ip.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    std::net::Ipv6Addr::from(o)
}

/// The control plane's view of an [`Ipv4Be`].
#[cfg(any(feature = "std", test))]
pub fn from_std(ip: std::net::Ipv4Addr) -> Ipv4Be {
    u32::from_ne_bytes(ip.octets())
}

/// An [`Ipv4Be`] as a `std` address.
#[cfg(any(feature = "std", test))]
pub fn to_std(ip: Ipv4Be) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(octets(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ip = ipv4(10, 1, 2, 3);
        assert_eq!(octets(ip), [10, 1, 2, 3]);
        assert_eq!(to_std(ip), std::net::Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(from_std(std::net::Ipv4Addr::new(10, 1, 2, 3)), ip);
        assert_eq!(port_host(port_be(8080)), 8080);
        assert_eq!(port_be(0x1234).to_ne_bytes(), [0x12, 0x34]);
        assert!(is_loopback(ipv4(127, 0, 0, 53)));
        assert!(is_multicast_or_broadcast(ipv4(239, 1, 1, 1)));
        assert!(is_multicast_or_broadcast(ipv4(255, 255, 255, 255)));
        assert!(!is_multicast_or_broadcast(ipv4(10, 0, 0, 255)));
    }

    #[test]
    fn ipv6_prefixes() {
        let a = |s: &str| from_std6(s.parse().unwrap());
        assert_eq!(
            to_std6(a("fd00:1:2::3")),
            "fd00:1:2::3".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert!(is_link_local6(&a("fe80::1")));
        assert!(is_link_local6(&a("febf::1")));
        assert!(!is_link_local6(&a("fec0::1")));
        assert!(is_multicast6(&a("ff02::1:ff00:2")));
        assert!(!is_multicast6(&a("fd00::1")));
        assert!(is_unspecified6(&a("::")));
        for m in ["::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"] {
            assert!(is_martian6(&a(m)), "{m}");
        }
        for ok in ["fd00::1", "2001:db8::1", "64:ff9b::1"] {
            assert!(!is_martian6(&a(ok)), "{ok}");
        }
    }
}
