//! Isolation under attack: the bypasses an adversarial review of the datapath found, each
//! reproduced with crafted packets (scapy) against a live instance, and shown closed.
//!
//! - a host that forwards (Docker hosts set ip_forward=1) must still not let the world reach
//!   containers: neither with packets Weir cannot parse (a tiny first fragment) nor through
//!   another interface Weir does not watch — the kernel never forwards into a container;
//! - a port published on 127.0.0.1 is the host's alone;
//! - source routing through a gateway does not reach an isolated container;
//! - masquerading never takes a published port (its replies would shadow the port);
//! - an isolated container still reaches itself through its own published port;
//! - a container being removed sends nothing past its filter while it goes (the link goes
//!   before the filter: the other way round, the kernel forwarded it unfiltered).
//! - a container never holds a tuple the host's own stack may pick later: its UDP queries
//!   and TCP connects keep their replies while a container floods the host's ephemeral
//!   ports (issue 17);
//! - padded frames from an internal network do not leave when the uplink's MTU shrinks;
//!   nothing leaves the uplink from a Weir subnet untranslated; `init` gives containers the
//!   uplink's new MTU (issue 17).
//!
//! (Port-less protocols to the world, ICMP echo with identifier 0 and the host's own address
//! from the wire are covered frame by frame in datapath_unit.)

use std::time::Duration;

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

