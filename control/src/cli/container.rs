//! `control container create|rm|ls`.

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
    /// NAME ...` to run programs in it).
    #[command(
        after_help = "Examples:\n  control container create api --network web\n  \
        control container create db --network web --ip 10.88.0.10\n  \
        control container create front --network web --publish 8080:80 --publish 5353:53/udp"
    )]
    Create {
        /// Container name, also the namespace name (letters, digits, '-', '_', '.').
        name: String,
        /// The network to join (see `control network ls`).
        #[arg(long, value_name = "NET")]
        network: String,
        /// Address in the network's subnet (default: the lowest free one).
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// Publish HOSTPORT:PORT[/tcp|/udp] right away. Repeatable.
        #[arg(long, value_name = "HOSTPORT:PORT")]
        publish: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a container, its namespace, published ports and the rules naming it.
    Rm {
        /// Container name.
        name: String,
    },
    /// List containers.
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
            publish,
            json: j,
        } => {
            validate::name("container", &name)?;
            let ports = publish
                .iter()
                .map(|s| Port::parse(s, None))
                .collect::<Result<Vec<_>>>()?;
            let ip = ip.map(|s| validate::ipv4("address", &s)).transpose()?;
            let spec = container::AttachSpec {
                name,
                network,
                origin: container::Origin::Cli,
                netns: container::NetnsOwner::Weir,
                peer: container::Peer::MoveIntoNetns,
                ifname: "eth0".into(),
                ip,
                mac: None,
                ports,
                host_ports: HostPort::CheckFree,
            };
            let (_lock, mut st) = ctx.begin().await?;
            let i = container::attach(ctx, &mut st, spec).await?;
            if j {
                json(&i);
            } else {
                println!(
                    "container {} {} on {} (netns {}, host side {})",
                    i.name, i.ip, i.network, i.netns, i.host_if
                );
                for p in &i.published {
                    println!("published {p}");
                }
            }
        }
        ContainerCmd::Rm { name } => {
            let (_lock, mut st) = ctx.begin().await?;
            let what = format!("container rm {name}");
            container::detach(ctx, &mut st, std::slice::from_ref(&name), &what).await?;
            println!("removed container {name}");
        }
        ContainerCmd::Ls { json: j } => {
            let st = state::load_required(&ctx.inst)?;
            let l = container::list(&st, &PublishBook::open(&ctx.inst)?.items()?);
            if j {
                json(&l);
            } else {
                let rows: Vec<Vec<String>> = l
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.network.clone(),
                            c.ip.to_string(),
                            c.host_if.clone(),
                            c.published.join(","),
                        ]
                    })
                    .collect();
                table(&["NAME", "NETWORK", "IP", "HOST-IF", "PUBLISHED"], &rows);
            }
        }
    }
    Ok(())
}
