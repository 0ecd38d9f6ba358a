//! IPv6 rewriting: addresses (no L3 checksum; the upper layer's covers them through the
//! pseudo-header, ICMPv6's included), ports through the shared `nat::set_port`, the hop limit,
//! and the host-socket check of SNAT port probing.

use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR,
    helpers::{bpf_csum_diff, bpf_get_prandom_u32},
    programs::TcContext,
};
use weir_common::{
    addr::Ipv6Be,
    conntrack::{FlowKey6, IPPROTO_ICMPV6, flags},
    ports::SNAT_RETRIES,
    stats::{DropReason, Event},
};

use crate::{
    conntrack::{self, Insert, NewFlow, insert_orig, insert_reply},
    deliver::Route,
    family::Family,
    maps::{WEIR_SNAT6_SCRATCH, config},
    metrics,
    nat::{self, socket_found},
    packet::Frag,
    packet6::{DADDR_OFF, HOP_LIMIT_OFF, Ipv6, SADDR_OFF},
};

/// `bpf_l4_csum_replace`'s flag saying the update is of an IPv6 address, whose change and the
/// checksum's cancel out in skb->csum (kernel commit ead7f9b8de65, 2025: without it a
/// CHECKSUM_COMPLETE skb's csum is corrupted). Missing from aya's bindings; kernels before the
/// fix refuse it, and are retried without.
const BPF_F_IPV6: u64 = 1 << 7;

/// The upper-layer checksum an address change must amend: TCP's, UDP's and ICMPv6's all
/// cover the pseudo-header.
#[inline(always)]
fn pseudo_csum(pkt: &Ipv6) -> Option<(usize, u64)> {
    match pkt.proto {
        IPPROTO_ICMPV6 => Some((pkt.l4_off + 2, 0)),
        p => nat::l4_csum(p, pkt.l4_off),
    }
}

/// Rewrites the address at `off` of `pkt` (an outer one), amending the upper-layer checksum
/// through the pseudo-header.
#[inline(always)]
pub fn set_addr(
    ctx: &TcContext,
    pkt: &Ipv6,
    off: usize,
    old: &Ipv6Be,
    new: &Ipv6Be,
) -> Result<(), DropReason> {
    if Ipv6Be::same(old, new) {
        return Ok(());
    }
    // A later fragment and protocols without a checksum have no field that compensates the
    // change in skb->csum (checksum-less UDP never gets here: the parser refuses it).
    if pkt.frag != Frag::Later
        && let Some((csum_off, extra)) = pseudo_csum(pkt)
    {
        let diff = addr_diff(old, new)?;
        // Size 0: `to` is a precomputed difference.
        let flags = BPF_F_PSEUDO_HDR as u64 | extra;
        if ctx
            .l4_csum_replace(csum_off, 0, diff, flags | BPF_F_IPV6)
            .is_err()
        {
            ctx.l4_csum_replace(csum_off, 0, diff, flags)
                .map_err(|_| DropReason::ChecksumFailed)?;
        }
        return ctx.store(off, new, 0).map_err(|_| DropReason::WriteFailed);
    }
    ctx.store(off, new, nat::UNCOMPENSATED)
        .map_err(|_| DropReason::WriteFailed)
}

/// The checksum difference of an address changing from `old` to `new`.
#[inline(always)]
pub fn addr_diff(old: &Ipv6Be, new: &Ipv6Be) -> Result<u64, DropReason> {
    let (mut from, mut to) = (*old, *new);
    // SAFETY: two 16-byte buffers on our stack, sizes multiples of 4 as the helper wants.
    let diff = unsafe { bpf_csum_diff(from.as_mut_ptr(), 16, to.as_mut_ptr(), 16, 0) };
    if diff < 0 {
        return Err(DropReason::ChecksumFailed);
    }
    Ok(diff as u64)
}

/// Rewrites the packet described by `pkt` to carry the tuple `new`. A BPF function of its
/// own: its address copies stay off its callers' frames.
#[inline(never)]
pub fn rewrite(ctx: &TcContext, pkt: &Ipv6, new: &FlowKey6) -> Result<(), DropReason> {
    set_addr(ctx, pkt, SADDR_OFF, &pkt.saddr, &new.saddr)?;
    set_addr(ctx, pkt, DADDR_OFF, &pkt.daddr, &new.daddr)?;
    let l4 = nat::L4 {
        proto: pkt.proto,
        l4_off: pkt.l4_off,
        later: pkt.frag == Frag::Later,
        icmp_type: pkt.icmp_type,
        sport: pkt.sport,
        dport: pkt.dport,
        udp_unsummed: false,
    };
    nat::rewrite_ports(ctx, &l4, new.sport, new.dport)
}

