//! `control`: Weir's command-line control plane. Each command opens the pinned state, changes
//! it and exits; the datapath keeps running with no process alive.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use control::{
    Error, Result,
    instance::{DEFAULT_STATE_DIR, Instance},
    netns,
    ops::{Ctx, container, inspect, lifecycle, network, policy, publish},
    output::{json, table},
    state::{self, RuleKind, XdpMode},
    validate,
};

const ABOUT: &str = "Weir: container networking in eBPF — no bridge, no iptables.";
const LONG_ABOUT: &str = "\
Weir: container networking in eBPF — no bridge, no iptables.

Containers are network namespaces joined to the host by veth pairs. eBPF programs on the
host side of each veth and on the uplink forward, masquerade, publish ports and enforce
isolation, using BPF maps this command fills. Every command changes the pinned state and
exits: the datapath needs no running daemon.

Typical session:
  control init --uplink eth0
  control network create web --subnet 10.88.0.0/24
  control container create api --network web
  control container create db --network web --ip 10.88.0.10
  control publish api 8080:80
  control isolate db                        # db accepts no new connections...
  control allow api db --port 5432/tcp      # ...except api on 5432
  ip netns exec api curl http://10.88.0.10:5432/
  control stats
  control down";

#[derive(Parser)]
#[command(name = "control", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
struct Cli {
    /// Directory holding this instance's state; each state dir is an independent Weir instance.
    #[arg(long, global = true, env = "WEIR_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,
    /// Serve the named network namespace (/run/netns/NAME) as the host instead of the current one.
    #[arg(long, global = true, value_name = "NAME")]
    host_netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load and attach the datapath (idempotent; re-running upgrades programs in place,
    /// keeping established connections, published ports and rules).
    Init(InitArgs),
    /// Remove everything this instance created: containers, namespaces, veths, programs, pins, state.
    Down {
        /// Proceed even if the state file is unreadable.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Manage networks (subnets whose containers talk freely).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage containers (named network namespaces on a network).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Publish a container port on the host: reachable from the world, the host and other containers.
    Publish {
        container: String,
        /// HOSTPORT:PORT[/tcp|/udp], e.g. 8080:80 or 5353:53/udp (tcp if omitted).
        mapping: String,
        /// Publish on this host address only (default: every host address).
        #[arg(long, value_name = "IP")]
        host_ip: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop publishing a host port (new connections are refused at once).
    Unpublish {
        container: String,
        /// HOSTPORT[/tcp|/udp]
        port: String,
        #[arg(long, value_name = "IP")]
        host_ip: Option<String>,
    },
    /// List published ports.
    Ports {
        #[arg(long)]
        json: bool,
    },
    /// Block new connections between A and B (both directions), or, with A alone, every new
    /// connection from other containers to A.
    Isolate(RuleArgs),
    /// Undo `isolate` with the same arguments.
    Unisolate(RuleArgs),
    /// Let FROM open connections to TO despite isolation or network boundaries (on one port if given).
    Allow(AllowArgs),
    /// Undo `allow` with the same arguments.
    Disallow(AllowArgs),
    /// List rules, or `rules import FILE` to add many at once.
    Rules {
        #[command(subcommand)]
        action: Option<RulesCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Instance, uplink, attached programs and health.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Datapath counters summed over CPUs: packets/bytes per path, NAT events, drops per reason.
    Stats {
        #[arg(long)]
        json: bool,
        /// Include zero counters.
        #[arg(long)]
        all: bool,
    },
    /// Tracked flows and their translations (`conntrack flush` to cut them).
    Conntrack(ConntrackArgs),
    /// Delete expired conntrack entries now (the datapath already ignores them).
    Gc,
    /// Stream datapath events (drops with their reason) as they happen.
    Monitor {
        #[arg(long)]
        json: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
    },
}

#[derive(Args)]
struct InitArgs {
    /// Interface to masquerade behind and publish ports on (default: the default route's).
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// XDP on the uplink: auto attaches only to a physical NIC with native XDP.
    #[arg(long, value_enum)]
    xdp: Option<XdpArg>,
    /// Conntrack map size in entries (two per flow; fixed until `control down`).
    #[arg(long, value_name = "N")]
    conntrack_max: Option<u32>,
    /// Conntrack timeout override, NAME=SECONDS; names: tcp-syn, tcp-established, tcp-fin,
    /// tcp-closed, udp, udp-stream, icmp, other. Repeatable.
    #[arg(long, value_name = "NAME=SECONDS")]
    ct_timeout: Vec<String>,
    /// Source ports SNAT may pick when a container's own port is taken.
    #[arg(long, value_name = "MIN-MAX")]
    snat_ports: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum XdpArg {
    Auto,
    On,
    Off,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network: containers on it share the subnet, the first address is their gateway.
    Create {
        name: String,
        /// IPv4 subnet, e.g. 10.88.0.0/24.
        #[arg(long, value_name = "CIDR")]
        subnet: String,
        /// No egress to the world (and no published ports).
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a network (it must have no containers).
    Rm { name: String },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Let containers of two networks open connections to each other (rules still apply).
    Connect { a: String, b: String },
    /// Undo `network connect`.
    Disconnect { a: String, b: String },
}

#[derive(Subcommand)]
enum ContainerCmd {
    /// Create a container: namespace /run/netns/NAME with eth0 on NETWORK (use `ip netns exec NAME ...`).
    Create {
        name: String,
        #[arg(long, value_name = "NET")]
        network: String,
        /// Address in the network's subnet (default: the lowest free one).
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// Publish HOSTPORT:PORT[/tcp|/udp] right away. Repeatable.
        #[arg(long, value_name = "HOSTPORT:PORT")]
        publish: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a container, its namespace, published ports and rules.
    Rm { name: String },
    /// List containers.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RuleArgs {
    a: String,
    b: Option<String>,
    /// Also cut established connections the new rules deny (default: they continue).
    #[arg(long)]
    cut: bool,
}

#[derive(Args)]
struct AllowArgs {
    from: String,
    to: String,
    /// Only this port of TO, PORT[/tcp|/udp].
    #[arg(long, value_name = "PORT/PROTO")]
    port: Option<String>,
    /// With disallow: also cut established connections now denied.
    #[arg(long)]
    cut: bool,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Add the rules in FILE ("-" for stdin), one per line: `isolate A [B]` or
    /// `allow A B [--port PORT/PROTO]`; `#` starts a comment. All or nothing.
    Import { file: String },
}

#[derive(Args)]
struct ConntrackArgs {
    #[command(subcommand)]
    action: Option<ConntrackCmd>,
    #[arg(long)]
    json: bool,
    /// Include expired entries.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// Cut tracked flows: all, or those of one container.
    Flush {
        #[arg(long)]
        container: Option<String>,
    },
}

fn main() -> ExitCode {
    // Behave like other CLI tools when piped into `head`: die quietly on SIGPIPE.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help, --version and bare `control network`: clap's full output is the point.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A usage error as one line, like every other error (clap spreads it over several: the
/// error, tips, usage and a pointer to --help).
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let mut first = parts.next().unwrap_or("error: invalid usage").to_string();
    let mut rest: Vec<&str> = parts.collect();
    // "the following required arguments were not provided:" continues on the next line.
    if first.ends_with(':') && !rest.is_empty() {
        first = format!("{first} {}", rest.remove(0));
    }
    if rest.is_empty() {
        first
    } else {
        format!("{first} ({})", rest.join("; "))
    }
}

fn one_line(e: &Error) -> String {
    let s = match e {
        Error::Other(a) => format!("{a:#}"),
        other => other.to_string(),
    };
    s.lines().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let inst = Instance::new(&cli.state_dir)?;
    // The host namespace: as given, else as recorded at init. Entered before any thread exists
    // so every thread and socket the command creates lives there.
    let recorded = match &cli.cmd {
        Cmd::Down { force: true, .. } => {
            state::load(&inst).ok().flatten().and_then(|s| s.host_netns)
        }
        _ => state::load(&inst)?.and_then(|s| s.host_netns),
    };
    if let (Some(given), Some(rec)) = (&cli.host_netns, &recorded)
        && given != rec
        && !matches!(cli.cmd, Cmd::Init(_))
    {
        return Err(Error::conflict(format!(
            "state dir {} serves host namespace {rec:?}, not {given:?}",
            inst.state_dir.display()
        )));
    }
    let host_netns = cli.host_netns.clone().or(recorded);
    if let Some(h) = &host_netns {
        validate::name("host namespace", h)?;
        if !netns::exists(h) {
            return Err(Error::not_found(format!(
                "host network namespace {h:?} does not exist in {}",
                netns::RUN_DIR
            )));
        }
        netns::enter(&netns::path(h))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(anyhow::anyhow!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let ctx = Ctx::new(inst)?;
        dispatch(&ctx, cli.cmd, host_netns).await
    })
}

async fn dispatch(ctx: &Ctx, cmd: Cmd, host_netns: Option<String>) -> Result<()> {
    match cmd {
        Cmd::Init(a) => {
            let timeouts = a
                .ct_timeout
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        Error::invalid(format!(
                            "invalid --ct-timeout {kv:?}: expected NAME=SECONDS, e.g. udp=30"
                        ))
                    })?;
                    let v: u32 = v.parse().map_err(|_| {
                        Error::invalid(format!(
                            "invalid --ct-timeout {kv:?}: SECONDS must be a number"
                        ))
                    })?;
                    Ok((k.to_string(), v))
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = lifecycle::InitOpts {
                host_netns,
                uplink: a.uplink,
                xdp: a.xdp.map(|x| match x {
                    XdpArg::Auto => XdpMode::Auto,
                    XdpArg::On => XdpMode::On,
                    XdpArg::Off => XdpMode::Off,
                }),
                conntrack_max: a.conntrack_max,
                timeouts,
                snat_ports: a
                    .snat_ports
                    .as_deref()
                    .map(validate::port_range)
                    .transpose()?,
            };
            let r = lifecycle::init(ctx, opts).await?;
            if a.json {
                json(&r);
            } else {
                println!(
                    "weir {} on {} ({}), xdp {}{}",
                    if r.reinitialised {
                        "re-initialised"
                    } else {
                        "initialised"
                    },
                    r.uplink,
                    r.uplink_ip,
                    if r.xdp { "on" } else { "off" },
                    r.xdp_note.map(|n| format!(" — {n}")).unwrap_or_default()
                );
                if r.reinitialised {
                    println!(
                        "programs replaced in place on {} container link(s); established flows kept",
                        r.containers_updated
                    );
                }
            }
        }
        Cmd::Down { force, json: j } => {
            let r = lifecycle::down(ctx, force).await?;
            if j {
                json(&r);
            } else if !r.was_initialised {
                println!(
                    "nothing to remove: {} is not initialised",
                    ctx.inst.state_dir.display()
                );
            } else {
                println!(
                    "removed {} container(s), programs, links, pins and state",
                    r.containers_removed.len()
                );
            }
            for w in r.warnings {
                eprintln!("warning: {w}");
            }
        }
        Cmd::Network(c) => match c {
            NetworkCmd::Create {
                name,
                subnet,
                internal,
                json: j,
            } => {
                let n = network::create(ctx, &name, &subnet, internal).await?;
                if j {
                    json(&n);
                } else {
                    println!(
                        "network {} {} gateway {}{}",
                        n.name,
                        n.subnet,
                        n.gateway,
                        if n.internal { " (internal)" } else { "" }
                    );
                }
            }
            NetworkCmd::Rm { name } => network::remove(ctx, &name).await?,
            NetworkCmd::Ls { json: j } => {
                let st = state::load_required(&ctx.inst)?;
                let l = network::list(&st);
                if j {
                    json(&l);
                } else {
                    table(
                        &[
                            "NAME",
                            "SUBNET",
                            "GATEWAY",
                            "INTERNAL",
                            "CONTAINERS",
                            "CONNECTED",
                        ],
                        &l.iter()
                            .map(|n| {
                                vec![
                                    n.name.clone(),
                                    n.subnet.to_string(),
                                    n.gateway.to_string(),
                                    n.internal.to_string(),
                                    n.containers.len().to_string(),
                                    n.connected.join(","),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
            NetworkCmd::Connect { a, b } => {
                if !network::connect(ctx, &a, &b, true).await? {
                    println!("networks {a} and {b} are already connected");
                }
            }
            NetworkCmd::Disconnect { a, b } => {
                if !network::connect(ctx, &a, &b, false).await? {
                    println!("networks {a} and {b} are not connected");
                }
            }
        },
        Cmd::Container(c) => match c {
            ContainerCmd::Create {
                name,
                network,
                ip,
                publish,
                json: j,
            } => {
                let i = container::create(
                    ctx,
                    &container::CreateOpts {
                        name,
                        network,
                        ip,
                        publish,
                    },
                )
                .await?;
                if j {
                    json(&i);
                } else {
                    println!(
                        "container {} {} on {} (netns {}, host side {})",
                        i.name, i.ip, i.network, i.netns, i.host_if
                    );
                }
            }
            ContainerCmd::Rm { name } => container::remove(ctx, &name).await?,
            ContainerCmd::Ls { json: j } => {
                let st = state::load_required(&ctx.inst)?;
                let l = container::list(&st);
                if j {
                    json(&l);
                } else {
                    table(
                        &["NAME", "NETWORK", "IP", "HOST-IF", "PUBLISHED"],
                        &l.iter()
                            .map(|c| {
                                vec![
                                    c.name.clone(),
                                    c.network.clone(),
                                    c.ip.to_string(),
                                    c.host_if.clone(),
                                    c.published.join(","),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
        },
        Cmd::Publish {
            container: c,
            mapping,
            host_ip,
            json: j,
        } => {
            let p = publish::publish(ctx, &c, &mapping, host_ip.as_deref()).await?;
            if j {
                json(&p);
            } else {
                let host = p
                    .host_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "*".into());
                println!(
                    "published {host}:{}/{} -> {} {}:{}",
                    p.host_port,
                    p.proto.name(),
                    p.container,
                    p.container_ip,
                    p.container_port
                );
            }
        }
        Cmd::Unpublish {
            container: c,
            port,
            host_ip,
        } => publish::unpublish(ctx, &c, &port, host_ip.as_deref()).await?,
        Cmd::Ports { json: j } => {
            let st = state::load_required(&ctx.inst)?;
            let l = publish::list(&st);
            if j {
                json(&l);
            } else {
                table(
                    &["HOST", "PROTO", "CONTAINER", "TARGET"],
                    &l.iter()
                        .map(|p| {
                            vec![
                                format!(
                                    "{}:{}",
                                    p.host_ip
                                        .map(|i| i.to_string())
                                        .unwrap_or_else(|| "*".into()),
                                    p.host_port
                                ),
                                p.proto.name().into(),
                                p.container.clone(),
                                format!("{}:{}", p.container_ip, p.container_port),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        Cmd::Isolate(a) => {
            if !policy::change(
                ctx,
                RuleKind::Isolate,
                &a.a,
                a.b.as_deref(),
                None,
                true,
                a.cut,
            )
            .await?
            {
                println!("already isolated");
            }
        }
        Cmd::Unisolate(a) => {
            if !policy::change(
                ctx,
                RuleKind::Isolate,
                &a.a,
                a.b.as_deref(),
                None,
                false,
                false,
            )
            .await?
            {
                println!("no such isolate rule");
            }
        }
        Cmd::Allow(a) => {
            if !policy::change(
                ctx,
                RuleKind::Allow,
                &a.from,
                Some(&a.to),
                a.port.as_deref(),
                true,
                false,
            )
            .await?
            {
                println!("already allowed");
            }
        }
        Cmd::Disallow(a) => {
            if !policy::change(
                ctx,
                RuleKind::Allow,
                &a.from,
                Some(&a.to),
                a.port.as_deref(),
                false,
                a.cut,
            )
            .await?
            {
                println!("no such allow rule");
            }
        }
        Cmd::Rules {
            action: Some(RulesCmd::Import { file }),
            ..
        } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::invalid(format!("reading stdin: {e}")))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Error::invalid(format!("cannot read rules file {file}: {e}")))?
            };
            let n = policy::import(ctx, &text).await?;
            println!("added {n} rule(s)");
        }
        Cmd::Rules {
            action: None,
            json: j,
        } => {
            let st = state::load_required(&ctx.inst)?;
            let l = policy::list(&st);
            if j {
                json(&l);
            } else {
                for r in l {
                    println!("{}", r.text);
                }
            }
        }
        Cmd::Status { json: j } => {
            let st = state::load_required(&ctx.inst)?;
            let s = inspect::status(ctx, &st).await?;
            if j {
                json(&s);
            } else {
                println!("instance   {} (pins {})", s.state_dir, s.pin_dir);
                println!(
                    "host netns {}",
                    s.host_netns.as_deref().unwrap_or("(current)")
                );
                println!(
                    "uplink     {} {} xdp {}",
                    s.uplink,
                    s.uplink_ip,
                    if s.xdp { "on" } else { "off" }
                );
                println!(
                    "objects    {} networks, {} containers, {} published ports, {} rules, {} / {} conntrack entries",
                    s.networks,
                    s.containers,
                    s.published_ports,
                    s.rules,
                    s.conntrack_entries,
                    s.conntrack_max
                );
                table(
                    &["PROGRAM", "ATTACHED TO", "ID"],
                    &s.programs
                        .iter()
                        .map(|p| {
                            vec![
                                p.program.clone(),
                                p.attached_to.clone(),
                                p.program_id
                                    .map(|i| i.to_string())
                                    .unwrap_or_else(|| "MISSING".into()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
                if s.problems.is_empty() {
                    println!("healthy");
                } else {
                    for p in &s.problems {
                        println!("problem: {p}");
                    }
                }
            }
        }
        Cmd::Stats { json: j, all } => {
            state::load_required(&ctx.inst)?;
            let s = inspect::stats(ctx)?;
            if j {
                json(&s);
            } else {
                let mut rows = Vec::new();
                for (k, v) in &s.paths {
                    if all || v.packets > 0 {
                        rows.push(vec![
                            "path".into(),
                            k.clone(),
                            "".into(),
                            v.packets.to_string(),
                            v.bytes.to_string(),
                        ]);
                    }
                }
                for (k, v) in &s.events {
                    if all || *v > 0 {
                        rows.push(vec![
                            "nat".into(),
                            k.clone(),
                            "".into(),
                            v.to_string(),
                            "".into(),
                        ]);
                    }
                }
                for (k, hooks) in &s.drops {
                    if hooks.is_empty() && all {
                        rows.push(vec![
                            "drop".into(),
                            k.clone(),
                            "".into(),
                            "0".into(),
                            "".into(),
                        ]);
                    }
                    for (h, n) in hooks {
                        rows.push(vec![
                            "drop".into(),
                            k.clone(),
                            h.clone(),
                            n.to_string(),
                            "".into(),
                        ]);
                    }
                }
                table(&["KIND", "COUNTER", "HOOK", "PACKETS", "BYTES"], &rows);
            }
        }
        Cmd::Conntrack(a) => match a.action {
            Some(ConntrackCmd::Flush { container: c }) => {
                let (_lock, st) = ctx.begin().await?;
                let n = inspect::flush(ctx, &st, c.as_deref())?;
                println!("cut {n} flow(s)");
            }
            None => {
                state::load_required(&ctx.inst)?;
                let flows = inspect::conntrack(ctx, a.all)?;
                if a.json {
                    json(&flows);
                } else {
                    table(
                        &[
                            "PROTO",
                            "ORIGINAL",
                            "TRANSLATED",
                            "STATE",
                            "KIND",
                            "AGE",
                            "EXPIRES",
                        ],
                        &flows
                            .iter()
                            .map(|f| {
                                vec![
                                    f.proto.clone(),
                                    f.original.clone(),
                                    f.translated.clone(),
                                    f.state.clone(),
                                    f.kind.clone(),
                                    format!("{}s", f.age_s),
                                    format!("{}s", f.expires_in_s),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
        },
        Cmd::Gc => {
            let (_lock, _st) = ctx.begin().await?;
            println!("removed {} expired conntrack entries", inspect::gc(ctx)?);
        }
        Cmd::Monitor {
            json: j,
            count,
            duration,
        } => {
            state::load_required(&ctx.inst)?;
            if let Some(d) = duration
                && !(d > 0.0 && d < 1e9)
            {
                return Err(Error::invalid(
                    "--duration must be a positive number of seconds",
                ));
            }
            let n = inspect::monitor(ctx, count, duration.map(Duration::from_secs_f64), |e| {
                if j {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                } else {
                    println!(
                        "drop {:<22} {:<15} {:<5} {} (if {})",
                        e.reason, e.hook, e.proto, e.flow, e.ifindex
                    );
                }
            })
            .await?;
            if !j {
                eprintln!("{n} event(s)");
            }
        }
    }
    Ok(())
}
