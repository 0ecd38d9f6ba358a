//! Issue #2: containers on a network talk through from_container + bpf_redirect_peer, the host
//! reaches them, networks are isolated, spoofing is dropped, the datapath needs no process,
//! `down` leaves nothing, two sandboxed hosts do not interfere.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

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

/// A capture (tcpdump, line per packet) on `dev` in `ns` for `secs` seconds; returns once the
/// capture socket exists. Read it with `Bg::finish_within`.
fn capture(ns: &Netns, dev: &str, filter: &str, secs: u32) -> rig::Bg {
    let secs = secs.to_string();
    let mut argv = vec!["timeout", secs.as_str(), "tcpdump", "-l", "-n", "-i", dev];
    argv.extend(filter.split_whitespace());
    let bg = ns.spawn_piped(&argv);
    let up = rig::wait_for(Duration::from_secs(5), || {
        text(&ns.run(&["ss", "-H", "-0", "-p"]).stdout).contains("tcpdump")
    });
    assert!(up, "tcpdump did not start in {}", ns.name);
    // The socket exists; give libpcap a moment to attach its filter and ring.
    std::thread::sleep(Duration::from_millis(300));
    bg
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
    let sent = capture(&a, "eth0", "icmp or arp", 5);
    let seen = capture(&b, "eth0", "icmp", 5);
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
    // Pretending to be b (its address) towards the host does not work either: the host's
    // stack never sees the echo requests (a's own address does reach it).
    a.must(&["ip", "addr", "add", &format!("{bip}/32"), "dev", "eth0"]);
    let echos = net::nstat(&s.host, "IcmpInEchos");
    assert!(net::ping(&a, gw, 1));
    assert!(
        net::nstat(&s.host, "IcmpInEchos") > echos,
        "IcmpInEchos does not count"
    );
    let echos = net::nstat(&s.host, "IcmpInEchos");
    let before = s.drops("spoofed-source");
    let o = a.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", &bip, gw]);
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

/// A TCP server in `ns` answering each connection with the peer address it saw.
fn peer_echo(ns: &Netns, port: u16) -> rig::Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        // socat splits addresses on ":", so the peer is printed as "ADDR PORT".
        "SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT",
    ]);
    net::wait_listening(ns, port, "tcp");
    bg
}

