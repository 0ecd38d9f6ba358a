//! `control metrics`: one read of everything an operator graphs — the datapath's counters,
//! conntrack and SNAT occupancy, and per-container traffic and drops — for the Prometheus
//! encoder in [`crate::prometheus`].

use std::collections::BTreeMap;

use weir_common::{
    addr::{port_host, to_std},
    conntrack::{CtEntry, FlowKey, flags},
};

use super::{
    Ctx, container,
    inspect::{self, Stats, monotonic_ns},
};
use crate::{
    datapath::maps,
    error::Result,
    netlink::{self, LinkCounters},
    netns,
    state::{self, State},
};

/// How many destinations the SNAT gauge names: the busiest ones are those that run out.
pub const SNAT_TOP: usize = 20;

#[derive(Debug, Default)]
pub struct Snapshot {
    pub stats: Stats,
    /// Conntrack entries not yet expired (two per flow), and the table's size.
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
    /// Ports one destination can take (the SNAT range's size) and the busiest destinations.
    pub snat_capacity: u32,
    pub snat_destinations: usize,
    pub snat_busiest: Vec<SnatUse>,
    pub containers: Vec<ContainerMetrics>,
}

/// Masqueraded flows to one destination: each holds one port of the range, and the range is
/// per destination (address, port, protocol), as with the kernel's MASQUERADE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatUse {
    pub destination: String,
    pub proto: &'static str,
    pub ports: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerMetrics {
    pub name: String,
    pub network: String,
    /// The kernel's counters of the container's own interface: tx is what it sent, rx what
    /// it received.
    pub own: Option<LinkCounters>,
    /// Packets and bytes of this container's that the datapath dropped (either direction).
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

pub async fn snapshot(ctx: &Ctx) -> Result<Snapshot> {
    let st = state::load_required(&ctx.inst)?;
    let cfg = maps::read_config(&ctx.inst)?.unwrap_or_default();
    let now = monotonic_ns();
    let live: Vec<(FlowKey, CtEntry)> = maps::conntrack_entries(&ctx.inst)?
        .into_iter()
        .filter(|(_, e)| !e.expired(now, &cfg.timeouts))
        .collect();
    let snat = snat_use(&live);
    Ok(Snapshot {
        stats: inspect::stats(ctx)?,
        conntrack_entries: live.len(),
        conntrack_capacity: st.settings.conntrack_max,
        snat_capacity: u32::from(cfg.snat_port_max.saturating_sub(cfg.snat_port_min)) + 1,
        snat_destinations: snat.len(),
        snat_busiest: snat.into_iter().take(SNAT_TOP).collect(),
        containers: containers(ctx, &st).await?,
    })
}

/// Masqueraded flows per destination, busiest first.
fn snat_use(live: &[(FlowKey, CtEntry)]) -> Vec<SnatUse> {
    let mut per: BTreeMap<(u32, u16, u8), usize> = BTreeMap::new();
    for (_, e) in live {
        // One original-direction entry per masqueraded flow; its rewrite holds the port.
        if e.flags & flags::SNAT != 0 && !e.is_reply() {
            let r = &e.rewrite;
            *per.entry((r.daddr, r.dport, r.proto)).or_default() += 1;
        }
    }
    let mut v: Vec<SnatUse> = per
        .into_iter()
        .map(|((addr, port, proto), ports)| SnatUse {
            destination: match proto {
                6 | 17 => format!("{}:{}", to_std(addr), port_host(port)),
                _ => to_std(addr).to_string(),
            },
            proto: proto_label(proto),
            ports,
        })
        .collect();
    v.sort_by(|a, b| {
        b.ports
            .cmp(&a.ports)
            .then(a.destination.cmp(&b.destination))
    });
    v
}

async fn containers(ctx: &Ctx, st: &State) -> Result<Vec<ContainerMetrics>> {
    // The host sides name their peers: the containers' own interfaces, whatever the runtime
    // renamed them to.
    let peers: BTreeMap<u32, u32> = netlink::links(&ctx.nl)
        .await?
        .into_iter()
        .filter_map(|l| Some((l.index, l.peer?)))
        .collect();
    let drops = maps::link_drops(&ctx.inst)?;
    let mut v = Vec::with_capacity(st.containers.len());
    for (name, c) in &st.containers {
        let (dropped_packets, dropped_bytes) = drops
            .get(&c.host_ifindex, 0)
            .map(|v| {
                v.iter()
                    .fold((0, 0), |(p, b), x| (p + x.packets, b + x.bytes))
            })
            .unwrap_or_default();
        let own = match peers.get(&c.host_ifindex) {
            Some(&peer) => own_counters(&container::netns_path(name, c), peer),
            None => None,
        };
        v.push(ContainerMetrics {
            name: name.clone(),
            network: c.network.clone(),
            own,
            dropped_packets,
            dropped_bytes,
        });
    }
    Ok(v)
}

/// The counters of interface `index` inside the namespace at `ns`: the container's side
/// counts what `bpf_redirect_peer` delivered (the host side's tx never sees it). None when
/// the namespace is gone or the runtime's (not reachable by path).
fn own_counters(ns: &std::path::Path, index: u32) -> Option<LinkCounters> {
    if !ns.exists() {
        return None;
    }
    netns::run_async_in(ns, || async move {
        let h = netlink::connect()?;
        Ok(netlink::link_by_index(&h, index)
            .await?
            .and_then(|l| l.counters))
    })
    .ok()
    .flatten()
}

fn proto_label(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}
