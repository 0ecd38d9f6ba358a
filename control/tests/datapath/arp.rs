//! ARP on the host-side veth: requests from the container's own IP and MAC are answered with
//! the host-side MAC (for every address: all traffic goes through `from_container`); anything
//! else is dropped with a reason.

use std::net::Ipv4Addr;

use weir_common::stats::{DropReason, Hook, Path};

use super::{frame::*, harness::*, topo::*};

const ZERO: [u8; 6] = [0; 6];

fn request(c: &Container, target: Ipv4Addr) -> Vec<u8> {
    arp(BROADCAST, c.mac, ARP_REQUEST, c.mac, c.ip, ZERO, target)
}

#[test]
fn requests_are_answered_with_the_host_side_mac() {
    let mut dp = datapath();
    for target in [GW1, B.ip, C.ip, WORLD, Ipv4Addr::new(8, 8, 8, 8), NOBODY] {
        let r = dp.from_container(&A, &request(&A, target));
        assert_eq!(r.verdict, TC_ACT_REDIRECT, "ARP for {target}");
        assert_eq!(r.paths(), vec![Path::ArpReply]);
        let want = arp(
            A.mac, A.host_mac, ARP_REPLY, A.host_mac, target, A.mac, A.ip,
        );
        assert_eq!(r.frame, want, "reply for {target}");
    }
    // A unicast (refresh) request is answered the same way.
    let f = arp(A.host_mac, A.mac, ARP_REQUEST, A.mac, A.ip, A.host_mac, GW1);
    assert_eq!(dp.from_container(&A, &f).verdict, TC_ACT_REDIRECT);
    // Ethernet padding after the ARP body does not matter.
    let mut f = request(&A, GW1);
    f.resize(60, 0);
    let r = dp.from_container(&A, &f);
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert_eq!(r.frame.len(), 60);
}

#[test]
fn everything_else_is_dropped() {
    let mut dp = datapath();
    let other = [0x02, 0xba, 0xd0, 0, 0, 1];
    let mut bad_htype = request(&A, GW1);
    bad_htype[15] = 6; // IEEE 802
    let mut bad_ptype = request(&A, GW1);
    bad_ptype[16..18].copy_from_slice(&ETH_IPV6.to_be_bytes());
    let mut bad_hlen = request(&A, GW1);
    bad_hlen[18] = 8;
    let mut bad_plen = request(&A, GW1);
    bad_plen[19] = 16;
    let mut rarp_op = request(&A, GW1);
    rarp_op[20..22].copy_from_slice(&3u16.to_be_bytes());
    let mut truncated = request(&A, GW1);
    truncated.truncate(14 + 27);

    let probe = Ipv4Addr::UNSPECIFIED;
    #[rustfmt::skip] // One row a line: a table.
    let cases: Vec<(&str, &Container, Vec<u8>, DropReason)> = vec![
        ("reply from the container", &A, arp(A.host_mac, A.mac, ARP_REPLY, A.mac, A.ip, A.host_mac, GW1), DropReason::ArpInvalid),
        ("gratuitous request", &A, arp(BROADCAST, A.mac, ARP_REQUEST, A.mac, A.ip, ZERO, A.ip), DropReason::ArpInvalid),
        ("gratuitous reply", &A, arp(BROADCAST, A.mac, ARP_REPLY, A.mac, A.ip, BROADCAST, A.ip), DropReason::ArpInvalid),
        ("hardware type", &A, bad_htype, DropReason::ArpInvalid),
        ("protocol type", &A, bad_ptype, DropReason::ArpInvalid),
        ("hardware length", &A, bad_hlen, DropReason::ArpInvalid),
        ("protocol length", &A, bad_plen, DropReason::ArpInvalid),
        ("RARP opcode", &A, rarp_op, DropReason::ArpInvalid),
        ("truncated", &A, truncated, DropReason::Malformed),
        ("a neighbour's address", &A, arp(BROADCAST, A.mac, ARP_REQUEST, A.mac, B.ip, ZERO, GW1), DropReason::SpoofedSource),
        ("an unused address (DAD probes come from 0.0.0.0)", &A, arp(BROADCAST, A.mac, ARP_REQUEST, A.mac, NOBODY, ZERO, GW1), DropReason::SpoofedSource),
        ("probe from 0.0.0.0", &A, arp(BROADCAST, A.mac, ARP_REQUEST, A.mac, probe, ZERO, A.ip), DropReason::SpoofedSource),
        ("another sender MAC", &A, arp(BROADCAST, A.mac, ARP_REQUEST, other, A.ip, ZERO, GW1), DropReason::SpoofedSource),
        ("another Ethernet source", &A, arp(BROADCAST, other, ARP_REQUEST, A.mac, A.ip, ZERO, GW1), DropReason::SpoofedSource),
        ("A's request on B's veth", &B, request(&A, GW1), DropReason::SpoofedSource),
    ];
    for (what, on, f, reason) in cases {
        let r = dp.from_container(on, &f);
        r.assert_shot(reason, Hook::FromContainer, what);
    }
}
