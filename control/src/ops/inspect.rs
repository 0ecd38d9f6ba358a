//! `control status|stats|conntrack|gc|monitor`: read-only views of the datapath (monitor
//! flips the event flag while it listens).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde::Serialize;
use weir_common::{
    addr::{port_host, to_std},
    config::flags as cfg_flags,
    conntrack::{CtEntryOf, FlowKeyOf, flags, state as ct_state},
    event::{Event as DropEvent, Event6, EventOf, KIND_DROP, KIND_DROP6, KIND_OFFSET},
    maps as names,
    stats::{DropReason, Event, Hook, Path, drop_index, event_index, path_index},
};

use super::{Ctx, container};
use crate::{
    datapath::{self, links, maps},
    drift::{self, MapDrift},
    error::Result,
    netlink,
    state::{self, Phase, State},
};

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[derive(Debug, Serialize)]
pub struct ProgramStatus {
    pub program: String,
    pub attached_to: String,
    pub program_id: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub state_dir: String,
    pub pin_dir: String,
    pub host_netns: Option<String>,
    pub uplink: String,
    pub uplink_ip: Ipv4Addr,
    pub xdp: bool,
    pub programs: Vec<ProgramStatus>,
    pub networks: usize,
    pub containers: usize,
    pub published_ports: usize,
    pub rules: usize,
    pub conntrack_entries: usize,
    pub conntrack_max: u32,
    /// Derived maps that differ from the state (`control repair` puts them back).
    pub drift: Vec<MapDrift>,
    pub problems: Vec<String>,
}

pub async fn status(ctx: &Ctx, st: &State) -> Result<Status> {
    let mut problems = Vec::new();
    if let Some(j) = state::pending_journal(&ctx.inst) {
        problems.push(state::unfinished_init(&j).unwrap_or_else(|| {
            format!(
                "an interrupted command ({}) left work to repair; the next change repairs it",
                j.trim()
            )
        }));
    }
    problems.extend(container_problems(ctx, st).await?);
    problems.extend(ephemeral_moved(st)?);
    problems.extend(shape_problems(ctx, st).await?);
    let programs = programs(ctx, st);
    for p in &programs {
        if p.program_id.is_none() {
            problems.push(format!(
                "{} on {} is not attached: run `control init` to repair",
                p.program, p.attached_to
            ));
        }
    }
    let drift = map_drift(ctx, st, &mut problems);
    Ok(Status {
        state_dir: ctx.inst.state_dir.display().to_string(),
        pin_dir: ctx.inst.pin_dir.display().to_string(),
        host_netns: st.host_netns.clone(),
        uplink: st.uplink.name.clone(),
        uplink_ip: st.uplink.ip,
        xdp: st.uplink.xdp,
        programs,
        networks: st.networks.len(),
        containers: st.containers.len(),
        published_ports: crate::published::PublishBook::open(&ctx.inst)?.len(),
        rules: crate::rules::RuleBook::open(&ctx.inst)?.len(),
        conntrack_entries: live_flows(ctx)?,
        conntrack_max: st.settings.conntrack_max,
        drift,
        problems,
    })
}

/// The host's ephemeral ports, when they are no longer the ones masquerading keeps clear of
/// (`net.ipv4.ip_local_port_range` changed since init): the host's new flows may then pick
/// ports a container's flow holds.
fn ephemeral_moved(st: &State) -> Result<Option<String>> {
    let now = crate::snat_ports::host_ephemeral()?;
    let (was, snat) = (st.settings.host_ports, st.settings.snat_ports);
    Ok((now != was).then(|| {
        format!(
            "the host's ephemeral ports are now {}-{} (net.ipv4.ip_local_port_range), not the {}-{} masquerading keeps clear of (SNAT ports {}-{}): run `control init` to follow",
            now.0, now.1, was.0, was.1, snat.0, snat.1
        )
    }))
}

