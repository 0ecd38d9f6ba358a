//! Issue #6 (exhaustion, restarts, upgrades, soak): a full conntrack map or an exhausted SNAT
//! port range fails new flows cleanly and counts them while established flows carry on;
//! `control` killed mid-command leaves a state the next command repairs; `control init` re-run
//! on a live host swaps programs without resetting a single connection; removed containers
//! leave no map entries; thousands of short connections leave no conntrack entries behind.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpStream},
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
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
    maps::{self as names, SockRevKey, SockRevValue},
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

    // At least 30 rounds, more (up to 120) until enough kills landed mid-command: on a busy
    // machine commands take longer than the windows timed above, and more kills come late.
    let (rounds, enough) = (30u32, 8);
    let (mut interrupted, mut repaired, mut ran) = (0, 0, 0);
    for i in 0..rounds * 4 {
        if i >= rounds && repaired >= enough {
            break;
        }
        ran += 1;
        let name = s.name(&format!("k{i}"));
        let net_name = s.name(&format!("kn{i}"));
        let subnet = format!("10.92.{}.0/24", 100 + i);
        let frac = |d: Duration| d * (i % rounds / 5) / (rounds / 5) + Duration::from_millis(1);
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
        let pending = std::fs::read_to_string(s.state_dir.join("journal")).unwrap_or_default();
        if pending.starts_with("init") {
            // Only init can finish an init (it needs its options): other changes refuse,
            // saying so, and running it again finishes it.
            let e = s.fails(&["gc"]);
            assert!(e.contains("interrupted: run it again"), "{e}");
            assert!(
                s.ok(&["status"]).contains("interrupted"),
                "status does not report the interrupted init"
            );
            s.ok(&["init"]);
        }
        // The next changing command repairs first, and says so.
        let o = s.control(&["gc"]);
        assert!(o.status.success(), "gc after a kill: {}", text(&o.stderr));
        if journal && !pending.starts_with("init") {
            repaired += 1;
            assert!(
                text(&o.stderr).contains("interrupted"),
                "repair not reported: {}",
                text(&o.stderr)
            );
        } else if journal {
            // Finished by the init above.
            repaired += 1;
        }
        let when = format!("round {i} ({args:?} killed after {delay:?})");
        assert_consistent(&s, &when);
        // The names are usable again whatever happened.
        let _ = s.control(&["container", "rm", &name]);
        let _ = s.control(&["network", "rm", &net_name]);
        assert_consistent(&s, &format!("{when}, then removed"));
    }
    eprintln!("{ran} kills: {interrupted} mid-command, {repaired} left a journal to repair");
    assert!(
        repaired >= enough,
        "too few kills landed mid-command to test repair ({repaired} of {ran})"
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
    // The bulk transfer must outlast every re-init below; each loads and verifies every
    // program, which takes seconds on a busy machine: its length follows a timed re-init.
    let reinits = 4;
    let t = Instant::now();
    s.init(&[]);
    let per = t.elapsed() + Duration::from_millis(1500);
    let bulk_secs = ((per.as_secs_f64() * reinits as f64 * 2.0).ceil() as u64).max(15);
    let iperf = a.spawn_piped(&[
        "iperf3",
        "-J",
        "-c",
        EXT_IP,
        "-p",
        "5201",
        "-t",
        &bulk_secs.to_string(),
    ]);
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
    assert!(
        iperf.is_running(),
        "iperf3 ({bulk_secs} s) ended before the last re-init"
    );
    stop.store(true, Ordering::Relaxed);
    talker
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the busy session broke during re-init: {e}"));
    assert!(rounds.load(Ordering::Relaxed) > 100);
    let report = iperf.finish_within(Duration::from_secs(bulk_secs + 30));
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

/// Runs bpftool, asserting success; its stdout.
fn bpftool(args: &[&str]) -> String {
    let mut a = vec!["bpftool"];
    a.extend_from_slice(args);
    rig::must(&a)
}

/// (name, key size, value size) of the map pinned at `pin`.
fn pinned_map_info(pin: &Path) -> (String, u64, u64) {
    let v: Value = serde_json::from_str(&bpftool(&[
        "-j",
        "map",
        "show",
        "pinned",
        pin.to_str().unwrap(),
    ]))
    .expect("bpftool map show: JSON");
    (
        v["name"].as_str().unwrap_or("").to_string(),
        v["bytes_key"].as_u64().unwrap(),
        v["bytes_value"].as_u64().unwrap(),
    )
}

/// A map another build could have pinned in place of ours, and what refusing it must say.
struct Foreign<'a> {
    map: &'a str,
    kind: &'a str,
    key: usize,
    value: usize,
    /// `bpftool map update` arguments writing its content, if any.
    fill: Vec<&'a str>,
    says: Vec<String>,
}

