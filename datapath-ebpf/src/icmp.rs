//! ICMP errors (destination unreachable — port unreachable, fragmentation needed —, time
//! exceeded, parameter problem) quote the header of the packet they answer. When that packet
//! belonged to a translated flow, the quote and the outer header are translated back so the
//! error reaches the right container (or the right world client) with every checksum intact.

use aya_ebpf::programs::TcContext;
use weir_common::{
    config::Config,
    conntrack::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    csum,
    stats::DropReason,
};

use crate::{
    conntrack,
    maps::in_weir_subnet,
    nat,
    packet::{ICMP_ECHO, ICMP_ECHO_REPLY, Ipv4},
};

/// Who sent an ICMP error, which bounds the flows it may report on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A container (anti-spoofed): only about packets it received itself.
    Container,
    /// The world (the far end or any router on the path): only about flows that crossed the
    /// uplink, i.e. whose quoted destination is outside Weir's networks.
    World,
}

/// The outer header's new destination.
pub struct Translated {
    pub daddr: u32,
}

/// A load fails only past the end of the packet: one shorter than its headers say.
#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Result<T, DropReason> {
    ctx.load::<T>(off).map_err(|_| DropReason::Malformed)
}

#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), DropReason> {
    ctx.store(off, v, 0).map_err(|_| DropReason::WriteFailed)
}

/// Translates an ICMP error if the packet it quotes belongs to a tracked flow. `Ok(None)`:
/// not ours, handle it like any other packet.
#[inline(always)]
pub fn translate(
    ctx: &TcContext,
    pkt: &Ipv4,
    cfg: &Config,
    now: u64,
    sender: Sender,
) -> Result<Option<Translated>, DropReason> {
    let inner_off = pkt.l4_off + 8;
    let ih: [u8; 20] = load(ctx, inner_off)?;
    if ih[0] >> 4 != 4 || (ih[0] & 0x0f) < 5 {
        return Err(DropReason::Malformed);
    }
    let il4 = inner_off + ((ih[0] & 0x0f) as usize) * 4;
    let iproto = ih[9];
    let isrc = u32::from_ne_bytes([ih[12], ih[13], ih[14], ih[15]]);
    let idst = u32::from_ne_bytes([ih[16], ih[17], ih[18], ih[19]]);
    let icsum = u16::from_ne_bytes([ih[10], ih[11]]);
    // An error goes back to the source of the packet it quotes, and a sender only reports on
    // flows it is part of. Anything else is not ours to translate (it is then handled like
    // any packet, under policy and NAT): otherwise a container could address an error about
    // another container's flow to anyone and have it delivered past policy (or sent out
    // unmasqueraded), and the world could reach containers' own flows.
    let plausible = pkt.daddr == isrc
        && match sender {
            Sender::Container => pkt.saddr == idst,
            Sender::World => !in_weir_subnet(idst),
        };
    if !plausible {
        return Ok(None);
    }
    let l4: [u8; 8] = match load(ctx, il4) {
        Ok(b) => b,
        // RFC 792 guarantees 8 bytes of the quoted datagram; shorter quotes are not ours.
        Err(_) => return Ok(None),
    };
    let w0 = u16::from_ne_bytes([l4[0], l4[1]]);
    let w1 = u16::from_ne_bytes([l4[2], l4[3]]);
    let id = u16::from_ne_bytes([l4[4], l4[5]]);
    let (isport, idport) = match iproto {
        IPPROTO_TCP | IPPROTO_UDP => (w0, w1),
        IPPROTO_ICMP => match l4[0] {
            ICMP_ECHO => (id, 0),
            ICMP_ECHO_REPLY => (0, id),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let inner = FlowKey::new(isrc, idst, isport, idport, iproto);
    let Some(e) = conntrack::lookup(&inner.reversed(), cfg, now) else {
        return Ok(None);
    };
    // SAFETY: map value pointer valid for this run.
    let n = unsafe { (*e).rewrite };
    // The quoted packet travelled the opposite way of the entry: swap roles.
    let (nsrc, ndst, nsport, ndport) = (n.daddr, n.saddr, n.dport, n.sport);

    let nicsum = csum::replace32(csum::replace32(icsum, isrc, nsrc), idst, ndst);
    let mut delta = csum::add(csum::diff32(isrc, nsrc), csum::diff32(idst, ndst));
    delta = csum::add(delta, csum::diff16(icsum, nicsum));

    match iproto {
        IPPROTO_TCP | IPPROTO_UDP => {
            delta = csum::add(
                delta,
                csum::add(csum::diff16(w0, nsport), csum::diff16(w1, ndport)),
            );
            // The quoted L4 checksum, when the quote reaches it (UDP always, TCP if >= 18 bytes).
            let csum_off = if iproto == IPPROTO_UDP {
                il4 + 6
            } else {
                il4 + 16
            };
            if let Ok(old) = load::<u16>(ctx, csum_off) {
                if !(iproto == IPPROTO_UDP && old == 0) {
                    let mut c = csum::replace32(csum::replace32(old, isrc, nsrc), idst, ndst);
                    c = csum::replace16(csum::replace16(c, w0, nsport), w1, ndport);
                    delta = csum::add(delta, csum::diff16(old, c));
                    store(ctx, csum_off, &c)?;
                }
            }
            store(ctx, il4, &nsport)?;
            store(ctx, il4 + 2, &ndport)?;
        }
        _ => {
            // Quoted echo: identifier and its checksum (no pseudo-header).
            let nid = if l4[0] == ICMP_ECHO { nsport } else { ndport };
            let ocs = u16::from_ne_bytes([l4[2], l4[3]]);
            let ncs = csum::replace16(ocs, id, nid);
            delta = csum::add(
                delta,
                csum::add(csum::diff16(id, nid), csum::diff16(ocs, ncs)),
            );
            store(ctx, il4 + 2, &ncs)?;
            store(ctx, il4 + 4, &nid)?;
        }
    }
    store(ctx, inner_off + 10, &nicsum)?;
    store(ctx, inner_off + 12, &nsrc)?;
    store(ctx, inner_off + 16, &ndst)?;
    ctx.l4_csum_replace(pkt.l4_off + 2, 0, delta as u64, 0)
        .map_err(|_| DropReason::ChecksumFailed)?;

    // Outer header: the quoted packet's source (its addressee, checked above) gets its new
    // address, and an error sent by the quoted packet's destination itself appears to come
    // from its new one (routers on the path keep theirs).
    let odst = nsrc;
    let osrc = if pkt.saddr == idst { ndst } else { pkt.saddr };
    nat::rewrite(ctx, pkt, &FlowKey::new(osrc, odst, 0, 0, IPPROTO_ICMP))?;
    Ok(Some(Translated { daddr: odst }))
}
