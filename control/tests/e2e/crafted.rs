//! Isolation under attack, with crafted packets (scapy) against a live instance: the bypasses
//! an adversarial review of the datapath found, each shown closed.
//!
//! - a host that forwards (Docker hosts set ip_forward=1) must still not let the world reach
//!   containers: neither with packets Weir cannot parse (a tiny first fragment) nor through
//!   another interface Weir does not watch — the kernel never forwards into a container;
//! - a port published on 127.0.0.1 is the host's alone;
//! - source routing through a gateway does not reach an isolated container;
//! - ICMP that belongs to no flow is never steered to a container or the world;
//! - a VLAN-tagged frame from a container goes nowhere;
//! - a flood of flows that never answer cannot hold the conntrack table.
//!
//! (Port-less protocols to the world, ICMP echo with identifier 0 and the host's own address
//! from the wire are covered frame by frame in datapath_unit.)

use std::time::Duration;

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, capture, net};

use crate::CONTROL;

#[test]
fn the_world_cannot_reach_containers_even_when_the_host_forwards() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.61.0.0/24", &[]);
    let c = s.container("c", &n, &[]);
    let c_ip = s.ip_of(&c);
    let _l = net::tcp_listener(&c, 22);
    // A host that forwards, and a world that routes the container subnet to it.
    s.host.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    s.ext
        .must(&["ip", "route", "add", "10.61.0.0/24", "via", UPLINK_IP]);
    assert!(
        !net::tcp_connects(&s.ext, &c_ip, 22, 2),
        "ext connected to an unpublished container port"
    );

    // A SYN in two fragments, the first too short to hold the TCP header: Weir cannot parse
    // it, and handed to the host stack it would be reassembled and forwarded into c.
    let (ext_mac, up_mac) = (capture::mac(&s.ext, "eth0"), capture::mac(&s.host, "up0"));
    let seen = capture::count_while(&c, "eth0", "tcp port 22", || {
        capture::scapy(
            &s.ext,
            &format!(
                "t = raw(IP(src='{EXT_IP}', dst='{c_ip}')/TCP(sport=5601, dport=22, flags='S'))[20:]\n\
                 e = Ether(src='{ext_mac}', dst='{up_mac}')\n\
                 sendp(e/IP(src='{EXT_IP}', dst='{c_ip}', id=4242, flags='MF', frag=0, proto=6)/Raw(t[:8]), iface='eth0')\n\
                 sendp(e/IP(src='{EXT_IP}', dst='{c_ip}', id=4242, frag=1, proto=6)/Raw(t[8:]), iface='eth0')"
            ),
        )
    });
    assert_eq!(seen, 0, "a fragmented SYN reached the container");
    assert!(
        s.drops("not-published") >= 2,
        "the fragments were not counted"
    );

    // Another interface Weir does not watch (a second NIC): the kernel forwards what arrives
    // there by the container's /32 route, and the egress program on c's veth drops it.
    let side = Netns::new(&rig::unique("side"));
    rig::must(&[
        "ip",
        "link",
        "add",
        "side0",
        "netns",
        &s.host.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &side.name,
    ]);
    s.host
        .must(&["ip", "addr", "add", "198.18.77.1/24", "dev", "side0"]);
    s.host.must(&["ip", "link", "set", "side0", "up"]);
    side.must(&["ip", "addr", "add", "198.18.77.2/24", "dev", "eth0"]);
    side.must(&["ip", "link", "set", "eth0", "up"]);
    side.must(&["ip", "route", "add", "default", "via", "198.18.77.1"]);
    let before = s.drops("kernel-forwarded");
    assert!(
        !net::tcp_connects(&side, &c_ip, 22, 2),
        "a network behind another host interface reached the container"
    );
    assert!(
        s.drops("kernel-forwarded") > before,
        "the kernel's forward into the container was not counted"
    );
    // The host itself still reaches the container (its own packets have no ingress device).
    assert!(
        net::tcp_connects(&s.host, &c_ip, 22, 3),
        "host -> container"
    );
}

#[test]
fn a_port_published_on_loopback_is_the_hosts_alone() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.62.0.0/24", &[]);
    let c = s.container("c", &n, &[]);
    let other = s.container("o", &n, &[]);
    let _web = net::http_server(&c, 80, "local only\n");
    s.ok(&["publish", &c.name, "8090:80", "--host-ip", "127.0.0.1"]);
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8090/", 5).as_deref(),
        Some("local only\n"),
        "the host reaches its loopback-published port"
    );
    assert!(net::curl(&s.ext, &format!("http://{UPLINK_IP}:8090/"), 2).is_none());
    assert!(net::curl(&other, &format!("http://{UPLINK_IP}:8090/"), 2).is_none());
    // A frame from the wire claiming 127.0.0.1 as destination.
    let (ext_mac, up_mac) = (capture::mac(&s.ext, "eth0"), capture::mac(&s.host, "up0"));
    let seen = capture::count_while(&c, "eth0", "tcp port 80", || {
        capture::scapy(
            &s.ext,
            &format!(
                "sendp(Ether(src='{ext_mac}', dst='{up_mac}')/IP(src='{EXT_IP}', dst='127.0.0.1')/TCP(sport=5700, dport=8090, flags='S'), iface='eth0', count=3)"
            ),
        )
    });
    assert_eq!(seen, 0, "the world reached a port published on 127.0.0.1");
    assert!(s.drops("martian-address") >= 3);
}

