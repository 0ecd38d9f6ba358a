//! The uplink: TC ingress (`uplink_tc`) is the always-correct path for world traffic —
//! replies to masqueraded flows and new flows to published ports are translated and
//! redirected straight into the container; XDP (`uplink_xdp`) drops what may never reach a
//! container at the cheapest point and leaves everything else to TC, marking what it passed
//! so that TC does not repeat its lookups.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use weir_common::{
    addr::is_loopback,
    conntrack::flags,
    endpoint::Endpoint,
    maps::TAIL_UPLINK6,
    policy::IDENTITY_WORLD,
    stats::{DropReason, Event, Hook, Path},
};

use crate::{
    conntrack::{self, Hit, NewFlow},
    context::{
        PacketCtx, addresses_passed, ifindex, linearize, mark_addresses_passed, vlan_tagged,
    },
    deliver, icmp,
    maps::{WEIR_TAILS, config, endpoint, in_weir_subnet, is_host_addr},
    metrics::{self, Drop},
    nat,
    packet::{self, ETH_P_IP, Ipv4},
    packet6::ETH_P_IPV6,
    publish,
};

#[classifier]
pub fn uplink_tc(ctx: TcContext) -> i32 {
    conntrack::maybe_sweep();
    if !vlan_tagged(&ctx) && packet::ether_type(&ctx) == Some(ETH_P_IPV6) {
        // SAFETY: the context is this program's; on success control never returns here.
        unsafe { WEIR_TAILS.tail_call(&ctx, TAIL_UPLINK6) };
        // Only while `control init` loads the programs: the host's, as before IPv6 was in.
        return TC_ACT_OK as i32;
    }
    let len = ctx.packet_len();
    match try_uplink_tc(&ctx, len) {
        Ok(v) => v,
        Err(d) => {
            metrics::dropped(d, Hook::UplinkTc, ifindex(&ctx), len);
            TC_ACT_SHOT as i32
        }
    }
}

// Not inlined: the conntrack sweep called from the entry point must not stack on this frame.
#[inline(never)]
fn try_uplink_tc(ctx: &TcContext, len: u32) -> Result<i32, Drop> {
    // Read before linearizing: pulling data must not be what decides it.
    let checked = addresses_passed(ctx);
    linearize(ctx, packet::COMMON_HEADERS);
    // Tagged frames belong to the host's VLAN devices, never to a container.
    if vlan_tagged(ctx) || packet::ether_type(ctx) != Some(ETH_P_IP) {
        return Ok(TC_ACT_OK as i32);
    }
    let Some(cfg) = config() else {
        return Ok(TC_ACT_OK as i32);
    };
    // Not even an IPv4 header: the host stack's to drop.
    let Some(addrs) = packet::ipv4_addrs(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    // Decided on the addresses alone, before anything else (conntrack included) and whether
    // or not the rest parses:
    // - the world never legitimately sends from a container network's addresses (such packets
    //   would reach a container as if from its neighbour, and a forged tuple of a flow between
    //   containers would match its entry);
    // - nor to the containers' side: it reaches containers only through host addresses
    //   (published ports, replies to masqueraded flows). Handed to the host stack instead,
    //   such a packet — one Weir cannot parse or follow, say, like a tiny first fragment —
    //   would be forwarded into the container by any host that forwards.
    // `uplink_xdp`, where it runs, made the same lookups (but the loopback test) and says so
    // in the frame's metadata.
    if !checked && in_weir_subnet(addrs.saddr) {
        return Err(Drop::flow(DropReason::SpoofedSource, addrs));
    }
    if !checked && is_container_side(addrs.daddr) {
        // The ports, when there are any to read, tell `control monitor` what was refused.
        let flow = packet::parse_ipv4_tc(ctx).map_or(addrs, |p| p.flow());
        return Err(Drop::flow(DropReason::NotPublished, flow));
    }
    if is_loopback(addrs.saddr) || is_loopback(addrs.daddr) {
        return Err(Drop::flow(DropReason::Martian, addrs));
    }
    if !checked && is_host_addr(addrs.saddr) {
        // The host's own address from the wire: a martian the kernel would drop, but a
        // published port would translate it first, and the container would take it for the
        // host.
        return Err(Drop::flow(DropReason::SpoofedSource, addrs));
    }
    // What does not parse is not for a container; the host stack validates and drops it.
    let Ok(pkt) = packet::parse_ipv4_tc(ctx) else {
        return Ok(TC_ACT_OK as i32);
    };
    let key = pkt.flow();
    packet::remember_fragment(&pkt);
    let now = conntrack::now();

    if pkt.is_icmp_error() {
        if let Some(t) = icmp::translate(ctx, &pkt, cfg, now, icmp::Sender::World)
            .map_err(|r| Drop::flow(r, key))?
        {
            metrics::path(Path::IcmpError, len);
            return into_container(ctx, &pkt, t.daddr).map_err(|r| Drop::flow(r, key));
        }
        // About none of the containers' flows: the host's (its own flows' errors are its
        // business). Never matched against conntrack: port-less, it would match any ICMP flow.
        metrics::path(Path::UplinkToHost, len);
        return Ok(TC_ACT_OK as i32);
    }

    if pkt.tracked()
        && let Some(e) = conntrack::lookup(&key, cfg, now)
    {
        if let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, pkt.seg(), now) {
            nat::rewrite(ctx, &pkt, &rewrite).map_err(|r| Drop::flow(r, key))?;
            let path = if flags & flags::SNAT != 0 {
                Path::EgressReply
            } else {
                Path::Published
            };
            metrics::path(path, len);
            return into_container(ctx, &pkt, rewrite.daddr).map_err(|r| Drop::flow(r, key));
        }
    }

    if pkt.may_open() {
        if let Some(t) = publish::lookup(pkt.daddr, pkt.proto, pkt.dport, false) {
            let dst = endpoint(t.addr).ok_or(Drop::flow(DropReason::UnknownEndpoint, key))?;
            if pkt.ttl <= 1 {
                // It could not be routed into the container: no flow for it.
                return Err(Drop::flow(DropReason::TtlExceeded, key));
            }
            let new = weir_common::conntrack::FlowKey::new(
                pkt.saddr, t.addr, pkt.sport, t.port, pkt.proto,
            );
            let f = NewFlow {
                flags: flags::DNAT | flags::FROM_WORLD,
                src_identity: IDENTITY_WORLD,
                dst_identity: dst.identity,
            };
            conntrack::create_pair(&key, &new, &f, cfg, now).map_err(|r| Drop::flow(r, key))?;
            metrics::event(Event::DnatNew);
            nat::rewrite(ctx, &pkt, &new).map_err(|r| Drop::flow(r, key))?;
            metrics::path(Path::Published, len);
            return into_endpoint(ctx, &pkt, dst).map_err(|r| Drop::flow(r, key));
        }
    }
    metrics::path(Path::UplinkToHost, len);
    Ok(TC_ACT_OK as i32)
}

