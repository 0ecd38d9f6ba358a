//! Latency (sockperf ping-pong, TCP and UDP, p50 and p99) on the three paths.

use std::{collections::HashMap, time::Duration};

use anyhow::Result;

use super::{Outcome, Path, Runner, Topos};
use crate::{results::Workload, tools};

pub fn run(r: &mut Runner, topos: &mut Topos) -> Result<Workload> {
    let secs = r.plan.sockperf_secs;
    let mut w = Workload::new(
        "latency",
        "Latency (sockperf ping-pong)",
        "µs",
        false,
        format!(
            "sockperf ping-pong, 64-byte messages, {secs} s after sockperf's 400 ms warm-up; \
             sockperf reports half the round trip. Client and server are pinned to one CPU: on \
             this VM a wake-up across CPUs costs ~30 µs and made the figures bimodal \
             (2 µs or 35 µs by scheduler luck). Same paths and addresses as throughput \
             (UDP through a published UDP port for ext→published)."
        ),
    );
    r.heading("latency (sockperf ping-pong)");
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
                    .map(|t| {
                        let (client, addr) = path.ends(t.as_ref());
                        (t.label(), tools::sockperf_spawn(client, &addr, secs, tcp))
                    })
                    .collect();
                for (label, bg) in running {
                    let o = bg.finish_within(Duration::from_secs(u64::from(secs) + 15));
                    early.insert(label, tools::sockperf_result(&o));
                }
            }
            r.interleave(&mut w, topos, &cases, r.plan.samples, |t| {
                let (p50, p99) = match early.remove(t.label()) {
                    Some(res) => res?,
                    None => {
                        let (client, addr) = path.ends(t);
                        tools::sockperf(client, &addr, secs, tcp)?
                    }
                };
                Ok(Outcome::Values(vec![p50, p99]))
            })?;
        }
    }
    Ok(w)
}
