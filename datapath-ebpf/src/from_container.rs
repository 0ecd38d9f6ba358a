//! `from_container`: TC ingress on every host-side veth, i.e. every packet a container sends.
//!
//! Order: ARP answered; source IP and MAC must be the container's own (anti-spoofing);
//! ICMP errors translated back onto their flow; tracked flows follow their conntrack entry.
//! New flows are decided by `from_container_new`, reached by a tail call — to another
//! container (policy), to a published port through a host address (hairpin: policy + DNAT),
//! to the host itself (host stack), or to the world (MASQUERADE + FIB + redirect to the
//! uplink). Two programs, because the verifier bounds the stack frames along a call chain to
//! 512 bytes and the two halves together did not fit; a tail call starts afresh.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{
    addr::{is_loopback, is_multicast_or_broadcast},
    config::Config,
    conntrack::{FlowKey, IPPROTO_ICMP, flags},
    endpoint::{Endpoint, flags as ep_flags},
    maps::{TAIL_FROM_CONTAINER6, TAIL_NEW_FLOW},
    publish::PublishTarget,
    stats::{DropReason, Event, Hook, Path},
};

use crate::{
    arp,
    conntrack::{self, Hit, NewFlow},
    context::{PacketCtx, ifindex, linearize, vlan_tagged},
    deliver::{self, Route},
    icmp,
    maps::{WEIR_TAILS, config, endpoint, in_weir_subnet, is_host_addr},
    metrics::{self, Drop},
    nat,
    packet::{self, ETH_P_ARP, ETH_P_IP, ICMP_ECHO, Ipv4},
    packet6::ETH_P_IPV6,
    policy, publish,
};

/// Where a tracked flow's packet goes once translated.
enum Next {
    /// Into this container.
    Container(&'static Endpoint),
    /// Out of the device this route names.
    Routed(Route),
}

/// What the first half decided.
enum Step {
    Verdict(i32),
    /// No flow knows the packet: `from_container_new` decides.
    NewFlow,
    /// IPv6: `from_container6` decides.
    Ipv6,
}

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    // Here, at the top: the sweep's stack frames must not stack on the packet path's.
    conntrack::maybe_sweep();
    let ifindex = ifindex(&ctx);
    let len = ctx.packet_len();
    let d = match try_from_container(&ctx, ifindex, len) {
        Ok(Step::Verdict(v)) => return v,
        Ok(step @ (Step::NewFlow | Step::Ipv6)) => {
            let slot = match step {
                Step::Ipv6 => TAIL_FROM_CONTAINER6,
                _ => TAIL_NEW_FLOW,
            };
            // SAFETY: the context is this program's; on success control never returns here.
            unsafe { WEIR_TAILS.tail_call(&ctx, slot) };
            // The slot is empty only while `control init` loads the programs.
            Drop::new(DropReason::TailCallFailed)
        }
        Err(d) => d,
    };
    metrics::dropped(d, Hook::FromContainer, ifindex, len);
    TC_ACT_SHOT as i32
}

/// The new-flow half of `from_container` (never attached: reached by tail call only).
#[classifier]
pub fn from_container_new(ctx: TcContext) -> i32 {
    let ifindex = ifindex(&ctx);
    let len = ctx.packet_len();
    let mut why = Drop::new(DropReason::Malformed);
    match new_flow_verdict(&ctx, ifindex, &mut why) {
        Some(v) => v,
        None => {
            metrics::dropped(why, Hook::FromContainer, ifindex, len);
            TC_ACT_SHOT as i32
        }
    }
}

/// [`try_from_container_new`] with its drop written to `why`. Not inlined, for the same reason
/// as try_from_container; and returning a register-sized value: a `Result` this large is
/// returned through a pointer, which LLVM may leave in r0, and the verifier refuses a
/// function that returns a stack pointer to its caller.
#[inline(never)]
fn new_flow_verdict(ctx: &TcContext, ifindex: u32, why: &mut Drop) -> Option<i32> {
    match try_from_container_new(ctx, ifindex) {
        Ok(v) => Some(v),
        Err(d) => {
            *why = d;
            None
        }
    }
}

/// The path a tracked flow's packets take, from its entry's flags.
#[inline(always)]
pub fn tracked_path(f: u16) -> Path {
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

/// The container that sent `pkt` on `ifindex`: its source address and MAC must be the
/// container's own.
#[inline(always)]
fn sender(ctx: &TcContext, pkt: &Ipv4, ifindex: u32) -> Result<&'static Endpoint, Drop> {
    let spoofed = Drop::flow(DropReason::SpoofedSource, pkt.flow());
    let src = endpoint(pkt.saddr).ok_or(spoofed)?;
    let eth_src: *const [u8; 6] = crate::context::ptr_at(ctx, 6).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked.
    if src.ifindex != ifindex || unsafe { *eth_src } != src.mac {
        return Err(spoofed);
    }
    Ok(src)
}

