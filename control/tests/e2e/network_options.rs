//! Per-network settings: a network's own MTU (`--mtu`, lower than the uplink's) and
//! `--isolated` (members reach each other only by rule, as Docker's `enable_icc=false`).

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net};

use crate::CONTROL;

fn mtu(ns: &Netns, dev: &str) -> String {
    ns.must(&["cat", &format!("/sys/class/net/{dev}/mtu")])
        .trim()
        .to_string()
}

#[test]
fn a_network_mtu_is_its_containers_and_init_keeps_it() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    s.add_ipv6();
    let n = s.network("n", "10.46.0.0/24", &["--mtu", "1400"]);
    let wide = s.network("wide", "10.46.1.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let w = s.container("w", &wide, &[]);
    assert_eq!(mtu(&a, "eth0"), "1400", "container side");
    assert_eq!(mtu(&s.host, &s.host_if_of(&a)), "1400", "host side");
    assert_eq!(
        mtu(&w, "eth0"),
        "1500",
        "another network follows the uplink"
    );
    let listed = s.json(&["network", "ls"]);
    let net = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == n.as_str())
        .cloned();
    assert_eq!(net.expect("listed")["mtu"], 1400, "{listed}");
    // The same create again is a no-op; another MTU under the name is a conflict.
    s.ok(&[
        "network",
        "create",
        &n,
        "--subnet",
        "10.46.0.0/24",
        "--mtu",
        "1400",
    ]);
    let e = s.fails(&["network", "create", &n, "--subnet", "10.46.0.0/24"]);
    assert!(e.contains("mtu 1400"), "{e}");
    // init keeps the network's MTU rather than raising it to the uplink's, and follows an
    // uplink that drops below it.
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    let out = s.init(&[]);
    assert!(!out.contains("MTU"), "{out}");
    assert_eq!(mtu(&a, "eth0"), "1400");
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1300"]);
    s.init(&[]);
    assert_eq!(mtu(&a, "eth0"), "1300", "below the uplink's");
    assert_eq!(mtu(&w, "eth0"), "1300");
    s.host.must(&["ip", "link", "set", "up0", "mtu", "1500"]);
    let p = s.problems();
    assert!(
        p.iter().any(|l| l.as_str().is_some_and(
            |l| l.contains("their network's MTU 1400") || l.contains("uplink's MTU 1500")
        )),
        "status did not tell: {p:?}"
    );
    s.init(&[]);
    assert_eq!(mtu(&a, "eth0"), "1400", "back to the network's");
    assert_eq!(mtu(&w, "eth0"), "1500", "back to the uplink's");
    // Traffic at that MTU: a full-size DF ping leaves, one byte more is refused locally.
    assert!(net::ping(&a, EXT_IP, 1));
    let big = a.run(&["ping", "-c1", "-W2", "-M", "do", "-s", "1372", EXT_IP]);
    assert!(big.status.success(), "1400-byte DF ping");
    let _srv = net::iperf_server(&s.ext, 5201);
    let r = net::iperf(&a, EXT_IP, 5201, &["-t", "1"]);
    assert!(net::iperf_bps(&r) > 1e7, "TCP at the network's MTU: {r}");
}

#[test]
fn network_mtus_out_of_range_are_refused_with_nothing_made() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    s.add_ipv6();
    let n = s.name("m");
    for (args, says) in [
        (vec!["--mtu", "1501"], "above the uplink's 1500"),
        (vec!["--mtu", "67"], "below IPv4's minimum 68"),
        (vec!["--mtu", "1279", "--ipv6"], "below IPv6's minimum 1280"),
        (vec!["--mtu", "big"], "big"),
    ] {
        let mut a = vec!["network", "create", n.as_str(), "--subnet", "10.47.0.0/24"];
        a.extend_from_slice(&args);
        let e = s.fails(&a);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
    s.ok(&[
        "network",
        "create",
        &n,
        "--subnet",
        "10.47.0.0/24",
        "--mtu",
        "68",
    ]);
}

#[test]
fn isolated_network_members_reach_each_other_only_by_rule() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    s.add_ipv6();
    let n = s.network("iso", "10.48.0.0/24", &["--isolated", "--ipv6"]);
    let other = s.network("other", "10.48.1.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &["--publish", "8080:80"]);
    let o = s.container("o", &other, &[]);
    let bip = s.ip_of(&b);
    let listed = s.json(&["network", "ls"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == n.as_str() && x["isolated"] == true),
        "{listed}"
    );
    let _web = net::http_server(&b, 80, "b");
    let url = format!("http://{bip}/");
    // Members: neither directly nor through the published port (hairpin is judged as a → b),
    // nor over IPv6.
    assert!(net::curl(&a, &url, 2).is_none(), "a reached b");
    assert!(!net::ping(&a, &bip, 1));
    let hairpin = format!("http://{UPLINK_IP}:8080/");
    assert!(net::curl(&a, &hairpin, 2).is_none(), "hairpin");
    let bip6 = s
        .json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == b.name.as_str())
        .and_then(|x| x["ip6"].as_str().map(str::to_string))
        .expect("b has an IPv6 address");
    assert!(!net::ping(&a, &bip6, 1), "over IPv6");
    assert!(s.drops("policy-network") > 0);
    // The host, the world through the published port, and the gateway are as on any network.
    assert_eq!(net::curl(&s.host, &url, 5).as_deref(), Some("b"));
    assert_eq!(net::curl(&s.ext, &hairpin, 5).as_deref(), Some("b"));
    assert!(net::ping(&a, EXT_IP, 1), "a reaches the world");
    // A rule opens one direction; a connected network reaches them as usual.
    s.ok(&["allow", &a.name, &b.name]);
    assert_eq!(net::curl(&a, &url, 5).as_deref(), Some("b"));
    let _aweb = net::http_server(&a, 80, "a");
    let aurl = format!("http://{}/", s.ip_of(&a));
    assert!(net::curl(&b, &aurl, 2).is_none(), "b reached a");
    assert!(net::curl(&o, &url, 2).is_none(), "an unconnected network");
    s.ok(&["network", "connect", &n, &other]);
    assert_eq!(net::curl(&o, &url, 5).as_deref(), Some("b"));
}
