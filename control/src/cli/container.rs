//! `control container create|connect|disconnect|rm|ls`.

use std::net::Ipv4Addr;

use clap::Subcommand;
use control::{
    Result,
    ops::{Ctx, container, publish::HostPort},
    output::{json, table},
    published::{Port, PublishBook},
    state, validate,
};

#[derive(Subcommand)]
pub enum ContainerCmd {
    /// Create a container: namespace /run/netns/NAME with eth0 on NETWORK (use `ip netns exec
    /// NAME ...` to run programs in it); further --network options add eth1, eth2, ...
    #[command(
        after_help = "Examples:\n  control container create api --network web\n  \
        control container create db --network web --ip 10.88.0.10\n  \
        control container create v6 --network dual --ip6 fd00:88::10   # dual-stack network\n  \
        control container create front --network web --publish 8080:80 --publish 5353:53/udp\n  \
        control container create proxy --network web --network back"
    )]
    Create {
        /// Container name, also the namespace name (letters, digits, '-', '_', '.').
        name: String,
        /// The network to join (see `control network ls`). Repeat it for more networks: the
        /// first holds the default route and the published ports.
        #[arg(long, value_name = "NET", required = true)]
        network: Vec<String>,
        /// Address in the first network's subnet (default: the lowest free one).
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// IPv6 address in the first network's IPv6 subnet (default: the lowest free one; a
        /// dual-stack network only).
        #[arg(long, value_name = "ADDR6")]
        ip6: Option<String>,
        /// Publish HOSTPORT:PORT[/tcp|/udp] right away. Repeatable.
        #[arg(long, value_name = "HOSTPORT:PORT")]
        publish: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add an interface on a further network to a container (like `docker network connect`):
    /// rules naming the container cover it; the default route stays on the first network.
    #[command(after_help = "Example:\n  control container connect api back --ip 10.89.0.20")]
    Connect {
        /// Container name.
        name: String,
        /// The network to join.
        network: String,
        /// Address in that network's subnet (default: the lowest free one).
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a container's interface on a further network (`connect` undone).
    Disconnect {
        /// Container name.
        name: String,
        /// The network to leave (not its first: `container rm` removes the container).
        network: String,
    },
    /// Remove a container (every network it is on), its namespace, published ports and the
    /// rules naming it.
    Rm {
        /// Container name.
        name: String,
    },
    /// List containers, one line per network a container is on.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Ctx, c: ContainerCmd) -> Result<()> {
    match c {
        ContainerCmd::Create {
            name,
            network,
            ip,
            ip6,
            publish,
            json: j,
        } => create(ctx, name, network, (ip, ip6), publish, j).await?,
        ContainerCmd::Connect {
            name,
            network,
            ip,
            json: j,
        } => {
            let ip = address(ip)?;
            let (_lock, mut st) = ctx.begin().await?;
            let i = container::connect(ctx, &mut st, &name, &network, ip).await?;
            report(&[i], j);
        }
        ContainerCmd::Disconnect { name, network } => {
            let (_lock, mut st) = ctx.begin().await?;
            container::disconnect(ctx, &mut st, &name, &network).await?;
            println!("container {name} left network {network}");
        }
        ContainerCmd::Rm { name } => {
            let (_lock, mut st) = ctx.begin().await?;
            let records = container::removal_order(&st, &name)?;
            let what = format!("container rm {name}");
            container::detach(ctx, &mut st, &records, &what).await?;
            println!("removed container {name}");
        }
        ContainerCmd::Ls { json: j } => list(ctx, j)?,
    }
    Ok(())
}

fn address(ip: Option<String>) -> Result<Option<Ipv4Addr>> {
    ip.map(|s| validate::ipv4("address", &s)).transpose()
}

/// `create`: the first network with the published ports, then every further one; a failure
/// on any removes what was made.
async fn create(
    ctx: &Ctx,
    name: String,
    networks: Vec<String>,
    (ip, ip6): (Option<String>, Option<String>),
    publish: Vec<String>,
    j: bool,
) -> Result<()> {
    validate::name("container", &name)?;
    let ports = publish
        .iter()
        .map(|s| Port::parse(s, None))
        .collect::<Result<Vec<_>>>()?;
    let ip = address(ip)?;
    let ip6 = ip6.map(|s| validate::ipv6("address", &s)).transpose()?;
    let (first, further) = networks.split_first().expect("clap requires one");
    let spec = container::AttachSpec {
        name: name.clone(),
        network: first.clone(),
        origin: container::Origin::Cli,
        netns: container::NetnsOwner::Weir,
        peer: container::Peer::MoveIntoNetns,
        ifname: "eth0".into(),
        ip,
        ip6,
        mac: None,
        ports,
        host_ports: HostPort::CheckFree,
        alias: None,
        admit: container::Admit::Now,
    };
    let (_lock, mut st) = ctx.begin().await?;
    let mut made = vec![container::attach(ctx, &mut st, spec).await?];
    for net in further {
        match container::connect(ctx, &mut st, &name, net, None).await {
            Ok(i) => made.push(i),
            Err(e) => {
                let records = container::removal_order(&st, &name)?;
                let what = format!("container create {name} (undone)");
                container::detach(ctx, &mut st, &records, &what).await?;
                return Err(e);
            }
        }
    }
    report(&made, j);
    Ok(())
}

fn report(made: &[container::ContainerInfo], j: bool) {
    if j {
        match made {
            [one] => json(one),
            many => json(&many),
        }
        return;
    }
    for i in made {
        let name = i.alias.as_deref().unwrap_or(&i.name);
        println!(
            "container {name} {} on {} (netns {}, host side {})",
            i.address(),
            i.network,
            i.netns,
            i.host_if
        );
        for p in &i.published {
            println!("published {p}");
        }
    }
}

fn list(ctx: &Ctx, j: bool) -> Result<()> {
    let st = state::load_required(&ctx.inst)?;
    let l = container::list(&st, &PublishBook::open(&ctx.inst)?.items()?);
    if j {
        json(&l);
        return Ok(());
    }
    // A container is listed by the name users give it (Docker's, for Docker's containers);
    // RECORD is Weir's own name of that attachment when it differs.
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|c| {
            vec![
                c.alias.clone().unwrap_or_else(|| c.name.clone()),
                c.network.clone(),
                c.address(),
                c.host_if.clone(),
                c.published.join(","),
                if c.alias.is_some() {
                    c.name.clone()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    table(
        &["NAME", "NETWORK", "IP", "HOST-IF", "PUBLISHED", "RECORD"],
        &rows,
    );
    Ok(())
}
