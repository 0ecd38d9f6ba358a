//! A container never holds a tuple the host's own stack may pick later (issue 17): kept, a
//! container's source ports inside the host's ephemeral range would become masquerade flows
//! on the uplink address, and the kernel, which cannot see them, would pick the same ports for
//! the host's own queries and connects. Those keep their replies while a container floods the
//! host's ephemeral ports.

use std::time::Duration;

use rig::{EXT_IP, Sandbox, net, text};

use crate::CONTROL;

/// From every source port `lo..=hi` to `dst:port`: one datagram (`udp`: each opens a flow),
/// or a connection held until killed (`tcp`).
const FROM_EVERY_PORT: &str = r#"
import socket, sys, time
proto, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
lo, hi = int(sys.argv[4]), int(sys.argv[5])
held = []
for p in range(lo, hi + 1):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(2)
    try:
        s.bind(("0.0.0.0", p))
        if proto == "udp":
            s.sendto(b"q", (dst, port))
            s.close()
        else:
            s.connect((dst, port))
            held.append(s)
    except OSError:
        pass
    if p % 500 == 0:
        time.sleep(0.01)
if held:
    time.sleep(120)
"#;

/// `n` exchanges with `dst:port`, each from a port the kernel picks: an echoed datagram
/// (`udp`) or a completed connect (`tcp`). Prints how many succeeded.
const FRESH_PORTS: &str = r#"
import socket, sys
proto, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ok = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.settimeout(1.5 if proto == "udp" else 2)
    try:
        if proto == "udp":
            s.sendto(b"host %d" % i, (dst, port))
            ok += s.recv(64) == b"host %d" % i
        else:
            s.connect((dst, port))
            ok += 1
    except OSError:
        pass
    s.close()
print(ok)
"#;

#[test]
fn a_container_cannot_take_the_hosts_udp_replies() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.71.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _echo = net::udp_echo_fast(&s.ext, 53);
    let (lo, hi) = net::ephemeral_ports(&s.host);
    net::python(
        &a,
        FROM_EVERY_PORT,
        &["udp", EXT_IP, "53", &lo.to_string(), &hi.to_string()],
    );
    let flows = s.json(&["conntrack"]);
    let held = flows.as_array().unwrap().len();
    assert!(
        held > (hi - lo) as usize / 2,
        "the flood opened only {held} flows"
    );
    let answered = net::python(&s.host, FRESH_PORTS, &["udp", EXT_IP, "53", "5"]);
    assert_eq!(
        answered.trim(),
        "5",
        "the host's queries lost their answers"
    );
}

/// Accepts TCP connections on a port and holds every one open.
const TCP_HOLD: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"#;

#[test]
fn a_container_cannot_take_the_hosts_tcp_connections() {
    // The host's range, narrowed before init, is what Weir keeps clear of (read in the host's
    // own namespace); the container holds a connection from every port of it.
    let s = Sandbox::new(CONTROL);
    s.host
        .must(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40199"]);
    s.init(&[]);
    let n = s.network("n", "10.72.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _srv = s.ext.spawn(&[net::PYTHON, "-c", TCP_HOLD, "7300"]);
    net::wait_listening(&s.ext, 7300, "tcp");
    let _hold = a.spawn(&[
        net::PYTHON,
        "-c",
        FROM_EVERY_PORT,
        "tcp",
        EXT_IP,
        "7300",
        "40000",
        "40199",
    ]);
    let established = || {
        text(
            &a.run(&["ss", "-Htn", "state", "established", "dport", "= :7300"])
                .stdout,
        )
        .lines()
        .count()
    };
    assert!(
        rig::wait_for(Duration::from_secs(60), || established() == 200),
        "the container holds {} connections, not 200",
        established()
    );
    let ok = net::python(&s.host, FRESH_PORTS, &["tcp", EXT_IP, "7300", "5"]);
    assert_eq!(ok.trim(), "5", "the host's connections failed");
}

#[test]
fn status_tells_when_the_hosts_ephemeral_ports_move_and_init_follows() {
    let s = Sandbox::new(CONTROL);
    s.host
        .must(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=32768 60999"]);
    s.init(&[]);
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    // The host's range grows over the SNAT ports (1024-32767).
    s.host
        .must(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=20000 60999"]);
    let p = s.problems();
    assert!(
        p.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("20000-60999"))),
        "{p:?}"
    );
    let out = s.init(&[]);
    assert!(out.contains("SNAT ports moved"), "{out}");
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}
