//! Reboot: the pins, the container namespaces and every link go, the state dir stays;
//! `control init` (as the boot unit runs it) brings back networks, rules and published ports,
//! and recreates the CLI's containers — or forgets them, if the user says so.

use std::time::Duration;

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net};

use crate::CONTROL;

/// What a reboot takes from the sandbox host: every container namespace (with its processes
/// and veth), every pin (and with the link pins, every attachment), and the gateway addresses
/// on lo.
fn reboot(s: &Sandbox, containers: &[&Netns]) {
    for c in containers {
        c.kill_all();
        rig::must(&["ip", "netns", "del", &c.name]);
    }
    std::fs::remove_dir_all(s.pin_dir()).expect("removing the pins");
    s.host.must(&["ip", "-4", "addr", "flush", "dev", "lo"]);
    s.host
        .must(&["ip", "addr", "add", "127.0.0.1/8", "dev", "lo"]);
    // The kernel tears a deleted namespace down asynchronously (once its killed processes
    // are gone), and its veths with it.
    let gone = rig::wait_for(Duration::from_secs(20), || {
        !s.host.must(&["ip", "-o", "link", "show"]).contains("wr-")
    });
    let links = s.host.must(&["ip", "-o", "link", "show"]);
    assert!(gone, "a veth survived the reboot: {links}");
}

#[test]
fn init_after_a_reboot_brings_everything_back() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.94.0.0/24", &[]);
    let web = s.container("web", &n, &["--publish", "8080:80"]);
    let db = s.container("db", &n, &[]);
    // db is on a second network too: its eth1 comes back in its namespace.
    let n2 = s.network("n2", "10.93.0.0/24", &[]);
    s.ok(&["container", "connect", &db.name, &n2, "--ip", "10.93.0.9"]);
    s.ok(&["isolate", &db.name]);
    let before = [
        s.json(&["container", "ls"]),
        s.json(&["network", "ls"]),
        s.json(&["ports"]),
        s.json(&["rules"]),
    ];
    reboot(&s, &[&web, &db]);

    let out = s.init(&[]);
    for c in [&web, &db] {
        assert!(
            out.contains(&format!("container {} recreated", c.name)),
            "{out}"
        );
    }
    let after = [
        s.json(&["container", "ls"]),
        s.json(&["network", "ls"]),
        s.json(&["ports"]),
        s.json(&["rules"]),
    ];
    assert_eq!(
        after, before,
        "the same containers, networks, ports and rules"
    );
    // And in force: the published port from ext, masquerade out, isolation of db.
    let _w = net::http_server(&web, 80, "back");
    let url = format!("http://{UPLINK_IP}:8080/");
    assert_eq!(net::curl(&s.ext, &url, 5).as_deref(), Some("back"));
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some("back")
    );
    assert!(net::ping(&web, EXT_IP, 2), "no way out after the reboot");
    let _d = net::http_server(&db, 80, "db");
    let db_url = format!("http://{}/", s.ip_of(&db));
    assert!(
        net::curl(&web, &db_url, 2).is_none(),
        "isolation lost in the reboot"
    );
    assert_eq!(net::curl(&s.host, &db_url, 5).as_deref(), Some("db"));
    let eth1 = db.must(&["ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains("10.93.0.9/24"), "{eth1}");
    assert!(
        net::ping(&db, "10.93.0.1", 2),
        "db's second network after the reboot"
    );
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    // A second init finds nothing missing.
    let again = s.init(&[]);
    assert!(!again.contains("recreated"), "{again}");
}

#[test]
fn init_after_a_reboot_can_forget_what_is_gone() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.95.0.0/24", &[]);
    let a = s.container("a", &n, &["--publish", "8080:80"]);
    let b = s.container("b", &n, &[]);
    s.ok(&["isolate", &a.name, &b.name]);
    let a_ip = s.ip_of(&a);
    reboot(&s, &[&a, &b]);
    let out = s.init(&["--missing", "forget"]);
    for c in [&a, &b] {
        assert!(
            out.contains(&format!("container {} forgotten", c.name)),
            "{out}"
        );
    }
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
    assert_eq!(s.json(&["ports"]), serde_json::json!([]));
    assert_eq!(s.json(&["rules"]), serde_json::json!([]));
    // The network is back, and its addresses are free again.
    let c = s.container("c", &n, &[]);
    assert_eq!(s.ip_of(&c), a_ip, "the lowest address is free again");
    assert!(net::ping(&c, "10.95.0.1", 2));
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}
