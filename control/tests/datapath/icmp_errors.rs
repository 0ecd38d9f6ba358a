//! ICMP errors (port unreachable, fragmentation needed, time exceeded) about translated flows:
//! the outer header and the quoted one (addresses, ports or echo identifier) are translated
//! back, with every checksum valid — and forged errors never carry a packet where policy or
//! anti-spoofing would not.

use weir_common::stats::{DropReason, Hook, Path};

use super::{
    assert_delivered, assert_to_host, assert_to_uplink, check::Seen, frame::*, harness::*, inbound,
    sent_by, topo::*,
};

fn inner(o: &super::check::Out) -> &Seen {
    o.ip.inner.as_deref().expect("a quoted packet")
}

/// A and B both open TCP 40000 -> WORLD:443 (B's port gets translated), and UDP and echo
/// flows likewise. Returns B's translated TCP port, UDP port and echo identifier.
fn colliding_flows(dp: &mut Datapath) -> (u16, u16, u16) {
    let mut got = [0u16; 3];
    for (i, (a, b)) in [
        (
            Ip::tcp(A.ip, 40000, WORLD, 443, SYN),
            Ip::tcp(B.ip, 40000, WORLD, 443, SYN),
        ),
        (
            Ip::udp(A.ip, 40001, WORLD, 53),
            Ip::udp(B.ip, 40001, WORLD, 53),
        ),
        (Ip::echo(A.ip, WORLD, 0x4242), Ip::echo(B.ip, WORLD, 0x4242)),
    ]
    .iter()
    .enumerate()
    {
        assert_to_uplink(&dp.from_container(&A, &sent_by(&A, a)), "a out");
        let o = assert_to_uplink(&dp.from_container(&B, &sent_by(&B, b)), "b out");
        got[i] = o.ip.sport;
        assert_ne!(got[i], super::check::parse(&sent_by(&B, b)).ip.sport);
    }
    (got[0], got[1], got[2])
}

#[test]
fn errors_from_the_world_reach_the_container_translated() {
    let mut dp = datapath();
    let (tcp, udp, id) = colliding_flows(&mut dp);
    // What left the uplink for B, as a router or WORLD quotes it back (TTL as it expired).
    let q_tcp = Ip::tcp(UPLINK_IP, tcp, WORLD, 443, SYN).ttl(1);
    let q_udp = Ip::udp(UPLINK_IP, udp, WORLD, 53);
    let q_udp0 = Ip::udp(UPLINK_IP, udp, WORLD, 53).no_udp_csum();
    let q_echo = Ip::echo(UPLINK_IP, WORLD, id).ttl(1);
    let q_opts = Ip::tcp(UPLINK_IP, tcp, WORLD, 443, ACK).options(&[1; 8]);
    #[rustfmt::skip] // One row a line: a table.
    let cases = [
        ("time exceeded, TCP", ROUTER, ICMP_TIME_EXCEEDED, 0, &q_tcp, None),
        ("time exceeded, 8-byte TCP quote", ROUTER, ICMP_TIME_EXCEEDED, 0, &q_tcp, Some(28)),
        ("frag needed, TCP", ROUTER, ICMP_UNREACH, CODE_FRAG_NEEDED, &q_tcp, None),
        ("frag needed, quote with IP options", ROUTER, ICMP_UNREACH, CODE_FRAG_NEEDED, &q_opts, None),
        ("port unreachable, UDP", WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &q_udp, None),
        ("port unreachable, UDP without checksum", WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &q_udp0, None),
        ("time exceeded, echo", ROUTER, ICMP_TIME_EXCEEDED, 0, &q_echo, None),
        ("host unreachable, echo", ROUTER, ICMP_UNREACH, 1, &q_echo, None),
    ];
    for (what, from, ty, code, q, qlen) in cases {
        let err = Ip::icmp_error(from, UPLINK_IP, ty, code, q, qlen);
        let f = inbound(&err);
        let r = dp.uplink_tc(&f);
        let o = assert_delivered(&r, &B, what);
        assert_eq!(r.paths(), vec![Path::IcmpError], "{what}");
        assert_eq!(
            (o.ip.src, o.ip.dst, o.ip.ttl),
            (from, B.ip, 63),
            "{what}: outer"
        );
        assert_eq!((o.ip.icmp_type, o.ip.icmp_code), (ty, code), "{what}");
        let i = inner(&o);
        assert_eq!((i.src, i.dst), (B.ip, WORLD), "{what}: quoted addresses");
        match q.proto() {
            6 => assert_eq!((i.sport, i.dport), (40000, 443), "{what}: quoted ports"),
            17 => assert_eq!((i.sport, i.dport), (40001, 53), "{what}: quoted ports"),
            _ => assert_eq!(i.sport, 0x4242, "{what}: quoted identifier"),
        }
        assert_eq!(i.ttl, q.ttl, "{what}: quoted TTL untouched");
        if what.contains("without checksum") {
            assert_eq!(i.l4_csum, 0, "{what}: the quoted zero checksum stays zero");
        }
        // The rest of the ICMP header (next-hop MTU) is kept.
        assert_eq!(
            r.frame[14 + o.ip.ihl + 4..][..4],
            f[14 + 20 + 4..][..4],
            "{what}"
        );
    }
}

