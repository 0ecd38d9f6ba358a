//! Issue #2: containers on a network talk through from_container + bpf_redirect_peer, the host
//! reaches them, networks are isolated, spoofing is dropped, the datapath needs no process,
//! `down` leaves nothing, two sandboxed hosts do not interfere.

use rig::{Sandbox, net, text};

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

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

#[test]
fn spoofed_source_is_dropped_and_counted() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.43.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    // A second address inside a: packets from it are spoofed.
    a.must(&["ip", "addr", "add", "10.43.0.99/32", "dev", "eth0"]);
    let before = s.drops("spoofed-source");
    assert!(
        !a.run(&[
            "ping",
            "-c",
            "2",
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
    assert!(s.drops("spoofed-source") >= before + 2);
    // Pretending to be b (its address) does not work either.
    a.must(&["ip", "addr", "add", &format!("{bip}/32"), "dev", "eth0"]);
    let o = a.run(&["ping", "-c", "1", "-W", "1", "-I", &bip, "10.43.0.1"]);
    assert!(!o.status.success());
    assert!(s.drops("spoofed-source") >= before + 3);
}

#[test]
fn forwarding_continues_without_any_control_process() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.44.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    // No control process exists now (every command exited); the pinned datapath works.
    let ps = text(&rig::run(&["pgrep", "-f", CONTROL]).stdout);
    assert!(
        ps.trim().is_empty(),
        "a control process is still running: {ps}"
    );
    assert!(net::ping(&a, &bip, 2));
}

#[test]
fn down_leaves_nothing_behind() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.45.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _b = s.container("b", &n, &[]);
    let status = s.json(&["status"]);
    let pin_dir = status["pin_dir"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&pin_dir).exists());
    s.ok(&["down"]);
    assert!(
        !std::path::Path::new(&pin_dir).exists(),
        "pins left in {pin_dir}"
    );
    assert!(!s.state_dir.exists(), "state dir left");
    assert!(!a.path().exists(), "container netns left");
    let links = s.host.must(&["ip", "-o", "link"]);
    assert!(!links.contains("wr-"), "host veths left: {links}");
    let addrs = s.host.must(&["ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        !addrs.contains("10.45.0.1"),
        "gateway address left: {addrs}"
    );
    // tcx links on the uplink are gone too: nothing but the kernel's own handling remains.
    let tc = text(&rig::run(&["bpftool", "link", "show"]).stdout);
    let prog_ids: Vec<String> = status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["program_id"].as_u64())
        .map(|i| format!("prog {i} "))
        .collect();
    for id in prog_ids {
        assert!(!tc.contains(&id), "a link to {id} remains: {tc}");
    }
    // down is idempotent.
    s.ok(&["down"]);
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
