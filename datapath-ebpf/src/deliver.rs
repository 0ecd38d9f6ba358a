//! Where packets go after their verdict: straight into a container's namespace with
//! `bpf_redirect_peer`, or out of the uplink after a FIB lookup.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_REDIRECT, bpf_check_mtu_ret, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::{bpf_check_mtu, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use weir_common::{
    addr::Ipv6Be,
    conntrack::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    endpoint::Endpoint,
    stats::DropReason,
};

use crate::{family::Family, maps::WEIR_FIB_SCRATCH, nat, nat6, packet::Ipv4, packet6::Ipv6};

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Delivers into the container behind `ep`: it sees a frame from its gateway MAC to its own.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&ep.mac);
    macs[6..].copy_from_slice(&ep.host_mac);
    ctx.store(0, &macs, 0)
        .map_err(|_| DropReason::WriteFailed)?;
    // SAFETY: helper without memory arguments.
    let rc = unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32;
    if rc == TC_ACT_REDIRECT as i32 {
        Ok(rc)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// Result of routing a packet that is not for a container (`A`: the family's address).
pub enum Route<A = u32> {
    /// The destination is an address of the host: hand the packet to the host stack.
    Local,
    /// Forward out of `ifindex` (MACs resolved when `neigh` is false).
    Out {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
        nexthop: A,
        neigh: bool,
    },
    /// Routed out of `ifindex`, but larger than its MTU (see [`too_big`]).
    TooBig { ifindex: u32 },
}

/// What to do with a packet too big for the device it is routed out of. With DF set (every
/// TCP segment and most of the rest) the host stack answers "fragmentation needed", with the
/// MTU, and drops it, as any router would — so the packet must reach it untranslated, for the
/// error to find its sender. Without DF it would have to be fragmented, which Weir does not
/// do: dropped and counted (containers get the uplink's MTU, so this takes a smaller path MTU
/// behind a router that fragments nothing either).
#[inline(always)]
pub fn too_big(pkt: &Ipv4) -> Result<i32, DropReason> {
    if pkt.dont_fragment {
        Ok(TC_ACT_OK as i32)
    } else {
        Err(DropReason::TooBig)
    }
}

/// Looks up the route of `pkt` towards `daddr` (its destination after any DNAT) as the
/// kernel would route it arriving on `in_ifindex`: from its own source (SNAT comes after
/// routing, as in the kernel's POSTROUTING), with its TOS, protocol and ports, so policy
/// routing (`ip rule` on from/tos/ipproto/sport/dport/iif) decides as it would for the
/// kernel. The mark is 0, as on any packet the host's netfilter has not marked: Weir's
/// redirects never pass the mangle hooks that would set one.
#[inline(always)]
pub fn route(
    ctx: &TcContext,
    in_ifindex: u32,
    pkt: &Ipv4,
    daddr: u32,
) -> Result<Route, DropReason> {
    let p = WEIR_FIB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::NoRoute)?;
    // SAFETY: a per-CPU slot, no other program uses it on this CPU while we run; all-zero is a
    // valid bpf_fib_lookup, and every field the lookup reads is set.
    let (rc, p) = unsafe {
        core::ptr::write_bytes(p, 0, 1);
        let p = &mut *p;
        p.family = AF_INET;
        p.l4_protocol = pkt.proto;
        if pkt.proto != IPPROTO_ICMP {
            p.sport = pkt.sport;
            p.dport = pkt.dport;
        }
        p.__bindgen_anon_2.tos = pkt.tos;
        p.ifindex = in_ifindex;
        p.__bindgen_anon_3.ipv4_src = pkt.saddr;
        p.__bindgen_anon_4.ipv4_dst = daddr;
        // tot_len stays 0: the kernel then checks the MTU against the skb itself, which knows
        // about GSO (a GSO packet's IP length is that of all its segments). The skb holds the
        // datagram alone: from_container trims what follows it first.
        let rc = aya_ebpf::helpers::bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        ) as u32;
        (rc, p)
    };
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH && !fits(ctx, p.ifindex) {
        return Ok(Route::TooBig { ifindex: p.ifindex });
    }
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => Ok(Route::Out {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            // SAFETY: the kernel sets ipv4_dst to the next hop.
            nexthop: unsafe { p.__bindgen_anon_4.ipv4_dst },
            neigh: rc == BPF_FIB_LKUP_RET_NO_NEIGH,
        }),
        BPF_FIB_LKUP_RET_NOT_FWDED => Ok(Route::Local),
        // The skb-length check runs after the route is found: ifindex names the device.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(Route::TooBig { ifindex: p.ifindex }),
        _ => Err(DropReason::NoRoute),
    }
}