/// The derived maps that differ from the state, each also told in `problems`.
fn map_drift(ctx: &Ctx, st: &State, problems: &mut Vec<String>) -> Vec<MapDrift> {
    // A map that cannot be read is a problem to report, not a reason to report nothing.
    let drift: Vec<MapDrift> = match drift::check(&ctx.inst, st, false) {
        Ok(d) => d.into_iter().filter(|d| !d.is_clean()).collect(),
        Err(e) => {
            problems.push(format!(
                "the maps could not be compared with the state: {e}"
            ));
            Vec::new()
        }
    };
    for d in &drift {
        problems.push(format!(
            "map {} differs from the state ({}): run `control repair`",
            d.map,
            d.summary()
        ));
    }
    drift
}

/// Every program Weir attaches for `st`, where, and the id of what is attached there now.
fn programs(ctx: &Ctx, st: &State) -> Vec<ProgramStatus> {
    let at = |program: &str, attached_to: String, link: &str| ProgramStatus {
        program: program.into(),
        attached_to,
        program_id: links::program_id(&ctx.inst, link),
    };
    let up = &st.uplink.name;
    let mut programs = vec![
        at(
            datapath::UPLINK_TC,
            format!("{up} tc ingress"),
            datapath::UPLINK_TC,
        ),
        at(
            datapath::UPLINK_EGRESS,
            format!("{up} tc egress"),
            datapath::UPLINK_EGRESS,
        ),
    ];
    if st.uplink.xdp {
        programs.push(at(
            datapath::UPLINK_XDP,
            format!("{up} xdp"),
            datapath::UPLINK_XDP,
        ));
    }
    for (name, slot) in datapath::TAILS {
        let caller = match name {
            datapath::UPLINK_TC6 => datapath::UPLINK_TC,
            datapath::FROM_CONTAINER6_NEW => datapath::FROM_CONTAINER6,
            _ => datapath::FROM_CONTAINER,
        };
        programs.push(ProgramStatus {
            program: name.into(),
            attached_to: format!("tail call of {caller} (slot {slot})"),
            program_id: datapath::bpfsys::prog_array_id(&ctx.inst.map_pin(names::TAILS), slot)
                .ok()
                .flatten(),
        });
    }
    for p in datapath::SOCK_PROGRAMS {
        programs.push(at(p, format!("cgroup {}", st.cgroup2), p));
    }
    for (name, c) in &st.containers {
        let (ingress, egress) = (
            links::container_link(c.identity),
            links::container_egress_link(c.identity),
        );
        let (fc, tc) = (datapath::FROM_CONTAINER, datapath::TO_CONTAINER);
        programs.push(at(
            fc,
            format!("{} tc ingress ({name})", c.host_if),
            &ingress,
        ));
        programs.push(at(tc, format!("{} tc egress ({name})", c.host_if), &egress));
    }
    programs
}

/// Containers that are half-made or lost their host interface or namespace.
async fn container_problems(ctx: &Ctx, st: &State) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (name, c) in &st.containers {
        if c.phase != Phase::Ready {
            problems.push(format!("container {name} is {:?}", c.phase));
        }
        if netlink::link_by_name(&ctx.nl, &c.host_if).await?.is_none() {
            problems.push(format!(
                "container {name}: host interface {} is missing",
                c.host_if
            ));
        }
        if !container::netns_path(name, c).exists() {
            problems.push(format!("container {name}: network namespace is missing"));
        }
    }
    Ok(problems)
}

