//! New-connection rate (wrk, `Connection: close`, against nginx) as published ports or
//! isolation rules pile up, and what one more port or rule costs the control plane then.

use anyhow::Result;

use super::{Family, Outcome, Runner, Topos};
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

/// One workload per family in `fams` (same topologies, same counts: each count's filler ports
/// serve both families, as Docker publishes on both); the update cost only beside IPv4.
pub fn published_ports(
    r: &mut Runner,
    topos: &mut Topos,
    upd: &mut Workload,
    fams: &[Family],
) -> Result<Vec<Workload>> {
    let secs = r.plan.wrk_secs;
    let mut ws: Vec<Workload> = fams.iter().map(|f| ports_workload(secs, *f)).collect();
    r.heading("new connections vs published ports (wrk)");
    let mut sample = 0usize;
    for &n in &r.plan.counts.clone() {
        r.note(&format!("publishing {n} filler ports on every topology"));
        for t in topos.iter_mut() {
            t.set_published_ports(n)?;
        }
        for (w, f) in ws.iter_mut().zip(fams) {
            let case = format!("{n} other published ports");
            r.interleave(w, topos, &[case], r.plan.samples, |t| {
                if let Some(na) = f.missing(t) {
                    return Ok(na);
                }
                let addr = match f {
                    Family::V4 => t.published_addr(),
                    Family::V6 => t.published_addr6(),
                }
                .to_string();
                let v = tools::wrk(t.ext(), &addr, port::HTTP, secs)?;
                Ok(Outcome::Values(vec![v]))
            })?;
        }
        if !fams.contains(&Family::V4) {
            continue;
        }
        let case = format!("publish one port, {n} present");
        let rounds = r.plan.update_samples;
        r.interleave(upd, topos, &[case], rounds, |t| {
            sample += 1;
            Ok(ms(t.time_publish(sample)?, "has no published ports"))
        })?;
    }
    Ok(ws)
}

fn ports_workload(secs: u32, f: Family) -> Workload {
    let (id, title) = f.workload(
        "connrate-ports",
        "New connections from ext through a published port",
    );
    let six = if f == Family::V6 {
        " Over IPv6: ext 2001:db8:18::2 to the host's 2001:db8:18::1 (wrk http://[addr]:8080/, \
         nginx on [::]); iptables is Docker's ip6tables layout, its filler ports in ip6tables too."
    } else {
        ""
    };
    Workload::new(
        id,
        title,
        "conn/s",
        true,
        format!(
            "wrk -t1 -c32 -d{secs}s -H 'Connection: close' from ext to nginx in the server \
             container through its published port (DNAT), with N other ports published to \
             other containers. iptables and netavark get the N ports in Docker's and netavark's \
             own rule layouts, ahead of the server's (the server is the newest container); \
             veth has no DNAT (ext connects to the server directly) and repeats its measurement \
             at every N, which shows the machine's drift.{six}"
        ),
    )
}

/// One workload per family in `fams`, as [`published_ports`].
pub fn isolation_rules(
    r: &mut Runner,
    topos: &mut Topos,
    upd: &mut Workload,
    fams: &[Family],
) -> Result<Vec<Workload>> {
    let secs = r.plan.wrk_secs;
    let mut ws: Vec<Workload> = fams.iter().map(|f| rules_workload(secs, *f)).collect();
    r.heading("new connections vs isolation rules (wrk)");
    let mut sample = 0usize;
    for &n in &r.plan.counts.clone() {
        r.note(&format!("installing {n} isolation rules on every topology"));
        for t in topos.iter_mut() {
            t.set_isolation_rules(n)?;
        }
        for (w, f) in ws.iter_mut().zip(fams) {
            let case = format!("{n} isolation rules");
            r.interleave(w, topos, &[case], r.plan.samples, |t| {
                if let Some(na) = f.missing(t) {
                    return Ok(na);
                }
                let addr = match f {
                    Family::V4 => t.server_addr(),
                    Family::V6 => t.server_addr6(),
                }
                .to_string();
                let v = tools::wrk(t.client(), &addr, port::HTTP, secs)?;
                Ok(Outcome::Values(vec![v]))
            })?;
        }
        if !fams.contains(&Family::V4) {
            continue;
        }
        let case = format!("add one isolation rule, {n} present");
        let rounds = r.plan.update_samples;
        r.interleave(upd, topos, &[case], rounds, |t| {
            sample += 1;
            Ok(ms(t.time_isolate(sample)?, "has no isolation rules"))
        })?;
    }
    Ok(ws)
}

fn rules_workload(secs: u32, f: Family) -> Workload {
    let (id, title) = f.workload(
        "connrate-rules",
        "New connections container→container with isolation rules",
    );
    let six = if f == Family::V6 {
        " Over IPv6: fd00:99::2 to fd00:99::3; Weir's `isolate` rules cover both families \
         (identities), iptables gets the N rules again in ip6tables (dummies fd00:99::100 up)."
    } else {
        ""
    };
    Workload::new(
        id,
        title,
        "conn/s",
        true,
        format!(
            "wrk -t1 -c32 -d{secs}s -H 'Connection: close' from the client container to nginx \
             in the server container, with N isolation rules between other containers present \
             (none matches the measured pair, so every rule a linear filter has is walked). \
             weir: N `isolate A B` pairs among dummy containers (`rules import`); iptables and \
             netavark: N `-s A -d B -j DROP` rules (one direction each, so they cover half the \
             pairs) in a chain jumped to after the ESTABLISHED accept, so only new connections \
             walk it; veth has no rules and repeats its measurement at every N.{six}"
        ),
    )
}

fn ms(d: Option<std::time::Duration>, why: &'static str) -> Outcome {
    match d {
        Some(d) => Outcome::Values(vec![d.as_secs_f64() * 1e3]),
        None => Outcome::NotApplicable(why),
    }
}
