//! Forwarding between containers, the host and the world: containers on a network talk
//! through the datapath (no bridge, no kernel forwarding), the host reaches them, networks are
//! isolated unless connected, spoofed sources and unknown addresses go nowhere, the pinned
//! datapath forwards with no control process running, and two sandboxed hosts do not interfere.

use std::{process::Stdio, time::Duration};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, capture, net, text};

use crate::CONTROL;

#[test]
fn containers_talk_ping_tcp_iperf() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.40.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &["--ip", "10.40.0.20"]);
    assert_eq!(s.ip_of(&b), "10.40.0.20");
    assert!(net::ping(&a, "10.40.0.20", 2), "a cannot ping b");
    let _web = net::http_server(&b, 80, "hello from b");
    assert_eq!(
        net::curl(&a, "http://10.40.0.20/", 5).as_deref(),
        Some("hello from b")
    );
    let _srv = net::iperf_server(&b, 5201);
    let r = net::iperf(&a, "10.40.0.20", 5201, &["-t", "2"]);
    assert!(
        net::iperf_bps(&r) > 1e8,
        "iperf3 a->b too slow to be forwarding: {}",
        net::iperf_bps(&r)
    );
    // Forwarded by the datapath, not by a bridge or the kernel.
    assert!(s.path_packets("container-to-container") > 100);
    assert!(s.path_packets("arp-reply") >= 1);
    assert_eq!(net::nstat(&s.host, "IpForwDatagrams"), 0);
    let links = text(
        &s.host
            .run(&["ip", "-o", "link", "show", "type", "bridge"])
            .stdout,
    );
    assert!(links.trim().is_empty(), "a bridge exists: {links}");
}

#[test]
fn host_reaches_containers_and_back() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.41.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let ip = s.ip_of(&a);
    let _web = net::http_server(&a, 8000, "a");
    assert!(net::ping(&s.host, &ip, 1));
    assert_eq!(
        net::curl(&s.host, &format!("http://{ip}:8000/"), 5).as_deref(),
        Some("a")
    );
    // Container to a host service on its gateway.
    let _hweb = net::http_server(&s.host, 8001, "host");
    assert_eq!(
        net::curl(&a, "http://10.41.0.1:8001/", 5).as_deref(),
        Some("host")
    );
    assert!(s.path_packets("container-to-host") > 0);
}

#[test]
fn networks_are_isolated_by_default() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n1 = s.network("n1", "10.42.1.0/24", &[]);
    let n2 = s.network("n2", "10.42.2.0/24", &[]);
    let a = s.container("a", &n1, &[]);
    let b = s.container("b", &n2, &[]);
    let bip = s.ip_of(&b);
    let _web = net::http_server(&b, 80, "b");
    assert!(!net::ping(&a, &bip, 1));
    assert!(net::curl(&a, &format!("http://{bip}/"), 2).is_none());
    assert!(s.drops("policy-network") > 0);
    // Connected networks talk.
    s.ok(&["network", "connect", &n1, &n2]);
    assert_eq!(
        net::curl(&a, &format!("http://{bip}/"), 5).as_deref(),
        Some("b")
    );
}

/// The MAC a container's neighbour entry for `ip` resolved to (after traffic to it).
fn neighbour_mac(c: &Netns, ip: &str) -> String {
    let out = c.must(&["ip", "neigh", "show", ip, "dev", "eth0"]);
    let mut w = out.split_whitespace();
    w.find(|x| *x == "lladdr")
        .and_then(|_| w.next())
        .unwrap_or_else(|| panic!("no neighbour entry for {ip} in {}: {out}", c.name))
        .to_string()
}

