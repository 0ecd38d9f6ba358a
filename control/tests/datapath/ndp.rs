//! Neighbour discovery answered by from_container6: the advertisement's every field and its
//! ICMPv6 checksum, computed here independently of the datapath's arithmetic; and what is
//! never answered.

use std::net::Ipv6Addr;

use weir_common::stats::{DropReason, Hook, Path};

use super::{
    check::{csum, pseudo6},
    frame::{ETH_IPV6, eth},
    harness::{TC_ACT_REDIRECT, datapath},
    topo::A,
};

const FC: Hook = Hook::FromContainer;

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// An IPv6 frame from A carrying the ICMPv6 message `icmp` (its checksum computed here).
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut icmp: Vec<u8>) -> Vec<u8> {
    let len = icmp.len() as u32;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let c = csum(pseudo6(src, dst, len, 58), &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[58, hop_limit]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    eth([0x33, 0x33, 0xff, 0, 0, 1], A.mac, ETH_IPV6, &p)
}

/// A neighbour solicitation for `target`, with a Source-LLA option.
fn solicitation(target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&A.mac);
    m
}

const A6: &str = "fd00:a::2";
const GW6: &str = "fd00:a::1";
const A_LL: &str = "fe80::42:aff:fe00:2";

#[test]
fn solicitations_are_answered_with_a_valid_advertisement() {
    let mut dp = datapath();
    dp.give_ipv6(&A, ip(A6), ip(GW6));
    for (target, router) in [(GW6, true), ("fd00:a::33", false)] {
        let f = icmp6(
            ip(A_LL),
            ip("ff02::1:ff00:1"),
            255,
            solicitation(ip(target)),
        );
        let r = dp.from_container(&A, &f);
        assert_eq!(
            r.verdict,
            TC_ACT_REDIRECT,
            "NS for {target}: {:?}",
            r.drops()
        );
        assert_eq!(r.paths(), vec![Path::NdpReply]);
        let o = &r.frame;
        assert_eq!(o.len(), 14 + 40 + 32, "exactly the advertisement");
        assert_eq!(&o[0..6], &A.mac, "to A");
        assert_eq!(&o[6..12], &A.host_mac, "from the host side");
        assert_eq!(&o[12..14], &ETH_IPV6.to_be_bytes());
        let ipv6 = &o[14..54];
        assert_eq!(ipv6[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ipv6[4], ipv6[5]]), 32, "payload length");
        assert_eq!((ipv6[6], ipv6[7]), (58, 255), "ICMPv6, hop limit 255");
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ipv6[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ipv6[24..40]).unwrap());
        assert_eq!(
            (src, dst),
            (ip(target), ip(A_LL)),
            "from the target to the asker"
        );
        let na = &o[54..];
        assert_eq!((na[0], na[1]), (136, 0), "a neighbour advertisement");
        let flags = if router { 0xe0 } else { 0x60 };
        assert_eq!(na[4], flags, "R (gateway only), S, O");
        assert_eq!(&na[8..24], &ip(target).octets(), "target");
        assert_eq!(&na[24..26], &[2, 1], "Target link-layer address option");
        assert_eq!(&na[26..32], &A.host_mac);
        assert_eq!(csum(pseudo6(src, dst, 32, 58), na), 0, "ICMPv6 checksum");
    }
}

#[test]
fn what_is_never_answered() {
    let mut dp = datapath();
    dp.give_ipv6(&A, ip(A6), ip(GW6));
    let ns = |src: &str, hop: u8, target: &str| {
        icmp6(ip(src), ip("ff02::1:ff00:1"), hop, solicitation(ip(target)))
    };
    let ra = icmp6(
        ip(A_LL),
        ip("ff02::1"),
        255,
        vec![134, 0, 0, 0, 64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let rs = icmp6(ip(A_LL), ip("ff02::2"), 255, vec![133, 0, 0, 0, 0, 0, 0, 0]);
    let mut na = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    na.extend_from_slice(&ip(GW6).octets());
    let na = icmp6(ip(A_LL), ip("ff02::1"), 255, na);
    let mut redirect = vec![137, 0, 0, 0, 0, 0, 0, 0];
    redirect.extend_from_slice(&ip(GW6).octets());
    redirect.extend_from_slice(&ip("fd00:a::99").octets());
    let redirect = icmp6(ip(A_LL), ip(A6), 255, redirect);
    for (what, f, reason) in [
        (
            "duplicate-address probe",
            ns("::", 255, A6),
            DropReason::NdpInvalid,
        ),
        ("hop limit 254", ns(A_LL, 254, GW6), DropReason::NdpInvalid),
        (
            "for its own address",
            ns(A_LL, 255, A6),
            DropReason::NdpInvalid,
        ),
        (
            "for a multicast address",
            ns(A_LL, 255, "ff02::1"),
            DropReason::NdpInvalid,
        ),
        (
            "for a link-local address",
            ns(A_LL, 255, "fe80::1"),
            DropReason::LinkLocal,
        ),
        (
            "from another container's address",
            ns("fd00:a::77", 255, GW6),
            DropReason::SpoofedSource,
        ),
        ("router advertisement", ra, DropReason::NdpInvalid),
        ("router solicitation", rs, DropReason::NdpInvalid),
        ("neighbour advertisement", na, DropReason::NdpInvalid),
        ("redirect", redirect, DropReason::NdpInvalid),
    ] {
        dp.from_container(&A, &f).assert_shot(reason, FC, what);
    }
    // Nor from another MAC than the container's.
    let mut f = ns(A_LL, 255, GW6);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    dp.from_container(&A, &f)
        .assert_shot(DropReason::SpoofedSource, FC, "another MAC");
}
