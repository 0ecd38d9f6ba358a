//! `from_container`: delivery to containers, masquerading to the world, hairpin to published
//! ports, the host itself, TTL handling, anti-spoofing and what is not IPv4 unicast.

use std::net::Ipv4Addr;

use weir_common::{
    config::Config,
    conntrack::{flags, state},
    policy::{IDENTITY_ANY, VERDICT_DENY},
    stats::{DropReason, Event, Hook, Path},
};

use super::{
    assert_delivered, assert_to_host, assert_to_uplink, check::parse, frame::*, harness::*,
    inbound, sent_by, topo::*,
};

const FC: Hook = Hook::FromContainer;

#[test]
fn container_to_container_keeps_the_packet_and_its_ttl() {
    let mut dp = datapath();
    for (i, ip) in [
        Ip::tcp(A.ip, 40000, B.ip, 80, SYN),
        Ip::udp(A.ip, 40001, B.ip, 53),
        Ip::udp(A.ip, 40002, B.ip, 53).no_udp_csum(),
        Ip::echo(A.ip, B.ip, 0x4242),
        Ip::raw(A.ip, B.ip, 47, b"gre-ish payload!"),
        // Delivery between containers is not routing: no TTL decrement, even at 1 or 0.
        Ip::tcp(A.ip, 40003, B.ip, 80, SYN).ttl(1),
        Ip::udp(A.ip, 40004, B.ip, 53).ttl(0),
    ]
    .iter()
    .enumerate()
    {
        let what = format!("case {i}: {:?}", ip.l4);
        let f = sent_by(&A, ip);
        let r = dp.from_container(&A, &f);
        assert_delivered(&r, &B, &what);
        // Only the MACs change.
        assert_eq!(r.frame[12..], f[12..], "{what}: bytes after the MACs");
        assert_eq!(r.paths(), vec![Path::ContainerToContainer], "{what}");
    }
    // The TCP flow is tracked both ways, untranslated; the handshake establishes it: the
    // reply alone leaves it replied (what a forged SYN would earn), the initiator's ACK
    // completes it.
    let k = key(A.ip, 40000, B.ip, 80, TCP);
    let e = dp.ct(k).expect("orig entry");
    assert_eq!(e.rewrite, k);
    assert_eq!(e.state, state::NEW);
    let reply = Ip::tcp(B.ip, 80, A.ip, 40000, SYN | ACK);
    let r = dp.from_container(&B, &sent_by(&B, &reply));
    assert_delivered(&r, &A, "reply");
    assert_eq!(dp.ct(k).unwrap().state, state::REPLIED);
    let ack = Ip::tcp(A.ip, 40000, B.ip, 80, ACK);
    assert_delivered(&dp.from_container(&A, &sent_by(&A, &ack)), &B, "ACK");
    assert_eq!(dp.ct(k).unwrap().state, state::ESTABLISHED);
    assert_eq!(dp.ct(k.reversed()).unwrap().state, state::ESTABLISHED);
}