// Not inlined: the conntrack sweep called from the entry point must not stack on this frame.
#[inline(never)]
fn try_from_container(ctx: &TcContext, ifindex: u32, len: u32) -> Result<Step, Drop> {
    if vlan_tagged(ctx) {
        // A container has no business tagging: the tag would ride the redirect to the uplink.
        return Err(DropReason::VlanTagged.into());
    }
    linearize(ctx, packet::COMMON_HEADERS);
    let ethertype = packet::ether_type(ctx).ok_or(DropReason::Malformed)?;
    if ethertype == ETH_P_ARP {
        let v = arp::answer(ctx, ifindex)?;
        metrics::path(Path::ArpReply, len);
        return Ok(Step::Verdict(v));
    }
    if ethertype == ETH_P_IPV6 {
        return Ok(Step::Ipv6);
    }
    if ethertype != ETH_P_IP {
        return Err(DropReason::UnsupportedL3.into());
    }
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    // Before anything measures the packet: lengths are the IP header's, never the frame's.
    packet::trim_to_datagram(ctx)?;
    // What the paths count is the datagram routed, not the padding cut off.
    let len = ctx.packet_len();
    let pkt = packet::parse_ipv4_tc(ctx)?;
    let key = pkt.flow();
    sender(ctx, &pkt, ifindex)?;
    packet::remember_fragment(&pkt);
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
            return forward(ctx, &pkt, t.daddr, ifindex)
                .map(Step::Verdict)
                .map_err(|r| Drop::flow(r, key));
        }
        // About no flow of this container's. Never matched against conntrack: errors carry no
        // ports, so their key is every port-less ICMP flow between the same two hosts.
        return Ok(Step::NewFlow);
    }

    if pkt.tracked()
        && let Some(e) = conntrack::lookup(&key, cfg, now)
    {
        if let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, pkt.seg(), now) {
            // Looked up once: the endpoint found here is the one delivered to.
            let next = match endpoint(rewrite.daddr) {
                Some(ep) => Next::Container(ep),
                None => {
                    if pkt.ttl <= 1 {
                        // Routed and expiring: the host stack answers with ICMP time exceeded.
                        return Ok(Step::Verdict(TC_ACT_OK as i32));
                    }
                    // Routed before it is translated: a packet too big for the uplink goes to
                    // the host stack as it came, so that "fragmentation needed" reaches the
                    // container.
                    let r = deliver::route(ctx, ifindex, &pkt, rewrite.daddr)
                        .map_err(|r| Drop::flow(r, key))?;
                    if let Route::TooBig { .. } = r {
                        return deliver::too_big(&pkt)
                            .map(Step::Verdict)
                            .map_err(|r| Drop::flow(r, key));
                    }
                    Next::Routed(r)
                }
            };
            nat::rewrite(ctx, &pkt, &rewrite).map_err(|r| Drop::flow(r, key))?;
            metrics::path(tracked_path(flags), len);
            let v = match next {
                Next::Container(ep) => deliver::to_endpoint(ctx, ep),
                Next::Routed(r) => deliver::out(ctx, &pkt, &r),
            };
            return v.map(Step::Verdict).map_err(|r| Drop::flow(r, key));
        }
    }
    Ok(Step::NewFlow)
}

#[inline(always)]
fn try_from_container_new(ctx: &TcContext, ifindex: u32) -> Result<i32, Drop> {
    // What the first half established is established again: this program takes nothing on
    // trust (it can be reached only by the tail call, but the checks cost one lookup).
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let pkt = packet::parse_ipv4_tc(ctx)?;
    let src = sender(ctx, &pkt, ifindex)?;
    new_flow(ctx, &pkt, src, cfg).map_err(|r| Drop::flow(r, pkt.flow()))
}

/// Sends a (rewritten) packet on: into the container owning `daddr`, else out of the uplink.
#[inline(always)]
fn forward(ctx: &TcContext, pkt: &Ipv4, daddr: u32, ifindex: u32) -> Result<i32, DropReason> {
    if let Some(ep) = endpoint(daddr) {
        return deliver::to_endpoint(ctx, ep);
    }
    let r = deliver::route(ctx, ifindex, pkt, daddr)?;
    deliver::out(ctx, pkt, &r)
}

/// Decides a flow no conntrack entry knows: to another container, to a published port through
/// a host address (hairpin), or to the host or the world.
#[inline(always)]
fn new_flow(ctx: &TcContext, pkt: &Ipv4, src: &Endpoint, cfg: &Config) -> Result<i32, DropReason> {
    if let Some(dst) = endpoint(pkt.daddr) {
        return open_local(ctx, pkt, src, dst, cfg);
    }
    if pkt.may_open()
        && let Some(t) = publish::lookup(pkt.daddr, pkt.proto, pkt.dport, false)
    {
        return open_hairpin(ctx, pkt, src, &t, cfg);
    }
    open_outside(ctx, pkt, src, cfg)
}

/// Container to container, under policy.
#[inline(always)]
fn open_local(
    ctx: &TcContext,
    pkt: &Ipv4,
    src: &Endpoint,
    dst: &Endpoint,
    cfg: &Config,
) -> Result<i32, DropReason> {
    policy::open_local(&pkt.flow(), pkt.seg(), pkt.tracked(), src, dst, cfg)?;
    metrics::path(Path::ContainerToContainer, ctx.packet_len());
    deliver::to_endpoint(ctx, dst)
}

