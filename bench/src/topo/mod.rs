//! The four topologies, identical in shape and addresses, each in its own sandbox (a "host"
//! namespace with uplink `up0` 198.18.0.1/24, an "ext" namespace 198.18.0.2 behind it, a
//! client container 10.99.0.2 and a server container 10.99.0.3 in 10.99.0.0/24). Only what
//! joins them differs: Weir's eBPF, a Linux bridge with Docker's iptables rules, Podman's
//! netavark, or bare veths with plain routing. Everything lives in namespaces the bench
//! creates and is removed by RAII guards.

pub mod bridge;
pub mod docker;
pub mod iptables;
pub mod netavark;
pub mod veth;
pub mod weir;

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use rig::Netns;

pub const SUBNET: &str = "10.99.0.0/24";
pub const GATEWAY: &str = "10.99.0.1";
pub const CLIENT_IP: &str = "10.99.0.2";
pub const SERVER_IP: &str = "10.99.0.3";
pub use rig::{EXT_IP, EXT_IP6, UPLINK_IP, UPLINK_IP6};

/// The IPv6 side of the same network (a ULA /64, as Docker 27 derives by default); the
/// uplink and ext have rig's 2001:db8:18::1 and ::2.
pub const SUBNET6: &str = "fd00:99::/64";
pub const GATEWAY6: &str = "fd00:99::1";
pub const CLIENT_IP6: &str = "fd00:99::2";
pub const SERVER_IP6: &str = "fd00:99::3";

/// Server ports; each is published with the same host port number.
pub mod port {
    pub const IPERF: u16 = 5201;
    pub const SOCKPERF: u16 = 11111;
    pub const HTTP: u16 = 8080;
    pub const SINK: u16 = 9000;
    /// Target of the "denied traffic" flood: a container port nobody published.
    pub const UNPUBLISHED: u16 = 9;
    /// Filler published ports: FILLER_BASE.. (up to 10,000 of them).
    pub const FILLER_BASE: u16 = 20_000;
    /// Ports published while timing one control-plane update.
    pub const UPDATE_BASE: u16 = 40_000;
}

/// What the server container publishes (host port = container port).
pub const PUBLISHED: &[(u16, &str)] = &[
    (port::IPERF, "tcp"),
    (port::SOCKPERF, "tcp"),
    (port::SOCKPERF, "udp"),
    (port::HTTP, "tcp"),
    (port::SINK, "udp"),
];

/// Address of the i-th dummy container (the endpoints of filler isolation rules).
pub fn dummy_ip(i: usize) -> String {
    assert!(i < 150, "dummy containers live in 10.99.0.100-249");
    format!("10.99.0.{}", 100 + i)
}

/// The IPv6 address of the i-th dummy container (fd00:99::100 up, beside its IPv4 one).
pub fn dummy_ip6(i: usize) -> String {
    assert!(i < 150, "dummy containers live in fd00:99::100-249");
    format!("fd00:99::{}", 100 + i)
}

/// The k-th distinct pair of dummies, in the order (0,1), (0,2), (1,2), (0,3), ... so the
/// first N pairs need only about sqrt(2N) dummies (10,000 pairs: 142).
pub fn pair(k: usize) -> (usize, usize) {
    let mut b = 1;
    while b * (b + 1) / 2 <= k {
        b += 1;
    }
    (k - b * (b - 1) / 2, b)
}

/// Dummies needed for the first `n` pairs.
pub fn dummies_for(n: usize) -> usize {
    if n == 0 { 0 } else { pair(n - 1).1 + 1 }
}

/// One topology under test.
pub trait Topology {
    /// Short name used in tables: weir, iptables, netavark, veth.
    fn label(&self) -> &'static str;
    fn ext(&self) -> &Netns;
    fn client(&self) -> &Netns;
    fn server(&self) -> &Netns;
    /// The address the client container uses for the server container.
    fn server_addr(&self) -> &str {
        SERVER_IP
    }
    /// The address ext uses for the server's published ports.
    fn published_addr(&self) -> &str {
        UPLINK_IP
    }
    /// Whether this topology carries IPv6 (netavark is IPv4-only in this bench).
    fn ipv6(&self) -> bool {
        true
    }
    fn server_addr6(&self) -> &str {
        SERVER_IP6
    }
    fn published_addr6(&self) -> &str {
        UPLINK_IP6
    }
    /// Makes `total` filler ports published (to other containers) besides the server's own,
    /// so that the server's are looked up among them. Counts only grow.
    fn set_published_ports(&mut self, total: usize) -> Result<()>;
    /// Makes `total` isolation rules between other containers exist. Counts only grow.
    fn set_isolation_rules(&mut self, total: usize) -> Result<()>;
    /// Time to publish one more port (sample `i`), undone afterwards; None: no such operation.
    fn time_publish(&mut self, i: usize) -> Result<Option<Duration>>;
    /// Time to add one more isolation rule (sample `i`), undone afterwards; None: no such operation.
    fn time_isolate(&mut self, i: usize) -> Result<Option<Duration>>;
    /// Packets the world addressed to a container directly that were dropped so far; None:
    /// this topology has no such filter.
    fn direct_drops(&self) -> Result<Option<u64>>;
    /// The Docker topologies, for what only they measure (`docker run`).
    fn as_docker(&mut self) -> Option<&mut docker::Docker> {
        None
    }
}

