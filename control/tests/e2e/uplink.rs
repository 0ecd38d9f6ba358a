//! What leaves the uplink (issue 17): padded frames from an internal network do not leave when
//! the uplink's MTU shrinks, and a DF packet too big for it is answered with "fragmentation
//! needed" even before its next hop is resolved; nothing leaves from a Weir subnet
//! untranslated; `init` gives containers the uplink's new MTU.

use rig::{
    EXT_IP, Netns, Sandbox, UPLINK_IP,
    capture::{self, count_while, host_mac_of, scapy},
    net, text,
};

use crate::CONTROL;

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

/// `c` (at `ip`) sends [`padded_frames`] to ext through its gateway.
fn send_padded(s: &Sandbox, c: &Netns, ip: &str) {
    scapy(
        c,
        &padded_frames(&capture::mac(c, "eth0"), &host_mac_of(s, c), ip, EXT_IP),
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
        let seen = count_while(&s.ext, "eth0", "ip", || send_padded(&s, &a, &a_ip));
        assert_eq!(
            seen, 0,
            "next hop resolved {resolved}: an internal network's padded packets left"
        );
        assert!(s.drops("internal-network") >= before + 3);
    }
    // On a network that may leave, the same UDP packet leaves trimmed and masqueraded; the
    // port-less two do not leave at all.
    let seen = count_while(
        &s.ext,
        "eth0",
        &format!("src host {UPLINK_IP} and udp and less 100"),
        || send_padded(&s, &b, &b_ip),
    );
    assert_eq!(seen, 1, "the trimmed UDP packet, masqueraded");
    let seen = count_while(
        &s.ext,
        "eth0",
        "src net 10.73.0.0/24 or src net 10.74.0.0/24",
        || send_padded(&s, &b, &b_ip),
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
    let seen = count_while(&s.ext, "eth0", "src net 10.75.0.0/24", || {
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
    let p = s.problems();
    assert!(
        p.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("uplink's MTU 1400"))),
        "status did not tell: {p:?}"
    );
    let out = s.init(&[]);
    assert!(out.contains("MTU"), "init said nothing of the MTU: {out}");
    assert_eq!(mtu(&a, "eth0").trim(), "1400", "container side");
    assert_eq!(mtu(&s.host, &host_if).trim(), "1400", "host side");
    // Once in step, init has nothing more to change, and status nothing to tell.
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    let out = s.init(&[]);
    assert!(!out.contains("MTU"), "{out}");
    // And traffic flows at the new MTU.
    let _srv = net::iperf_server(&s.ext, 5201);
    let r = net::iperf(&a, EXT_IP, 5201, &["-t", "1"]);
    assert!(net::iperf_bps(&r) > 1e7, "TCP after the MTU change: {r}");
}
