//! Issue #4: isolation and policy enforced in eBPF through identity-keyed maps.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

fn reach(from: &Netns, ip: &str, port: u16) -> bool {
    net::tcp_connects(from, ip, port, 2)
}

/// A long-running TCP connection: `from` writes a line every 100 ms to a receiver in `to`
/// that appends what arrives to a file. Established once `start` returns.
struct Stream {
    what: String,
    file: PathBuf,
    _rx: rig::Bg,
    _tx: rig::Bg,
}

impl Stream {
    fn start(from: &Netns, to: &Netns, ip: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(rig::unique("weir-stream-"));
        std::fs::create_dir_all(&dir).expect("stream dir");
        let file = dir.join("received");
        let rx = to
            .spawn(&[
                "sh",
                "-c",
                &format!("exec nc -l -p {port} > {}", file.display()),
            ])
            .with_cleanup(dir);
        net::wait_listening(to, port, "tcp");
        let tx = from.spawn(&[
            "sh",
            "-c",
            &format!("while :; do echo tick; sleep 0.1; done | nc {ip} {port}"),
        ]);
        let st = Self {
            what: format!("{} -> {}:{port}", from.name, to.name),
            file,
            _rx: rx,
            _tx: tx,
        };
        assert!(
            rig::wait_for(Duration::from_secs(5), || st.received() > 0),
            "stream {} never started",
            st.what
        );
        st
    }

    fn received(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }

    /// Whether data still arrives: bytes grow over 1.5 s (after 300 ms for what was in flight).
    fn flowing(&self) -> bool {
        thread::sleep(Duration::from_millis(300));
        let before = self.received();
        thread::sleep(Duration::from_millis(1500));
        self.received() > before
    }
}

/// A long-running TCP connection carrying data both ways: `from` and `to` each write a line
/// every 100 ms (socat) and append what they get to their own file.
struct Duplex {
    what: String,
    to_got: PathBuf,
    from_got: PathBuf,
    _rx: rig::Bg,
    _tx: rig::Bg,
}

impl Duplex {
    fn start(from: &Netns, to: &Netns, ip: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(rig::unique("weir-duplex-"));
        std::fs::create_dir_all(&dir).expect("duplex dir");
        let (to_got, from_got) = (dir.join("to"), dir.join("from"));
        let talk = |file: &PathBuf| {
            format!(
                "SYSTEM:(while :; do echo tick; sleep 0.1; done) & exec cat > {}",
                file.display()
            )
        };
        let rx = to
            .spawn(&[
                "socat",
                &format!("TCP4-LISTEN:{port},reuseaddr"),
                &talk(&to_got),
            ])
            .with_cleanup(dir);
        net::wait_listening(to, port, "tcp");
        let tx = from.spawn(&["socat", &format!("TCP4:{ip}:{port}"), &talk(&from_got)]);
        let d = Self {
            what: format!("{} <-> {}:{port}", from.name, to.name),
            to_got,
            from_got,
            _rx: rx,
            _tx: tx,
        };
        assert!(
            rig::wait_for(Duration::from_secs(5), || d.got().0 > 0 && d.got().1 > 0),
            "duplex {} never started",
            d.what
        );
        d
    }

    /// Bytes received so far by (to, from).
    fn got(&self) -> (u64, u64) {
        let len = |f: &PathBuf| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        (len(&self.to_got), len(&self.from_got))
    }

    /// Whether data still arrives in each direction (to, from) over 1.5 s.
    fn flowing(&self) -> (bool, bool) {
        thread::sleep(Duration::from_millis(300));
        let (t, f) = self.got();
        thread::sleep(Duration::from_millis(1500));
        let (t2, f2) = self.got();
        (t2 > t, f2 > f)
    }
}

/// The N of a `cut N <what>` line in `control` output (panics when there is none).
fn cut_count(out: &str, what: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("cut ")
                .and_then(|r| r.strip_suffix(what))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no \"cut N {what}\" in output: {out:?}"))
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
fn established_connections_continue_unless_cut() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.65.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    let _srv = net::iperf_server(&b, 5201);
    // A long-lived flow, then isolation without --cut: it keeps flowing.
    let flow = a.spawn_piped(&["iperf3", "-J", "-c", &bip, "-p", "5201", "-t", "3"]);
    thread::sleep(Duration::from_millis(500));
    s.ok(&["isolate", &a.name, &b.name]);
    let o = flow.finish_within(Duration::from_secs(10));
    assert!(
        o.status.success(),
        "established flow was cut without --cut: {}",
        text(&o.stdout)
    );
    s.ok(&["unisolate", &a.name, &b.name]);
    // With --cut the established flow dies.
    let flow = a.spawn_piped(&["iperf3", "-J", "-c", &bip, "-p", "5201", "-t", "4"]);
    thread::sleep(Duration::from_millis(800));
    s.ok(&["isolate", &a.name, &b.name, "--cut"]);
    let o = flow.finish_within(Duration::from_secs(15));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let sent_after = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let intervals = v["intervals"].as_array().map(|a| a.len()).unwrap_or(0);
    let last = v["intervals"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|i| i["sum"]["bytes"].as_u64())
        .unwrap_or(0);
    assert!(
        !o.status.success() || last == 0 || intervals < 4,
        "flow kept going after --cut (sent {sent_after})"
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

/// `isolate A B --cut` ends A↔B's established connection at once; A's connection to C and
/// C's to D, still allowed, keep flowing.
#[test]
fn isolate_cut_ends_only_that_pairs_connections() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.69.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let d = s.container("d", &n, &[]);
    let ab = Stream::start(&a, &b, &s.ip_of(&b), 7001);
    let ac = Stream::start(&a, &c, &s.ip_of(&c), 7002);
    let cd = Stream::start(&c, &d, &s.ip_of(&d), 7003);
    assert!(ab.flowing(), "{} does not flow before the cut", ab.what);
    let out = s.ok(&["isolate", &a.name, &b.name, "--cut"]);
    assert!(
        cut_count(&out, "established flow(s)") >= 1,
        "isolate --cut cut nothing: {out}"
    );
    assert!(
        !ab.flowing(),
        "{} kept flowing after isolate --cut",
        ab.what
    );
    assert!(ac.flowing(), "{} was cut too", ac.what);
    assert!(cd.flowing(), "{} was cut too", cd.what);
}

