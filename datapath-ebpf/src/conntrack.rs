//! Conntrack in the datapath: lookups that treat expired entries as absent, per-packet
//! state and refresh on hits, and pair creation with rollback.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_for_each_map_elem, bpf_ktime_get_ns},
};
use weir_common::{
    config::{Config, Timeouts},
    conntrack::{
        CtEntryOf, FlowKeyOf, IPPROTO_TCP, REFRESH_NS, datagram_transition, flags, reopens, state,
        tcp, tcp_transition,
    },
    stats::{DropReason, Event},
};

use crate::{
    family::{Family, same_flow},
    maps::{SCRATCH_ORIG, SCRATCH_REPLY, WEIR_CT_SWEEP},
    metrics,
};

/// What conntrack reads of a packet: its protocol and, for TCP, its flags.
#[derive(Clone, Copy)]
pub struct Seg {
    pub proto: u8,
    pub tcp_flags: u8,
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The live entry for `key`, if any.
#[inline(always)]
pub fn lookup<A: Family>(key: &FlowKeyOf<A>, cfg: &Config, now: u64) -> Option<*mut CtEntryOf<A>> {
    let e = A::ct().get_ptr_mut(key)?;
    // SAFETY: map value pointer valid for this program run.
    if unsafe { (*e).expired(now, &cfg.timeouts) } {
        return None;
    }
    Some(e)
}

/// What a hit on an entry means for the packet.
pub enum Hit<A> {
    /// Translate to this tuple and forward; `flags` are the entry's.
    Forward { rewrite: FlowKeyOf<A>, flags: u16 },
    /// A new connection reuses the tuple of a closed one: handle it as a new flow.
    Reopen,
}

/// Updates state and freshness of the entry a packet matched (and of its twin when the
/// state changes or a refresh is due).
#[inline(always)]
pub fn on_hit<A: Family>(key: &FlowKeyOf<A>, e: *mut CtEntryOf<A>, pkt: Seg, now: u64) -> Hit<A> {
    let ct = A::ct();
    // SAFETY: map value pointers stay valid for this program run; concurrent updates of these
    // plain fields are benign (last writer wins, all values valid).
    unsafe {
        let st = (*e).state;
        if reopens(st, pkt.proto, pkt.tcp_flags) {
            let twin = (*e).twin;
            let _ = ct.remove(&twin);
            let _ = ct.remove(key);
            metrics::event(Event::CtReopened);
            return Hit::Reopen;
        }
        let is_reply = (*e).flags & flags::REPLY != 0;
        let refresh = now.wrapping_sub((*e).last_seen) > REFRESH_NS && now > (*e).last_seen;
        let may_change = if pkt.proto == IPPROTO_TCP {
            pkt.tcp_flags & (tcp::FIN | tcp::RST) != 0
                || (st == state::NEW && is_reply)
                || (st == state::REPLIED && !is_reply)
        } else {
            st == state::NEW && is_reply
        };
        if refresh || may_change {
            let twin = ct.get_ptr_mut(&(*e).twin);
            let twin_fin = match twin {
                Some(t) => (*t).flags & flags::FIN != 0,
                None => false,
            };
            let this_fin = (*e).flags & flags::FIN != 0;
            let next = if pkt.proto == IPPROTO_TCP {
                tcp_transition(st, is_reply, this_fin, twin_fin, pkt.tcp_flags)
            } else {
                match datagram_transition(st, is_reply) {
                    Some(s) => Some((s, this_fin)),
                    None => None,
                }
            };
            if let Some((s, fin)) = next {
                (*e).state = s;
                if fin {
                    (*e).flags |= flags::FIN;
                }
                if let Some(t) = twin {
                    (*t).state = s;
                }
            }
            if refresh {
                (*e).last_seen = now;
                if let Some(t) = twin {
                    (*t).last_seen = now;
                }
            }
        }
        Hit::Forward {
            rewrite: (*e).rewrite,
            flags: (*e).flags,
        }
    }
}

/// Whether `pkt` would open its flow mid-stream (like the kernel's nf_conntrack_tcp_loose):
/// a TCP segment without SYN. Such a flow starts new like any other and is established only
/// once both sides have spoken, so a flood of bare ACKs cannot fill the table for five days.
#[inline(always)]
pub fn picked_up(pkt: Seg) -> bool {
    pkt.proto == IPPROTO_TCP && pkt.tcp_flags & tcp::SYN == 0
}

/// Identities and flags a new pair is created with (every pair starts `state::NEW`).
#[derive(Clone, Copy)]
pub struct NewFlow {
    pub flags: u16,
    pub src_identity: u32,
    pub dst_identity: u32,
}

/// Builds an entry in scratch slot `slot` (see `WEIR_CT_SCRATCH`), field by field so that no
/// copy of it lands on the stack.
#[inline(always)]
fn entry<A: Family>(
    slot: u32,
    rewrite: &FlowKeyOf<A>,
    twin: &FlowKeyOf<A>,
    f: &NewFlow,
    flags: u16,
    now: u64,
) -> Result<&'static CtEntryOf<A>, DropReason> {
    let e = fill(slot, twin, f, flags, now)?;
    e.rewrite = *rewrite;
    Ok(e)
}

