//! Small packets: the rate of 64-byte UDP packets forwarded through DNAT, and the rate at
//! which world traffic to an unpublished container address is dropped (Weir's XDP and TC
//! programs vs. Docker's raw-table DROP).

use std::path::Path;

use anyhow::Result;

use super::{Outcome, Runner, Topos};
use crate::{
    results::Workload,
    tools,
    topo::{SERVER_IP, port, weir::Weir},
};

pub fn dnat(r: &mut Runner, topos: &mut Topos) -> Result<Workload> {
    let secs = r.plan.blast.as_secs_f64();
    let mut w = Workload::new(
        "packets-dnat",
        "64-byte UDP packets through a published port",
        "Mpps",
        true,
        format!(
            "The bench's sendmmsg flood (2 threads, 18-byte payloads = 64-byte frames) from ext \
             to the published UDP port 9000 for {secs:.1} s; forwarded = packets arriving on the \
             server container's eth0 (/proc/net/dev), where a socket that never reads holds \
             the port. Sender and forwarding share the 2 CPUs, so the offered load also shows \
             how much CPU each packet costs the host."
        ),
    );
    r.heading("small packets through DNAT (UDP flood)");
    let cases = [
        "forwarded into the container".to_string(),
        "offered by the flood".to_string(),
    ];
    let length = r.plan.blast;
    r.interleave(&mut w, topos, &cases, r.plan.samples, |t| {
        let before = tools::rx_packets(t.server(), "eth0")?;
        let sent = tools::udp_flood(t.ext(), t.published_addr(), port::SINK, length)?;
        let after = tools::rx_packets(t.server(), "eth0")?;
        Ok(Outcome::Values(vec![
            (after - before) as f64 / secs / 1e6,
            sent as f64 / secs / 1e6,
        ]))
    })?;
    Ok(w)
}

pub fn drops(r: &mut Runner, topos: &mut Topos, control: &Path) -> Result<Workload> {
    let secs = r.plan.blast.as_secs_f64();
    let mut w = Workload::new(
        "packets-drop",
        "Dropping world traffic to an unpublished container address",
        "Mpps",
        true,
        format!(
            "The same flood from ext for {secs:.1} s, aimed at the server container's own \
             address (10.99.0.3:9, nothing published): traffic both Weir and Docker 28 refuse. \
             weir-xdp: `control init --xdp on` (uplink_xdp drops it before an skb exists; a \
             separate instance, since native XDP on a veth slows TCP on its peer); weir: \
             uplink_tc drops it; iptables: Docker's raw PREROUTING `-d <container> ! -i br0 -j \
             DROP`. Dropped = the drop counters (`control stats --json` not-published; the raw \
             rules' packet counters) over the flood. The primary ratio here is weir-xdp's."
        ),
    );
    w.primary = "weir-xdp";
    r.heading("dropping denied traffic (UDP flood to an unpublished container address)");
    r.note("building a Weir instance with XDP on its uplink");
    topos.insert(0, Box::new(Weir::build(control, true)?));
    let cases = ["dropped".to_string(), "offered by the flood".to_string()];
    let length = r.plan.blast;
    let res = r.interleave(&mut w, topos, &cases, r.plan.samples, |t| {
        let Some(before) = t.direct_drops()? else {
            return Ok(Outcome::NotApplicable(
                "has no filter for world traffic to container addresses",
            ));
        };
        let sent = tools::udp_flood(t.ext(), SERVER_IP, port::UNPUBLISHED, length)?;
        let after = t.direct_drops()?.unwrap_or(before);
        Ok(Outcome::Values(vec![
            (after - before) as f64 / secs / 1e6,
            sent as f64 / secs / 1e6,
        ]))
    });
    topos.remove(0);
    res?;
    Ok(w)
}