/// Whether `daddr` is on the containers' side: a container's address, or any other address
/// of a Weir network but its gateways (which are the host's). Addresses no container holds
/// must not fall through to the host stack, which would route them back out.
#[inline(always)]
fn is_container_side(daddr: u32) -> bool {
    endpoint(daddr).is_some() || (in_weir_subnet(daddr) && !is_host_addr(daddr))
}

/// Routes a translated world packet into the container owning `daddr`.
#[inline(always)]
fn into_container(ctx: &TcContext, pkt: &Ipv4, daddr: u32) -> Result<i32, DropReason> {
    let ep = endpoint(daddr).ok_or(DropReason::UnknownEndpoint)?;
    into_endpoint(ctx, pkt, ep)
}

/// Routes a translated world packet into `ep`'s container, decrementing the TTL like a router.
#[inline(always)]
fn into_endpoint(ctx: &TcContext, pkt: &Ipv4, ep: &Endpoint) -> Result<i32, DropReason> {
    if pkt.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    nat::dec_ttl(ctx, pkt.ttl)?;
    deliver::to_endpoint(ctx, ep)
}

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    run_uplink_xdp(&ctx, true)
}

/// `uplink_xdp` without the metadata marker, for kernels that refuse `bpf_xdp_adjust_meta`
/// to XDP programs (a 6.18 build seen here does): the same drops, and `uplink_tc` makes the
/// address lookups itself. `control init` loads it when the kernel refuses `uplink_xdp`.
#[xdp]
pub fn uplink_xdp_plain(ctx: XdpContext) -> u32 {
    run_uplink_xdp(&ctx, false)
}

/// `mark` is a constant at each entry point: the plain one holds no call to the helper.
#[inline(always)]
fn run_uplink_xdp(ctx: &XdpContext, mark: bool) -> u32 {
    match try_uplink_xdp(ctx, mark) {
        Ok(v) => v,
        Err(d) => {
            // SAFETY: the context pointer is valid for the whole program run.
            let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
            metrics::dropped(d, Hook::UplinkXdp, ifindex, ctx.packet_len());
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_uplink_xdp(ctx: &XdpContext, mark: bool) -> Result<u32, Drop> {
    if packet::ether_type(ctx) != Some(ETH_P_IP) {
        return Ok(xdp_action::XDP_PASS);
    }
    // Addresses only: what is dropped here depends on nothing else, and a packet too broken
    // to parse must not slip through for it (uplink_tc judges everything that passes).
    let Some(addrs) = packet::ipv4_addrs(ctx) else {
        return Ok(xdp_action::XDP_PASS);
    };
    // World traffic reaches containers through host addresses (published ports, masquerade
    // replies), never addressed to a container directly.
    if is_container_side(addrs.daddr) {
        // The ports, when there are any to read, tell `control monitor` what was refused.
        let flow = packet::parse_ipv4(ctx).map_or(addrs, |p| p.flow());
        return Err(Drop::flow(DropReason::NotPublished, flow));
    }
    if in_weir_subnet(addrs.saddr) || is_host_addr(addrs.saddr) {
        return Err(Drop::flow(DropReason::SpoofedSource, addrs));
    }
    if mark {
        mark_addresses_passed(ctx);
    }
    Ok(xdp_action::XDP_PASS)
}

/// `uplink_egress`: TC egress on the uplink, the last point before the wire. Everything Weir
/// itself sends to the world leaves masqueraded, from a host address; a packet from any other
/// address of a Weir network was routed by the kernel — handed to the host stack and forwarded
/// past every check of Weir's — and is dropped. One array and, for the rare packet not from
/// the uplink address, one trie lookup.
#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    match try_uplink_egress(&ctx) {
        Ok(v) => v,
        Err(d) => {
            metrics::dropped(d, Hook::UplinkEgress, ifindex(&ctx), ctx.packet_len());
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn try_uplink_egress(ctx: &TcContext) -> Result<i32, Drop> {
    linearize(ctx, packet::L3_OFF as u32 + 20);
    if packet::ether_type(ctx) != Some(ETH_P_IP) {
        return Ok(TC_ACT_OK as i32);
    }
    let (Some(cfg), Some(addrs)) = (config(), packet::ipv4_addrs(ctx)) else {
        return Ok(TC_ACT_OK as i32);
    };
    if addrs.saddr != cfg.uplink_ip && in_weir_subnet(addrs.saddr) && !is_host_addr(addrs.saddr) {
        return Err(Drop::flow(DropReason::Unmasqueraded, addrs));
    }
    Ok(TC_ACT_OK as i32)
}
