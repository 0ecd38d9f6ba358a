//! IPv4 header parsing with the header length taken from IHL (IP options respected) and
//! every access bounds-checked. Offsets are kept, not pointers: the TC paths rewrite with
//! skb helpers, which invalidate packet pointers.

use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use weir_common::{
    conntrack::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    maps::{FragKey, FragPorts},
    stats::DropReason,
};

use aya_ebpf::programs::TcContext;

use crate::{
    context::{PacketCtx, linearize, ptr_at},
    maps::WEIR_FRAGS,
};

pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_ARP: u16 = 0x0806u16.to_be();
pub const L3_OFF: usize = EthHdr::LEN;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// Fragment position of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    None,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset > 0: no L4 header; ports come from `WEIR_FRAGS`.
    Later,
}

/// What the datapath needs to know about an IPv4 packet.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    pub ttl: u8,
    /// The TOS byte: routing policy may select on it, so route lookups carry it.
    pub tos: u8,
    /// Offset of the L4 header (14 + IHL * 4).
    pub l4_off: usize,
    /// Ports in network order; for ICMP echo the identifier (request: sport, reply: dport).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub frag: Frag,
    /// The DF bit: never fragment (the sender wants "fragmentation needed" instead).
    pub dont_fragment: bool,
    /// IP identification (network order): with the addresses and protocol, names a datagram's
    /// fragments.
    pub id: u16,
    /// UDP sent without a checksum (zero): its rewrites leave the field as it is.
    pub udp_unsummed: bool,
}

impl Ipv4 {
    #[inline(always)]
    pub const fn flow(&self) -> FlowKey {
        FlowKey::new(self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }

    #[inline(always)]
    pub const fn seg(&self) -> crate::conntrack::Seg {
        crate::conntrack::Seg {
            proto: self.proto,
            tcp_flags: self.tcp_flags,
        }
    }

    /// ICMP errors (destination unreachable, time exceeded, parameter problem) quote the
    /// packet they are about; they belong to that packet's flow.
    #[inline(always)]
    pub const fn is_icmp_error(&self) -> bool {
        self.proto == IPPROTO_ICMP
            && self.frag as u8 == Frag::None as u8
            && (self.icmp_type == ICMP_DEST_UNREACH
                || self.icmp_type == ICMP_TIME_EXCEEDED
                || self.icmp_type == ICMP_PARAMETER_PROB)
    }

    /// Whether the packet belongs to a flow conntrack can tell apart: every protocol but ICMP,
    /// and ICMP echo with a non-zero identifier (later fragments carry their first's). Every
    /// other ICMP message — and an echo with identifier 0 — has the key of all port-less ICMP
    /// between two hosts: tracked, it would open and match a catch-all entry.
    #[inline(always)]
    pub const fn tracked(&self) -> bool {
        self.proto != IPPROTO_ICMP || self.sport != 0 || self.dport != 0
    }

    /// Whether a packet of this flow may open a new translated flow: TCP only with a bare SYN
    /// (a stray ACK to a published port is the host's business), UDP and ICMP echo requests always.
    #[inline(always)]
    pub const fn may_open(&self) -> bool {
        match self.proto {
            IPPROTO_TCP => weir_common::conntrack::tcp::is_syn_only(self.tcp_flags),
            IPPROTO_UDP => true,
            IPPROTO_ICMP => self.icmp_type == ICMP_ECHO,
            _ => false,
        }
    }
}

/// Ethernet + IPv4 without options + the first 20 bytes of L4: what almost every packet needs
/// directly readable. TSO packets from local stacks carry only their headers in the linear
/// area; pulling more would copy payload on every packet.
pub const COMMON_HEADERS: u32 = 14 + 20 + 20;
/// Ethernet + the longest IPv4 header + the longest TCP header.
pub const MAX_HEADERS: u32 = 14 + 60 + 60;

/// [`parse_ipv4`] on the skb path, pulling the longest possible headers into the linear area
/// when the common size was not enough (IP options, long L4 headers).
#[inline(always)]
pub fn parse_ipv4_tc(ctx: &TcContext) -> Result<Ipv4, DropReason> {
    match parse_ipv4(ctx) {
        Err(DropReason::Malformed)
            if ctx.data_end() - ctx.data() < MAX_HEADERS.min(ctx.len()) as usize =>
        {
            linearize(ctx, MAX_HEADERS);
            parse_ipv4(ctx)
        }
        r => r,
    }
}

/// Cuts whatever follows the IP datagram off the frame (Ethernet padding, or bytes a sender
/// appended), as `ip_rcv` would. Without it every length judged from the skb — the FIB
/// lookup's MTU check above all — sees a packet larger than the one the kernel will route:
/// padded past the uplink MTU, a small datagram was judged too big and handed to the host
/// stack untranslated, which trimmed it and forwarded it. A frame shorter than its header
/// says is left to the parser, which refuses it.
#[inline(always)]
pub fn trim_to_datagram(ctx: &TcContext) -> Result<(), DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, L3_OFF).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked.
    let tot_len = u16::from_be_bytes(unsafe { (*ip).tot_len }) as u32;
    let datagram_end = L3_OFF as u32 + tot_len;
    if tot_len < Ipv4Hdr::LEN as u32 || ctx.len() <= datagram_end {
        return Ok(());
    }
    cut_after(ctx, datagram_end)
}

