//! IPv6 dual stack: addresses usable at once, neighbour discovery answered by the datapath,
//! container to container, NAT66 to the world, the host, anti-spoofing, link-local and
//! special addresses refused, isolation by identity over both families, IPv4-only networks
//! without IPv6, and the world kept from containers' addresses.

use rig::{EXT_IP6, Netns, Sandbox, net, text};

use crate::CONTROL;

/// A sandbox whose uplink has IPv6, Weir on it, and a dual-stack network.
fn dual(subnet6: &str) -> (Sandbox, String) {
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    s.init(&[]);
    let n = s.network("d", "10.97.0.0/24", &["--subnet6", subnet6]);
    (s, n)
}

/// An IPv6 address in its canonical form (socat prints every group in full).
fn canon(a: &str) -> String {
    let a = a.trim_matches(|c| c == '[' || c == ']');
    a.parse::<std::net::Ipv6Addr>()
        .map_or_else(|_| a.to_string(), |ip| ip.to_string())
}

/// [`dual`] with two containers, `a` and `b`, and `b`'s IPv6 address.
fn two(subnet6: &str) -> (Sandbox, Netns, Netns, String) {
    let (s, n) = dual(subnet6);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let b6 = s.ip6_of(&b);
    (s, a, b, b6)
}

fn ping6(ns: &Netns, addr: &str) -> bool {
    ns.run(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", addr])
        .status
        .success()
}

#[test]
fn dual_stack_containers_talk_reach_the_host_and_the_world() {
    let (s, n) = dual("fd00:97::/64");
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &["--ip6", "fd00:97::20"]);
    let (a6, b6) = (s.ip6_of(&a), s.ip6_of(&b));
    assert_eq!(a6, "fd00:97::2");
    assert_eq!(b6, "fd00:97::20");
    // Usable at once: never tentative, bindable the moment create returns.
    let addrs = a.must(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains("fd00:97::2/64") && !addrs.contains("tentative"),
        "{addrs}"
    );
    let bound = a.run(&[
        "python3",
        "-c",
        "import socket; socket.socket(socket.AF_INET6).bind(('fd00:97::2', 0))",
    ]);
    assert!(bound.status.success(), "{}", text(&bound.stderr));
    let route = a.must(&["ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fd00:97::1"), "{route}");
    // Container to container (neighbour discovery answered in eBPF), IPv4 alongside.
    let before = s.path_packets("ndp-reply");
    assert!(ping6(&a, &b6), "a cannot ping b over IPv6");
    assert!(
        s.path_packets("ndp-reply") > before,
        "no solicitation answered"
    );
    let _srv = net::peer_echo6(&b, 7000);
    assert_eq!(canon(&net::ask_peer6(&a, &b6, 7000)), a6);
    assert!(net::ping(&a, &s.ip_of(&b), 1));
    // The gateway and the host: its stack answers.
    assert!(ping6(&a, "fd00:97::1"), "a cannot ping its IPv6 gateway");
    assert!(ping6(&s.host, &a6), "the host cannot reach a");
    // The world: masqueraded to the uplink's address (NAT66), TCP and echo.
    let _ext = net::peer_echo6(&s.ext, 7001);
    assert_eq!(canon(&net::ask_peer6(&a, EXT_IP6, 7001)), rig::UPLINK_IP6);
    assert!(ping6(&a, EXT_IP6), "no echo through NAT66");
    assert!(s.path_packets("egress-masquerade") > 0);
    assert!(s.path_packets("egress-reply") > 0);
    // `container rm` takes its IPv6 side along.
    s.ok(&["container", "rm", &b.name]);
    assert!(!ping6(&a, &b6), "b's address still answers");
}