/// Connects to `addr:port` from `ns` and returns the peer address the server saw.
fn peer_seen(ns: &Netns, addr: &str, port: u16) -> String {
    let o = ns.sh(&format!(
        "timeout 5 socat -T4 - TCP4:{addr}:{port} </dev/null | head -1"
    ));
    let out = text(&o.stdout);
    out.split_whitespace().next().unwrap_or("").to_string()
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
    let _echo = peer_echo(&s.ext, 9000);
    // The check finds a control process of this instance while one runs...
    let mut monitor = Command::new(CONTROL)
        .arg("--state-dir")
        .arg(&s.state_dir)
        .arg("monitor")
        .env_remove("WEIR_STATE_DIR")
        .stdin(Stdio::null())
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
        peer_seen(&a, EXT_IP, 9000),
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

/// A state dir of its own, removed on drop.
struct OtherStateDir(std::path::PathBuf);

impl Drop for OtherStateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn one_host_namespace_has_one_instance() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.47.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let pins = || std::fs::read_dir("/sys/fs/bpf/weir").map_or(0, |d| d.count());
    let before = pins();
    // A second state dir serving the same host namespace would share its uplink, gateway
    // device and `wr-` names: refused, with nothing created.
    let other = OtherStateDir(std::env::temp_dir().join(rig::unique("weir-second-")));
    let o = Command::new(CONTROL)
        .arg("--state-dir")
        .arg(&other.0)
        .args(["--host-netns", &s.host.name, "init", "--uplink", "up0"])
        .env_remove("WEIR_STATE_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a second instance was initialised");
    let err = text(&o.stderr);
    assert!(err.contains("another Weir instance"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(pins(), before, "the refused init pinned something");
    assert!(net::ping(&s.host, &a_ip, 1), "a lost its link");

    // A create whose host-side name is taken by a link it did not make fails — and its
    // rollback leaves that link alone (it deletes only a link with its own MAC).
    let a_if = s.host_if_of(&a);
    let next = u32::from_str_radix(a_if.trim_start_matches("wr-"), 16).unwrap() + 1;
    let squatter = format!("wr-{next:x}");
    s.host.must(&[
        "ip", "link", "add", &squatter, "type", "veth", "peer", "name", "sq-peer",
    ]);
    let e = s.fails(&["container", "create", &s.name("b"), "--network", &n]);
    assert!(e.contains("already exists"), "{e}");
    assert!(
        s.host
            .run(&["ip", "link", "show", &squatter])
            .status
            .success(),
        "the failed create deleted {squatter}, which was not its own"
    );
    s.host.must(&["ip", "link", "del", &squatter]);
    assert!(net::ping(&s.host, &a_ip, 1), "a lost its link");
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

/// Whether `dev` in the host namespace carries `addr` (as a /32, like the gateways on lo).
fn host_has_addr(s: &Sandbox, dev: &str, addr: &str) -> bool {
    s.host
        .must(&["ip", "-o", "-4", "addr", "show", "dev", dev])
        .contains(&format!("inet {addr}/32 "))
}

/// A successful `network rm` removes the gateway address from the host's lo and the network
/// from the listing; the same name and subnet can then be created again and work.
#[test]
fn network_rm_removes_it_and_frees_name_and_subnet() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.48.0.0/24", &[]);
    let other = s.network("o", "10.48.1.0/24", &[]);
    s.ok(&["network", "connect", &n, &other]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    assert!(net::ping(&a, &s.ip_of(&b), 1));
    assert!(host_has_addr(&s, "lo", "10.48.0.1"), "no gateway on lo");
    let listed = |name: &str| {
        s.json(&["network", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == name)
    };
    assert!(listed(&n));
    // Refused while containers use it, and nothing changes.
    let e = s.fails(&["network", "rm", &n]);
    assert!(e.contains(&a.name), "{e}");
    assert!(listed(&n) && host_has_addr(&s, "lo", "10.48.0.1"));
    s.ok(&["container", "rm", &a.name]);
    s.ok(&["container", "rm", &b.name]);
    assert!(!a.path().exists() && !b.path().exists());
    s.ok(&["network", "rm", &n]);
    assert!(
        !host_has_addr(&s, "lo", "10.48.0.1"),
        "gateway address left on lo after network rm"
    );
    assert!(!listed(&n), "network still listed after rm");
    assert!(listed(&other));
    let links = s.host.must(&["ip", "-o", "link"]);
    assert!(!links.contains("wr-"), "host veths left: {links}");
    // Same name, same subnet, same container names: it works again.
    s.ok(&["network", "create", &n, "--subnet", "10.48.0.0/24"]);
    assert!(listed(&n));
    assert!(
        host_has_addr(&s, "lo", "10.48.0.1"),
        "gateway not back on lo"
    );
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    assert!(
        net::ping(&a, &bip, 2),
        "containers of the re-created network"
    );
    let _web = net::http_server(&b, 80, "again");
    assert_eq!(
        net::curl(&a, &format!("http://{bip}/"), 5).as_deref(),
        Some("again")
    );
    assert!(
        net::ping(&a, "10.48.0.1", 1),
        "gateway of the re-created network"
    );
    // The old network link went with the network: the new one is not connected to `other`.
    let c = s.container("c", &other, &[]);
    let _cweb = net::http_server(&c, 80, "other");
    assert!(
        net::curl(&a, &format!("http://{}/", s.ip_of(&c)), 2).is_none(),
        "the re-created network inherited the removed one's connection"
    );
}

/// `init` without `--uplink` picks the default route's interface and, by default, attaches no
/// XDP to a veth uplink; `WEIR_STATE_DIR` selects the instance like `--state-dir`.
#[test]
fn init_defaults_and_state_dir_from_env() {
    let s = Sandbox::new(CONTROL);
    s.ok(&["init"]);
    let st = s.json(&["status"]);
    assert_eq!(st["uplink"], "up0", "{st}");
    assert_eq!(st["uplink_ip"], UPLINK_IP, "{st}");
    assert_eq!(st["xdp"], false, "XDP attached to a veth by default: {st}");
    let has_xdp = || {
        s.host
            .must(&["ip", "-d", "link", "show", "dev", "up0"])
            .contains("xdp")
    };
    assert!(!has_xdp(), "an XDP program is attached to up0");
    // `auto` never picks a veth either.
    s.ok(&["init", "--xdp", "auto"]);
    assert_eq!(s.json(&["status"])["xdp"], false);
    assert!(!has_xdp(), "--xdp auto attached XDP to a veth");
    // The check above sees XDP when it is there.
    s.ok(&["init", "--xdp", "on"]);
    assert_eq!(s.json(&["status"])["xdp"], true);
    assert!(has_xdp(), "ip link does not show the XDP program");
    s.ok(&["init", "--xdp", "off"]);
    assert!(!has_xdp());
    // The uplink it picked works: masquerade out of up0.
    let n = s.network("n", "10.49.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _echo = peer_echo(&s.ext, 9000);
    assert_eq!(peer_seen(&a, EXT_IP, 9000), UPLINK_IP);

    // WEIR_STATE_DIR instead of --state-dir (and no --host-netns: init recorded it).
    let env_control = |dir: &std::path::Path, args: &[&str]| {
        Command::new(CONTROL)
            .args(args)
            .env("WEIR_STATE_DIR", dir)
            .stdin(Stdio::null())
            .output()
            .expect("running control")
    };
    let o = env_control(&s.state_dir, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        std::path::Path::new(st["state_dir"].as_str().unwrap()),
        s.state_dir.as_path()
    );
    assert_eq!(st["host_netns"], s.host.name.as_str());
    assert_eq!(st["networks"], 1);
    let m = s.name("m");
    let o = env_control(
        &s.state_dir,
        &["network", "create", &m, "--subnet", "10.49.1.0/24"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let names: Vec<String> = s
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&m) && names.contains(&n),
        "the network created through WEIR_STATE_DIR is not this instance's: {names:?}"
    );
    assert!(host_has_addr(&s, "lo", "10.49.1.1"));
    // Another WEIR_STATE_DIR is another (here: uninitialised) instance.
    let elsewhere = std::env::temp_dir().join(format!("weir-test-{}-none", s.id));
    let o = env_control(&elsewhere, &["network", "ls", "--json"]);
    let _ = std::fs::remove_dir_all(&elsewhere);
    assert!(
        !o.status.success() && !text(&o.stdout).contains(&m),
        "WEIR_STATE_DIR={} showed this instance: {}",
        elsewhere.display(),
        text(&o.stdout)
    );
}
