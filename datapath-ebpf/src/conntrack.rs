//! Conntrack in the datapath: lookups that treat expired entries as absent, per-packet
//! state and refresh on hits, and pair creation with rollback.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use weir_common::{
    config::Config,
    conntrack::{
        CtEntry, FlowKey, IPPROTO_TCP, REFRESH_NS, datagram_transition, flags, reopens, state, tcp,
        tcp_transition,
    },
    stats::{DropReason, Event},
};

use crate::{maps::WEIR_CT, metrics, packet::Ipv4};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The live entry for `key`, if any.
#[inline(always)]
pub fn lookup(key: &FlowKey, cfg: &Config, now: u64) -> Option<*mut CtEntry> {
    let e = WEIR_CT.get_ptr_mut(key)?;
    // SAFETY: map value pointer valid for this program run.
    if unsafe { (*e).expired(now, &cfg.timeouts) } {
        return None;
    }
    Some(e)
}

/// What a hit on an entry means for the packet.
pub enum Hit {
    /// Translate to this tuple and forward; `flags` are the entry's.
    Forward { rewrite: FlowKey, flags: u16 },
    /// A new connection reuses the tuple of a closed one: handle it as a new flow.
    Reopen,
}

/// Updates state and freshness of the entry a packet matched (and of its twin when the
/// state changes or a refresh is due).
#[inline(always)]
pub fn on_hit(key: &FlowKey, e: *mut CtEntry, pkt: &Ipv4, now: u64) -> Hit {
    // SAFETY: map value pointers stay valid for this program run; concurrent updates of these
    // plain fields are benign (last writer wins, all values valid).
    unsafe {
        let st = (*e).state;
        if reopens(st, pkt.proto, pkt.tcp_flags) {
            let twin = (*e).twin;
            let _ = WEIR_CT.remove(&twin);
            let _ = WEIR_CT.remove(key);
            metrics::event(Event::CtReopened);
            return Hit::Reopen;
        }
        let is_reply = (*e).flags & flags::REPLY != 0;
        let refresh = now.wrapping_sub((*e).last_seen) > REFRESH_NS && now > (*e).last_seen;
        let may_change = if pkt.proto == IPPROTO_TCP {
            pkt.tcp_flags & (tcp::FIN | tcp::RST) != 0 || (st == state::NEW && is_reply)
        } else {
            st == state::NEW && is_reply
        };
        if refresh || may_change {
            let twin = WEIR_CT.get_ptr_mut(&(*e).twin);
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

/// Initial state of a flow opened by `pkt`: a TCP flow picked up mid-stream counts as
/// established, like the kernel's nf_conntrack_tcp_loose.
#[inline(always)]
pub fn initial_state(pkt: &Ipv4) -> u8 {
    if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & tcp::SYN == 0 {
        state::ESTABLISHED
    } else {
        state::NEW
    }
}

/// Identities and flags a new pair is created with.
#[derive(Clone, Copy)]
pub struct NewFlow {
    pub flags: u16,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub state: u8,
}

#[inline(always)]
fn entry(rewrite: FlowKey, twin: FlowKey, f: &NewFlow, flags: u16, now: u64) -> CtEntry {
    CtEntry {
        rewrite,
        twin,
        last_seen: now,
        created: now,
        src_identity: f.src_identity,
        dst_identity: f.dst_identity,
        flags,
        state: f.state,
        _pad: [0; 5],
    }
}

/// Inserts the reply entry of a pair unless a live entry of another flow holds its key.
/// Expired holders are reclaimed (and their stale twins dropped).
#[inline(always)]
pub fn insert_reply(
    reply_key: &FlowKey,
    orig_key: &FlowKey,
    f: &NewFlow,
    cfg: &Config,
    now: u64,
) -> bool {
    let reply = entry(
        orig_key.reversed(),
        *orig_key,
        f,
        f.flags | flags::REPLY,
        now,
    );
    if WEIR_CT
        .insert(reply_key, &reply, BPF_NOEXIST as u64)
        .is_ok()
    {
        return true;
    }
    let Some(old) = WEIR_CT.get_ptr_mut(reply_key) else {
        // Evicted in between: try once more.
        return WEIR_CT
            .insert(reply_key, &reply, BPF_NOEXIST as u64)
            .is_ok();
    };
    // SAFETY: map value pointer valid for this run.
    let (old_twin, reclaim) = unsafe {
        let same_flow = (*old).twin == *orig_key;
        ((*old).twin, same_flow || (*old).expired(now, &cfg.timeouts))
    };
    if !reclaim {
        return false;
    }
    if old_twin != *orig_key {
        let _ = WEIR_CT.remove(&old_twin);
    }
    metrics::event(Event::CtReclaimed);
    WEIR_CT.insert(reply_key, &reply, 0).is_ok()
}

/// Creates both entries of a flow whose packets enter as `orig_key` and leave as
/// `orig_rewrite`. Replies then enter as `orig_rewrite.reversed()` and leave as
/// `orig_key.reversed()`.
#[inline(always)]
pub fn create_pair(
    orig_key: &FlowKey,
    orig_rewrite: &FlowKey,
    f: &NewFlow,
    cfg: &Config,
    now: u64,
) -> Result<(), DropReason> {
    let reply_key = orig_rewrite.reversed();
    if !insert_reply(&reply_key, orig_key, f, cfg, now) {
        return Err(DropReason::CtInsertFailed);
    }
    insert_orig(orig_key, orig_rewrite, &reply_key, f, now)
}

/// Inserts the original-direction entry; on failure removes the reply entry inserted before it.
#[inline(always)]
pub fn insert_orig(
    orig_key: &FlowKey,
    orig_rewrite: &FlowKey,
    reply_key: &FlowKey,
    f: &NewFlow,
    now: u64,
) -> Result<(), DropReason> {
    let orig = entry(*orig_rewrite, *reply_key, f, f.flags, now);
    if WEIR_CT.insert(orig_key, &orig, 0).is_err() {
        let _ = WEIR_CT.remove(reply_key);
        return Err(DropReason::CtInsertFailed);
    }
    metrics::event(Event::CtCreated);
    Ok(())
}
