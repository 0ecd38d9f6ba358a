//! Neighbour discovery on the host-side veth, answered as ARP is (see `arp`): every
//! solicitation for an address of the container's world gets an advertisement with the
//! host-side veth's MAC, so all its traffic reaches `from_container6` and nothing floods.
//! Nothing else of NDP is taken from a container: router solicitations go unanswered (Weir
//! never sends an RA: the container's address and route are static), and its router
//! advertisements, advertisements and redirects would poison others' caches and routes.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::{bpf_redirect_peer, bpf_skb_change_tail},
    programs::TcContext,
};
use weir_common::{
    addr::{Ipv6Be, is_link_local6, is_multicast6, is_unspecified6},
    conntrack::IPPROTO_ICMPV6,
    csum::{fold, fold64, pseudo_header6, sum_words},
    stats::DropReason,
};

use crate::{
    family::Family,
    maps::{endpoint6, is_host_addr6, link6},
    packet::L3_OFF,
    packet6::{DADDR_OFF, Ipv6, L4_OFF, SADDR_OFF, load},
};

const ROUTER_SOLICIT: u8 = 133;
const NEIGHBOR_SOLICIT: u8 = 135;
const REDIRECT: u8 = 137;
const MLD_QUERY: u8 = 130;
const MLD_DONE: u8 = 132;
const MLD2_REPORT: u8 = 143;
const NEIGHBOR_ADVERT: u8 = 136;

/// A solicitation: type, code, checksum, 4 reserved bytes, the 16-byte target.
const NS_MIN_LEN: u32 = 24;
/// The advertisement sent back: that header plus one Target Link-Layer Address option.
const NA_LEN: u32 = 32;
/// Router, Solicited and Override flags (RFC 4861 §4.4).
const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
const OPT_TARGET_LLA: u8 = 2;

/// Whether `pkt` is neighbour discovery or multicast listener signalling, which
/// [`answer`] handles before any address check (their sources are link-local or `::`).
#[inline(always)]
pub fn is_ndp_or_mld(pkt: &Ipv6) -> bool {
    pkt.proto == IPPROTO_ICMPV6
        && ((pkt.icmp_type >= ROUTER_SOLICIT && pkt.icmp_type <= REDIRECT)
            || (pkt.icmp_type >= MLD_QUERY && pkt.icmp_type <= MLD_DONE)
            || pkt.icmp_type == MLD2_REPORT)
}

/// Answers a neighbour solicitation from the container on `ifindex` in place and hands it
/// straight back to the container; refuses every other NDP and MLD message.
#[inline(never)]
pub fn answer(ctx: &TcContext, pkt: &Ipv6, ifindex: u32) -> Result<i32, DropReason> {
    if pkt.icmp_type != NEIGHBOR_SOLICIT {
        // MLD reports are what any IPv6 interface sends when it comes up: multicast, which
        // Weir carries nowhere. The rest is what a router sends, or a cache-poisoning try.
        let ndp = pkt.icmp_type >= ROUTER_SOLICIT && pkt.icmp_type <= REDIRECT;
        return Err(if ndp {
            DropReason::NdpInvalid
        } else {
            DropReason::Multicast
        });
    }
    // RFC 4861 §7.1.1: hop limit 255 (it crossed no router), code 0, the whole message; no
    // extension header (a fragmented solicitation is dropped, RFC 6980).
    if pkt.hop_limit != 255
        || pkt.icmp_code != 0
        || pkt.l4_off != L4_OFF
        || pkt.end < L4_OFF as u32 + NS_MIN_LEN
    {
        return Err(DropReason::NdpInvalid);
    }
    // A container of an IPv4-only network has IPv6 off: it sends no solicitation.
    let own = link6(ifindex).ok_or(DropReason::UnsupportedL3)?;
    let ep = endpoint6(&own).ok_or(DropReason::UnknownEndpoint)?;
    let eth_src: [u8; 6] = load(ctx, 6)?;
    if ep.ifindex != ifindex || eth_src != ep.mac {
        return Err(DropReason::SpoofedSource);
    }
    if is_unspecified6(&pkt.saddr) {
        // Duplicate address detection: never answered, the address is the container's.
        return Err(DropReason::NdpInvalid);
    }
    if !is_link_local6(&pkt.saddr) && !Ipv6Be::same(&pkt.saddr, &own) {
        return Err(DropReason::SpoofedSource);
    }
    let target: Ipv6Be = load(ctx, L4_OFF + 8)?;
    if is_link_local6(&target) {
        // Nobody's: the host-side veth's own included (data to it would never be routed).
        return Err(DropReason::LinkLocal);
    }
    if is_multicast6(&target) || Ipv6Be::same(&target, &own) {
        return Err(DropReason::NdpInvalid);
    }
    let router = is_host_addr6(&target);
    advertise(ctx, &target, &pkt.saddr, ep.host_mac, ep.mac, router)?;
    // SAFETY: helper without memory arguments.
    let rc = unsafe { bpf_redirect_peer(ifindex, 0) } as i32;
    if rc == TC_ACT_REDIRECT as i32 {
        Ok(rc)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// Turns the frame into an advertisement of `target` at `mac` from the host side, to `to`.
#[inline(always)]
fn advertise(
    ctx: &TcContext,
    target: &Ipv6Be,
    to: &Ipv6Be,
    mac: [u8; 6],
    to_mac: [u8; 6],
    router: bool,
) -> Result<(), DropReason> {
    // Exactly the advertisement: whatever options the solicitation carried go.
    // SAFETY: helper on this program's own skb; no packet pointer is held across it.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb as *mut _, L4_OFF as u32 + NA_LEN, 0) };
    if rc != 0 {
        return Err(DropReason::WriteFailed);
    }
    let flags = NA_SOLICITED | NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    let mut body = [0u8; NA_LEN as usize];
    body[0] = NEIGHBOR_ADVERT;
    body[4] = flags;
    let t = target.map(u32::to_ne_bytes);
    let mut i = 0;
    while i < 4 {
        body[8 + 4 * i..12 + 4 * i].copy_from_slice(&t[i]);
        i += 1;
    }
    body[24] = OPT_TARGET_LLA;
    body[25] = 1;
    body[26..32].copy_from_slice(&mac);
    let words: [u32; 8] = core::array::from_fn(|i| {
        u32::from_ne_bytes([
            body[4 * i],
            body[4 * i + 1],
            body[4 * i + 2],
            body[4 * i + 3],
        ])
    });
    let seed = pseudo_header6(target, to, IPPROTO_ICMPV6, NA_LEN);
    let check = !fold(fold64(seed as u64 + sum_words(&words)));
    body[2..4].copy_from_slice(&check.to_ne_bytes());

    let mut eth = [0u8; 12];
    eth[..6].copy_from_slice(&to_mac);
    eth[6..].copy_from_slice(&mac);
    let len_nh_hl = [0u8, NA_LEN as u8, IPPROTO_ICMPV6, 255];
    let w = |r: Result<(), _>| r.map_err(|_| DropReason::WriteFailed);
    w(ctx.store(0, &eth, 0))?;
    w(ctx.store(L3_OFF + 4, &len_nh_hl, 0))?;
    w(ctx.store(SADDR_OFF, target, 0))?;
    w(ctx.store(DADDR_OFF, to, 0))?;
    w(ctx.store(L4_OFF, &body, 0))
}
