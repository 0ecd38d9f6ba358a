//! `uplink_tc6`: every IPv6 packet the uplink receives, reached by tail call from
//! `uplink_tc`. Address checks first, whatever the rest: the world never sends from a Weir
//! network's addresses or the host's own, and never reaches a container's address directly.
//! Then replies of masqueraded flows are translated and redirected into their container; the
//! rest (neighbour discovery, router advertisements, the host's own flows) is the host's.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{
    addr::{Ipv6Be, is_link_local6, is_martian6, is_multicast6, is_unspecified6},
    conntrack::flags,
    stats::{DropReason, Hook, Path},
};

use crate::{
    conntrack::{self, Hit},
    context::{PacketCtx, ifindex},
    deliver,
    maps::{config, endpoint6, is_host_addr6, subnet6},
    metrics::{self, Drop},
    nat6,
    packet::Frag,
    packet6,
};

#[classifier]
pub fn uplink_tc6(ctx: TcContext) -> i32 {
    let len = ctx.packet_len();
    match try_uplink_tc6(&ctx, len) {
        Ok(v) => v,
        Err(d) => {
            metrics::dropped(Drop::new(d), Hook::UplinkTc, ifindex(&ctx), len);
            TC_ACT_SHOT as i32
        }
    }
}

/// Whether `daddr` is on the containers' side: a container's address, or any address of a
/// Weir network but its gateways (which are the host's).
#[inline(always)]
fn is_container_side(daddr: &Ipv6Be) -> bool {
    endpoint6(daddr).is_some() || (subnet6(daddr).is_some() && !is_host_addr6(daddr))
}

#[inline(always)]
fn try_uplink_tc6(ctx: &TcContext, len: u32) -> Result<i32, DropReason> {
    let Some((saddr, daddr)) = packet6::addrs(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    if subnet6(&saddr).is_some() || is_host_addr6(&saddr) {
        return Err(DropReason::SpoofedSource);
    }
    if is_container_side(&daddr) {
        return Err(DropReason::NotPublished);
    }
    // `::` is a neighbour's duplicate-address probe; loopback and mapped addresses are
    // martians on any wire.
    if (is_martian6(&saddr) && !is_unspecified6(&saddr)) || is_martian6(&daddr) {
        return Err(DropReason::Martian);
    }
    let Some(cfg) = config() else {
        return Ok(TC_ACT_OK as i32);
    };
    // Neighbour discovery, router advertisements, multicast: the host's.
    let host_only = |a: &Ipv6Be| is_link_local6(a) || is_multicast6(a);
    if host_only(&saddr) || host_only(&daddr) {
        return Ok(TC_ACT_OK as i32);
    }
    // What does not parse is not for a container; the host stack validates and drops it.
    let Ok(pkt) = packet6::parse(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    if pkt.tracked() && !pkt.is_icmp_error() && pkt.frag != Frag::Later {
        let key = pkt.flow();
        let now = conntrack::now();
        if let Some(e) = conntrack::lookup(&key, cfg, now)
            && let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, pkt.seg(), now)
        {
            let ep = endpoint6(&rewrite.daddr).ok_or(DropReason::UnknownEndpoint)?;
            nat6::rewrite(ctx, pkt, &rewrite)?;
            nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
            let path = if flags & flags::SNAT != 0 {
                Path::EgressReply
            } else {
                Path::Published
            };
            metrics::path(path, len);
            return deliver::to_endpoint(ctx, ep);
        }
    }
    metrics::path(Path::UplinkToHost, len);
    Ok(TC_ACT_OK as i32)
}