/// Puts `f` in place of this instance's pin of `f.map` (the real map, which the attached
/// programs keep using, is moved aside). Returns the pin and where the real one went.
fn fake_pin(s: &Sandbox, f: &Foreign) -> (PathBuf, PathBuf) {
    let pin_dir = s.json(&["status"])["pin_dir"]
        .as_str()
        .expect("pin_dir")
        .to_string();
    let pin = Path::new(&pin_dir).join("maps").join(f.map);
    // bpffs refuses names containing a dot.
    let aside = pin.with_file_name(format!("{}_real", f.map));
    std::fs::rename(&pin, &aside).expect("moving the real pin aside");
    let (k, v) = (f.key.to_string(), f.value.to_string());
    bpftool(&[
        "map",
        "create",
        pin.to_str().unwrap(),
        "type",
        f.kind,
        "key",
        &k,
        "value",
        &v,
        "entries",
        "16",
        "name",
        "weir_other",
    ]);
    if !f.fill.is_empty() {
        let mut a = vec!["map", "update", "pinned", pin.to_str().unwrap()];
        a.extend_from_slice(&f.fill);
        bpftool(&a);
    }
    (pin, aside)
}

fn restore_pin((pin, aside): (PathBuf, PathBuf)) {
    std::fs::remove_file(&pin).expect("removing the foreign pin");
    std::fs::rename(&aside, &pin).expect("restoring the real pin");
}

