//! Command-line interface: what the bench measures, how to run it, how to read it.

use std::path::PathBuf;

use clap::Parser;

const LONG_ABOUT: &str = "\
Weir's benchmark: Weir against the Docker-equivalent baseline and real peers, on the same
topology, in one interleaved run.

Topologies (each in its own sandbox of network namespaces — nothing touches the real host):
  weir      the `control` binary (WEIR_CONTROL): eBPF on the containers' veths and the uplink
  iptables  Docker's layout: Linux bridge + Docker's iptables rules (MASQUERADE, DNAT with
            addrtype LOCAL, FORWARD policy DROP + conntrack, isolation chains, raw drops)
  netavark  Podman's backend (/usr/lib/podman/netavark setup), bridge + its iptables rules
  veth      bare veth pairs, plain routing, no NAT and no rules: the upper bound
  weir-base with --baseline-control PATH: Weir again, built from other code (say, the commit
            before a change), so weir/weir-base shows what the change costs or gains
  weir-bigtcp  Weir with `control init --big-tcp on` (185,000-byte GSO on the containers'
            links; the default, auto, follows the uplink's 64 KiB here): opt in with
            --topologies, e.g. --only throughput --topologies weir,weir-bigtcp,iptables
  docker-bridge  a dockerd of the bench's own in the sandbox's host namespace, Docker's bridge
            driver as shipped (--iptables=true, docker-proxy), a user-defined bridge network
  docker-weir    the same dockerd with --iptables=false --bridge=none --ip-forward=false, on
            a Weir instance through the weir-docker driver (WEIR_DOCKER)
All share the addresses: containers 10.99.0.2 (client) and 10.99.0.3 (server) in
10.99.0.0/24 (10.99.0.0/16 for the docker ones: room for their fillers), host uplink
198.18.0.1, \"ext\" (the world) 198.18.0.2. The docker-* topologies take part in the docker
workload only, the others in every other workload.

Workloads:
  throughput      iperf3, 1 and 2 streams: container→container, container→ext (MASQUERADE),
                  ext→published port (DNAT)
  latency         sockperf ping-pong TCP and UDP, p50 and p99, same paths
  packets         64-byte UDP flood through DNAT; rate of dropping denied world traffic
                  (Weir's XDP and TC vs. iptables' raw table)
  connrate-ports  new connections/s (wrk, Connection: close, nginx) through a published port
                  with 0 / 1,000 / 10,000 other ports published, plus the time to publish one more
  connrate-rules  new connections/s container→container with 0 / 1,000 / 10,000 isolation
                  rules, plus the time to add one more
  docker          docker-weir against docker-bridge, same `docker run` workloads: container
                  start to first byte served through its published port; time of `docker run
                  -p` with 0 / 100 / 500 published containers present; iperf3, sockperf and
                  wrk (nginx) on the three paths, run in the containers' network namespaces

IPv6 twins (same cases, over IPv6; tables titled \"(IPv6)\"): throughput6, latency6,
connrate-ports6, connrate-rules6 — fd00:99::2/::3 in fd00:99::/64, uplink 2001:db8:18::1,
ext 2001:db8:18::2; NAT66 MASQUERADE and DNAT to the host's IPv6 address; iptables is the
same bridge with Docker 27's ip6tables rules. latency6 uses the bench's own ping-pong
(Debian's sockperf 3.7 has no IPv6). netavark is IPv4-only here (n/a). Select with --only,
e.g. --only throughput6,latency6; the default runs both families.

Every case is measured in rounds; each round measures every topology back to back in
rotating order, so the ratios (weir/iptables, weir/netavark, weir/veth,
docker-weir/docker-bridge) are what counts:
absolute numbers swing ±30% between runs on shared VMs.

Output: results.md (tables with median, min–max and ratios), results.json (raw samples),
and SVG charts, in --out (default bench/results, or bench/results/quick with --quick).
The full run takes about 35 minutes on 2 cores (10 of them the IPv6 twins, 13 the docker
workload); --quick about three minutes (what CI runs: it checks that every topology and
workload produces numbers, never a speed).

Run as root:  cargo xtask bench [--quick]     (builds control and bench in release first)";

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmark Weir against bridge+iptables (Docker), netavark (Podman) and bare veth",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// Smoke run (~1 minute): one short sample of every workload on every topology.
    #[arg(long)]
    pub quick: bool,
    /// Interleaved samples per case (default: 3, or 1 with --quick).
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Only these workloads (comma-separated): throughput, latency, packets, connrate-ports,
    /// connrate-rules, the IPv6 twins throughput6, latency6, connrate-ports6,
    /// connrate-rules6, and docker.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<String>,
    /// Only these topologies (comma-separated): weir, iptables, netavark, veth, docker-bridge,
    /// docker-weir (and weir-base with --baseline-control).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub topologies: Vec<String>,
    /// Where to write results.md, results.json and the charts.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The Weir `control` binary.
    #[arg(
        long,
        env = "WEIR_CONTROL",
        default_value = "target/release/control",
        value_name = "PATH"
    )]
    pub control: PathBuf,
    /// Another build of `control` to measure beside this one, as topology `weir-base` (e.g.
    /// built from the commit before a change: `git worktree add /tmp/base REV`, then
    /// `cargo build --release` there).
    #[arg(long, value_name = "PATH")]
    pub baseline_control: Option<PathBuf>,
    /// The `weir-docker` driver binary (topology docker-weir).
    #[arg(
        long,
        env = "WEIR_DOCKER",
        default_value = "target/release/weir-docker",
        value_name = "PATH"
    )]
    pub weir_docker: PathBuf,
}

