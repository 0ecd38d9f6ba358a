//! A [`Snapshot`] in the Prometheus text exposition format 0.0.4 (`prometheus` crate), the
//! format promtool and node-exporter's textfile collector read. Every series exists from the
//! first scrape — drop reasons that never happened are 0, not absent — so `rate()` sees a
//! series' first increase.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use weir_common::stats::{DropReason, Hook};

use crate::ops::metrics::Snapshot;

type Labels = Vec<(&'static str, String)>;

/// One metric family: a counter or a gauge, one value per label set.
fn family(
    reg: &Registry,
    name: &str,
    help: &str,
    counter: bool,
    rows: &[(Labels, u64)],
) -> prometheus::Result<()> {
    let keys: Vec<&str> = rows
        .first()
        .map_or(Vec::new(), |(l, _)| l.iter().map(|(k, _)| *k).collect());
    if counter {
        let f = IntCounterVec::new(Opts::new(name, help), &keys)?;
        for (l, v) in rows {
            f.with_label_values(&label_values(l)).inc_by(*v);
        }
        reg.register(Box::new(f))
    } else {
        let f = IntGaugeVec::new(Opts::new(name, help), &keys)?;
        for (l, v) in rows {
            f.with_label_values(&label_values(l))
                .set(i64::try_from(*v).unwrap_or(i64::MAX));
        }
        reg.register(Box::new(f))
    }
}

fn label_values(l: &Labels) -> Vec<&str> {
    l.iter().map(|(_, v)| v.as_str()).collect()
}

fn one(v: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), v)]
}

/// The datapath's own counters (`control stats`).
fn datapath(reg: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    let paths = |f: fn(&crate::ops::inspect::Counter2) -> u64| -> Vec<(Labels, u64)> {
        s.stats
            .paths
            .iter()
            .map(|(p, c)| (vec![("path", p.clone())], f(c)))
            .collect()
    };
    let help = "Packets forwarded, per path";
    family(
        reg,
        "weir_path_packets_total",
        help,
        true,
        &paths(|c| c.packets),
    )?;
    let help = "Bytes forwarded, per path";
    family(
        reg,
        "weir_path_bytes_total",
        help,
        true,
        &paths(|c| c.bytes),
    )?;
    let events: Vec<(Labels, u64)> = s
        .stats
        .events
        .iter()
        .map(|(e, n)| (vec![("event", e.clone())], *n))
        .collect();
    family(
        reg,
        "weir_nat_events_total",
        "NAT and conntrack events",
        true,
        &events,
    )?;
    let mut drops = Vec::new();
    for r in DropReason::ALL {
        let by_hook = s.stats.drops.get(r.name());
        for h in Hook::ALL {
            let n = by_hook.and_then(|m| m.get(h.name())).copied().unwrap_or(0);
            drops.push((
                vec![("reason", r.name().into()), ("hook", h.name().into())],
                n,
            ));
        }
    }
    let help = "Packets dropped, per reason and hook";
    family(reg, "weir_drops_total", help, true, &drops)
}

/// How full the tables are.
fn occupancy(reg: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    let ct = s.conntrack_entries as u64;
    let help = "Conntrack entries in use (two per flow, expired ones not counted)";
    family(reg, "weir_conntrack_entries", help, false, &one(ct))?;
    let cap = u64::from(s.conntrack_capacity);
    let help = "Conntrack entries the table holds";
    family(reg, "weir_conntrack_capacity", help, false, &one(cap))?;
    let help = "SNAT ports one destination (address, port, protocol) can take";
    let cap = u64::from(s.snat_capacity);
    family(reg, "weir_snat_ports_capacity", help, false, &one(cap))?;
    let help = "Destinations with masqueraded flows";
    let n = s.snat_destinations as u64;
    family(reg, "weir_snat_destinations", help, false, &one(n))?;
    let busiest: Vec<(Labels, u64)> = s
        .snat_busiest
        .iter()
        .map(|u| {
            let l = vec![
                ("destination", u.destination.clone()),
                ("proto", u.proto.into()),
            ];
            (l, u.ports as u64)
        })
        .collect();
    let help = "SNAT ports in use towards the busiest destinations (at most 20 series)";
    family(reg, "weir_snat_ports_in_use", help, false, &busiest)
}

/// Per container, to find a noisy one.
fn containers(reg: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    type Pick = fn(&crate::ops::metrics::ContainerMetrics) -> Option<u64>;
    let series: [(&str, &str, Pick); 6] = [
        (
            "weir_container_sent_packets_total",
            "Packets the container sent",
            |c| c.own.map(|v| v.tx_packets),
        ),
        (
            "weir_container_sent_bytes_total",
            "Bytes the container sent",
            |c| c.own.map(|v| v.tx_bytes),
        ),
        (
            "weir_container_received_packets_total",
            "Packets delivered to the container",
            |c| c.own.map(|v| v.rx_packets),
        ),
        (
            "weir_container_received_bytes_total",
            "Bytes delivered to the container",
            |c| c.own.map(|v| v.rx_bytes),
        ),
        (
            "weir_container_dropped_packets_total",
            "The container's packets Weir dropped",
            |c| Some(c.dropped_packets),
        ),
        (
            "weir_container_dropped_bytes_total",
            "The container's bytes Weir dropped",
            |c| Some(c.dropped_bytes),
        ),
    ];
    for (name, help, pick) in series {
        let rows: Vec<(Labels, u64)> = s
            .containers
            .iter()
            .filter_map(|c| {
                let l = vec![
                    ("container", c.name.clone()),
                    ("network", c.network.clone()),
                ];
                Some((l, pick(c)?))
            })
            .collect();
        family(reg, name, help, true, &rows)?;
    }
    Ok(())
}

/// The text exposition of `s`.
pub fn encode(s: Snapshot) -> String {
    let reg = Registry::new();
    let built = datapath(&reg, &s)
        .and_then(|()| occupancy(&reg, &s))
        .and_then(|()| containers(&reg, &s));
    // Names and labels are this module's constants: a clash is a bug here, not bad input.
    built.expect("metric families are well-formed");
    TextEncoder::new()
        .encode_to_string(&reg.gather())
        .expect("writing to a String cannot fail")
}