/// Conntrack entries not yet expired.
fn live_flows(ctx: &Ctx) -> Result<usize> {
    let now = monotonic_ns();
    let t = maps::read_config(&ctx.inst)?
        .map(|c| c.timeouts)
        .unwrap_or_default();
    let v4 = maps::conntrack_entries(&ctx.inst)?
        .iter()
        .filter(|(_, e)| !e.expired(now, &t))
        .count();
    let v6 = maps::conntrack6_entries(&ctx.inst)?
        .iter()
        .filter(|(_, e)| !e.expired(now, &t))
        .count();
    Ok(v4 + v6)
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Packets and bytes per forwarding path.
    pub paths: BTreeMap<String, Counter2>,
    /// NAT and conntrack events.
    pub events: BTreeMap<String, u64>,
    /// Dropped packets per reason, split by hook.
    pub drops: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Counter2 {
    pub packets: u64,
    pub bytes: u64,
}

pub fn stats(ctx: &Ctx) -> Result<Stats> {
    let m = maps::stats(&ctx.inst)?;
    let sum = |i: u32| -> Counter2 {
        m.get(&i, 0)
            .map(|v| {
                v.iter().fold(Counter2::default(), |a, c| Counter2 {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                })
            })
            .unwrap_or_default()
    };
    let mut s = Stats::default();
    for p in Path::ALL {
        s.paths.insert(p.name().into(), sum(path_index(*p)));
    }
    for e in Event::ALL {
        s.events
            .insert(e.name().into(), sum(event_index(*e)).packets);
    }
    for r in DropReason::ALL {
        let mut by_hook = BTreeMap::new();
        for h in Hook::ALL {
            let n = sum(drop_index(*r, *h)).packets;
            if n > 0 {
                by_hook.insert(h.name().to_string(), n);
            }
        }
        s.drops.insert(r.name().into(), by_hook);
    }
    Ok(s)
}

#[derive(Debug, Serialize)]
pub struct Flow {
    pub proto: String,
    pub original: String,
    pub translated: String,
    pub reply: String,
    pub state: String,
    pub kind: String,
    pub age_s: u64,
    pub expires_in_s: u64,
    pub src_identity: u32,
    pub dst_identity: u32,
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// An address of either family as `control conntrack` and `monitor` print it (IPv6 in
/// brackets, so that a port can follow).
pub trait Shown: Copy {
    fn shown(&self) -> String;
}

impl Shown for u32 {
    fn shown(&self) -> String {
        to_std(*self).to_string()
    }
}

impl Shown for [u32; 4] {
    fn shown(&self) -> String {
        format!("[{}]", weir_common::addr::to_std6(*self))
    }
}

fn ep<A: Shown>(ip: A, port: u16, proto: u8) -> String {
    if proto == 6 || proto == 17 {
        format!("{}:{}", ip.shown(), port_host(port))
    } else {
        format!("{}#{}", ip.shown(), port_host(port))
    }
}

fn tuple<A: Shown>(k: &FlowKeyOf<A>) -> String {
    format!(
        "{} -> {}",
        ep(k.saddr, k.sport, k.proto),
        ep(k.daddr, k.dport, k.proto)
    )
}

/// Which tracked flows [`conntrack`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flows {
    Live,
    /// Expired entries too (not yet reclaimed: LRU eviction or `gc` does that).
    WithExpired,
}

/// Tracked flows of both families (one line per flow, from its original-direction entry).
pub fn conntrack(ctx: &Ctx, which: Flows) -> Result<Vec<Flow>> {
    let include_expired = which == Flows::WithExpired;
    let t = maps::read_config(&ctx.inst)?
        .map(|c| c.timeouts)
        .unwrap_or_default();
    let now = monotonic_ns();
    let mut out: Vec<Flow> = maps::conntrack_entries(&ctx.inst)?
        .iter()
        .filter_map(|(k, e)| flow_row(k, e, &t, now, include_expired))
        .collect();
    out.extend(
        maps::conntrack6_entries(&ctx.inst)?
            .iter()
            .filter_map(|(k, e)| flow_row(k, e, &t, now, include_expired)),
    );
    out.sort_by(|a, b| a.original.cmp(&b.original));
    Ok(out)
}

/// The line of one entry, if it is a flow's original direction (and live, unless expired
/// ones are asked for too).
fn flow_row<A: Shown>(
    k: &FlowKeyOf<A>,
    e: &CtEntryOf<A>,
    t: &weir_common::config::Timeouts,
    now: u64,
    include_expired: bool,
) -> Option<Flow> {
    if e.is_reply() || (!include_expired && e.expired(now, t)) {
        return None;
    }
    let kind = if e.flags & flags::HAIRPIN != 0 {
        "hairpin"
    } else if e.flags & flags::SNAT != 0 {
        "masquerade"
    } else if e.flags & flags::DNAT != 0 {
        "published"
    } else {
        "local"
    };
    let timeout = t.for_state(e.rewrite.proto, e.state) as u64;
    let idle = now.saturating_sub(e.last_seen) / 1_000_000_000;
    Some(Flow {
        proto: proto_name(k.proto),
        original: tuple(k),
        translated: tuple(&e.rewrite),
        reply: tuple(&e.twin),
        state: ct_state::name(e.state).into(),
        kind: kind.into(),
        age_s: now.saturating_sub(e.created) / 1_000_000_000,
        expires_in_s: timeout.saturating_sub(idle),
        src_identity: e.src_identity,
        dst_identity: e.dst_identity,
    })
}

/// Deletes expired conntrack entries (the datapath already ignores them). Returns the count.
pub fn gc(ctx: &Ctx) -> Result<usize> {
    let t = maps::read_config(&ctx.inst)?
        .map(|c| c.timeouts)
        .unwrap_or_default();
    let now = monotonic_ns();
    let v4 = container::purge_conntrack(ctx, |_, e| e.expired(now, &t))?;
    let v6 = container::purge_conntrack6(ctx, |_, e| e.expired(now, &t))?;
    Ok(v4 + v6)
}

#[derive(Debug, Serialize)]
pub struct MonitorEvent {
    pub kind: &'static str,
    pub reason: String,
    pub hook: String,
    pub ifindex: u32,
    pub proto: String,
    pub flow: String,
}

impl MonitorEvent {
    /// The event in a ring-buffer record, whichever family's (None: not a record we know).
    fn decode(item: &[u8]) -> Option<(u64, Self)> {
        let kind = u16::from_ne_bytes(item.get(KIND_OFFSET..KIND_OFFSET + 2)?.try_into().ok()?);
        fn read<T: bytemuck::Pod>(item: &[u8]) -> Option<T> {
            Some(bytemuck::pod_read_unaligned(
                item.get(..std::mem::size_of::<T>())?,
            ))
        }
        match kind {
            KIND_DROP => read::<DropEvent>(item).map(|e| (e.ts_ns, Self::from(&e))),
            KIND_DROP6 => read::<Event6>(item).map(|e| (e.ts_ns, Self::from(&e))),
            _ => None,
        }
    }

    fn from<A: Shown>(e: &EventOf<A>) -> Self {
        Self {
            kind: "drop",
            reason: DropReason::from_u32(e.reason as u32)
                .map(|r| r.name().to_string())
                .unwrap_or_else(|| e.reason.to_string()),
            hook: Hook::from_u32(e.hook as u32)
                .map(|h| h.name().to_string())
                .unwrap_or_else(|| e.hook.to_string()),
            ifindex: e.ifindex,
            proto: proto_name(e.flow.proto),
            flow: tuple(&e.flow),
        }
    }
}

/// Streams datapath events until `count` events were seen or `duration` elapsed (forever when
/// both are None) or Ctrl-C; `emit` prints each.
pub async fn monitor(
    ctx: &Ctx,
    count: Option<u64>,
    duration: Option<Duration>,
    mut emit: impl FnMut(&MonitorEvent),
) -> Result<u64> {
    // The ring buffer has a single consumer position: two readers would both print the same
    // records, and the first to exit would clear the flag under the other. One at a time.
    let _listener = listener_lock(ctx)?;
    let mut rb = maps::events(&ctx.inst)?;
    // SIGTERM (`timeout`, service managers) and SIGHUP end it as cleanly as Ctrl-C, so the flag
    // is cleared; only SIGKILL cannot be caught.
    let mut term = unix_signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = unix_signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut cfg = maps::read_config(&ctx.inst)?
        .ok_or_else(|| crate::Error::NotInitialised(ctx.inst.state_dir.clone()))?;
    // Records older than this were written while nobody listened (a monitor that was killed
    // left the flag set): not news, skip them.
    let since_ns = monotonic_ns();
    cfg.flags |= cfg_flags::EVENTS;
    maps::write_config(&ctx.inst, &cfg)?;
    let start = Instant::now();
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        while let Some(item) = rb.next() {
            if let Some((ts_ns, ev)) = MonitorEvent::decode(&item) {
                if ts_ns < since_ns {
                    continue;
                }
                emit(&ev);
                seen += 1;
            }
            if count.is_some_and(|c| seen >= c) {
                break;
            }
        }
        if count.is_some_and(|c| seen >= c) || duration.is_some_and(|d| start.elapsed() >= d) {
            break Ok(seen);
        }
        tokio::select! {
            _ = &mut ctrl_c => break Ok(seen),
            _ = term.recv() => break Ok(seen),
            _ = hup.recv() => break Ok(seen),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    if let Ok(Some(mut c)) = maps::read_config(&ctx.inst) {
        c.flags &= !cfg_flags::EVENTS;
        maps::write_config(&ctx.inst, &c)?;
    }
    result
}

fn unix_signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| crate::Error::Other(anyhow::anyhow!("installing a signal handler: {e}")))
}

