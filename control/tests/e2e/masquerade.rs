//! MASQUERADE in eBPF, with conntrack: containers reach the world from the uplink address on
//! distinct ports, internal networks have no egress, the world cannot pose as a container,
//! ICMP errors and fragments follow their flow, and the kernel's netfilter and forwarding path
//! stay out of the picture.

use std::time::Duration;

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

use crate::CONTROL;

#[test]
fn masquerade_to_ext_with_replies_and_distinct_ports() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.50.0.0/24", &[]);
    let cs: Vec<Netns> = (0..3)
        .map(|i| s.container(&format!("c{i}"), &n, &[]))
        .collect();
    let _srv = net::peer_echo(&s.ext, 9000, 3);
    // Ext sees the uplink address as source.
    assert_eq!(
        net::ask_peer(&cs[0], EXT_IP, 9000, "").split(' ').next(),
        Some(UPLINK_IP)
    );
    // Three containers, same source port (one the host never picks), same destination, at the
    // same time: distinct ports.
    let clients: Vec<rig::Bg> = cs
        .iter()
        .map(|c| {
            c.spawn_piped(&[
                "sh",
                "-c",
                &format!("socat -T5 - TCP4:{EXT_IP}:9000,sourceport=61000 </dev/null | head -1"),
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
        ports.contains(&"61000"),
        "the first flow keeps its own port (outside the host's ephemeral range): {seen:?}"
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