#[test]
fn sources_must_be_the_containers_own() {
    let (s, a, _b, b6) = two("fd00:98::/64");
    // b's address, claimed by a: dropped before it goes anywhere.
    a.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:98::77/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let before = s.drops("spoofed-source");
    let o = a.run(&["ping", "-6", "-c", "1", "-W", "1", "-I", "fd00:98::77", &b6]);
    assert!(!o.status.success(), "a spoofed source got through");
    assert!(s.drops("spoofed-source") > before, "not counted as spoofed");
    // A link-local source is for neighbour discovery only, and link-local destinations are
    // nobody's: neither is routed (to the host, say).
    let ll = s.host.must(&[
        "ip",
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        &s.host_if_of(&a),
        "scope",
        "link",
    ]);
    let host_ll = ll
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let before = s.drops("link-local");
    let o = a.run(&[
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "1",
        &format!("{host_ll}%eth0"),
    ]);
    assert!(
        !o.status.success(),
        "a reached the host's link-local address"
    );
    assert!(s.drops("link-local") > before, "not counted as link-local");
    let a_ll = a.must(&[
        "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
    ]);
    let a_ll = a_ll
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // (Crafted: the kernel itself will not source global traffic from a link-local address.)
    let before = s.drops("link-local");
    net::python(
        &a,
        "import sys\nfrom scapy.all import *\n\
         mac = open('/sys/class/net/eth0/address').read().strip()\n\
         p = Ether(src=mac)/IPv6(src=sys.argv[1], dst=sys.argv[2])/ICMPv6EchoRequest(id=7)\n\
         sendp(p, iface='eth0', count=2, verbose=False)\n",
        &[&a_ll, &b6],
    );
    assert!(
        s.drops("link-local") >= before + 2,
        "data from a link-local source was not refused"
    );
}

#[test]
fn rules_are_by_identity_so_they_cover_both_families() {
    let (s, a, b, b6) = two("fd00:99::/64");
    assert!(ping6(&a, &b6));
    s.ok(&["isolate", &a.name, &b.name]);
    let before = s.drops("policy-denied");
    assert!(!ping6(&a, &b6), "isolate left IPv6 open");
    let v6_denied = s.drops("policy-denied");
    assert!(v6_denied > before, "{}", s.stats()["drops"]);
    assert!(!net::ping(&a, &s.ip_of(&b), 1), "isolate left IPv4 open");
    assert!(s.drops("policy-denied") > v6_denied);
    s.ok(&["allow", &a.name, &b.name, "--port", "7000/tcp"]);
    let _srv = net::peer_echo6(&b, 7000);
    assert!(
        !net::ask_peer6(&a, &b6, 7000).is_empty(),
        "allow did not open 7000 over IPv6"
    );
    assert!(!ping6(&a, &b6), "allow opened more than its port");
}

#[test]
fn the_world_never_reaches_a_container_address() {
    let (s, n) = dual("fd00:9a::/64");
    let a = s.container("a", &n, &[]);
    let a6 = s.ip6_of(&a);
    s.ext.must(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:9a::/64",
        "via",
        rig::UPLINK_IP6,
    ]);
    let before = s.drops("not-published");
    assert!(
        !ping6(&s.ext, &a6),
        "the world reached a container directly"
    );
    assert!(s.drops("not-published") > before, "not counted");
    // Nor from a source inside a Weir network.
    s.ext.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:9a::99/128",
        "dev",
        "eth0",
        "nodad",
    ]);
    let before = s.drops("spoofed-source");
    let _ = s.ext.run(&[
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        "fd00:9a::99",
        rig::UPLINK_IP6,
    ]);
    assert!(
        s.drops("spoofed-source") > before,
        "a Weir source from the world passed"
    );
}

#[test]
fn router_advertisements_from_a_container_change_nobody() {
    let (s, n) = dual("fd00:9b::/64");
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let routes = |ns: &Netns| ns.must(&["ip", "-6", "route", "show"]);
    let (host_before, b_before) = (routes(&s.host), routes(&b));
    let before = s.drops("ndp-invalid");
    net::python(
        &a,
        "from scapy.all import *\n\
         ra = Ether(dst='33:33:00:00:00:01')/IPv6(src='fe80::bad', dst='ff02::1', hlim=255)\n\
         ra /= ICMPv6ND_RA(routerlifetime=1800)/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)\n\
         sendp(ra, iface='eth0', count=3, verbose=False)\n",
        &[],
    );
    assert!(
        s.drops("ndp-invalid") >= before + 3,
        "the RAs were not refused"
    );
    assert_eq!(routes(&s.host), host_before);
    assert_eq!(routes(&b), b_before);
}

