//! Policy on new container flows (direct and through published ports): denied flows are
//! dropped with the level that decided, create no state, and no later packet of the same
//! tuple (whatever its flags) gets through.

use weir_common::{
    policy::{IDENTITY_ANY, VERDICT_ALLOW, VERDICT_DENY},
    stats::{DropReason, Hook},
};

use super::{assert_delivered, frame::*, harness::*, sent_by, topo::*};

const FC: Hook = Hook::FromContainer;

/// Every packet of the tuple src:sport -> dst:dport in every TCP state, and UDP/ICMP.
fn all_kinds(src: &Container, sport: u16, dst: std::net::Ipv4Addr, dport: u16) -> Vec<Ip> {
    let mut v: Vec<Ip> = [SYN, ACK, SYN | ACK, FIN | ACK, RST, PSH | ACK, 0]
        .into_iter()
        .map(|f| Ip::tcp(src.ip, sport, dst, dport, f))
        .collect();
    v.push(Ip::udp(src.ip, sport, dst, dport));
    v
}

#[test]
fn levels_decide_in_order() {
    let mut dp = datapath();
    // Network default: same network yes, other network no.
    let f = sent_by(&A, &Ip::tcp(A.ip, 40000, B.ip, 80, SYN));
    assert_delivered(&dp.from_container(&A, &f), &B, "same network");
    for ip in all_kinds(&A, 40001, C.ip, 80)
        .into_iter()
        .chain([Ip::echo(A.ip, C.ip, 9)])
    {
        dp.from_container(&A, &sent_by(&A, &ip)).assert_shot(
            DropReason::NetworkDenied,
            FC,
            &format!("A -> C {:?}", ip.l4),
        );
    }
    dp.connect_networks(N2, N1);
    let f = sent_by(&A, &Ip::tcp(A.ip, 40002, C.ip, 80, SYN));
    assert_delivered(&dp.from_container(&A, &f), &C, "connected networks");
    dp.flush_ct();

    // `isolate B`: nobody opens to B, B still opens out.
    dp.rule(IDENTITY_ANY, B.identity, 0, 0, VERDICT_DENY);
    for ip in all_kinds(&A, 40003, B.ip, 80) {
        dp.from_container(&A, &sent_by(&A, &ip)).assert_shot(
            DropReason::IsolatedDenied,
            FC,
            &format!("isolated B {:?}", ip.l4),
        );
    }
    let f = sent_by(&B, &Ip::tcp(B.ip, 40004, A.ip, 80, SYN));
    assert_delivered(&dp.from_container(&B, &f), &A, "isolated B opens out");

    // `allow A B --port 80/tcp` beats it, on that port only.
    dp.rule(A.identity, B.identity, TCP, 80, VERDICT_ALLOW);
    let f = sent_by(&A, &Ip::tcp(A.ip, 40005, B.ip, 80, SYN));
    assert_delivered(&dp.from_container(&A, &f), &B, "allowed port");
    let f = sent_by(&A, &Ip::tcp(A.ip, 40006, B.ip, 22, SYN));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::IsolatedDenied, FC, "other port");
    let f = sent_by(&A, &Ip::udp(A.ip, 40007, B.ip, 80));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::IsolatedDenied, FC, "other protocol");

    // A pair rule (`isolate B A`) decides before the isolation.
    dp.rule(B.identity, A.identity, 0, 0, VERDICT_DENY);
    let f = sent_by(&B, &Ip::tcp(B.ip, 40008, A.ip, 80, SYN));
    dp.from_container(&B, &f)
        .assert_shot(DropReason::PolicyDenied, FC, "pair rule");
    // A port rule deny beats a pair allow.
    dp.rule(A.identity, C.identity, 0, 0, VERDICT_ALLOW);
    dp.rule(A.identity, C.identity, UDP, 53, VERDICT_DENY);
    let f = sent_by(&A, &Ip::udp(A.ip, 40009, C.ip, 53));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::PolicyDenied, FC, "port deny");
}

#[test]
fn denied_flows_leave_no_state_and_stay_denied() {
    let mut dp = datapath();
    dp.rule(IDENTITY_ANY, B.identity, 0, 0, VERDICT_DENY);
    // Direct: every packet of the tuple.
    for ip in all_kinds(&A, 40000, B.ip, 80) {
        let r = dp.from_container(&A, &sent_by(&A, &ip));
        r.assert_shot(DropReason::IsolatedDenied, FC, &format!("{:?}", ip.l4));
        assert!(r.events().is_empty(), "no conntrack/NAT event");
    }
    // Through every host address's published port 8080 -> B:80: what may open a flow is
    // denied; the rest never reaches B (it is the host's, which has no such socket).
    for dst in [UPLINK_IP, GW1, GW2] {
        for ip in all_kinds(&A, 40000, dst, 8080)
            .into_iter()
            .filter(|ip| ip.proto() == TCP)
        {
            let what = format!("A -> {dst}:8080 {:?}", ip.l4);
            let f = sent_by(&A, &ip);
            let r = dp.from_container(&A, &f);
            let opens = matches!(ip.l4, L4::Tcp { flags, .. } if flags == SYN);
            if opens {
                r.assert_shot(DropReason::IsolatedDenied, FC, &what);
            } else {
                super::assert_to_host(&r, &f, &what);
            }
            assert!(r.events().is_empty(), "{what}: no conntrack/NAT event");
        }
    }
    assert_eq!(dp.ct_len(), 0);
    // Denied UDP datagrams to the published UDP port too, with and without checksum.
    for ip in [
        Ip::udp(A.ip, 40001, UPLINK_IP, 5353),
        Ip::udp(A.ip, 40001, UPLINK_IP, 5353).no_udp_csum(),
    ] {
        dp.from_container(&A, &sent_by(&A, &ip)).assert_shot(
            DropReason::IsolatedDenied,
            FC,
            "udp hairpin",
        );
    }
    // B's replies to a flow nobody opened are new flows B opens (allowed: B is isolated
    // inbound only), never a way in for A.
    let f = sent_by(&A, &Ip::tcp(A.ip, 40002, B.ip, 80, SYN | ACK));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::IsolatedDenied, FC, "SYN-ACK without flow");
    assert_eq!(dp.ct_len(), 0);
}

#[test]
fn established_flows_survive_but_new_ones_follow_new_rules() {
    let mut dp = datapath();
    let f = sent_by(&A, &Ip::tcp(A.ip, 40000, B.ip, 80, SYN));
    assert_delivered(&dp.from_container(&A, &f), &B, "before isolation");
    dp.rule(IDENTITY_ANY, B.identity, 0, 0, VERDICT_DENY);
    // Conntrack carries the existing flow (replies ride on it, as documented).
    let f = sent_by(&A, &Ip::tcp(A.ip, 40000, B.ip, 80, ACK));
    assert_delivered(&dp.from_container(&A, &f), &B, "established");
    let f = sent_by(&A, &Ip::tcp(A.ip, 40001, B.ip, 80, SYN));
    dp.from_container(&A, &f)
        .assert_shot(DropReason::IsolatedDenied, FC, "new flow");
}
