//! Issue #3: MASQUERADE and published ports (DNAT) in eBPF, with conntrack, in every
//! direction — and the kernel's netfilter and forwarding path out of the picture.

use std::{thread, time::Duration};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

/// A TCP server in `ns` answering each connection with the peer address it saw.
fn peer_echo(ns: &Netns, port: u16, hold_secs: u32) -> rig::Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        // socat splits addresses on ":", so the peer is printed as "ADDR PORT".
        &format!("SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT; sleep {hold_secs}"),
    ]);
    net::wait_listening(ns, port, "tcp");
    bg
}

/// Connects to `addr:port` from `ns` and returns the first line the server sends.
fn ask_peer(ns: &Netns, addr: &str, port: u16, extra: &str) -> String {
    let o = ns.sh(&format!(
        "timeout 5 socat -T4 - TCP4:{addr}:{port}{extra} </dev/null | head -1"
    ));
    text(&o.stdout).trim().to_string()
}

#[test]
fn masquerade_to_ext_with_replies_and_distinct_ports() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.50.0.0/24", &[]);
    let cs: Vec<Netns> = (0..3)
        .map(|i| s.container(&format!("c{i}"), &n, &[]))
        .collect();
    let _srv = peer_echo(&s.ext, 9000, 3);
    // Ext sees the uplink address as source.
    assert_eq!(
        ask_peer(&cs[0], EXT_IP, 9000, "").split(' ').next(),
        Some(UPLINK_IP)
    );
    // Three containers, same source port, same destination, at the same time: distinct ports.
    let clients: Vec<rig::Bg> = cs
        .iter()
        .map(|c| {
            c.spawn_piped(&[
                "sh",
                "-c",
                &format!("socat -T5 - TCP4:{EXT_IP}:9000,sourceport=40000 </dev/null | head -1"),
            ])
        })
        .collect();
    let seen: Vec<String> = clients
        .into_iter()
        .map(|b| {
            text(&b.finish_within(Duration::from_secs(10)).stdout)
                .trim()
                .to_string()
        })
        .collect();
    let mut ports: Vec<&str> = seen
        .iter()
        .map(|p| p.rsplit(' ').next().unwrap_or(""))
        .collect();
    assert!(
        seen.iter().all(|p| p.starts_with(&format!("{UPLINK_IP} "))),
        "{seen:?}"
    );
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "source ports collided: {seen:?}");
    assert!(
        ports.contains(&"40000"),
        "the first flow keeps its own port: {seen:?}"
    );
    let st = s.stats();
    assert!(st["events"]["snat-new"].as_u64().unwrap() >= 4);
    assert!(st["events"]["snat-port-retried"].as_u64().unwrap() >= 2);
    // ICMP echo through NAT (identifier translated).
    assert!(net::ping(&cs[1], EXT_IP, 2));
    // Tracked flows show the translation.
    let flows = s.json(&["conntrack"]);
    assert!(
        flows
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "masquerade"
                && f["translated"].as_str().unwrap().starts_with(UPLINK_IP))
    );
}

#[test]
fn internal_networks_have_no_egress() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.51.0.0/24", &["--internal"]);
    let c = s.container("c", &n, &[]);
    let _web = net::http_server(&s.ext, 80, "ext");
    assert!(net::curl(&c, &format!("http://{EXT_IP}/"), 2).is_none());
    assert!(s.drops("internal-network") > 0);
    // And it cannot be published.
    let e = s.fails(&["publish", &c.name, "8080:80"]);
    assert!(e.contains("internal"), "{e}");
    // It reaches the host at its gateway only, not at the host's other addresses.
    let _hweb = net::http_server(&s.host, 8001, "host");
    assert_eq!(
        net::curl(&c, "http://10.51.0.1:8001/", 5).as_deref(),
        Some("host")
    );
    assert!(net::curl(&c, &format!("http://{UPLINK_IP}:8001/"), 2).is_none());
}

