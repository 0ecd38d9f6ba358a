//! One interface over TC (`__sk_buff`) and XDP contexts, so parsing and lookups are written
//! once (the idea of Cilium's overloadable_skb.h / overloadable_xdp.h).

use aya_ebpf::{
    helpers::bpf_xdp_adjust_meta,
    programs::{TcContext, XdpContext},
};
use weir_common::xdp_meta;

pub trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole packet (for counters).
    fn packet_len(&self) -> u32;
    /// Whether this is a GSO packet past 64 KiB (BIG TCP), whose IP length field reads 0:
    /// its length is the skb's.
    fn big_gso(&self) -> bool;
}

impl PacketCtx for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> u32 {
        self.len()
    }
    #[inline(always)]
    fn big_gso(&self) -> bool {
        // SAFETY: the context pointer is valid for the whole program run.
        unsafe { (*self.skb.skb).gso_size != 0 && (*self.skb.skb).len > 65_535 }
    }
}

impl PacketCtx for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
    /// XDP runs before GSO exists.
    #[inline(always)]
    fn big_gso(&self) -> bool {
        false
    }
}

/// A bounds-checked pointer to a `T` at `off` bytes into the packet.
#[inline(always)]
pub fn ptr_at<C: PacketCtx, T>(ctx: &C, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The ifindex a TC program runs on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the whole program run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Whether the frame carries a VLAN tag the NIC (or veth) moved into the skb's metadata: the
/// Ethernet header then shows the inner ethertype, and a redirect would keep the tag.
#[inline(always)]
pub fn vlan_tagged(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is valid for the whole program run.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// Makes at least the first `want` bytes (or the whole packet) directly readable: headers
/// of GSO packets may sit in paged data.
#[inline(always)]
pub fn linearize(ctx: &TcContext, want: u32) {
    let len = ctx.len();
    let want = if want > len { len } else { want };
    if (ctx.data_end() - ctx.data()) < want as usize {
        let _ = ctx.pull_data(want);
    }
}

/// Puts [`xdp_meta::ADDRESSES_PASSED`] in front of the frame (best effort: a driver without
/// metadata support leaves `uplink_tc` to check the addresses again).
#[inline(always)]
pub fn mark_addresses_passed(ctx: &XdpContext) {
    // SAFETY: the context pointer is valid for the whole program run; the write is
    // bounds-checked against `data` as the verifier requires.
    unsafe {
        if bpf_xdp_adjust_meta(ctx.ctx, -(xdp_meta::LEN as i32)) != 0 {
            return;
        }
        let meta = (*ctx.ctx).data_meta as usize;
        if meta + xdp_meta::LEN > (*ctx.ctx).data as usize {
            return;
        }
        *(meta as *mut u32) = xdp_meta::ADDRESSES_PASSED;
    }
}

/// Whether `uplink_xdp` checked this frame's addresses and passed it.
#[inline(always)]
pub fn addresses_passed(ctx: &TcContext) -> bool {
    // SAFETY: as above; the read is bounds-checked against `data`.
    unsafe {
        let skb = ctx.skb.skb;
        let meta = (*skb).data_meta as usize;
        if meta + xdp_meta::LEN > (*skb).data as usize {
            return false;
        }
        *(meta as *const u32) == xdp_meta::ADDRESSES_PASSED
    }
}
