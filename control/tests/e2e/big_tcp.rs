//! BIG TCP (`control init --big-tcp`): on an uplink that takes no GSO packet past 64 KiB,
//! container links keep 64 KiB (`auto`, the default); `on` gives them 185,000 bytes —
//! existing links follow at once, new ones are made so, `status` checks both ends — and
//! the datapath carries those packets, whose IP length field reads 0, both families.

use std::time::Duration;

use rig::{Netns, Sandbox, capture, net};

use crate::CONTROL;

/// `dev`'s GSO size in `ns` (IPv6's and the generic one: iproute2 6.1 shows no other).
fn gso(ns: &Netns, dev: &str) -> u64 {
    let o = ns.must(&["ip", "-d", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&o).expect("ip -j");
    v[0]["gso_max_size"].as_u64().expect("gso_max_size")
}

fn links_of(s: &Sandbox, c: &Netns) -> (u64, u64) {
    (gso(c, "eth0"), gso(&s.host, &s.host_if_of(c)))
}

/// Packets past 64 KiB `from` sends while it moves 64 MB to `to_addr`:5201 (an iperf3
/// server in `to`), seen on `from`'s host-side veth as they enter the datapath.
fn big_packets(s: &Sandbox, from: &Netns, to: &Netns, to_addr: &str) -> usize {
    // TCP sizes its GSO packets to ~1 ms at its pacing rate: on a loaded machine it would
    // build none past 64 KiB. At least 200 segments each (the sender's namespace only).
    from.must(&["sysctl", "-qw", "net.ipv4.tcp_min_tso_segs=200"]);
    let _srv = net::iperf_server(to, 5201);
    let cap = capture::live(
        &s.host,
        &s.host_if_of(from),
        "-s 96 -c 5 inbound and greater 65600",
        10,
    );
    let r = net::iperf(from, to_addr, 5201, &["-n", "64M"]);
    // iperf3's receiver total can stop short of the last bytes in flight: the sender's total
    // says the transfer completed, the receiver's that it got through.
    let sent = r["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let got = r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        sent >= 64 << 20 && got >= 32 << 20,
        "the transfer to {to_addr} did not complete: {sent} bytes sent, {got} received, {} retransmits",
        net::iperf_retransmits(&r)
    );
    let out = cap.finish_within(Duration::from_secs(10));
    rig::text(&out.stdout).lines().count()
}

#[test]
fn big_tcp_follows_the_setting_and_its_packets_pass() {
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    let out = s.init(&[]);
    assert!(
        out.contains("big tcp off"),
        "auto on a 64 KiB uplink: {out}"
    );
    let n = s.network("n", "10.62.0.0/24", &["--subnet6", "fd00:62::/64"]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    assert_eq!(links_of(&s, &a), (65_536, 65_536));
    let out = s.init(&["--big-tcp", "on"]);
    assert!(out.contains("big tcp on (GSO 185000 bytes)"), "{out}");
    assert_eq!(
        links_of(&s, &a),
        (185_000, 185_000),
        "existing links follow"
    );
    let c = s.container("c", &n, &[]);
    assert_eq!(
        links_of(&s, &c),
        (185_000, 185_000),
        "new links are made so"
    );
    let problems = s.json(&["status"])["problems"].clone();
    assert_eq!(problems, serde_json::json!([]), "status: {problems}");
    let (b4, b6) = (s.ip_of(&b), s.ip6_of(&b));
    for addr in [&b4, &b6] {
        let seen = big_packets(&s, &a, &b, addr);
        assert!(
            seen > 0,
            "no packet past 64 KiB entered the datapath to {addr}"
        );
    }
    assert_eq!(
        s.drops("malformed"),
        0,
        "BIG TCP packets taken for malformed ones"
    );
    // Back off: links follow again, and status sees a link changed behind Weir's back.
    s.init(&["--big-tcp", "off"]);
    assert_eq!(links_of(&s, &a), (65_536, 65_536));
    let host_if = s.host_if_of(&a);
    s.host.must(&[
        "ip",
        "link",
        "set",
        "dev",
        &host_if,
        "gso_max_size",
        "100000",
    ]);
    let problems = s.json(&["status"])["problems"].to_string();
    assert!(
        problems.contains("GSO sizes BIG TCP off gives"),
        "status misses a link out of step: {problems}"
    );
    s.init(&[]);
    assert_eq!(links_of(&s, &a), (65_536, 65_536), "init brings it back");
}
