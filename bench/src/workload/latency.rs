//! Latency (sockperf ping-pong, TCP and UDP, p50 and p99) on the three paths.

use std::{collections::HashMap, time::Duration};

use anyhow::Result;

use super::{Family, Outcome, Path, Runner, Topos};
use crate::{results::Workload, tools};

pub fn run(r: &mut Runner, topos: &mut Topos, f: Family) -> Result<Workload> {
    let secs = r.plan.sockperf_secs;
    let (id, title) = f.workload("latency", "Latency (sockperf ping-pong)");
    let method = match f {
        Family::V6 => format!(
            "Ping-pong over IPv6, 64-byte messages, {secs} s after a 400 ms warm-up, half the \
             round trip, pinned to one CPU like the IPv4 rows — but measured by the bench's own \
             client and echo server (`bench __pingpong`), because Debian's sockperf 3.7 has no \
             IPv6: compare ratios, not absolute figures with the IPv4 table. Same paths over \
             IPv6 (NAT66, DNAT to the host's IPv6 address; iptables = Docker's ip6tables rules)."
        ),
        Family::V4 => format!(
            "sockperf ping-pong, 64-byte messages, {secs} s after sockperf's 400 ms warm-up; \
             sockperf reports half the round trip. Client and server are pinned to one CPU: on \
             this VM a wake-up across CPUs costs ~30 µs and made the figures bimodal \
             (2 µs or 35 µs by scheduler luck). Same paths and addresses as throughput \
             (UDP through a published UDP port for ext→published)."
        ),
    };
    let mut w = Workload::new(id, title, "µs", false, method);
    r.heading(&match f {
        Family::V4 => "latency (sockperf ping-pong)".to_string(),
        Family::V6 => title.to_string(),
    });
    for path in Path::ALL {
        for (proto, tcp) in [("TCP", true), ("UDP", false)] {
            let cases = [
                format!("{}, {proto} p50", path.name()),
                format!("{}, {proto} p99", path.name()),
            ];
            // Quick runs check that every path works, not speed: all topologies at once.
            let mut early: HashMap<&str, Result<(f64, f64)>> = HashMap::new();
            if r.plan.quick {
                let running: Vec<_> = topos
                    .iter()
                    .filter(|t| f.missing(t.as_ref()).is_none())
                    .map(|t| {
                        let (client, addr) = path.ends(t.as_ref(), f);
                        (t.label(), tools::sockperf_spawn(client, &addr, secs, tcp))
                    })
                    .collect();
                for (label, bg) in running {
                    let o = bg.finish_within(Duration::from_secs(u64::from(secs) + 15));
                    early.insert(label, tools::sockperf_result(&o));
                }
            }
            r.interleave(&mut w, topos, &cases, r.plan.samples, |t| {
                if let Some(na) = f.missing(t) {
                    return Ok(na);
                }
                let (p50, p99) = match early.remove(t.label()) {
                    Some(res) => res?,
                    None => {
                        let (client, addr) = path.ends(t, f);
                        tools::sockperf(client, &addr, secs, tcp)?
                    }
                };
                Ok(Outcome::Values(vec![p50, p99]))
            })?;
        }
    }
    Ok(w)
}
