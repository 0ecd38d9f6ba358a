//! Issue #3: MASQUERADE and published ports (DNAT) in eBPF, with conntrack, in every
//! direction — and the kernel's netfilter and forwarding path out of the picture.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

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
    // Again: nothing left to do, and still nothing reaches the port.
    let again = s.ok(&["unpublish", &web.name, "8080"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert!(net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 2).is_none());

    // Published on two addresses one by one: one unpublish without --host-ip takes both.
    s.ok(&["publish", &web.name, "8080:80", "--host-ip", UPLINK_IP]);
    s.ok(&["publish", &web.name, "8080:80", "--host-ip", "127.0.0.1"]);
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("up")
    );
    let out = s.ok(&["unpublish", &web.name, "8080"]);
    assert_eq!(out.matches("unpublished").count(), 2, "{out}");
    assert!(s.json(&["ports"]).as_array().unwrap().is_empty());
    assert!(net::curl(&s.host, "http://127.0.0.1:8080/", 2).is_none());
    assert!(net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 2).is_none());
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

/// A TCP echo server (socat, one `cat` per connection).
fn tcp_echo(ns: &Netns, port: u16) -> rig::Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        "EXEC:cat",
    ]);
    net::wait_listening(ns, port, "tcp");
    bg
}

/// Runs `f` on a short-lived thread inside `ns`: sockets it opens stay in that namespace.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = control::netns::path(&ns.name);
    thread::scope(|sc| {
        sc.spawn(|| {
            control::netns::enter(&path).map_err(|e| io::Error::other(e.to_string()))?;
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// A long-lived flow to an echo server (a TCP connection, or a connected UDP socket) whose
/// every round trip must come back intact.
struct Flow {
    what: String,
    conn: Conn,
    n: u64,
}

impl Flow {
    fn tcp(ns: &Netns, addr: &str, port: u16) -> Self {
        let to: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let stream = in_netns(ns, || {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .unwrap_or_else(|e| panic!("tcp {} -> {to}: {e}", ns.name));
        Self::started(format!("tcp {} -> {to}", ns.name), Conn::Tcp(stream))
    }

    fn udp(ns: &Netns, addr: &str, port: u16) -> Self {
        let to: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let sock = in_netns(ns, || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            Ok(s)
        })
        .unwrap_or_else(|e| panic!("udp {} -> {to}: {e}", ns.name));
        Self::started(format!("udp {} -> {to}", ns.name), Conn::Udp(sock))
    }

    fn started(what: String, conn: Conn) -> Self {
        let mut f = Self { what, conn, n: 0 };
        f.check("opening");
        f
    }

    fn roundtrip(&mut self) -> io::Result<()> {
        self.n += 1;
        let msg = format!("{:08}\n", self.n);
        match &mut self.conn {
            Conn::Tcp(s) => {
                s.write_all(msg.as_bytes())?;
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back)?;
                if back != msg.as_bytes() {
                    return Err(io::Error::other(format!(
                        "sent {msg:?}, got {:?}",
                        text(&back)
                    )));
                }
                Ok(())
            }
            Conn::Udp(s) => {
                // A datagram may be lost on a busy veth: three tries, stale echoes skipped.
                let mut buf = [0u8; 64];
                for _ in 0..3 {
                    s.send(msg.as_bytes())?;
                    loop {
                        match s.recv(&mut buf) {
                            Ok(n) if &buf[..n] == msg.as_bytes() => return Ok(()),
                            Ok(_) => continue,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) =>
                            {
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(io::Error::other(format!("no echo of {msg:?} in 3 tries")))
            }
        }
    }

    fn check(&mut self, when: &str) {
        if let Err(e) = self.roundtrip() {
            panic!(
                "{} broke after {} round trips ({when}): {e}",
                self.what, self.n
            );
        }
    }
}

#[test]
fn established_flows_survive_every_control_command() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.58.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    let web_ip = s.ip_of(&web);
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    let _servers = [
        tcp_echo(&web, 9000),
        tcp_echo(&s.ext, 9000),
        net::udp_echo(&web, 53),
        net::udp_echo(&s.ext, 7),
    ];
    s.ok(&["publish", &web.name, "5201:5201"]);
    s.ok(&["publish", &web.name, "8080:9000"]);
    s.ok(&["publish", &web.name, "5353:53/udp"]);
    // The bulk transfers must outlast every command below (asserted), so the reset counters
    // are read while they still run. Two of the commands re-initialise, which loads and
    // verifies every program (seconds on a busy machine): the length follows a timed re-init.
    let t = Instant::now();
    s.init(&[]);
    let bulk_secs = ((t.elapsed().as_secs() * 2 + 10) * 2).max(25);
    let secs = bulk_secs.to_string();
    let inbound = s
        .ext
        .spawn_piped(&["iperf3", "-J", "-c", UPLINK_IP, "-p", "5201", "-t", &secs]);
    let mut outbound = cli.spawn_piped(&["iperf3", "-J", "-c", EXT_IP, "-p", "5202", "-t", &secs]);
    // Long-lived flows over every path: published (from the world and from the host through
    // the cgroup hooks), masqueraded, container to container; TCP and UDP.
    let mut flows = [
        Flow::tcp(&s.ext, UPLINK_IP, 8080),
        Flow::tcp(&s.host, "127.0.0.1", 8080),
        Flow::tcp(&cli, EXT_IP, 9000),
        Flow::tcp(&cli, &web_ip, 9000),
        Flow::udp(&cli, EXT_IP, 7),
        Flow::udp(&s.ext, UPLINK_IP, 5353),
    ];
    let watched = [&s.ext, &s.host, &web, &cli];
    let resets = |when: &str| -> Vec<u64> {
        let r = watched
            .iter()
            .map(|ns| net::nstat(ns, "TcpEstabResets"))
            .collect();
        eprintln!("TcpEstabResets {when} (ext, host, web, cli): {r:?}");
        r
    };
    let resets_before = resets("before");
    thread::sleep(Duration::from_millis(800));

    let rules_file = std::env::temp_dir().join(format!("weir-rules-{}", s.id));
    let started = Instant::now();
    let mut ran = 0;
    let mut step = |args: &[&str]| {
        s.ok(args);
        ran += 1;
        for f in flows.iter_mut() {
            f.check(&format!("after `control {}`", args.join(" ")));
        }
    };
    // Other networks, containers, ports and rules come and go; every read-only view is taken;
    // the datapath is re-initialised twice. None of it may touch the flows above.
    let n2 = s.name("n2");
    let n3 = s.name("n3");
    let (x, y) = (s.name("x"), s.name("y"));
    step(&["network", "create", &n2, "--subnet", "10.59.0.0/24"]);
    step(&["network", "create", &n3, "--subnet", "10.61.0.0/24"]);
    step(&["network", "connect", &n2, &n3]);
    step(&[
        "container",
        "create",
        &x,
        "--network",
        &n2,
        "--publish",
        "8081:80",
    ]);
    step(&["container", "create", &y, "--network", &n3]);
    // Flows of x for the flush below to cut.
    assert!(
        net::ping(&Netns::borrowed(&x), EXT_IP, 1),
        "x has no egress"
    );
    step(&["publish", &x, "8082:80"]);
    step(&["publish", &x, "8083:53/udp"]);
    step(&["publish", &y, "8084:80", "--host-ip", UPLINK_IP]);
    step(&["ports"]);
    step(&["isolate", &x]);
    step(&["isolate", &x, &y]);
    step(&["allow", &y, &x]);
    step(&["allow", &y, &x, "--port", "80/tcp"]);
    step(&["allow", &cli.name, &x]);
    std::fs::write(
        &rules_file,
        format!(
            "# imported\nisolate {y}\nallow {x} {y} --port 53/udp\nisolate {x} {web}\n",
            web = web.name
        ),
    )
    .unwrap();
    step(&["rules", "import", rules_file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&rules_file);
    step(&["rules"]);
    step(&["rules", "--json"]);
    step(&["conntrack"]);
    step(&["conntrack", "--all", "--json"]);
    step(&["conntrack", "flush", "--container", &x]);
    step(&["stats"]);
    step(&["status"]);
    step(&["gc"]);
    step(&["network", "ls"]);
    step(&["container", "ls"]);
    step(&["monitor", "--duration", "0.5"]);
    step(&["init"]); // re-init: programs replaced under the links
    step(&["disallow", &y, &x, "--port", "80/tcp"]);
    step(&["disallow", &y, &x]);
    step(&["disallow", &cli.name, &x]);
    step(&["unisolate", &x, &y]);
    step(&["unisolate", &x]);
    step(&["unpublish", &x, "8081"]);
    step(&["unpublish", &x, "8082"]);
    step(&["unpublish", &x, "8083/udp"]);
    step(&["unpublish", &y, "8084", "--host-ip", UPLINK_IP]);
    step(&["network", "disconnect", &n2, &n3]);
    step(&["container", "rm", &x]);
    step(&["container", "rm", &y]);
    step(&["network", "rm", &n2]);
    step(&["network", "rm", &n3]);
    step(&["init", "--uplink", "up0"]);
    step(&["gc"]);
    step(&["status"]);
    let took = started.elapsed();
    eprintln!("{ran} commands in {took:?} with every flow checked after each");
    // Counted while the bulk transfers still run (iperf3 may end its own streams with a reset).
    assert!(
        outbound.is_running() && took < Duration::from_secs(bulk_secs - 5),
        "the commands took {took:?}, the bulk flows {bulk_secs} s: they must outlive them"
    );
    let resets_after = resets("after");
    assert_eq!(
        resets_after, resets_before,
        "TcpEstabResets moved (ext, host, web, cli): a connection was reset"
    );
    for f in flows.iter_mut() {
        f.check("at the end");
    }
    assert!(
        s.json(&["status"])["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for (name, bg) in [("inbound", inbound), ("outbound", outbound)] {
        let o = bg.finish_within(Duration::from_secs(bulk_secs + 15));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert!(
            o.status.success() && v.get("error").is_none(),
            "{name} iperf3 broke: {}",
            text(&o.stdout)
        );
        assert!(net::iperf_bps(&v) > 1e8, "{name} stalled");
    }
}

/// Sends `msg` over UDP from source port `sport` of `ns` to `addr:port`; the reply, if any.
fn udp_ask_from(ns: &Netns, addr: &str, port: u16, sport: u16, msg: &str) -> Option<String> {
    let o = ns.sh(&format!(
        "printf '%s' '{msg}' | timeout 3 socat -T2 - UDP4:{addr}:{port},sourceport={sport},reuseaddr"
    ));
    let out = text(&o.stdout);
    (!out.is_empty()).then_some(out)
}

#[test]
fn publish_refuses_a_udp_port_a_host_socket_holds() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.62.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _dns = net::udp_echo(&a, 53);
    // A host UDP service on every address, and one bound to loopback only.
    let _host_any = net::udp_echo(&s.host, 9053);
    let _host_lo = s.host.spawn(&[
        "python3",
        "-c",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',9054))\ntime.sleep(3600)",
    ]);
    net::wait_listening(&s.host, 9054, "udp");
    for (spec, extra) in [
        ("9053:53/udp", None),
        ("9053:53/udp", Some(UPLINK_IP)),
        ("9054:53/udp", None),
    ] {
        let mut args = vec!["publish", a.name.as_str(), spec];
        if let Some(ip) = extra {
            args.extend(["--host-ip", ip]);
        }
        let e = s.fails(&args);
        let port = spec.split(':').next().unwrap();
        assert!(
            e.contains("in use") && e.contains(&format!("{port}/udp")),
            "{args:?}: {e}"
        );
    }
    assert!(
        s.json(&["ports"]).as_array().unwrap().is_empty(),
        "failed publishes left entries"
    );
    // The host service keeps its traffic, from the world and from the host itself.
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 9053, "host-svc", 3).as_deref(),
        Some("host-svc")
    );
    assert_eq!(
        net::udp_ask(&s.host, "127.0.0.1", 9053, "host-lo", 3).as_deref(),
        Some("host-lo")
    );
    // The same number over TCP is another port: free, published, and it works.
    let _web = net::http_server(&a, 80, "a");
    s.ok(&["publish", &a.name, "9053:80"]);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:9053/"), 5).as_deref(),
        Some("a")
    );
    // And a free UDP port publishes fine.
    s.ok(&["publish", &a.name, "9055:53/udp"]);
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 9055, "to-a", 3).as_deref(),
        Some("to-a")
    );
    assert_eq!(s.json(&["ports"]).as_array().unwrap().len(), 2);
}

#[test]
fn unpublish_udp_stops_new_flows_at_once() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.63.0.0/24", &[]);
    let dns = s.container("dns", &n, &[]);
    let other = s.container("other", &n, &[]);
    let dns_ip = s.ip_of(&dns);
    let _srv = net::udp_echo(&dns, 53);
    s.ok(&["publish", &dns.name, "5353:53/udp"]);
    // Before: from the world, from the host (sendmsg hook) and from another container.
    assert_eq!(
        udp_ask_from(&s.ext, UPLINK_IP, 5353, 41000, "before").as_deref(),
        Some("before"),
        "ext -> published udp"
    );
    for (ns, addr) in [
        (&s.host, "127.0.0.1"),
        (&s.host, UPLINK_IP),
        (&other, UPLINK_IP),
    ] {
        assert_eq!(
            net::udp_ask(ns, addr, 5353, "before", 3).as_deref(),
            Some("before"),
            "{} -> {addr}:5353/udp",
            ns.name
        );
    }
    // Unpublishing the TCP port of that number is a no-op that names the protocol, and
    // leaves the UDP one alone.
    let e = s.ok(&["unpublish", &dns.name, "5353"]);
    assert!(e.contains("5353/tcp is not published"), "{e}");
    assert_eq!(
        udp_ask_from(&s.ext, UPLINK_IP, 5353, 41001, "still").as_deref(),
        Some("still")
    );

    s.ok(&["unpublish", &dns.name, "5353/udp"]);
    // After: new flows (new source ports, new sockets) get nothing, on every path...
    assert_eq!(
        udp_ask_from(&s.ext, UPLINK_IP, 5353, 41002, "after"),
        None,
        "ext reached an unpublished udp port"
    );
    for (ns, addr) in [
        (&s.host, "127.0.0.1"),
        (&s.host, UPLINK_IP),
        (&other, UPLINK_IP),
    ] {
        assert_eq!(
            net::udp_ask(ns, addr, 5353, "after", 2),
            None,
            "{} -> {addr}:5353/udp after unpublish",
            ns.name
        );
    }
    // ...while the server itself still answers (only the publication went away).
    assert_eq!(
        net::udp_ask(&s.host, &dns_ip, 53, "direct", 3).as_deref(),
        Some("direct")
    );
    assert!(s.json(&["ports"]).as_array().unwrap().is_empty());
    let again = s.ok(&["unpublish", &dns.name, "5353/udp"]);
    assert!(again.contains("5353/udp is not published"), "{again}");
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
