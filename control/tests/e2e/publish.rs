//! Published ports (DNAT in eBPF): reachable from the world, the host and other containers,
//! on every host address or one; conflicts and ports a host socket holds are refused;
//! `unpublish` stops new connections and datagrams at once; XDP on the uplink serves them too.

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

use crate::CONTROL;

/// Docker's publishing forms: a host port range takes its first free port (not one another
/// container publishes, nor one a host socket holds), a bare port takes any free one of the
/// host's ephemeral range; both print what they took, are idempotent, and are reachable.
#[test]
fn ranges_and_any_free_host_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.53.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let _ea = net::peer_echo(&a, 80, 0);
    let _eb = net::peer_echo(&b, 80, 0);
    let _holder = net::tcp_echo(&s.host, 9001); // a host socket on 9001
    let host_port = |out: &str| -> u16 {
        let v: serde_json::Value = serde_json::from_str(out).expect("publish --json");
        v["host_port"].as_u64().expect("host_port") as u16
    };
    let pa = host_port(&s.ok(&["publish", &a.name, "9000-9003:80", "--json"]));
    let pb = host_port(&s.ok(&["publish", &b.name, "9000-9003:80", "--json"]));
    assert_eq!((pa, pb), (9000, 9002), "9001 is held by a host socket");
    // Idempotent: the same request again is the same publication.
    assert_eq!(
        host_port(&s.ok(&["publish", &a.name, "9000-9003:80", "--json"])),
        9000
    );
    let any = s.ok(&["publish", &b.name, "80"]);
    let port: u16 = any
        .split_whitespace()
        .find_map(|w| w.strip_prefix("*:")?.strip_suffix("/tcp")?.parse().ok())
        .unwrap_or_else(|| panic!("no port printed: {any}"));
    let (lo, hi) = net::ephemeral_ports(&s.host);
    assert!((lo..=hi).contains(&port), "{port} outside {lo}-{hi}");
    assert_eq!(s.ok(&["publish", &b.name, "80"]), any, "idempotent");
    for p in [pa, pb, port] {
        let got = net::ask_peer(&s.ext, UPLINK_IP, p, "");
        assert_eq!(got.split(' ').next(), Some(EXT_IP), "{p}: {got:?}");
    }
    assert_eq!(s.json(&["ports"]).as_array().unwrap().len(), 3);
    // A full range is an error that names it, and changes nothing.
    let e = s.fails(&["publish", &a.name, "9001-9002:81"]);
    assert!(e.contains("no free host port in 9001-9002"), "{e}");
    assert_eq!(s.json(&["ports"]).as_array().unwrap().len(), 3);
}

#[test]
fn published_port_reachable_from_everywhere() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.52.0.0/24", &[]);
    let web = s.container("web", &n, &[]);
    let other = s.container("other", &n, &[]);
    let _srv = net::peer_echo(&web, 80, 0);
    let _udp = net::udp_echo(&web, 53);
    s.ok(&["publish", &web.name, "8080:80"]);
    s.ok(&["publish", &web.name, "5353:53/udp"]);
    let ports = s.json(&["ports"]);
    assert_eq!(ports.as_array().unwrap().len(), 2);
    // From ext through the uplink; the container sees the real client address.
    assert_eq!(
        net::ask_peer(&s.ext, UPLINK_IP, 8080, "").split(' ').next(),
        Some(EXT_IP)
    );
    assert_eq!(
        net::udp_ask(&s.ext, UPLINK_IP, 5353, "ping-ext", 3).as_deref(),
        Some("ping-ext")
    );
    // From the host itself: uplink address and loopback, TCP and UDP.
    for addr in [UPLINK_IP, "127.0.0.1"] {
        assert!(
            !net::ask_peer(&s.host, addr, 8080, "").is_empty(),
            "host -> {addr}:8080"
        );
        assert_eq!(
            net::udp_ask(&s.host, addr, 5353, "ping-host", 3).as_deref(),
            Some("ping-host"),
            "host -> {addr}:5353/udp"
        );
    }
    // Hairpin from another container, and from the container itself (through its gateway).
    assert!(!net::ask_peer(&other, UPLINK_IP, 8080, "").is_empty());
    assert_eq!(
        net::udp_ask(&other, UPLINK_IP, 5353, "ping-hairpin", 3).as_deref(),
        Some("ping-hairpin")
    );
    assert!(!net::ask_peer(&web, UPLINK_IP, 8080, "").is_empty());
    assert!(!net::ask_peer(&web, "10.52.0.1", 8080, "").is_empty());
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
