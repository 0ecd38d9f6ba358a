//! Address and port rewriting with correct checksums on the skb path, and SNAT source-port
//! allocation for masquerading.
//!
//! Checksums go through `bpf_l3_csum_replace`/`bpf_l4_csum_replace`, which also handle
//! CHECKSUM_PARTIAL packets from local stacks (only the pseudo-header part is patched) and
//! UDP's "no checksum" zero (BPF_F_MARK_MANGLED_0).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM,
        bpf_sock_tuple,
    },
    helpers::{bpf_get_prandom_u32, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use weir_common::{
    config::Config,
    conntrack::{
        FlowKey, FlowKeyOf, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, flags,
    },
    ports::{SNAT_RETRIES, candidate},
    stats::{DropReason, Event},
};

use crate::{
    conntrack::{Insert, NewFlow, insert_orig, insert_reply},
    family::Family,
    metrics,
    packet::{Frag, ICMP_ECHO, ICMP_ECHO_REPLY, Ipv4, L3_OFF},
    packet6::{ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST},
};

const IP_CSUM_OFF: usize = L3_OFF + 10;
const IP_SRC_OFF: usize = L3_OFF + 12;
const IP_DST_OFF: usize = L3_OFF + 16;
const IP_TTL_OFF: usize = L3_OFF + 8;

/// Offset of the L4 checksum field and the extra csum flags for TCP and UDP, whose checksums
/// cover the pseudo-header.
#[inline(always)]
pub fn l4_csum(proto: u8, l4_off: usize) -> Option<(usize, u64)> {
    match proto {
        IPPROTO_TCP => Some((l4_off + 16, 0)),
        IPPROTO_UDP => Some((l4_off + 6, BPF_F_MARK_MANGLED_0 as u64)),
        _ => None,
    }
}

/// `bpf_skb_store_bytes` flags for a write no checksum field compensates (checksum-less UDP's
/// ports, IPv6's hop limit, a later fragment's addresses): skb->csum is amended, or on a
/// CHECKSUM_COMPLETE skb (a NIC that sums every frame) the receiver finds the sum stale.
pub const UNCOMPENSATED: u64 = BPF_F_RECOMPUTE_CSUM as u64;

#[inline(always)]
fn set_addr(ctx: &TcContext, pkt: &Ipv4, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    if pkt.frag != Frag::Later {
        if let Some((csum_off, extra)) = l4_csum(pkt.proto, pkt.l4_off) {
            ctx.l4_csum_replace(
                csum_off,
                old as u64,
                new as u64,
                BPF_F_PSEUDO_HDR as u64 | extra | 4,
            )
            .map_err(|_| DropReason::ChecksumFailed)?;
        }
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)
        .map_err(|_| DropReason::ChecksumFailed)?;
    ctx.store(off, &new, 0).map_err(|_| DropReason::WriteFailed)
}

/// Rewrites a port (or echo identifier) at `off` of the upper layer `l4`, with its checksum.
/// Both families: ports and identifiers sit at the same offsets, and neither ICMP checksum
/// covers a pseudo-header for them.
#[inline(always)]
pub fn set_port(ctx: &TcContext, l4: &L4, off: usize, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new || l4.later {
        return Ok(());
    }
    let (csum_off, extra) = match l4.proto {
        IPPROTO_ICMP | IPPROTO_ICMPV6 => (l4.l4_off + 2, 0),
        _ => match l4_csum(l4.proto, l4.l4_off) {
            Some(c) => c,
            None => return Ok(()),
        },
    };
    if l4.udp_unsummed {
        return ctx
            .store(off, &new, UNCOMPENSATED)
            .map_err(|_| DropReason::WriteFailed);
    }
    ctx.l4_csum_replace(csum_off, old as u64, new as u64, extra | 2)
        .map_err(|_| DropReason::ChecksumFailed)?;
    ctx.store(off, &new, 0).map_err(|_| DropReason::WriteFailed)
}

/// Rewrites the packet described by `pkt` to carry the tuple `new`.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, pkt: &Ipv4, new: &FlowKey) -> Result<(), DropReason> {
    set_addr(ctx, pkt, IP_SRC_OFF, pkt.saddr, new.saddr)?;
    set_addr(ctx, pkt, IP_DST_OFF, pkt.daddr, new.daddr)?;
    let l4 = L4 {
        proto: pkt.proto,
        l4_off: pkt.l4_off,
        later: pkt.frag == Frag::Later,
        icmp_type: pkt.icmp_type,
        sport: pkt.sport,
        dport: pkt.dport,
        udp_unsummed: pkt.udp_unsummed,
    };
    rewrite_ports(ctx, &l4, new.sport, new.dport)
}

