//! Container links follow the uplink's MTU, or their network's lower one (`--mtu`).
//!
//! Containers get that MTU when they are created, so that what they send fits the uplink and
//! the datapath never has to fragment. When the uplink's MTU changes later, the containers'
//! stay larger: their packets then take the too-big path (handed to the host stack for
//! "fragmentation needed"), every TCP flow discovers the path MTU the slow way, and UDP
//! without DF is dropped. `control init` brings them back in line.

use super::{Ctx, container};
use crate::{
    error::Result,
    netlink, netns,
    state::{Container, Network, State},
};

/// The uplink's MTU (None while the uplink is gone).
pub async fn uplink(ctx: &Ctx, st: &State) -> Result<Option<u32>> {
    Ok(netlink::link_by_index(&ctx.nl, st.uplink.ifindex)
        .await?
        .and_then(|l| l.mtu))
}

/// The MTU a network's containers get: the uplink's, or the network's own where lower.
pub fn target(net: &Network, uplink: u32) -> u32 {
    net.mtu.map_or(uplink, |m| m.min(uplink))
}

/// The MTU of a container created on `net` now.
pub async fn of_network(ctx: &Ctx, st: &State, net: &Network) -> Result<u32> {
    Ok(target(net, uplink(ctx, st).await?.unwrap_or(1500)))
}

/// A ready container whose link differs from its network's MTU: name, container, host-end
/// ifindex and the MTU it should have.
pub type Stale<'a> = (&'a String, &'a Container, u32, u32);

/// The ready containers whose host end differs from the MTU they should have. A container
/// whose host end is gone is left to `status`.
pub async fn out_of_step<'a>(ctx: &Ctx, st: &'a State) -> Result<Vec<Stale<'a>>> {
    let Some(up) = uplink(ctx, st).await? else {
        return Ok(Vec::new());
    };
    let mut stale = Vec::new();
    for (name, c) in st.containers.iter().filter(|(_, c)| c.phase.is_wired()) {
        let Some(net) = st.networks.get(&c.network) else {
            continue;
        };
        let mtu = target(net, up);
        if let Some(host) = netlink::link_by_name(&ctx.nl, &c.host_if).await?
            && host.mtu != Some(mtu)
        {
            stale.push((name, c, host.index, mtu));
        }
    }
    Ok(stale)
}

/// Sets the MTU each ready container should have on both ends of its veth where it differs;
/// returns how many changed. A container whose namespace is gone is left to `status`.
pub async fn resync(ctx: &Ctx, st: &State) -> Result<usize> {
    let stale = out_of_step(ctx, st).await?;
    let mut changed = 0;
    for (name, c, host_index, mtu) in stale {
        let ns = container::netns_path(name, c);
        if !ns.exists() {
            continue;
        }
        // Inside first: until the host end follows, the container's larger packets still
        // reach the datapath, which hands the DF ones to the host stack for the error.
        let ifname = c.cni_ifname.clone().unwrap_or_else(|| "eth0".into());
        netns::run_async_in(&ns, move || async move {
            let h = netlink::connect()?;
            if let Some(l) = netlink::link_by_name(&h, &ifname).await? {
                netlink::set_mtu(&h, l.index, mtu).await?;
            }
            Ok(())
        })?;
        netlink::set_mtu(&ctx.nl, host_index, mtu).await?;
        changed += 1;
    }
    Ok(changed)
}
