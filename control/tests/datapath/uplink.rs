//! `uplink_tc`: published ports (DNAT into the container, opened only by a bare SYN or a
//! datagram), replies to masqueraded flows, and everything else left to the host or dropped
//! (container addresses, container-network sources, expiring TTLs).

use std::net::Ipv4Addr;

use weir_common::{
    conntrack::{flags, state},
    stats::{DropReason, Event, Hook, Path},
};

use super::{
    assert_delivered, assert_to_host, assert_to_uplink, frame::*, harness::*, inbound, sent_by,
    topo::*,
};

const UT: Hook = Hook::UplinkTc;

#[test]
fn published_tcp_round_trip() {
    let mut dp = datapath();
    let syn = inbound(&Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, SYN));
    let r = dp.uplink_tc(&syn);
    let o = assert_delivered(&r, &B, "SYN in");
    assert_eq!((o.ip.src, o.ip.sport), (WORLD, 50000));
    assert_eq!((o.ip.dst, o.ip.dport), (B.ip, 80));
    assert_eq!(o.ip.ttl, 63, "routed into the container");
    assert_eq!(r.paths(), vec![Path::Published]);
    assert!(r.events().contains(&Event::DnatNew));
    let k = key(WORLD, 50000, UPLINK_IP, 8080, TCP);
    let e = dp.ct(k).expect("orig entry");
    assert_eq!(e.rewrite, key(WORLD, 50000, B.ip, 80, TCP));
    assert_ne!(e.flags & flags::DNAT, 0);
    assert_ne!(e.flags & flags::FROM_WORLD, 0);

    // B answers: back out from the published address, routed.
    let r = dp.from_container(
        &B,
        &sent_by(&B, &Ip::tcp(B.ip, 80, WORLD, 50000, SYN | ACK)),
    );
    let o = assert_to_uplink(&r, "SYN-ACK out");
    assert_eq!((o.ip.src, o.ip.sport), (UPLINK_IP, 8080));
    assert_eq!((o.ip.dst, o.ip.dport), (WORLD, 50000));
    assert_eq!(o.ip.ttl, 63);
    assert_eq!(r.paths(), vec![Path::PublishedReply]);
    // Replied, not established: a spoofed SYN gets this far, and must not hold an entry for
    // five days.
    assert_eq!(dp.ct(k).unwrap().state, state::REPLIED);

    // The rest of the connection, both ways, then FIN/RST close it.
    let r = dp.uplink_tc(&inbound(
        &Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, ACK).payload(b"GET /"),
    ));
    assert_eq!(assert_delivered(&r, &B, "data in").ip.dport, 80);
    assert_eq!(dp.ct(k).unwrap().state, state::ESTABLISHED);
    let r = dp.uplink_tc(&inbound(&Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, FIN | ACK)));
    assert_delivered(&r, &B, "FIN in");
    assert_eq!(dp.ct(k).unwrap().state, state::FIN_WAIT);
    let r = dp.from_container(
        &B,
        &sent_by(&B, &Ip::tcp(B.ip, 80, WORLD, 50000, FIN | ACK)),
    );
    assert_to_uplink(&r, "FIN out");
    assert_eq!(dp.ct(k).unwrap().state, state::CLOSED);
    // A new SYN on the closed tuple reopens it.
    let r = dp.uplink_tc(&syn);
    assert_delivered(&r, &B, "SYN reopening");
    assert!(r.events().contains(&Event::CtReopened));
    assert_eq!(dp.ct(k).unwrap().state, state::NEW);
}