/// A published port through a host address (hairpin), under the same policy as a direct
/// connection to the container behind it.
#[inline(always)]
fn open_hairpin(
    ctx: &TcContext,
    pkt: &Ipv4,
    src: &Endpoint,
    t: &PublishTarget,
    cfg: &Config,
) -> Result<i32, DropReason> {
    let dst = endpoint(t.addr).ok_or(DropReason::UnknownEndpoint)?;
    policy::check(src, dst, pkt.proto, t.port)?;
    // A container reaching itself would see its own address as source (a martian): the flow
    // then comes from its gateway, as with Docker's hairpin MASQUERADE.
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
    };
    conntrack::create_pair(&pkt.flow(), &new, &f, cfg, conntrack::now())?;
    metrics::event(Event::DnatNew);
    nat::rewrite(ctx, pkt, &new)?;
    metrics::path(Path::Hairpin, ctx.packet_len());
    deliver::to_endpoint(ctx, dst)
}

/// The host itself (handed to its stack), or the world (masqueraded and routed out of the
/// uplink).
#[inline(always)]
fn open_outside(
    ctx: &TcContext,
    pkt: &Ipv4,
    src: &Endpoint,
    cfg: &Config,
) -> Result<i32, DropReason> {
    let len = ctx.packet_len();
    // An address of a Weir network that no container holds (the gateway aside) exists nowhere:
    // never let it leak to the world through the default route.
    if in_weir_subnet(pkt.daddr) && !is_host_addr(pkt.daddr) {
        return Err(DropReason::UnknownEndpoint);
    }
    let r = deliver::route(ctx, ifindex(ctx), pkt, pkt.daddr)?;
    let out_if = match r {
        Route::Out { ifindex, .. } | Route::TooBig { ifindex } => ifindex,
        Route::Local => {
            // An internal network reaches the host only at its own gateway, like Docker's.
            if src.flags & ep_flags::INTERNAL != 0 && pkt.daddr != src.gateway {
                return Err(DropReason::InternalNetwork);
            }
            metrics::path(Path::ContainerToHost, len);
            return Ok(TC_ACT_OK as i32);
        }
    };
    if let Leave::ToHostStack = may_leave(pkt, src, out_if, cfg)? {
        return Ok(TC_ACT_OK as i32);
    }
    if let Route::TooBig { .. } = r {
        // The host stack answers "fragmentation needed" for a DF packet and forwards
        // nothing: the packet, trimmed to its datagram, is too big for the same route.
        return deliver::too_big(pkt);
    }
    if pkt.frag == packet::Frag::Later {
        // The first fragment created the flow; this one follows its translation or not at all.
        return Err(DropReason::Fragment);
    }
    let f = NewFlow {
        flags: 0,
        src_identity: src.identity,
        dst_identity: weir_common::policy::IDENTITY_WORLD,
    };
    let new = nat::masquerade(ctx, &pkt.flow(), cfg.uplink_ip, &f, cfg, conntrack::now())?;
    nat::rewrite(ctx, pkt, &new)?;
    metrics::path(Path::Egress, len);
    deliver::out(ctx, pkt, &r)
}

/// What a new flow to the world may do once routed out of `out_if`.
enum Leave {
    /// Masquerade it and send it out.
    Masquerade,
    /// Hand it to the host stack as it came (TTL expiring: the host answers time exceeded).
    ToHostStack,
}

/// Every check a new flow to the world passes — before any hand-over to the host stack (TTL
/// expiring, too big): the kernel forwards what it is handed if it can, so whatever Weir
/// hands it untranslated must be something Weir would have sent out itself. Not inlined: a
/// function of its own, verified once, so its branches do not multiply the caller's paths.
#[inline(never)]
fn may_leave(pkt: &Ipv4, src: &Endpoint, out_if: u32, cfg: &Config) -> Result<Leave, DropReason> {
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
    if pkt.proto == IPPROTO_ICMP && (pkt.icmp_type != ICMP_ECHO || !pkt.tracked()) {
        // Only echo requests open flows to the world: every other ICMP message (and an echo
        // with identifier 0) has no identifier, so its flow's replies would be any port-less
        // ICMP from that host.
        return Err(DropReason::IcmpUntracked);
    }
    if !packet::has_ports(pkt.proto) {
        // GRE, ESP, IP-in-IP, SCTP…: nothing to masquerade with but the address, so the
        // flow's reply entry would take every packet of that protocol the peer sends the host
        // (its own tunnels included), and the container would speak them as the host.
        return Err(DropReason::UnsupportedL4);
    }
    if pkt.ttl <= 1 {
        // Routed and expiring: the host stack answers with ICMP time exceeded, as a router
        // would (local delivery ignores TTL: hence after the internal-network check).
        return Ok(Leave::ToHostStack);
    }
    Ok(Leave::Masquerade)
}
