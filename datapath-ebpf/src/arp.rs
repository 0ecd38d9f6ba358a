//! ARP responder on the host-side veth: the container resolves every address (gateway and
//! subnet peers alike) to the host-side veth's MAC, so all its traffic reaches
//! `from_container` and nothing floods. Requests must come from the container's own
//! IP and MAC.

use aya_ebpf::{bindings::TC_ACT_REDIRECT, helpers::bpf_redirect_peer, programs::TcContext};
use network_types::{arp::ArpHdr, eth::EthHdr};
use weir_common::stats::DropReason;

use crate::{context::ptr_at, maps::endpoint};

const ARPHRD_ETHER: [u8; 2] = 1u16.to_be_bytes();
const PTYPE_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();
const OP_REQUEST: [u8; 2] = 1u16.to_be_bytes();
const OP_REPLY: [u8; 2] = 2u16.to_be_bytes();

/// Answers an ARP request from the container on `ifindex` by turning it into the reply and
/// handing it straight back to the container's end of the veth (the host side's egress, and
/// `to_container` there, never see it).
#[inline(always)]
pub fn answer(ctx: &TcContext, ifindex: u32) -> Result<i32, DropReason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(DropReason::Malformed)?;
    let arp: *mut ArpHdr = ptr_at(ctx, EthHdr::LEN).ok_or(DropReason::Malformed)?;
    // SAFETY: both pointers bounds-checked; nothing below calls a helper that moves data.
    unsafe {
        let a = &mut *arp;
        if a.htype != ARPHRD_ETHER || a.ptype != PTYPE_IPV4 || a.hlen != 6 || a.plen != 4 {
            return Err(DropReason::ArpInvalid);
        }
        if a.oper != OP_REQUEST {
            return Err(DropReason::ArpInvalid);
        }
        let sender = u32::from_ne_bytes(a.spa);
        let target = a.tpa;
        let ep = endpoint(sender).ok_or(DropReason::SpoofedSource)?;
        if ep.ifindex != ifindex || a.sha != ep.mac || (*eth).src_addr != ep.mac {
            return Err(DropReason::SpoofedSource);
        }
        if u32::from_ne_bytes(target) == sender {
            // Gratuitous ARP / duplicate-address probe for its own address: nobody else owns it.
            return Err(DropReason::ArpInvalid);
        }
        a.oper = OP_REPLY;
        a.tha = a.sha;
        a.tpa = a.spa;
        a.sha = ep.host_mac;
        a.spa = target;
        (*eth).dst_addr = ep.mac;
        (*eth).src_addr = ep.host_mac;
        // SAFETY: helper without memory arguments.
        let rc = bpf_redirect_peer(ifindex, 0) as i32;
        if rc == TC_ACT_REDIRECT as i32 {
            Ok(rc)
        } else {
            Err(DropReason::RedirectFailed)
        }
    }
}