/// Decrements the hop limit of a routed packet. IPv6 has no header checksum to compensate
/// the change, so skb->csum is amended (a CHECKSUM_COMPLETE skb would otherwise reach the
/// receiver with a stale sum).
#[inline(always)]
pub fn dec_hop_limit(ctx: &TcContext, hop_limit: u8) -> Result<(), DropReason> {
    if hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    ctx.store(HOP_LIMIT_OFF, &(hop_limit - 1), nat::UNCOMPENSATED)
        .map_err(|_| DropReason::WriteFailed)
}

/// `bpf_sock_tuple` for IPv6: exactly 36 bytes, the size that selects the family.
#[repr(C)]
struct SockTuple6 {
    saddr: Ipv6Be,
    daddr: Ipv6Be,
    sport: u16,
    dport: u16,
}

/// As [`nat::host_socket_holds`], for IPv6 (its 36-byte tuple in a frame of its own).
#[inline(never)]
pub fn host_socket_holds(ctx: &TcContext, out: &FlowKey6) -> bool {
    let mut t = SockTuple6 {
        saddr: out.daddr,
        daddr: out.saddr,
        sport: out.dport,
        dport: out.sport,
    };
    socket_found(ctx, &mut t, out.proto)
}

/// One NAT66 decision's tuples, in a per-CPU slot (`WEIR_SNAT6_SCRATCH`): three 40-byte
/// keys and the probing's call chain do not fit the 512 bytes of stack a program has.
#[repr(C)]
pub struct Snat6 {
    /// The flow as the container sent it (the caller fills it in).
    pub orig: FlowKey6,
    /// The masqueraded tuple, once [`masquerade`] succeeded.
    pub new: FlowKey6,
    pub reply: FlowKey6,
    /// Where the flow leaves, and the address it is masqueraded to.
    pub route: Route<Ipv6Be>,
    pub nat_addr: Ipv6Be,
    /// The path MTU, when the packet is too big for it.
    pub mtu: u32,
}

/// This CPU's [`Snat6`].
#[inline(always)]
pub fn scratch() -> Option<&'static mut Snat6> {
    // SAFETY: a per-CPU slot no other program uses on this CPU while we run.
    WEIR_SNAT6_SCRATCH
        .get_ptr_mut(0)
        .map(|p| unsafe { &mut *p })
}

const CLAIMED: u32 = 0;
const TAKEN: u32 = 1;
const FULL: u32 = 2;

/// [`nat::masquerade`] for IPv6, on [`Snat6`]: the same port probing (the shared
/// `probe_port` and `port_blocked`), with its tuples in map memory.
#[inline(never)]
pub fn masquerade(
    ctx: &TcContext,
    s: &mut Snat6,
    nat_addr: &Ipv6Be,
    f: &NewFlow,
) -> Result<(), DropReason> {
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    let f = NewFlow {
        flags: f.flags | flags::SNAT,
        ..*f
    };
    // SAFETY: helper without preconditions.
    let seed = unsafe { bpf_get_prandom_u32() };
    let mut attempt = 0u32;
    while attempt <= SNAT_RETRIES {
        let port = nat::probe_port(seed, attempt, s.orig.sport, cfg);
        s.new = FlowKey6::new(*nat_addr, s.orig.daddr, port, s.orig.dport, s.orig.proto);
        match claim(ctx, s, &f) {
            CLAIMED => {
                metrics::event(Event::SnatNew);
                return Ok(());
            }
            TAKEN => attempt += 1,
            _ => return Err(DropReason::CtInsertFailed),
        }
    }
    Err(DropReason::SnatExhausted)
}

/// Takes `s.new` for `s.orig` (its conntrack pair) unless the port is not the flow's to take
/// or a live flow holds its reply tuple.
#[inline(never)]
fn claim(ctx: &TcContext, s: &mut Snat6, f: &NewFlow) -> u32 {
    let Some(cfg) = config() else {
        return FULL;
    };
    if nat::port_blocked(ctx, &s.new, cfg) {
        return TAKEN;
    }
    s.reply = s.new.reversed();
    let now = conntrack::now();
    match insert_reply(&s.reply, &s.orig, f, cfg, now) {
        Insert::Done => match insert_orig(&s.orig, &s.new, &s.reply, f, now) {
            Ok(()) => CLAIMED,
            Err(_) => FULL,
        },
        Insert::Taken => TAKEN,
        Insert::Full => FULL,
    }
}
