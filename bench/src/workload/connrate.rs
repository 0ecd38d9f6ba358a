//! New-connection rate (wrk, `Connection: close`, against nginx) as published ports or
//! isolation rules pile up, and what one more port or rule costs the control plane then.

use anyhow::Result;

use super::{Outcome, Runner, Topos};
use crate::{results::Workload, tools, topo::port};

/// The control-plane workload both rate workloads feed.
pub fn updates() -> Workload {
    Workload::new(
        "update",
        "Control-plane update cost",
        "ms",
        false,
        "Wall time of one change with N others present, undone after each sample. \
         weir: one `control publish` / `control isolate` process (it opens the pinned maps, \
         updates the state file and one map entry); iptables: the iptables processes Docker \
         runs for one published port (nat DNAT, filter ACCEPT, hairpin MASQUERADE) or one \
         `iptables -I` isolation rule, timed inside the host namespace; netavark: `netavark \
         setup` of a new container with one port mapping (netavark cannot add a port to a \
         running container; this includes creating its veth) and an `iptables -I` rule.",
    )
}

pub fn published_ports(r: &mut Runner, topos: &mut Topos, upd: &mut Workload) -> Result<Workload> {
    let secs = r.plan.wrk_secs;
    let mut w = Workload::new(
        "connrate-ports",
        "New connections from ext through a published port",
        "conn/s",
        true,
        format!(
            "wrk -t1 -c32 -d{secs}s -H 'Connection: close' from ext to nginx in the server \
             container through its published port (DNAT), with N other ports published to \
             other containers. iptables and netavark get the N ports in Docker's and netavark's \
             own rule layouts, ahead of the server's (the server is the newest container); \
             veth has no DNAT (ext connects to the server directly) and repeats its measurement \
             at every N, which shows the machine's drift."
        ),
    );
    r.heading("new connections vs published ports (wrk)");
    let mut sample = 0usize;
    for &n in &r.plan.counts.clone() {
        r.note(&format!("publishing {n} filler ports on every topology"));
        for t in topos.iter_mut() {
            t.set_published_ports(n)?;
        }
        let case = format!("{n} other published ports");
        r.interleave(&mut w, topos, &[case], r.plan.samples, |t| {
            let addr = t.published_addr().to_string();
            Ok(Outcome::Values(vec![tools::wrk(
                t.ext(),
                &addr,
                port::HTTP,
                secs,
            )?]))
        })?;
        let case = format!("publish one port, {n} present");
        let rounds = r.plan.update_samples;
        r.interleave(upd, topos, &[case], rounds, |t| {
            sample += 1;
            Ok(ms(t.time_publish(sample)?, "has no published ports"))
        })?;
    }
    Ok(w)
}

pub fn isolation_rules(r: &mut Runner, topos: &mut Topos, upd: &mut Workload) -> Result<Workload> {
    let secs = r.plan.wrk_secs;
    let mut w = Workload::new(
        "connrate-rules",
        "New connections container→container with isolation rules",
        "conn/s",
        true,
        format!(
            "wrk -t1 -c32 -d{secs}s -H 'Connection: close' from the client container to nginx \
             in the server container, with N isolation rules between other containers present \
             (none matches the measured pair, so every rule a linear filter has is walked). \
             weir: N `isolate A B` pairs among dummy containers (`rules import`); iptables and \
             netavark: N `-s A -d B -j DROP` rules (one direction each, so they cover half the \
             pairs) in a chain jumped to after the ESTABLISHED accept, so only new connections \
             walk it; veth has no rules and repeats its measurement at every N."
        ),
    );
    r.heading("new connections vs isolation rules (wrk)");
    let mut sample = 0usize;
    for &n in &r.plan.counts.clone() {
        r.note(&format!("installing {n} isolation rules on every topology"));
        for t in topos.iter_mut() {
            t.set_isolation_rules(n)?;
        }
        let case = format!("{n} isolation rules");
        r.interleave(&mut w, topos, &[case], r.plan.samples, |t| {
            let addr = t.server_addr().to_string();
            Ok(Outcome::Values(vec![tools::wrk(
                t.client(),
                &addr,
                port::HTTP,
                secs,
            )?]))
        })?;
        let case = format!("add one isolation rule, {n} present");
        let rounds = r.plan.update_samples;
        r.interleave(upd, topos, &[case], rounds, |t| {
            sample += 1;
            Ok(ms(t.time_isolate(sample)?, "has no isolation rules"))
        })?;
    }
    Ok(w)
}

fn ms(d: Option<std::time::Duration>, why: &'static str) -> Outcome {
    match d {
        Some(d) => Outcome::Values(vec![d.as_secs_f64() * 1e3]),
        None => Outcome::NotApplicable(why),
    }
}
