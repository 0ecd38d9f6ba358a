//! Traffic helpers: servers and clients run inside namespaces with standard tools.

use std::time::Duration;

use crate::{Bg, Netns, text, wait_for};

/// An HTTP server (python's http.server) serving `body` at `/` on `port`.
pub fn http_server(ns: &Netns, port: u16, body: &str) -> Bg {
    let dir = std::env::temp_dir().join(format!("weir-www-{}-{port}", ns.name));
    std::fs::create_dir_all(&dir).expect("www dir");
    std::fs::write(dir.join("index.html"), body).expect("index.html");
    let bg = ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "0.0.0.0",
        "-d",
        dir.to_str().unwrap(),
    ]);
    wait_listening(ns, port, "tcp");
    bg.with_cleanup(dir)
}

/// Waits until something listens on `port`/`proto` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16, proto: &str) {
    let flag = if proto == "udp" { "-uln" } else { "-tln" };
    let ok = wait_for(Duration::from_secs(10), || {
        let o = ns.run(&["ss", "-H", flag, "sport", &format!("= :{port}")]);
        !text(&o.stdout).trim().is_empty()
    });
    assert!(ok, "nothing listens on {port}/{proto} in {}", ns.name);
}

/// `curl` from `ns`; returns the body, or None on failure (timeout `secs`).
pub fn curl(ns: &Netns, url: &str, secs: u32) -> Option<String> {
    let o = ns.run(&["curl", "-s", "-f", "-m", &secs.to_string(), url]);
    o.status.success().then(|| text(&o.stdout))
}

/// A UDP echo server (socat) on `port`.
pub fn udp_echo(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("UDP4-RECVFROM:{port},fork,reuseaddr"),
        "EXEC:cat",
    ]);
    wait_listening(ns, port, "udp");
    bg
}

/// Answers every UDP datagram on `port` with the datagram itself, in one process (a forking
/// echo cannot keep up with a flood of new flows).
const UDP_ECHO_ONE_PROCESS: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"#;

/// A UDP echo server on `port` that keeps up with many fresh flows ([`UDP_ECHO_ONE_PROCESS`]).
pub fn udp_echo_fast(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&[PYTHON, "-c", UDP_ECHO_ONE_PROCESS, &port.to_string()]);
    wait_listening(ns, port, "udp");
    bg
}

/// Debian's python3, which has python3-scapy (a pyenv python may come first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs a python `script` with `args` in `ns`, asserting it succeeded; returns its stdout.
pub fn python(ns: &Netns, script: &str, args: &[&str]) -> String {
    let mut a = vec![PYTHON, "-c", script];
    a.extend_from_slice(args);
    ns.must(&a)
}

/// The host's ephemeral port range in `ns` (the ports its own stack picks).
pub fn ephemeral_ports(ns: &Netns) -> (u16, u16) {
    let r = ns.must(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    let mut it = r.split_whitespace().map(|p| p.parse::<u16>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Sends `msg` over UDP to `addr:port` from `ns` and returns the reply, if any within `secs`.
pub fn udp_ask(ns: &Netns, addr: &str, port: u16, msg: &str, secs: u32) -> Option<String> {
    let o = ns.sh(&format!(
        "printf '%s' '{msg}' | timeout {secs} socat -T{secs} - UDP4:{addr}:{port}"
    ));
    let out = text(&o.stdout);
    (!out.is_empty()).then_some(out)
}

/// A TCP connection test with nc: true when `addr:port` accepts within `secs`.
pub fn tcp_connects(ns: &Netns, addr: &str, port: u16, secs: u32) -> bool {
    ns.run(&["nc", "-z", "-w", &secs.to_string(), addr, &port.to_string()])
        .status
        .success()
}

/// A TCP listener (nc -lk) on `port` that accepts connections and discards data.
pub fn tcp_listener(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&["nc", "-lk", "-p", &port.to_string()]);
    wait_listening(ns, port, "tcp");
    bg
}

/// ping; true when at least one reply arrives.
pub fn ping(ns: &Netns, addr: &str, count: u32) -> bool {
    ns.run(&[
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        addr,
    ])
    .status
    .success()
}

/// An iperf3 server on `port` (one client at a time).
pub fn iperf_server(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&["iperf3", "-s", "-p", &port.to_string()]);
    wait_listening(ns, port, "tcp");
    bg
}

/// Runs an iperf3 client; returns the parsed JSON report.
pub fn iperf(ns: &Netns, addr: &str, port: u16, args: &[&str]) -> serde_json::Value {
    let p = port.to_string();
    let mut a = vec!["iperf3", "-J", "-c", addr, "-p", p.as_str()];
    a.extend_from_slice(args);
    let o = ns.run(&a);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(
        o.status.success() && v.get("error").is_none(),
        "iperf3 {a:?} failed: {} {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    v
}

/// Received bits per second of an iperf3 TCP report.
pub fn iperf_bps(v: &serde_json::Value) -> f64 {
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Retransmitted segments of an iperf3 TCP report.
pub fn iperf_retransmits(v: &serde_json::Value) -> u64 {
    v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0)
}

/// The kernel counter `name` (nstat) in `ns`. Panics when it cannot be read: a counter that
/// silently reads 0 would make every "it stayed flat" assertion pass.
pub fn nstat(ns: &Netns, name: &str) -> u64 {
    let o = ns.run(&["nstat", "-az", name]);
    let out = text(&o.stdout);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "nstat {name} in {}: no value ({}{})",
                ns.name,
                out,
                text(&o.stderr)
            )
        })
}

