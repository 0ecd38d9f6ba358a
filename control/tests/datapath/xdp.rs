//! `uplink_xdp`: drops what may never reach a container (traffic addressed to container
//! addresses, container-network sources) at the cheapest point; passes everything else,
//! untouched, to `uplink_tc` — with a metadata marker in front when it checked the addresses,
//! so that TC does not look them up again.

use weir_common::{
    stats::{DropReason, Hook},
    xdp_meta,
};

use super::{frame::*, harness::*, inbound, topo::*};

#[test]
fn drops_what_may_never_reach_a_container() {
    let mut dp = datapath();
    let cases = [
        (
            Ip::tcp(WORLD, 50000, B.ip, 80, SYN),
            DropReason::NotPublished,
        ),
        (Ip::udp(WORLD, 50000, A.ip, 53), DropReason::NotPublished),
        (Ip::echo(WORLD, D.ip, 1), DropReason::NotPublished),
        // An address of a Weir network that no container holds.
        (
            Ip::tcp(WORLD, 50000, NOBODY, 80, SYN),
            DropReason::NotPublished,
        ),
        (
            Ip::icmp_error(
                ROUTER,
                B.ip,
                ICMP_UNREACH,
                CODE_PORT_UNREACH,
                &Ip::udp(B.ip, 53, WORLD, 50000),
                None,
            ),
            DropReason::NotPublished,
        ),
        (
            Ip::tcp(A.ip, 50000, UPLINK_IP, 8080, SYN),
            DropReason::SpoofedSource,
        ),
        (
            Ip::udp(NOBODY, 50000, UPLINK_IP, 53),
            DropReason::SpoofedSource,
        ),
        (Ip::echo(GW2, UPLINK_IP, 1), DropReason::SpoofedSource),
        (
            Ip::udp(UPLINK_IP, 4444, UPLINK_IP, 5353),
            DropReason::SpoofedSource,
        ),
    ];
    for (i, (ip, reason)) in cases.iter().enumerate() {
        for opts in [&[][..], &[1u8; 12][..]] {
            let what = format!("case {i}, {} option bytes", opts.len());
            let r = dp.uplink_xdp(&inbound(&ip.clone().options(opts)));
            assert_eq!(r.verdict, XDP_DROP, "{what}");
            assert_eq!(r.drops(), vec![(*reason, Hook::UplinkXdp)], "{what}");
        }
    }
}

#[test]
fn passes_everything_else_untouched() {
    let mut dp = datapath();
    let ip_frames = [
        Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, SYN),
        Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, ACK),
        Ip::udp(WORLD, 50000, UPLINK_IP, 5353).no_udp_csum(),
        Ip::tcp(WORLD, 443, UPLINK_IP, 40000, SYN | ACK),
        Ip::echo_reply(WORLD, UPLINK_IP, 7),
        Ip::tcp(WORLD, 50000, UPLINK_IP, 22, SYN).ttl(1),
        Ip::raw(WORLD, UPLINK_IP, 47, b"gre-ish payload!"),
        // Neither source nor destination is on the containers' side (a gateway is the host's).
        Ip::tcp(WORLD, 50000, GW1, 80, SYN),
        Ip::tcp(WORLD, 50000, WORLD2, 80, SYN),
    ]
    .map(|ip| inbound(&ip));
    let raw = Ip::tcp(WORLD, 50000, B.ip, 80, SYN).bytes();
    let others = [
        ipv6_frame(UPLINK_MAC, NEXTHOP_MAC),
        arp(
            BROADCAST,
            NEXTHOP_MAC,
            ARP_REQUEST,
            NEXTHOP_MAC,
            NEXTHOP,
            [0; 6],
            UPLINK_IP,
        ),
        // Tagged frames are not parsed (the kernel drops VLANs nobody configured).
        vlan_frame(UPLINK_MAC, NEXTHOP_MAC, 5, &raw),
        eth(UPLINK_MAC, NEXTHOP_MAC, ETH_IP, &[]),
    ];
    // The plain variant (a kernel that refuses the metadata helper) never marks.
    let marks = dp.xdp == control::datapath::UPLINK_XDP;
    let marker = xdp_meta::ADDRESSES_PASSED.to_ne_bytes().to_vec();
    for (i, f) in ip_frames.iter().chain(&others).enumerate() {
        let r = dp.uplink_xdp(f);
        assert_eq!(r.verdict, XDP_PASS, "case {i}");
        assert_eq!(&r.frame, f, "case {i}");
        assert!(r.drops().is_empty(), "case {i}");
        // Only frames whose addresses it read and judged carry the marker.
        let checked = marks && i < ip_frames.len();
        let want = if checked { marker.clone() } else { Vec::new() };
        assert_eq!(r.meta, want, "case {i}: metadata");
    }
}