#[test]
fn egress_is_masqueraded_routed_and_decrements_ttl() {
    let mut dp = datapath();
    // TCP, UDP (with and without checksum) and ICMP echo (port-less protocols: below).
    let cases = [
        Ip::tcp(A.ip, 40000, WORLD, 443, SYN),
        Ip::udp(A.ip, 40001, WORLD, 53),
        Ip::udp(A.ip, 40002, WORLD, 53).no_udp_csum(),
        Ip::echo(A.ip, WORLD, 0x4242),
    ];
    for (i, ip) in cases.iter().enumerate() {
        let what = format!("egress case {i}: {:?}", ip.l4);
        let f = sent_by(&A, ip);
        let r = dp.from_container(&A, &f);
        let o = assert_to_uplink(&r, &what);
        let sent = parse(&f);
        assert_eq!(o.ip.src, UPLINK_IP, "{what}: masqueraded source");
        assert_eq!(o.ip.dst, WORLD, "{what}");
        assert_eq!(o.ip.ttl, 63, "{what}: TTL");
        // The container's port (or echo identifier) is kept when free.
        assert_eq!(o.ip.sport, sent.ip.sport, "{what}: source port");
        assert_eq!(o.ip.dport, sent.ip.dport, "{what}: destination port");
        assert_eq!(r.paths(), vec![Path::Egress], "{what}");
        assert!(
            r.events().contains(&Event::SnatNew),
            "{what}: {:?}",
            r.events()
        );
        if i == 2 {
            assert_eq!(o.ip.l4_csum, 0, "UDP without checksum stays without");
        }
    }
    // The pair: container -> world rewritten to the uplink, world -> uplink back to the container.
    let k = key(A.ip, 40000, WORLD, 443, TCP);
    let e = dp.ct(k).expect("orig");
    assert_eq!(e.rewrite, key(UPLINK_IP, 40000, WORLD, 443, TCP));
    assert_ne!(e.flags & flags::SNAT, 0);
    let rep = dp.ct(e.rewrite.reversed()).expect("reply");
    assert_eq!(rep.rewrite, k.reversed());
    assert_ne!(rep.flags & flags::REPLY, 0);

    // Tracked packets take the same way.
    let r = dp.from_container(&A, &sent_by(&A, &Ip::tcp(A.ip, 40000, WORLD, 443, ACK)));
    let o = assert_to_uplink(&r, "tracked ACK");
    assert_eq!((o.ip.src, o.ip.sport), (UPLINK_IP, 40000));
    assert!(r.events().is_empty(), "no new flow: {:?}", r.events());
}

#[test]
fn protocols_without_ports_are_never_masqueraded() {
    let mut dp = datapath();
    // IP-in-IP, GRE, ESP, SCTP: the address alone would tell such a flow from the host's, so
    // its reply entry would take all of that protocol the peer sends the host.
    for proto in [4u8, 47, 50, 132] {
        let f = sent_by(&A, &Ip::raw(A.ip, WORLD, proto, b"tunnel payload!!"));
        dp.from_container(&A, &f).assert_shot(
            DropReason::UnsupportedL4,
            FC,
            &format!("protocol {proto} to the world"),
        );
    }
    assert_eq!(dp.ct_len(), 0, "none of them left an entry");
    // The peer's own GRE to the host stays the host's.
    let g = inbound(&Ip::raw(WORLD, UPLINK_IP, 47, b"the host's tunnel"));
    assert_to_host(&dp.uplink_tc(&g), &g, "the peer's GRE to the host");
    // Between containers they are delivered as before.
    let f = sent_by(&A, &Ip::raw(A.ip, B.ip, 47, b"tunnel payload!!"));
    assert_delivered(&dp.from_container(&A, &f), &B, "GRE to a neighbour");
}

#[test]
fn icmp_without_an_identifier_opens_no_catch_all_flow() {
    let mut dp = datapath();
    // An echo with identifier 0 has the key of every port-less ICMP message between two
    // hosts: it opens nothing to the world...
    dp.from_container(&A, &sent_by(&A, &Ip::echo(A.ip, WORLD, 0)))
        .assert_shot(DropReason::IcmpUntracked, FC, "echo id 0 to the world");
    assert_eq!(dp.ct_len(), 0);
    // ...so the world's timestamp requests and redirects stay the host's.
    for ty in [13u8, 5, 8] {
        let f = inbound(&Ip::icmp(WORLD, UPLINK_IP, ty, 0, 0));
        assert_to_host(
            &dp.uplink_tc(&f),
            &f,
            &format!("ICMP type {ty} id 0 to the host"),
        );
    }
    // Between containers they are delivered packet by packet, never tracked.
    for ip in [Ip::echo(A.ip, B.ip, 0), Ip::icmp(A.ip, B.ip, 13, 0, 0)] {
        let what = format!("{:?} to B", ip.l4);
        assert_delivered(&dp.from_container(&A, &sent_by(&A, &ip)), &B, &what);
    }
    assert_eq!(dp.ct_len(), 0, "untracked");
    // So under `isolate A` nothing of B's comes back through them as a "reply".
    dp.rule(IDENTITY_ANY, A.identity, 0, 0, VERDICT_DENY);
    for ip in [
        Ip::echo_reply(B.ip, A.ip, 0),
        Ip::icmp(B.ip, A.ip, 14, 0, 0),
        Ip::icmp(B.ip, A.ip, 13, 0, 0),
    ] {
        let what = format!("{:?} from B to isolated A", ip.l4);
        dp.from_container(&B, &sent_by(&B, &ip))
            .assert_shot(DropReason::IsolatedDenied, FC, &what);
    }
    // An echo with an identifier is still a flow, both ways.
    let r = dp.from_container(&A, &sent_by(&A, &Ip::echo(A.ip, B.ip, 0x77)));
    assert_delivered(&r, &B, "echo 0x77");
    let r = dp.from_container(&B, &sent_by(&B, &Ip::echo_reply(B.ip, A.ip, 0x77)));
    assert_delivered(&r, &A, "its reply");
}