/// Runs a scapy script in `ns` (frames sent on its `iface`, to `dst_mac`).
fn scapy(ns: &Netns, script: &str) {
    let full = format!("from scapy.all import *\nconf.verb = 0\n{script}\n");
    // Debian's python3, which has python3-scapy (a pyenv python may come first on PATH).
    let o = ns.run(&["/usr/bin/python3", "-c", &full]);
    assert!(
        o.status.success(),
        "scapy in {}: {}{}",
        ns.name,
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn mac(ns: &Netns, dev: &str) -> String {
    ns.must(&["cat", &format!("/sys/class/net/{dev}/address")])
        .trim()
        .to_string()
}

/// Captures on `dev` in `ns` while `f` runs; returns how many packets matched `filter`.
fn captured(ns: &Netns, dev: &str, filter: &str, f: impl FnOnce()) -> usize {
    let pcap = std::env::temp_dir().join(rig::unique("weir-cap-"));
    let pcap_s = pcap.to_str().unwrap().to_string();
    let cap = ns.spawn(&["tcpdump", "-i", dev, "-n", "-U", "-w", &pcap_s, filter]);
    // tcpdump needs a moment before it captures.
    std::thread::sleep(Duration::from_millis(700));
    f();
    std::thread::sleep(Duration::from_millis(500));
    drop(cap.finish_within(Duration::from_millis(1)));
    let o = rig::run(&["tcpdump", "-n", "-r", &pcap_s]);
    let _ = std::fs::remove_file(&pcap);
    text(&o.stdout).lines().count()
}

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
    let (ext_mac, up_mac) = (mac(&s.ext, "eth0"), mac(&s.host, "up0"));
    let seen = captured(&c, "eth0", "tcp port 22", || {
        scapy(
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
    let (ext_mac, up_mac) = (mac(&s.ext, "eth0"), mac(&s.host, "up0"));
    let seen = captured(&c, "eth0", "tcp port 80", || {
        scapy(
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
    let (a_mac, gw_mac) = (mac(&a, "eth0"), mac(&s.host, &host_if));
    let seen = captured(&b, "eth0", "tcp port 80", || {
        scapy(
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
fn masquerade_never_takes_a_published_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.64.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let _echo = net::udp_echo(&b, 53);
    s.ok(&["publish", &b.name, "5353:53/udp"]);
    // ext answers each datagram with the source port it saw.
    let _ext = s.ext.spawn(&[
        "socat",
        "UDP4-RECVFROM:6000,fork,reuseaddr",
        "SYSTEM:echo $SOCAT_PEERPORT",
    ]);
    net::wait_listening(&s.ext, 6000, "udp");
    // a sends from the published port number itself (again if a busy machine lost it:
    // the same tuple, the same flow).
    let mut seen_port = String::new();
    for _ in 0..3 {
        let o = a.sh(&format!(
            "echo hi | timeout 3 socat -T2 - UDP4:{EXT_IP}:6000,sourceport=5353"
        ));
        seen_port = text(&o.stdout).trim().to_string();
        if !seen_port.is_empty() {
            break;
        }
    }
    assert!(!seen_port.is_empty(), "a's datagram got no answer");
    assert_ne!(seen_port, "5353", "masquerade kept a published port");
    // ext, from the very port a talked to, still reaches b through the published port.
    let o = s.ext.sh(&format!(
        "echo probe | timeout 3 socat -T2 - UDP4:{UPLINK_IP}:5353,sourceport=6000,reuseaddr"
    ));
    assert_eq!(
        text(&o.stdout).trim(),
        "probe",
        "the published port was shadowed"
    );
}

#[test]
fn an_isolated_container_reaches_itself_through_its_published_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.65.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let _web = net::http_server(&b, 80, "b\n");
    s.ok(&["publish", &b.name, "8080:80"]);
    s.ok(&["isolate", &b.name]);
    let url = format!("http://{UPLINK_IP}:8080/");
    assert_eq!(
        net::curl(&b, &url, 5).as_deref(),
        Some("b\n"),
        "b -> itself"
    );
    assert!(net::curl(&a, &url, 2).is_none(), "a reached isolated b");
}

// Round two of the review.

#[test]
fn icmp_without_a_flow_is_never_steered() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.66.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let (a_mac, gw_mac) = (mac(&a, "eth0"), host_mac_of(&s, &a));
    let (ext_mac, up_mac) = (mac(&s.ext, "eth0"), mac(&s.host, "up0"));
    // a sends a timestamp request (no identifier: it opens no flow), then an error about
    // nothing it was sent: neither leaves.
    let seen = captured(&s.ext, "eth0", "icmp", || {
        scapy(
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
    let seen = captured(&a, "eth0", "icmp", || {
        scapy(
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

/// The MAC of `c`'s host-side veth (its gateway, as `c` sees it).
fn host_mac_of(s: &Sandbox, c: &Netns) -> String {
    mac(&s.host, &s.host_if_of(c))
}

#[test]
fn masquerade_never_takes_a_host_sockets_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.67.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    // ext answers each UDP datagram and TCP connection with the source port it saw.
    let _u = s.ext.spawn(&[
        "socat",
        "UDP4-RECVFROM:53,fork,reuseaddr",
        "SYSTEM:echo $SOCAT_PEERPORT",
    ]);
    let _t = s.ext.spawn(&[
        "socat",
        "TCP4-LISTEN:7200,fork,reuseaddr",
        "SYSTEM:echo $SOCAT_PEERPORT; sleep 5",
    ]);
    net::wait_listening(&s.ext, 53, "udp");
    net::wait_listening(&s.ext, 7200, "tcp");
    // The host holds 61500/udp towards ext:53 and 61501/tcp towards ext:7200: ports outside
    // its ephemeral range (inside it, a container's port is never kept anyway), which only
    // the socket lookup protects.
    let _hu = s
        .host
        .spawn(&["socat", "-T30", "UDP4-LISTEN:61500,reuseaddr", "STDOUT"]);
    net::wait_listening(&s.host, 61500, "udp");
    let _ht = s.host.spawn(&[
        "sh",
        "-c",
        &format!("sleep 10 | socat - TCP4:{EXT_IP}:7200,sourceport=61501,reuseaddr"),
    ]);
    assert!(
        rig::wait_for(Duration::from_secs(5), || {
            text(
                &s.host
                    .run(&["ss", "-Htn", "state", "established", "sport", "= :61501"])
                    .stdout,
            )
            .contains(EXT_IP)
        }),
        "the host's connection did not start"
    );
    // a asks from the very same ports: it gets others.
    let o = a.sh(&format!(
        "echo hi | timeout 3 socat -T2 - UDP4:{EXT_IP}:53,sourceport=61500"
    ));
    let udp_port = text(&o.stdout).trim().to_string();
    assert!(!udp_port.is_empty(), "a's datagram got no answer");
    assert_ne!(
        udp_port, "61500",
        "masquerade took the host socket's UDP port"
    );
    let o = a.sh(&format!(
        "timeout 5 socat -T4 - TCP4:{EXT_IP}:7200,sourceport=61501,reuseaddr </dev/null | head -1"
    ));
    let tcp_port = text(&o.stdout).trim().to_string();
    assert!(!tcp_port.is_empty(), "a's connection got no answer");
    assert_ne!(
        tcp_port, "61501",
        "masquerade took the host connection's port"
    );
}

#[test]
fn a_vlan_tag_from_a_container_goes_nowhere() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.68.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let (a_mac, gw_mac) = (mac(&a, "eth0"), host_mac_of(&s, &a));
    let seen = captured(&s.ext, "eth0", "vlan or udp port 5000", || {
        scapy(
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
    let (a_mac, gw_mac) = (mac(&a, "eth0"), host_mac_of(&s, &a));
    let _web = net::http_server(&s.ext, 80, "ext\n");
    // 300 bare ACKs to ext from distinct ports: each is picked up mid-stream, none is ever a
    // two-way flow (ext answers with RSTs, which close them, or not at all).
    scapy(
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

#[test]
fn large_pings_and_a_smaller_uplink_mtu() {
    let s = Sandbox::new(CONTROL);
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1400"]);
    s.ext.must(&["ip", "link", "set", "eth0", "mtu", "1400"]);
    s.init(&[]);
    let n = s.network("n", "10.70.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let b_ip = s.ip_of(&b);
    // Containers get the uplink's MTU.
    let mtu = a.must(&["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400");
    // Fragmented echo requests and replies follow their identifier everywhere.
    for (what, from, to) in [
        ("container -> world", &a, EXT_IP),
        ("container -> container", &a, b_ip.as_str()),
        ("host -> container", &s.host, b_ip.as_str()),
    ] {
        let o = from.run(&["ping", "-c", "2", "-W", "2", "-s", "4000", to]);
        assert!(o.status.success(), "{what}: {}", text(&o.stdout));
    }
    // A container whose MTU is larger than the path learns the path's: "fragmentation
    // needed" comes back for a DF packet instead of a silent drop.
    // (Both ends: a veth drops frames larger than its receiving end's MTU.)
    a.must(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    let host_if = s.host_if_of(&a);
    s.host.must(&["ip", "link", "set", &host_if, "mtu", "1500"]);
    let o = a.run(&[
        "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1450", EXT_IP,
    ]);
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(
        out.contains("mtu = 1400") || out.contains("mtu=1400"),
        "no fragmentation needed: {out}"
    );
    // And a TCP transfer then completes at the path's MTU.
    let _srv = net::iperf_server(&s.ext, 5201);
    let r = net::iperf(&a, EXT_IP, 5201, &["-t", "2"]);
    assert!(net::iperf_bps(&r) > 1e7, "TCP across the smaller MTU: {r}");
}

/// Sends UDP datagrams to `dst:port` for `secs` seconds from each source address given
/// (IP_FREEBIND: the container does not hold the others, so they are spoofed), ignoring
/// errors (the container's link vanishes while it runs). Paced to some thousands a second:
/// the per-CPU backlog is shared by every namespace, and a full-speed flood would drop other
/// tests' packets.
const FLOOD: &str = r#"
import socket, sys, time
dst, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks = []
for a in sys.argv[4:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, 15, 1)
    s.bind((a, 0))
    socks.append(s)
end = time.time() + secs
while time.time() < end:
    for _ in range(8):
        for s in socks:
            try:
                s.sendto(b"leak?" * 4, (dst, port))
            except OSError:
                pass
    time.sleep(0.002)
"#;

/// One datagram to each of `n` ports of `dst`: `n` conntrack flows.
const FILL: &str = r#"
import socket, sys
dst, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for p in range(1, n + 1):
    try:
        s.sendto(b"x", (dst, 10000 + p))
    except OSError:
        pass
"#;

#[test]
fn nothing_leaves_unfiltered_while_a_container_is_removed() {
    // The removal takes a while (it walks the conntrack table for the container's flows):
    // had the filter gone before the link, the kernel would have routed whatever the
    // container sent meanwhile itself — unmasqueraded, from any source address, out of
    // internal networks. Any container-network source reaching ext is such a packet.
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.62.0.0/24", &[]);
    let internal = s.network("i", "10.62.1.0/24", &["--internal"]);
    let filler = s.container("f", &n, &[]);
    let o = filler.run(&["python3", "-c", FILL, EXT_IP, "20000"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let flows = s.json(&["conntrack"]).as_array().map_or(0, |a| a.len());
    assert!(flows >= 10_000, "the table holds {flows} flows");
    for round in 0..3 {
        let a = s.container(&format!("a{round}"), &n, &[]);
        let b = s.container(&format!("b{round}"), &internal, &[]);
        let (a_ip, b_ip) = (s.ip_of(&a), s.ip_of(&b));
        let egress = s.path_packets("egress-masquerade");
        let dropped = s.drops("internal-network") + s.drops("spoofed-source");
        let floods = [
            a.spawn(&[
                "python3",
                "-c",
                FLOOD,
                EXT_IP,
                "7777",
                "6",
                &a_ip,
                "10.62.0.250",
            ]),
            b.spawn(&["python3", "-c", FLOOD, EXT_IP, "7777", "6", &b_ip]),
        ];
        // Both are sending (masqueraded, refused) before they are removed.
        assert!(
            rig::wait_for(Duration::from_secs(5), || {
                s.path_packets("egress-masquerade") > egress + 1000
                    && s.drops("internal-network") + s.drops("spoofed-source") > dropped + 2000
            }),
            "round {round}: the floods did not start"
        );
        let leaked = captured(&s.ext, "eth0", "udp and src net 10.62.0.0/16", || {
            s.ok(&["container", "rm", &a.name]);
            s.ok(&["container", "rm", &b.name]);
        });
        drop(floods);
        assert_eq!(
            leaked, 0,
            "round {round}: {leaked} datagrams left with a container-network source"
        );
    }
}

/// Answers every UDP datagram on `port` with the datagram itself, in one process (a forking
/// echo could not keep up with a flood of new flows).
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"#;

/// One datagram to `dst:port` from every source port `lo..=hi` (each opens a flow).
const UDP_EVERY_PORT: &str = r#"
import socket, sys, time
dst, port, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for p in range(lo, hi + 1):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", p))
        s.sendto(b"q", (dst, port))
    except OSError:
        pass
    s.close()
    if p % 500 == 0:
        time.sleep(0.01)
"#;

/// `n` queries to `dst:port`, each from a port the kernel picks; prints how many were answered.
const UDP_QUERIES: &str = r#"
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    s.sendto(b"host %d" % i, (dst, port))
    try:
        ok += s.recv(64) == b"host %d" % i
    except OSError:
        pass
    s.close()
print(ok)
"#;

fn python(ns: &Netns, script: &str, args: &[&str]) -> String {
    let mut a = vec!["/usr/bin/python3", "-c", script];
    a.extend_from_slice(args);
    let o = ns.run(&a);
    assert!(
        o.status.success(),
        "python in {}: {}",
        ns.name,
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn host_ephemeral(ns: &Netns) -> (u16, u16) {
    let r = ns.must(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    let mut it = r.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn a_container_cannot_take_the_hosts_udp_replies() {
    // Issue 17: kept, a container's source ports inside the host's ephemeral range become
    // masquerade flows on the uplink address; the kernel, which cannot see them, later picks
    // the same ports for the host's own queries, and their answers went to the container.
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.71.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _echo = s.ext.spawn(&["/usr/bin/python3", "-c", UDP_ECHO, "53"]);
    net::wait_listening(&s.ext, 53, "udp");
    let (lo, hi) = host_ephemeral(&s.host);
    python(
        &a,
        UDP_EVERY_PORT,
        &[EXT_IP, "53", &lo.to_string(), &hi.to_string()],
    );
    let flows = s.json(&["conntrack"]);
    let held = flows.as_array().unwrap().len();
    assert!(
        held > (hi - lo) as usize / 2,
        "the flood opened only {held} flows"
    );
    let answered = python(&s.host, UDP_QUERIES, &[EXT_IP, "53", "5"]);
    assert_eq!(
        answered.trim(),
        "5",
        "the host's queries lost their answers"
    );
}

/// Accepts TCP connections on a port and holds every one open.
const TCP_HOLD: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"#;

/// Connects to `dst:port` from every source port `lo..=hi` and holds them until killed.
const TCP_EVERY_PORT: &str = r#"
import socket, sys, time
dst, port, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
held = []
for p in range(lo, hi + 1):
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.settimeout(2)
    try:
        c.bind(("0.0.0.0", p))
        c.connect((dst, port))
        held.append(c)
    except OSError:
        pass
time.sleep(120)
"#;

/// `n` connects to `dst:port` from kernel-picked ports; prints how many succeeded.
const TCP_CONNECTS: &str = r#"
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    c = socket.socket()
    c.settimeout(2)
    try:
        c.connect((dst, port))
        ok += 1
    except OSError:
        pass
    c.close()
print(ok)
"#;

#[test]
fn a_container_cannot_take_the_hosts_tcp_connections() {
    // The host's range, narrowed before init, is what Weir keeps clear of (read in the host's
    // own namespace); the container holds a connection from every port of it.
    let s = Sandbox::new(CONTROL);
    s.host
        .must(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40199"]);
    s.init(&[]);
    let n = s.network("n", "10.72.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _srv = s.ext.spawn(&["/usr/bin/python3", "-c", TCP_HOLD, "7300"]);
    net::wait_listening(&s.ext, 7300, "tcp");
    let _hold = a.spawn(&[
        "/usr/bin/python3",
        "-c",
        TCP_EVERY_PORT,
        EXT_IP,
        "7300",
        "40000",
        "40199",
    ]);
    let established = || {
        text(
            &a.run(&["ss", "-Htn", "state", "established", "dport", "= :7300"])
                .stdout,
        )
        .lines()
        .count()
    };
    assert!(
        rig::wait_for(Duration::from_secs(60), || established() == 200),
        "the container holds {} connections, not 200",
        established()
    );
    let ok = python(&s.host, TCP_CONNECTS, &[EXT_IP, "7300", "5"]);
    assert_eq!(ok.trim(), "5", "the host's connections failed");
}

/// Three small DF packets a scapy script in a container sends to `dst`, each padded with
/// trailing bytes to a 1450-byte frame: UDP, GRE (no ports) and an ICMP timestamp request.
fn padded_frames(src_mac: &str, gw_mac: &str, src: &str, dst: &str) -> String {
    format!(
        "e = Ether(src='{src_mac}', dst='{gw_mac}')\n\
         for l4 in [UDP(sport=7001, dport=7002)/b'u', GRE()/b'g', ICMP(type=13)]:\n\
         \x20   p = e/IP(src='{src}', dst='{dst}', flags='DF')/l4\n\
         \x20   sendp(p/Padding(b'\\x00' * (1450 - len(p))), iface='eth0')"
    )
}

#[test]
fn padded_frames_leave_no_internal_network_when_the_uplink_mtu_shrinks() {
    // Issue 17: the FIB lookup measured the padded frame as too big, and the packet went to
    // the host stack untranslated before the internal-network and protocol checks; the
    // kernel trimmed the padding and forwarded it.
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.73.0.0/24", &["--internal"]);
    let a = s.container("a", &n, &[]);
    let m = s.network("m", "10.74.0.0/24", &[]);
    let b = s.container("b", &m, &[]);
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1400"]);
    let (a_ip, b_ip) = (s.ip_of(&a), s.ip_of(&b));
    // Once with the next hop unresolved (the route lookup then skips its MTU check), once
    // resolved (it measures: the padded frame is "too big").
    for resolved in [false, true] {
        if resolved {
            assert!(net::ping(&s.host, EXT_IP, 1));
        } else {
            s.host.must(&["ip", "neigh", "flush", "dev", "up0"]);
        }
        let before = s.drops("internal-network");
        let seen = captured(&s.ext, "eth0", "ip", || {
            scapy(
                &a,
                &padded_frames(&mac(&a, "eth0"), &host_mac_of(&s, &a), &a_ip, EXT_IP),
            )
        });
        assert_eq!(
            seen, 0,
            "next hop resolved {resolved}: an internal network's padded packets left"
        );
        assert!(s.drops("internal-network") >= before + 3);
    }
    // On a network that may leave, the same UDP packet leaves trimmed and masqueraded; the
    // port-less two do not leave at all.
    let seen = captured(
        &s.ext,
        "eth0",
        &format!("src host {UPLINK_IP} and udp and less 100"),
        || {
            scapy(
                &b,
                &padded_frames(&mac(&b, "eth0"), &host_mac_of(&s, &b), &b_ip, EXT_IP),
            )
        },
    );
    assert_eq!(seen, 1, "the trimmed UDP packet, masqueraded");
    let seen = captured(
        &s.ext,
        "eth0",
        "src net 10.73.0.0/24 or src net 10.74.0.0/24",
        || {
            scapy(
                &b,
                &padded_frames(&mac(&b, "eth0"), &host_mac_of(&s, &b), &b_ip, EXT_IP),
            )
        },
    );
    assert_eq!(seen, 0, "untranslated packets left");
    // A real DF packet too big for the uplink, towards a next hop not yet resolved: answered
    // with "fragmentation needed", not sent over the smaller link.
    s.host.must(&["ip", "neigh", "flush", "dev", "up0"]);
    let o = b.run(&[
        "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1450", EXT_IP,
    ]);
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(
        out.contains("mtu = 1400") || out.contains("mtu=1400"),
        "no fragmentation needed before the next hop resolved: {out}"
    );
}

#[test]
fn nothing_leaves_the_uplink_from_a_weir_subnet_untranslated() {
    // The egress guard: whatever the host stack routes out of the uplink with a source in a
    // Weir network (here the host itself sends it) is dropped and counted.
    let s = Sandbox::with_weir(CONTROL, &[]);
    let _n = s.network("n", "10.75.0.0/24", &[]);
    let seen = captured(&s.ext, "eth0", "src net 10.75.0.0/24", || {
        scapy(
            &s.host,
            &format!(
                "for _ in range(3):\n\
                 \x20   try: send(IP(src='10.75.0.9', dst='{EXT_IP}')/UDP(sport=7001, dport=7002))\n\
                 \x20   except OSError: pass  # ENOBUFS: the egress program shot it"
            ),
        )
    });
    assert_eq!(seen, 0, "a Weir subnet's source left untranslated");
    assert!(s.drops("unmasqueraded-egress") >= 3);
    // The host's own traffic still leaves.
    assert!(net::ping(&s.host, EXT_IP, 1));
}

#[test]
fn init_gives_containers_a_shrunken_uplink_mtu() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.76.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let host_if = s.host_if_of(&a);
    let mtu = |ns: &Netns, dev: &str| ns.must(&["cat", &format!("/sys/class/net/{dev}/mtu")]);
    assert_eq!(mtu(&a, "eth0").trim(), "1500");
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1400"]);
    let out = s.init(&[]);
    assert!(out.contains("MTU"), "init said nothing of the MTU: {out}");
    assert_eq!(mtu(&a, "eth0").trim(), "1400", "container side");
    assert_eq!(mtu(&s.host, &host_if).trim(), "1400", "host side");
    // Once in step, init has nothing more to change.
    let out = s.init(&[]);
    assert!(!out.contains("MTU"), "{out}");
    // And traffic flows at the new MTU.
    let _srv = net::iperf_server(&s.ext, 5201);
    let r = net::iperf(&a, EXT_IP, 5201, &["-t", "1"]);
    assert!(net::iperf_bps(&r) > 1e7, "TCP after the MTU change: {r}");
}