/// Cuts the frame after `end` bytes (both families' trim).
#[inline(always)]
pub fn cut_after(ctx: &TcContext, end: u32) -> Result<(), DropReason> {
    // SAFETY: helper on this program's own skb; it invalidates packet pointers, and none is
    // held past this call.
    let rc = unsafe { aya_ebpf::helpers::bpf_skb_change_tail(ctx.skb.skb as *mut _, end, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(DropReason::WriteFailed)
    }
}

/// Whether the protocol carries ports (or an echo identifier) that tell its flows apart;
/// fragments of these protocols are followed.
#[inline(always)]
pub const fn has_ports(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP
}

#[inline(always)]
fn frag_key(p: &Ipv4) -> FragKey {
    FragKey {
        saddr: p.saddr,
        daddr: p.daddr,
        id: p.id,
        proto: p.proto,
        _pad: 0,
    }
}

/// Records the ports of a first fragment so the datagram's later fragments follow its flow.
/// Only for packets whose source has been validated (anti-spoofing on the container side, the
/// Weir-subnet check on the uplink): a forged first fragment would otherwise steer another
/// sender's later fragments.
#[inline(always)]
pub fn remember_fragment(p: &Ipv4) {
    if p.frag == Frag::First && has_ports(p.proto) {
        let ports = FragPorts {
            sport: p.sport,
            dport: p.dport,
        };
        let _ = WEIR_FRAGS.insert(&frag_key(p), &ports, 0);
    }
}

/// Ethertype of the frame (network order), or None when it is too short.
#[inline(always)]
pub fn ether_type<C: PacketCtx>(ctx: &C) -> Option<u16> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    Some(unsafe { (*eth).ether_type })
}

/// Source, destination and protocol of an IPv4 packet, read before (and whatever) the rest of
/// it parses: a packet too broken to parse further must still never reach a container.
#[inline(always)]
pub fn ipv4_addrs<C: PacketCtx>(ctx: &C) -> Option<FlowKey> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, L3_OFF)?;
    // SAFETY: bounds checked.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return None;
    }
    Some(FlowKey::new(
        u32::from_ne_bytes(ip.src_addr),
        u32::from_ne_bytes(ip.dst_addr),
        0,
        0,
        ip.proto,
    ))
}

/// Parses the IPv4 header at [`L3_OFF`] and the L4 ports (a later fragment gets those its
/// first fragment left in `WEIR_FRAGS`, see [`remember_fragment`]).
#[inline(always)]
pub fn parse_ipv4<C: PacketCtx>(ctx: &C) -> Result<Ipv4, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, L3_OFF).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let hlen = ((ip.vihl & 0x0f) as usize) * 4;
    if hlen < Ipv4Hdr::LEN {
        return Err(DropReason::Malformed);
    }
    let frame_l3 = ctx.packet_len().saturating_sub(L3_OFF as u32);
    let tot_len = match u16::from_be_bytes(ip.tot_len) as u32 {
        0 if ctx.big_gso() => frame_l3,
        n => n,
    };
    if tot_len < hlen as u32 || tot_len > frame_l3 {
        return Err(DropReason::Malformed);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let more = frags & 0x2000 != 0;
    let offset = frags & 0x1fff;
    let frag = if offset != 0 {
        Frag::Later
    } else if more {
        Frag::First
    } else {
        Frag::None
    };
    let mut p = Ipv4 {
        saddr: u32::from_ne_bytes(ip.src_addr),
        daddr: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        ttl: ip.ttl,
        tos: ip.tos,
        l4_off: L3_OFF + hlen,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        frag,
        dont_fragment: frags & 0x4000 != 0,
        id: u16::from_ne_bytes(ip.id),
        udp_unsummed: false,
    };
    if frag == Frag::Later {
        if !has_ports(p.proto) {
            // No ports: every fragment carries the key there is.
            return Ok(p);
        }
        // SAFETY: plain value read.
        let ports = unsafe { WEIR_FRAGS.get(&frag_key(&p)) }.ok_or(DropReason::Fragment)?;
        p.sport = ports.sport;
        p.dport = ports.dport;
        return Ok(p);
    }
    parse_l4(ctx, &mut p, hlen as u32, tot_len)?;
    Ok(p)
}

#[inline(always)]
fn parse_l4<C: PacketCtx>(
    ctx: &C,
    p: &mut Ipv4,
    hlen: u32,
    tot_len: u32,
) -> Result<(), DropReason> {
    let l4_len = tot_len - hlen;
    match p.proto {
        IPPROTO_TCP => {
            if l4_len < 20 {
                return Err(DropReason::Malformed);
            }
            let h: *const [u8; 20] = ptr_at(ctx, p.l4_off).ok_or(DropReason::Malformed)?;
            // SAFETY: bounds checked.
            let h = unsafe { &*h };
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
            let h: *const [u8; 8] = ptr_at(ctx, p.l4_off).ok_or(DropReason::Malformed)?;
            // SAFETY: bounds checked.
            let h = unsafe { &*h };
            let ulen = u16::from_be_bytes([h[4], h[5]]) as u32;
            if ulen < 8 || (p.frag == Frag::None && ulen > l4_len) {
                return Err(DropReason::Malformed);
            }
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.udp_unsummed = h[6] == 0 && h[7] == 0;
        }
        IPPROTO_ICMP => {
            if l4_len < 8 {
                return Err(DropReason::Malformed);
            }
            let h: *const [u8; 8] = ptr_at(ctx, p.l4_off).ok_or(DropReason::Malformed)?;
            // SAFETY: bounds checked.
            let h = unsafe { &*h };
            p.icmp_type = h[0];
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match h[0] {
                ICMP_ECHO => p.sport = id,
                ICMP_ECHO_REPLY => p.dport = id,
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}