#[test]
fn a_reset_flow_stays_closed() {
    let mut dp = datapath();
    let k = key(WORLD, 50000, UPLINK_IP, 8080, TCP);
    let syn = inbound(&Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, SYN));
    assert_delivered(&dp.uplink_tc(&syn), &B, "SYN");
    let rst = sent_by(&B, &Ip::tcp(B.ip, 80, WORLD, 50000, RST | ACK));
    assert_to_uplink(&dp.from_container(&B, &rst), "RST out");
    assert_eq!(dp.ct(k).unwrap().state, state::CLOSED);
    // Late segments still follow the entry, but a FIN does not revive it (a FIN_WAIT entry
    // would live 120 s instead of 10).
    let fin = inbound(&Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, FIN | ACK));
    assert_delivered(&dp.uplink_tc(&fin), &B, "late FIN");
    assert_eq!(dp.ct(k).unwrap().state, state::CLOSED);
    assert_eq!(
        dp.ct(k.reversed()).map(|e| e.state),
        None,
        "keys are per direction"
    );
    let rk = key(B.ip, 80, WORLD, 50000, TCP);
    assert_eq!(dp.ct(rk).unwrap().state, state::CLOSED);
}

#[test]
fn published_ports_open_only_on_a_bare_syn() {
    let mut dp = datapath();
    let flag_sets = [
        (SYN, true),
        (SYN | ECE | CWR, true), // ECN setup is a bare SYN as far as opening goes
        (SYN | PSH, true),
        (SYN | ACK, false),
        (ACK, false),
        (PSH | ACK, false),
        (FIN, false),
        (FIN | ACK, false),
        (RST, false),
        (RST | ACK, false),
        (SYN | RST, false),
        (SYN | FIN, false), // invalid: Linux discards it in LISTEN, conntrack calls it invalid
        (SYN | FIN | ACK, false),
        (0, false),
        (0xff, false),
    ];
    for (i, (fl, opens)) in flag_sets.into_iter().enumerate() {
        let sport = 50000 + i as u16;
        let what = format!("flags {fl:#04x}");
        let f = inbound(&Ip::tcp(WORLD, sport, UPLINK_IP, 8080, fl));
        let r = dp.uplink_tc(&f);
        let tracked = dp.ct(key(WORLD, sport, UPLINK_IP, 8080, TCP)).is_some();
        if opens {
            assert_eq!(assert_delivered(&r, &B, &what).ip.dport, 80);
            assert!(tracked, "{what}: flow created");
        } else {
            // Not for a container: the host stack answers (RST) or drops it.
            assert_to_host(&r, &f, &what);
            assert_eq!(r.paths(), vec![Path::UplinkToHost], "{what}");
            assert!(!tracked, "{what}: no flow may be created");
        }
    }
}

#[test]
fn published_udp_and_host_addresses() {
    let mut dp = datapath();
    // UDP, with a checksum and without (the zero stays zero through DNAT and back).
    for (i, ip) in [
        Ip::udp(WORLD, 50000, UPLINK_IP, 5353),
        Ip::udp(WORLD, 50001, UPLINK_IP, 5353).no_udp_csum(),
    ]
    .iter()
    .enumerate()
    {
        let r = dp.uplink_tc(&inbound(ip));
        let o = assert_delivered(&r, &B, &format!("udp {i}"));
        assert_eq!((o.ip.dst, o.ip.dport), (B.ip, 53));
        let mut rep = Ip::udp(B.ip, 53, WORLD, 50000 + i as u16);
        if i == 1 {
            assert_eq!(o.ip.l4_csum, 0);
            rep = rep.no_udp_csum();
        }
        let o = assert_to_uplink(&dp.from_container(&B, &sent_by(&B, &rep)), "udp reply");
        assert_eq!((o.ip.src, o.ip.sport), (UPLINK_IP, 5353));
        if i == 1 {
            assert_eq!(o.ip.l4_csum, 0);
        }
    }
    // An any-address publish answers on every host address; a host-IP publish on its own.
    let r = dp.uplink_tc(&inbound(&Ip::tcp(WORLD, 50002, GW1, 8080, SYN)));
    assert_eq!(assert_delivered(&r, &B, "8080 on a gateway").ip.dport, 80);
    let r = dp.uplink_tc(&inbound(&Ip::tcp(WORLD, 50003, UPLINK_IP, 2222, SYN)));
    assert_eq!(assert_delivered(&r, &A, "2222 on the uplink").ip.dport, 22);
    let f = inbound(&Ip::tcp(WORLD, 50004, GW1, 2222, SYN));
    assert_to_host(&dp.uplink_tc(&f), &f, "2222 on a gateway");
    // Unpublished ports and protocols belong to the host.
    for ip in [
        Ip::tcp(WORLD, 50005, UPLINK_IP, 22, SYN),
        Ip::udp(WORLD, 50005, UPLINK_IP, 53),
        Ip::tcp(WORLD, 50005, UPLINK_IP, 5353, SYN),
        Ip::echo(WORLD, UPLINK_IP, 77),
        Ip::raw(WORLD, UPLINK_IP, 47, b"gre-ish payload!"),
    ] {
        let f = inbound(&ip);
        let r = dp.uplink_tc(&f);
        assert_to_host(&r, &f, &format!("{:?}", ip.l4));
        assert_eq!(r.paths(), vec![Path::UplinkToHost]);
    }
    assert_eq!(dp.ct_len(), 2 * 4, "four flows opened");
}

