//! Checksums through NAT: gigabyte transfers through DNAT and MASQUERADE arrive without
//! checksum errors, a UDP datagram without checksum stays valid, with offloads off on every
//! hop (software checksums, like a wire) no receiver counts a bad one, and the partial
//! checksums of offloading senders, IPv4 and IPv6, come out right once completed.

use rig::{EXT_IP, EXT_IP6, Netns, Sandbox, UPLINK_IP, UPLINK_IP6, capture, net, text};

use crate::CONTROL;

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

/// The receive-side checksum errors of `ns`: TCP (both families), UDP, UDP over IPv6.
fn csum_errors(ns: &Netns) -> [u64; 3] {
    ["TcpInCsumErrors", "UdpInCsumErrors", "Udp6InCsumErrors"].map(|c| net::nstat(ns, c))
}

/// CHECKSUM_PARTIAL through NAT, both families. The containers' stacks leave their TCP and
/// UDP checksums to offload (over a veth the field holds only the pseudo-header's sum), the
/// datapath rewrites addresses and ports and amends that seed, and the host's uplink, its
/// offloads off, completes every checksum in software on the way out. ext gets finished
/// checksums and verifies each: a seed amended wrong shows there as a checksum error. Out
/// through masquerade, and the answers of a published port (the container sends: iperf -R).
#[test]
fn partial_checksums_are_completed_right_after_nat() {
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    s.init(&[]);
    let n = s.network("n", "10.61.0.0/24", &["--subnet6", "fd00:61::/64"]);
    let web = s.container("web", &n, &[]);
    let cli = s.container("cli", &n, &[]);
    s.host.must(&["ethtool", "-K", "up0", "tx", "off"]);
    let _srv = net::iperf_server(&web, 5201);
    let _ext_srv = net::iperf_server(&s.ext, 5202);
    s.ok(&["publish", &web.name, "5201:5201"]);
    s.ok(&["publish", &web.name, "5201:5201/udp"]);
    // The receiver verifies: a datagram sent with a wrong checksum is counted, per family.
    let before = csum_errors(&s.ext);
    capture::scapy(
        &cli,
        &format!(
            "send(IP(dst='{EXT_IP}')/UDP(sport=4000,dport=9,chksum=0x1234)/b'bad')\n\
             send(IPv6(dst='{EXT_IP6}')/UDP(sport=4000,dport=9,chksum=0x1234)/b'bad')"
        ),
    );
    assert_eq!(
        csum_errors(&s.ext),
        [before[0], before[1] + 1, before[2] + 1],
        "ext does not verify what it receives: this test could not fail"
    );
    let before = csum_errors(&s.ext);
    for (ns, addr, port, extra) in [
        (&cli, EXT_IP, 5202, &[][..]),
        (&cli, EXT_IP6, 5202, &[][..]),
        (&s.ext, UPLINK_IP, 5201, &["-R"][..]),
        (&s.ext, UPLINK_IP6, 5201, &["-R"][..]),
        (&cli, EXT_IP, 5202, &["-u", "-b", "200M", "-l", "1200"][..]),
        (&cli, EXT_IP6, 5202, &["-u", "-b", "200M", "-l", "1200"][..]),
        (
            &s.ext,
            UPLINK_IP,
            5201,
            &["-R", "-u", "-b", "200M", "-l", "1200"][..],
        ),
        (
            &s.ext,
            UPLINK_IP6,
            5201,
            &["-R", "-u", "-b", "200M", "-l", "1200"][..],
        ),
    ] {
        let mut a = vec!["-t", "2"];
        a.extend_from_slice(extra);
        let r = net::iperf(ns, addr, port, &a);
        assert!(
            r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 1 << 20
                || r["end"]["sum"]["bytes"].as_u64().unwrap_or(0) > 1 << 20,
            "iperf3 {extra:?} to {addr}:{port} moved nothing"
        );
    }
    assert_eq!(
        csum_errors(&s.ext),
        before,
        "checksum errors at ext (TCP, UDP, UDP6) after NAT of partial checksums"
    );
}
