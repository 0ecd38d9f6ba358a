//! Exhaustion: a full conntrack map or an exhausted SNAT port range fails new flows cleanly
//! and counts them, while established flows carry on; the table recovers with no process
//! involved.

use std::{
    thread,
    time::{Duration, Instant},
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text, wait_for};

use crate::{
    CONTROL,
    inspect::flows,
    session::{Session, connect_from},
};

/// A UDP sink (datagrams are read and discarded).
fn udp_sink(ns: &Netns, port: u16) -> rig::Bg {
    let bg = ns.spawn(&["socat", "-u", &format!("UDP4-RECV:{port}"), "/dev/null"]);
    net::wait_listening(ns, port, "udp");
    bg
}

/// The conntrack map size for the flood tests: far fewer entries than the flood has flows, yet
/// well above what the kernel's LRU keeps in per-CPU caches (up to 128 free nodes per CPU),
/// below which an LRU map behaves erratically.
const SMALL_CONNTRACK: u64 = 4096;

/// A sandbox with a small conntrack table (UDP entries expire 2 s after their last packet):
/// containers `a` (talker), `b` (flooder) and `peer` (echo on 9000, published as 8080), an
/// echo server on ext:9000 and a UDP sink on ext:9999.
struct FloodRig {
    s: Sandbox,
    a: Netns,
    b: Netns,
    peer_ip: String,
    _servers: Vec<rig::Bg>,
    // Dropping a namespace handle kills what runs in it: keep it as long as its server.
    _peer: Netns,
}

impl FloodRig {
    fn new() -> Self {
        let max = SMALL_CONNTRACK.to_string();
        let s = Sandbox::with_weir(
            CONTROL,
            &[
                "--conntrack-max",
                &max,
                "--ct-timeout",
                "udp=2",
                "--ct-timeout",
                "udp-stream=2",
            ],
        );
        let n = s.network("n", "10.90.0.0/24", &[]);
        let a = s.container("a", &n, &[]);
        let b = s.container("b", &n, &[]);
        let peer = s.container("peer", &n, &["--publish", "8080:9000"]);
        let peer_ip = s.ip_of(&peer);
        let servers = vec![
            net::tcp_echo(&s.ext, 9000),
            net::tcp_echo(&peer, 9000),
            udp_sink(&s.ext, 9999),
        ];
        assert_eq!(s.json(&["status"])["conntrack_max"], SMALL_CONNTRACK);
        Self {
            s,
            a,
            b,
            peer_ip,
            _servers: servers,
            _peer: peer,
        }
    }

    /// Sessions over the three kinds of path: masqueraded, container to container, published.
    fn sessions(&self) -> Vec<Session> {
        vec![
            Session::open(&self.a, EXT_IP, 9000, None).expect("session to ext"),
            Session::open(&self.a, &self.peer_ip, 9000, None).expect("session to peer"),
            Session::open(&self.s.ext, UPLINK_IP, 8080, None).expect("published session"),
        ]
    }

    /// Floods for `secs` seconds with fresh UDP flows from `b`; returns the datagrams sent.
    fn flood(&self, secs: u32) -> rig::Bg {
        net::fresh_udp_flows(&self.b, EXT_IP, 9999, 500, secs)
    }

    fn live_entries(&self) -> u64 {
        self.s.json(&["status"])["conntrack_entries"]
            .as_u64()
            .unwrap()
    }
}

