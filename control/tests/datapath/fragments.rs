//! Fragments: a first fragment carries the ports and decides; later fragments of the same
//! datagram follow its translation (ports remembered in WEIR_FRAGS); a later fragment
//! nobody announced is dropped (from containers) or left to the host (from the world).

use weir_common::stats::{DropReason, Hook};

use super::{
    assert_delivered, assert_to_host, assert_to_uplink,
    check::{csum, parse, pseudo},
    frame::*,
    harness::*,
    sent_by,
    topo::*,
};

fn payload() -> Vec<u8> {
    (0..100u8).collect()
}

/// The L4 bytes of an output fragment (IP payload up to its total length).
fn l4_of(frame: &[u8]) -> Vec<u8> {
    let o = parse(frame);
    frame[14 + o.ip.ihl..14 + o.ip.tot_len].to_vec()
}

/// Asserts the two output fragments form a UDP datagram with a valid checksum for the
/// addresses of the output, and returns its (sport, dport).
fn reassembled_udp(first: &[u8], later: &[u8]) -> (u16, u16) {
    let (f, l) = (parse(first), parse(later));
    assert_eq!((f.ip.src, f.ip.dst, f.ip.id), (l.ip.src, l.ip.dst, l.ip.id));
    assert_eq!(f.ip.frag & MF, MF);
    let mut d = l4_of(first);
    assert_eq!(d.len(), (l.ip.frag & 0x1fff) as usize * 8);
    d.extend(l4_of(later));
    assert_eq!(u16::from_be_bytes([d[4], d[5]]) as usize, d.len());
    let sum = csum(pseudo(f.ip.src, f.ip.dst, 17, d.len()), &d);
    assert!(
        sum == 0 || sum == 0xffff,
        "reassembled UDP checksum invalid"
    );
    super::check::verify(first, "first fragment");
    super::check::verify(later, "later fragment");
    (f.ip.sport, f.ip.dport)
}

#[test]
fn egress_fragments_follow_the_first() {
    let mut dp = datapath();
    // A takes 40000 so that B's datagram needs a new port: the first fragment's checksum
    // update then covers an address and a port.
    let a = Ip::udp(A.ip, 40000, WORLD, 53);
    assert_to_uplink(&dp.from_container(&A, &super::sent_by(&A, &a)), "a");
    let dg = Ip::udp(B.ip, 40000, WORLD, 53).payload(&payload());
    let (first, later) = dg.fragments(64);
    let r1 = dp.from_container(&B, &ip_frame(B.host_mac, B.mac, &first));
    let o1 = assert_to_uplink(&r1, "first fragment");
    let r2 = dp.from_container(&B, &ip_frame(B.host_mac, B.mac, &later));
    let o2 = assert_to_uplink(&r2, "later fragment");
    for o in [&o1, &o2] {
        assert_eq!((o.ip.src, o.ip.dst, o.ip.ttl), (UPLINK_IP, WORLD, 63));
    }
    let (sport, dport) = reassembled_udp(&r1.frame, &r2.frame);
    assert_ne!(sport, 40000);
    assert_eq!(dport, 53);
    // The later fragment's bytes (all payload) are untouched.
    assert_eq!(l4_of(&r2.frame), later[20..]);
}

#[test]
fn inbound_fragments_to_a_published_port() {
    let mut dp = datapath();
    let dg = Ip::udp(WORLD, 50000, UPLINK_IP, 5353).payload(&payload());
    let (first, later) = dg.fragments(32);
    let in1 = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &first);
    let in2 = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &later);
    assert_eq!(dp.uplink_xdp(&in1).verdict, XDP_PASS);
    let r1 = dp.uplink_tc(&in1);
    assert_delivered(&r1, &B, "first fragment");
    assert_eq!(dp.uplink_xdp(&in2).verdict, XDP_PASS);
    let r2 = dp.uplink_tc(&in2);
    let o2 = assert_delivered(&r2, &B, "later fragment");
    assert_eq!((o2.ip.dst, o2.ip.ttl), (B.ip, 63));
    assert_eq!(reassembled_udp(&r1.frame, &r2.frame), (50000, 53));
}

#[test]
fn fragments_between_containers() {
    let mut dp = datapath();
    let dg = Ip::udp(A.ip, 40000, B.ip, 53).payload(&payload());
    let (first, later) = dg.fragments(48);
    for (what, p) in [("first", &first), ("later", &later)] {
        let f = ip_frame(A.host_mac, A.mac, p);
        let r = dp.from_container(&A, &f);
        assert_delivered(&r, &B, what);
        assert_eq!(r.frame[12..], f[12..], "{what}: untouched");
    }
    // Denied by policy: the first fragment, and so every later one.
    let dg = Ip::udp(A.ip, 40001, C.ip, 53).payload(&payload());
    let (first, later) = dg.fragments(48);
    for (what, p) in [("first", &first), ("later", &later)] {
        let f = ip_frame(A.host_mac, A.mac, p);
        dp.from_container(&A, &f)
            .assert_shot(DropReason::NetworkDenied, Hook::FromContainer, what);
    }
}