#[test]
fn egress_port_collision_picks_another_port() {
    let mut dp = datapath();
    let a = Ip::tcp(A.ip, 40000, WORLD, 443, SYN);
    assert_to_uplink(&dp.from_container(&A, &sent_by(&A, &a)), "a");
    // B uses the same source port towards the same destination.
    let b = Ip::tcp(B.ip, 40000, WORLD, 443, SYN);
    let r = dp.from_container(&B, &sent_by(&B, &b));
    let o = assert_to_uplink(&r, "b");
    assert_eq!(o.ip.src, UPLINK_IP);
    assert_ne!(o.ip.sport, 40000, "b must not share a's tuple");
    let snat = Config::default();
    assert!(
        (snat.snat_port_min..=snat.snat_port_max).contains(&o.ip.sport),
        "port {}",
        o.ip.sport
    );
    assert!(r.events().contains(&Event::SnatPortRetry));
    // Replies to each port reach their own container.
    let ra = dp.uplink_tc(&inbound(&Ip::tcp(WORLD, 443, UPLINK_IP, 40000, SYN | ACK)));
    assert_eq!(assert_delivered(&ra, &A, "reply a").ip.dst, A.ip);
    let rb = dp.uplink_tc(&inbound(&Ip::tcp(
        WORLD,
        443,
        UPLINK_IP,
        o.ip.sport,
        SYN | ACK,
    )));
    let ob = assert_delivered(&rb, &B, "reply b");
    assert_eq!((ob.ip.dst, ob.ip.dport), (B.ip, 40000));
}

#[test]
fn a_container_port_the_host_may_pick_is_never_kept() {
    // Kept, the host's own connection from that port to the same destination would share the
    // tuple: its replies would go to the container (issue 17).
    let mut dp = datapath();
    for (what, ip) in [
        ("tcp", Ip::tcp(A.ip, HOST_OWNED_PORT, WORLD, 443, SYN)),
        ("udp", Ip::udp(A.ip, HOST_OWNED_PORT, WORLD, 53)),
    ] {
        let o = assert_to_uplink(&dp.from_container(&A, &sent_by(&A, &ip)), what);
        let (lo, hi) = HOST_EPHEMERAL;
        assert!(
            !(lo..=hi).contains(&o.ip.sport),
            "{what}: port {} is the host's",
            o.ip.sport
        );
        let r = dp.uplink_tc(&inbound(&match what {
            "tcp" => Ip::tcp(WORLD, 443, UPLINK_IP, o.ip.sport, SYN | ACK),
            _ => Ip::udp(WORLD, 53, UPLINK_IP, o.ip.sport),
        }));
        let back = assert_delivered(&r, &A, what);
        assert_eq!(back.ip.dport, HOST_OWNED_PORT, "{what}: reply restored");
    }
}

#[test]
fn without_a_configuration_containers_are_refused_and_the_uplink_is_the_hosts() {
    let mut dp = datapath();
    dp.wipe_config();
    let f = sent_by(&A, &Ip::udp(A.ip, 61000, WORLD, 53));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::NotInitialised, FC, "to the world");
    let f = sent_by(&A, &Ip::tcp(A.ip, 61001, B.ip, 80, SYN));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::NotInitialised, FC, "to a container");
    let ip = Ip::tcp(WORLD, 50000, UPLINK_IP, 8080, SYN);
    let f = inbound(&ip);
    assert_to_host(&dp.uplink_tc(&f), &f, "world to a published port");
}