/// The exclusive "a monitor listens" lock (`<state-dir>/monitor.lock`), released when the
/// monitor exits or dies.
fn listener_lock(ctx: &Ctx) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = ctx.inst.state_dir.join("monitor.lock");
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| crate::Error::Other(anyhow::anyhow!("opening {}: {e}", path.display())))?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(crate::Error::conflict(format!(
            "another `control monitor` is already listening on {}: events have one reader at a time",
            ctx.inst.state_dir.display()
        )));
    }
    Ok(f)
}

/// Flushes tracked flows, all or those of one container.
pub fn flush(ctx: &Ctx, st: &State, container: Option<&str>) -> Result<usize> {
    match container {
        None => Ok(container::purge_conntrack(ctx, |_, _| true)?
            + container::purge_conntrack6(ctx, |_, _| true)?),
        Some(n) => {
            let records = st.answering_some(n)?;
            let ips: Vec<u32> = records
                .iter()
                .filter_map(|r| st.containers[*r].ip.map(weir_common::addr::from_std))
                .collect();
            let ips6: Vec<[u32; 4]> = records
                .iter()
                .filter_map(|r| st.containers[*r].ip6.map(weir_common::addr::from_std6))
                .collect();
            let v4 = container::purge_conntrack(ctx, |k, _| {
                ips.contains(&k.saddr) || ips.contains(&k.daddr)
            })?;
            let v6 = container::purge_conntrack6(ctx, |k, _| {
                ips6.contains(&k.saddr) || ips6.contains(&k.daddr)
            })?;
            Ok(v4 + v6)
        }
    }
}

/// Container links whose MTU or GSO sizes are not what their network and the instance's BIG
/// TCP setting give: one line for each kind.
async fn shape_problems(ctx: &Ctx, st: &State) -> Result<Vec<String>> {
    let stale = super::shape::out_of_step(ctx, st).await?;
    let mut problems = Vec::new();
    let (mtu, gso): (Vec<_>, Vec<_>) = stale.iter().partition(|s| s.mtu_differs);
    if let Some(s) = mtu.first() {
        let whose = match st.networks.get(&s.container.network).and_then(|n| n.mtu) {
            Some(m) if m == s.want.mtu => "their network's",
            _ => "the uplink's",
        };
        problems.push(format!(
            "{} container link(s) (e.g. {}) do not have {whose} MTU {}: run `control init` to follow",
            mtu.len(),
            s.name,
            s.want.mtu
        ));
    }
    if let Some(s) = gso.first() {
        problems.push(format!(
            "{} container link(s) (e.g. {}) do not have the GSO sizes BIG TCP {} gives (IPv4 {}, IPv6 {}): run `control init` to follow",
            gso.len(),
            s.name,
            st.settings.big_tcp.name(),
            s.want.gso.v4,
            s.want.gso.v6
        ));
    }
    Ok(problems)
}
