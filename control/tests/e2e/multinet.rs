//! One container on several networks (`container create --network A --network B`,
//! `container connect|disconnect`): an interface per network in one namespace, each
//! anti-spoofed on its own, the default route and published ports on the first, rules by the
//! container's name covering every interface, and `rm` taking them all.

use rig::{Netns, Sandbox, net, text};

use crate::CONTROL;

fn addrs(c: &Netns) -> String {
    c.must(&["ip", "-o", "-4", "addr", "show"])
}

/// `name`'s records in `container ls --json` (one per network).
fn records(s: &Sandbox, name: &str) -> Vec<serde_json::Value> {
    s.json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name || c["alias"] == name)
        .cloned()
        .collect()
}

#[test]
fn a_container_on_two_networks() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n1 = s.network("n1", "10.95.0.0/24", &[]);
    let n2 = s.network("n2", "10.96.0.0/24", &[]);
    let a = s.container("a", &n1, &[]);
    let b = s.container("b", &n2, &[]);
    let proxy = s.container("proxy", &n1, &["--network", &n2, "--publish", "8080:80"]);
    let (a_ip, b_ip) = (s.ip_of(&a), s.ip_of(&b));
    let recs = records(&s, &proxy.name);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let ip_on = |net: &str| {
        let r = recs.iter().find(|r| r["network"] == net).expect("a record");
        r["ip"].as_str().unwrap().to_string()
    };
    let (p1, p2) = (ip_on(&n1), ip_on(&n2));
    let inside = addrs(&proxy);
    assert!(
        inside.contains(&format!("eth0    inet {p1}/24"))
            && inside.contains(&format!("eth1    inet {p2}/24")),
        "{inside}"
    );
    let routes = proxy.must(&["ip", "route", "show", "default"]);
    assert!(
        routes.contains("10.95.0.1") && routes.lines().count() == 1,
        "{routes}"
    );
    // Both networks, each over its own interface; the networks stay apart for the others.
    assert!(net::ping(&proxy, &a_ip, 2) && net::ping(&proxy, &b_ip, 2));
    assert!(
        !net::ping(&a, &b_ip, 1),
        "a reached another network through proxy"
    );
    // Each interface is anti-spoofed on its own: eth0's address sent out of eth1 is dropped.
    let before = s.drops("spoofed-source");
    let o = proxy.run(&["ping", "-c", "1", "-W", "1", "-I", &p1, &b_ip]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(s.drops("spoofed-source") > before, "not counted as spoofed");
    // Published on the first network; `ports` by the container's name.
    let _srv = net::http_server(&proxy, 80, "proxied");
    let url = format!("http://{}:8080/", rig::UPLINK_IP);
    assert_eq!(net::curl(&s.ext, &url, 5).as_deref(), Some("proxied"));
    assert_eq!(
        s.json(&["ports", &proxy.name]).as_array().map(Vec::len),
        Some(1)
    );
    rules_cover_every_interface(&s, &proxy, &a, &b);
    connect_and_disconnect(&s, &a, &n2, &b_ip);
    s.ok(&["container", "rm", &proxy.name]);
    assert!(records(&s, &proxy.name).is_empty());
    let left = rig::must(&["ip", "netns", "list"]);
    assert!(
        !left
            .lines()
            .any(|l| l.split_whitespace().next() == Some(proxy.name.as_str())),
        "the namespace outlived rm: {left}"
    );
    assert!(!s.json(&["rules"]).to_string().contains(&proxy.name));
    assert!(net::curl(&s.ext, &url, 2).is_none());
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

/// `isolate proxy X` holds on whichever interface reaches X.
fn rules_cover_every_interface(s: &Sandbox, proxy: &Netns, a: &Netns, b: &Netns) {
    let (a_ip, b_ip) = (s.ip_of(a), s.ip_of(b));
    s.ok(&["isolate", &proxy.name, &b.name]);
    assert!(!net::ping(proxy, &b_ip, 1), "isolated over eth1");
    assert!(net::ping(proxy, &a_ip, 2), "a is not isolated");
    s.ok(&["isolate", &a.name, &proxy.name]);
    assert!(!net::ping(proxy, &a_ip, 1), "isolated over eth0");
    s.ok(&["unisolate", &proxy.name, &b.name]);
    s.ok(&["unisolate", &a.name, &proxy.name]);
    assert!(net::ping(proxy, &b_ip, 2) && net::ping(proxy, &a_ip, 2));
    s.ok(&["isolate", &proxy.name, &b.name]);
}

/// A running container joins a second network and leaves it; what cannot be done is refused.
fn connect_and_disconnect(s: &Sandbox, a: &Netns, n2: &str, b_ip: &str) {
    let out = s.ok(&["container", "connect", &a.name, n2, "--ip", "10.96.0.77"]);
    assert!(out.contains("10.96.0.77"), "{out}");
    assert!(
        addrs(a).contains("eth1    inet 10.96.0.77/24"),
        "{}",
        addrs(a)
    );
    assert!(net::ping(a, b_ip, 2), "a on n2 reaches b");
    let e = s.fails(&["container", "connect", &a.name, n2]);
    assert!(e.contains("already on network"), "{e}");
    let e = s.fails(&["container", "connect", "no-such", n2]);
    assert!(e.contains("no container named"), "{e}");
    let e = s.fails(&["container", "connect", &a.name, "no-such-net"]);
    assert!(e.contains("no network named"), "{e}");
    let first = records(s, &a.name)[0]["network"]
        .as_str()
        .unwrap()
        .to_string();
    let e = s.fails(&["container", "disconnect", &a.name, &first]);
    assert!(e.contains("first network"), "{e}");
    s.ok(&["container", "disconnect", &a.name, n2]);
    assert!(!addrs(a).contains("eth1"), "{}", addrs(a));
    assert!(!net::ping(a, b_ip, 1));
    assert_eq!(records(s, &a.name).len(), 1);
    let e = s.fails(&["container", "disconnect", &a.name, n2]);
    assert!(e.contains("is not on network"), "{e}");
}