/// The upper layer of a packet of either family, as port rewriting needs it.
pub struct L4 {
    pub proto: u8,
    pub l4_off: usize,
    /// A later fragment: no upper-layer header to rewrite.
    pub later: bool,
    pub icmp_type: u8,
    pub sport: u16,
    pub dport: u16,
    /// UDP sent without a checksum (never over IPv6: its parser refuses it).
    pub udp_unsummed: bool,
}

/// Rewrites the ports (or echo identifier) of a packet of either family to `sport`/`dport`.
#[inline(always)]
pub fn rewrite_ports(ctx: &TcContext, l4: &L4, sport: u16, dport: u16) -> Result<(), DropReason> {
    let port = |off: usize, old: u16, new: u16| set_port(ctx, l4, off, old, new);
    // The echo identifier sits in `sport` for requests and `dport` for replies.
    let (request, reply) = match l4.proto {
        IPPROTO_ICMP => (ICMP_ECHO, ICMP_ECHO_REPLY),
        IPPROTO_ICMPV6 => (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY),
        _ => (0, 0),
    };
    match l4.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            port(l4.l4_off, l4.sport, sport)?;
            port(l4.l4_off + 2, l4.dport, dport)?;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if l4.icmp_type == request {
                port(l4.l4_off + 4, l4.sport, sport)?;
            } else if l4.icmp_type == reply {
                port(l4.l4_off + 4, l4.dport, dport)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Decrements the TTL of a routed packet (the kernel would have, as a router).
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, ttl: u8) -> Result<(), DropReason> {
    // TTL shares a 16-bit checksum word with the protocol byte; only the high byte changes.
    let old = u16::from_ne_bytes([ttl, 0]);
    let new = u16::from_ne_bytes([ttl - 1, 0]);
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 2)
        .map_err(|_| DropReason::ChecksumFailed)?;
    ctx.store(IP_TTL_OFF, &(ttl - 1), 0)
        .map_err(|_| DropReason::WriteFailed)
}

