//! Bad lengths and headers, table-driven through all three programs: `from_container` drops
//! them as malformed, `uplink_tc` leaves them to the host stack (which validates and drops
//! what is not its own), `uplink_xdp` passes them on. Edge cases that are valid (IP options of
//! every length, Ethernet padding, long TCP headers) are forwarded and translated at the
//! right offsets.

use weir_common::stats::{DropReason, Hook, Path};

use super::{
    assert_delivered, assert_to_uplink,
    check::{parse, verify},
    frame::*,
    harness::*,
    topo::*,
};

/// Byte offsets inside an IPv4 packet (not the frame).
const TOT_LEN: usize = 2;
const IHL: usize = 0;

fn set16(p: &mut [u8], off: usize, v: u16) {
    p[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn fix_ip(p: &mut [u8]) {
    let hlen = ((p[IHL] & 0x0f) as usize * 4).clamp(20, p.len());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = super::check::csum(0, &p[..hlen]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Cuts the packet to `len` bytes and says so in its total length.
fn cut(p: &mut Vec<u8>, len: usize) {
    p.truncate(len);
    set16(p, TOT_LEN, len as u16);
    fix_ip(p);
}

type Mutation = fn(&mut Vec<u8>);

/// (name, base packet kind, mutation). Every one of them must be rejected as malformed.
fn malformed() -> Vec<(&'static str, char, Mutation)> {
    vec![
        ("IHL 0", 't', |p| {
            p[IHL] = 0x40;
            fix_ip(p)
        }),
        ("IHL 1", 't', |p| {
            p[IHL] = 0x41;
            fix_ip(p)
        }),
        ("IHL 4", 't', |p| {
            p[IHL] = 0x44;
            fix_ip(p)
        }),
        ("version 6 in an IPv4 frame", 't', |p| {
            p[IHL] = 0x65;
            fix_ip(p)
        }),
        ("version 0", 'u', |p| {
            p[IHL] = 0x05;
            fix_ip(p)
        }),
        ("header cut at 19 bytes", 't', |p| p.truncate(19)),
        ("header cut at 1 byte", 't', |p| p.truncate(1)),
        ("empty IP packet", 't', |p| p.clear()),
        ("total length beyond the frame", 't', |p| {
            let n = p.len() as u16 + 1;
            set16(p, TOT_LEN, n);
            fix_ip(p)
        }),
        ("total length 0xffff", 'u', |p| {
            set16(p, TOT_LEN, 0xffff);
            fix_ip(p)
        }),
        ("total length below the header", 't', |p| {
            set16(p, TOT_LEN, 19);
            fix_ip(p)
        }),
        ("total length 0", 'u', |p| {
            set16(p, TOT_LEN, 0);
            fix_ip(p)
        }),
        ("total length inside the options", 'o', |p| {
            set16(p, TOT_LEN, 22);
            fix_ip(p)
        }),
        ("options cut by the frame", 'o', |p| p.truncate(22)),
        ("IHL 15 without options in the frame", 't', |p| {
            p[IHL] = 0x4f;
            fix_ip(p)
        }),
        ("TCP header cut at 19 bytes", 't', |p| cut(p, 20 + 19)),
        ("TCP header cut at 0 bytes", 't', |p| cut(p, 20)),
        ("TCP data offset 4", 't', |p| {
            p[20 + 12] = 4 << 4;
        }),
        ("TCP data offset 0", 't', |p| {
            p[20 + 12] = 0;
        }),
        ("TCP data offset beyond the segment", 't', |p| {
            p[20 + 12] = 15 << 4;
        }),
        ("UDP header cut at 7 bytes", 'u', |p| cut(p, 20 + 7)),
        ("UDP length 7", 'u', |p| set16(p, 20 + 4, 7)),
        ("UDP length 0", 'u', |p| set16(p, 20 + 4, 0)),
        ("UDP length beyond the packet", 'u', |p| {
            let n = (p.len() - 20 + 1) as u16;
            set16(p, 20 + 4, n)
        }),
        ("ICMP header cut at 7 bytes", 'i', |p| cut(p, 20 + 7)),
    ]
}

/// The base packets: from `src` to `dst`, ports chosen per program.
fn base(kind: char, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, tcp: u16, udp: u16) -> Ip {
    match kind {
        't' => Ip::tcp(src, 40000, dst, tcp, SYN),
        'o' => Ip::tcp(src, 40000, dst, tcp, SYN).options(&[1; 8]),
        'u' => Ip::udp(src, 40000, dst, udp),
        'i' => Ip::echo(src, dst, 5),
        _ => unreachable!(),
    }
}

#[test]
fn malformed_headers_through_every_program() {
    let mut dp = datapath();
    let mut n = 0;
    for (name, kind, mutate) in malformed() {
        // Container A to container B.
        let mut p = base(kind, A.ip, B.ip, 80, 53).bytes();
        mutate(&mut p);
        let f = ip_frame(A.host_mac, A.mac, &p);
        if kernel_refuses_for_tc(p.len()) {
            let on = dp.ifindex_of(&A);
            assert!(dp.try_from_container_on(on, &f).is_err());
        } else {
            let r = dp.from_container(&A, &f);
            r.assert_shot(DropReason::Malformed, Hook::FromContainer, name);
        }

        // The world to a published port.
        let mut p = base(kind, WORLD, UPLINK_IP, 8080, 5353).bytes();
        mutate(&mut p);
        let f = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &p);
        if kernel_refuses_for_tc(p.len()) {
            assert!(dp.try_uplink_tc(&f).is_err());
        } else {
            let r = dp.uplink_tc(&f);
            super::assert_to_host(&r, &f, &format!("uplink_tc: {name}"));
        }
        let r = dp.uplink_xdp(&f);
        assert_eq!(r.verdict, XDP_PASS, "uplink_xdp: {name}");
        assert_eq!(r.frame, f, "uplink_xdp: {name}");
        assert!(r.drops().is_empty(), "uplink_xdp: {name}");
        n += 1;
    }
    assert_eq!(n, 25);
    assert_eq!(dp.ct_len(), 0, "nothing malformed may create a flow");
}

/// Ethernet + less than an IPv4 header: BPF_PROG_TEST_RUN for TC refuses these itself
/// (EINVAL: it reads the IPv4 header of ETH_P_IP frames before the program runs), so only
/// XDP sees them here.
fn kernel_refuses_for_tc(ip_len: usize) -> bool {
    ip_len < 20
}

#[test]
fn frames_too_short_for_the_kernel() {
    let mut dp = datapath();
    let fc = dp.ifindex_of(&A);
    for len in [0usize, 1, 13] {
        let f = vec![0u8; len];
        let e = dp.try_from_container_on(fc, &f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "tc, {len} bytes");
        let e = dp.try_uplink_xdp(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "xdp, {len} bytes");
    }
    for ip_len in 0..20usize {
        let f = eth(UPLINK_MAC, NEXTHOP_MAC, ETH_IP, &vec![0x45; ip_len]);
        assert!(kernel_refuses_for_tc(ip_len));
        let e = dp.try_from_container_on(fc, &f).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EINVAL),
            "tc, IP {ip_len} bytes"
        );
        let e = dp.try_uplink_tc(&f).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EINVAL),
            "tc, IP {ip_len} bytes"
        );
        // XDP runs on them and leaves them to the stack.
        let r = dp.uplink_xdp(&f);
        assert_eq!(
            (r.verdict, &r.frame),
            (XDP_PASS, &f),
            "xdp, IP {ip_len} bytes"
        );
    }
    // Other ethertypes are the programs' business from 14 bytes on.
    let f = eth(A.host_mac, A.mac, ETH_ARP, &[]);
    dp.from_container(&A, &f).assert_shot(
        DropReason::Malformed,
        Hook::FromContainer,
        "ARP, 14 bytes",
    );
    let f = eth(A.host_mac, A.mac, ETH_ARP, &[0, 1, 8, 0, 6, 4, 0, 1]);
    dp.from_container(&A, &f).assert_shot(
        DropReason::Malformed,
        Hook::FromContainer,
        "ARP, 22 bytes",
    );
    let f = eth(UPLINK_MAC, NEXTHOP_MAC, ETH_ARP, &[]);
    super::assert_to_host(&dp.uplink_tc(&f), &f, "ARP, 14 bytes");
}

