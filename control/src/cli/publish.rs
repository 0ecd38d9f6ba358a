//! `control publish|unpublish|ports`.

use clap::Args;
use control::{
    Result,
    ops::{
        Ctx,
        publish::{self, Unpublished},
    },
    output::{json, table},
    published::{Port, PublishBook},
    state, validate,
};

#[derive(Args)]
#[command(after_help = "\
Examples:
  control publish api 8080:80                       # tcp, every host address
  control publish dns 5353:53/udp
  control publish api 8443:443 --host-ip 192.0.2.10 # one host address only
  control publish api 8443:443 --host-ip ::1        # the host's own IPv6 loopback only
  control publish api 9000-9009:80                  # the first free host port of 9000-9009
  control publish api 80                            # any free host port (the ephemeral range)

The port is reachable from the world through the uplink, from the host itself (any host
address and 127.0.0.1) and from other containers through a host address (hairpin, subject
to the same rules as a direct connection). The container sees the real client address.
Without --host-ip, a container with IPv6 (a dual-stack network) is published on the host's
IPv6 addresses too, from the world and from other containers (not yet from the host's own
sockets); with an IPv4 --host-ip, on that address alone.")]
pub struct PublishArgs {
    /// The container to publish.
    container: String,
    /// HOSTPORT:PORT, LO-HI:PORT (first free host port of the range) or PORT (any free host
    /// port of net.ipv4.ip_local_port_range), each [/tcp|/udp]: 8080:80, 9000-9009:80,
    /// 5353:53/udp, 80 (tcp if omitted). The port taken is printed.
    mapping: String,
    /// Publish on this host address only (default: every host address).
    #[arg(long, value_name = "IP")]
    host_ip: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  control unpublish api 8080\n  control unpublish dns 5353/udp")]
pub struct UnpublishArgs {
    /// The container the port is published to.
    container: String,
    /// HOSTPORT[/tcp|/udp] (tcp if omitted).
    port: String,
    /// Only the publication on this host address (default: on every address it has).
    #[arg(long, value_name = "IP")]
    host_ip: Option<String>,
}

#[derive(Args)]
pub struct PortsArgs {
    /// Only this container's (every network it is on).
    container: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The record a publish command acts on: `name` is a container's own name, or the name it
/// answers to (Docker's container name); one on several networks publishes on its first.
fn record_of(ctx: &Ctx, name: &str) -> Result<String> {
    let st = state::load_required(&ctx.inst)?;
    st.one_answering(name).map(str::to_string)
}

fn host_ip(s: Option<&str>) -> Result<Option<std::net::IpAddr>> {
    s.map(validate::host_ip).transpose()
}

fn host(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(std::net::IpAddr::V6(i)) => format!("[{i}]"),
        Some(i) => i.to_string(),
        None => "*".into(),
    }
}

pub async fn publish(ctx: &Ctx, a: PublishArgs) -> Result<()> {
    let (host_ports, container_port, proto) = validate::publish_form(&a.mapping)?;
    let port = Port {
        host_ip: host_ip(a.host_ip.as_deref())?,
        host_port: 0,
        container_port,
        proto,
    };
    let record = record_of(ctx, &a.container)?;
    let p = publish::publish_on(ctx, &record, port, host_ports).await?;
    if a.json {
        json(&p);
    } else {
        println!(
            "published {}:{}/{} -> {} {}",
            host(p.host_ip),
            p.host_port,
            p.proto.name(),
            p.container,
            p.target()
        );
    }
    Ok(())
}

pub async fn unpublish(ctx: &Ctx, a: UnpublishArgs) -> Result<()> {
    let port = validate::host_port_spec(&a.port)?;
    let ip = host_ip(a.host_ip.as_deref())?;
    let record = record_of(ctx, &a.container)?;
    match publish::unpublish(ctx, &record, port, ip).await? {
        Unpublished::Removed(ps) => {
            for p in ps {
                println!(
                    "unpublished {}:{}/{} (was -> {}:{})",
                    host(p.host_ip),
                    p.host_port,
                    p.proto.name(),
                    p.container,
                    p.container_port
                );
            }
        }
        Unpublished::NotPublished {
            host_port,
            proto,
            held_by,
        } => {
            let other = held_by
                .map(|o| {
                    format!(
                        " (it is published on {} to {})",
                        host(o.host_ip),
                        o.container
                    )
                })
                .unwrap_or_default();
            println!(
                "{} {host_port}/{} is not published{other}: nothing to do",
                a.container,
                proto.name()
            );
        }
    }
    Ok(())
}

pub fn ports(ctx: &Ctx, a: PortsArgs) -> Result<()> {
    let st = state::load_required(&ctx.inst)?;
    let mut l = publish::list(&st, &PublishBook::open(&ctx.inst)?.items()?);
    if let Some(name) = &a.container {
        let records = st.answering_some(name)?;
        l.retain(|p| records.contains(&p.container.as_str()));
    }
    if a.json {
        json(&l);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|p| {
            vec![
                format!("{}:{}", host(p.host_ip), p.host_port),
                p.proto.name().into(),
                st.containers
                    .get(&p.container)
                    .and_then(|c| c.alias.clone())
                    .unwrap_or_else(|| p.container.clone()),
                p.target(),
            ]
        })
        .collect();
    table(&["HOST", "PROTO", "CONTAINER", "TARGET"], &rows);
    Ok(())
}