#[test]
fn ipv4_only_networks_keep_ipv6_off_and_bad_input_is_refused() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n4 = s.network("v4", "10.97.0.0/24", &[]);
    let c = s.container("c", &n4, &[]);
    assert_eq!(
        c.must(&["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
            .trim(),
        "1"
    );
    let e = s.fails(&[
        "container",
        "create",
        &s.name("x"),
        "--network",
        &n4,
        "--ip6",
        "fd00::5",
    ]);
    assert!(e.contains("has no IPv6"), "{e}");
    for (bad, says) in [
        ("fe80::/64", "not unicast space"),
        ("fd00:1::/20", "between /48 and /120"),
        ("fd00:1::1/64", "not a network address"),
        ("nonsense", "invalid IPv6 subnet"),
    ] {
        let e = s.fails(&[
            "network",
            "create",
            &s.name("bad"),
            "--subnet",
            "10.98.0.0/24",
            "--subnet6",
            bad,
        ]);
        assert!(e.contains(says), "{bad}: {e}");
    }
    // --ipv6: a /64 of the instance's own ULA /48; create is idempotent.
    let auto = s.name("auto");
    let args = [
        "network",
        "create",
        &auto,
        "--subnet",
        "10.99.0.0/24",
        "--ipv6",
        "--json",
    ];
    let v = s.json(&args[..args.len() - 1]);
    let subnet6 = v["subnet6"].as_str().unwrap().to_string();
    assert!(
        subnet6.starts_with("fd") && subnet6.ends_with("::/64"),
        "{subnet6}"
    );
    assert_eq!(s.json(&args[..args.len() - 1])["subnet6"], subnet6.as_str());
    let overlap = s.fails(&[
        "network",
        "create",
        &s.name("o"),
        "--subnet",
        "10.100.0.0/24",
        "--subnet6",
        &subnet6,
    ]);
    assert!(overlap.contains("overlaps"), "{overlap}");
    // The gateways go with `down`.
    s.ok(&["down"]);
    let lo = s.host.must(&["ip", "-6", "addr", "show", "dev", "lo"]);
    assert!(!lo.contains(&subnet6.replace("::/64", "::1")), "{lo}");
}

#[test]
fn published_ports_answer_on_the_hosts_ipv6_addresses() {
    let (s, n) = dual("fd00:9c::/64");
    let web = s.container("web", &n, &["--publish", "8080:7000"]);
    let other = s.container("o", &n, &[]);
    let _srv = net::peer_echo6(&web, 7000);
    // From the world, DNATed: the container sees the client's own address.
    assert_eq!(
        canon(&net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8080)),
        EXT_IP6
    );
    assert!(s.path_packets("published-in") > 0);
    assert!(s.path_packets("published-reply") > 0);
    // Hairpin through the host's address: the peer's own address; itself: its gateway.
    assert_eq!(
        canon(&net::ask_peer6(&other, rig::UPLINK_IP6, 8080)),
        s.ip6_of(&other)
    );
    assert_eq!(
        canon(&net::ask_peer6(&web, rig::UPLINK_IP6, 8080)),
        "fd00:9c::1"
    );
    // Policy holds through the published port, as for a direct connection.
    s.ok(&["isolate", &other.name, &web.name]);
    assert_eq!(
        net::ask_peer6(&other, rig::UPLINK_IP6, 8080),
        "",
        "isolate left the hairpin open"
    );
    // A port published on an IPv4 address is IPv4's alone; unpublish takes both families.
    let v4only = s.container("v4only", &n, &[]);
    s.ok(&[
        "publish",
        &v4only.name,
        "8081:7000",
        "--host-ip",
        rig::UPLINK_IP,
    ]);
    let _srv2 = net::peer_echo6(&v4only, 7000);
    assert_eq!(net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8081), "");
    s.ok(&["unpublish", &web.name, "8080"]);
    assert_eq!(
        net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8080),
        "",
        "unpublish left IPv6 open"
    );
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

const FAR6: &str = "2001:db8:19::2";

/// A host `far` behind ext, ext routing to it over a link of MTU 1280 while far's own link
/// says 1500: far advertises a 1440-byte MSS, so 1500-byte packets towards it meet ext's
/// smaller link, and ext, a router, answers "packet too big" to their source.
fn far_behind_a_smaller_mtu(s: &Sandbox) -> Netns {
    let far = Netns::new(&rig::unique("far"));
    rig::must(&[
        "ip",
        "link",
        "add",
        "fx0",
        "netns",
        &s.ext.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &far.name,
    ]);
    s.ext
        .must(&["ip", "link", "set", "fx0", "mtu", "1280", "up"]);
    s.ext.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:19::1/64",
        "dev",
        "fx0",
        "nodad",
    ]);
    // ext is a sandbox namespace of this test's: it may route.
    s.ext
        .must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    far.must(&["ip", "link", "set", "eth0", "up"]);
    far.must(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{FAR6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    far.must(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:19::1",
    ]);
    far
}

