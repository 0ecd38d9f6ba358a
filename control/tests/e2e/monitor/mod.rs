//! `control monitor --json` streams one JSON object per dropped packet — spoofed sources,
//! policy denials, the world knocking on a container address directly, exhausted NAT — with
//! the reasons `control stats` counts under; it stops after --count events or
//! --duration seconds, and clears the datapath's "listening" flag when it ends.

use std::{
    thread,
    time::{Duration, Instant},
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net};
use serde_json::Value;
use weir_common::stats::DropReason;

use crate::CONTROL;

mod runner;

use runner::{Monitor, listening};

/// Sends from an address `c` does not own (added to its eth0 first).
fn spoof(c: &Netns, fake: &str, dst: &str) {
    let _ = c.run(&["ping", "-c", "1", "-W", "1", "-I", fake, dst]);
}

/// Resolves `ip` from the container's own address, then makes the entry permanent so the
/// container sends no further ARP for it.
fn pin_neighbour(c: &Netns, ip: &str) {
    let _ = c.run(&["ping", "-c", "1", "-W", "1", ip]);
    let out = c.must(&["ip", "-j", "neigh", "show", ip, "dev", "eth0"]);
    let v: Value = serde_json::from_str(&out).expect("ip -j neigh");
    let mac = v[0]["lladdr"]
        .as_str()
        .unwrap_or_else(|| panic!("{ip} unresolved: {out}"));
    c.must(&[
        "ip",
        "neigh",
        "replace",
        ip,
        "lladdr",
        mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
}

fn reasons(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect()
}

#[test]
fn monitor_streams_each_kind_of_drop_under_its_stats_name() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.85.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    let _l = net::tcp_listener(&b, 80);
    s.ok(&["isolate", &a.name, &b.name]);
    a.must(&["ip", "addr", "add", "10.85.0.99/32", "dev", "eth0"]);
    // The world routes the container subnet at the host, then tries the container directly.
    s.ext
        .must(&["ip", "route", "add", "10.85.0.0/24", "via", UPLINK_IP]);
    assert!(!listening(&s), "listening before any monitor ran");

    let mut m = Monitor::start(&s, &["--duration", "60"]);
    let wanted = [
        ("spoofed-source", "icmp"),
        ("policy-denied", "tcp"),
        ("not-published", "tcp"),
    ];
    let all_seen = m.poke_until(
        Duration::from_secs(30),
        || {
            spoof(&a, "10.85.0.99", &bip);
            let _ = net::tcp_connects(&a, &bip, 80, 1);
            let _ = net::tcp_connects(&s.ext, &bip, 80, 1);
        },
        |evs| {
            wanted
                .iter()
                .all(|(r, p)| evs.iter().any(|e| e["reason"] == *r && e["proto"] == *p))
        },
    );
    assert!(m.running(), "monitor exited early");
    assert!(
        listening(&s),
        "monitor runs but the datapath does not report"
    );
    // Ctrl-C ends it cleanly and clears the flag.
    m.signal(libc::SIGINT);
    let (status, evs, err) = m.finish(Duration::from_secs(10));
    assert!(all_seen, "missing reasons; got {:?}", reasons(&evs));
    assert!(status.success(), "monitor after SIGINT: {status:?} {err}");
    assert!(!listening(&s), "listening flag left set after SIGINT");

    check_drop_events(&s, &evs, &bip);
}

/// Every event names a known reason and hook, and the flow it belongs to; the spoofed ping,
/// the denied connection and the world's knock on `bip` are there with the right hook.
fn check_drop_events(s: &Sandbox, evs: &[Value], bip: &str) {
    // Every event names a known reason and hook, and the flow it belongs to.
    let known: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
    let stats = s.stats();
    for e in evs {
        assert_eq!(e["kind"], "drop", "{e}");
        let reason = e["reason"].as_str().unwrap();
        let hook = e["hook"].as_str().unwrap();
        assert!(known.contains(&reason), "unknown reason in {e}");
        assert!(
            stats["drops"][reason][hook].as_u64().unwrap_or(0) > 0,
            "{reason} at {hook} streamed but not counted in stats: {}",
            stats["drops"]
        );
        assert!(e["ifindex"].as_u64().unwrap() > 0, "{e}");
    }
    // (Spoofed ARP requests are dropped too; those events carry no IP flow.)
    let find = |reason: &str, proto: &str| {
        evs.iter()
            .find(|e| e["reason"] == reason && e["proto"] == proto)
            .unwrap_or_else(|| panic!("no {proto} {reason} event in {evs:?}"))
            .clone()
    };
    let sp = find("spoofed-source", "icmp");
    assert_eq!(sp["hook"], "from-container");
    assert!(
        sp["flow"].as_str().unwrap().starts_with("10.85.0.99#"),
        "{sp}"
    );
    let pd = find("policy-denied", "tcp");
    assert_eq!(pd["hook"], "from-container");
    assert!(
        pd["flow"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-> {bip}:80")),
        "{pd}"
    );
    let np = find("not-published", "tcp");
    assert_eq!(np["hook"], "uplink-tc");
    assert!(
        np["flow"].as_str().unwrap().starts_with("198.18.0.2:")
            && np["flow"]
                .as_str()
                .unwrap()
                .ends_with(&format!("-> {bip}:80")),
        "{np}"
    );
}

#[test]
fn count_and_duration_bound_a_monitor_and_the_next_one_still_works() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.86.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    a.must(&["ip", "addr", "add", "10.86.0.99/32", "dev", "eth0"]);
    // The spoofed pings must not make the container ARP from 10.86.0.99 as well: those
    // requests are dropped too, and their retries would land in the quiet window below.
    pin_neighbour(&a, "10.86.0.1");

    // --count: exactly N lines, then exit 0.
    let mut m = Monitor::start(&s, &["--count", "3", "--duration", "60"]);
    let start = Instant::now();
    while m.running() && start.elapsed() < Duration::from_secs(30) {
        spoof(&a, "10.86.0.99", "10.86.0.1");
    }
    let (status, evs, err) = m.finish(Duration::from_secs(5));
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert!(
        reasons(&evs).iter().all(|r| r == "spoofed-source"),
        "{evs:?}"
    );
    assert!(!listening(&s), "flag left set after --count");

    // --duration with nothing happening: no lines, exit 0, on time.
    let t = Instant::now();
    let (status, evs, err) =
        Monitor::start(&s, &["--duration", "1"]).finish(Duration::from_secs(15));
    assert!(status.success(), "{status:?} {err}");
    assert!(evs.is_empty(), "{evs:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "--duration 1 did not stop it"
    );
    assert!(!listening(&s), "flag left set after --duration");

    // A monitor killed outright cannot clear the flag; the next one still streams and clears it.
    let killed = Monitor::start(&s, &["--duration", "60"]);
    assert!(
        killed.poke_until(
            Duration::from_secs(20),
            || spoof(&a, "10.86.0.99", "10.86.0.1"),
            |e| !e.is_empty()
        ),
        "first monitor saw nothing"
    );
    killed.signal(libc::SIGKILL);
    let _ = killed.finish(Duration::from_secs(5));
    let mut next = Monitor::start(&s, &["--count", "2", "--duration", "60"]);
    let start = Instant::now();
    while next.running() && start.elapsed() < Duration::from_secs(30) {
        spoof(&a, "10.86.0.99", "10.86.0.1");
    }
    let (status, evs, err) = next.finish(Duration::from_secs(5));
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(evs.len(), 2, "second monitor: {evs:?}");
    assert!(!listening(&s), "flag left set by the second monitor");
    // Nothing is reported once nobody listens, yet drops are still counted.
    let before = s.drops("spoofed-source");
    spoof(&a, "10.86.0.99", "10.86.0.1");
    assert!(s.drops("spoofed-source") > before);
}

#[test]
fn monitor_keeps_listening_across_init() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.87.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    a.must(&["ip", "addr", "add", "10.87.0.99/32", "dev", "eth0"]);
    let m = Monitor::start(&s, &["--duration", "60"]);
    assert!(
        m.poke_until(
            Duration::from_secs(20),
            || spoof(&a, "10.87.0.99", "10.87.0.1"),
            |e| !e.is_empty()
        ),
        "monitor saw nothing"
    );
    // An upgrade while someone watches: the watcher keeps getting events.
    s.init(&[]);
    let seen = m.events().len();
    assert!(
        m.poke_until(
            Duration::from_secs(10),
            || spoof(&a, "10.87.0.99", "10.87.0.1"),
            |e| e.len() > seen
        ),
        "monitor went silent after `control init`"
    );
    m.signal(libc::SIGINT);
    let (status, _, err) = m.finish(Duration::from_secs(10));
    assert!(status.success(), "{err}");
    assert!(!listening(&s));
}

