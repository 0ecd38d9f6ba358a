//! Container links follow the uplink: its MTU (or their network's lower one, `--mtu`), and
//! its GSO sizes (BIG TCP, `control init --big-tcp`).
//!
//! Containers get that MTU when they are created, so that what they send fits the uplink and
//! the datapath never has to fragment. When the uplink's MTU changes later, the containers'
//! stay larger: their packets then take the too-big path (handed to the host stack for
//! "fragmentation needed"), every TCP flow discovers the path MTU the slow way, and UDP
//! without DF is dropped. `control init` brings them back in line.
//!
//! GSO: a container's TCP builds packets as large as its own link allows. Past 64 KiB (BIG
//! TCP) that saves work per byte between containers, but an uplink that takes no more than
//! 64 KiB has every such packet to the world segmented in software instead of by TSO, so by
//! default (`auto`) containers take what the uplink takes, capped at [`BIG_TCP`].

use super::{Ctx, container};
use crate::{
    error::Result,
    netlink::{self, GSO_LEGACY, Gso, Shape},
    netns,
    state::{BigTcp, Container, Network, State},
};

/// The GSO size of BIG TCP links: the size Linux's BIG TCP work was measured at (185,000
/// bytes; its hard limit is 512 KiB).
pub const BIG_TCP: u32 = 185_000;

/// The uplink's MTU and GSO sizes (None while the uplink is gone).
pub async fn uplink(ctx: &Ctx, st: &State) -> Result<Option<(u32, Gso<u32>)>> {
    Ok(netlink::link_by_index(&ctx.nl, st.uplink.ifindex)
        .await?
        .and_then(|l| {
            let v6 = l.gso.v6.unwrap_or(GSO_LEGACY);
            let gso = Gso {
                v4: l.gso.v4.unwrap_or(v6),
                v6,
            };
            l.mtu.map(|m| (m, gso))
        }))
}

/// The uplink's MTU alone.
pub async fn uplink_mtu(ctx: &Ctx, st: &State) -> Result<Option<u32>> {
    Ok(uplink(ctx, st).await?.map(|(m, _)| m))
}

/// The GSO size of one family's container links under `mode`, given the uplink's.
pub fn gso_size(mode: BigTcp, uplink: u32) -> u32 {
    match mode {
        BigTcp::Off => GSO_LEGACY,
        BigTcp::On => BIG_TCP,
        BigTcp::Auto => uplink.clamp(GSO_LEGACY, BIG_TCP),
    }
}

/// Both families' GSO sizes of container links under `mode`, given the uplink's.
pub fn gso(mode: BigTcp, uplink: Gso<u32>) -> Gso<u32> {
    Gso {
        v4: gso_size(mode, uplink.v4),
        v6: gso_size(mode, uplink.v6),
    }
}

/// The shape a network's containers get: the uplink's MTU, or the network's own where
/// lower; GSO sizes after the instance's BIG TCP setting.
pub fn target(net: &Network, mode: BigTcp, uplink: (u32, Gso<u32>)) -> Shape {
    let (mtu, up) = uplink;
    Shape {
        mtu: net.mtu.map_or(mtu, |m| m.min(mtu)),
        gso: gso(mode, up),
    }
}

/// What an uplink that cannot be read is taken to have.
pub const FALLBACK: (u32, Gso<u32>) = (
    1500,
    Gso {
        v4: GSO_LEGACY,
        v6: GSO_LEGACY,
    },
);

/// The shape of a container created on `net` now.
pub async fn of_network(ctx: &Ctx, st: &State, net: &Network) -> Result<Shape> {
    let up = uplink(ctx, st).await?.unwrap_or(FALLBACK);
    Ok(target(net, st.settings.big_tcp, up))
}

/// A ready container whose link differs from the shape it should have.
pub struct Stale<'a> {
    pub name: &'a String,
    pub container: &'a Container,
    /// The host end's ifindex, and the container end's in the container's namespace.
    pub host_index: u32,
    pub peer_index: Option<u32>,
    pub want: Shape,
    /// Whether the MTU is what differs (else a GSO size).
    pub mtu_differs: bool,
}

/// The ready containers whose host end differs from the shape they should have. A container
/// whose host end is gone is left to `status`. A kernel that does not report a GSO size is
/// taken at its word for the one it was given.
pub async fn out_of_step<'a>(ctx: &Ctx, st: &'a State) -> Result<Vec<Stale<'a>>> {
    let Some(up) = uplink(ctx, st).await? else {
        return Ok(Vec::new());
    };
    let mut stale = Vec::new();
    for (name, c) in st.containers.iter().filter(|(_, c)| c.phase.is_wired()) {
        let Some(net) = st.networks.get(&c.network) else {
            continue;
        };
        let want = target(net, st.settings.big_tcp, up);
        let Some(host) = netlink::link_by_name(&ctx.nl, &c.host_if).await? else {
            continue;
        };
        let mtu_differs = host.mtu != Some(want.mtu);
        let gso_differs = host.gso.v4.is_some_and(|n| n != want.gso.v4)
            || host.gso.v6.is_some_and(|n| n != want.gso.v6);
        if mtu_differs || gso_differs {
            stale.push(Stale {
                name,
                container: c,
                host_index: host.index,
                peer_index: host.peer,
                want,
                mtu_differs,
            });
        }
    }
    Ok(stale)
}

/// Gives each ready container the shape it should have on both ends of its veth where it
/// differs; returns how many changed. A container whose namespace is gone is left to
/// `status`.
pub async fn resync(ctx: &Ctx, st: &State) -> Result<usize> {
    let stale = out_of_step(ctx, st).await?;
    let mut changed = 0;
    for s in stale {
        let ns = container::netns_path(s.name, s.container);
        if !ns.exists() {
            continue;
        }
        // Inside first: until the host end follows, the container's larger packets still
        // reach the datapath, which hands the DF ones to the host stack for the error. The
        // container end is found as the veth's peer, whatever the runtime named it (Docker
        // renames it, a further network's is not eth0).
        let (peer, shape) = (s.peer_index, s.want);
        netns::run_async_in(&ns, move || async move {
            let h = netlink::connect()?;
            if let Some(i) = peer
                && netlink::link_by_index(&h, i).await?.is_some()
            {
                netlink::set_shape(&h, i, shape).await?;
            }
            Ok(())
        })?;
        netlink::set_shape(&ctx.nl, s.host_index, shape).await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_uplink_within_the_legacy_size_and_big_tcp() {
        for (up, want) in [
            (GSO_LEGACY, GSO_LEGACY),
            (1_000, GSO_LEGACY),
            (131_072, 131_072),
            (524_280, BIG_TCP),
        ] {
            assert_eq!(gso_size(BigTcp::Auto, up), want, "uplink {up}");
            assert_eq!(gso_size(BigTcp::On, up), BIG_TCP);
            assert_eq!(gso_size(BigTcp::Off, up), GSO_LEGACY);
        }
    }
}