/// Bytes a one-shot sink on `port` in `ns` received (`wc -c`), once its peer has finished.
fn sink(ns: &Netns, port: u16) -> (rig::Bg, std::path::PathBuf) {
    let out = std::env::temp_dir().join(rig::unique("sink"));
    let bg = ns.spawn(&[
        "sh",
        "-c",
        &format!(
            "socat -u TCP6-LISTEN:{port},reuseaddr - | wc -c > {}",
            out.display()
        ),
    ]);
    net::wait_listening(ns, port, "tcp");
    (bg, out)
}

#[test]
fn a_smaller_path_mtu_reaches_the_container_through_nat66_and_published_ports() {
    let (s, n) = dual("fd00:9d::/64");
    let a = s.container("a", &n, &[]);
    let far = far_behind_a_smaller_mtu(&s);
    // Masqueraded: a sends 1 MB to far; the routers' "packet too big" names the host.
    let (bg, out) = sink(&far, 7100);
    let sent = a.sh(&format!(
        "head -c 1000000 /dev/zero | timeout 20 socat -u - TCP6:[{FAR6}]:7100"
    ));
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    drop(bg.finish_within(std::time::Duration::from_secs(10)));
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert_eq!(
        got.trim(),
        "1000000",
        "the upload stalled: no path MTU reached a"
    );
    let translated = s.path_packets("icmp-error-translated");
    assert!(translated > 0, "no error translated");
    let pmtu = a.must(&["ip", "-6", "route", "get", FAR6]);
    assert!(pmtu.contains("mtu 1280"), "{pmtu}");
    // Published: far downloads 1 MB from a container's published port.
    let web = s.container("web", &n, &["--publish", "8090:7101"]);
    let _srv = web.spawn(&[
        "socat",
        "TCP6-LISTEN:7101,reuseaddr,fork",
        "SYSTEM:head -c 1000000 /dev/zero",
    ]);
    net::wait_listening(&web, 7101, "tcp");
    let got = far.sh(&format!(
        "timeout 20 socat -u TCP6:[{}]:8090 - | wc -c",
        rig::UPLINK_IP6
    ));
    assert_eq!(text(&got.stdout).trim(), "1000000", "the download stalled");
    assert!(s.path_packets("icmp-error-translated") > translated);
}

#[test]
fn conntrack_lists_and_flushes_ipv6_flows() {
    let (s, n) = dual("fd00:9e::/64");
    let a = s.container("a", &n, &[]);
    let a6 = s.ip6_of(&a);
    let _ext = s.ext.spawn(&[
        "socat",
        "TCP6-LISTEN:7200,reuseaddr,fork",
        "SYSTEM:sleep 30",
    ]);
    net::wait_listening(&s.ext, 7200, "tcp");
    let _client = a.spawn(&["socat", "-u", &format!("TCP6:[{EXT_IP6}]:7200"), "-"]);
    let listed = |s: &Sandbox| -> Vec<serde_json::Value> {
        s.json(&["conntrack", "--container", &a.name])
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["original"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("[{a6}]"))
            })
            .cloned()
            .collect()
    };
    assert!(rig::wait_for(std::time::Duration::from_secs(5), || {
        !listed(&s).is_empty()
    }));
    let f = &listed(&s)[0];
    assert_eq!(f["proto"], "tcp");
    assert_eq!(f["kind"], "masquerade");
    let translated = f["translated"].as_str().unwrap();
    assert!(
        translated.starts_with(&format!("[{}]:", rig::UPLINK_IP6)),
        "{translated}"
    );
    assert_eq!(f["state"], "established");
    let out = s.ok(&["conntrack", "flush", "--container", &a.name]);
    assert!(out.contains('1'), "{out}");
    assert!(listed(&s).is_empty(), "flush left the IPv6 flow");
}

/// A TCP connection from the host's own socket (family `fam`: 6, or 46 for a dual-stack
/// socket) to `addr:port`: the first line the server sends, "" on failure.
fn host_tcp(s: &Sandbox, addr: &str, port: u16, dual: bool) -> String {
    net::python(
        &s.host,
        "import socket, sys\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if sys.argv[3] == '1' else 1)\n\
         s.settimeout(3)\n\
         try:\n    s.connect((sys.argv[1], int(sys.argv[2])))\n    print(s.recv(200).decode().strip())\n\
         except Exception as e:\n    print('')\n",
        &[addr, &port.to_string(), if dual { "1" } else { "0" }],
    )
    .trim()
    .to_string()
}

