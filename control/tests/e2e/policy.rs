//! Isolation and policy enforced in eBPF through identity-keyed maps: `isolate`, `allow` with
//! and without ports, networks and their connections, published ports and hairpin judged as
//! the container pair they connect, bad rules refused whole, ten thousand rules at scale.

use std::time::Instant;

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net};

use crate::CONTROL;

/// Whether `from` can open a TCP connection to `ip:port` (within 2 s).
pub fn reach(from: &Netns, ip: &str, port: u16) -> bool {
    net::tcp_connects(from, ip, port, 2)
}

#[test]
fn isolate_pair_blocks_both_directions_only() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.61.0.0/24", &[]);
    let apps: Vec<Netns> = (1..=3)
        .map(|i| s.container(&format!("app{i}"), &n, &[]))
        .collect();
    let ips: Vec<String> = apps.iter().map(|a| s.ip_of(a)).collect();
    let _l: Vec<rig::Bg> = apps.iter().map(|a| net::tcp_listener(a, 80)).collect();
    assert!(reach(&apps[0], &ips[1], 80) && reach(&apps[1], &ips[0], 80));
    s.ok(&["isolate", &apps[0].name, &apps[1].name]);
    assert!(!reach(&apps[0], &ips[1], 80), "app1 -> app2 still open");
    assert!(!reach(&apps[1], &ips[0], 80), "app2 -> app1 still open");
    assert!(!net::ping(&apps[0], &ips[1], 1));
    assert!(
        reach(&apps[0], &ips[2], 80) && reach(&apps[2], &ips[0], 80),
        "app1 <-> app3 broken"
    );
    assert!(reach(&apps[1], &ips[2], 80), "app2 -> app3 broken");
    assert!(s.drops("policy-denied") > 0);
    let rules = s.json(&["rules"]);
    assert_eq!(rules.as_array().unwrap().len(), 1);
    // Idempotent, and undone by unisolate.
    assert!(
        s.ok(&["isolate", &apps[1].name, &apps[0].name])
            .contains("already")
    );
    s.ok(&["unisolate", &apps[1].name, &apps[0].name]);
    assert!(reach(&apps[0], &ips[1], 80), "unisolate did not restore");
}

#[test]
fn database_only_from_app1_on_3306() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.62.0.0/24", &[]);
    let app1 = s.container("app1", &n, &[]);
    let app2 = s.container("app2", &n, &[]);
    let db = s.container("db", &n, &[]);
    let dbip = s.ip_of(&db);
    let _mysql = net::tcp_listener(&db, 3306);
    let _admin = net::tcp_listener(&db, 8080);
    let _udp = net::udp_echo(&db, 3306);
    s.ok(&["isolate", &db.name]);
    s.ok(&["allow", &app1.name, &db.name, "--port", "3306/tcp"]);
    assert!(reach(&app1, &dbip, 3306), "app1 -> db:3306 must work");
    assert!(
        !reach(&app1, &dbip, 8080),
        "app1 -> db:8080 must be blocked"
    );
    assert!(
        net::udp_ask(&app1, &dbip, 3306, "x", 2).is_none(),
        "udp/3306 is not tcp/3306"
    );
    assert!(
        !reach(&app2, &dbip, 3306),
        "app2 -> db:3306 must be blocked"
    );
    assert!(!net::ping(&app2, &dbip, 1));
    // Stateful: db may still open connections out, and replies come back.
    let _l = net::tcp_listener(&app2, 9000);
    assert!(
        reach(&db, &s.ip_of(&app2), 9000),
        "db -> app2 (replies must pass)"
    );
    assert!(s.drops("policy-isolated") > 0);
    // Spoofing app1's address from app2 does not get through either.
    app2.must(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", s.ip_of(&app1)),
        "dev",
        "eth0",
    ]);
    let before = s.drops("spoofed-source");
    let o = app2.run(&["nc", "-z", "-w", "2", "-s", &s.ip_of(&app1), &dbip, "3306"]);
    assert!(!o.status.success(), "spoofed app1 reached db");
    assert!(s.drops("spoofed-source") > before);
}

