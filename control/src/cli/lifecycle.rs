//! `control init` and `control down`.

use clap::{Args, ValueEnum};
use control::{
    Error, Result,
    ops::{Ctx, lifecycle, restore},
    output::json,
    state::{BigTcp, XdpMode},
    validate,
};

const INIT_EXAMPLES: &str = "\
Examples:
  control init                                  # uplink = the default route's interface
  control init --uplink eth0 --xdp auto
  control init --big-tcp on                     # 185,000-byte GSO between containers
  control --host-netns h1 init --uplink up0     # serve the namespace /run/netns/h1
  control init --conntrack-max 1048576 --ct-timeout udp=60 --snat-ports 10000-32767

Running it again upgrades the programs in place (same or newer build): established
connections, published ports and rules survive. Run it again, too, after changing the uplink's
MTU (containers take it) or the host's net.ipv4.ip_local_port_range (SNAT moves clear of it).

At boot (after a reboot the pins, namespaces and links are gone, the state dir is not) it
brings back networks, rules and published ports, and recreates the containers `control
container create` made (`--missing forget` drops them instead). Containers of a runtime
(CNI, Docker) are forgotten: their runtime attaches them again when it restarts them.";

#[derive(Args)]
#[command(after_help = INIT_EXAMPLES)]
pub struct InitArgs {
    /// Interface to masquerade behind and publish ports on (default: the default route's).
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// XDP on the uplink: `auto` attaches only to a physical NIC with native XDP (never to a
    /// veth, where it would turn TSO off on the peer); `on` forces it; `off` never.
    #[arg(long, value_enum)]
    xdp: Option<Switch>,
    /// BIG TCP on the containers' links (GSO and GRO packets of 185,000 bytes instead of
    /// 64 KiB): `auto` (the default) follows the uplink, so traffic to the world never needs
    /// segmenting in software for it; `on` gives it to them whatever the uplink takes
    /// (container-to-container traffic gains, traffic out of an uplink without it is
    /// segmented in software); `off` never. Existing links follow at once.
    #[arg(long, value_enum, value_name = "MODE")]
    big_tcp: Option<Switch>,
    /// CLI containers whose namespace or veth is gone (after a reboot): recreate them
    /// (default) or forget them with their published ports and rules.
    #[arg(long, value_enum, value_name = "WHAT")]
    missing: Option<MissingArg>,
    /// Conntrack map size in entries (two per flow; fixed until `control down`).
    #[arg(long, value_name = "N")]
    conntrack_max: Option<u32>,
    /// Conntrack timeout override, NAME=SECONDS; names: tcp-syn, tcp-established, tcp-fin,
    /// tcp-closed, udp, udp-stream, icmp, other. Repeatable.
    #[arg(long, value_name = "NAME=SECONDS")]
    ct_timeout: Vec<String>,
    /// Source ports SNAT picks when a container's own port cannot be kept (taken, or inside
    /// the host's ephemeral range). Must lie outside net.ipv4.ip_local_port_range, which the
    /// host's own connections pick from; default: the larger unprivileged range beside it
    /// (1024-32767 with Linux's default 32768-60999).
    #[arg(long, value_name = "MIN-MAX")]
    snat_ports: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MissingArg {
    Recreate,
    Forget,
}

/// `auto`, `on` or `off` (`--xdp`, `--big-tcp`).
#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    Auto,
    On,
    Off,
}

#[derive(Args)]
pub struct DownArgs {
    /// Proceed even if the state file is unreadable (removes what it can find).
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn timeout(kv: &str) -> Result<(String, u32)> {
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
}

pub async fn init(ctx: &Ctx, a: InitArgs, host_netns: Option<String>) -> Result<()> {
    let opts = lifecycle::InitOpts {
        host_netns,
        uplink: a.uplink,
        xdp: a.xdp.map(|x| match x {
            Switch::Auto => XdpMode::Auto,
            Switch::On => XdpMode::On,
            Switch::Off => XdpMode::Off,
        }),
        big_tcp: a.big_tcp.map(|x| match x {
            Switch::Auto => BigTcp::Auto,
            Switch::On => BigTcp::On,
            Switch::Off => BigTcp::Off,
        }),
        conntrack_max: a.conntrack_max,
        timeouts: a
            .ct_timeout
            .iter()
            .map(|kv| timeout(kv))
            .collect::<Result<_>>()?,
        snat_ports: a
            .snat_ports
            .as_deref()
            .map(validate::port_range)
            .transpose()?,
        missing: match a.missing {
            Some(MissingArg::Forget) => restore::Missing::Forget,
            Some(MissingArg::Recreate) | None => restore::Missing::Recreate,
        },
    };
    let r = lifecycle::init(ctx, opts).await?;
    if a.json {
        json(&r);
        return Ok(());
    }
    let big = r.gso.v4.max(r.gso.v6);
    println!(
        "weir {} on {} ({}), xdp {}{}, big tcp {}",
        if r.reinitialised {
            "re-initialised"
        } else {
            "initialised"
        },
        r.uplink,
        r.uplink_ip,
        if r.xdp { "on" } else { "off" },
        r.xdp_note.map(|n| format!(" — {n}")).unwrap_or_default(),
        if big > control::netlink::GSO_LEGACY {
            format!("on (GSO {} bytes)", big)
        } else {
            "off".to_string()
        }
    );
    if r.reinitialised {
        println!(
            "programs replaced in place on {} container link(s); established flows kept",
            r.containers_updated
        );
    }
    if let Some(n) = r.snat_note {
        println!("{n}");
    }
    report_restored(&r.restored);
    if r.mtu_resynced > 0 {
        println!(
            "{} container link(s) took the uplink's new MTU",
            r.mtu_resynced
        );
    }
    Ok(())
}

fn report_restored(r: &restore::Restored) {
    for (names, what) in [
        (&r.recreated, "recreated (its links were gone)"),
        (
            &r.forgotten,
            "forgotten (its links were gone; --missing forget)",
        ),
        (
            &r.left_to_runtime,
            "forgotten (its links were gone): its runtime attaches it again",
        ),
    ] {
        for n in names {
            println!("container {n} {what}");
        }
    }
}

pub async fn down(ctx: &Ctx, a: DownArgs) -> Result<()> {
    let unreadable = if a.force {
        lifecycle::Unreadable::Proceed
    } else {
        lifecycle::Unreadable::Refuse
    };
    let r = lifecycle::down(ctx, unreadable).await?;
    if a.json {
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
    Ok(())
}