#[test]
fn masquerade_replies_return_to_the_container() {
    let mut dp = datapath();
    let out = [
        Ip::tcp(A.ip, 40000, WORLD, 443, SYN),
        Ip::udp(A.ip, 40001, WORLD, 53),
        Ip::udp(A.ip, 40002, WORLD, 53).no_udp_csum(),
        Ip::echo(A.ip, WORLD, 0x4242),
    ];
    let back = [
        Ip::tcp(WORLD, 443, UPLINK_IP, 40000, SYN | ACK),
        Ip::udp(WORLD, 53, UPLINK_IP, 40001),
        Ip::udp(WORLD, 53, UPLINK_IP, 40002).no_udp_csum(),
        Ip::echo_reply(WORLD, UPLINK_IP, 0x4242),
    ];
    for (i, (o, b)) in out.iter().zip(&back).enumerate() {
        let what = format!("case {i}: {:?}", o.l4);
        assert_to_uplink(&dp.from_container(&A, &sent_by(&A, o)), &what);
        let r = dp.uplink_tc(&inbound(b));
        let got = assert_delivered(&r, &A, &what);
        assert_eq!(got.ip.src, WORLD, "{what}");
        assert_eq!(got.ip.dst, A.ip, "{what}");
        let sent = super::check::parse(&sent_by(&A, o));
        assert_eq!(
            got.ip.dport, sent.ip.sport,
            "{what}: port / echo id restored"
        );
        assert_eq!(got.ip.ttl, 63, "{what}");
        assert_eq!(r.paths(), vec![Path::EgressReply], "{what}");
        if i == 2 {
            assert_eq!(got.ip.l4_csum, 0);
        }
    }
    // A reply to a port nobody uses is the host's.
    let f = inbound(&Ip::tcp(WORLD, 443, UPLINK_IP, 40009, SYN | ACK));
    assert_to_host(&dp.uplink_tc(&f), &f, "unknown reply");
}

#[test]
fn containers_are_not_reachable_directly() {
    let mut dp = datapath();
    for (i, ip) in [
        Ip::tcp(WORLD, 50000, B.ip, 80, SYN),
        Ip::tcp(WORLD, 50000, B.ip, 80, ACK),
        Ip::udp(WORLD, 50000, B.ip, 53),
        Ip::echo(WORLD, A.ip, 1),
        Ip::raw(WORLD, D.ip, 47, b"gre-ish payload!"),
        // Addresses of a Weir network that no container holds, its broadcast among them.
        Ip::tcp(WORLD, 50000, NOBODY, 80, SYN),
        Ip::udp(WORLD, 50000, Ipv4Addr::new(10, 0, 0, 255), 53),
    ]
    .iter()
    .enumerate()
    {
        let r = dp.uplink_tc(&inbound(ip));
        r.assert_shot(DropReason::NotPublished, UT, &format!("case {i}"));
    }
    assert_eq!(dp.ct_len(), 0);
    // The gateways are the host's: world traffic to them is the host stack's business, as is
    // the world's broadcast and multicast (DHCP, mDNS on the uplink).
    for (what, ip) in [
        ("gateway", Ip::tcp(WORLD, 50000, GW1, 22, SYN)),
        ("broadcast", Ip::udp(NEXTHOP, 68, Ipv4Addr::BROADCAST, 67)),
        (
            "multicast",
            Ip::udp(NEXTHOP, 5353, Ipv4Addr::new(224, 0, 0, 251), 5353),
        ),
    ] {
        let f = inbound(&ip);
        assert_to_host(&dp.uplink_tc(&f), &f, what);
    }
}