#[test]
fn three_tiers_on_three_networks() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let fe_net = s.network("fe", "10.63.1.0/24", &[]);
    let be_net = s.network("be", "10.63.2.0/24", &["--internal"]);
    let db_net = s.network("db", "10.63.3.0/24", &["--internal"]);
    s.ok(&["network", "connect", &fe_net, &be_net]);
    s.ok(&["network", "connect", &be_net, &db_net]);
    let fe = s.container("frontend", &fe_net, &[]);
    let be = s.container("backend", &be_net, &[]);
    let db = s.container("database", &db_net, &[]);
    let (feip, beip, dbip) = (s.ip_of(&fe), s.ip_of(&be), s.ip_of(&db));
    let _ls: Vec<rig::Bg> = [&fe, &be, &db]
        .iter()
        .map(|c| net::tcp_listener(c, 80))
        .collect();
    assert!(
        reach(&fe, &beip, 80) && reach(&be, &feip, 80),
        "frontend <-> backend"
    );
    assert!(
        reach(&be, &dbip, 80) && reach(&db, &beip, 80),
        "backend <-> database"
    );
    assert!(
        !reach(&fe, &dbip, 80) && !reach(&db, &feip, 80),
        "frontend must not reach database"
    );
    // A cross-network allow on one port, networks still not connected: one direction, one
    // port.
    let _db81 = net::tcp_listener(&db, 81);
    s.ok(&["allow", &fe.name, &db.name, "--port", "80/tcp"]);
    assert!(reach(&fe, &dbip, 80), "allow frontend database --port 80");
    assert!(
        !reach(&db, &feip, 80),
        "the allow opened database -> frontend"
    );
    assert!(!reach(&fe, &dbip, 81), "the allow opened another port");
    // Only the frontend network has egress.
    let _web = net::http_server(&s.ext, 80, "world");
    assert_eq!(
        net::curl(&fe, &format!("http://{EXT_IP}/"), 5).as_deref(),
        Some("world")
    );
    assert!(net::curl(&be, &format!("http://{EXT_IP}/"), 2).is_none());
    assert!(net::curl(&db, &format!("http://{EXT_IP}/"), 2).is_none());
    // A published port on the frontend is reachable from ext.
    let _site = net::http_server(&fe, 8000, "site");
    s.ok(&["publish", &fe.name, "80:8000"]);
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}/"), 5).as_deref(),
        Some("site")
    );
    // Disconnecting cuts new connections.
    s.ok(&["network", "disconnect", &fe_net, &be_net]);
    assert!(!reach(&fe, &beip, 80));
    // The allow does not depend on network links.
    assert!(reach(&fe, &dbip, 80));
}

#[test]
fn isolation_holds_through_published_ports() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.64.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let _web = net::http_server(&b, 80, "b");
    s.ok(&["publish", &b.name, "8080:80"]);
    assert_eq!(
        net::curl(&a, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("b")
    );
    s.ok(&["isolate", &a.name, &b.name]);
    assert!(
        net::curl(&a, &format!("http://{UPLINK_IP}:8080/"), 2).is_none(),
        "hairpin bypassed isolate"
    );
    assert!(
        net::curl(&a, "http://10.64.0.1:8080/", 2).is_none(),
        "hairpin via gateway bypassed isolate"
    );
    assert_eq!(
        net::curl(&c, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("b")
    );
    // The world still reaches b (isolation is between containers).
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("b")
    );
}