/// `--gateway` picks the host's address on the network (Docker's `--gateway`): containers
/// route through it, the host answers there, the world is reached through it, and the
/// default (first) address is a container address like any other.
#[test]
fn a_chosen_gateway_serves_the_network() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.44.0.0/24", &["--gateway", "10.44.0.254"]);
    let listed = s.json(&["network", "ls"]);
    let net = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == n.as_str());
    assert_eq!(net.expect("listed")["gateway"], "10.44.0.254", "{listed}");
    let a = s.container("a", &n, &[]);
    assert_eq!(s.ip_of(&a), "10.44.0.1", "the lowest free address");
    let route = a.must(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.44.0.254"), "{route}");
    assert!(
        net::ping(&a, "10.44.0.254", 2),
        "the gateway does not answer"
    );
    assert!(net::ping(&a, EXT_IP, 2), "no way out through the gateway");
    let _web = net::http_server(&a, 80, "via .254");
    assert_eq!(
        net::curl(&s.host, "http://10.44.0.1/", 5).as_deref(),
        Some("via .254")
    );
    // The same create again is a no-op; another gateway is a conflict.
    s.ok(&[
        "network",
        "create",
        &n,
        "--subnet",
        "10.44.0.0/24",
        "--gateway",
        "10.44.0.254",
    ]);
    let e = s.fails(&["network", "create", &n, "--subnet", "10.44.0.0/24"]);
    assert!(e.contains("gateway 10.44.0.254"), "{e}");
}

#[test]
fn spoofed_source_is_dropped_and_counted() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.43.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    let aip = s.ip_of(&a);
    let gw = "10.43.0.1";
    // Resolve b and the gateway with a's own address, then pin them: from here on a sends no
    // ARP, so what the spoofed pings below produce (and what is counted) are IP packets.
    assert!(net::ping(&a, &bip, 1) && net::ping(&a, gw, 1));
    for ip in [bip.as_str(), gw] {
        let mac = neighbour_mac(&a, ip);
        a.must(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }
    // A second address inside a: packets from it are spoofed.
    a.must(&["ip", "addr", "add", "10.43.0.99/32", "dev", "eth0"]);
    let sent = capture::live(&a, "eth0", "icmp or arp", 5);
    let seen = capture::live(&b, "eth0", "icmp", 5);
    // b's capture is live: a legitimate ping shows up in it.
    assert!(net::ping(&a, &bip, 1));
    let before = s.drops("spoofed-source");
    assert!(
        !a.run(&[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "10.43.0.99",
            &bip
        ])
        .status
        .success()
    );
    assert!(s.drops("spoofed-source") >= before + 3);
    let sent = text(&sent.finish_within(Duration::from_secs(8)).stdout);
    let seen = text(&seen.finish_within(Duration::from_secs(8)).stdout);
    let spoofed_out = sent
        .lines()
        .filter(|l| l.contains(&format!("10.43.0.99 > {bip}: ICMP echo request")))
        .count();
    assert!(
        spoofed_out >= 3,
        "a did not send the spoofed IP packets: {sent}"
    );
    assert!(!sent.contains("ARP"), "a sent ARP, not only IP: {sent}");
    assert!(
        seen.contains(&format!("{aip} > {bip}: ICMP echo request")),
        "b's capture saw not even the legitimate ping: {seen}"
    );
    assert!(
        !seen.contains("10.43.0.99"),
        "a spoofed packet reached b: {seen}"
    );
    spoofing_a_peer_never_reaches_the_host(&s, &a, &bip, gw);
}

/// Pretending to be a peer `bip` (its address) towards the host does not work either: the
/// host's stack never sees the echo requests (a's own address does reach it).
fn spoofing_a_peer_never_reaches_the_host(s: &Sandbox, a: &Netns, bip: &str, gw: &str) {
    a.must(&["ip", "addr", "add", &format!("{bip}/32"), "dev", "eth0"]);
    let echos = net::nstat(&s.host, "IcmpInEchos");
    assert!(net::ping(a, gw, 1));
    assert!(
        net::nstat(&s.host, "IcmpInEchos") > echos,
        "IcmpInEchos does not count"
    );
    let echos = net::nstat(&s.host, "IcmpInEchos");
    let before = s.drops("spoofed-source");
    let o = a.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", bip, gw]);
    assert!(!o.status.success());
    assert!(s.drops("spoofed-source") >= before + 2);
    assert_eq!(
        net::nstat(&s.host, "IcmpInEchos"),
        echos,
        "an echo request with b's address as source reached the host"
    );
}

/// `control` processes serving this sandbox's instance (its state dir on their command
/// line), so that control processes of tests running in parallel do not count.
fn control_pids(s: &Sandbox) -> String {
    let dir = s.state_dir.to_str().unwrap().replace('.', "\\.");
    let pattern = format!("--state-dir {dir}( |$)");
    text(&rig::run(&["pgrep", "-a", "-f", "--", &pattern]).stdout)
}