#[test]
fn unannounced_and_tiny_fragments() {
    let mut dp = datapath();
    let mut dg = Ip::udp(A.ip, 40000, WORLD, 53).payload(&payload());
    dg.id = 0x7777;
    let (first, later) = dg.fragments(64);
    // The later fragment first (reordered, or its first was lost): nothing to follow.
    let f = ip_frame(A.host_mac, A.mac, &later);
    dp.from_container(&A, &f).assert_shot(
        DropReason::Fragment,
        Hook::FromContainer,
        "unannounced later",
    );
    // Same for the other protocols that have ports or an echo identifier; others have none.
    let mut tcp = Ip::tcp(A.ip, 40000, B.ip, 80, ACK).payload(&payload());
    tcp.id = 0x7778;
    let mut echo = Ip::echo(A.ip, B.ip, 3).payload(&payload());
    echo.id = 0x7779;
    for (what, ip) in [("tcp", tcp), ("icmp", echo)] {
        let (_, later) = ip.fragments(64);
        let f = ip_frame(A.host_mac, A.mac, &later);
        dp.from_container(&A, &f)
            .assert_shot(DropReason::Fragment, Hook::FromContainer, what);
    }
    // After the first, the same later fragment follows the flow.
    assert_to_uplink(
        &dp.from_container(&A, &ip_frame(A.host_mac, A.mac, &first)),
        "first",
    );
    let o = assert_to_uplink(&dp.from_container(&A, &f_later(&later)), "later");
    assert_eq!(o.ip.src, UPLINK_IP);

    // From the world, an unannounced later fragment is the host's (it reassembles its own).
    let mut dg = Ip::udp(WORLD, 50000, UPLINK_IP, 5353).payload(&payload());
    dg.id = 0x1111;
    let (_, later) = dg.fragments(64);
    let f = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &later);
    assert_to_host(&dp.uplink_tc(&f), &f, "unannounced later from the world");
    assert_eq!(dp.uplink_xdp(&f).verdict, XDP_PASS);

    // A first fragment too short for a TCP header (RFC 1858 tiny fragment).
    let tcp = Ip::tcp(A.ip, 40001, B.ip, 80, SYN).payload(&payload());
    let (tiny, _) = tcp.fragments(8);
    dp.from_container(&A, &ip_frame(A.host_mac, A.mac, &tiny))
        .assert_shot(DropReason::Malformed, Hook::FromContainer, "tiny first");
}

fn f_later(later: &[u8]) -> Vec<u8> {
    ip_frame(A.host_mac, A.mac, later)
}

#[test]
fn a_spoofed_first_fragment_steers_nothing() {
    let mut dp = datapath();
    // C forges the first fragment of a datagram from the world to A's masqueraded flow...
    assert_to_uplink(
        &dp.from_container(&A, &sent_by(&A, &Ip::udp(A.ip, 40100, WORLD, 5000))),
        "a -> world",
    );
    let mut forged = Ip::udp(WORLD, 5000, UPLINK_IP, 40100).payload(&payload());
    forged.id = 0x4242;
    let (first, _) = forged.fragments(32);
    dp.from_container(&C, &ip_frame(C.host_mac, C.mac, &first))
        .assert_shot(
            DropReason::SpoofedSource,
            Hook::FromContainer,
            "forged first",
        );
    // ...so the world's own later fragment with that id is still unannounced (the host's),
    // not steered by what C claimed.
    let (_, later) = forged.fragments(32);
    let f = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &later);
    assert_to_host(&dp.uplink_tc(&f), &f, "world's later fragment");
}

#[test]
fn echo_fragments_follow_the_identifier() {
    let mut dp = datapath();
    // A large ping from A to the world: the first fragment carries the identifier, the later
    // one follows its translation.
    let mut echo = Ip::echo(A.ip, WORLD, 7).payload(&payload());
    echo.id = 0x5151;
    let (first, later) = echo.fragments(64);
    let o1 = assert_to_uplink(
        &dp.from_container(&A, &ip_frame(A.host_mac, A.mac, &first)),
        "first",
    );
    let o2 = assert_to_uplink(
        &dp.from_container(&A, &ip_frame(A.host_mac, A.mac, &later)),
        "later",
    );
    assert_eq!((o1.ip.src, o2.ip.src), (UPLINK_IP, UPLINK_IP));
    // Between containers too.
    let mut echo = Ip::echo(A.ip, B.ip, 8).payload(&payload());
    echo.id = 0x5152;
    let (first, later) = echo.fragments(64);
    for (what, p) in [("first", &first), ("later", &later)] {
        assert_delivered(
            &dp.from_container(&A, &ip_frame(A.host_mac, A.mac, p)),
            &B,
            what,
        );
    }
}