#[test]
fn errors_about_published_flows() {
    let mut dp = datapath();
    // WORLD -> host:5353/udp -> B:53, and WORLD -> host:8080 -> B:80 answered.
    let q_in = Ip::udp(WORLD, 50000, UPLINK_IP, 5353);
    assert_delivered(&dp.uplink_tc(&inbound(&q_in)), &B, "udp in");
    assert_delivered(
        &dp.uplink_tc(&inbound(&Ip::tcp(WORLD, 50001, UPLINK_IP, 8080, SYN))),
        &B,
        "syn in",
    );
    assert_to_uplink(
        &dp.from_container(
            &B,
            &sent_by(&B, &Ip::tcp(B.ip, 80, WORLD, 50001, SYN | ACK)),
        ),
        "syn-ack out",
    );

    // B has no socket on 53: its port unreachable leaves as the host's, about host:5353.
    let got = Ip::udp(WORLD, 50000, B.ip, 53).ttl(63);
    let err = Ip::icmp_error(B.ip, WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &got, None);
    let r = dp.from_container(&B, &sent_by(&B, &err));
    let o = assert_to_uplink(&r, "port unreachable out");
    assert_eq!(r.paths(), vec![Path::IcmpError]);
    assert_eq!((o.ip.src, o.ip.dst, o.ip.ttl), (UPLINK_IP, WORLD, 63));
    let i = inner(&o);
    assert_eq!(
        (i.src, i.sport, i.dst, i.dport),
        (WORLD, 50000, UPLINK_IP, 5353)
    );

    // A router on the way back says the SYN-ACK expired: B learns it about its own tuple.
    let q = Ip::tcp(UPLINK_IP, 8080, WORLD, 50001, SYN | ACK).ttl(1);
    let err = Ip::icmp_error(ROUTER, UPLINK_IP, ICMP_TIME_EXCEEDED, 0, &q, None);
    let o = assert_delivered(&dp.uplink_tc(&inbound(&err)), &B, "time exceeded in");
    assert_eq!((o.ip.src, o.ip.dst), (ROUTER, B.ip));
    let i = inner(&o);
    assert_eq!((i.src, i.sport, i.dst, i.dport), (B.ip, 80, WORLD, 50001));
}