#[test]
fn bad_rule_input_is_refused() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.66.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    for args in [
        vec!["isolate", "nosuch", b.name.as_str()],
        vec!["isolate", a.name.as_str(), a.name.as_str()],
        vec!["allow", a.name.as_str(), b.name.as_str(), "--port", "0/tcp"],
        vec![
            "allow",
            a.name.as_str(),
            b.name.as_str(),
            "--port",
            "80/sctp",
        ],
        vec!["allow", a.name.as_str(), b.name.as_str(), "--port", "70000"],
    ] {
        let e = s.fails(&args);
        assert!(!e.is_empty());
    }
    assert!(s.json(&["rules"]).as_array().unwrap().is_empty());
    // A rules file with one bad line applies nothing.
    let f = s.state_dir.with_extension("rules");
    std::fs::write(
        &f,
        format!("isolate {} {}\nallow {} bogus\n", a.name, b.name, a.name),
    )
    .unwrap();
    let e = s.fails(&["rules", "import", f.to_str().unwrap()]);
    assert!(e.contains("line 2"), "{e}");
    assert!(s.json(&["rules"]).as_array().unwrap().is_empty());
    let _ = std::fs::remove_file(f);
}

/// 10,000 rules and 1,000 containers' entries installed: a rule in the middle is enforced and
/// changing one rule stays a handful of map operations (the time is printed, not asserted:
/// performance numbers live in the bench).
#[test]
fn ten_thousand_rules_and_a_thousand_containers() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.67.0.0/20", &[]);
    let mut names = Vec::new();
    let t = Instant::now();
    for i in 0..1000 {
        let c = s.name(&format!("k{i}"));
        s.ok(&["container", "create", &c, "--network", &n]);
        names.push(c);
    }
    eprintln!("1000 containers created in {:?}", t.elapsed());
    // 10,000 port-specific rules among them; the probe pair's isolate sits in the middle.
    let (x, y) = (&names[500], &names[501]);
    let mut lines = Vec::new();
    for i in 0..10_000usize {
        if i == 5_000 {
            lines.push(format!("isolate {x} {y}"));
        }
        lines.push(format!(
            "allow {} {} --port {}/tcp",
            names[i % 1000],
            names[(i * 7 + 1) % 1000],
            1000 + i
        ));
    }
    let f = s.state_dir.with_extension("rules");
    std::fs::write(&f, lines.join("\n")).unwrap();
    let t = Instant::now();
    s.ok(&["rules", "import", f.to_str().unwrap()]);
    eprintln!("10,001 rules imported in {:?}", t.elapsed());
    let _ = std::fs::remove_file(&f);
    let (cx, cy) = (Netns::borrowed(x), Netns::borrowed(y));
    let yip = s.ip_of(&cy);
    let _l = net::tcp_listener(&cy, 80);
    assert!(
        !reach(&cx, &yip, 80),
        "the rule in the middle is not enforced"
    );
    let t = Instant::now();
    s.ok(&["unisolate", x, y]);
    eprintln!("one rule removed with 10,000 present in {:?}", t.elapsed());
    assert!(
        reach(&cx, &yip, 80),
        "removing the rule did not take effect"
    );
    let t = Instant::now();
    s.ok(&["isolate", x, y]);
    eprintln!("one rule added with 10,000 present in {:?}", t.elapsed());
    assert!(!reach(&cx, &yip, 80));
    assert_eq!(s.json(&["status"])["rules"].as_u64(), Some(10_001));
}

