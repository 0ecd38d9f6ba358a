//! `control network create|rm|ls|connect|disconnect`.

use clap::{Args, Subcommand};
use control::{
    Result,
    ops::{Change, Ctx, network},
    output::{json, table},
    state, validate,
};

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network: containers on it share the subnet; its first address (or --gateway)
    /// is their gateway.
    #[command(
        after_help = "Examples:\n  control network create web --subnet 10.88.0.0/24\n  \
        control network create db --subnet 10.89.0.0/24 --internal   # no egress, no published ports\n  \
        control network create lan --subnet 10.90.0.0/24 --gateway 10.90.0.254\n  \
        control network create dual --subnet 10.91.0.0/24 --subnet6 fd00:91::/64   # dual stack\n  \
        control network create auto6 --subnet 10.92.0.0/24 --ipv6   # a /64 of this host's ULA /48\n  \
        control network create only6 --subnet6 fd00:95::/64   # IPv6-only\n  \
        control network create vpn --subnet 10.93.0.0/24 --mtu 1400   # under an encapsulating upstream\n  \
        control network create tenants --subnet 10.94.0.0/24 --isolated   # members reach each other only by `allow`"
    )]
    Create(CreateArgs),
    /// Remove a network (it must have no containers).
    Rm {
        /// Network name.
        name: String,
    },
    /// List networks.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Let containers of two networks open connections to each other (rules still apply).
    Connect {
        /// One network.
        a: String,
        /// The other network.
        b: String,
    },
    /// Undo `network connect`.
    Disconnect {
        /// One network.
        a: String,
        /// The other network.
        b: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Network name (letters, digits, '-', '_', '.').
    name: String,
    /// IPv4 subnet between /8 and /30, e.g. 10.88.0.0/24; must not overlap another network
    /// or contain a host address. Without it (and with --subnet6 or --ipv6) the network is
    /// IPv6-only.
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// The containers' IPv4 gateway (the host's address on the network): a host address of
    /// the subnet. Default: the first one.
    #[arg(long, value_name = "IP", requires = "subnet")]
    gateway: Option<String>,
    /// No egress to the world, no published ports; the host is reachable only at the
    /// network's own gateway.
    #[arg(long)]
    internal: bool,
    /// IPv6: this subnet (/48 to /120, /64 usual; gateway `<prefix>::1`), beside --subnet
    /// (dual stack) or alone (IPv6-only). Containers get an address in it, NAT66 to the
    /// world, the same rules as IPv4.
    #[arg(long, value_name = "CIDR6", conflicts_with = "ipv6")]
    subnet6: Option<String>,
    /// IPv6 on a /64 of this instance's own ULA /48 (fdXX:XXXX:XXXX::/48, derived from the
    /// instance, as Docker derives one): dual stack with --subnet, else IPv6-only.
    #[arg(long)]
    ipv6: bool,
    /// The containers' MTU, when it must be lower than the uplink's (default: the uplink's,
    /// followed by `control init` when it changes). At least 68, or 1280 with IPv6.
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
    /// Its containers do not reach each other unless a rule allows it (`allow A B`), as
    /// Docker's `enable_icc=false`; the host, the world (published ports) and connected
    /// networks reach them as usual.
    #[arg(long)]
    isolated: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, c: NetworkCmd) -> Result<()> {
    match c {
        NetworkCmd::Create(a) => create(ctx, a).await?,
        NetworkCmd::Rm { name } => {
            network::remove(ctx, &name).await?;
            println!("removed network {name}");
        }
        NetworkCmd::Ls { json: j } => {
            let st = state::load_required(&ctx.inst)?;
            let l = network::list(&st);
            if j {
                json(&l);
            } else {
                let rows: Vec<Vec<String>> = l
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            dash(
                                n.subnet
                                    .map(|s| s.to_string())
                                    .or(n.subnet6.map(|s| s.to_string())),
                            ),
                            dash(
                                n.gateway
                                    .map(|g| g.to_string())
                                    .or(n.gateway6.map(|g| g.to_string())),
                            ),
                            n.internal.to_string(),
                            n.containers.len().to_string(),
                            n.connected.join(","),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "SUBNET",
                        "GATEWAY",
                        "INTERNAL",
                        "CONTAINERS",
                        "CONNECTED",
                    ],
                    &rows,
                );
            }
        }
        NetworkCmd::Connect { a, b } => {
            if network::connect(ctx, &a, &b, Change::Add).await? {
                println!("connected networks {a} and {b}");
            } else {
                println!("networks {a} and {b} are already connected");
            }
        }
        NetworkCmd::Disconnect { a, b } => {
            if network::connect(ctx, &a, &b, Change::Remove).await? {
                println!("disconnected networks {a} and {b}");
            } else {
                println!("networks {a} and {b} are not connected");
            }
        }
    }
    Ok(())
}

/// `network create`: the flags parsed and checked here, once.
async fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let subnet = a.subnet.as_deref().map(validate::subnet).transpose()?;
    let ipv6 = match (a.subnet6, a.ipv6) {
        (Some(s6), _) => network::Ipv6Choice::Subnet(validate::subnet6(&s6)?),
        (None, true) => network::Ipv6Choice::Derived,
        (None, false) => network::Ipv6Choice::Off,
    };
    let spec = network::NetworkSpec {
        subnet,
        gateway: match (subnet, a.gateway) {
            (Some(s), Some(g)) => Some(validate::gateway(s, &g)?),
            _ => None,
        },
        reach: if a.internal {
            network::Reach::Internal
        } else {
            network::Reach::World
        },
        ipv6,
        mtu: a.mtu,
        members: if a.isolated {
            network::Members::Isolated
        } else {
            network::Members::Open
        },
    };
    let n = network::create(ctx, &a.name, spec).await?;
    if a.json {
        json(&n);
        return Ok(());
    }
    let mut line = format!("network {}", n.name);
    if let (Some(s), Some(g)) = (n.subnet, n.gateway) {
        line += &format!(" {s} gateway {g}");
    }
    if let (Some(s6), Some(g6)) = (n.subnet6, n.gateway6) {
        line += &format!(" {s6} gateway {g6}");
    }
    if let Some(m) = n.mtu {
        line += &format!(" mtu {m}");
    }
    for (on, what) in [(n.internal, " (internal)"), (n.isolated, " (isolated)")] {
        if on {
            line += what;
        }
    }
    println!("{line}");
    Ok(())
}

/// A table cell for what may be absent.
fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}