/// Pins left by an older or newer build (a map with another value layout, a config map written
/// by another datapath schema) make `control init` fail before it changes anything: one error
/// line, non-zero exit, the same programs attached, the state file untouched, the foreign pin
/// left as it was, and every flow still forwarded.
#[test]
fn reinit_refuses_incompatible_pins_and_changes_nothing() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.96.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let web = s.container("web", &n, &["--publish", "8080:9000"]);
    let web_ip = s.ip_of(&web);
    let _e1 = echo_server(&s.ext, 9000);
    let _e2 = echo_server(&web, 9000);
    let mut sessions = [
        Session::open(&a, EXT_IP, 9000, None).expect("masquerade"),
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published"),
        Session::open(&a, &web_ip, 9000, None).expect("container to container"),
        Session::open(&s.host, "127.0.0.1", 8080, None).expect("host to published"),
    ];
    let ids = program_ids(&s);
    let state_file = s.state_dir.join("state.json");
    let state = std::fs::read(&state_file).expect("state.json");
    let ports = s.json(&["ports"]);
    let cfg = maps::read_config(&instance(&s))
        .expect("config")
        .expect("config");

    let value_size = size_of::<SockRevValue>();
    let older = weir_common::SCHEMA_VERSION - 1;
    let old_cfg = weir_common::config::Config {
        schema: older,
        ..cfg
    };
    let old_bytes: Vec<String> = bytemuck::bytes_of(&old_cfg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut fill = vec!["key", "hex", "00", "00", "00", "00", "value", "hex"];
    fill.extend(old_bytes.iter().map(String::as_str));
    let cases = [
        Foreign {
            map: names::SOCK_REVNAT,
            kind: "hash",
            key: size_of::<SockRevKey>(),
            value: value_size / 2,
            fill: Vec::new(),
            says: vec![
                format!("{}/{}", size_of::<SockRevKey>(), value_size / 2),
                format!("expects {}/{value_size}", size_of::<SockRevKey>()),
            ],
        },
        // Right key and value sizes, wrong kind and size: an LRU of 16 entries would silently
        // evict established flows.
        Foreign {
            map: names::CONNTRACK,
            kind: "lru_hash",
            key: size_of::<weir_common::conntrack::FlowKey>(),
            value: size_of::<weir_common::conntrack::CtEntry>(),
            fill: Vec::new(),
            says: vec![
                "type 9 with 16 entries".to_string(),
                format!("expects type 1 with {}", names::CONNTRACK_MAX),
            ],
        },
        Foreign {
            map: names::CONFIG,
            kind: "array",
            key: 4,
            value: size_of::<weir_common::config::Config>(),
            fill,
            says: vec![
                format!("schema {older}"),
                format!("uses {}", weir_common::SCHEMA_VERSION),
            ],
        },
    ];
    for f in &cases {
        let (map, k, v) = (f.map, f.key, f.value);
        let pins = fake_pin(&s, f);
        let e = s.fails(&["init"]);
        eprintln!("init with a foreign {map} pin: {e}");
        for want in f.says.iter().map(String::as_str).chain(["control down"]) {
            assert!(e.contains(want), "{map}: error should say {want:?}: {e}");
        }
        assert!(e.starts_with("error: "), "{e}");
        // Nothing was applied: same programs, same state, no journal, the foreign pin as it was.
        assert_eq!(program_ids(&s), ids, "{map}: programs replaced");
        assert_eq!(
            std::fs::read(&state_file).unwrap(),
            state,
            "{map}: state.json rewritten"
        );
        assert!(!s.state_dir.join("journal").exists(), "{map}: journal left");
        assert_eq!(
            pinned_map_info(&pins.0),
            ("weir_other".to_string(), k as u64, v as u64),
            "{map}: the foreign pin was replaced"
        );
        // Still forwarding: established flows and new ones, on every path.
        for x in sessions.iter_mut() {
            x.check();
        }
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("new published flow");
        Session::open(&a, EXT_IP, 9000, None).expect("new masqueraded flow");
        Session::open(&s.host, UPLINK_IP, 8080, None).expect("new host flow");
        restore_pin(pins);
    }
    assert_eq!(s.json(&["ports"]), ports);

    // With the real pins back, init works again and swaps the programs as usual.
    let out = s.init(&[]);
    assert!(out.contains("re-initialised"), "{out}");
    for ((what, old), (_, new)) in ids.iter().zip(&program_ids(&s)) {
        assert_ne!(old, new, "program on {what} not replaced");
    }
    for x in sessions.iter_mut() {
        x.check();
    }
    for ns in [&a, &web, &s.ext, &s.host] {
        assert_eq!(
            net::nstat(ns, "TcpEstabResets"),
            0,
            "a connection in {} was reset",
            ns.name
        );
    }
    assert!(problems(&s).is_empty(), "{:?}", problems(&s));
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

/// A UDP echo server (one socket, no process per datagram).
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"#;

/// Exchanges one datagram from each of `n` fresh sockets (unconnected: sendto/recvfrom) with
/// `dst:port`; prints how many replies came back intact *from the address sent to* (what an
/// application checks, and what the recvmsg hook restores for published ports).
const UDP_CLIENT: &str = r#"
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    msg = b"u%d" % i
    for attempt in range(3):
        s.sendto(msg, (dst, port))
        try:
            data, src = s.recvfrom(64)
        except socket.timeout:
            continue
        if data == msg and src == (dst, port):
            ok += 1
        else:
            print("bad reply", i, data, src, file=sys.stderr)
        break
    s.close()
print(ok)
"#;

/// Total short TCP connections of the soak (`WEIR_SOAK_CONNECTIONS`, default 2000); the UDP
/// phase uses a tenth of it per path.
fn soak_size() -> u64 {
    std::env::var("WEIR_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Entries of the instance's pinned `WEIR_SOCK_REVNAT` map (found through `status --json`'s
/// pin_dir), read with bpftool: (container address, container port) -> (published address,
/// published port) per socket that sent to a published UDP port.
fn sock_revnat(s: &Sandbox) -> Vec<((Ipv4Addr, u16), (Ipv4Addr, u16))> {
    let pin_dir = s.json(&["status"])["pin_dir"]
        .as_str()
        .expect("pin_dir")
        .to_string();
    let pin = format!("{pin_dir}/maps/{}", names::SOCK_REVNAT);
    let dump: Value = serde_json::from_str(&rig::must(&[
        "bpftool", "-j", "map", "dump", "pinned", &pin,
    ]))
    .expect("bpftool map dump: JSON");
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap_or_else(|| panic!("bpftool printed no raw bytes: {v}"))
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    let addr = |b: &[u8]| {
        (
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        )
    };
    dump.as_array()
        .expect("bpftool map dump: an array")
        .iter()
        .map(|e| {
            let (k, v) = (bytes(&e["key"]), bytes(&e["value"]));
            assert_eq!(
                (k.len(), v.len()),
                (size_of::<SockRevKey>(), size_of::<SockRevValue>()),
                "{e}"
            );
            // Key: socket cookie (8 bytes), then the container address and port.
            (addr(&k[8..]), addr(&v))
        })
        .collect()
}

/// Runs `script` in each namespace of `plan` at once and asserts each printed its count.
fn run_clients(script: &str, plan: &[(&Netns, &str, u16, u64, &str)]) {
    let runs: Vec<rig::Bg> = plan
        .iter()
        .map(|(ns, addr, port, count, _)| {
            ns.spawn_piped(&[
                "python3",
                "-c",
                script,
                addr,
                &port.to_string(),
                &count.to_string(),
            ])
        })
        .collect();
    for (bg, (_, addr, port, count, what)) in runs.into_iter().zip(plan) {
        let o = bg.finish_within(Duration::from_secs(900));
        let ok: u64 = text(&o.stdout).trim().parse().unwrap_or(0);
        assert_eq!(
            ok,
            *count,
            "{what} ({addr}:{port}): {ok} of {count} succeeded: {}",
            text(&o.stderr)
        );
    }
}

/// After the timeouts no live flow is left; after gc, no entry at all.
fn assert_conntrack_drains(s: &Sandbox, when: &str) -> String {
    let drained = wait_for(Duration::from_secs(15), || flows(s, false).is_empty());
    let live = flows(s, false);
    assert!(
        drained,
        "{when}: {} flows still live, e.g. {:?}",
        live.len(),
        live.first()
    );
    let removed = s.ok(&["gc"]).trim().to_string();
    let all = flows(s, true);
    assert!(
        all.is_empty(),
        "{when}: after gc ({removed}): {} entries, e.g. {:?}",
        all.len(),
        all.first()
    );
    assert!(ct_entries(s).is_empty(), "{when}: conntrack map not empty");
    assert_eq!(s.json(&["status"])["conntrack_entries"], 0, "{when}");
    removed
}

#[test]
fn soak_of_short_connections_leaves_no_conntrack_or_socket_entries() {
    let s = Sandbox::with_weir(
        CONTROL,
        &[
            "--ct-timeout",
            "tcp-closed=1",
            "--ct-timeout",
            "tcp-fin=2",
            "--ct-timeout",
            "tcp-syn=2",
            "--ct-timeout",
            "udp=2",
            "--ct-timeout",
            "udp-stream=2",
        ],
    );
    let n = s.network("n", "10.95.0.0/24", &[]);
    let client = s.container("client", &n, &[]);
    let server = s.container(
        "server",
        &n,
        &["--publish", "8080:7000", "--publish", "5353:7001/udp"],
    );
    let server_ip = s.ip_of(&server);
    let _srv = server.spawn(&["python3", "-c", SHORT_SERVER, "7000"]);
    net::wait_listening(&server, 7000, "tcp");
    let _udp_srv = server.spawn(&["python3", "-c", UDP_ECHO, "7001"]);
    net::wait_listening(&server, 7001, "udp");
    let _ext_srv = s.ext.spawn(&["python3", "-c", SHORT_SERVER, "7000"]);
    net::wait_listening(&s.ext, 7000, "tcp");

    // TCP: a fifth over each path. The host's own connections to a published port go through
    // the cgroup connect4 hook (no packet hook sees their first packet).
    let total = soak_size();
    let share = total / 5;
    let t = Instant::now();
    let hooked_before = s.path_packets("host-to-published");
    run_clients(
        SHORT_CLIENT,
        &[
            (
                &client,
                &server_ip,
                7000,
                total - 4 * share,
                "container to container",
            ),
            (&client, EXT_IP, 7000, share, "masqueraded"),
            (&s.ext, UPLINK_IP, 8080, share, "world to published"),
            (
                &s.host,
                "127.0.0.1",
                8080,
                share,
                "host to published (loopback)",
            ),
            (
                &s.host,
                UPLINK_IP,
                8080,
                share,
                "host to published (uplink address)",
            ),
        ],
    );
    let took = t.elapsed();
    let hooked = s.path_packets("host-to-published") - hooked_before;
    assert!(
        hooked >= 2 * share,
        "only {hooked} of {} host connections went through the connect4 hook",
        2 * share
    );
    let created = event(&s, "conntrack-created");
    assert!(
        created >= total - 2 * share,
        "only {created} flows tracked for {} forwarded connections",
        total - 2 * share
    );
    let removed = assert_conntrack_drains(&s, "after the TCP soak");
    // TCP sockets never need their replies' source restored: nothing in the socket map.
    let left = sock_revnat(&s);
    assert!(
        left.is_empty(),
        "{} WEIR_SOCK_REVNAT entries after TCP only, e.g. {:?}",
        left.len(),
        left.first()
    );
    eprintln!(
        "soak: {total} TCP connections in {took:?}, {created} flows tracked, all gone; {removed}"
    );

    // UDP: fresh sockets to the published UDP port, from the host (sendmsg/recvmsg hooks) over
    // loopback and the uplink address, and from the world (packet hooks).
    let udp = (total / 10).max(10);
    let t = Instant::now();
    let hooked_before = s.path_packets("host-to-published");
    run_clients(
        UDP_CLIENT,
        &[
            (
                &s.host,
                "127.0.0.1",
                5353,
                udp,
                "host to published udp (loopback)",
            ),
            (
                &s.host,
                UPLINK_IP,
                5353,
                udp,
                "host to published udp (uplink address)",
            ),
            (&s.ext, UPLINK_IP, 5353, udp, "world to published udp"),
        ],
    );
    let took = t.elapsed();
    let hooked = s.path_packets("host-to-published") - hooked_before;
    assert!(
        hooked >= 2 * udp,
        "only {hooked} of {} host datagrams went through the sendmsg hook",
        2 * udp
    );
    let removed = assert_conntrack_drains(&s, "after the UDP soak");
    // The socket map is keyed by socket cookie and nothing runs when a socket closes, so each
    // host UDP socket that sent to a published port leaves its one entry until the LRU map
    // (65,536 entries) evicts it; cookies are never reused, so a stale entry never matches
    // again. What must hold: at most one entry per socket (not one per datagram), none for
    // TCP, and each maps this container's port back to the address the socket sent to.
    let left = sock_revnat(&s);
    assert!(
        left.len() as u64 <= 2 * udp,
        "{} WEIR_SOCK_REVNAT entries for {} host UDP sockets",
        left.len(),
        2 * udp
    );
    let server_addr: Ipv4Addr = server_ip.parse().unwrap();
    let up: Ipv4Addr = UPLINK_IP.parse().unwrap();
    for (to, from) in &left {
        assert_eq!(*to, (server_addr, 7001), "entry {to:?} -> {from:?}");
        assert!(
            *from == (Ipv4Addr::LOCALHOST, 5353) || *from == (up, 5353),
            "entry {to:?} -> {from:?}"
        );
    }
    eprintln!(
        "soak: {} UDP exchanges in {took:?}, conntrack empty ({removed}); {} socket entries \
         left for {} host UDP sockets (LRU, keyed by socket cookie)",
        3 * udp,
        left.len(),
        2 * udp
    );
}

#[test]
fn an_init_killed_while_moving_the_uplink_is_finished_by_init() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.95.0.0/24", &[]);
    let web = s.container("web", &n, &["--publish", "8080:80"]);
    let _w = net::http_server(&web, 80, "web");
    // Another interface of the host to move the uplink to.
    s.host.must(&[
        "ip", "link", "add", "up9", "type", "veth", "peer", "name", "up9p",
    ]);
    s.host
        .must(&["ip", "addr", "add", "198.18.9.1/24", "dev", "up9"]);
    s.host.must(&["ip", "link", "set", "up9", "up"]);
    s.host.must(&["ip", "link", "set", "up9p", "up"]);
    // The move got as far as attaching to up9 and was killed before it saved the state: the
    // state still names up0, the uplink's link pin sits on up9, the journal is left.
    let state = s.state_dir.join("state.json");
    let before = std::fs::read(&state).unwrap();
    s.ok(&["init", "--uplink", "up9"]);
    std::fs::write(&state, &before).unwrap();
    std::fs::write(s.state_dir.join("journal"), "init --uplink up9").unwrap();

    // Only init finishes an init: other changes refuse, and status says why.
    let e = s.fails(&["publish", &web.name, "8081:80"]);
    assert!(e.contains("interrupted: run it again"), "{e}");
    assert!(s.ok(&["status"]).contains("was interrupted"));
    // Running it again (here: for up0, as the state says) finishes it — the stale pin on up9
    // is replaced, not reused, so up0 serves the published port again.
    s.ok(&["init"]);
    assert!(!s.state_dir.join("journal").exists());
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("web")
    );
    assert!(s.ok(&["status"]).contains("healthy"));
    s.ok(&["publish", &web.name, "8081:80"]);
}
