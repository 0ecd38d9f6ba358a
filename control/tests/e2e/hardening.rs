//! Hardening of NAT, policy and removal: masquerading never takes a published port or a
//! host socket's port (its replies would shadow them), an isolated container still reaches
//! itself through its own published port, large pings and a smaller uplink MTU work, and a
//! container being removed sends nothing past its filter while it goes (the link goes before
//! the filter: the other way round, the kernel forwarded it unfiltered).

use std::time::Duration;

use rig::{EXT_IP, Sandbox, UPLINK_IP, capture, net, text};

use crate::CONTROL;

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
        let leaked = capture::count_while(&s.ext, "eth0", "udp and src net 10.62.0.0/16", || {
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