#[test]
fn egress_through_an_unresolved_next_hop_uses_redirect_neigh() {
    let mut dp = datapath();
    let f = sent_by(&A, &Ip::udp(A.ip, 40000, WORLD_UNRESOLVED, 53));
    let r = dp.from_container(&A, &f);
    // bpf_redirect_neigh fills the MACs on transmit; the test run shows them untouched.
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    assert!(r.drops().is_empty());
    let o = parse(&r.frame);
    assert_eq!((o.dst_mac, o.src_mac), (A.host_mac, A.mac));
    assert_eq!((o.ip.src, o.ip.ttl), (UPLINK_IP, 63));
    super::check::verify(&r.frame, "redirect_neigh");
}

#[test]
fn expiring_ttl_is_left_to_the_host_which_answers_time_exceeded() {
    let mut dp = datapath();
    for ttl in [0, 1] {
        // A new flow to the world: untouched, not tracked.
        let f = sent_by(
            &A,
            &Ip::tcp(A.ip, 41000 + ttl as u16, WORLD, 443, SYN).ttl(ttl),
        );
        let r = dp.from_container(&A, &f);
        assert_to_host(&r, &f, &format!("new flow, TTL {ttl}"));
        assert!(
            dp.ct(key(A.ip, 41000 + ttl as u16, WORLD, 443, TCP))
                .is_none()
        );
    }
    // A tracked flow to the world too (before translation).
    let f = sent_by(&A, &Ip::udp(A.ip, 42000, WORLD, 53));
    assert_to_uplink(&dp.from_container(&A, &f), "opening");
    let f = sent_by(&A, &Ip::udp(A.ip, 42000, WORLD, 53).ttl(1));
    assert_to_host(&dp.from_container(&A, &f), &f, "tracked, TTL 1");
    // TTL 2 still leaves, with TTL 1.
    let f = sent_by(&A, &Ip::udp(A.ip, 42000, WORLD, 53).ttl(2));
    assert_eq!(
        assert_to_uplink(&dp.from_container(&A, &f), "TTL 2").ip.ttl,
        1
    );
}

#[test]
fn the_host_itself_gets_the_packet_untouched() {
    let mut dp = datapath();
    for (i, dst) in [GW1, UPLINK_IP, GW2].into_iter().enumerate() {
        let f = sent_by(&A, &Ip::tcp(A.ip, 40000 + i as u16, dst, 22, SYN));
        let r = dp.from_container(&A, &f);
        assert_to_host(&r, &f, &format!("to {dst}"));
        assert_eq!(r.paths(), vec![Path::ContainerToHost]);
    }
    // TTL 1 to the host is still local delivery.
    let f = sent_by(&A, &Ip::udp(A.ip, 40100, GW1, 53).ttl(1));
    assert_to_host(&dp.from_container(&A, &f), &f, "TTL 1 to the gateway");
}