/// A sandbox whose NAT is exhausted on demand: four SNAT ports, all held by five long-lived
/// flows from source port 5555 (c0..c4) to ext:9000, and the smallest conntrack map (64
/// entries, two per flow) with UDP entries that outlive the test, so a flood keeps it full.
struct Exhausted {
    cs: Vec<Netns>,
    sixth_ip: String,
    _servers: Vec<rig::Bg>,
    // Last: dropped after what runs in it.
    s: Sandbox,
}

impl Exhausted {
    fn new() -> Self {
        let init = ["--snat-ports", "20000-20003", "--conntrack-max", "64"];
        let s = Sandbox::with_weir(CONTROL, &[&init[..], &["--ct-timeout", "udp=600"]].concat());
        let n = s.network("n", "10.88.0.0/24", &[]);
        let cs: Vec<Netns> = (0..7)
            .map(|i| s.container(&format!("c{i}"), &n, &[]))
            .collect();
        let sixth_ip = s.ip_of(&cs[5]);
        // The seventh's kernel-picked ports lie above the host's ephemeral range, so its flows
        // keep them and need no SNAT port (all four are held): they only fill the map.
        cs[6].must(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=61000 65000"]);
        let mut servers = vec![net::tcp_echo(&s.ext, 9000)];
        // Five long-lived flows from source port 5555 to one destination take the container's
        // own port and all four SNAT ports.
        servers.extend(cs[..5].iter().map(|c| {
            c.spawn(&[
                "sh",
                "-c",
                &format!("sleep 300 | socat - TCP4:{EXT_IP}:9000,sourceport=5555"),
            ])
        }));
        let held = rig::wait_for(Duration::from_secs(10), || {
            s.json(&["conntrack"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["kind"] == "masquerade" && f["proto"] == "tcp")
                .count()
                == 5
        });
        assert!(
            held,
            "five flows hold the SNAT ports: {}",
            s.json(&["conntrack"])
        );
        Self {
            cs,
            sixth_ip,
            _servers: servers,
            s,
        }
    }

    /// A sixth flow from the same port to the same place finds no port; fresh UDP flows from
    /// the seventh fill the map and then find no room.
    fn poke(&self) {
        let _ = self.cs[5].run(&[
            "timeout",
            "2",
            "socat",
            "-T1",
            "/dev/null",
            &format!("TCP4:{EXT_IP}:9000,sourceport=5555,reuseaddr,connect-timeout=1"),
        ]);
        let _ = net::fresh_udp_flows(&self.cs[6], EXT_IP, 9999, 100, 0).finish();
    }

    /// The sixth flow's TCP connection, as the monitor prints it.
    fn sixth_flow(&self) -> String {
        format!("{}:5555 -> {EXT_IP}:9000", self.sixth_ip)
    }
}

/// The NAT exhaustion drops stream too: a new flow that finds no free SNAT port
/// (`snat-ports-exhausted`) and one that finds the conntrack map full
/// (`conntrack-insert-failed`), in JSON and in the human-readable output.
#[test]
fn monitor_reports_exhausted_snat_ports_and_a_full_conntrack_map() {
    let r = Exhausted::new();
    exhaustion_streams_as_json(&r);
    exhaustion_streams_as_text(&r);
}

fn exhaustion_streams_as_json(r: &Exhausted) {
    let s = &r.s;
    let sixth_flow = r.sixth_flow();
    let snat_event = |e: &Value| {
        e["reason"] == "snat-ports-exhausted"
            && e["hook"] == "from-container"
            && e["proto"] == "tcp"
            && e["flow"] == sixth_flow.as_str()
    };
    let full_event = |e: &Value| {
        e["reason"] == "conntrack-insert-failed"
            && e["hook"] == "from-container"
            && e["proto"] == "udp"
            && e["flow"]
                .as_str()
                .is_some_and(|f| f.ends_with(&format!("-> {EXT_IP}:9999")))
    };
    let m = Monitor::start(s, &["--duration", "60"]);
    let seen = m.poke_until(
        Duration::from_secs(30),
        || r.poke(),
        |evs| evs.iter().any(snat_event) && evs.iter().any(full_event),
    );
    m.signal(libc::SIGINT);
    let (status, evs, err) = m.finish(Duration::from_secs(10));
    assert!(status.success(), "monitor after SIGINT: {status:?} {err}");
    assert!(
        seen,
        "no snat-ports-exhausted / conntrack-insert-failed event: {:?}",
        evs
    );
    let stats = s.stats();
    for reason in ["snat-ports-exhausted", "conntrack-insert-failed"] {
        assert!(
            stats["drops"][reason]["from-container"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{reason} streamed but not counted: {}",
            stats["drops"]
        );
    }
    assert!(!listening(s), "listening flag left set");
}

/// The human-readable output names the same reasons, one line per drop.
fn exhaustion_streams_as_text(r: &Exhausted) {
    let s = &r.s;
    let m = Monitor::start_text(s, &["--duration", "60"]);
    let has = |lines: &[String], reason: &str, proto: &str, flow: &str| {
        lines.iter().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"drop")
                && w.get(1) == Some(&reason)
                && w.get(2) == Some(&"from-container")
                && w.get(3) == Some(&proto)
                && l.contains(flow)
        })
    };
    let tcp_flow = r.sixth_flow();
    let udp_end = format!("-> {EXT_IP}:9999");
    let both = |lines: &[String]| {
        has(lines, "snat-ports-exhausted", "tcp", &tcp_flow)
            && has(lines, "conntrack-insert-failed", "udp", &udp_end)
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) && !both(&m.lines()) {
        r.poke();
        thread::sleep(Duration::from_millis(100));
    }
    m.signal(libc::SIGINT);
    let (status, lines, err) = m.finish_text(Duration::from_secs(10));
    assert!(
        status.success(),
        "text monitor after SIGINT: {status:?} {err}"
    );
    assert!(both(&lines), "text monitor lines: {lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("drop ")),
        "not one drop per line: {lines:?}"
    );
    assert!(
        err.contains(&format!("{} event(s)", lines.len())),
        "event count not reported: {err:?}"
    );
    assert!(!listening(s), "listening flag left set by the text monitor");
}

