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

use aya_ebpf::{bindings::BPF_F_MARK_MANGLED_0, programs::TcContext};
use weir_common::{
    addr::Ipv6Be,
    conntrack::{FlowKey6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    stats::DropReason,
};

use crate::{
    conntrack, deliver,
    family::Family,
    maps::{config, endpoint6},
    nat6,
    packet::Frag,
    packet6::{DADDR_OFF, ICMP6_ECHO_REQUEST, Ipv6, load},
    uplink6::{DROPPED, NO_FLOW},
};

/// Where the quote's fields sit, and what they hold.
struct Quote {
    /// Its source address (the host's), at `off + 8`.
    saddr: Ipv6Be,
    /// The flow it belongs to, as the host sent it.
    flow: FlowKey6,
    /// Offset of the port (or echo identifier) the host's side of the flow uses, and of the
    /// quoted upper-layer checksum.
    port_off: usize,
    csum_off: usize,
    csum_flags: u64,
}

/// Reads the packet an error quotes (the fixed IPv6 header and the first 8 bytes of its upper
/// layer; extension headers in the quote are not followed). None when it is none of a flow
/// Weir could have translated.
#[inline(always)]
fn quote(ctx: &TcContext, pkt: &Ipv6) -> Option<Quote> {
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
    let (sport, dport, port_off, csum_off, csum_flags) = match proto {
        IPPROTO_TCP => (ports(&h, 0), ports(&h, 2), l4, l4 + 16, 0),
        IPPROTO_UDP => {
            let mangled = BPF_F_MARK_MANGLED_0 as u64;
            (ports(&h, 0), ports(&h, 2), l4, l4 + 6, mangled)
        }
        // The host's echo request (a container's, masqueraded): its identifier is the port.
        IPPROTO_ICMPV6 if h[0] == ICMP6_ECHO_REQUEST => (ports(&h, 4), 0, l4 + 4, l4 + 2, 0),
        _ => return None,
    };
    // The quoted checksum must be in the quote to be amended (see the module comment).
    if csum_off as u32 + 2 > pkt.end {
        return None;
    }
    Some(Quote {
        saddr,
        flow: FlowKey6::new(saddr, daddr, sport, dport, proto),
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
/// container: its verdict, [`NO_FLOW`] when the error is about none (the host's business),
/// or [`DROPPED`] with `why`. A function of its own, off the caller's frame.
#[inline(never)]
pub fn from_world(ctx: &TcContext, pkt: &Ipv6, why: &mut DropReason) -> i32 {
    match translate(ctx, pkt) {
        Ok(Some(v)) => v,
        Ok(None) => NO_FLOW,
        Err(d) => {
            *why = d;
            DROPPED
        }
    }
}

#[inline(always)]
fn translate(ctx: &TcContext, pkt: &Ipv6) -> Result<Option<i32>, DropReason> {
    if pkt.frag != Frag::None {
        return Ok(None);
    }
    let Some(q) = quote(ctx, pkt) else {
        return Ok(None);
    };
    // An error goes to whoever sent what it quotes.
    if !Ipv6Be::same(&q.saddr, &pkt.daddr) {
        return Ok(None);
    }
    let cfg = config().ok_or(DropReason::NotInitialised)?;
    // The quoted packet's replies are what the flow's reply entry is keyed by; its rewrite
    // names the container's side.
    let key = q.flow.reversed();
    let Some(e) = conntrack::lookup(&key, cfg, conntrack::now()) else {
        return Ok(None);
    };
    // SAFETY: map value pointer valid for this run.
    let (ctr, ctr_port) = unsafe { ((*e).rewrite.daddr, (*e).rewrite.dport) };
    let Some(ep) = endpoint6(&ctr) else {
        return Ok(None);
    };
    // The quote: source address and port, with its own checksum.
    let fail = |_| DropReason::ChecksumFailed;
    let diff = nat6::addr_diff(&q.saddr, &ctr)?;
    ctx.l4_csum_replace(q.csum_off, 0, diff, q.csum_flags)
        .map_err(fail)?;
    ctx.l4_csum_replace(
        q.csum_off,
        q.flow.sport as u64,
        ctr_port as u64,
        q.csum_flags | 2,
    )
    .map_err(fail)?;
    let w = |r: Result<(), _>| r.map_err(|_| DropReason::WriteFailed);
    w(ctx.store(q.port_off, &ctr_port, 0))?;
    w(ctx.store(pkt.l4_off + 8 + 8, &ctr, 0))?;
    // The outer destination, through the ICMPv6 checksum's pseudo-header.
    nat6::set_addr(ctx, pkt, DADDR_OFF, &pkt.daddr, &ctr)?;
    nat6::dec_hop_limit(ctx, pkt.hop_limit)?;
    crate::metrics::path(weir_common::stats::Path::IcmpError, ctx.len());
    deliver::to_endpoint(ctx, ep).map(Some)
}
