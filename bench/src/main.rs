//! `bench`: Weir against bridge+iptables (Docker), netavark (Podman) and bare veth, on
//! identical sandboxed topologies, interleaved in one run. `bench --help` explains.

mod cli;
mod helpers;
mod interrupt;
mod machine;
mod plan;
mod report;
mod results;
mod tools;
mod topo;
mod workload;

use std::{
    path::Path,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::{
    cli::Cli,
    plan::Plan,
    results::{Results, Workload},
    tools::Servers,
    topo::{Topology, bridge::Bridge, netavark::Netavark, veth::Veth, weir::Weir},
    workload::{Family, Runner, Topos, connrate, latency, packets, throughput},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Helpers the bench runs inside namespaces: `bench __NAME ARGS...`.
    if let Some(h) = args.get(1).filter(|a| a.starts_with("__")) {
        let rest = &args[2..];
        let r = match h.as_str() {
            "__udp-flood" => helpers::udp_flood(rest),
            "__udp-sink" => helpers::udp_sink(rest),
            "__timed" => helpers::timed(rest),
            "__http-first" => workload::docker::http_first(rest),
            "__pingpong" => helpers::pingpong(rest),
            "__pingpong-server" => helpers::pingpong_server(rest),
            other => Err(anyhow::anyhow!("unknown helper {other}")),
        };
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {h}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fails early, with the fix, when something the bench needs is missing.
fn preflight(cli: &Cli) -> Result<()> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench creates network namespaces: run it as root");
    }
    if !cli.control.exists() {
        bail!(
            "no control binary at {} (set WEIR_CONTROL or --control, or run `cargo xtask bench`)",
            cli.control.display()
        );
    }
    for tool in [
        "iperf3",
        "sockperf",
        "wrk",
        "nginx",
        "iptables",
        "iptables-restore",
        "timeout",
        topo::netavark::BINARY,
    ] {
        if !rig::run(&["sh", "-c", &format!("command -v {tool}")])
            .status
            .success()
        {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    if let Some(base) = &cli.baseline_control
        && !base.exists()
    {
        bail!(
            "no control binary at {} (--baseline-control: build the baseline first)",
            base.display()
        );
    }
    for t in cli.topologies() {
        if t == cli::BASELINE && cli.baseline_control.is_none() {
            bail!("topology {t} needs --baseline-control PATH (the other control binary)");
        }
        let known = cli::TOPOLOGIES.contains(&t.as_str())
            || cli::DOCKER_TOPOLOGIES.contains(&t.as_str())
            || t == cli::BIG_TCP;
        if t != cli::BASELINE && !known {
            bail!(
                "unknown topology {t:?}: pick from {:?}, {:?}, {} or {}",
                cli::TOPOLOGIES,
                cli::DOCKER_TOPOLOGIES,
                cli::BIG_TCP,
                cli::BASELINE
            );
        }
    }
    for w in &cli.only {
        if !cli::WORKLOADS.contains(&w.as_str()) {
            bail!("unknown workload {w:?}: pick from {:?}", cli::WORKLOADS);
        }
    }
    workload::docker::preflight(cli)
}

fn build(cli: &Cli, control: &Path, which: &[String], r: &Runner) -> Result<Topos> {
    let mut v: Topos = Vec::new();
    for label in which {
        r.note(&format!("building the {label} topology"));
        let t: Box<dyn Topology> = match label.as_str() {
            "weir" => Box::new(Weir::build(control, false)?),
            "iptables" => Box::new(Bridge::build(control)?),
            "netavark" => Box::new(Netavark::build(control)?),
            "veth" => Box::new(Veth::build(control)?),
            cli::BIG_TCP => Box::new(Weir::big_tcp(control)?),
            cli::BASELINE => {
                let Some(base) = &cli.baseline_control else {
                    bail!("topology {} needs --baseline-control PATH", cli::BASELINE);
                };
                Box::new(Weir::baseline(&std::fs::canonicalize(base)?)?)
            }
            other => bail!("unknown topology {other}"),
        };
        v.push(t);
    }
    Ok(v)
}

fn start_servers(topos: &Topos) -> Result<Vec<Servers>> {
    topos.iter().map(|t| Servers::start(t.as_ref())).collect()
}

/// The results of a run about to start: what it is, where, and the notes that always apply.
fn new_results(cli: &Cli, plan: &Plan) -> Results {
    let mut notes = vec![
        "netavark is the real `netavark setup` (1.4); only its 1,000/10,000 filler ports are \
         written in its rule layout by iptables-restore (netavark itself needs ~39 s per 1,000 \
         mappings here)."
            .to_string(),
    ];
    if let Some(base) = &cli.baseline_control {
        notes.push(format!(
            "weir-base is another build of control ({}), measured in the same rounds.",
            base.display()
        ));
    }
    Results {
        mode: if plan.quick { "quick" } else { "full" },
        machine: machine::Machine::probe(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        duration_secs: 0.0,
        samples_per_case: plan.samples,
        topologies: cli.topologies(),
        workloads: Vec::new(),
        notes,
    }
}

/// Closes a run's results: duration, load, and notes on what failed. Whether all succeeded.
fn settle(results: &mut Results, outcome: Result<()>, r: &Runner) -> bool {
    let mut ok = true;
    if let Err(e) = outcome {
        ok = false;
        eprintln!("bench: {e:#}");
        results.notes.push(format!("The run stopped early: {e:#}"));
    }
    results.duration_secs = r.elapsed().as_secs_f64();
    results.machine.load_end = machine::load_average();
    let errors: usize = results
        .workloads
        .iter()
        .flat_map(|w| &w.cases)
        .map(|c| c.errors.len())
        .sum();
    if errors > 0 {
        ok = false;
        results.notes.push(format!(
            "{errors} measurement(s) failed: see the Errors lists."
        ));
    }
    ok
}

/// Returns whether every measurement succeeded.
fn run(cli: Cli) -> Result<bool> {
    preflight(&cli)?;
    interrupt::install();
    let control = std::fs::canonicalize(&cli.control).context("control path")?;
    let plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    }
    .with_samples(cli.samples);
    let mut results = new_results(&cli, &plan);
    let mut r = Runner::new(plan);
    eprintln!(
        "bench: {} run, {} sample(s) per case, topologies {}, results to {}",
        results.mode,
        r.plan.samples,
        results.topologies.join(", "),
        cli.out_dir().display()
    );
    let (which, _) = cli.split_topologies();
    let mut updates = connrate::updates();
    let outcome = phases(
        &cli,
        &control,
        &which,
        &mut r,
        &mut results.workloads,
        &mut updates,
    )
    .and_then(|()| workload::docker::phase(&cli, &control, &mut r, &mut results.workloads));
    if !updates.cases.is_empty() {
        results.workloads.push(updates);
    }
    let ok = settle(&mut results, outcome, &r);
    let dir = cli.out_dir();
    report::write(&dir, &results)?;
    eprintln!(
        "bench: done in {:.0} s; wrote {}",
        results.duration_secs,
        dir.join("results.md").display()
    );
    Ok(ok)
}

/// The three phases, each on freshly built topologies so no workload inherits another's
/// filler ports or rules.
fn phases(
    cli: &Cli,
    control: &Path,
    which: &[String],
    r: &mut Runner,
    out: &mut Vec<Workload>,
    updates: &mut Workload,
) -> Result<()> {
    if which.is_empty() {
        return Ok(());
    }
    let fams = |id: &str| -> Vec<Family> {
        [(Family::V4, ""), (Family::V6, "6")]
            .into_iter()
            .filter(|(_, s)| cli.wants(&format!("{id}{s}")))
            .map(|(f, _)| f)
            .collect()
    };
    let (tput, lat) = (fams("throughput"), fams("latency"));
    if !tput.is_empty() || !lat.is_empty() || cli.wants("packets") {
        let mut topos = build(cli, control, which, r)?;
        let _servers = start_servers(&topos)?;
        for f in &tput {
            out.push(throughput::run(r, &mut topos, *f)?);
        }
        for f in &lat {
            out.push(latency::run(r, &mut topos, *f)?);
        }
        if cli.wants("packets") {
            out.push(packets::dnat(r, &mut topos)?);
            if which.iter().any(|t| t == "weir") {
                out.push(packets::drops(r, &mut topos, control)?);
            }
        }
    }
    let ports = fams("connrate-ports");
    if !ports.is_empty() {
        let mut topos = build(cli, control, which, r)?;
        let _servers = start_servers(&topos)?;
        out.extend(connrate::published_ports(r, &mut topos, updates, &ports)?);
    }
    let rules = fams("connrate-rules");
    if !rules.is_empty() {
        let mut topos = build(cli, control, which, r)?;
        let _servers = start_servers(&topos)?;
        out.extend(connrate::isolation_rules(r, &mut topos, updates, &rules)?);
    }
    Ok(())
}