#[test]
fn container_network_sources_from_the_world_are_spoofed() {
    let mut dp = datapath();
    for (i, ip) in [
        Ip::tcp(A.ip, 50000, UPLINK_IP, 8080, SYN),
        Ip::udp(NOBODY, 50000, UPLINK_IP, 5353),
        Ip::tcp(C.ip, 50000, B.ip, 80, SYN),
        Ip::tcp(GW1, 50000, UPLINK_IP, 8080, SYN),
        // The host's own address from the wire, to a published port: translated, the
        // container would take it for the host.
        Ip::udp(UPLINK_IP, 4444, UPLINK_IP, 5353),
        Ip::tcp(UPLINK_IP, 4444, UPLINK_IP, 8080, SYN),
        Ip::udp(UPLINK_IP, 4444, WORLD2, 5353),
    ]
    .iter()
    .enumerate()
    {
        let r = dp.uplink_tc(&inbound(ip));
        r.assert_shot(DropReason::SpoofedSource, UT, &format!("case {i}"));
    }
    assert_eq!(dp.ct_len(), 0);

    // Not even when the tuple matches a live flow between two containers: the world must
    // not inject into it.
    let f = sent_by(&A, &Ip::tcp(A.ip, 40000, B.ip, 80, SYN));
    assert_delivered(&dp.from_container(&A, &f), &B, "A -> B");
    for (i, ip) in [
        Ip::tcp(A.ip, 40000, B.ip, 80, ACK),
        Ip::tcp(B.ip, 80, A.ip, 40000, SYN | ACK),
        Ip::tcp(A.ip, 40000, B.ip, 80, RST),
    ]
    .iter()
    .enumerate()
    {
        let r = dp.uplink_tc(&inbound(ip));
        r.assert_shot(
            DropReason::SpoofedSource,
            UT,
            &format!("injection into a container flow, case {i}"),
        );
    }
    // Nor into a hairpin flow (A -> host:8080 -> B).
    let f = sent_by(&A, &Ip::tcp(A.ip, 40001, UPLINK_IP, 8080, SYN));
    assert_delivered(&dp.from_container(&A, &f), &B, "hairpin");
    let r = dp.uplink_tc(&inbound(&Ip::tcp(A.ip, 40001, UPLINK_IP, 8080, ACK)));
    r.assert_shot(
        DropReason::SpoofedSource,
        UT,
        "injection into a hairpin flow",
    );
}

#[test]
fn what_cannot_be_parsed_never_reaches_the_containers_side() {
    let mut dp = datapath();
    // The first fragment of a SYN too short to hold the TCP header, and a fragment of no known
    // datagram, both to an unpublished port of B: they do not parse, but they are dropped on
    // their address before any parsing — handed to the host stack, they would be forwarded to
    // B by a host that forwards.
    let syn = Ip::tcp(WORLD, 50000, B.ip, 22, SYN);
    let (first, later) = syn.fragments(8);
    for (what, f, reason) in [
        ("tiny first fragment", first, DropReason::NotPublished),
        ("unknown later fragment", later, DropReason::NotPublished),
    ] {
        let f = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &f);
        dp.uplink_tc(&f).assert_shot(reason, UT, what);
        dp.uplink_xdp(&f); // XDP judges by address alone: see xdp.rs
    }
    // The same to a host address is the host stack's to judge.
    let (first, _) = Ip::tcp(WORLD, 50000, UPLINK_IP, 22, SYN).fragments(8);
    let f = ip_frame(UPLINK_MAC, NEXTHOP_MAC, &first);
    assert_to_host(&dp.uplink_tc(&f), &f, "tiny first fragment to the host");
    assert_eq!(dp.ct_len(), 0);
}

