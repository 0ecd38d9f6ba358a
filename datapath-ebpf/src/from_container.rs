//! `from_container`: TC ingress on every host-side veth, i.e. every packet a container sends.
//!
//! Order: ARP answered; source IP and MAC must be the container's own (anti-spoofing);
//! ICMP errors translated back onto their flow; tracked flows follow their conntrack entry;
//! new flows are decided here — to another container (policy), to a published port through a
//! host address (hairpin: policy + DNAT), to the host itself (host stack), or to the world
//! (MASQUERADE + FIB + redirect to the uplink).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{
    addr::{is_loopback, is_multicast_or_broadcast},
    config::Config,
    conntrack::{FlowKey, flags, state as ct_state},
    endpoint::{Endpoint, flags as ep_flags},
    stats::{DropReason, Event, Hook, Path},
};

use crate::{
    arp,
    conntrack::{self, Hit, NewFlow},
    context::{PacketCtx, ifindex, linearize},
    deliver::{self, Route},
    icmp,
    maps::{config, endpoint, in_weir_subnet, is_host_addr},
    metrics::{self, Drop},
    nat,
    packet::{self, ETH_P_ARP, ETH_P_IP, Ipv4},
    policy, publish,
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    // Here, at the top: the sweep's stack frames must not stack on the packet path's.
    conntrack::maybe_sweep();
    let ifindex = ifindex(&ctx);
    let len = ctx.packet_len();
    match try_from_container(&ctx, ifindex, len) {
        Ok(verdict) => verdict,
        Err(d) => {
            metrics::dropped(d, Hook::FromContainer, ifindex, len);
            TC_ACT_SHOT as i32
        }
    }
}

/// The path a tracked flow's packets take, from its entry's flags.
#[inline(always)]
fn tracked_path(f: u16) -> Path {
    if f & flags::HAIRPIN != 0 {
        Path::Hairpin
    } else if f & flags::SNAT != 0 {
        Path::Egress
    } else if f & flags::DNAT != 0 {
        Path::PublishedReply
    } else {
        Path::ContainerToContainer
    }
}

// Not inlined: the conntrack sweep called from the entry point must not stack on this frame.
#[inline(never)]
fn try_from_container(ctx: &TcContext, ifindex: u32, len: u32) -> Result<i32, Drop> {
    linearize(ctx, packet::COMMON_HEADERS);
    let ethertype = packet::ether_type(ctx).ok_or(DropReason::Malformed)?;
    if ethertype == ETH_P_ARP {
        let v = arp::answer(ctx, ifindex)?;
        metrics::path(Path::ArpReply, len);
        return Ok(v);
    }
    if ethertype != ETH_P_IP {
        return Err(DropReason::UnsupportedL3.into());
    }
    let cfg = config().ok_or(DropReason::UnknownEndpoint)?;
    let pkt = packet::parse_ipv4_tc(ctx)?;
    let key = pkt.flow();

    // Anti-spoofing: the source must be this veth's container, by address and MAC.
    let src = endpoint(pkt.saddr).ok_or(Drop::flow(DropReason::SpoofedSource, key))?;
    let eth_src: *const [u8; 6] = crate::context::ptr_at(ctx, 6).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked.
    if src.ifindex != ifindex || unsafe { *eth_src } != src.mac {
        return Err(Drop::flow(DropReason::SpoofedSource, key));
    }
    if is_multicast_or_broadcast(pkt.daddr) {
        return Err(Drop::flow(DropReason::Multicast, key));
    }
    if is_loopback(pkt.daddr) {
        // The container's own loopback never reaches its eth0; the host's is not its to use.
        return Err(Drop::flow(DropReason::Martian, key));
    }
    let now = conntrack::now();

    if pkt.is_icmp_error() {
        if let Some(t) = icmp::translate(ctx, &pkt, cfg, now, icmp::Sender::Container)
            .map_err(|r| Drop::flow(r, key))?
        {
            metrics::path(Path::IcmpError, len);
            return forward(ctx, &pkt, t.daddr, cfg, ifindex).map_err(|r| Drop::flow(r, key));
        }
    }

    if let Some(e) = conntrack::lookup(&key, cfg, now) {
        if let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, &pkt, now) {
            if pkt.ttl <= 1 && endpoint(rewrite.daddr).is_none() {
                // Routed and expiring: the host stack answers with ICMP time exceeded.
                return Ok(TC_ACT_OK as i32);
            }
            nat::rewrite(ctx, &pkt, &rewrite).map_err(|r| Drop::flow(r, key))?;
            metrics::path(tracked_path(flags), len);
            return forward(ctx, &pkt, rewrite.daddr, cfg, ifindex).map_err(|r| Drop::flow(r, key));
        }
    }
    new_flow(ctx, &pkt, src).map_err(|r| Drop::flow(r, key))
}