#[test]
fn source_routing_through_a_gateway_does_not_reach_an_isolated_container() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.63.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    s.ok(&["isolate", &a.name, &b.name]);
    let (a_ip, b_ip) = (s.ip_of(&a), s.ip_of(&b));
    // A host that accepts source routes wherever it is allowed to.
    s.host
        .must(&["sysctl", "-qw", "net.ipv4.conf.all.accept_source_route=1"]);
    let host_if = s.host_if_of(&a);
    let (a_mac, gw_mac) = (capture::mac(&a, "eth0"), capture::mac(&s.host, &host_if));
    let seen = capture::count_while(&b, "eth0", "tcp port 80", || {
        capture::scapy(
            &a,
            &format!(
                "sendp(Ether(src='{a_mac}', dst='{gw_mac}')/IP(src='{a_ip}', dst='10.63.0.1', options=[IPOption_LSRR(routers=['{b_ip}'])])/TCP(sport=4446, dport=80, flags='S'), iface='eth0', count=3)"
            ),
        )
    });
    assert_eq!(
        seen, 0,
        "a source-routed packet reached an isolated container"
    );
}

#[test]
fn icmp_without_a_flow_is_never_steered() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.66.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let (a_mac, gw_mac) = (capture::mac(&a, "eth0"), capture::host_mac_of(&s, &a));
    let (ext_mac, up_mac) = (capture::mac(&s.ext, "eth0"), capture::mac(&s.host, "up0"));
    // a sends a timestamp request (no identifier: it opens no flow), then an error about
    // nothing it was sent: neither leaves.
    let seen = capture::count_while(&s.ext, "eth0", "icmp", || {
        capture::scapy(
            &a,
            &format!(
                "e = Ether(src='{a_mac}', dst='{gw_mac}')\n\
                 sendp(e/IP(src='{a_ip}', dst='{EXT_IP}')/ICMP(type=13), iface='eth0')\n\
                 q = IP(src='{EXT_IP}', dst='{a_ip}')/UDP(sport=53, dport=9999)\n\
                 sendp(e/IP(src='{a_ip}', dst='{EXT_IP}')/ICMP(type=3, code=3)/raw(q)[:28], iface='eth0')"
            ),
        )
    });
    assert_eq!(
        seen, 0,
        "port-less ICMP from a container left for the world"
    );
    assert!(s.drops("icmp-untracked") >= 1);
    assert!(s.drops("icmp-error-unmatched") >= 1);
    // The world's errors about the host's own flows, and echo requests with identifier 0,
    // are the host's: none reaches a.
    let seen = capture::count_while(&a, "eth0", "icmp", || {
        capture::scapy(
            &s.ext,
            &format!(
                "e = Ether(src='{ext_mac}', dst='{up_mac}')\n\
                 q = IP(src='{UPLINK_IP}', dst='{EXT_IP}')/UDP(sport=41234, dport=53)\n\
                 sendp(e/IP(src='{EXT_IP}', dst='{UPLINK_IP}')/ICMP(type=3, code=3)/raw(q)[:28], iface='eth0')\n\
                 sendp(e/IP(src='{EXT_IP}', dst='{UPLINK_IP}')/ICMP(type=8, id=0, seq=1), iface='eth0')"
            ),
        )
    });
    assert_eq!(seen, 0, "ICMP for the host reached a container");
}

#[test]
fn a_vlan_tag_from_a_container_goes_nowhere() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.68.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let (a_mac, gw_mac) = (capture::mac(&a, "eth0"), capture::host_mac_of(&s, &a));
    let seen = capture::count_while(&s.ext, "eth0", "vlan or udp port 5000", || {
        capture::scapy(
            &a,
            &format!(
                "sendp(Ether(src='{a_mac}', dst='{gw_mac}')/Dot1Q(vlan=100)/IP(src='{a_ip}', dst='{EXT_IP}')/UDP(sport=7777, dport=5000), iface='eth0', count=3)"
            ),
        )
    });
    assert_eq!(seen, 0, "a tagged frame left through the uplink");
    assert!(s.drops("vlan-tagged") >= 1);
}

#[test]
fn a_flood_of_unanswered_flows_cannot_hold_the_conntrack_table() {
    let s = Sandbox::with_weir(CONTROL, &["--conntrack-max", "128"]);
    let n = s.network("n", "10.69.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let a_ip = s.ip_of(&a);
    let (a_mac, gw_mac) = (capture::mac(&a, "eth0"), capture::host_mac_of(&s, &a));
    let _web = net::http_server(&s.ext, 80, "ext\n");
    // 300 bare ACKs to ext from distinct ports: each is picked up mid-stream, none is ever a
    // two-way flow (ext answers with RSTs, which close them, or not at all).
    capture::scapy(
        &a,
        &format!(
            "sendp([Ether(src='{a_mac}', dst='{gw_mac}')/IP(src='{a_ip}', dst='198.18.0.99')/TCP(sport=p, dport=443, flags='A') for p in range(20000, 20300)], iface='eth0')"
        ),
    );
    let ct = s.json(&["conntrack"]);
    let flows = ct.as_array().unwrap();
    assert!(
        flows.iter().all(|f| f["state"] != "established"),
        "the flood established flows: {ct}"
    );
    assert!(
        s.drops("conntrack-insert-failed") > 0,
        "the table never filled"
    );
    // A real connection soon gets in again: the full table's sweep drops idle unconfirmed
    // entries after a few seconds, without waiting for their timeout.
    assert!(
        rig::wait_for(Duration::from_secs(20), || net::curl(
            &b,
            &format!("http://{EXT_IP}/"),
            2
        )
        .is_some()),
        "the table stayed full"
    );
}