#[test]
fn loopback_from_the_wire_is_martian() {
    let mut dp = datapath();
    // A port published on 127.0.0.1 is the host's alone (the sock hooks serve it).
    dp.publish(std::net::Ipv4Addr::LOCALHOST, TCP, 8090, &B, 80);
    for (what, ip) in [
        (
            "to a port published on 127.0.0.1",
            Ip::tcp(WORLD, 50000, std::net::Ipv4Addr::LOCALHOST, 8090, SYN),
        ),
        (
            "to a loopback address",
            Ip::udp(WORLD, 50000, std::net::Ipv4Addr::new(127, 0, 0, 53), 53),
        ),
        (
            "from a loopback address",
            Ip::tcp(std::net::Ipv4Addr::LOCALHOST, 50000, UPLINK_IP, 8080, SYN),
        ),
    ] {
        dp.uplink_tc(&inbound(&ip))
            .assert_shot(DropReason::Martian, UT, what);
    }
    // From a container, too.
    let f = sent_by(
        &A,
        &Ip::tcp(A.ip, 40000, std::net::Ipv4Addr::LOCALHOST, 8090, SYN),
    );
    dp.from_container(&A, &f).assert_shot(
        DropReason::Martian,
        Hook::FromContainer,
        "container to 127.0.0.1",
    );
    assert_eq!(dp.ct_len(), 0);
}

#[test]
fn expiring_ttl_is_dropped_on_the_way_in() {
    let mut dp = datapath();
    for ttl in [0u8, 1] {
        let r = dp.uplink_tc(&inbound(
            &Ip::tcp(WORLD, 50000 + ttl as u16, UPLINK_IP, 8080, SYN).ttl(ttl),
        ));
        r.assert_shot(
            DropReason::TtlExceeded,
            UT,
            &format!("published, TTL {ttl}"),
        );
    }
    assert_to_uplink(
        &dp.from_container(&A, &sent_by(&A, &Ip::udp(A.ip, 40000, WORLD, 53))),
        "out",
    );
    let r = dp.uplink_tc(&inbound(&Ip::udp(WORLD, 53, UPLINK_IP, 40000).ttl(1)));
    r.assert_shot(DropReason::TtlExceeded, UT, "reply, TTL 1");
    let r = dp.uplink_tc(&inbound(&Ip::udp(WORLD, 53, UPLINK_IP, 40000).ttl(2)));
    assert_eq!(assert_delivered(&r, &A, "reply, TTL 2").ip.ttl, 1);
}

#[test]
fn what_is_not_ipv4_is_the_hosts() {
    let mut dp = datapath();
    let ip = Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, SYN).bytes();
    // IPv6 goes to uplink_tc6, which finds it for no container: the host's, and counted so.
    let f = ipv6_frame(UPLINK_MAC, NEXTHOP_MAC);
    let r = dp.uplink_tc(&f);
    assert_to_host(&r, &f, "IPv6");
    assert_eq!(r.paths(), vec![Path::UplinkToHost], "IPv6: counted");
    for (what, f) in [
        (
            "ARP",
            arp(
                BROADCAST,
                NEXTHOP_MAC,
                ARP_REQUEST,
                NEXTHOP_MAC,
                NEXTHOP,
                [0; 6],
                UPLINK_IP,
            ),
        ),
        ("802.1Q", vlan_frame(UPLINK_MAC, NEXTHOP_MAC, 7, &ip)),
        ("LLDP", eth(UPLINK_MAC, NEXTHOP_MAC, 0x88cc, &[0u8; 40])),
    ] {
        let r = dp.uplink_tc(&f);
        assert_to_host(&r, &f, what);
        assert!(r.moved.is_empty(), "{what}: no counter");
    }
    assert_eq!(dp.ct_len(), 0);
}