fn sent(flood: rig::Bg) -> u64 {
    text(&flood.finish_within(Duration::from_secs(20)).stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn full_conntrack_map_stays_bounded_and_recovers() {
    let r = FloodRig::new();
    let s = &r.s;
    let flood = r.flood(5);
    let start = Instant::now();
    let (mut new_ok, mut new_failed, mut peak) = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(4) {
        // Commands keep answering, and count each live entry once (no walk restarting on a
        // map that changes under it).
        peak = peak.max(r.live_entries());
        // New flows may be refused while the table is full of live flood flows; the datapath
        // sweeps expired ones (once a second) so some get through.
        match connect_from(&r.a.name, EXT_IP, 9000, None, Duration::from_secs(1)) {
            Ok(_) => new_ok += 1,
            Err(_) => new_failed += 1,
        }
        thread::sleep(Duration::from_millis(100));
    }
    let sent = sent(flood);
    let stats = s.stats();
    let created = stats["events"]["conntrack-created"].as_u64().unwrap();
    eprintln!(
        "flood: {sent} datagrams, {created} flows through a {SMALL_CONNTRACK}-entry map \
         (peak {peak} live); new connections during it: {new_ok} ok, {new_failed} failed; \
         conntrack-insert-failed {}",
        stats["drops"]["conntrack-insert-failed"]
    );
    assert!(
        created >= SMALL_CONNTRACK / 2
            && stats["drops"]["conntrack-insert-failed"]
                .as_object()
                .is_some_and(|h| !h.is_empty()),
        "the flood did not overflow the table: {created} flows, {stats}"
    );
    assert!(
        peak <= SMALL_CONNTRACK,
        "status counted {peak} live entries in a {SMALL_CONNTRACK}-entry map"
    );
    assert!(s.problems().is_empty(), "{:?}", s.problems());

    // Recovery with no process involved: once the flood's entries expire, the next new flow
    // finds the table full, the datapath sweeps it, and new flows work again.
    thread::sleep(Duration::from_secs(3));
    let _ = connect_from(&r.a.name, EXT_IP, 9000, None, Duration::from_secs(1));
    thread::sleep(Duration::from_millis(200));
    for _ in 0..20 {
        Session::open(&r.a, EXT_IP, 9000, None)
            .expect("new flow after the flood, before any gc")
            .check();
    }
    assert!(s.stats()["events"]["conntrack-swept"].as_u64().unwrap_or(0) > 0);
    s.ok(&["gc"]);
    let left = flows(s, true)
        .into_iter()
        .filter(|f| f["proto"] == "udp")
        .count();
    assert_eq!(left, 0, "flood entries left after gc");
    for mut x in r.sessions() {
        x.check();
    }
    for _ in 0..20 {
        Session::open(&r.a, EXT_IP, 9000, None)
            .expect("new flow after the flood")
            .check();
    }
}

/// A full table keeps every established flow (conntrack is a plain hash, never an LRU that
/// would evict them) and refuses new ones, counted as `conntrack-insert-failed`.
#[test]
fn full_conntrack_map_keeps_established_flows() {
    let r = FloodRig::new();
    let mut sessions = r.sessions();
    let flood = r.flood(5);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for x in sessions.iter_mut() {
            x.check();
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = sent(flood);
    for x in sessions.iter_mut() {
        x.check();
    }
    assert!(
        r.s.drops("conntrack-insert-failed") > 0,
        "new flows beyond the table were not refused"
    );
}

#[test]
fn exhausted_snat_ports_fail_new_flows_to_that_destination_only() {
    // Four SNAT ports; every client uses source port 5555, so only the first keeps its own.
    let s = Sandbox::with_weir(
        CONTROL,
        &[
            "--snat-ports",
            "20000-20003",
            "--ct-timeout",
            "tcp-closed=1",
            "--ct-timeout",
            "tcp-fin=1",
            "--ct-timeout",
            "tcp-syn=2",
        ],
    );
    let n = s.network("n", "10.91.0.0/24", &[]);
    let cs: Vec<Netns> = (0..6)
        .map(|i| s.container(&format!("c{i}"), &n, &[]))
        .collect();
    let _echo = net::tcp_echo(&s.ext, 9000);
    let _echo2 = net::tcp_echo(&s.ext, 9001);
    let mut sessions: Vec<Session> = cs[..5]
        .iter()
        .map(|c| Session::open(c, EXT_IP, 9000, Some(5555)).expect("one of the first five"))
        .collect();
    let used: Vec<String> = flows(&s, false)
        .iter()
        .filter_map(|f| f["translated"].as_str().map(String::from))
        .collect();
    assert_eq!(used.len(), 5, "{used:?}");
    assert_eq!(
        used.iter()
            .filter(|t| t.starts_with(&format!("{UPLINK_IP}:5555 ")))
            .count(),
        1,
        "{used:?}"
    );
    for p in 20000..=20003 {
        assert!(
            used.iter()
                .any(|t| t.starts_with(&format!("{UPLINK_IP}:{p} "))),
            "port {p} unused: {used:?}"
        );
    }

    // The sixth flow to the same destination finds no port: refused, counted, nothing breaks.
    let before = s.drops("snat-ports-exhausted");
    let sixth = connect_from(
        &cs[5].name,
        EXT_IP,
        9000,
        Some(5555),
        Duration::from_secs(2),
    );
    assert!(sixth.is_err(), "a sixth flow got through");
    assert!(
        s.drops("snat-ports-exhausted") > before,
        "exhaustion not counted: {}",
        s.stats()["drops"]
    );
    for x in sessions.iter_mut() {
        x.check();
    }
    // Another destination port is another tuple: the same source port works there.
    let mut other = Session::open(&cs[5], EXT_IP, 9001, Some(5555)).expect("other destination");
    other.check();
    assert!(s.problems().is_empty());

    // One flow ends; once its entries expire its port is free again.
    drop(sessions.remove(0));
    let got = wait_for(Duration::from_secs(15), || {
        connect_from(
            &cs[5].name,
            EXT_IP,
            9000,
            Some(5555),
            Duration::from_secs(1),
        )
        .is_ok()
    });
    assert!(got, "the freed SNAT port was never reused");
    for x in sessions.iter_mut() {
        x.check();
    }
}