/// [`entry`] for a reply entry, whose rewrite is its twin reversed: written field by field,
/// with no reversed copy on the stack (an IPv6 key is 40 bytes).
#[inline(always)]
fn reply_entry<A: Family>(
    slot: u32,
    twin: &FlowKeyOf<A>,
    f: &NewFlow,
    flags: u16,
    now: u64,
) -> Result<&'static CtEntryOf<A>, DropReason> {
    let e = fill(slot, twin, f, flags, now)?;
    let r = &mut e.rewrite;
    r.saddr = twin.daddr;
    r.daddr = twin.saddr;
    r.sport = twin.dport;
    r.dport = twin.sport;
    r.proto = twin.proto;
    r._pad = [0; 3];
    Ok(e)
}

/// Scratch slot `slot` with everything of an entry but its rewrite.
#[inline(always)]
fn fill<A: Family>(
    slot: u32,
    twin: &FlowKeyOf<A>,
    f: &NewFlow,
    flags: u16,
    now: u64,
) -> Result<&'static mut CtEntryOf<A>, DropReason> {
    let e = A::scratch()
        .get_ptr_mut(slot)
        .ok_or(DropReason::CtInsertFailed)?;
    // SAFETY: per-CPU slot, no other program uses it on this CPU while we run.
    unsafe {
        (*e).twin = *twin;
        (*e).last_seen = now;
        (*e).created = now;
        (*e).src_identity = f.src_identity;
        (*e).dst_identity = f.dst_identity;
        (*e).flags = flags;
        (*e).state = state::NEW;
        (*e)._pad = [0; 5];
        Ok(&mut *e)
    }
}

/// `bpf_map_update_elem` on a full preallocated hash map.
const E2BIG: i32 = 7;

/// Inserts an entry. The map is a plain hash, not an LRU: a flood of new flows must never
/// evict established ones (an LRU would, and their next packet would then meet a RST). When
/// it is full the insert fails (the flow is refused and counted) and a sweep of expired
/// entries is requested for the next new flow (see [`maybe_sweep`]).
#[inline(always)]
fn insert<A: Family>(key: &FlowKeyOf<A>, e: &CtEntryOf<A>, flags: u64) -> Result<(), i32> {
    let r = A::ct().insert(key, e, flags);
    if let Err(err) = r
        && err == -E2BIG
        && let (Some(want), Some(any)) = (
            WEIR_CT_SWEEP.get_ptr_mut(A::SWEEP + SWEEP_WANTED),
            WEIR_CT_SWEEP.get_ptr_mut(SWEEP_ANY),
        )
    {
        // SAFETY: array slot pointers valid for this run.
        unsafe {
            *want = 1;
            *any = 1;
        }
    }
    r
}