pub const WORKLOADS: [&str; 10] = [
    "throughput",
    "latency",
    "packets",
    "connrate-ports",
    "connrate-rules",
    "throughput6",
    "latency6",
    "connrate-ports6",
    "connrate-rules6",
    "docker",
];
pub const TOPOLOGIES: [&str; 4] = ["weir", "iptables", "netavark", "veth"];
/// The topologies of the docker workload (and only of it).
pub const DOCKER_TOPOLOGIES: [&str; 2] = ["docker-bridge", "docker-weir"];
/// The topology of `--baseline-control`.
pub const BASELINE: &str = "weir-base";
/// Weir with `control init --big-tcp on`: opt in with `--topologies`.
pub const BIG_TCP: &str = "weir-bigtcp";

impl Cli {
    pub fn wants(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }

    pub fn topologies(&self) -> Vec<String> {
        if !self.topologies.is_empty() {
            return self.topologies.clone();
        }
        let mut v: Vec<String> = TOPOLOGIES.iter().map(|s| s.to_string()).collect();
        if self.baseline_control.is_some() {
            v.insert(1, BASELINE.to_string());
        }
        v.extend(DOCKER_TOPOLOGIES.iter().map(|s| s.to_string()));
        v
    }

    /// The chosen topologies, split: (those of every workload but docker, the docker ones).
    pub fn split_topologies(&self) -> (Vec<String>, Vec<String>) {
        self.topologies()
            .into_iter()
            .partition(|t| !DOCKER_TOPOLOGIES.contains(&t.as_str()))
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"));
            if self.quick { d.join("quick") } else { d }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topologies(args: &[&str]) -> Vec<String> {
        Cli::parse_from(std::iter::once("bench").chain(args.iter().copied())).topologies()
    }

    #[test]
    fn a_baseline_joins_the_default_topologies_only_when_given() {
        let all = [&TOPOLOGIES[..], &DOCKER_TOPOLOGIES[..]].concat();
        assert_eq!(topologies(&[]), all);
        let with = topologies(&["--baseline-control", "/x/control"]);
        assert_eq!(
            with,
            [
                "weir",
                BASELINE,
                "iptables",
                "netavark",
                "veth",
                "docker-bridge",
                "docker-weir"
            ]
        );
        // An explicit list is taken as it is.
        let only = topologies(&["--baseline-control", "/x", "--topologies", "weir,weir-base"]);
        assert_eq!(only, ["weir", BASELINE]);
    }
}
