//! TCP throughput (iperf3, 1 and 2 streams) on the three paths.

use anyhow::Result;

use super::{Outcome, Path, Runner, Topos};
use crate::{results::Workload, tools};

pub fn run(r: &mut Runner, topos: &mut Topos) -> Result<Workload> {
    let secs = r.plan.iperf_secs;
    let mut w = Workload::new(
        "throughput",
        "TCP throughput",
        "Gbit/s",
        true,
        format!(
            "iperf3 -t {secs} (client sends, receiver's rate), 1 and 2 parallel streams. \
             container→container: client container to the server container's address; \
             container→ext: client container to ext (198.18.0.2) through MASQUERADE; \
             ext→published port: ext to the host's uplink address, port 5201 published to the \
             server container (DNAT). The veth topology reaches the server directly (no NAT)."
        ),
    );
    r.heading("TCP throughput (iperf3)");
    for path in Path::ALL {
        for streams in [1u32, 2] {
            let case = format!(
                "{}, {streams} stream{}",
                path.name(),
                if streams > 1 { "s" } else { "" }
            );
            r.interleave(&mut w, topos, &[case], r.plan.samples, |t| {
                let (client, addr) = path.ends(t);
                Ok(Outcome::Values(vec![tools::iperf(
                    client, &addr, secs, streams,
                )?]))
            })?;
        }
    }
    Ok(w)
}