#[test]
fn errors_from_containers_about_their_own_flows() {
    let mut dp = datapath();
    let (_, udp, _) = colliding_flows(&mut dp);
    // WORLD answers B's UDP flow; B's socket is gone: port unreachable about the reply.
    let o = assert_delivered(
        &dp.uplink_tc(&inbound(&Ip::udp(WORLD, 53, UPLINK_IP, udp))),
        &B,
        "reply in",
    );
    assert_eq!(o.ip.dport, 40001);
    let got = Ip::udp(WORLD, 53, B.ip, 40001).ttl(63);
    let err = Ip::icmp_error(B.ip, WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &got, None);
    let o = assert_to_uplink(&dp.from_container(&B, &sent_by(&B, &err)), "out");
    assert_eq!((o.ip.src, o.ip.dst), (UPLINK_IP, WORLD));
    let i = inner(&o);
    assert_eq!(
        (i.src, i.sport, i.dst, i.dport),
        (WORLD, 53, UPLINK_IP, udp)
    );

    // Between containers nothing is translated, the error just follows the flow.
    let b_to_a = Ip::udp(B.ip, 41000, A.ip, 53);
    assert_delivered(&dp.from_container(&B, &sent_by(&B, &b_to_a)), &A, "b -> a");
    let err = Ip::icmp_error(A.ip, B.ip, ICMP_UNREACH, CODE_PORT_UNREACH, &b_to_a, None);
    let f = sent_by(&A, &err);
    let r = dp.from_container(&A, &f);
    assert_delivered(&r, &B, "c2c error");
    assert_eq!(r.frame[12..], f[12..]);
}

#[test]
fn forged_errors_from_containers_follow_policy_and_masquerade() {
    let mut dp = datapath();
    // A <-> B flow, and A's masqueraded flow to WORLD.
    let b_to_a = Ip::udp(B.ip, 41000, A.ip, 53);
    assert_delivered(&dp.from_container(&B, &sent_by(&B, &b_to_a)), &A, "b -> a");
    assert_to_uplink(
        &dp.from_container(&A, &sent_by(&A, &Ip::tcp(A.ip, 40000, WORLD, 443, SYN))),
        "a -> world",
    );

    // C (another network, no policy to B) claims A's error about the B -> A datagram.
    let err = Ip::icmp_error(C.ip, B.ip, ICMP_UNREACH, CODE_PORT_UNREACH, &b_to_a, None);
    dp.from_container(&C, &sent_by(&C, &err)).assert_shot(
        DropReason::NetworkDenied,
        Hook::FromContainer,
        "C speaking for A to B",
    );
    // A itself, about that datagram, but to C: the error goes to whoever sent the quoted
    // packet, never elsewhere.
    let err = Ip::icmp_error(A.ip, C.ip, ICMP_UNREACH, CODE_PORT_UNREACH, &b_to_a, None);
    dp.from_container(&A, &sent_by(&A, &err)).assert_shot(
        DropReason::NetworkDenied,
        Hook::FromContainer,
        "A's error redirected to C",
    );
    // C about A's masqueraded flow, to WORLD: whatever happens, nothing leaves the uplink
    // with a container's address, outside or quoted.
    let got = Ip::tcp(WORLD, 443, A.ip, 40000, SYN | ACK);
    let err = Ip::icmp_error(C.ip, WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &got, None);
    dp.from_container(&C, &sent_by(&C, &err)).assert_shot(
        DropReason::IcmpErrorUnmatched,
        Hook::FromContainer,
        "C's error about A's masqueraded flow, to the world",
    );
    // A container's error about nothing it was sent never leaves either.
    let nothing = Ip::udp(WORLD, 53, A.ip, 45000);
    let err = Ip::icmp_error(A.ip, WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &nothing, None);
    dp.from_container(&A, &sent_by(&A, &err)).assert_shot(
        DropReason::IcmpErrorUnmatched,
        Hook::FromContainer,
        "an error about no flow, to the world",
    );
}