#[test]
fn forwarding_continues_without_any_control_process() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.44.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    let _web = net::http_server(&b, 80, "b");
    s.ok(&["publish", &b.name, "8080:80"]);
    let _echo = net::peer_echo(&s.ext, 9000, 0);
    // The check finds a control process of this instance while one runs...
    let mut monitor = s
        .bare_command()
        .arg("monitor")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning control monitor");
    let found = rig::wait_for(Duration::from_secs(5), || !control_pids(&s).is_empty());
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(found, "pgrep does not see a running control monitor");
    // ...and none exists now (every command exited): the pinned datapath still forwards
    // container to container, masquerades to ext and serves a published port to ext.
    let ps = control_pids(&s);
    assert!(
        ps.trim().is_empty(),
        "a control process is still running: {ps}"
    );
    assert!(net::ping(&a, &bip, 2));
    assert_eq!(
        net::peer_seen(&a, EXT_IP, 9000),
        UPLINK_IP,
        "masquerade to ext without a control process"
    );
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("b"),
        "published port from ext without a control process"
    );
    let ps = control_pids(&s);
    assert!(ps.trim().is_empty(), "a control process appeared: {ps}");
}

#[test]
fn two_sandboxed_hosts_do_not_interfere() {
    let s1 = Sandbox::with_weir(CONTROL, &[]);
    let s2 = Sandbox::with_weir(CONTROL, &[]);
    // Same subnets and addresses on both hosts.
    let n1 = s1.network("n", "10.46.0.0/24", &[]);
    let n2 = s2.network("n", "10.46.0.0/24", &[]);
    let a1 = s1.container("a", &n1, &[]);
    let b1 = s1.container("b", &n1, &[]);
    let a2 = s2.container("a", &n2, &[]);
    let b2 = s2.container("b", &n2, &[]);
    let _w1 = net::http_server(&b1, 80, "one");
    let _w2 = net::http_server(&b2, 80, "two");
    let ip1 = s1.ip_of(&b1);
    let ip2 = s2.ip_of(&b2);
    assert_eq!(ip1, ip2);
    assert_eq!(
        net::curl(&a1, &format!("http://{ip1}/"), 5).as_deref(),
        Some("one")
    );
    assert_eq!(
        net::curl(&a2, &format!("http://{ip2}/"), 5).as_deref(),
        Some("two")
    );
    // Same published port on both: each host serves its own container.
    s1.ok(&["publish", &b1.name, "8080:80"]);
    s2.ok(&["publish", &b2.name, "8080:80"]);
    assert_eq!(
        net::curl(&s1.ext, "http://198.18.0.1:8080/", 5).as_deref(),
        Some("one")
    );
    assert_eq!(
        net::curl(&s2.ext, "http://198.18.0.1:8080/", 5).as_deref(),
        Some("two")
    );
    assert_eq!(
        net::curl(&s1.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("one")
    );
    assert_eq!(
        net::curl(&s2.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("two")
    );
    // Tearing one down leaves the other working.
    s1.ok(&["down"]);
    assert_eq!(
        net::curl(&a2, &format!("http://{ip2}/"), 5).as_deref(),
        Some("two")
    );
    assert_eq!(
        net::curl(&s2.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("two")
    );
}

#[test]
fn unknown_addresses_of_a_network_go_nowhere() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.47.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    // Nobody holds 10.47.0.77: it must not leak to the world through the default route.
    let dump = s.ext.spawn_piped(&[
        "timeout",
        "3",
        "tcpdump",
        "-c",
        "1",
        "-n",
        "-i",
        "eth0",
        "host",
        "10.47.0.77",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!net::ping(&a, "10.47.0.77", 1));
    let seen = text(&dump.finish_within(std::time::Duration::from_secs(5)).stdout);
    assert!(!seen.contains("10.47.0.77"), "leaked to ext: {seen}");
    assert!(s.drops("unknown-endpoint") > 0);
    // The gateway itself is the host and answers.
    assert!(net::ping(&a, "10.47.0.1", 1));
}