/// Sends a (rewritten) packet on: into the container owning `daddr`, else out of the uplink.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    pkt: &Ipv4,
    daddr: u32,
    cfg: &Config,
    ifindex: u32,
) -> Result<i32, DropReason> {
    if let Some(ep) = endpoint(daddr) {
        return deliver::to_endpoint(ctx, ep);
    }
    let r = deliver::route(ctx, ifindex, cfg.uplink_ip, daddr, pkt.proto)?;
    deliver::out(ctx, pkt, &r)
}

/// Decides a flow no conntrack entry knows.
#[inline(always)]
fn new_flow(ctx: &TcContext, pkt: &Ipv4, src: &Endpoint) -> Result<i32, DropReason> {
    let cfg = config().ok_or(DropReason::UnknownEndpoint)?;
    let (ifindex, now, len) = (ifindex(ctx), conntrack::now(), ctx.packet_len());
    let key = pkt.flow();
    let state = conntrack::initial_state(pkt);

    // Container to container.
    if let Some(dst) = endpoint(pkt.daddr) {
        policy::check(src, dst, pkt.proto, pkt.dport)?;
        if state == ct_state::ESTABLISHED {
            // A TCP flow picked up mid-stream (its entries were cut or lost): either side may
            // have opened it, so both must be allowed to. Otherwise the first segment of the
            // side a cut was meant to protect would reopen, as its own flow, the connection
            // `isolate --cut` had just ended.
            policy::check(dst, src, pkt.proto, pkt.sport)?;
        }
        let f = NewFlow {
            flags: 0,
            src_identity: src.identity,
            dst_identity: dst.identity,
            state,
        };
        conntrack::create_pair(&key, &key, &f, cfg, now)?;
        metrics::path(Path::ContainerToContainer, len);
        return deliver::to_endpoint(ctx, dst);
    }

    // A published port through a host address (hairpin), subject to the same policy.
    if pkt.may_open() {
        if let Some(t) = publish::lookup(pkt.daddr, pkt.proto, pkt.dport, false) {
            let dst = endpoint(t.addr).ok_or(DropReason::UnknownEndpoint)?;
            policy::check(src, dst, pkt.proto, t.port)?;
            // A container reaching itself would see its own address as source (a martian):
            // the flow then comes from its gateway, as with Docker's hairpin MASQUERADE.
            let saddr = if t.addr == pkt.saddr {
                src.gateway
            } else {
                pkt.saddr
            };
            let new = FlowKey::new(saddr, t.addr, pkt.sport, t.port, pkt.proto);
            let f = NewFlow {
                flags: flags::HAIRPIN | flags::DNAT,
                src_identity: src.identity,
                dst_identity: dst.identity,
                state,
            };
            conntrack::create_pair(&key, &new, &f, cfg, now)?;
            metrics::event(Event::DnatNew);
            nat::rewrite(ctx, pkt, &new)?;
            metrics::path(Path::Hairpin, len);
            return deliver::to_endpoint(ctx, dst);
        }
    }

    // An address of a Weir network that no container holds (the gateway aside) exists nowhere:
    // never let it leak to the world through the default route.
    if in_weir_subnet(pkt.daddr) && !is_host_addr(pkt.daddr) {
        return Err(DropReason::UnknownEndpoint);
    }

    // The host itself, or the world.
    let r = deliver::route(ctx, ifindex, pkt.saddr, pkt.daddr, pkt.proto)?;
    let Route::Out {
        ifindex: out_if, ..
    } = r
    else {
        // An internal network reaches the host only at its own gateway, like Docker's.
        if src.flags & ep_flags::INTERNAL != 0 && pkt.daddr != src.gateway {
            return Err(DropReason::InternalNetwork);
        }
        metrics::path(Path::ContainerToHost, len);
        return Ok(TC_ACT_OK as i32);
    };
    if out_if != cfg.uplink_ifindex || cfg.uplink_ip == 0 {
        return Err(DropReason::NoRoute);
    }
    if src.flags & ep_flags::INTERNAL != 0 {
        return Err(DropReason::InternalNetwork);
    }
    if pkt.is_icmp_error() {
        // It quotes no flow of this container's (icmp::translate found none), so it answers
        // nothing the world sent: masqueraded, it would still carry the addresses it quotes.
        return Err(DropReason::IcmpErrorUnmatched);
    }
    if pkt.ttl <= 1 {
        // Routed and expiring: the host stack answers with ICMP time exceeded, as a router
        // would. Only now, after the checks above: handing it over earlier let an internal
        // network reach every host address with TTL 1 packets (local delivery ignores TTL).
        return Ok(TC_ACT_OK as i32);
    }
    if pkt.frag == packet::Frag::Later {
        // The first fragment created the flow; this one follows its translation or not at all.
        return Err(DropReason::Fragment);
    }
    let f = NewFlow {
        flags: 0,
        src_identity: src.identity,
        dst_identity: weir_common::policy::IDENTITY_WORLD,
        state,
    };
    let new = nat::masquerade(&key, &f, cfg, now)?;
    nat::rewrite(ctx, pkt, &new)?;
    metrics::path(Path::Egress, len);
    deliver::out(ctx, pkt, &r)
}