/// Runs `args` in `ns`, failing with its stderr.
pub fn must(ns: &Netns, args: &[&str]) -> Result<String> {
    let o = ns.run(args);
    if !o.status.success() {
        bail!(
            "{} in {}: {}",
            args.join(" "),
            ns.name,
            rig::text(&o.stderr).trim()
        );
    }
    Ok(rig::text(&o.stdout))
}

/// Runs a command outside any namespace, failing with its stderr.
pub fn host_must(args: &[&str]) -> Result<String> {
    let o = rig::run(args);
    if !o.status.success() {
        bail!("{}: {}", args.join(" "), rig::text(&o.stderr).trim());
    }
    Ok(rig::text(&o.stdout))
}

/// Wall time of running `commands` one after the other inside `ns`, measured inside the
/// namespace (by `bench __timed`), so `ip netns exec`'s own setup is not counted.
pub fn timed_in(ns: &Netns, commands: &[String]) -> Result<Duration> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut a = vec![exe.to_string_lossy().into_owned(), "__timed".into()];
    a.extend(commands.iter().cloned());
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = must(ns, &args)?;
    let secs: f64 = out
        .trim()
        .parse()
        .with_context(|| format!("__timed printed {out:?}"))?;
    Ok(Duration::from_secs_f64(secs))
}

/// Wall time of a command run from here (the `control` CLI enters its host namespace itself).
pub fn timed_here(args: &[&str]) -> Result<Duration> {
    let t = std::time::Instant::now();
    let o = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    let d = t.elapsed();
    if !o.status.success() {
        bail!("{}: {}", args.join(" "), rig::text(&o.stderr).trim());
    }
    Ok(d)
}

/// Loads iptables rules (iptables-restore syntax) into `ns` without flushing what is there.
pub fn iptables_restore(ns: &Netns, rules: &str) -> Result<()> {
    restore_with(ns, "iptables-restore", rules)
}

/// The same for ip6tables rules.
pub fn ip6tables_restore(ns: &Netns, rules: &str) -> Result<()> {
    restore_with(ns, "ip6tables-restore", rules)
}

fn restore_with(ns: &Netns, tool: &str, rules: &str) -> Result<()> {
    let f = Scratch::file(&format!("{}-rules", ns.name), rules)?;
    must(ns, &[tool, "--noflush", f.path.to_str().unwrap()])?;
    Ok(())
}

/// Routes 10.99.0.0/24 from ext to the host: the flood of "denied" packets aims at container
/// addresses directly, and the veth topology routes without NAT.
pub fn route_ext_to_containers(ext: &Netns) -> Result<()> {
    must(ext, &["ip", "route", "replace", SUBNET, "via", UPLINK_IP])?;
    // Many short connections from one client: use the whole port range.
    must(
        ext,
        &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"],
    )?;
    Ok(())
}

/// The IPv6 twin of [`route_ext_to_containers`], on the sandbox's IPv6 uplink addresses
/// (`Sandbox::add_ipv6`, which the topologies call before anything else).
pub fn route_ext_to_containers6(ext: &Netns) -> Result<()> {
    must(
        ext,
        &["ip", "-6", "route", "replace", SUBNET6, "via", UPLINK_IP6],
    )?;
    Ok(())
}

/// Routing between the containers and the world inside a sandbox's host namespace (never
/// the root namespace's): both families.
pub fn enable_forwarding(host: &Netns) -> Result<()> {
    must(host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    must(host, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    Ok(())
}

/// Creates a veth pair with one end in each namespace.
pub fn veth(a_ns: &Netns, a_if: &str, b_ns: &Netns, b_if: &str) -> Result<()> {
    host_must(&[
        "ip", "link", "add", a_if, "netns", &a_ns.name, "type", "veth", "peer", "name", b_if,
        "netns", &b_ns.name,
    ])?;
    must(a_ns, &["ip", "link", "set", a_if, "up"])?;
    must(b_ns, &["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// A file or directory removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn dir(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("weir-bench-{name}"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn file(name: &str, contents: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("weir-bench-{name}"));
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.path.is_dir() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_and_need_few_dummies() {
        let mut seen = std::collections::HashSet::new();
        for k in 0..10_000 {
            let (a, b) = pair(k);
            assert!(a < b, "{k}: {a} {b}");
            assert!(seen.insert((a, b)), "pair {k} repeats");
        }
        assert_eq!(pair(0), (0, 1));
        assert_eq!(pair(2), (1, 2));
        assert_eq!(dummies_for(0), 0);
        assert_eq!(dummies_for(1), 2);
        assert_eq!(dummies_for(3), 3);
        assert_eq!(dummies_for(10_000), 142);
    }
}