/// `bpf_sock_tuple` for IPv4 (the helpers take its size: the IPv6 half is not needed).
#[repr(C)]
struct SockTuple4 {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

/// Whether a socket of the host (its namespace) would receive the replies of a flow leaving as
/// `out`: a connected socket on exactly that tuple, or one bound or listening on its port.
#[inline(always)]
pub fn host_socket_holds(ctx: &TcContext, out: &FlowKey) -> bool {
    // Seen as the reply arrives: from the remote end to the uplink address.
    let mut t = SockTuple4 {
        saddr: out.daddr,
        daddr: out.saddr,
        sport: out.dport,
        dport: out.sport,
    };
    socket_found(ctx, &mut t, out.proto)
}

/// Looks a socket of the host's namespace up by `tuple` (whose size tells the kernel its
/// family: 12 bytes IPv4, 36 IPv6). Not inlined: a BPF function of its own, with the socket
/// reference confined to it.
#[inline(never)]
pub fn socket_found<T>(ctx: &TcContext, tuple: &mut T, proto: u8) -> bool {
    let size = core::mem::size_of::<T>() as u32;
    let tuple = tuple as *mut T as *mut bpf_sock_tuple;
    let netns = BPF_F_CURRENT_NETNS as u64;
    let skb = ctx.skb.skb as *mut c_void;
    // SAFETY: a tuple of the size given on our stack; the returned reference is released.
    unsafe {
        let sk = match proto {
            IPPROTO_TCP => bpf_skc_lookup_tcp(skb, tuple, size, netns, 0),
            IPPROTO_UDP => bpf_sk_lookup_udp(skb, tuple, size, netns, 0),
            _ => return false,
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk as *mut c_void);
    }
    true
}

/// Whether `port` (network order) is in the host's ephemeral range.
#[inline(always)]
fn hosts_ephemeral(cfg: &Config, port: u16) -> bool {
    let p = u16::from_be(port);
    p >= cfg.host_port_min && p <= cfg.host_port_max
}

/// The source port SNAT tries at `attempt`: the flow's own first, then random ones of the
/// SNAT range. Both families.
#[inline(always)]
pub fn probe_port(seed: u32, attempt: u32, own: u16, cfg: &Config) -> u16 {
    if attempt == 0 {
        return own;
    }
    metrics::event(Event::SnatPortRetry);
    candidate(seed, attempt, cfg.snat_port_min, cfg.snat_port_max).to_be()
}

/// Whether the source port of `new` is not a masqueraded flow's to take (see [`masquerade`]).
/// Both families.
#[inline(always)]
pub fn port_blocked<A: Family>(ctx: &TcContext, new: &FlowKeyOf<A>, cfg: &Config) -> bool {
    // Never a published port: the replies' tuple would then shadow that port for this
    // remote, and its clients' packets would reach this container instead.
    // (The host's ephemeral range can hold only the container's own port, tried first:
    // the SNAT range lies outside it.)
    new.proto != IPPROTO_ICMP
        && new.proto != IPPROTO_ICMPV6
        && (hosts_ephemeral(cfg, new.sport)
            || A::is_published(&new.saddr, new.proto, new.sport)
            || A::socket_holds(ctx, new))
}

/// Picks a source port on `uplink_ip` for a masqueraded flow and creates its conntrack pair.
/// No flow may hold a port of the host's ephemeral range (`Config::host_port_*`): the host's
/// stack picks its own flows' source ports there later, without seeing Weir's table, and a
/// masqueraded flow on one of them would take the replies of the host's next flow to the same
/// destination. So the container's own port is kept (like the kernel's MASQUERADE) only when
/// it lies outside that range and is free; otherwise up to SNAT_RETRIES random ports of the
/// SNAT range — disjoint from the ephemeral one — are probed. A port is free when no flow
/// holds its reply tuple, it is not published, and no socket of the host holds it towards
/// that destination (or listens on it): a masqueraded flow on the tuple of a socket the host
/// has now would take that socket's replies. ICMP identifiers are kept when free: the
/// kernel's ping sockets pick theirs from all 65,535, so no range would be safe from them.
/// Returns the new tuple.
#[inline(always)]
pub fn masquerade<A: Family>(
    ctx: &TcContext,
    orig: &FlowKeyOf<A>,
    nat_addr: A,
    f: &NewFlow,
    cfg: &Config,
    now: u64,
) -> Result<FlowKeyOf<A>, DropReason> {
    let f = NewFlow {
        flags: f.flags | flags::SNAT,
        ..*f
    };
    // SAFETY: helper without preconditions.
    let seed = unsafe { bpf_get_prandom_u32() };
    let mut attempt = 0u32;
    while attempt <= SNAT_RETRIES {
        let port = probe_port(seed, attempt, orig.sport, cfg);
        let new = FlowKeyOf::new(nat_addr, orig.daddr, port, orig.dport, orig.proto);
        if port_blocked(ctx, &new, cfg) {
            attempt += 1;
            continue;
        }
        let reply_key = new.reversed();
        let outcome = insert_reply(&reply_key, orig, &f, cfg, now);
        if outcome == Insert::Full {
            return Err(DropReason::CtInsertFailed);
        }
        if outcome == Insert::Done {
            insert_orig(orig, &new, &reply_key, &f, now)?;
            metrics::event(Event::SnatNew);
            return Ok(new);
        }
        attempt += 1;
    }
    Err(DropReason::SnatExhausted)
}