#[test]
fn world_cannot_pose_as_a_container() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.72.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let _web = net::http_server(&b, 80, "b");
    s.ok(&["publish", &b.name, "8080:80"]);
    s.ok(&["isolate", &a.name, &b.name]);
    // ext claims a's address and connects to b's published port: b's replies would then be
    // delivered to a across the isolation. The uplink drops it.
    s.ext.must(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", s.ip_of(&a)),
        "dev",
        "eth0",
    ]);
    let before = s.drops("spoofed-source");
    let o = s.ext.run(&[
        "curl",
        "-s",
        "-m",
        "2",
        "--interface",
        &s.ip_of(&a),
        &format!("http://{UPLINK_IP}:8080/"),
    ]);
    assert!(!o.status.success(), "spoofed world client got an answer");
    assert!(s.drops("spoofed-source") > before);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("b")
    );
}

#[test]
fn published_port_reachable_from_everywhere() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.52.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let other = s.container("other", &n, &[]);
    let _srv = peer_echo(&web, 80, 0);
    let _udp = net::udp_echo(&web, 53);
    s.ok(&["publish", &web.name, "8080:80"]);
    s.ok(&["publish", &web.name, "5353:53/udp"]);
    let ports = s.json(&["ports"]);
    assert_eq!(ports.as_array().unwrap().len(), 2);
    // From ext through the uplink; the container sees the real client address.
    assert_eq!(
        ask_peer(&s.ext, UPLINK_IP, 8080, "").split(' ').next(),
        Some(EXT_IP)
    );
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 5353, "ping-ext", 3).as_deref(),
        Some("ping-ext")
    );
    // From the host itself: uplink address and loopback, TCP and UDP.
    for addr in [UPLINK_IP, "127.0.0.1"] {
        assert!(
            !ask_peer(&s.host, addr, 8080, "").is_empty(),
            "host -> {addr}:8080"
        );
        assert_eq!(
            net::udp_ask(&s.host, addr, 5353, "ping-host", 3).as_deref(),
            Some("ping-host"),
            "host -> {addr}:5353/udp"
        );
    }
    // Hairpin from another container, and from the container itself (through its gateway).
    assert!(!ask_peer(&other, UPLINK_IP, 8080, "").is_empty());
    assert_eq!(
        net::udp_ask(&other, UPLINK_IP, 5353, "ping-hairpin", 3).as_deref(),
        Some("ping-hairpin")
    );
    assert!(!ask_peer(&web, UPLINK_IP, 8080, "").is_empty());
    assert!(!ask_peer(&web, "10.52.0.1", 8080, "").is_empty());
    let st = s.stats();
    for p in [
        "published-in",
        "published-reply",
        "hairpin",
        "host-to-published",
    ] {
        assert!(
            st["paths"][p]["packets"].as_u64().unwrap() > 0,
            "path {p} unused: {st}"
        );
    }
}

#[test]
fn publish_conflicts_and_host_port_in_use() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.53.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    s.ok(&["publish", &a.name, "8080:80"]);
    // Again, identical: idempotent. To someone else: conflict.
    s.ok(&["publish", &a.name, "8080:80"]);
    let e = s.fails(&["publish", &b.name, "8080:81"]);
    assert!(e.contains("already published"), "{e}");
    let e = s.fails(&["publish", &b.name, "8080:80", "--host-ip", UPLINK_IP]);
    assert!(e.contains("already published"), "{e}");
    // Same number over UDP is a different port.
    s.ok(&["publish", &b.name, "8080:80/udp"]);
    // A host service listening on the port: refused with a clear message.
    let _listener = net::tcp_listener(&s.host, 9090);
    let e = s.fails(&["publish", &a.name, "9090:80"]);
    assert!(e.contains("in use"), "{e}");
    // Not a host address.
    let e = s.fails(&["publish", &a.name, "9091:80", "--host-ip", "192.0.2.1"]);
    assert!(e.contains("not an address of the host"), "{e}");
    assert_eq!(
        s.json(&["ports"]).as_array().unwrap().len(),
        2,
        "failed publishes left entries"
    );
}

