//! ICMPv6 errors from the world (packet too big, destination unreachable, time exceeded,
//! parameter problem) about a translated flow: the quoted packet left the host masqueraded
//! (or as a published port's reply), so the error names the host; translated back, it
//! reaches the container with every checksum intact. Packet too big above all: IPv6 routers
//! never fragment, so without it a smaller path MTU is a black hole (cilium#16080).
//!
//! Checksums: the outer ICMPv6 checksum covers the pseudo-header (the outer destination
//! changes) and the whole quote. In the quote, the source address and port change and so
//! does the quoted upper-layer checksum, by exactly their negation: the three cancel out in
//! the outer sum, so the outer checksum is amended for its own destination only.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, bpf_adj_room_mode},
    helpers::{bpf_csum_diff, bpf_skb_change_tail, bpf_skb_load_bytes},
    programs::TcContext,
};
use weir_common::{
    addr::Ipv6Be,
    conntrack::{FlowKey6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    csum::{fold, fold64, pseudo_header6},
    stats::DropReason,
};

use crate::{
    conntrack, deliver,
    family::Family,
    maps::{WEIR_ICMP6_SCRATCH, config, endpoint6, gateway6_of},
    nat6,
    packet::{Frag, L3_OFF},
    packet6::{DADDR_OFF, ICMP6_ECHO_REQUEST, Ipv6, L4_OFF, SADDR_OFF, load},
    verdict,
};

/// Whose error it is, which says which side of the quoted packet is ours to translate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// From the world, about a packet the host sent (masqueraded, or a published port's
    /// reply): the quote's source is the host's.
    World,
    /// From a container, about a packet it received (a masqueraded flow's reply, a published
    /// port's client): the quote's destination is the container.
    Container,
}

/// Where the quote's fields sit, and what they hold.
struct Quote {
    /// The flow it belongs to, as the quoted packet carried it.
    flow: FlowKey6,
    /// Our side of it (see [`Side`]): its address and port, and where they sit.
    addr: Ipv6Be,
    port: u16,
    addr_off: usize,
    port_off: usize,
    /// The quoted upper-layer checksum.
    csum_off: usize,
    csum_flags: u64,
}

/// Reads the packet an error quotes (the fixed IPv6 header and the first 8 bytes of its upper
/// layer; extension headers in the quote are not followed). None when it is none of a flow
/// Weir could have translated.
#[inline(always)]
fn quote(ctx: &TcContext, pkt: &Ipv6, side: Side) -> Option<Quote> {
    let off = pkt.l4_off + 8;
    let fixed: [u8; 8] = load(ctx, off).ok()?;
    if fixed[0] >> 4 != 6 {
        return None;
    }
    let proto = fixed[6];
    let saddr: Ipv6Be = load(ctx, off + 8).ok()?;
    let daddr: Ipv6Be = load(ctx, off + 24).ok()?;
    let l4 = off + 40;
    let h: [u8; 8] = load(ctx, l4).ok()?;
    let mangled = BPF_F_MARK_MANGLED_0 as u64;
    let (sport, dport, csum_off, csum_flags) = match proto {
        IPPROTO_TCP => (ports(&h, 0), ports(&h, 2), l4 + 16, 0),
        IPPROTO_UDP => (ports(&h, 0), ports(&h, 2), l4 + 6, mangled),
        // The host's echo request (a container's, masqueraded): its identifier is the port.
        IPPROTO_ICMPV6 if h[0] == ICMP6_ECHO_REQUEST && side == Side::World => {
            (ports(&h, 4), 0, l4 + 2, 0)
        }
        _ => return None,
    };
    // The quoted checksum must be in the quote to be amended (see the module comment).
    if csum_off as u32 + 2 > pkt.end {
        return None;
    }
    let echo = proto == IPPROTO_ICMPV6;
    let (addr, port, addr_off, port_off) = match side {
        Side::World => (saddr, sport, off + 8, if echo { l4 + 4 } else { l4 }),
        Side::Container => (daddr, dport, off + 24, l4 + 2),
    };
    Some(Quote {
        flow: FlowKey6::new(saddr, daddr, sport, dport, proto),
        addr,
        port,
        addr_off,
        port_off,
        csum_off,
        csum_flags,
    })
}

