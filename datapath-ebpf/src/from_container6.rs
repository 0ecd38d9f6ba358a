//! `from_container6`: every IPv6 packet a container sends, reached by tail call from
//! `from_container` (a program of its own: IPv6's 40-byte keys would not fit the IPv4 path's
//! stack frames, and the IPv4 path stays as it was).
//!
//! Order: neighbour discovery first (its sources are link-local or `::`, legal for it alone),
//! then the source must be the container's own address and MAC, link-local and other
//! special destinations are refused before any route lookup (the lookup calls them "not
//! forwarded", which would read as "for the host"), then tracked flows follow their conntrack
//! entry, and new ones go to another container (policy, the same identity-keyed maps as
//! IPv4), to the host, or to the world (NAT66 masquerade).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{
    addr::{Ipv6Be, is_link_local6, is_martian6, is_multicast6, is_unspecified6},
    config::Config,
    conntrack::{FlowKey6, IPPROTO_ICMPV6, flags},
    endpoint::{Endpoint, flags as ep_flags},
    maps::TAIL_FROM_CONTAINER6_NEW,
    policy::IDENTITY_WORLD,
    publish::PublishTarget6,
    stats::{DropReason, Event, Hook, Path},
};

use crate::{
    conntrack::{self, Hit, NewFlow},
    context::{PacketCtx, ifindex},
    deliver::{self, Route},
    family::Family,
    icmp6,
    maps::{WEIR_TAILS, config, config6, endpoint6, gateway6_of, is_host_addr6, subnet6},
    metrics, nat6, ndp,
    packet::{self, Frag},
    packet6::{self, ICMP6_ECHO_REQUEST, Ipv6},
    policy, publish,
    verdict::{self, DROPPED, NO_FLOW},
};

/// What the first half decided.
enum Step {
    Verdict(i32),
    /// No flow knows the packet: `from_container6_new` decides.
    NewFlow,
}

#[classifier]
pub fn from_container6(ctx: TcContext) -> i32 {
    packet6::start(None);
    let ifindex = ifindex(&ctx);
    let len = ctx.packet_len();
    let mut why = DropReason::Malformed;
    let code = first_half(&ctx, ifindex, &mut why);
    if code == NO_FLOW {
        // SAFETY: the context is this program's; on success control never returns here.
        unsafe { WEIR_TAILS.tail_call(&ctx, TAIL_FROM_CONTAINER6_NEW) };
        why = DropReason::TailCallFailed;
    } else if code != DROPPED {
        return code;
    }
    metrics::dropped6(why, Hook::FromContainer, ifindex, len);
    TC_ACT_SHOT as i32
}

/// The new-flow half of `from_container6` (reached by tail call only; a program of its own
/// for a fresh 512-byte stack: masquerading builds three 40-byte tuples).
#[classifier]
pub fn from_container6_new(ctx: TcContext) -> i32 {
    let ifindex = ifindex(&ctx);
    let len = ctx.packet_len();
    let mut why = DropReason::Malformed;
    let code = second_half(&ctx, ifindex, &mut why);
    if code != DROPPED {
        return code;
    }
    metrics::dropped6(why, Hook::FromContainer, ifindex, len);
    TC_ACT_SHOT as i32
}

#[inline(never)]
fn first_half(ctx: &TcContext, ifindex: u32, why: &mut DropReason) -> i32 {
    match try_from_container6(ctx, ifindex) {
        Ok(Step::Verdict(v)) => v,
        Ok(Step::NewFlow) => NO_FLOW,
        Err(d) => {
            *why = d;
            DROPPED
        }
    }
}

#[inline(never)]
fn second_half(ctx: &TcContext, ifindex: u32, why: &mut DropReason) -> i32 {
    let r = config().ok_or(DropReason::NotInitialised).and_then(|_| {
        // What the first half established is established again: this program takes nothing
        // on trust.
        let pkt = packet6::parse(ctx)?;
        let src = sender(ctx, pkt, ifindex)?;
        new_flow(ctx, pkt, src)
    });
    verdict::code(r.map(Some), why)
}