#[test]
fn unpublish_cuts_new_connections_at_once() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.54.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let _srv = net::http_server(&web, 80, "up");
    s.ok(&["publish", &web.name, "8080:80"]);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("up")
    );
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("up")
    );
    s.ok(&["unpublish", &web.name, "8080"]);
    assert!(net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 2).is_none());
    assert!(net::curl(&s.host, "http://127.0.0.1:8080/", 2).is_none());
    assert!(s.json(&["ports"]).as_array().unwrap().is_empty());
    let e = s.fails(&["unpublish", &web.name, "8080"]);
    assert!(e.contains("no published host port"), "{e}");
}

#[test]
fn netfilter_and_kernel_forwarding_stay_out() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.55.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    s.ok(&["publish", &web.name, "5201:5201"]);
    let fwd_before = net::nstat(&s.host, "IpForwDatagrams");
    let ext_in = net::iperf(&s.ext, UPLINK_IP, 5201, &["-t", "2"]);
    let egress = net::iperf(&cli, EXT_IP, 5202, &["-t", "2"]);
    assert!(net::iperf_bps(&ext_in) > 1e8 && net::iperf_bps(&egress) > 1e8);
    assert_eq!(
        net::nstat(&s.host, "IpForwDatagrams"),
        fwd_before,
        "the kernel forwarded packets"
    );
    let rules = s.host.must(&["nft", "list", "ruleset"]);
    assert!(
        rules.trim().is_empty(),
        "host netns has netfilter rules: {rules}"
    );
    let ct = s.host.run(&["conntrack", "-C"]);
    assert_eq!(
        text(&ct.stdout).trim(),
        "0",
        "kernel conntrack tracked flows: {}",
        text(&ct.stderr)
    );
}

#[test]
fn icmp_errors_reach_the_right_container() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.56.0.0/24", &[]);
    let c = s.container("c", &n, &[]);
    // UDP to a closed port on ext: the port unreachable comes back through NAT.
    let o = c.run(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('{EXT_IP}',9999))\ns.send(b'x')\ntry:\n s.recv(10)\n print('noerror')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')"
        ),
    ]);
    assert_eq!(text(&o.stdout).trim(), "refused", "{}", text(&o.stderr));
    assert!(s.path_packets("icmp-error-translated") >= 1);

    // A router behind ext: TTL exceeded and fragmentation needed from a hop past ext.
    let far = Netns::new(&rig::unique("far"));
    rig::must(&[
        "ip",
        "link",
        "add",
        "r0",
        "netns",
        &s.ext.name,
        "type",
        "veth",
        "peer",
        "name",
        "r1",
        "netns",
        &far.name,
    ]);
    s.ext
        .must(&["ip", "addr", "add", "198.19.0.1/24", "dev", "r0"]);
    s.ext
        .must(&["ip", "link", "set", "r0", "up", "mtu", "1200"]);
    s.ext.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    far.must(&["ip", "addr", "add", "198.19.0.2/24", "dev", "r1"]);
    far.must(&["ip", "link", "set", "r1", "up", "mtu", "1200"]);
    far.must(&["ip", "route", "add", "default", "via", "198.19.0.1"]);
    assert!(net::ping(&c, "198.19.0.2", 1), "far is unreachable");
    // TTL 2: host (us) decrements to 1, ext cannot forward: time exceeded from ext.
    let o = c.run(&["ping", "-c", "1", "-W", "2", "-t", "2", "198.19.0.2"]);
    let out = text(&o.stdout);
    assert!(out.contains("Time to live exceeded"), "{out}");
    // DF packet larger than the ext->far MTU: frag needed, and the container learns the MTU.
    let o = c.run(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1400",
        "198.19.0.2",
    ]);
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(
        out.contains("mtu = 1200") || out.contains("mtu=1200"),
        "{out}"
    );
    drop(far);
}