#[test]
fn the_hosts_own_ipv6_sockets_reach_published_ports() {
    let (s, n) = dual("fd00:9f::/64");
    let web = s.container(
        "web",
        &n,
        &["--publish", "8080:7000", "--publish", "5353:53/udp"],
    );
    let web6 = s.ip6_of(&web);
    let _srv = net::peer_echo6(&web, 7000);
    // [::1] and the host's own IPv6 address, through connect6 (Docker needs docker-proxy for
    // the first, netavark cannot).
    assert_eq!(
        canon(&host_tcp(&s, "::1", 8080, false)),
        "fd00:9f::1",
        "[::1]:8080"
    );
    assert!(
        !host_tcp(&s, rig::UPLINK_IP6, 8080, false).is_empty(),
        "[uplink]:8080"
    );
    // A dual-stack socket to an IPv4-mapped address reaches the IPv4 publication.
    // (The container sees the host come from its IPv4 gateway, as for any IPv4 connection.)
    let mapped = host_tcp(&s, "::ffff:127.0.0.1", 8080, true);
    assert_eq!(canon(&mapped), "::ffff:10.97.0.1", "::ffff:127.0.0.1:8080");
    // UDP to [::1]: the reply comes back from [::1]:5353 (recvmsg6 restores it).
    let _echo = web.spawn(&["socat", "UDP6-LISTEN:53,fork,reuseaddr", "EXEC:cat"]);
    net::wait_listening(&web, 53, "udp");
    let reply = net::python(
        &s.host,
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.settimeout(3)\n\
         s.sendto(b'ping6', ('::1', 5353))\n\
         data, peer = s.recvfrom(100)\n\
         print(data.decode(), peer[0], peer[1])\n",
        &[],
    );
    assert_eq!(reply.trim(), "ping6 ::1 5353", "reply source not restored");
    // A dual-stack UDP socket sending to a mapped address runs sendmsg4 (the kernel converts
    // it), and its reply is restored by recvmsg6 from the IPv4 reverse map.
    let reply = net::python(
        &s.host,
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
         s.settimeout(3)\n\
         s.sendto(b'ping4', ('::ffff:127.0.0.1', 5353))\n\
         data, peer = s.recvfrom(100)\n\
         print(data.decode(), peer[0], peer[1])\n",
        &[],
    );
    assert_eq!(
        reply.trim(),
        "ping4 ::ffff:127.0.0.1 5353",
        "mapped reply not restored"
    );
    // A socket that is IPv6 only cannot use a mapped address: refused, nothing half-done.
    assert_eq!(host_tcp(&s, "::ffff:127.0.0.1", 8080, false), "");
    assert!(!web6.is_empty());
}

