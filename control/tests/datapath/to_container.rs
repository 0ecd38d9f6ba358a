//! `to_container`: the host's own packets pass into a container; packets the kernel forwarded
//! there from any interface (so past every check Weir makes) are dropped.

use weir_common::stats::{DropReason, Hook};

use super::{frame::*, harness::*, topo::*};

/// What the host stack sends into B: from the host (a gateway address) and, forwarded by the
/// kernel, from the world.
fn to_b(src: std::net::Ipv4Addr) -> Vec<u8> {
    ip_frame(
        B.mac,
        B.host_mac,
        &Ip::tcp(src, 50000, B.ip, 22, SYN).bytes(),
    )
}

#[test]
fn the_hosts_own_packets_pass_untouched() {
    let mut dp = datapath();
    for (what, f) in [
        ("host TCP", to_b(GW1)),
        (
            "host ICMP",
            ip_frame(B.mac, B.host_mac, &Ip::echo(UPLINK_IP, B.ip, 3).bytes()),
        ),
        (
            "ARP",
            arp(
                B.mac,
                B.host_mac,
                ARP_REQUEST,
                B.host_mac,
                GW1,
                [0; 6],
                B.ip,
            ),
        ),
    ] {
        let r = dp.to_container(&B, 0, &f);
        assert_eq!(r.verdict, TC_ACT_OK, "{what}");
        assert_eq!(r.frame, f, "{what}: untouched");
        assert!(r.moved.is_empty(), "{what}: no counter");
    }
}

#[test]
fn kernel_forwarded_packets_are_dropped() {
    let mut dp = datapath();
    let from_a = dp.ifindex_of(&A);
    let uplink = dp.uplink_ifindex;
    for (what, iif, f) in [
        ("from the uplink", uplink, to_b(WORLD)),
        ("from another container's veth", from_a, to_b(A.ip)),
        ("from some other device", 999, to_b(WORLD2)),
        ("not even IPv4", uplink, ipv6_frame(B.mac, B.host_mac)),
    ] {
        dp.to_container(&B, iif, &f).assert_shot(
            DropReason::KernelForwarded,
            Hook::ToContainer,
            what,
        );
    }
}
