//! `control status|stats|conntrack|gc|monitor`.

use std::time::Duration;

use clap::{Args, Subcommand};
use control::{
    Error, Result,
    ops::{Ctx, inspect, reconcile},
    output::{json, table},
    state,
};

use super::JsonArg;

#[derive(Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Include zero counters.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
pub struct ConntrackArgs {
    #[command(subcommand)]
    action: Option<ConntrackCmd>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Include expired entries.
    #[arg(long)]
    all: bool,
    /// Only flows to or from this container (every network it is on).
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// Cut tracked flows: all, or those of one container (their next packet opens a new flow,
    /// checked against the rules).
    Flush {
        /// Only flows to or from this container.
        #[arg(long)]
        container: Option<String>,
    },
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  control monitor\n  control monitor --json --count 10\n  \
    control monitor --duration 5"
)]
pub struct MonitorArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
}

pub async fn status(ctx: &Ctx, a: JsonArg) -> Result<()> {
    let st = state::load_required(&ctx.inst)?;
    let s = inspect::status(ctx, &st).await?;
    if a.json {
        json(&s);
        return Ok(());
    }
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
        s.networks, s.containers, s.published_ports, s.rules, s.conntrack_entries, s.conntrack_max
    );
    let rows: Vec<Vec<String>> = s
        .programs
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
        .collect();
    table(&["PROGRAM", "ATTACHED TO", "ID"], &rows);
    if s.problems.is_empty() {
        println!("healthy");
    } else {
        for p in &s.problems {
            println!("problem: {p}");
        }
    }
    Ok(())
}

pub const REPAIR_EXAMPLES: &str = "\
Example:
  bpftool map delete pinned /sys/fs/bpf/weir/<id>/maps/WEIR_ENDPOINTS key 10 88 0 2
  control status    # problem: map WEIR_ENDPOINTS differs from the state (1 missing): ...
  control repair    # repaired WEIR_ENDPOINTS (1 missing)
  control repair    # nothing to repair";

/// `control repair`: one line saying what it put back, or that nothing had drifted.
pub async fn repair(ctx: &Ctx) -> Result<()> {
    let fixed = reconcile::repair_maps(ctx).await?;
    if fixed.is_empty() {
        println!("nothing to repair");
        return Ok(());
    }
    let what: Vec<String> = fixed
        .iter()
        .map(|d| format!("{} ({})", d.map, d.summary()))
        .collect();
    println!("repaired {}", what.join(", "));
    Ok(())
}

pub fn stats(ctx: &Ctx, a: StatsArgs) -> Result<()> {
    state::load_required(&ctx.inst)?;
    let s = inspect::stats(ctx)?;
    if a.json {
        json(&s);
        return Ok(());
    }
    let row = |kind: &str, name: &str, hook: &str, packets: String, bytes: String| {
        vec![kind.into(), name.into(), hook.into(), packets, bytes]
    };
    let mut rows = Vec::new();
    for (k, v) in &s.paths {
        if a.all || v.packets > 0 {
            rows.push(row(
                "path",
                k,
                "",
                v.packets.to_string(),
                v.bytes.to_string(),
            ));
        }
    }
    for (k, v) in &s.events {
        if a.all || *v > 0 {
            rows.push(row("nat", k, "", v.to_string(), String::new()));
        }
    }
    for (k, hooks) in &s.drops {
        if hooks.is_empty() && a.all {
            rows.push(row("drop", k, "", "0".into(), String::new()));
        }
        for (h, n) in hooks {
            rows.push(row("drop", k, h, n.to_string(), String::new()));
        }
    }
    table(&["KIND", "COUNTER", "HOOK", "PACKETS", "BYTES"], &rows);
    Ok(())
}

pub async fn conntrack(ctx: &Ctx, a: ConntrackArgs) -> Result<()> {
    if let Some(ConntrackCmd::Flush { container }) = a.action {
        let (_lock, st) = ctx.begin().await?;
        let n = inspect::flush(ctx, &st, container.as_deref())?;
        println!("cut {n} flow(s)");
        return Ok(());
    }
    let st = state::load_required(&ctx.inst)?;
    let which = if a.all {
        inspect::Flows::WithExpired
    } else {
        inspect::Flows::Live
    };
    let mut flows = inspect::conntrack(ctx, which)?;
    if let Some(name) = &a.container {
        st.answering_some(name)?;
        let ids = st.identities(name);
        flows.retain(|f| ids.contains(&f.src_identity) || ids.contains(&f.dst_identity));
    }
    if a.json {
        json(&flows);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = flows
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
        .collect();
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
        &rows,
    );
    Ok(())
}

pub async fn gc(ctx: &Ctx) -> Result<()> {
    let (_lock, _st) = ctx.begin().await?;
    println!("removed {} expired conntrack entries", inspect::gc(ctx)?);
    Ok(())
}

pub async fn monitor(ctx: &Ctx, a: MonitorArgs) -> Result<()> {
    state::load_required(&ctx.inst)?;
    if let Some(d) = a.duration
        && !(d > 0.0 && d < 1e9)
    {
        return Err(Error::invalid(
            "--duration must be a positive number of seconds",
        ));
    }
    let j = a.json;
    let n = inspect::monitor(ctx, a.count, a.duration.map(Duration::from_secs_f64), |e| {
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
    Ok(())
}
