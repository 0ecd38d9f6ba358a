//! TCP throughput (iperf3, 1 and 2 streams) on the three paths.

use anyhow::Result;

use super::{Family, Outcome, Path, Runner, Topos};
use crate::{results::Workload, tools};

pub fn run(r: &mut Runner, topos: &mut Topos, f: Family) -> Result<Workload> {
    let secs = r.plan.iperf_secs;
    let (id, title) = f.workload("throughput", "TCP throughput");
    let method = match f {
        Family::V4 => format!(
            "iperf3 -t {secs} (client sends, receiver's rate), 1 and 2 parallel streams. \
             container→container: client container to the server container's address; \
             container→ext: client container to ext (198.18.0.2) through MASQUERADE; \
             ext→published port: ext to the host's uplink address, port 5201 published to the \
             server container (DNAT). The veth topology reaches the server directly (no NAT)."
        ),
        Family::V6 => format!(
            "The same iperf3 -t {secs} runs over IPv6: container→container fd00:99::2 → \
             fd00:99::3; container→ext to 2001:db8:18::2 through NAT66 MASQUERADE; \
             ext→published port to the host's uplink address 2001:db8:18::1 (DNAT). iptables \
             here is the same bridge with Docker 27's ip6tables rules; veth routes without NAT."
        ),
    };
    let mut w = Workload::new(id, title, "Gbit/s", true, method);
    r.heading(&format!("{title} (iperf3)"));
    for path in Path::ALL {
        for streams in [1u32, 2] {
            let case = format!(
                "{}, {streams} stream{}",
                path.name(),
                if streams > 1 { "s" } else { "" }
            );
            r.interleave(&mut w, topos, &[case], r.plan.samples, |t| {
                if let Some(na) = f.missing(t) {
                    return Ok(na);
                }
                let (client, addr) = path.ends(t, f);
                Ok(Outcome::Values(vec![tools::iperf(
                    client, &addr, secs, streams,
                )?]))
            })?;
        }
    }
    Ok(w)
}