/// IPv6 drops stream with their tuple too (their own record layout in the ring buffer).
#[test]
fn monitor_shows_ipv6_drops_with_their_addresses() {
    let s = Sandbox::new(CONTROL);
    s.add_ipv6();
    s.init(&[]);
    let n = s.network("m6", "10.97.0.0/24", &["--subnet6", "fd00:a4::/64"]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    s.ok(&["isolate", &a.name, &b.name]);
    let _srv = b.spawn(&["socat", "TCP6-LISTEN:7500,reuseaddr,fork", "EXEC:cat"]);
    net::wait_listening(&b, 7500, "tcp");
    let m = Monitor::start(&s, &[]);
    let want = "[fd00:a4::2]";
    let ok = m.poke_until(
        Duration::from_secs(10),
        || {
            let _ = a.run(&["timeout", "1", "socat", "-", "TCP6:[fd00:a4::3]:7500"]);
        },
        |evs| {
            evs.iter().any(|e| {
                e["reason"] == "policy-denied"
                    && e["proto"] == "tcp"
                    && e["flow"]
                        .as_str()
                        .is_some_and(|f| f.starts_with(want) && f.ends_with("[fd00:a4::3]:7500"))
            })
        },
    );
    let (_, evs, _) = m.finish(Duration::from_secs(2));
    assert!(ok, "no IPv6 drop with its tuple: {evs:?}");
}