#[test]
fn internal_networks_reach_only_their_gateway() {
    let mut dp = datapath();
    let f = sent_by(&D, &Ip::udp(D.ip, 40000, GW3, 53));
    assert_to_host(&dp.from_container(&D, &f), &f, "own gateway");
    for (i, (dst, ttl)) in [
        (WORLD, 64),
        (UPLINK_IP, 64),
        (GW1, 64),
        // An expiring TTL must not open a way around the rule.
        (UPLINK_IP, 1),
        (GW1, 1),
        (WORLD, 1),
        (WORLD, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let f = sent_by(&D, &Ip::tcp(D.ip, 40000 + i as u16, dst, 22, SYN).ttl(ttl));
        let r = dp.from_container(&D, &f);
        r.assert_shot(
            DropReason::InternalNetwork,
            FC,
            &format!("internal to {dst} TTL {ttl}"),
        );
    }
    // Published ports of other networks through a host address: policy says no.
    let f = sent_by(&D, &Ip::tcp(D.ip, 40100, UPLINK_IP, 8080, SYN));
    dp.from_container(&D, &f)
        .assert_shot(DropReason::NetworkDenied, FC, "internal hairpin");
}

#[test]
fn hairpin_to_a_published_port_is_dnated_to_the_container() {
    let mut dp = datapath();
    for (i, dst) in [UPLINK_IP, GW1, GW2].into_iter().enumerate() {
        let sport = 40000 + i as u16;
        let what = format!("A -> {dst}:8080");
        let f = sent_by(&A, &Ip::tcp(A.ip, sport, dst, 8080, SYN));
        let r = dp.from_container(&A, &f);
        let o = assert_delivered(&r, &B, &what);
        assert_eq!((o.ip.src, o.ip.sport), (A.ip, sport), "{what}");
        assert_eq!((o.ip.dst, o.ip.dport), (B.ip, 80), "{what}");
        assert_eq!(o.ip.ttl, 64, "{what}: not routed");
        assert_eq!(r.paths(), vec![Path::Hairpin], "{what}");
        assert!(r.events().contains(&Event::DnatNew));
        // B's answer comes back from the address A used.
        let rep = sent_by(&B, &Ip::tcp(B.ip, 80, A.ip, sport, SYN | ACK));
        let r = dp.from_container(&B, &rep);
        let o = assert_delivered(&r, &A, &format!("{what} reply"));
        assert_eq!((o.ip.src, o.ip.sport), (dst, 8080));
        assert_eq!((o.ip.dst, o.ip.dport), (A.ip, sport));
    }
    // UDP too, and a host-IP-specific publish.
    let f = sent_by(&A, &Ip::udp(A.ip, 40010, UPLINK_IP, 5353).no_udp_csum());
    let o = assert_delivered(&dp.from_container(&A, &f), &B, "udp hairpin");
    assert_eq!((o.ip.dst, o.ip.dport, o.ip.l4_csum), (B.ip, 53, 0));
    let f = sent_by(&B, &Ip::tcp(B.ip, 40011, UPLINK_IP, 2222, SYN));
    let o = assert_delivered(&dp.from_container(&B, &f), &A, "host-ip publish");
    assert_eq!((o.ip.dst, o.ip.dport), (A.ip, 22));
    // Published on the uplink address only: not on a gateway.
    let f = sent_by(&B, &Ip::tcp(B.ip, 40012, GW1, 2222, SYN));
    assert_to_host(&dp.from_container(&B, &f), &f, "2222 on the gateway");
}

#[test]
fn self_hairpin_comes_from_the_gateway() {
    let mut dp = datapath();
    let f = sent_by(&A, &Ip::tcp(A.ip, 40000, UPLINK_IP, 8081, SYN));
    let r = dp.from_container(&A, &f);
    let o = assert_delivered(&r, &A, "self hairpin");
    assert_eq!((o.ip.src, o.ip.sport), (GW1, 40000));
    assert_eq!((o.ip.dst, o.ip.dport), (A.ip, 81));
    let rep = sent_by(&A, &Ip::tcp(A.ip, 81, GW1, 40000, SYN | ACK));
    let o = assert_delivered(&dp.from_container(&A, &rep), &A, "self hairpin reply");
    assert_eq!((o.ip.src, o.ip.sport), (UPLINK_IP, 8081));
    assert_eq!((o.ip.dst, o.ip.dport), (A.ip, 40000));
}

#[test]
fn hairpin_opens_only_on_a_bare_syn() {
    let mut dp = datapath();
    for (i, fl) in [ACK, SYN | ACK, FIN, RST, SYN | FIN, SYN | RST, 0, PSH | ACK]
        .into_iter()
        .enumerate()
    {
        let sport = 41000 + i as u16;
        let f = sent_by(&A, &Ip::tcp(A.ip, sport, UPLINK_IP, 8080, fl));
        let r = dp.from_container(&A, &f);
        assert_to_host(&r, &f, &format!("flags {fl:#04x}"));
        assert!(dp.ct(key(A.ip, sport, UPLINK_IP, 8080, TCP)).is_none());
    }
    let f = sent_by(&A, &Ip::tcp(A.ip, 41100, UPLINK_IP, 8080, SYN | ECE | CWR));
    assert_delivered(&dp.from_container(&A, &f), &B, "ECN-setup SYN");
}

#[test]
fn spoofed_sources_never_pass() {
    let mut dp = datapath();
    let other_mac = [0x02, 0xba, 0xd0, 0, 0, 1];
    // (sent on the veth of, source address, source MAC)
    let spoofs = [
        (&A, B.ip, A.mac),     // a neighbour's address
        (&A, B.ip, B.mac),     // a neighbour's address and MAC
        (&A, NOBODY, A.mac),   // an unused address of the network
        (&A, A.ip, other_mac), // own address, another MAC
        (&B, A.ip, A.mac),     // A's identity on B's veth
        (&A, WORLD, A.mac),    // a world address
        (&A, GW1, A.mac),      // the gateway
        (&A, UPLINK_IP, A.mac),
        (&A, Ipv4Addr::UNSPECIFIED, A.mac),
    ];
    // Every destination kind: container, world, published port, host, multicast.
    let dsts = [
        (C.ip, 80),
        (B.ip, 80),
        (WORLD, 443),
        (UPLINK_IP, 8080),
        (GW1, 53),
        (Ipv4Addr::new(224, 0, 0, 251), 5353),
    ];
    let mut n = 0;
    for (on, src, mac) in spoofs {
        for (dst, port) in dsts {
            for ip in [
                Ip::tcp(src, 40000, dst, port, SYN),
                Ip::udp(src, 40000, dst, port),
                Ip::echo(src, dst, 7),
            ] {
                let f = ip_frame(on.host_mac, mac, &ip.bytes());
                let r = dp.from_container(on, &f);
                r.assert_shot(
                    DropReason::SpoofedSource,
                    FC,
                    &format!("{src} ({mac:02x?}) on {}'s veth to {dst}", on.name),
                );
                n += 1;
            }
        }
    }
    assert_eq!(n, 162);
    assert_eq!(dp.ct_len(), 0, "no flow may be created by a spoofed packet");
}

#[test]
fn multicast_broadcast_and_unknown_neighbours_are_dropped() {
    let mut dp = datapath();
    for (dst, reason) in [
        (Ipv4Addr::new(224, 0, 0, 1), DropReason::Multicast),
        (Ipv4Addr::new(239, 255, 255, 250), DropReason::Multicast),
        (Ipv4Addr::BROADCAST, DropReason::Multicast),
        // The subnet broadcast and unused addresses exist nowhere: never routed to the world.
        (Ipv4Addr::new(10, 0, 0, 255), DropReason::UnknownEndpoint),
        (NOBODY, DropReason::UnknownEndpoint),
        (Ipv4Addr::new(10, 1, 0, 77), DropReason::UnknownEndpoint),
    ] {
        let f = sent_by(&A, &Ip::udp(A.ip, 40000, dst, 1900));
        dp.from_container(&A, &f)
            .assert_shot(reason, FC, &format!("to {dst}"));
        // A broadcast MAC does not change anything.
        let mut f = f;
        f[..6].copy_from_slice(&BROADCAST);
        dp.from_container(&A, &f)
            .assert_shot(reason, FC, &format!("to {dst}, broadcast MAC"));
    }
}

#[test]
fn only_ipv4_ipv6_and_arp_are_accepted() {
    let mut dp = datapath();
    // IPv6 goes to from_container6, which knows no IPv6 address of A's: not its own.
    dp.from_container(&A, &ipv6_frame(A.host_mac, A.mac))
        .assert_shot(
            DropReason::SpoofedSource,
            FC,
            "IPv6 from a container without IPv6",
        );
    let ip = Ip::tcp(A.ip, 40000, B.ip, 80, SYN).bytes();
    for (what, f) in [
        ("802.1Q", vlan_frame(A.host_mac, A.mac, 100, &ip)),
        ("LLDP", eth(A.host_mac, A.mac, 0x88cc, &[0u8; 40])),
        ("802.3 length field", eth(A.host_mac, A.mac, 46, &[0u8; 46])),
    ] {
        dp.from_container(&A, &f)
            .assert_shot(DropReason::UnsupportedL3, FC, what);
    }
}