#[test]
fn large_transfers_have_correct_checksums() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.57.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    s.ok(&["publish", &web.name, "5201:5201"]);
    // 1 GiB each way through DNAT and through MASQUERADE. A wrong checksum shows up as
    // TcpInCsumErrors at the receiver (and as retransmissions); veth itself retransmits a few
    // hundred segments per GiB here under load, so the bound is a fraction, not zero.
    for (ns, rx, addr, port) in [
        (&s.ext, &web, UPLINK_IP, 5201),
        (&cli, &s.ext, EXT_IP, 5202),
    ] {
        let csum_before = net::nstat(rx, "TcpInCsumErrors");
        let r = net::iperf(ns, addr, port, &["-n", "1G"]);
        let sent = r["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
        assert!(sent >= 1 << 30, "short transfer: {sent}");
        let segments = sent / 1448;
        let re = net::iperf_retransmits(&r);
        assert!(
            re * 100 < segments,
            "retransmission storm to {addr}:{port}: {re} of {segments}"
        );
        assert_eq!(
            net::nstat(rx, "TcpInCsumErrors"),
            csum_before,
            "bad TCP checksums reached the receiver"
        );
    }
    // UDP with checksums through DNAT, and a UDP datagram without checksum (0) stays valid.
    let _udp = net::udp_echo(&web, 7);
    s.ok(&["publish", &web.name, "7007:7/udp"]);
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 7007, "sum", 3).as_deref(),
        Some("sum")
    );
    let o = s.ext.run(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,11,1)\ns.settimeout(3)\ns.sendto(b'nocsum',('{UPLINK_IP}',7007))\nprint(s.recv(100).decode())"
        ),
    ]);
    assert_eq!(text(&o.stdout).trim(), "nocsum", "{}", text(&o.stderr));
}

/// With checksum offloads off on every hop, each stack computes and verifies checksums in
/// software, like a real wire: any checksum the datapath breaks is counted as an InCsumError.
#[test]
fn checksums_verified_in_software_like_a_wire() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.60.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let host_ifs: Vec<String> = s
        .json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["host_if"].as_str().unwrap().to_string())
        .collect();
    for (ns, dev) in [
        (&s.ext, "eth0"),
        (&s.host, "up0"),
        (&web, "eth0"),
        (&cli, "eth0"),
    ] {
        ns.must(&["ethtool", "-K", dev, "rx", "off", "tx", "off"]);
    }
    for dev in &host_ifs {
        s.host
            .must(&["ethtool", "-K", dev, "rx", "off", "tx", "off"]);
    }
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    let _udp = net::udp_echo(&web, 7);
    s.ok(&["publish", &web.name, "5201:5201"]);
    s.ok(&["publish", &web.name, "7007:7/udp"]);
    let counters = |ns: &Netns| {
        (
            net::nstat(ns, "TcpInCsumErrors"),
            net::nstat(ns, "UdpInCsumErrors"),
        )
    };
    let before = [counters(&web), counters(&s.ext), counters(&cli)];
    for (ns, addr, port) in [
        (&s.ext, UPLINK_IP, 5201),
        (&cli, EXT_IP, 5202),
        (&cli, "10.60.0.1", 5201),
    ] {
        let r = net::iperf(ns, addr, port, &["-n", "256M"]);
        assert!(
            r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 200 << 20,
            "{addr}:{port} transfer failed"
        );
    }
    for (ns, addr) in [
        (&s.ext, UPLINK_IP),
        (&cli, UPLINK_IP),
        (&s.host, "127.0.0.1"),
    ] {
        assert_eq!(
            net::udp_ask(ns, addr, 7007, "csum", 3).as_deref(),
            Some("csum"),
            "udp via {addr}"
        );
    }
    assert!(net::ping(&cli, EXT_IP, 2), "icmp echo through NAT");
    let after = [counters(&web), counters(&s.ext), counters(&cli)];
    assert_eq!(
        before, after,
        "checksum errors at a receiver (web, ext, cli)"
    );
}

