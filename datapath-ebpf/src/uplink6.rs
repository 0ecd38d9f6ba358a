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
    conntrack::{FlowKey6, flags},
    policy::IDENTITY_WORLD,
    publish::PublishTarget6,
    stats::{DropReason, Event, Hook, Path},
};

use crate::{
    conntrack::{self, Hit, NewFlow},
    context::{PacketCtx, ifindex},
    deliver,
    maps::{config, endpoint6, is_host_addr6, subnet6},
    metrics, nat6,
    packet::Frag,
    packet6::{self, Ipv6},
    publish,
    verdict::{self, DROPPED, NO_FLOW},
};

#[classifier]
pub fn uplink_tc6(ctx: TcContext) -> i32 {
    let len = ctx.packet_len();
    match try_uplink_tc6(&ctx, len) {
        Ok(v) => v,
        Err(d) => {
            metrics::dropped6(d, Hook::UplinkTc, ifindex(&ctx), len);
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
    let addrs = packet6::addrs(ctx);
    packet6::start(addrs);
    let Some((saddr, daddr)) = addrs else {
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
    if config().is_none() {
        return Ok(TC_ACT_OK as i32);
    }
    // Neighbour discovery, router advertisements, multicast: the host's. So is anything from
    // `::`, which only a duplicate-address probe may carry (the fuzzer had one published
    // into a container).
    let host_only = |a: &Ipv6Be| is_link_local6(a) || is_multicast6(a);
    if host_only(&saddr) || host_only(&daddr) || is_unspecified6(&saddr) {
        return Ok(TC_ACT_OK as i32);
    }
    // What does not parse is not for a container; the host stack validates and drops it.
    let Ok(pkt) = packet6::parse(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    if pkt.is_icmp_error() {
        let mut why = DropReason::Malformed;
        return match crate::icmp6::from_world(ctx, pkt, &mut why) {
            DROPPED => Err(why),
            // About none of the containers' flows: the host's (its own flows' errors).
            NO_FLOW => {
                metrics::path(Path::UplinkToHost, len);
                Ok(TC_ACT_OK as i32)
            }
            v => Ok(v),
        };
    }
    packet6::remember_fragment(pkt);
    if pkt.tracked() {
        let mut why = DropReason::Malformed;
        match reply(ctx, pkt, &mut why) {
            NO_FLOW => {}
            DROPPED => return Err(why),
            v => return Ok(v),
        }
    }
    if pkt.may_open()
        && pkt.frag != Frag::Later
        && let Some(t) = publish::lookup6(&pkt.daddr, pkt.proto, pkt.dport, false)
    {
        return open_published(ctx, pkt, &t);
    }
    metrics::path(Path::UplinkToHost, len);
    Ok(TC_ACT_OK as i32)
}

/// A packet of a flow conntrack knows (a reply to a masqueraded flow, the world's side of a
/// published one), translated and redirected into its container: its verdict, [`NO_FLOW`],
/// or [`DROPPED`] with `why`. A function of its own: its keys stay off the entry's frame.
#[inline(never)]
fn reply(ctx: &TcContext, pkt: &Ipv6, why: &mut DropReason) -> i32 {
    verdict::code(try_reply(ctx, pkt), why)
}

#[inline(always)]
fn try_reply(ctx: &TcContext, pkt: &Ipv6) -> Result<Option<i32>, DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let key = pkt.flow();
    let now = conntrack::now();
    let Some(e) = conntrack::lookup(&key, cfg, now) else {
        return Ok(None);
    };
    let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, pkt.seg(), now) else {
        return Ok(None);
    };
    let ep = endpoint6(&rewrite.daddr).ok_or(DropReason::UnknownEndpoint)?;
    nat6::rewrite(ctx, pkt, &rewrite)?;
    nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
    let path = if flags & flags::SNAT != 0 {
        Path::EgressReply
    } else {
        Path::Published
    };
    metrics::path(path, ctx.packet_len());
    deliver::to_endpoint(ctx, ep).map(Some)
}

/// A new flow from the world to a published port: DNAT to the container behind it (never
/// from a link-local source: those went to the host above, as Docker never DNATs them).
#[inline(never)]
fn open_published(ctx: &TcContext, pkt: &Ipv6, t: &PublishTarget6) -> Result<i32, DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let dst = endpoint6(&t.addr).ok_or(DropReason::UnknownEndpoint)?;
    if pkt.hop_limit <= 1 {
        // It could not be routed into the container: no flow for it.
        return Err(DropReason::TtlExceeded);
    }
    let key = pkt.flow();
    let new = FlowKey6::new(pkt.saddr, t.addr, pkt.sport, t.port, pkt.proto);
    let f = NewFlow {
        flags: flags::DNAT | flags::FROM_WORLD,
        src_identity: IDENTITY_WORLD,
        dst_identity: dst.identity,
    };
    conntrack::create_pair(&key, &new, &f, cfg, conntrack::now())?;
    metrics::event(Event::DnatNew);
    nat6::rewrite(ctx, pkt, &new)?;
    nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
    metrics::path(Path::Published, ctx.packet_len());
    deliver::to_endpoint(ctx, dst)
}