const SWEEP_LAST: u32 = 0;
const SWEEP_WANTED: u32 = 1;
/// Set with either family's "wanted": the one slot the packet path reads.
const SWEEP_ANY: u32 = 4;

/// Minimum time between two sweeps, so a flood against a full map costs one map walk a second.
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

#[repr(C)]
struct Sweep {
    now: u64,
    freed: u64,
    timeouts: Timeouts,
}

/// How long an unconfirmed flow (see [`state::unconfirmed`]) may sit idle before a sweep of a
/// full table drops it: legitimate handshakes and first replies take far less, and a flood's
/// entries go within seconds instead of holding the table for their whole timeout.
const UNCONFIRMED_UNDER_PRESSURE_NS: u64 = 5_000_000_000;

/// `bpf_for_each_map_elem` callback: deletes the entry if it has expired, or if it is
/// unconfirmed and idle (the sweep only runs when the table is full).
extern "C" fn sweep_entry<A: Family>(
    _map: *mut c_void,
    key: *mut FlowKeyOf<A>,
    e: *mut CtEntryOf<A>,
    ctx: *mut Sweep,
) -> i64 {
    // SAFETY: the kernel passes valid key, value and our context for each element.
    unsafe {
        let now = (*ctx).now;
        let idle_unconfirmed = state::unconfirmed((*e).state)
            && now.saturating_sub((*e).last_seen) > UNCONFIRMED_UNDER_PRESSURE_NS;
        if idle_unconfirmed || (*e).expired(now, &(*ctx).timeouts) {
            let k = *key;
            if A::ct().remove(&k).is_ok() {
                (*ctx).freed += 1;
            }
        }
    }
    0
}

/// When an insert found the map full, frees every expired entry and every idle unconfirmed
/// one — at most once per
/// [`SWEEP_INTERVAL_NS`]. Called at the top of the TC programs (one array read when nothing
/// is wanted): this is what keeps a full map recovering with no process alive.
#[inline(always)]
pub fn maybe_sweep() {
    let Some(any) = WEIR_CT_SWEEP.get_ptr_mut(SWEEP_ANY) else {
        return;
    };
    // SAFETY: array slot pointer valid for this run.
    if unsafe { *any } != 0 {
        sweep_wanted();
    }
}

/// Sweeps each family whose table asked for it; clears the shared flag once none still asks.
#[inline(never)]
fn sweep_wanted() {
    let v4 = sweep_if_wanted::<weir_common::addr::Ipv4Be>();
    let v6 = sweep_if_wanted::<weir_common::addr::Ipv6Be>();
    if !v4
        && !v6
        && let Some(any) = WEIR_CT_SWEEP.get_ptr_mut(SWEEP_ANY)
    {
        // SAFETY: array slot pointer valid for this run.
        unsafe { *any = 0 };
    }
}

/// Sweeps family `A` if its table asked; true while it still asks (within the interval).
#[inline(always)]
fn sweep_if_wanted<A: Family>() -> bool {
    let Some(want) = WEIR_CT_SWEEP.get_ptr_mut(A::SWEEP + SWEEP_WANTED) else {
        return false;
    };
    // SAFETY: array slot pointer valid for this run.
    if unsafe { *want } == 0 {
        return false;
    }
    sweep::<A>();
    // SAFETY: as above.
    unsafe { *want != 0 }
}

#[inline(never)]
fn sweep<A: Family>() {
    let (Some(last), Some(want), Some(cfg)) = (
        WEIR_CT_SWEEP.get_ptr_mut(A::SWEEP + SWEEP_LAST),
        WEIR_CT_SWEEP.get_ptr_mut(A::SWEEP + SWEEP_WANTED),
        crate::maps::config(),
    ) else {
        return;
    };
    let now = now();
    // SAFETY: array slot pointers valid for this run; racing sweepers are harmless.
    unsafe {
        if now.wrapping_sub(*last) < SWEEP_INTERVAL_NS {
            return;
        }
        *last = now;
        *want = 0;
    }
    let mut s = Sweep {
        now,
        freed: 0,
        timeouts: cfg.timeouts,
    };
    // SAFETY: the map static, a callback with the helper's signature, and a stack context.
    unsafe {
        bpf_for_each_map_elem(
            A::ct() as *const _ as *mut c_void,
            sweep_entry::<A> as *mut c_void,
            &mut s as *mut Sweep as *mut c_void,
            0,
        );
    }
    metrics::events(Event::CtSwept, s.freed);
}

