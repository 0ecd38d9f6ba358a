//! IPv6 header parsing: the fixed header, then the extension-header chain walked with a
//! bounded loop, then the upper-layer ports. Addresses are read as four words with
//! `bpf_skb_load_bytes` into aligned stack slots (they sit at offsets 22 and 38 of the frame,
//! two bytes off a word), and every later read goes through the same helper at a scalar
//! offset, so no packet pointer outlives a helper that may move the data.

use aya_ebpf::programs::TcContext;
use weir_common::{
    addr::Ipv6Be,
    conntrack::{FlowKey6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    maps::{FragKey6, FragPorts},
    stats::DropReason,
};

use crate::{
    conntrack::Seg,
    context::PacketCtx,
    maps::{WEIR_FRAGS6, WEIR_PKT6_SCRATCH},
    packet::{Frag, L3_OFF},
};

pub const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
pub const HDR_LEN: usize = 40;
/// Where the upper layer starts when no extension header is present.
pub const L4_OFF: usize = L3_OFF + HDR_LEN;
pub const SADDR_OFF: usize = L3_OFF + 8;
pub const DADDR_OFF: usize = L3_OFF + 24;
pub const HOP_LIMIT_OFF: usize = L3_OFF + 7;

pub const ICMP6_ECHO_REQUEST: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;

const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;
/// Extension headers followed before giving up (`ipv6-ext-header`): real traffic carries one
/// or two; each costs the verifier a pass.
const MAX_EXT: usize = 6;

/// What the datapath needs to know about an IPv6 packet.
#[derive(Clone, Copy)]
pub struct Ipv6 {
    pub saddr: Ipv6Be,
    pub daddr: Ipv6Be,
    /// The upper-layer protocol, after the extension headers.
    pub proto: u8,
    pub hop_limit: u8,
    /// Where the upper layer starts.
    pub l4_off: usize,
    /// The datagram's end in the frame (14 + 40 + payload length).
    pub end: u32,
    /// Ports in network order; for ICMPv6 echo the identifier (request: sport, reply: dport).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub frag: Frag,
    /// The fragment header's identification (network order), when there is one.
    pub frag_id: u32,
}

impl Ipv6 {
    #[inline(always)]
    pub const fn flow(&self) -> FlowKey6 {
        FlowKey6::new(self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }

    #[inline(always)]
    pub const fn seg(&self) -> Seg {
        Seg {
            proto: self.proto,
            tcp_flags: self.tcp_flags,
        }
    }

    /// Destination unreachable, packet too big, time exceeded, parameter problem.
    #[inline(always)]
    pub const fn is_icmp_error(&self) -> bool {
        self.proto == IPPROTO_ICMPV6 && self.icmp_type >= 1 && self.icmp_type <= 4
    }

    /// As [`crate::packet::Ipv4::tracked`]: ICMPv6 is tracked only as echo with an identifier.
    #[inline(always)]
    pub const fn tracked(&self) -> bool {
        self.proto != IPPROTO_ICMPV6 || self.sport != 0 || self.dport != 0
    }
}

impl Ipv6 {
    /// As [`crate::packet::Ipv4::may_open`].
    #[inline(always)]
    pub const fn may_open(&self) -> bool {
        match self.proto {
            IPPROTO_TCP => weir_common::conntrack::tcp::is_syn_only(self.tcp_flags),
            IPPROTO_UDP => true,
            IPPROTO_ICMPV6 => self.icmp_type == ICMP6_ECHO_REQUEST,
            _ => false,
        }
    }
}

/// Whether the protocol carries ports (or an echo identifier) that tell its flows apart.
#[inline(always)]
pub const fn has_ports(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMPV6
}

#[inline(always)]
pub fn load<T>(ctx: &TcContext, off: usize) -> Result<T, DropReason> {
    ctx.load::<T>(off).map_err(|_| DropReason::Malformed)
}

/// Source and destination, read before (and whatever) the rest parses.
#[inline(always)]
pub fn addrs(ctx: &TcContext) -> Option<(Ipv6Be, Ipv6Be)> {
    let vtc: u8 = ctx.load(L3_OFF).ok()?;
    if vtc >> 4 != 6 {
        return None;
    }
    Some((ctx.load(SADDR_OFF).ok()?, ctx.load(DADDR_OFF).ok()?))
}

/// Parses the packet at [`L3_OFF`] into this CPU's scratch slot (`WEIR_PKT6_SCRATCH`: the
/// result is larger than the stack frames along the IPv6 paths can hold beside their keys).
/// A later fragment has no ports to read: it is reported as such, and the callers, which do
/// not follow IPv6 fragments yet, drop it.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<&'static Ipv6, DropReason> {
    let p = WEIR_PKT6_SCRATCH
        .get_ptr_mut(0)
        .ok_or(DropReason::Malformed)?;
    // SAFETY: a per-CPU slot no other program uses on this CPU while we run.
    let p = unsafe { &mut *p };
    parse_into(ctx, p)?;
    Ok(p)
}

/// The tuple the parser last left in this CPU's slot (for drop events).
#[inline(always)]
pub fn last_flow() -> FlowKey6 {
    match WEIR_PKT6_SCRATCH.get(0) {
        Some(p) => p.flow(),
        None => FlowKey6::new([0; 4], [0; 4], 0, 0, 0),
    }
}

/// Forgets the last packet (at the start of a program, so that a drop before parsing
/// reports no other packet's tuple), keeping the addresses `addrs` read, if given.
#[inline(always)]
pub fn start(addrs: Option<(Ipv6Be, Ipv6Be)>) {
    if let Some(p) = WEIR_PKT6_SCRATCH.get_ptr_mut(0) {
        let (s, d) = addrs.unwrap_or(([0; 4], [0; 4]));
        // SAFETY: this CPU's slot.
        unsafe {
            (*p).saddr = s;
            (*p).daddr = d;
            (*p).sport = 0;
            (*p).dport = 0;
            (*p).proto = 0;
        }
    }
}

#[inline(never)]
fn parse_into(ctx: &TcContext, p: &mut Ipv6) -> Result<(), DropReason> {
    let fixed: [u8; 8] = load(ctx, L3_OFF)?;
    if fixed[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload = u16::from_be_bytes([fixed[4], fixed[5]]) as u32;
    // A payload length of 0 means a jumbogram: not carried here, but for BIG TCP's GSO
    // packets, whose length is the skb's (and whose hop-by-hop jumbo option, where the
    // kernel still adds one, the walk below skips).
    let big = payload == 0 && ctx.big_gso();
    let end = if big {
        ctx.packet_len()
    } else {
        L4_OFF as u32 + payload
    };
    if (payload == 0 && !big) || end > ctx.packet_len() {
        return Err(DropReason::Malformed);
    }
    *p = Ipv6 {
        saddr: load(ctx, SADDR_OFF)?,
        daddr: load(ctx, DADDR_OFF)?,
        proto: fixed[6],
        hop_limit: fixed[7],
        l4_off: L4_OFF,
        end,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        frag: Frag::None,
        frag_id: 0,
    };
    walk_extensions(ctx, p)?;
    if p.frag == Frag::Later {
        if has_ports(p.proto) {
            // SAFETY: plain value read.
            let ports = unsafe { WEIR_FRAGS6.get(&frag_key(p)) }.ok_or(DropReason::Fragment)?;
            p.sport = ports.sport;
            p.dport = ports.dport;
        }
        return Ok(());
    }
    parse_l4(ctx, p)
}

#[inline(always)]
fn frag_key(p: &Ipv6) -> FragKey6 {
    FragKey6 {
        saddr: p.saddr,
        daddr: p.daddr,
        id: p.frag_id,
        proto: p.proto,
        _pad: [0; 3],
    }
}

/// As [`crate::packet::remember_fragment`], for IPv6: only once the source is validated.
#[inline(always)]
pub fn remember_fragment(p: &Ipv6) {
    if p.frag == Frag::First && has_ports(p.proto) {
        let ports = FragPorts {
            sport: p.sport,
            dport: p.dport,
        };
        let _ = WEIR_FRAGS6.insert(&frag_key(p), &ports, 0);
    }
}

/// Follows the extension headers to the upper layer. Hop-by-hop options only first (RFC
/// 8200 §4.1); a routing header with segments left is a source route, dropped as IPv4's
/// source-route options are; a fragment header records the position (its 32-bit id is not
/// needed until fragments are followed); AH is skipped (its length counts 4-byte units); ESP
/// and "no next header" end the chain with nothing to read.
#[inline(always)]
fn walk_extensions(ctx: &TcContext, p: &mut Ipv6) -> Result<(), DropReason> {
    let mut off = L4_OFF;
    let mut nh = p.proto;
    for i in 0..MAX_EXT {
        let len = match nh {
            NH_HOP_BY_HOP if i == 0 => ext_len(ctx, off)?,
            NH_HOP_BY_HOP => return Err(DropReason::ExtHeader),
            NH_DEST_OPTS => ext_len(ctx, off)?,
            NH_ROUTING => {
                let h: [u8; 4] = load(ctx, off)?;
                if h[3] != 0 {
                    return Err(DropReason::ExtHeader);
                }
                (h[1] as usize + 1) * 8
            }
            NH_FRAGMENT => {
                let h: [u8; 8] = load(ctx, off)?;
                let off_flags = u16::from_be_bytes([h[2], h[3]]);
                let more = off_flags & 1 != 0;
                p.frag_id = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
                p.frag = if off_flags >> 3 != 0 {
                    Frag::Later
                } else if more {
                    Frag::First
                } else {
                    // An atomic fragment (RFC 6946): a whole datagram.
                    Frag::None
                };
                if p.frag == Frag::Later {
                    // What follows is payload, not a header: the chain ends here.
                    p.proto = h[0];
                    p.l4_off = off + 8;
                    return Ok(());
                }
                8
            }
            NH_AH => {
                let h: [u8; 2] = load(ctx, off)?;
                (h[1] as usize + 2) * 4
            }
            _ => {
                p.proto = nh;
                p.l4_off = off;
                return Ok(());
            }
        };
        let h: [u8; 1] = load(ctx, off)?;
        nh = h[0];
        off += len;
        if off as u32 > p.end {
            return Err(DropReason::Malformed);
        }
    }
    Err(DropReason::ExtHeader)
}

/// Length of an options header (hop-by-hop, destination options): 8-byte units past the first.
#[inline(always)]
fn ext_len(ctx: &TcContext, off: usize) -> Result<usize, DropReason> {
    let h: [u8; 2] = load(ctx, off)?;
    Ok((h[1] as usize + 1) * 8)
}

#[inline(always)]
fn parse_l4(ctx: &TcContext, p: &mut Ipv6) -> Result<(), DropReason> {
    let l4_len = p.end.saturating_sub(p.l4_off as u32);
    match p.proto {
        IPPROTO_TCP => {
            if l4_len < 20 {
                return Err(DropReason::Malformed);
            }
            let h: [u8; 14] = load(ctx, p.l4_off)?;
            let doff = (h[12] >> 4) as u32 * 4;
            if doff < 20 || doff > l4_len {
                return Err(DropReason::Malformed);
            }
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        IPPROTO_UDP => {
            if l4_len < 8 {
                return Err(DropReason::Malformed);
            }
            let h: [u8; 8] = load(ctx, p.l4_off)?;
            let ulen = u16::from_be_bytes([h[4], h[5]]) as u32;
            // UDP's checksum is mandatory over IPv6 (RFC 8200 §8.1): zero is no checksum.
            let check = u16::from_ne_bytes([h[6], h[7]]);
            if ulen < 8 || (p.frag == Frag::None && ulen > l4_len) || check == 0 {
                return Err(DropReason::Malformed);
            }
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
        }
        IPPROTO_ICMPV6 => {
            if l4_len < 8 {
                return Err(DropReason::Malformed);
            }
            let h: [u8; 8] = load(ctx, p.l4_off)?;
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match h[0] {
                ICMP6_ECHO_REQUEST => p.sport = id,
                ICMP6_ECHO_REPLY => p.dport = id,
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}