#[test]
fn ip_options_of_every_length_are_honoured() {
    let mut dp = datapath();
    for words in 1..=10usize {
        let ihl = 5 + words;
        let opts = vec![1u8; words * 4]; // NOPs
        // Between containers: untouched but the MACs.
        let ip = Ip::tcp(A.ip, 40000 + ihl as u16, B.ip, 80, SYN).options(&opts);
        let f = super::sent_by(&A, &ip);
        let r = dp.from_container(&A, &f);
        assert_delivered(&r, &B, &format!("IHL {ihl} c2c"));
        assert_eq!(r.frame[12..], f[12..]);

        // Masqueraded: the port sits after the options, checksums stay right.
        let ip = Ip::udp(A.ip, 41000 + ihl as u16, WORLD, 53).options(&opts);
        let o = assert_to_uplink(
            &dp.from_container(&A, &super::sent_by(&A, &ip)),
            &format!("IHL {ihl} egress"),
        );
        assert_eq!(o.ip.ihl, ihl * 4);
        assert_eq!(
            (o.ip.src, o.ip.sport, o.ip.ttl),
            (UPLINK_IP, 41000 + ihl as u16, 63)
        );

        // Published: DNAT at the right offset.
        let ip = Ip::tcp(WORLD, 42000 + ihl as u16, UPLINK_IP, 8080, SYN).options(&opts);
        let o = assert_delivered(
            &dp.uplink_tc(&super::inbound(&ip)),
            &B,
            &format!("IHL {ihl} published"),
        );
        assert_eq!((o.ip.dst, o.ip.dport), (B.ip, 80));
        let r = dp.uplink_xdp(&super::inbound(&ip));
        assert_eq!(r.verdict, XDP_PASS);
    }
}