/// Outcome of inserting a reply entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Done,
    /// A live entry of another flow holds the key (try another SNAT port).
    Taken,
    /// The map is full of live flows.
    Full,
}

/// Inserts the reply entry of a pair unless a live entry of another flow holds its key.
/// Expired holders are reclaimed (and their stale twins dropped).
#[inline(always)]
pub fn insert_reply<A: Family>(
    reply_key: &FlowKeyOf<A>,
    orig_key: &FlowKeyOf<A>,
    f: &NewFlow,
    cfg: &Config,
    now: u64,
) -> Insert {
    let Ok(reply) = reply_entry(SCRATCH_REPLY, orig_key, f, f.flags | flags::REPLY, now) else {
        return Insert::Full;
    };
    match insert(reply_key, reply, BPF_NOEXIST as u64) {
        Ok(()) => return Insert::Done,
        Err(r) if r == -E2BIG => return Insert::Full,
        Err(_) => {}
    }
    let Some(old) = A::ct().get_ptr_mut(reply_key) else {
        // Deleted in between: try once more.
        return match insert(reply_key, reply, BPF_NOEXIST as u64) {
            Ok(()) => Insert::Done,
            Err(r) if r == -E2BIG => Insert::Full,
            Err(_) => Insert::Taken,
        };
    };
    // SAFETY: map value pointer valid for this run (the twin's key is read in place: an
    // IPv6 key is 40 bytes of stack).
    let (same, expired) = unsafe {
        (
            same_flow(&(*old).twin, orig_key),
            (*old).expired(now, &cfg.timeouts),
        )
    };
    if !same && !expired {
        return Insert::Taken;
    }
    if !same {
        // SAFETY: as above.
        let _ = A::ct().remove(unsafe { &(*old).twin });
    }
    metrics::event(Event::CtReclaimed);
    if A::ct().insert(reply_key, reply, 0).is_ok() {
        Insert::Done
    } else {
        Insert::Full
    }
}

/// Creates both entries of a flow whose packets enter as `orig_key` and leave as
/// `orig_rewrite`. Replies then enter as `orig_rewrite.reversed()` and leave as
/// `orig_key.reversed()`.
#[inline(always)]
pub fn create_pair<A: Family>(
    orig_key: &FlowKeyOf<A>,
    orig_rewrite: &FlowKeyOf<A>,
    f: &NewFlow,
    cfg: &Config,
    now: u64,
) -> Result<(), DropReason> {
    let reply_key = orig_rewrite.reversed();
    if insert_reply(&reply_key, orig_key, f, cfg, now) != Insert::Done {
        return Err(DropReason::CtInsertFailed);
    }
    insert_orig(orig_key, orig_rewrite, &reply_key, f, now)
}

/// Inserts the original-direction entry; on failure removes the reply entry inserted before it.
#[inline(always)]
pub fn insert_orig<A: Family>(
    orig_key: &FlowKeyOf<A>,
    orig_rewrite: &FlowKeyOf<A>,
    reply_key: &FlowKeyOf<A>,
    f: &NewFlow,
    now: u64,
) -> Result<(), DropReason> {
    let orig = entry(SCRATCH_ORIG, orig_rewrite, reply_key, f, f.flags, now)?;
    if insert(orig_key, orig, 0).is_err() {
        let _ = A::ct().remove(reply_key);
        return Err(DropReason::CtInsertFailed);
    }
    metrics::event(Event::CtCreated);
    Ok(())
}