#[test]
fn forged_errors_from_the_world_do_not_reach_containers() {
    let mut dp = datapath();
    let b_to_a = Ip::udp(B.ip, 41000, A.ip, 53);
    assert_delivered(&dp.from_container(&B, &sent_by(&B, &b_to_a)), &A, "b -> a");
    let hairpin = Ip::tcp(A.ip, 40000, UPLINK_IP, 8080, SYN);
    assert_delivered(
        &dp.from_container(&A, &sent_by(&A, &hairpin)),
        &B,
        "hairpin",
    );

    // Addressed to a container, about a flow between containers.
    let q = Ip::udp(A.ip, 53, B.ip, 41000);
    let err = Ip::icmp_error(WORLD, A.ip, ICMP_UNREACH, CODE_PORT_UNREACH, &q, None);
    dp.uplink_tc(&inbound(&err)).assert_shot(
        DropReason::NotPublished,
        Hook::UplinkTc,
        "error to a container about a container flow",
    );
    // Addressed to the host, about a hairpin flow (what B's answer would look like, had it
    // left through the uplink).
    let q = Ip::tcp(UPLINK_IP, 8080, A.ip, 40000, SYN | ACK);
    let err = Ip::icmp_error(WORLD, UPLINK_IP, ICMP_UNREACH, CODE_PORT_UNREACH, &q, None);
    let f = inbound(&err);
    assert_to_host(
        &dp.uplink_tc(&f),
        &f,
        "error to the host about a hairpin flow",
    );
    // About a flow nobody has.
    let q = Ip::udp(UPLINK_IP, 49999, WORLD, 53);
    let err = Ip::icmp_error(WORLD, UPLINK_IP, ICMP_UNREACH, CODE_PORT_UNREACH, &q, None);
    let f = inbound(&err);
    assert_to_host(&dp.uplink_tc(&f), &f, "unknown flow");
}

#[test]
fn expiring_and_malformed_errors() {
    let mut dp = datapath();
    let (_, udp, _) = colliding_flows(&mut dp);
    let q = Ip::udp(UPLINK_IP, udp, WORLD, 53);
    // From the world with TTL 1 or 0: not routed into the container.
    for ttl in [0u8, 1] {
        let err = Ip::icmp_error(ROUTER, UPLINK_IP, ICMP_TIME_EXCEEDED, 0, &q, None).ttl(ttl);
        dp.uplink_tc(&inbound(&err)).assert_shot(
            DropReason::TtlExceeded,
            Hook::UplinkTc,
            &format!("in, TTL {ttl}"),
        );
    }
    // From a container with TTL 1 or 0: never routed out (nor with its TTL wrapped).
    assert_delivered(
        &dp.uplink_tc(&inbound(&Ip::udp(WORLD, 53, UPLINK_IP, udp))),
        &B,
        "reply in",
    );
    let got = Ip::udp(WORLD, 53, B.ip, 40001);
    for ttl in [0u8, 1] {
        let err = Ip::icmp_error(B.ip, WORLD, ICMP_UNREACH, CODE_PORT_UNREACH, &got, None).ttl(ttl);
        dp.from_container(&B, &sent_by(&B, &err)).assert_shot(
            DropReason::TtlExceeded,
            Hook::FromContainer,
            &format!("out, TTL {ttl}"),
        );
    }
    // Quotes too short for an IP header, or with a bad one.
    for (what, qlen) in [("12-byte quote", 12), ("19-byte quote", 19)] {
        let err = Ip::icmp_error(ROUTER, UPLINK_IP, ICMP_TIME_EXCEEDED, 0, &q, Some(qlen));
        dp.uplink_tc(&inbound(&err))
            .assert_shot(DropReason::Malformed, Hook::UplinkTc, what);
        let err = Ip::icmp_error(B.ip, WORLD, ICMP_UNREACH, 3, &got, Some(qlen));
        dp.from_container(&B, &sent_by(&B, &err)).assert_shot(
            DropReason::Malformed,
            Hook::FromContainer,
            what,
        );
    }
    let mut bad = Ip::icmp_error(ROUTER, UPLINK_IP, ICMP_TIME_EXCEEDED, 0, &q, None).bytes();
    bad[28] = 0x44; // quoted IHL 4
    let c = super::check::csum(0, &{
        let mut m = bad[20..].to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        m
    });
    bad[22..24].copy_from_slice(&c.to_be_bytes());
    dp.uplink_tc(&ip_frame(UPLINK_MAC, NEXTHOP_MAC, &bad))
        .assert_shot(DropReason::Malformed, Hook::UplinkTc, "quoted IHL 4");
    // A quote of the IP header alone (no L4 bytes) is not ours to translate.
    let err = Ip::icmp_error(ROUTER, UPLINK_IP, ICMP_TIME_EXCEEDED, 0, &q, Some(20));
    let f = inbound(&err);
    assert_to_host(&dp.uplink_tc(&f), &f, "20-byte quote");
}