/// [`peer_echo`] on IPv6 (`[::]:port`, dual stack): the peer is printed as socat sees it.
pub fn peer_echo6(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP6-LISTEN:{port},fork,reuseaddr"),
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]);
    wait_listening(ns, port, "tcp");
    bg
}

/// What a [`peer_echo6`] server at `[addr]:port` answers `ns`.
pub fn ask_peer6(ns: &Netns, addr: &str, port: u16) -> String {
    let o = ns.sh(&format!(
        "timeout 5 socat -T4 - TCP6:[{addr}]:{port} </dev/null | head -1"
    ));
    text(&o.stdout).trim().to_string()
}

/// A TCP server in `ns` answering each connection with the peer address it saw ("ADDR PORT"),
/// then holding the connection open for `hold_secs`.
pub fn peer_echo(ns: &Netns, port: u16, hold_secs: u32) -> Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        // socat splits addresses on ":", so the peer is printed as "ADDR PORT".
        &format!("SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT; sleep {hold_secs}"),
    ]);
    wait_listening(ns, port, "tcp");
    bg
}

/// Connects to `addr:port` from `ns` (`extra`: more socat address options, e.g.
/// ",sourceport=40000") and returns the first line the server sends.
pub fn ask_peer(ns: &Netns, addr: &str, port: u16, extra: &str) -> String {
    let o = ns.sh(&format!(
        "timeout 5 socat -T4 - TCP4:{addr}:{port}{extra} </dev/null | head -1"
    ));
    text(&o.stdout).trim().to_string()
}

/// The address a [`peer_echo`] server at `addr:port` saw `ns` connect from.
pub fn peer_seen(ns: &Netns, addr: &str, port: u16) -> String {
    let line = ask_peer(ns, addr, port, "");
    line.split_whitespace().next().unwrap_or("").to_string()
}

/// A TCP echo server (socat, one `cat` per connection).
pub fn tcp_echo(ns: &Netns, port: u16) -> Bg {
    let bg = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr,backlog=512"),
        "EXEC:cat",
    ]);
    wait_listening(ns, port, "tcp");
    bg
}

/// Sends one datagram from each of `n` fresh sockets (fresh source ports) to `dst:port`, round
/// after round for `secs` seconds (at least one round): a flood of distinct flows. Prints how
/// many it sent.
const FRESH_UDP_FLOWS: &str = r#"
import socket, sys, time
dst, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.time() + secs
sent = 0
while True:
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", (dst, port))
        s.close()
        sent += 1
    if time.time() >= end:
        break
print(sent)
"#;

/// Starts [`FRESH_UDP_FLOWS`] in `ns`; `Bg::finish` gives what it printed.
pub fn fresh_udp_flows(ns: &Netns, dst: &str, port: u16, n: u32, secs: u32) -> Bg {
    ns.spawn_piped(&[
        "python3",
        "-c",
        FRESH_UDP_FLOWS,
        dst,
        &port.to_string(),
        &n.to_string(),
        &secs.to_string(),
    ])
}
