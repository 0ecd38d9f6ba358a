//! Counters and drop events. Every drop names a reason; nothing logs per packet.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use weir_common::{
    config::flags as cfg_flags,
    conntrack::{FlowKey, FlowKeyOf},
    event::{EventOf, KIND_DROP, KIND_DROP6},
    stats::Counter,
    stats::{DropReason, Event, Hook, Path, drop_index, event_index, path_index},
};

use crate::maps::{WEIR_EVENTS, WEIR_LINK_DROPS, WEIR_STATS, config};

#[inline(always)]
fn bump(index: u32, bytes: u32) {
    if let Some(c) = WEIR_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn path(p: Path, bytes: u32) {
    bump(path_index(p), bytes);
}

#[inline(always)]
pub fn event(e: Event) {
    bump(event_index(e), 0);
}

/// Counts `n` occurrences of an event at once.
#[inline(always)]
pub fn events(e: Event, n: u64) {
    if let Some(c) = WEIR_STATS.get_ptr_mut(event_index(e)) {
        // SAFETY: per-CPU slot.
        unsafe { (*c).packets += n };
    }
}

/// A packet dropped (or refused) for `d.reason` at `hook`.
#[derive(Clone, Copy)]
pub struct Drop {
    pub reason: DropReason,
    pub flow: FlowKey,
}

impl Drop {
    #[inline(always)]
    pub const fn new(reason: DropReason) -> Self {
        Self {
            reason,
            flow: FlowKey::new(0, 0, 0, 0, 0),
        }
    }
    #[inline(always)]
    pub const fn flow(reason: DropReason, flow: FlowKey) -> Self {
        Self { reason, flow }
    }
}

impl From<DropReason> for Drop {
    #[inline(always)]
    fn from(r: DropReason) -> Self {
        Self::new(r)
    }
}

/// Counts the drop and, while `control monitor` listens, reports it. Not inlined: a BPF
/// function of its own, so the event it builds stays off the entry points' stack frames
/// (the verifier bounds a call chain's frames to 512 bytes, and from_container is near it).
#[inline(never)]
pub fn dropped(d: Drop, hook: Hook, ifindex: u32, bytes: u32) {
    if counted(d.reason, hook, ifindex, bytes) {
        report(d.reason, hook, ifindex, d.flow, KIND_DROP);
    }
}

/// [`dropped`] for an IPv6 packet: its tuple is what the IPv6 parser last left in this CPU's
/// slot (all zeros when the drop came before it).
#[inline(never)]
pub fn dropped6(reason: DropReason, hook: Hook, ifindex: u32, bytes: u32) {
    if counted(reason, hook, ifindex, bytes) {
        report(
            reason,
            hook,
            ifindex,
            crate::packet6::last_flow(),
            KIND_DROP6,
        );
    }
}

/// Counts a drop; true when `control monitor` listens.
#[inline(always)]
fn counted(reason: DropReason, hook: Hook, ifindex: u32, bytes: u32) -> bool {
    bump(drop_index(reason, hook), bytes);
    if matches!(hook, Hook::FromContainer | Hook::ToContainer) {
        link_dropped(ifindex, bytes);
    }
    match config() {
        Some(c) => c.flags & cfg_flags::EVENTS != 0,
        None => false,
    }
}

#[inline(always)]
fn report<A: Copy>(reason: DropReason, hook: Hook, ifindex: u32, flow: FlowKeyOf<A>, kind: u16) {
    let ev = EventOf {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind,
        reason: reason as u16,
        hook: hook as u16,
        _pad: 0,
        ifindex,
        _pad2: 0,
        flow,
    };
    let _ = WEIR_EVENTS.output::<EventOf<A>>(&ev, 0);
}

/// Counts a drop against the container behind host-side veth `ifindex`.
#[inline(always)]
fn link_dropped(ifindex: u32, bytes: u32) {
    if let Some(c) = WEIR_LINK_DROPS.get_ptr_mut(&ifindex) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
        return;
    }
    let first = Counter {
        packets: 1,
        bytes: bytes as u64,
    };
    // A program's update of a per-CPU entry writes this CPU's slot only: if another CPU made
    // the entry meanwhile, its counts stay.
    let _ = WEIR_LINK_DROPS.insert(&ifindex, &first, BPF_ANY.into());
}