#[inline(always)]
fn try_from_container6(ctx: &TcContext, ifindex: u32) -> Result<Step, DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let pkt = packet6::parse(ctx)?;
    if ctx.len() > pkt.end {
        // What follows the datagram goes before anything measures it (see trim_to_datagram).
        packet::cut_after(ctx, pkt.end)?;
    }
    if ndp::is_ndp_or_mld(pkt) {
        let v = ndp::answer(ctx, pkt, ifindex)?;
        metrics::path(Path::NdpReply, ctx.packet_len());
        return Ok(Step::Verdict(v));
    }
    sender(ctx, pkt, ifindex)?;
    if is_multicast6(&pkt.daddr) {
        return Err(DropReason::Multicast);
    }
    if is_link_local6(&pkt.daddr) {
        return Err(DropReason::LinkLocal);
    }
    if is_martian6(&pkt.daddr) {
        return Err(DropReason::Martian);
    }
    packet6::remember_fragment(pkt);
    if pkt.is_icmp_error() {
        let mut why = DropReason::Malformed;
        match icmp6::from_container(ctx, pkt, &mut why) {
            NO_FLOW => {}
            DROPPED => return Err(why),
            v => return Ok(Step::Verdict(v)),
        }
    }
    if pkt.tracked() && !pkt.is_icmp_error() {
        let mut why = DropReason::Malformed;
        match tracked(ctx, pkt, cfg, &mut why) {
            NO_FLOW => {}
            DROPPED => return Err(why),
            v => return Ok(Step::Verdict(v)),
        }
    }
    Ok(Step::NewFlow)
}

/// The container that sent `pkt` on `ifindex`: its source address and MAC must be the
/// container's own. A link-local or unspecified source is legal only for neighbour
/// discovery, handled before.
#[inline(always)]
fn sender(ctx: &TcContext, pkt: &Ipv6, ifindex: u32) -> Result<&'static Endpoint, DropReason> {
    if is_link_local6(&pkt.saddr) || is_unspecified6(&pkt.saddr) {
        return Err(DropReason::LinkLocal);
    }
    let src = endpoint6(&pkt.saddr).ok_or(DropReason::SpoofedSource)?;
    let eth_src: [u8; 6] = packet6::load(ctx, 6)?;
    if src.ifindex != ifindex || eth_src != src.mac {
        return Err(DropReason::SpoofedSource);
    }
    Ok(src)
}

/// A packet of a flow conntrack knows, translated and sent on: its verdict, [`NO_FLOW`] when
/// no entry holds it (or a closed flow's tuple is reused), [`DROPPED`] with `why` when it
/// cannot be sent.
#[inline(never)]
fn tracked(ctx: &TcContext, pkt: &Ipv6, cfg: &Config, why: &mut DropReason) -> i32 {
    verdict::code(try_tracked(ctx, pkt, cfg), why)
}

#[inline(always)]
fn try_tracked(ctx: &TcContext, pkt: &Ipv6, cfg: &Config) -> Result<Option<i32>, DropReason> {
    let key = pkt.flow();
    let now = conntrack::now();
    let Some(e) = conntrack::lookup(&key, cfg, now) else {
        return Ok(None);
    };
    let Hit::Forward { rewrite, flags } = conntrack::on_hit(&key, e, pkt.seg(), now) else {
        return Ok(None);
    };
    let path = crate::from_container::tracked_path(flags);
    if let Some(ep) = endpoint6(&rewrite.daddr) {
        nat6::rewrite(ctx, pkt, &rewrite)?;
        metrics::path(path, ctx.packet_len());
        return deliver::to_endpoint(ctx, ep).map(Some);
    }
    let mut extra = deliver::Route6Extra::default();
    let r = deliver::route6(ctx, pkt, &rewrite.daddr, &mut extra)?;
    // Answered before translating, as a router on the path would: "packet too big" for a
    // flow's segment the uplink cannot carry (the container then sends smaller ones).
    if let Route::TooBig { .. } = r {
        return answer(
            ctx,
            pkt,
            icmp6::ICMP6_PACKET_TOO_BIG,
            extra.mtu,
            DropReason::TooBig,
        )
        .map(Some);
    }
    if pkt.hop_limit <= 1 {
        return answer(
            ctx,
            pkt,
            icmp6::ICMP6_TIME_EXCEEDED,
            0,
            DropReason::TtlExceeded,
        )
        .map(Some);
    }
    nat6::rewrite(ctx, pkt, &rewrite)?;
    metrics::path(path, ctx.packet_len());
    deliver::out6(ctx, pkt, &r).map(Some)
}

