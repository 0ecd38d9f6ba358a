//! Issue #6 (exhaustion, restarts, upgrades, soak): a full conntrack map or an exhausted SNAT
//! port range fails new flows cleanly and counts them while established flows carry on;
//! `control` killed mid-command leaves a state the next command repairs; `control init` re-run
//! on a live host swaps programs without resetting a single connection; removed containers
//! leave no map entries; thousands of short connections leave no conntrack entries behind.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpStream},
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use control::{datapath::maps, instance::Instance};
use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, net, text, wait_for};
use serde_json::Value;
use weir_common::{
    conntrack::{CtEntry, FlowKey},
    endpoint::Endpoint,
    maps as names,
    policy::PolicyKey,
    publish::{PublishKey, PublishTarget},
};

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

// ---------------------------------------------------------------------------------------------
// Helpers: TCP sessions opened from inside a namespace, echo servers, map inspection.

/// Connects from inside namespace `ns` (on a short-lived thread that entered it; the socket
/// stays in that namespace), optionally from a fixed source port.
fn connect_from(
    ns: &str,
    addr: &str,
    port: u16,
    sport: Option<u16>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let ip: Ipv4Addr = addr.parse().expect("IPv4 address");
    let path = control::netns::path(ns);
    thread::scope(|sc| {
        sc.spawn(|| {
            control::netns::enter(&path).map_err(|e| io::Error::other(e.to_string()))?;
            // SAFETY: plain socket calls on a descriptor we own; structs fully initialised.
            let fd = unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                let one: libc::c_int = 1;
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                );
                // connect(2) honours the send timeout.
                let tv = libc::timeval {
                    tv_sec: timeout.as_secs() as _,
                    tv_usec: timeout.subsec_micros() as _,
                };
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_SNDTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                if let Some(p) = sport {
                    let local = sa(Ipv4Addr::UNSPECIFIED, p);
                    if libc::bind(
                        raw,
                        (&local as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                let remote = sa(ip, port);
                if libc::connect(
                    raw,
                    (&remote as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                fd
            };
            let s = TcpStream::from(fd);
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .join()
        .expect("connect thread")
    })
}

/// A long-lived TCP connection to an echo server; every round trip must come back intact.
struct Session {
    what: String,
    stream: TcpStream,
    n: u64,
}

impl Session {
    fn open(ns: &Netns, addr: &str, port: u16, sport: Option<u16>) -> io::Result<Self> {
        let stream = connect_from(&ns.name, addr, port, sport, Duration::from_secs(3))?;
        let mut s = Self {
            what: format!("{} -> {addr}:{port}", ns.name),
            stream,
            n: 0,
        };
        s.roundtrip()?;
        Ok(s)
    }

    fn roundtrip(&mut self) -> io::Result<()> {
        self.n += 1;
        let msg = format!("{:08}\n", self.n);
        self.stream.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        self.stream.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(io::Error::other(format!(
                "{}: sent {msg:?}, got {:?}",
                self.what,
                text(&back)
            )));
        }
        Ok(())
    }

    fn check(&mut self) {
        if let Err(e) = self.roundtrip() {
            panic!(
                "session {} broke after {} round trips: {e}",
                self.what, self.n
            );
        }
    }
}

/// A TCP echo server (socat, one `cat` per connection).
fn echo_server(ns: &Netns, port: u16) -> rig::Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr,backlog=512"),
        "EXEC:cat",
    ]);
    net::wait_listening(ns, port, "tcp");
    bg
}

/// A UDP sink (datagrams are read and discarded).
fn udp_sink(ns: &Netns, port: u16) -> rig::Bg {
    let bg = ns.spawn(&["socat", "-u", &format!("UDP4-RECV:{port}"), "/dev/null"]);
    net::wait_listening(ns, port, "udp");
    bg
}

fn instance(s: &Sandbox) -> Instance {
    Instance::new(&s.state_dir).expect("instance")
}

/// Keys of a pinned hash map.
fn keys<K: aya::Pod, V: aya::Pod>(s: &Sandbox, map: &str) -> Vec<K> {
    maps::hash::<K, V>(&instance(s), map)
        .expect("map")
        .keys()
        .filter_map(|k| k.ok())
        .collect()
}

/// Every conntrack map entry (both directions of each flow).
fn ct_entries(s: &Sandbox) -> Vec<(FlowKey, CtEntry)> {
    maps::conntrack_entries(&instance(s)).expect("conntrack map")
}

fn flows(s: &Sandbox, all: bool) -> Vec<Value> {
    let args: &[&str] = if all {
        &["conntrack", "--all"]
    } else {
        &["conntrack"]
    };
    s.json(args).as_array().cloned().unwrap_or_default()
}

fn event(s: &Sandbox, name: &str) -> u64 {
    s.stats()["events"][name].as_u64().unwrap_or(0)
}

fn problems(s: &Sandbox) -> Vec<Value> {
    s.json(&["status"])["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Program id per attachment, from `status --json`.
fn program_ids(s: &Sandbox) -> Vec<(String, u64)> {
    s.json(&["status"])["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["attached_to"].as_str().unwrap().to_string(),
                p["program_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("program not attached: {p}")),
            )
        })
        .collect()
}

/// Sends one datagram from each of `n` fresh sockets (fresh source ports) to `dst:port`,
/// `rounds` times over, from inside a namespace: a flood of distinct flows.
const UDP_FLOOD: &str = r#"
import socket, sys, time
dst, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.time() + secs
sent = 0
while time.time() < end:
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", (dst, port))
        s.close()
        sent += 1
print(sent)
"#;

// ---------------------------------------------------------------------------------------------
// Exhaustion.

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
            echo_server(&s.ext, 9000),
            echo_server(&peer, 9000),
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
        self.b.spawn_piped(&[
            "python3",
            "-c",
            UDP_FLOOD,
            EXT_IP,
            "9999",
            "500",
            &secs.to_string(),
        ])
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
    assert!(problems(s).is_empty(), "{:?}", problems(s));

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
            "40000-40003",
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
    let _echo = echo_server(&s.ext, 9000);
    let _echo2 = echo_server(&s.ext, 9001);
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
    for p in 40000..=40003 {
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
    assert!(problems(&s).is_empty());

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

// ---------------------------------------------------------------------------------------------
// Restarts and upgrades.

/// Everything the kernel holds for the sandbox agrees with `control container ls`: no problems,
/// no stray namespaces, veths or endpoint entries, and no journal left.
fn assert_consistent(s: &Sandbox, when: &str) {
    let p = problems(s);
    assert!(p.is_empty(), "{when}: problems {p:?}");
    assert!(
        !s.state_dir.join("journal").exists(),
        "{when}: journal left"
    );
    let listed = s.json(&["container", "ls"]);
    let listed = listed.as_array().unwrap();
    let mut names: Vec<String> = listed
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut netns: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{}-", s.id)))
        .collect();
    netns.sort();
    assert_eq!(names, netns, "{when}: containers vs namespaces");
    let mut veths: Vec<String> = s
        .host
        .must(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .filter(|n| n.starts_with("wr-"))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    veths.sort();
    let mut want_veths: Vec<String> = listed
        .iter()
        .map(|c| c["host_if"].as_str().unwrap().to_string())
        .collect();
    want_veths.sort();
    assert_eq!(veths, want_veths, "{when}: host veths");
    let mut eps: Vec<Ipv4Addr> = keys::<u32, Endpoint>(s, names::ENDPOINTS)
        .into_iter()
        .map(weir_common::addr::to_std)
        .collect();
    eps.sort();
    let mut ips: Vec<Ipv4Addr> = listed
        .iter()
        .map(|c| c["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    ips.sort();
    assert_eq!(eps, ips, "{when}: endpoint map");
    // Each network's gateway, and nothing else, on the host's loopback.
    let mut gws: Vec<String> = s
        .host
        .must(&["ip", "-o", "-4", "addr", "show", "dev", "lo"])
        .split_whitespace()
        .filter(|w| w.ends_with("/32"))
        .map(|w| w.trim_end_matches("/32").to_string())
        .collect();
    gws.sort();
    let mut want_gws: Vec<String> = s
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["gateway"].as_str().unwrap().to_string())
        .collect();
    want_gws.sort();
    assert_eq!(gws, want_gws, "{when}: gateway addresses");
}

/// Kills `control args` with SIGKILL after `delay`; true if it had not finished by then.
fn kill_after(s: &Sandbox, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(CONTROL)
        .arg("--state-dir")
        .arg(&s.state_dir)
        .args(["--host-netns", &s.host.name])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning control");
    thread::sleep(delay);
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

#[test]
fn control_killed_mid_command_is_repaired_by_the_next_one() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.92.0.0/24", &[]);
    let keep = s.container("keep", &n, &["--publish", "8080:80"]);
    let _web = net::http_server(&keep, 80, "kept");
    // How long uninterrupted commands take: kills are spread over those windows.
    let timed = |args: &[&str]| {
        let t = Instant::now();
        s.ok(args);
        t.elapsed()
    };
    let create = timed(&["container", "create", &s.name("probe"), "--network", &n]);
    s.ok(&["container", "rm", &s.name("probe")]);
    let init = timed(&["init"]);

    let rounds = 30u32;
    let (mut interrupted, mut repaired) = (0, 0);
    for i in 0..rounds {
        let name = s.name(&format!("k{i}"));
        let net_name = s.name(&format!("kn{i}"));
        let subnet = format!("10.92.{}.0/24", 100 + i);
        let frac = |d: Duration| d * (i / 5) / (rounds / 5) + Duration::from_millis(1);
        // Creates (with a published port), removals, network creates and re-inits in turn.
        let (args, delay): (Vec<&str>, Duration) = match i % 5 {
            0 | 1 => (
                vec![
                    "container",
                    "create",
                    &name,
                    "--network",
                    &n,
                    "--publish",
                    "9000:80",
                ],
                frac(create),
            ),
            2 => {
                s.ok(&["container", "create", &name, "--network", &n]);
                (vec!["container", "rm", &name], frac(create))
            }
            3 => (
                vec!["network", "create", &net_name, "--subnet", &subnet],
                frac(create),
            ),
            _ => (vec!["init"], frac(init)),
        };
        if kill_after(&s, &args, delay) {
            interrupted += 1;
        }
        let journal = s.state_dir.join("journal").exists();
        // The next changing command repairs first, and says so.
        let o = s.control(&["gc"]);
        assert!(o.status.success(), "gc after a kill: {}", text(&o.stderr));
        if journal {
            repaired += 1;
            assert!(
                text(&o.stderr).contains("interrupted"),
                "repair not reported: {}",
                text(&o.stderr)
            );
        }
        let when = format!("round {i} ({args:?} killed after {delay:?})");
        assert_consistent(&s, &when);
        // The names are usable again whatever happened.
        let _ = s.control(&["container", "rm", &name]);
        let _ = s.control(&["network", "rm", &net_name]);
        assert_consistent(&s, &format!("{when}, then removed"));
    }
    eprintln!("{rounds} kills: {interrupted} mid-command, {repaired} left a journal to repair");
    assert!(
        repaired >= rounds / 4,
        "too few kills landed mid-command to test repair"
    );

    // The survivor still works, its published port included, and new containers wire up.
    assert_eq!(
        net::curl(&s.ext, "http://198.18.0.1:8080/", 5).as_deref(),
        Some("kept")
    );
    let fresh = s.container("fresh", &n, &["--publish", "9000:80"]);
    let _w = net::http_server(&fresh, 80, "fresh");
    assert_eq!(
        net::curl(&s.ext, "http://198.18.0.1:9000/", 5).as_deref(),
        Some("fresh")
    );
    assert!(net::ping(&fresh, &s.ip_of(&keep), 1));
}

#[test]
fn reinit_on_a_live_host_keeps_every_connection_rule_and_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.93.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let web = s.container("web", &n, &["--publish", "8080:9000"]);
    let db = s.container("db", &n, &[]);
    let web_ip = s.ip_of(&web);
    let db_ip = s.ip_of(&db);
    s.ok(&["isolate", &db.name]);
    s.ok(&["allow", &a.name, &db.name, "--port", "9000/tcp"]);
    let _e1 = echo_server(&s.ext, 9000);
    let _e2 = echo_server(&web, 9000);
    let _e3 = echo_server(&db, 9000);
    let _ip = net::iperf_server(&s.ext, 5201);

    // Four long-lived sessions over every kind of path, plus a bulk transfer.
    let mut sessions = [
        Session::open(&a, EXT_IP, 9000, None).expect("masquerade"),
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published"),
        Session::open(&a, &web_ip, 9000, None).expect("container to container"),
        Session::open(&a, &db_ip, 9000, None).expect("allowed by rule"),
        Session::open(&s.host, "127.0.0.1", 8080, None).expect("host to published"),
    ];
    let iperf = a.spawn_piped(&["iperf3", "-J", "-c", EXT_IP, "-p", "5201", "-t", "15"]);
    // A background talker that never pauses during the re-inits.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut busy = Session::open(&a, EXT_IP, 9000, None).expect("busy session");
    let talker = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                busy.roundtrip()?;
                rounds.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            Ok::<(), io::Error>(())
        })
    };
    let ports_before = s.json(&["ports"]);
    let rules_before = s.json(&["rules"]);
    let mut ids = program_ids(&s);
    let reinits = 4;
    thread::sleep(Duration::from_secs(1));
    for r in 0..reinits {
        let out = s.init(&[]);
        assert!(out.contains("re-initialised"), "{out}");
        let now = program_ids(&s);
        assert_eq!(now.len(), ids.len());
        for ((what, old), (what2, new)) in ids.iter().zip(&now) {
            assert_eq!(what, what2);
            assert_ne!(old, new, "re-init {r}: program on {what} not replaced");
        }
        ids = now;
        for x in sessions.iter_mut() {
            x.check();
        }
        thread::sleep(Duration::from_millis(1500));
    }
    // Counted while the bulk transfer still runs (iperf3 may end its own streams with a reset).
    let resets: Vec<(String, u64)> = [&a, &web, &db, &s.ext, &s.host]
        .iter()
        .map(|ns| (ns.name.clone(), net::nstat(ns, "TcpEstabResets")))
        .collect();
    let mut iperf = iperf;
    assert!(iperf.is_running(), "iperf3 ended before the last re-init");
    stop.store(true, Ordering::Relaxed);
    talker
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the busy session broke during re-init: {e}"));
    assert!(rounds.load(Ordering::Relaxed) > 100);
    let report = iperf.finish_within(Duration::from_secs(30));
    let v: Value = serde_json::from_slice(&report.stdout).unwrap_or_default();
    assert!(
        report.status.success() && v.get("error").is_none(),
        "iperf3 across re-init failed: {}",
        text(&report.stdout)
    );
    assert!(net::iperf_bps(&v) > 0.0);
    for x in sessions.iter_mut() {
        x.check();
    }
    for (ns, n) in resets {
        assert_eq!(n, 0, "a connection in {ns} was reset during the re-inits");
    }
    eprintln!(
        "{reinits} re-inits: {} sessions + iperf3 ({:.1} Gbit/s) kept, {} busy round trips",
        sessions.len() + 1,
        net::iperf_bps(&v) / 1e9,
        rounds.load(Ordering::Relaxed)
    );
    // Ports and rules as before, and still in force for new connections.
    assert_eq!(s.json(&["ports"]), ports_before);
    assert_eq!(s.json(&["rules"]), rules_before);
    Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published port after re-init");
    Session::open(&a, &db_ip, 9000, None).expect("allowed after re-init");
    assert!(
        connect_from(&web.name, &db_ip, 9000, None, Duration::from_secs(1)).is_err(),
        "isolation lost in re-init"
    );
    assert!(problems(&s).is_empty());
}

#[test]
fn removing_a_container_frees_its_map_entries() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.94.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let c = s.container("c", &n, &[]);
    let _ea = echo_server(&a, 9000);
    let _ext = echo_server(&s.ext, 9000);
    let count = |s: &Sandbox| {
        (
            keys::<u32, Endpoint>(s, names::ENDPOINTS).len(),
            keys::<PublishKey, PublishTarget>(s, names::PUBLISH).len(),
            keys::<PolicyKey, u32>(s, names::POLICY).len(),
        )
    };
    let before = count(&s);
    let b = s.container(
        "b",
        &n,
        &["--publish", "8080:9000", "--publish", "8081:9000/udp"],
    );
    let bip = s.ip_of(&b);
    let _eb = echo_server(&b, 9000);
    s.ok(&["isolate", &b.name]);
    s.ok(&["allow", &a.name, &b.name, "--port", "9000/tcp"]);
    s.ok(&["isolate", &b.name, &c.name]);
    // Flows of every kind involving b.
    let mut flows_b = [
        Session::open(&b, EXT_IP, 9000, None).expect("b -> ext"),
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("ext -> b"),
        Session::open(&b, &s.ip_of(&a), 9000, None).expect("b -> a"),
    ];
    for f in flows_b.iter_mut() {
        f.check();
    }
    let during = count(&s);
    assert_eq!(during.0, before.0 + 1);
    assert_eq!(during.1, before.1 + 2);
    assert_eq!(during.2, before.2 + 4, "{during:?} vs {before:?}");
    let mentions_b = |s: &Sandbox| -> usize {
        ct_entries(s)
            .iter()
            .filter(|(k, _)| {
                [k.saddr, k.daddr]
                    .iter()
                    .any(|a| weir_common::addr::to_std(*a).to_string() == bip)
            })
            .count()
    };
    assert!(mentions_b(&s) >= 3);

    // A runtime stops a container's processes before removing it; ours are echo servers whose
    // connection handlers would otherwise outlive the namespace's name.
    b.kill_all();
    s.ok(&["container", "rm", &b.name]);
    assert_eq!(
        count(&s),
        before,
        "map entries left by the removed container"
    );
    assert_eq!(mentions_b(&s), 0, "conntrack entries of b left");
    assert!(
        flows(&s, true)
            .iter()
            .all(|f| !f.to_string().contains(&bip)),
        "{:?}",
        flows(&s, true)
    );
    assert!(s.json(&["rules"]).as_array().unwrap().is_empty());
    assert!(s.json(&["ports"]).as_array().unwrap().is_empty());
    let routes = s.host.must(&["ip", "route", "show"]);
    assert!(!routes.contains(&format!("{bip} ")), "route left: {routes}");
    let neigh = s.host.must(&["ip", "neigh", "show"]);
    assert!(
        !neigh.contains(&format!("{bip} ")),
        "neighbour left: {neigh}"
    );
    assert!(!b.path().exists());
    assert!(problems(&s).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Soak.

/// A TCP server that answers "ok" and closes first (so TIME_WAIT stays on its side).
const SHORT_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1024)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"ok")
    except OSError:
        pass
    c.close()