/// `disallow A B --cut` under `isolate B` ends A→B's established connection, while C→B (still
/// allowed) keeps flowing; `disallow` without --cut leaves C→B running (stateful).
#[test]
fn disallow_cut_ends_only_what_is_now_denied() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.70.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let bip = s.ip_of(&b);
    s.ok(&["isolate", &b.name]);
    s.ok(&["allow", &a.name, &b.name]);
    s.ok(&["allow", &c.name, &b.name]);
    let ab = Stream::start(&a, &b, &bip, 7001);
    let cb = Stream::start(&c, &b, &bip, 7002);
    assert!(ab.flowing(), "{} does not flow before the cut", ab.what);
    let out = s.ok(&["disallow", &a.name, &b.name, "--cut"]);
    assert!(
        cut_count(&out, "established flow(s)") >= 1,
        "disallow --cut cut nothing: {out}"
    );
    assert!(
        !ab.flowing(),
        "{} kept flowing after disallow --cut",
        ab.what
    );
    assert!(cb.flowing(), "{} (still allowed) was cut", cb.what);
    // The cut flow stays cut and new ones are refused.
    assert!(!reach(&a, &bip, 7009));
    // Without --cut, the established connection continues.
    s.ok(&["disallow", &c.name, &b.name]);
    assert!(cb.flowing(), "{} was cut without --cut", cb.what);
}

/// `isolate B --cut` while B itself keeps talking on a connection A opened: the connection
/// must stay cut. B may still open connections to A, and the datapath picks TCP flows up
/// mid-stream (nf_conntrack_tcp_loose style), so B's next segment creates a fresh B -> A
/// entry whose reply entry lets A's segments through again — unless, as the datapath does, a
/// flow picked up mid-stream must be allowed in both directions.
#[test]
fn cut_stays_cut_when_the_other_side_talks() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.73.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let bip = s.ip_of(&b);
    let ab = Duplex::start(&a, &b, &bip, 7001);
    // A connection b opened itself is not denied by `isolate b` and survives.
    let ba = Duplex::start(&b, &c, &s.ip_of(&c), 7002);
    let out = s.ok(&["isolate", &b.name, "--cut"]);
    assert!(cut_count(&out, "established flow(s)") >= 1, "{out}");
    let (b_got, a_got) = ab.flowing();
    let kept = s.ok(&["conntrack"]);
    assert!(
        !b_got && !a_got,
        "{} came back after isolate --cut (b still gets data: {b_got}, a: {a_got}); \
         tracked now:\n{kept}",
        ab.what
    );
    assert_eq!(ba.flowing(), (true, true), "{} was cut", ba.what);
}

/// `conntrack flush --container A` ends A's connections that the policy now denies (kept so
/// far because policy is stateful), leaves another isolated pair's connection alone, and
/// counts every flow it cut once.
#[test]
fn conntrack_flush_container_cuts_only_its_flows() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.71.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let d = s.container("d", &n, &[]);
    let bip = s.ip_of(&b);
    let ab = Stream::start(&a, &b, &bip, 7001);
    let cd = Stream::start(&c, &d, &s.ip_of(&d), 7002);
    // Eight more (idle) connections of a's, so the count below means something.
    let _idle_srv = b.spawn(&["socat", "TCP4-LISTEN:7010,fork,reuseaddr", "SYSTEM:cat"]);
    net::wait_listening(&b, 7010, "tcp");
    let _idle = a.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,time\n\
             s=[socket.create_connection(('{bip}',7010),timeout=5) for _ in range(8)]\n\
             print('up',flush=True)\ntime.sleep(600)"
        ),
    ]);
    let a_flows = || {
        s.json(&["conntrack"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["original"]
                    .as_str()
                    .is_some_and(|o| o.contains(&format!("{bip}:7010")))
            })
            .count()
    };
    assert!(
        rig::wait_for(Duration::from_secs(5), || a_flows() >= 8),
        "the idle connections did not open: {}",
        s.ok(&["conntrack"])
    );
    s.ok(&["isolate", &a.name, &b.name]);
    s.ok(&["isolate", &c.name, &d.name]);
    assert!(ab.flowing(), "{} cut without --cut", ab.what);
    assert!(cd.flowing(), "{} cut without --cut", cd.what);
    let out = s.ok(&["conntrack", "flush", "--container", &a.name]);
    assert!(!ab.flowing(), "{} kept flowing after flush", ab.what);
    assert!(cd.flowing(), "{} was flushed too", cd.what);
    assert_eq!(a_flows(), 0, "flush left a's idle flows");
    // a had nine flows (the stream and eight idle ones): each is one cut flow, whichever of
    // its two entries the map walk meets first.
    let n = cut_count(&out, "flow(s)");
    assert!(
        n >= 9,
        "conntrack flush --container cut a's 9 flows but reported {n}: {out}"
    );
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