/// Whether the packet fits `ifindex`'s MTU. The FIB lookup checks only once it has found a
/// neighbour: without this, a first packet too big for a next hop not yet resolved would
/// be dropped by the device, silently, instead of answered with "fragmentation needed".
#[inline(always)]
fn fits(ctx: &TcContext, ifindex: u32) -> bool {
    // 0: measure the skb itself (GSO-aware, like the lookup's own check).
    let mut mtu: u32 = 0;
    // SAFETY: `mtu` is a valid u32 the helper writes the device MTU to.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu, 0, 0) };
    rc != bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED as i64
}

/// Sends a routed packet out of the device `route` chose, decrementing its TTL.
#[inline(always)]
pub fn out(ctx: &TcContext, pkt: &Ipv4, r: &Route) -> Result<i32, DropReason> {
    if !matches!(r, Route::Out { .. }) {
        return match r {
            Route::TooBig { .. } => too_big(pkt),
            _ => Ok(TC_ACT_OK as i32),
        };
    }
    if pkt.ttl <= 1 {
        // Never route an expiring packet (nor wrap a TTL of 0 to 255). Callers hand those to
        // the host stack before translating; this catches the rest (translated ICMP errors).
        return Err(DropReason::TtlExceeded);
    }
    nat::dec_ttl(ctx, pkt.ttl)?;
    send(ctx, r)
}