"#;

/// Opens `n` connections one after another, reads "ok" and EOF from each; prints successes.
/// Every tenth closes with a reset instead of a FIN.
const SHORT_CLIENT: &str = r#"
import socket, struct, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    try:
        c = socket.create_connection((dst, port), timeout=5)
        data = b""
        while True:
            chunk = c.recv(16)
            if not chunk:
                break
            data += chunk
        if i % 10 == 9:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        ok += data == b"ok"
    except OSError as e:
        print("error", i, e, file=sys.stderr)
print(ok)
"#;

fn soak_size() -> u64 {
    std::env::var("WEIR_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn soak_of_short_connections_leaves_no_conntrack_entries() {
    let s = Sandbox::with_weir(
        CONTROL,
        &[
            "--ct-timeout",
            "tcp-closed=1",
            "--ct-timeout",
            "tcp-fin=2",
            "--ct-timeout",
            "tcp-syn=2",
        ],
    );
    let n = s.network("n", "10.95.0.0/24", &[]);
    let client = s.container("client", &n, &[]);
    let server = s.container("server", &n, &["--publish", "8080:7000"]);
    let server_ip = s.ip_of(&server);
    let _srv = server.spawn(&["python3", "-c", SHORT_SERVER, "7000"]);
    net::wait_listening(&server, 7000, "tcp");
    let _ext_srv = s.ext.spawn(&["python3", "-c", SHORT_SERVER, "7000"]);
    net::wait_listening(&s.ext, 7000, "tcp");

    let total = soak_size();
    // Half container to container, a quarter masqueraded to the world, a quarter published.
    let plan: Vec<(&Netns, String, u64)> = vec![
        (&client, server_ip.clone(), total / 2),
        (&client, EXT_IP.to_string(), total / 4),
        (
            &s.ext,
            format!("{UPLINK_IP}:8080"),
            total - total / 2 - total / 4,
        ),
    ];
    let t = Instant::now();
    let runs: Vec<(rig::Bg, u64)> = plan
        .iter()
        .map(|(ns, dst, count)| {
            let (addr, port) = dst.split_once(':').unwrap_or((dst.as_str(), "7000"));
            (
                ns.spawn_piped(&[
                    "python3",
                    "-c",
                    SHORT_CLIENT,
                    addr,
                    port,
                    &count.to_string(),
                ]),
                *count,
            )
        })
        .collect();
    for (bg, count) in runs {
        let o = bg.finish_within(Duration::from_secs(600));
        let ok: u64 = text(&o.stdout).trim().parse().unwrap_or(0);
        assert_eq!(ok, count, "connections failed: {}", text(&o.stderr));
    }
    let took = t.elapsed();
    let created = event(&s, "conntrack-created");
    assert!(
        created >= total,
        "only {created} flows tracked for {total} connections"
    );

    // After the timeouts, no live flow is left; after gc, no entry at all.
    let drained = wait_for(Duration::from_secs(15), || flows(&s, false).is_empty());
    let live = flows(&s, false);
    assert!(
        drained,
        "{} flows still live, e.g. {:?}",
        live.len(),
        live.first()
    );
    let removed = s.ok(&["gc"]);
    let all = flows(&s, true);
    assert!(
        all.is_empty(),
        "after gc ({removed}): {} entries, e.g. {:?}",
        all.len(),
        all.first()
    );
    assert!(ct_entries(&s).is_empty(), "conntrack map not empty");
    assert_eq!(s.json(&["status"])["conntrack_entries"], 0);
    eprintln!(
        "soak: {total} connections in {took:?}, {created} flows tracked, all gone; {removed}"
    );
}