#[test]
fn init_rerun_keeps_ipv6_flows_and_the_hosts_ra_route() {
    let (s, a, b, b6) = two("fd00:a0::/64");
    // A router-advertised default route on the host (as SLAAC hosts have): Weir never turns
    // on all.forwarding, which would make the kernel drop it.
    s.host.must(&[
        "ip", "-6", "route", "replace", "default", "via", EXT_IP6, "proto", "ra",
    ]);
    // Two live flows, container to container and masqueraded, held open across init.
    let _b_srv = b.spawn(&["socat", "TCP6-LISTEN:7300,reuseaddr,fork", "EXEC:cat"]);
    let _x_srv = s
        .ext
        .spawn(&["socat", "TCP6-LISTEN:7301,reuseaddr,fork", "EXEC:cat"]);
    net::wait_listening(&b, 7300, "tcp");
    net::wait_listening(&s.ext, 7301, "tcp");
    let talk = |port: u16, to: &str| {
        net::python(
            &a,
            "import socket, sys, time\n\
             s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n\
             s.sendall(b'one'); assert s.recv(10) == b'one'\n\
             open(sys.argv[3], 'w').write('up')\n\
             time.sleep(3)\n\
             s.sendall(b'two'); print(s.recv(10).decode())\n",
            &[to, &port.to_string(), &format!("/tmp/{}-{port}", a.name)],
        )
    };
    std::thread::scope(|sc| {
        let c2c = sc.spawn(|| talk(7300, &b6));
        let out = sc.spawn(|| talk(7301, EXT_IP6));
        let marker = |p: u16| std::path::PathBuf::from(format!("/tmp/{}-{p}", a.name));
        assert!(rig::wait_for(std::time::Duration::from_secs(5), || marker(
            7300
        )
        .exists()
            && marker(7301).exists()));
        s.init(&[]);
        assert_eq!(
            c2c.join().unwrap().trim(),
            "two",
            "the container flow broke"
        );
        assert_eq!(out.join().unwrap().trim(), "two", "the NAT66 flow broke");
        for p in [7300, 7301] {
            let _ = std::fs::remove_file(marker(p));
        }
    });
    assert_eq!(
        s.host
            .must(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"])
            .trim(),
        "0"
    );
    let r = s.host.must(&["ip", "-6", "route", "show", "default"]);
    assert!(r.contains("proto ra"), "{r}");
    s.ok(&["down"]);
    let r = s.host.must(&["ip", "-6", "route", "show", "default"]);
    assert!(r.contains("proto ra"), "down took the host's route: {r}");
}

#[test]
fn weir_answers_too_big_and_expiring_packets_itself() {
    let (s, n) = dual("fd00:a1::/64");
    let a = s.container("a", &n, &[]);
    // The uplink shrinks below the container's link (its MTU was the uplink's at create):
    // with IPv6 forwarding off the host stack would answer nothing; Weir says "packet too
    // big".
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1280"]);
    // (Unsegmented: a GSO packet is forwardable whatever its size, and its segments are cut
    // for the device that sends them.)
    let o = a.run(&[
        "ping", "-6", "-c", "1", "-W", "2", "-s", "1400", "-M", "do", EXT_IP6,
    ]);
    let said = text(&o.stdout);
    assert!(
        said.contains("fd00:a1::1") && said.contains("mtu=1280"),
        "no packet too big from the gateway: {said}"
    );
    let pmtu = a.must(&["ip", "-6", "route", "get", EXT_IP6]);
    assert!(pmtu.contains("mtu 1280"), "{pmtu}");
    // Hop limit 1 towards the world: time exceeded from the gateway, as from a router.
    let o = a.run(&["ping", "-6", "-c", "1", "-W", "2", "-t", "1", EXT_IP6]);
    let said = text(&o.stdout);
    assert!(
        said.contains("fd00:a1::1") && said.to_lowercase().contains("time exceeded"),
        "{said}"
    );
}

#[test]
fn fragments_follow_their_flow() {
    let (s, a, _b, b6) = two("fd00:a2::/64");
    // 3000-byte echoes: the sender's stack fragments them (IPv6 routers never do); every
    // fragment follows the flow its first one opened or matched, both ways.
    let big = |ns: &Netns, to: &str| {
        ns.run(&[
            "ping", "-6", "-c", "2", "-i", "0.3", "-W", "2", "-s", "3000", to,
        ])
        .status
        .success()
    };
    assert!(big(&a, &b6), "fragmented echo container to container");
    assert!(big(&a, EXT_IP6), "fragmented echo through NAT66");
    assert_eq!(s.drops("fragment-untracked"), 0);
    // A later fragment whose first never came opens nothing.
    net::python(
        &a,
        "import sys\nfrom scapy.all import *\n\
         mac = open('/sys/class/net/eth0/address').read().strip()\n\
         p = Ether(src=mac)/IPv6(src=sys.argv[1], dst=sys.argv[2])/IPv6ExtHdrFragment(offset=100, m=0, id=0xabcdef, nh=17)/Raw(b'x'*64)\n\
         sendp(p, iface='eth0', count=1, verbose=False)\n",
        &[&s.ip6_of(&a), EXT_IP6],
    );
    assert_eq!(s.drops("fragment-untracked"), 1, "{}", s.stats()["drops"]);
}

#[test]
fn a_containers_errors_reach_the_peer_of_its_translated_flow() {
    let (s, n) = dual("fd00:a3::/64");
    // Published UDP with nothing listening behind it: the container's stack answers "port
    // unreachable" about the DNATed datagram; translated, the client learns it at once
    // (a connected UDP socket gets ECONNREFUSED) instead of timing out.
    let _c = s.container("c", &n, &["--publish", "5354:53/udp"]);
    let said = net::python(
        &s.ext,
        "import socket, sys\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.settimeout(3)\n\
         s.connect((sys.argv[1], 5354))\n\
         s.send(b'x')\n\
         try:\n    s.recv(10); print('answered')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')\n",
        &[rig::UPLINK_IP6],
    );
    assert_eq!(
        said.trim(),
        "refused",
        "the container's error did not reach the client"
    );
    assert!(s.path_packets("icmp-error-translated") > 0);
}

#[test]
fn publishing_on_one_ipv6_host_address() {
    let (s, n) = dual("fd00:a5::/64");
    let web = s.container("web", &n, &[]);
    let _srv = net::peer_echo6(&web, 7000);
    // The host's IPv6 loopback only: the host's own sockets, never the wire.
    s.ok(&["publish", &web.name, "8085:7000", "--host-ip", "::1"]);
    assert!(!host_tcp(&s, "::1", 8085, false).is_empty(), "[::1]:8085");
    assert_eq!(
        net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8085),
        "",
        "::1-only port from the world"
    );
    assert_eq!(
        host_tcp(&s, rig::UPLINK_IP6, 8085, false),
        "",
        "::1-only port on another address"
    );
    // One global address: from the world, on that address alone, and not over IPv4.
    s.ok(&[
        "publish",
        &web.name,
        "8086:7000",
        "--host-ip",
        rig::UPLINK_IP6,
    ]);
    assert_eq!(
        canon(&net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8086)),
        EXT_IP6
    );
    assert!(net::curl(&s.ext, &format!("http://{}:8086/", rig::UPLINK_IP), 2).is_none());
    let ports = s.ok(&["ports", &web.name]);
    assert!(
        ports.contains("[::1]") && ports.contains(&format!("[{}]", rig::UPLINK_IP6)),
        "{ports}"
    );
    // Refused: not a host address; an IPv6 address for a container without IPv6.
    let e = s.fails(&[
        "publish",
        &web.name,
        "8087:7000",
        "--host-ip",
        "2001:db8:ff::1",
    ]);
    assert!(e.contains("not an address of the host"), "{e}");
    let n4 = s.network("v4", "10.98.0.0/24", &[]);
    let v4 = s.container("v4", &n4, &[]);
    let e = s.fails(&["publish", &v4.name, "8088:80", "--host-ip", "::1"]);
    assert!(e.contains("has no IPv6"), "{e}");
    s.ok(&["unpublish", &web.name, "8086", "--host-ip", rig::UPLINK_IP6]);
    assert_eq!(net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8086), "");
}