/// Redirects a packet out of the device of `r` (a [`Route::Out`]), to the next hop's MAC, or
/// through the neighbour subsystem when it is not resolved yet. Both families.
#[inline(always)]
pub fn send<A: Family>(ctx: &TcContext, r: &Route<A>) -> Result<i32, DropReason> {
    let Route::Out {
        ifindex,
        smac,
        dmac,
        nexthop,
        neigh,
    } = r
    else {
        return Err(DropReason::NoRoute);
    };
    if *neigh {
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        A::set_nexthop(&mut nh, nexthop);
        // SAFETY: `nh` lives on our stack for the call.
        let rc = unsafe {
            bpf_redirect_neigh(
                *ifindex,
                &mut nh,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        } as i32;
        return if rc == TC_ACT_REDIRECT as i32 {
            Ok(rc)
        } else {
            Err(DropReason::RedirectFailed)
        };
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(dmac);
    macs[6..].copy_from_slice(smac);
    ctx.store(0, &macs, 0)
        .map_err(|_| DropReason::WriteFailed)?;
    // SAFETY: helper without memory arguments.
    let rc = unsafe { bpf_redirect(*ifindex, 0) } as i32;
    if rc == TC_ACT_REDIRECT as i32 {
        Ok(rc)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// `bpf_fib_lookup`'s flag asking for the source address the kernel would pick (Linux 6.7).
const BPF_FIB_LOOKUP_SRC: u32 = 16;

/// [`route`] for IPv6: the lookup as the kernel would make it for a packet from `pkt.saddr`
/// arriving on `in_ifindex`. Link-local and multicast addresses must be refused before: the
/// lookup answers "not forwarded" for them too, which reads as "local". `chosen` gets the
/// source the kernel would pick towards `daddr` (all zeros where it cannot say: before Linux
/// 6.7, whose lookup refuses the flag and is asked again without it); for a packet too big,
/// `mtu` gets the MTU of its path.
#[inline(never)]
pub fn route6(
    ctx: &TcContext,
    pkt: &Ipv6,
    daddr: &Ipv6Be,
    extra: &mut Route6Extra,
) -> Result<Route<Ipv6Be>, DropReason> {
    let p = WEIR_FIB_SCRATCH.get_ptr_mut(0).ok_or(DropReason::NoRoute)?;
    let mut rc = fib6(ctx, p, pkt, daddr, BPF_FIB_LOOKUP_SRC);
    let with_src = rc >= 0;
    if !with_src {
        rc = fib6(ctx, p, pkt, daddr, 0);
    }
    let rc = rc as u32;
    // SAFETY: the slot, written by the lookup.
    let p = unsafe { &*p };
    if with_src && (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
        // SAFETY: with BPF_FIB_LOOKUP_SRC the kernel wrote the source it picked.
        extra.src = unsafe { p.__bindgen_anon_3.ipv6_src };
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH && !fits(ctx, p.ifindex) {
        extra.mtu = device_mtu(ctx, p.ifindex);
        return Ok(Route::TooBig { ifindex: p.ifindex });
    }
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED {
        // SAFETY: the kernel sets mtu_result when the packet does not fit.
        extra.mtu = unsafe { p.__bindgen_anon_1.mtu_result } as u32;
    }
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => Ok(Route::Out {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            // SAFETY: the kernel sets ipv6_dst to the next hop.
            nexthop: unsafe { p.__bindgen_anon_4.ipv6_dst },
            neigh: rc == BPF_FIB_LKUP_RET_NO_NEIGH,
        }),
        BPF_FIB_LKUP_RET_NOT_FWDED => Ok(Route::Local),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(Route::TooBig { ifindex: p.ifindex }),
        _ => Err(DropReason::NoRoute),
    }
}

/// What [`route6`] reports beside the route.
#[derive(Clone, Copy, Default)]
pub struct Route6Extra {
    /// The source the kernel would pick.
    pub src: Ipv6Be,
    /// The path MTU, when the packet is too big for it.
    pub mtu: u32,
}

/// The MTU of device `ifindex`.
#[inline(always)]
fn device_mtu(ctx: &TcContext, ifindex: u32) -> u32 {
    let mut mtu: u32 = 0;
    // SAFETY: `mtu` is a valid u32 the helper writes the device MTU to.
    unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu, 0, 0) };
    mtu
}

/// One IPv6 FIB lookup into the scratch slot `p`, as arriving on the program's device.
#[inline(never)]
fn fib6(ctx: &TcContext, p: *mut bpf_fib_lookup, pkt: &Ipv6, daddr: &Ipv6Be, flags: u32) -> i64 {
    // SAFETY: a per-CPU slot (see `route`); every field the lookup reads is set.
    unsafe {
        core::ptr::write_bytes(p, 0, 1);
        let q = &mut *p;
        q.family = AF_INET6;
        q.l4_protocol = pkt.proto;
        if pkt.proto != IPPROTO_ICMPV6 {
            q.sport = pkt.sport;
            q.dport = pkt.dport;
        }
        q.ifindex = crate::context::ifindex(ctx);
        q.__bindgen_anon_3.ipv6_src = pkt.saddr;
        q.__bindgen_anon_4.ipv6_dst = *daddr;
        aya_ebpf::helpers::bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    }
}

/// Sends a routed IPv6 packet out, decrementing its hop limit.
#[inline(always)]
pub fn out6(ctx: &TcContext, pkt: &Ipv6, r: &Route<Ipv6Be>) -> Result<i32, DropReason> {
    match r {
        Route::Out { .. } => {}
        // IPv6 routers never fragment, and the host stack answers nothing Weir hands it (its
        // forwarding is off): too big is dropped and counted.
        Route::TooBig { .. } => return Err(DropReason::TooBig),
        Route::Local => return Ok(TC_ACT_OK as i32),
    }
    nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
    send(ctx, r)
}