#[inline(always)]
fn ports(h: &[u8; 8], at: usize) -> u16 {
    u16::from_ne_bytes([h[at], h[at + 1]])
}

/// Translates an error from the world about a flow of a container's and hands it to that
/// container: its verdict, [`verdict::NO_FLOW`] when the error is about none (the host's business),
/// or [`verdict::DROPPED`] with `why`. A function of its own, off the caller's frame.
#[inline(never)]
pub fn from_world(ctx: &TcContext, pkt: &Ipv6, why: &mut DropReason) -> i32 {
    verdict::code(translate(ctx, pkt, Side::World), why)
}

/// Translates an error a container sends about a packet of one of its translated flows (its
/// published port's client, a masqueraded flow's far end) onto what that peer sent, and sends
/// it there: as [`from_world`]; [`verdict::NO_FLOW`] leaves it to the container-to-container path.
#[inline(never)]
pub fn from_container(ctx: &TcContext, pkt: &Ipv6, why: &mut DropReason) -> i32 {
    verdict::code(translate(ctx, pkt, Side::Container), why)
}

#[inline(always)]
fn translate(ctx: &TcContext, pkt: &Ipv6, side: Side) -> Result<Option<i32>, DropReason> {
    if pkt.frag != Frag::None {
        return Ok(None);
    }
    let Some(q) = quote(ctx, pkt, side) else {
        return Ok(None);
    };
    // An error goes to whoever sent what it quotes; a container errs only about what it got.
    let outer = match side {
        Side::World => &pkt.daddr,
        Side::Container => &pkt.saddr,
    };
    if !Ipv6Be::same(&q.addr, outer) {
        return Ok(None);
    }
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    // The quoted packet's replies are what the other entry of its flow is keyed by; its
    // rewrite names our side as the peer knows it (World: the container; Container: the
    // host's address and port).
    let key = q.flow.reversed();
    let Some(e) = conntrack::lookup(&key, cfg, conntrack::now()) else {
        return Ok(None);
    };
    // SAFETY: map value pointer valid for this run.
    let (to, to_port) = unsafe {
        match side {
            Side::World => ((*e).rewrite.daddr, (*e).rewrite.dport),
            Side::Container => ((*e).rewrite.saddr, (*e).rewrite.sport),
        }
    };
    if Ipv6Be::same(&to, &q.addr) && to_port == q.port {
        // Nothing translated (a flow between containers): policy decides it as it comes.
        return Ok(None);
    }
    // The quote: our address and port, with its own checksum.
    let fail = |_| DropReason::ChecksumFailed;
    let diff = nat6::addr_diff(&q.addr, &to)?;
    ctx.l4_csum_replace(q.csum_off, 0, diff, q.csum_flags)
        .map_err(fail)?;
    let port = q.csum_flags | 2;
    ctx.l4_csum_replace(q.csum_off, q.port as u64, to_port as u64, port)
        .map_err(fail)?;
    let w = |r: Result<(), _>| r.map_err(|_| DropReason::WriteFailed);
    w(ctx.store(q.port_off, &to_port, 0))?;
    w(ctx.store(q.addr_off, &to, 0))?;
    crate::metrics::path(weir_common::stats::Path::IcmpError, ctx.len());
    // The outer address, through the ICMPv6 checksum's pseudo-header.
    match side {
        Side::World => {
            let ep = endpoint6(&to).ok_or(DropReason::UnknownEndpoint)?;
            nat6::set_addr(ctx, pkt, DADDR_OFF, &pkt.daddr, &to)?;
            nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
            deliver::to_endpoint(ctx, ep).map(Some)
        }
        Side::Container => {
            nat6::set_addr(ctx, pkt, SADDR_OFF, &pkt.saddr, &to)?;
            if let Some(ep) = endpoint6(&pkt.daddr) {
                return deliver::to_endpoint(ctx, ep).map(Some);
            }
            let mut extra = deliver::Route6Extra::default();
            let r = deliver::route6(ctx, pkt, &pkt.daddr, &mut extra)?;
            deliver::out6(ctx, pkt, &r).map(Some)
        }
    }
}

pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
pub const ICMP6_TIME_EXCEEDED: u8 = 3;

/// How much of the offending packet an error Weir sends quotes: what fits with the ICMPv6
/// header in the 512 bytes `bpf_csum_diff` sums at once (RFC 4443 §2.4 asks for as much as
/// fits in 1280; every receiver needs only the IPv6 header and the first 8 bytes past it).
const QUOTE_MAX: u32 = 504;

/// Answers `pkt`, a container's packet Weir cannot send on, with ICMPv6 error `ty` (code 0;
/// `info`: the MTU for packet too big), from the container's gateway, as a router would —
/// the host stack answers nothing it is handed with IPv6 forwarding off. Built in place:
/// the packet is cut to its quote, the error's headers go in front.
#[inline(never)]
pub fn answer_container(ctx: &TcContext, pkt: &Ipv6, ty: u8, info: u32) -> Result<i32, DropReason> {
    let ep = endpoint6(&pkt.saddr).ok_or(DropReason::UnknownEndpoint)?;
    let gw = gateway6_of(&pkt.saddr).ok_or(DropReason::UnknownEndpoint)?;
    let to = pkt.saddr;
    let l3_len = ctx.len().saturating_sub(L3_OFF as u32);
    let quote = (l3_len & !3).min(QUOTE_MAX);
    let w = |r: Result<(), _>| r.map_err(|_| DropReason::WriteFailed);
    // SAFETY: helper on this program's own skb; no packet pointer is held across it.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb as *mut _, L3_OFF as u32 + quote, 0) };
    if rc != 0 {
        return Err(DropReason::WriteFailed);
    }
    w(ctx.adjust_room(48, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, 0))?;
    let len = 8 + quote;
    let mut ip = [0u8; 8];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255;
    let mut icmp = [0u8; 8];
    icmp[0] = ty;
    icmp[4..8].copy_from_slice(&info.to_be_bytes());
    w(ctx.store(L3_OFF, &ip, 0))?;
    w(ctx.store(SADDR_OFF, &gw, 0))?;
    w(ctx.store(DADDR_OFF, &to, 0))?;
    w(ctx.store(L4_OFF, &icmp, 0))?;
    let check = checksum(ctx, &gw, &to, len)?;
    w(ctx.store(L4_OFF + 2, &check, 0))?;
    crate::metrics::path(weir_common::stats::Path::IcmpError, ctx.len());
    deliver::to_endpoint(ctx, ep)
}

/// The ICMPv6 checksum of the `len` bytes at [`L4_OFF`] (a multiple of 4, at most 512),
/// their checksum field zero: summed in this CPU's scratch slot.
#[inline(always)]
fn checksum(ctx: &TcContext, src: &Ipv6Be, dst: &Ipv6Be, len: u32) -> Result<u16, DropReason> {
    let buf = WEIR_ICMP6_SCRATCH
        .get_ptr_mut(0)
        .ok_or(DropReason::WriteFailed)?;
    let size = len & 0x3fc;
    if size == 0 || size > 512 {
        return Err(DropReason::Malformed);
    }
    let seed = pseudo_header6(src, dst, IPPROTO_ICMPV6, len);
    // SAFETY: `buf` is a 512-byte per-CPU slot and `size` at most 512, a multiple of 4.
    let sum = unsafe {
        let rc = bpf_skb_load_bytes(ctx.skb.skb as *const _, L4_OFF as u32, buf as *mut _, size);
        if rc != 0 {
            return Err(DropReason::Malformed);
        }
        bpf_csum_diff(core::ptr::null_mut(), 0, buf as *mut u32, size, seed)
    };
    if sum < 0 {
        return Err(DropReason::ChecksumFailed);
    }
    Ok(!fold(fold64(sum as u64)))
}