#[test]
fn padding_and_long_tcp_headers_are_valid() {
    let mut dp = datapath();
    // Ethernet padding (and any trailer) after the IP packet: forwarded, translated, kept.
    let ip = Ip::udp(WORLD, 50000, UPLINK_IP, 5353).payload(b"x");
    let mut f = super::inbound(&ip);
    let ip_len = f.len() - 14;
    f.resize(60, 0);
    f.extend_from_slice(&[0xab; 100]);
    let r = dp.uplink_tc(&f);
    let o = assert_delivered(&r, &B, "padded");
    assert_eq!((o.ip.dst, o.ip.dport, o.ip.tot_len), (B.ip, 53, ip_len));
    assert_eq!(r.frame.len(), f.len());
    assert_eq!(
        r.frame[14 + ip_len..],
        f[14 + ip_len..],
        "trailer untouched"
    );

    // From a container, padded past the frame it needs: the padding is cut off before the
    // route is judged, for the new flow and again once it is established, and what the path
    // counts is the datagram that leaves.
    let ip = Ip::udp(A.ip, 40001, WORLD, 5353).payload(b"x");
    let mut f = ip_frame(A.host_mac, A.mac, &ip.bytes());
    let frame_len = f.len();
    f.resize(1400, 0);
    for round in ["new", "established"] {
        let r = dp.from_container(&A, &f);
        let o = assert_to_uplink(&r, &format!("padded, {round}"));
        assert_eq!((o.ip.src, r.frame.len()), (UPLINK_IP, frame_len), "{round}");
        assert_eq!(
            r.path_bytes(Path::Egress),
            frame_len as u64,
            "{round}: bytes counted"
        );
    }

    // A TCP header with 40 bytes of options (data offset 15).
    let ip = Ip::tcp(A.ip, 40000, WORLD, 443, SYN);
    let mut p = ip.bytes();
    p.splice(40..40, [1u8; 40]); // NOP options
    p[20 + 12] = 15 << 4;
    let n = p.len() as u16;
    set16(&mut p, TOT_LEN, n);
    fix_ip(&mut p);
    // Recompute the TCP checksum over the longer header.
    p[36..38].copy_from_slice(&[0, 0]);
    let c = super::check::csum(super::check::pseudo(A.ip, WORLD, 6, p.len() - 20), &p[20..]);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    let f = ip_frame(A.host_mac, A.mac, &p);
    verify(&f, "input");
    let o = assert_to_uplink(&dp.from_container(&A, &f), "TCP options");
    assert_eq!(
        (o.ip.src, o.ip.sport, o.ip.tcp_flags),
        (UPLINK_IP, 40000, SYN)
    );
    assert_eq!(parse(&f).ip.tot_len, o.ip.tot_len);
}
