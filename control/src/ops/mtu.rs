//! Container links follow the uplink's MTU.
//!
//! Containers get the uplink's MTU when they are created, so that what they send fits the
//! uplink and the datapath never has to fragment. When the uplink's MTU changes later, the
//! containers' stay larger: their packets then take the too-big path (handed to the host
//! stack for "fragmentation needed"), every TCP flow discovers the path MTU the slow way, and
//! UDP without DF is dropped. `control init` brings them back in line.

use super::{Ctx, container};
use crate::{
    error::Result,
    netlink, netns,
    state::{Container, State},
};

/// The uplink's MTU and the ready containers whose host end differs from it (name, container,
/// host-end ifindex). A container whose host end is gone is left to `status`.
pub async fn out_of_step<'a>(
    ctx: &Ctx,
    st: &'a State,
) -> Result<(u32, Vec<(&'a String, &'a Container, u32)>)> {
    let Some(mtu) = netlink::link_by_index(&ctx.nl, st.uplink.ifindex)
        .await?
        .and_then(|l| l.mtu)
    else {
        return Ok((0, Vec::new()));
    };
    let mut stale = Vec::new();
    for (name, c) in st.containers.iter().filter(|(_, c)| c.phase.is_wired()) {
        if let Some(host) = netlink::link_by_name(&ctx.nl, &c.host_if).await?
            && host.mtu != Some(mtu)
        {
            stale.push((name, c, host.index));
        }
    }
    Ok((mtu, stale))
}

/// Sets the uplink's MTU on both ends of every ready container's veth that differs from it;
/// returns how many changed. A container whose namespace is gone is left to `status`.
pub async fn resync(ctx: &Ctx, st: &State) -> Result<usize> {
    let (mtu, stale) = out_of_step(ctx, st).await?;
    let mut changed = 0;
    for (name, c, host_index) in stale {
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