/// `allow A B` beats `isolate A B` in one direction only, `disallow` recomputes the pair's
/// shared policy key back to the isolation (it must not just delete it), and the same holds
/// one level down for a port-specific allow against `isolate B`.
#[test]
fn allow_overrides_and_disallow_restores() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.68.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let (aip, bip) = (s.ip_of(&a), s.ip_of(&b));
    let _l: Vec<rig::Bg> = [&a, &b, &c]
        .iter()
        .flat_map(|x| [net::tcp_listener(x, 80), net::tcp_listener(x, 81)])
        .collect();
    let rules = || s.json(&["rules"]).as_array().unwrap().len();
    assert!(reach(&a, &bip, 80) && reach(&b, &aip, 80));

    s.ok(&["isolate", &a.name, &b.name]);
    assert!(!reach(&a, &bip, 80), "isolate: a -> b still open");
    assert!(!reach(&b, &aip, 80), "isolate: b -> a still open");

    s.ok(&["allow", &a.name, &b.name]);
    assert_eq!(rules(), 2);
    assert!(reach(&a, &bip, 80), "allow a b did not beat isolate a b");
    assert!(reach(&a, &bip, 81), "allow a b (any port) is port-limited");
    assert!(!reach(&b, &aip, 80), "allow a b opened b -> a too");

    s.ok(&["disallow", &a.name, &b.name]);
    assert_eq!(rules(), 1);
    assert!(
        !reach(&a, &bip, 80),
        "disallow deleted the pair's key instead of restoring the isolation"
    );
    assert!(!reach(&b, &aip, 80), "disallow: b -> a opened");
    assert!(reach(&c, &bip, 80) && reach(&a, &s.ip_of(&c), 80));

    s.ok(&["unisolate", &a.name, &b.name]);
    assert_eq!(rules(), 0);
    assert!(reach(&a, &bip, 80), "unisolate: a -> b still blocked");
    assert!(reach(&b, &aip, 80), "unisolate: b -> a still blocked");

    // One level down: isolate b, then a single port for a.
    s.ok(&["isolate", &b.name]);
    s.ok(&["allow", &a.name, &b.name, "--port", "80/tcp"]);
    assert!(reach(&a, &bip, 80), "a -> b:80 must be allowed");
    assert!(!reach(&a, &bip, 81), "a -> b:81 must stay isolated");
    assert!(!reach(&c, &bip, 80), "c -> b:80 must stay isolated");
    assert!(reach(&b, &aip, 80), "isolate b limits b's ingress only");
    s.ok(&["disallow", &a.name, &b.name, "--port", "80/tcp"]);
    assert_eq!(rules(), 1);
    assert!(
        !reach(&a, &bip, 80),
        "disallow --port did not restore the isolation of b"
    );
    s.ok(&["unisolate", &b.name]);
    assert!(reach(&a, &bip, 81) && reach(&c, &bip, 80));
}

/// Hairpin through a host address is judged as the container pair it connects: a container of
/// network X cannot use a port published by a container of an unconnected network Y (like
/// Docker's isolation chains), a container of Y can, and connecting X and Y opens it.
#[test]
fn hairpin_across_unconnected_networks_is_denied() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let x_net = s.network("x", "10.72.1.0/24", &[]);
    let y_net = s.network("y", "10.72.2.0/24", &[]);
    let x = s.container("x", &x_net, &[]);
    let y = s.container("y", &y_net, &[]);
    let y2 = s.container("y2", &y_net, &[]);
    let _web = net::http_server(&y, 80, "y");
    s.ok(&["publish", &y.name, "8080:80"]);
    let via_uplink = format!("http://{UPLINK_IP}:8080/");
    let via_x_gw = "http://10.72.1.1:8080/";
    assert_eq!(net::curl(&y2, &via_uplink, 5).as_deref(), Some("y"));
    assert_eq!(net::curl(&s.ext, &via_uplink, 5).as_deref(), Some("y"));
    let before = s.drops("policy-network");
    assert!(
        net::curl(&x, &via_uplink, 2).is_none(),
        "x reached unconnected network y through the published port"
    );
    assert!(
        net::curl(&x, via_x_gw, 2).is_none(),
        "x reached unconnected network y through its gateway's published port"
    );
    assert!(s.drops("policy-network") > before);
    s.ok(&["network", "connect", &x_net, &y_net]);
    assert_eq!(net::curl(&x, &via_uplink, 5).as_deref(), Some("y"));
    assert_eq!(net::curl(&x, via_x_gw, 5).as_deref(), Some("y"));
    s.ok(&["network", "disconnect", &x_net, &y_net]);
    assert!(net::curl(&x, &via_uplink, 2).is_none());
}