#[test]
fn established_flows_survive_every_control_command() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.58.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    s.ok(&["publish", &web.name, "5201:5201"]);
    let inbound = s
        .ext
        .spawn_piped(&["iperf3", "-J", "-c", UPLINK_IP, "-p", "5201", "-t", "6"]);
    let outbound = cli.spawn_piped(&["iperf3", "-J", "-c", EXT_IP, "-p", "5202", "-t", "6"]);
    thread::sleep(Duration::from_millis(800));
    let n2 = s.network("n2", "10.59.0.0/24", &[]);
    let x = s.container("x", &n2, &[]);
    s.ok(&["publish", &x.name, "8081:80"]);
    s.ok(&["isolate", &x.name]);
    s.ok(&["allow", &cli.name, &x.name]);
    s.ok(&["status"]);
    s.ok(&["gc"]);
    s.init(&[]); // re-init: programs replaced under the links
    s.ok(&["unpublish", &x.name, "8081"]);
    s.ok(&["container", "rm", &x.name]);
    for (name, bg) in [("inbound", inbound), ("outbound", outbound)] {
        let o = bg.finish_within(Duration::from_secs(15));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert!(
            o.status.success() && v.get("error").is_none(),
            "{name} iperf3 broke: {}",
            text(&o.stdout)
        );
        assert!(net::iperf_bps(&v) > 1e8, "{name} stalled");
    }
}

#[test]
fn fragmented_datagrams_follow_their_flow() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.68.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let _c2c = net::udp_echo(&web, 7);
    let _ext = net::udp_echo(&s.ext, 7);
    s.ok(&["publish", &web.name, "7007:7/udp"]);
    let big = "x".repeat(4000);
    let webip = s.ip_of(&web);
    // Container to container, to the world through MASQUERADE, and from the world through DNAT:
    // 4000-byte datagrams travel as three fragments each way.
    assert_eq!(
        net::udp_ask(&cli, &webip, 7, &big, 3).map(|r| r.len()),
        Some(4000),
        "c2c"
    );
    assert_eq!(
        net::udp_ask(&cli, EXT_IP, 7, &big, 3).map(|r| r.len()),
        Some(4000),
        "masquerade"
    );
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 7007, &big, 3).map(|r| r.len()),
        Some(4000),
        "dnat"
    );
}

#[test]
fn every_host_address_serves_published_ports() {
    let s = Sandbox::new(CONTROL);
    s.host
        .must(&["ip", "addr", "add", "198.18.0.10/24", "dev", "up0"]);
    s.init(&[]);
    let n = s.network("n", "10.69.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let _srv = net::http_server(&web, 80, "web");
    s.ok(&["publish", &web.name, "8080:80"]);
    s.ok(&["publish", &web.name, "8081:80", "--host-ip", "198.18.0.10"]);
    for url in [
        "http://198.18.0.1:8080/",
        "http://198.18.0.10:8080/",
        "http://198.18.0.10:8081/",
    ] {
        assert_eq!(net::curl(&s.ext, url, 5).as_deref(), Some("web"), "{url}");
    }
    // Bound to one address only.
    assert!(net::curl(&s.ext, "http://198.18.0.1:8081/", 2).is_none());
}

/// XDP forced onto the (veth) uplink: published ports still work, and world traffic aimed
/// straight at a container address is dropped at XDP, before any skb exists.
#[test]
fn uplink_xdp_end_to_end() {
    let s = Sandbox::with_weir(CONTROL, &["--xdp", "on"]);
    assert_eq!(s.json(&["status"])["xdp"], true);
    let n = s.network("n", "10.71.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let _srv = net::http_server(&web, 80, "web");
    s.ok(&["publish", &web.name, "8080:80"]);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("web")
    );
    s.ext
        .must(&["ip", "route", "add", "10.71.0.0/24", "via", UPLINK_IP]);
    assert!(net::curl(&s.ext, &format!("http://{}/", s.ip_of(&web)), 2).is_none());
    let st = s.stats();
    assert!(
        st["drops"]["not-published"]["uplink-xdp"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{st}"
    );
    // Back to no XDP without losing anything.
    s.init(&["--xdp", "off"]);
    assert_eq!(s.json(&["status"])["xdp"], false);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("web")
    );
}
