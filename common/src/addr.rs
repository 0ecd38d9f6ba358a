//! IPv4 addresses and ports as the datapath stores them: in network byte order, exactly
//! as they appear in packets, so the eBPF side never swaps bytes.

/// An IPv4 address in network byte order (the in-memory bytes are the dotted quad).
pub type Ipv4Be = u32;
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
}