/// Decides a flow no conntrack entry knows.
#[inline(always)]
fn new_flow(ctx: &TcContext, pkt: &Ipv6, src: &Endpoint) -> Result<i32, DropReason> {
    if pkt.frag == Frag::Later {
        // The first fragment made the flow; this one follows its translation or not at all.
        return Err(DropReason::Fragment);
    }
    if let Some(dst) = endpoint6(&pkt.daddr) {
        open_local(pkt, src, dst)?;
        metrics::path(Path::ContainerToContainer, ctx.packet_len());
        return deliver::to_endpoint(ctx, dst);
    }
    if pkt.may_open()
        && let Some(t) = publish::lookup6(&pkt.daddr, pkt.proto, pkt.dport, false)
    {
        return open_hairpin(ctx, pkt, src, &t);
    }
    if is_host_addr6(&pkt.daddr) {
        return to_host(ctx, pkt, src);
    }
    if subnet6(&pkt.daddr).is_some() {
        // An address of a Weir network no container holds exists nowhere: never let it leak
        // to the world through the default route.
        return Err(DropReason::UnknownEndpoint);
    }
    // Routed and checked first, masqueraded after, each in a function of its own called
    // from here: nested, their frames would pass the 512 bytes of stack a program has.
    let s = nat6::scratch().ok_or(DropReason::CtInsertFailed)?;
    let mut why = DropReason::NoRoute;
    let v = route_out(ctx, pkt, src, s, &mut why);
    if v == DROPPED {
        return Err(why);
    }
    if v != TO_WORLD {
        return Ok(v);
    }
    let f = NewFlow {
        flags: 0,
        src_identity: src.identity,
        dst_identity: IDENTITY_WORLD,
    };
    s.orig = pkt.flow();
    let nat_addr = s.nat_addr;
    nat6::masquerade(ctx, s, &nat_addr, &f)?;
    nat6::rewrite(ctx, pkt, &s.new)?;
    metrics::path(Path::Egress, ctx.packet_len());
    deliver::out6(ctx, pkt, &s.route)
}

/// [`route_out`]'s "to the world": its route and NAT66 address are in the scratch slot.
const TO_WORLD: i32 = -1002;

/// Routes a new flow that is for no container: to the host (an address the lookup calls
/// local, a verdict), or out of the uplink ([`TO_WORLD`], with the route and the address to
/// masquerade to in `s`); its drop written to `why`.
#[inline(never)]
fn route_out(
    ctx: &TcContext,
    pkt: &Ipv6,
    src: &Endpoint,
    s: &mut nat6::Snat6,
    why: &mut DropReason,
) -> i32 {
    verdict::code(try_route_out(ctx, pkt, src, s).map(Some), why)
}

#[inline(always)]
fn try_route_out(
    ctx: &TcContext,
    pkt: &Ipv6,
    src: &Endpoint,
    s: &mut nat6::Snat6,
) -> Result<i32, DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let mut extra = deliver::Route6Extra::default();
    s.route = deliver::route6(ctx, pkt, &pkt.daddr, &mut extra)?;
    let out_if = match s.route {
        Route::Out { ifindex, .. } | Route::TooBig { ifindex } => ifindex,
        Route::Local => return to_host(ctx, pkt, src),
    };
    may_leave(pkt, src, out_if, cfg)?;
    if let Route::TooBig { .. } = s.route {
        return answer(
            ctx,
            pkt,
            icmp6::ICMP6_PACKET_TOO_BIG,
            extra.mtu,
            DropReason::TooBig,
        );
    }
    if pkt.hop_limit <= 1 {
        return answer(
            ctx,
            pkt,
            icmp6::ICMP6_TIME_EXCEEDED,
            0,
            DropReason::TtlExceeded,
        );
    }
    s.nat_addr = nat_source(&extra.src).ok_or(DropReason::NoRoute)?;
    Ok(TO_WORLD)
}

