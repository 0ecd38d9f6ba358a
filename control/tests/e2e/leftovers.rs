//! Nothing left behind: a removed container leaves no map, conntrack, route or neighbour
//! entry; thousands of short connections on every path (a soak) leave no conntrack entry and
//! at most one socket entry per host UDP socket.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use rig::{EXT_IP, Netns, Sandbox, UPLINK_IP, maps, net, text, wait_for};
use weir_common::maps::{self as names, SockRevKey, SockRevValue};

use crate::{
    CONTROL,
    inspect::{ct_entries, event, flows},
    session::Session,
};

#[test]
fn removing_a_container_frees_its_map_entries() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.94.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let c = s.container("c", &n, &[]);
    let _ea = net::tcp_echo(&a, 9000);
    let _ext = net::tcp_echo(&s.ext, 9000);
    let count = |s: &Sandbox| {
        (
            maps::len(&s.map_pin(names::ENDPOINTS)),
            maps::len(&s.map_pin(names::PUBLISH)),
            maps::len(&s.map_pin(names::POLICY)),
        )
    };
    let before = count(&s);
    let b = s.container(
        "b",
        &n,
        &["--publish", "8080:9000", "--publish", "8081:9000/udp"],
    );
    let bip = s.ip_of(&b);
    let _eb = net::tcp_echo(&b, 9000);
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
    assert!(s.problems().is_empty());
}

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
    let addr = |b: &[u8]| {
        (
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        )
    };
    maps::entries(&s.map_pin(names::SOCK_REVNAT))
        .iter()
        .map(|e| {
            let (k, v) = (maps::bytes(&e["key"]), maps::bytes(&e["value"]));
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

/// The soak's sandbox (1–2 s conntrack timeouts): `client`, and `server` with a short-lived
/// TCP server on 7000 (published as 8080) and a UDP echo on 7001 (published as 5353/udp); the
/// same short-lived TCP server on ext:7000.
struct SoakRig {
    client: Netns,
    server_ip: String,
    _servers: Vec<rig::Bg>,
    _server: Netns,
    // Last: dropped after what runs in it.
    s: Sandbox,
}

impl SoakRig {
    fn new() -> Self {
        let timeouts = [
            "tcp-closed=1",
            "tcp-fin=2",
            "tcp-syn=2",
            "udp=2",
            "udp-stream=2",
        ];
        let init: Vec<&str> = timeouts.iter().flat_map(|t| ["--ct-timeout", t]).collect();
        let s = Sandbox::with_weir(CONTROL, &init);
        let n = s.network("n", "10.95.0.0/24", &[]);
        let client = s.container("client", &n, &[]);
        let published = ["--publish", "8080:7000", "--publish", "5353:7001/udp"];
        let server = s.container("server", &n, &published);
        let server_ip = s.ip_of(&server);
        let servers = vec![
            server.spawn(&["python3", "-c", SHORT_SERVER, "7000"]),
            net::udp_echo_fast(&server, 7001),
            s.ext.spawn(&["python3", "-c", SHORT_SERVER, "7000"]),
        ];
        net::wait_listening(&server, 7000, "tcp");
        net::wait_listening(&s.ext, 7000, "tcp");
        Self {
            s,
            client,
            server_ip,
            _servers: servers,
            _server: server,
        }
    }

    /// `total` short TCP connections, a fifth over each path. The host's own connections to a
    /// published port go through the cgroup connect4 hook (no packet hook sees their first
    /// packet).
    fn tcp(&self, total: u64) {
        let (s, c, sip) = (&self.s, &self.client, self.server_ip.as_str());
        let (h, x) = (&s.host, &s.ext);
        let share = total / 5;
        let t = Instant::now();
        let hooked_before = s.path_packets("host-to-published");
        #[rustfmt::skip] // One row a line: a table.
        let plan = [
            (c, sip, 7000, total - 4 * share, "container to container"),
            (c, EXT_IP, 7000, share, "masqueraded"),
            (x, UPLINK_IP, 8080, share, "world to published"),
            (h, "127.0.0.1", 8080, share, "host to published (loopback)"),
            (h, UPLINK_IP, 8080, share, "host to published (uplink address)"),
        ];
        run_clients(SHORT_CLIENT, &plan);
        let took = t.elapsed();
        let hooked = s.path_packets("host-to-published") - hooked_before;
        assert!(
            hooked >= 2 * share,
            "only {hooked} of {} host connections went through the connect4 hook",
            2 * share
        );
        let created = event(s, "conntrack-created");
        assert!(
            created >= total - 2 * share,
            "only {created} flows tracked for {} forwarded connections",
            total - 2 * share
        );
        let removed = assert_conntrack_drains(s, "after the TCP soak");
        // TCP sockets never need their replies' source restored: nothing in the socket map.
        let left = sock_revnat(s);
        assert!(
            left.is_empty(),
            "{} WEIR_SOCK_REVNAT entries after TCP only, e.g. {:?}",
            left.len(),
            left.first()
        );
        eprintln!(
            "soak: {total} TCP connections in {took:?}, {created} flows tracked, all gone; {removed}"
        );
    }

    /// `udp` fresh sockets per path to the published UDP port, from the host (sendmsg/recvmsg
    /// hooks) over loopback and the uplink address, and from the world (packet hooks).
    fn udp(&self, udp: u64) {
        let s = &self.s;
        let (h, x) = (&s.host, &s.ext);
        let t = Instant::now();
        let hooked_before = s.path_packets("host-to-published");
        #[rustfmt::skip] // One row a line: a table.
        let plan = [
            (h, "127.0.0.1", 5353, udp, "host to published udp (loopback)"),
            (h, UPLINK_IP, 5353, udp, "host to published udp (uplink address)"),
            (x, UPLINK_IP, 5353, udp, "world to published udp"),
        ];
        run_clients(UDP_CLIENT, &plan);
        let took = t.elapsed();
        let hooked = s.path_packets("host-to-published") - hooked_before;
        assert!(
            hooked >= 2 * udp,
            "only {hooked} of {} host datagrams went through the sendmsg hook",
            2 * udp
        );
        let removed = assert_conntrack_drains(s, "after the UDP soak");
        let left = self.socket_entries(udp);
        eprintln!(
            "soak: {} UDP exchanges in {took:?}, conntrack empty ({removed}); {} socket entries \
             left for {} host UDP sockets (LRU, keyed by socket cookie)",
            3 * udp,
            left,
            2 * udp
        );
    }

    /// The socket map is keyed by socket cookie and nothing runs when a socket closes, so each
    /// host UDP socket that sent to a published port leaves its one entry until the LRU map
    /// (65,536 entries) evicts it; cookies are never reused, so a stale entry never matches
    /// again. What must hold after `udp` sockets per host path: at most one entry per socket
    /// (not one per datagram), none for TCP, and each maps this container's port back to the
    /// address the socket sent to. Returns how many there are.
    fn socket_entries(&self, udp: u64) -> usize {
        let left = sock_revnat(&self.s);
        assert!(
            left.len() as u64 <= 2 * udp,
            "{} WEIR_SOCK_REVNAT entries for {} host UDP sockets",
            left.len(),
            2 * udp
        );
        let server_addr: Ipv4Addr = self.server_ip.parse().unwrap();
        let up: Ipv4Addr = UPLINK_IP.parse().unwrap();
        for (to, from) in &left {
            assert_eq!(*to, (server_addr, 7001), "entry {to:?} -> {from:?}");
            assert!(
                *from == (Ipv4Addr::LOCALHOST, 5353) || *from == (up, 5353),
                "entry {to:?} -> {from:?}"
            );
        }
        left.len()
    }
}

#[test]
fn soak_of_short_connections_leaves_no_conntrack_or_socket_entries() {
    let r = SoakRig::new();
    let total = soak_size();
    r.tcp(total);
    r.udp((total / 10).max(10));
}