#[test]
fn a_host_without_ipv6_refuses_ipv6_networks_and_keeps_ipv4() {
    let s = Sandbox::new(CONTROL);
    // The sandbox's host namespace only (never the machine's).
    s.host
        .must(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    s.init(&[]);
    let e = s.fails(&[
        "network",
        "create",
        &s.name("d"),
        "--subnet",
        "10.97.0.0/24",
        "--ipv6",
    ]);
    assert!(e.contains("IPv6 is disabled on this host"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(
        s.json(&["network", "ls"]),
        serde_json::json!([]),
        "half-made network"
    );
    let n = s.network("v4", "10.97.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    assert!(net::ping(&a, &s.ip_of(&b), 2));
}

/// Many short IPv6 connections of every kind, with 1-2 s timeouts: nothing is left behind.
#[test]
fn soak_with_ipv6_connections_leaves_nothing() {
    let n_conn: usize = std::env::var("WEIR_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
        / 10;
    let timeouts = [
        "tcp-closed=1",
        "tcp-fin=2",
        "tcp-syn=2",
        "udp=2",
        "udp-stream=2",
    ];
    let init: Vec<&str> = timeouts.iter().flat_map(|t| ["--ct-timeout", t]).collect();
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    s.init(&init);
    let n = s.network("d", "10.97.0.0/24", &["--subnet6", "fd00:a6::/64"]);
    let client = s.container("client", &n, &[]);
    let server = s.container("server", &n, &["--publish", "8080:7000"]);
    let server6 = s.ip6_of(&server);
    let _srv = server.spawn(&["socat", "TCP6-LISTEN:7000,reuseaddr,fork", "EXEC:echo ok"]);
    let _ext = s
        .ext
        .spawn(&["socat", "TCP6-LISTEN:7001,reuseaddr,fork", "EXEC:echo ok"]);
    net::wait_listening(&server, 7000, "tcp");
    net::wait_listening(&s.ext, 7001, "tcp");
    let many = |ns: &Netns, addr: &str, port: u16| {
        net::python(
            ns,
            "import socket, sys\n\
             ok = 0\n\
             for _ in range(int(sys.argv[3])):\n\
             \x20   c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n\
             \x20   ok += c.recv(10) == b'ok\\n'\n\
             \x20   c.close()\n\
             print(ok)\n",
            &[addr, &port.to_string(), &n_conn.to_string()],
        )
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
    };
    assert_eq!(
        many(&client, &server6, 7000),
        n_conn,
        "container to container"
    );
    assert_eq!(many(&client, EXT_IP6, 7001), n_conn, "masqueraded");
    assert_eq!(many(&s.ext, rig::UPLINK_IP6, 8080), n_conn, "published");
    assert_eq!(
        many(&s.host, "::1", 8080),
        n_conn,
        "the host through connect6"
    );
    let live = || s.json(&["conntrack"]).as_array().map_or(0, Vec::len);
    assert!(
        rig::wait_for(std::time::Duration::from_secs(10), || live() == 0),
        "flows left: {}",
        s.json(&["conntrack"])
    );
    s.ok(&["gc"]);
    let left = s
        .json(&["conntrack", "--all"])
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(left, 0, "entries left after gc");
}

/// An IPv6-only network (`--subnet6` without `--subnet`): its containers have no IPv4 at all,
/// talk to each other, the host and the world (NAT66), and publish on the host's IPv6
/// addresses; IPv4 asks are refused by name and nothing is left after removal.
#[test]
fn ipv6_only_networks() {
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    s.init(&[]);
    let n = s.name("only6");
    let out = s.ok(&["network", "create", &n, "--subnet6", "fd00:4a::/64"]);
    assert!(out.contains("fd00:4a::/64 gateway fd00:4a::1"), "{out}");
    assert!(!out.contains("10."), "{out}");
    // The same create again is a no-op; IPv4 asks of it are refused.
    s.ok(&["network", "create", &n, "--subnet6", "fd00:4a::/64"]);
    let e = s.fails(&[
        "container",
        "create",
        &s.name("x"),
        "--network",
        &n,
        "--ip",
        "10.1.0.5",
    ]);
    assert!(e.contains("IPv6-only"), "{e}");
    let e = s.fails(&["network", "create", &s.name("none")]);
    assert!(e.contains("--subnet6"), "{e}");
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &["--publish", "8081:80"]);
    let (a6, b6) = (s.ip6_of(&a), s.ip6_of(&b));
    assert_eq!(a6, "fd00:4a::2");
    let v4 = a.must(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        v4.trim().is_empty(),
        "an IPv4 address on an IPv6-only network: {v4}"
    );
    let listed = s.json(&["container", "ls"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("ip").is_none()),
        "{listed}"
    );
    assert!(ping6(&a, &b6), "a -> b");
    assert!(ping6(&a, "fd00:4a::1"), "a -> its gateway");
    assert!(ping6(&a, EXT_IP6), "a -> ext through NAT66");
    let _srv = net::peer_echo6(&b, 80);
    assert_eq!(canon(&net::ask_peer6(&a, &b6, 80)), a6, "TCP a -> b");
    assert!(
        !net::ask_peer6(&s.host, &b6, 80).is_empty(),
        "the host -> b"
    );
    // The world through the published port sees the client's own address.
    assert_eq!(
        canon(&net::ask_peer6(&s.ext, rig::UPLINK_IP6, 8081)),
        EXT_IP6
    );
    let ports = s.ok(&["ports"]);
    assert!(ports.contains(&format!("[{b6}]:80")), "{ports}");
    // An IPv4 host address cannot reach a container without IPv4.
    let e = s.fails(&["publish", &b.name, "8082:80", "--host-ip", "127.0.0.1"]);
    assert!(e.contains("has no IPv4"), "{e}");
    // Nothing drifts, and a re-init keeps it all working.
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    s.init(&[]);
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    assert_eq!(canon(&net::ask_peer6(&a, &b6, 80)), a6, "after init");
    // Removal leaves nothing.
    s.ok(&["container", "rm", &a.name]);
    s.ok(&["container", "rm", &b.name]);
    s.ok(&["network", "rm", &n]);
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}