/// A published port through a host address (hairpin), under the policy of a direct
/// connection to the container behind it. A container reaching itself is given its gateway as
/// source (its own address would be a martian to it), as with IPv4.
#[inline(never)]
fn open_hairpin(
    ctx: &TcContext,
    pkt: &Ipv6,
    src: &Endpoint,
    t: &PublishTarget6,
) -> Result<i32, DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let dst = endpoint6(&t.addr).ok_or(DropReason::UnknownEndpoint)?;
    policy::check(src, dst, pkt.proto, t.port)?;
    let saddr = if Ipv6Be::same(&t.addr, &pkt.saddr) {
        gateway6_of(&pkt.saddr).ok_or(DropReason::UnknownEndpoint)?
    } else {
        pkt.saddr
    };
    let new = FlowKey6::new(saddr, t.addr, pkt.sport, t.port, pkt.proto);
    let f = NewFlow {
        flags: flags::HAIRPIN | flags::DNAT,
        src_identity: src.identity,
        dst_identity: dst.identity,
    };
    conntrack::create_pair(&pkt.flow(), &new, &f, cfg, conntrack::now())?;
    metrics::event(Event::DnatNew);
    nat6::rewrite(ctx, pkt, &new)?;
    metrics::path(Path::Hairpin, ctx.packet_len());
    deliver::to_endpoint(ctx, dst)
}

/// Container to container, under policy: a function of its own, its 40-byte keys off the
/// caller's frame.
#[inline(never)]
fn open_local(pkt: &Ipv6, src: &Endpoint, dst: &Endpoint) -> Result<(), DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    policy::open_local(&pkt.flow(), pkt.seg(), pkt.tracked(), src, dst, cfg)
}

/// The host itself: handed to its stack. An internal network reaches only its own gateway.
#[inline(always)]
fn to_host(ctx: &TcContext, pkt: &Ipv6, src: &Endpoint) -> Result<i32, DropReason> {
    let own_gateway = is_host_addr6(&pkt.daddr) && subnet6(&pkt.daddr) == Some(src.network);
    if src.flags & ep_flags::INTERNAL != 0 && !own_gateway {
        return Err(DropReason::InternalNetwork);
    }
    metrics::path(Path::ContainerToHost, ctx.packet_len());
    Ok(TC_ACT_OK as i32)
}

/// The address NAT66 gives the flow: the source the kernel would pick towards its
/// destination, else the uplink's global address recorded at init.
#[inline(always)]
fn nat_source(chosen: &Ipv6Be) -> Option<Ipv6Be> {
    if !is_unspecified6(chosen) && !is_link_local6(chosen) {
        return Some(*chosen);
    }
    let fallback = config6()?.uplink_ip6;
    (!is_unspecified6(&fallback)).then_some(fallback)
}

/// Every check a new flow to the world passes (as IPv4's `may_leave`; IPv6 hands nothing to
/// the host stack, whose forwarding is off: Weir answers expiring and too big packets itself).
#[inline(never)]
fn may_leave(pkt: &Ipv6, src: &Endpoint, out_if: u32, cfg: &Config) -> Result<(), DropReason> {
    if out_if != cfg.uplink_ifindex {
        return Err(DropReason::NoRoute);
    }
    if src.flags & ep_flags::INTERNAL != 0 {
        return Err(DropReason::InternalNetwork);
    }
    if pkt.is_icmp_error() {
        return Err(DropReason::IcmpErrorUnmatched);
    }
    if pkt.proto == IPPROTO_ICMPV6 && (pkt.icmp_type != ICMP6_ECHO_REQUEST || !pkt.tracked()) {
        return Err(DropReason::IcmpUntracked);
    }
    if !packet6::has_ports(pkt.proto) {
        return Err(DropReason::UnsupportedL4);
    }
    Ok(())
}

/// Answers a packet Weir cannot send on with ICMPv6 error `ty` (see `icmp6`), unless it is
/// itself an error (RFC 4443 §2.4e): then it is dropped, counted as `otherwise`.
#[inline(always)]
fn answer(
    ctx: &TcContext,
    pkt: &Ipv6,
    ty: u8,
    info: u32,
    otherwise: DropReason,
) -> Result<i32, DropReason> {
    if pkt.is_icmp_error() {
        return Err(otherwise);
    }
    icmp6::answer_container(ctx, pkt, ty, info)
}
