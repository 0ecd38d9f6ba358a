//! The command line: clap definitions and output, one module per verb family, each a thin
//! layer over `control::ops` (which tests call directly).

mod container;
mod inspect;
mod lifecycle;
mod metrics;
mod network;
mod policy;
mod publish;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use control::{
    Result,
    instance::DEFAULT_STATE_DIR,
    ops::{Change, Ctx},
};

const ABOUT: &str = "Weir: container networking in eBPF — no bridge, no iptables.";
const LONG_ABOUT: &str = "\
Weir: container networking in eBPF — no bridge, no iptables.

Containers are network namespaces joined to the host by veth pairs. eBPF programs on the
host side of each veth and on the uplink forward, masquerade, publish ports and enforce
isolation, using BPF maps this command fills. Every command changes the pinned state and
exits: the datapath needs no running daemon.";

const EXAMPLES: &str = "\
Typical session:
  control init --uplink eth0
  control network create web --subnet 10.88.0.0/24
  control container create api --network web
  control container create db --network web --ip 10.88.0.10
  control publish api 8080:80               # reachable on every host address
  control isolate db                        # db accepts no new connections...
  control allow api db --port 5432/tcp      # ...except from api on 5432
  ip netns exec api curl http://10.88.0.10:5432/
  control status; control stats; control conntrack
  control repair                            # puts back map entries changed behind Weir's back
  control down                              # removes everything it created

Several instances side by side: give each its own --state-dir (or WEIR_STATE_DIR).
`control help COMMAND` explains each command.";

#[derive(Parser)]
#[command(
    name = "control",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Directory holding this instance's state; each state dir is an independent Weir instance.
    #[arg(long, global = true, env = "WEIR_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Serve the named network namespace (/run/netns/NAME) as the host instead of the current
    /// one (recorded at init: later commands may omit it).
    #[arg(long, global = true, value_name = "NAME")]
    pub host_netns: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Load and attach the datapath (idempotent; re-running upgrades programs in place,
    /// keeping established connections, published ports and rules).
    Init(lifecycle::InitArgs),
    /// Remove everything this instance created: containers, namespaces, veths, programs, pins,
    /// state.
    Down(lifecycle::DownArgs),
    /// Manage networks (subnets whose containers talk freely).
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage containers (named network namespaces on a network).
    #[command(subcommand)]
    Container(container::ContainerCmd),
    /// Publish a container port on the host: reachable from the world, the host and other
    /// containers.
    Publish(publish::PublishArgs),
    /// Stop publishing a host port (new connections are refused at once). Without --host-ip,
    /// on every address the container has it on; a port it does not publish is a no-op.
    Unpublish(publish::UnpublishArgs),
    /// List published ports.
    Ports(publish::PortsArgs),
    /// Block new connections between A and B (both directions), or, with A alone, every new
    /// connection from other containers to A.
    Isolate(policy::IsolateArgs),
    /// Undo `isolate` with the same arguments.
    Unisolate(policy::IsolateArgs),
    /// Let FROM open connections to TO despite isolation or network boundaries (on one port if
    /// given).
    Allow(policy::AllowArgs),
    /// Undo `allow` with the same arguments.
    Disallow(policy::AllowArgs),
    /// List rules, or `rules import FILE` to add many at once.
    Rules(policy::RulesArgs),
    /// Instance, uplink, attached programs and health (including maps that drifted from the
    /// state, e.g. an entry deleted with bpftool).
    Status(JsonArg),
    /// Put back what `status` reports as drift: rewrite map entries deleted or changed behind
    /// Weir's back from the state (idempotent).
    #[command(after_help = inspect::REPAIR_EXAMPLES)]
    Repair,
    /// Datapath counters summed over CPUs: packets/bytes per path, NAT events, drops per reason.
    Stats(inspect::StatsArgs),
    /// Tracked flows and their translations (`conntrack flush` to cut them).
    Conntrack(inspect::ConntrackArgs),
    /// Delete expired conntrack entries now (the datapath already ignores them).
    Gc,
    /// Stream datapath events (drops with their reason) as they happen.
    Monitor(inspect::MonitorArgs),
    /// Counters, table occupancy and per-container traffic and drops in the Prometheus text
    /// format: printed once, or served at /metrics with --listen.
    #[command(after_help = metrics::EXAMPLES)]
    Metrics(metrics::MetricsArgs),
}

#[derive(clap::Args)]
pub struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Cmd {
    /// Whether the command must still work when the state file cannot be read.
    pub fn tolerates_bad_state(&self) -> bool {
        matches!(self, Cmd::Down(a) if a.force)
    }

    pub fn is_init(&self) -> bool {
        matches!(self, Cmd::Init(_))
    }
}

pub async fn dispatch(ctx: &Ctx, cmd: Cmd, host_netns: Option<String>) -> Result<()> {
    match cmd {
        Cmd::Init(a) => lifecycle::init(ctx, a, host_netns).await,
        Cmd::Down(a) => lifecycle::down(ctx, a).await,
        Cmd::Network(c) => network::run(ctx, c).await,
        Cmd::Container(c) => container::run(ctx, c).await,
        Cmd::Publish(a) => publish::publish(ctx, a).await,
        Cmd::Unpublish(a) => publish::unpublish(ctx, a).await,
        Cmd::Ports(a) => publish::ports(ctx, a),
        Cmd::Isolate(a) => policy::isolate(ctx, a, Change::Add).await,
        Cmd::Unisolate(a) => policy::isolate(ctx, a, Change::Remove).await,
        Cmd::Allow(a) => policy::allow(ctx, a, Change::Add).await,
        Cmd::Disallow(a) => policy::allow(ctx, a, Change::Remove).await,
        Cmd::Rules(a) => policy::rules(ctx, a).await,
        Cmd::Status(a) => inspect::status(ctx, a).await,
        Cmd::Repair => inspect::repair(ctx).await,
        Cmd::Stats(a) => inspect::stats(ctx, a),
        Cmd::Conntrack(a) => inspect::conntrack(ctx, a).await,
        Cmd::Gc => inspect::gc(ctx).await,
        Cmd::Monitor(a) => inspect::monitor(ctx, a).await,
        Cmd::Metrics(a) => metrics::run(ctx, a).await,
    }
}
