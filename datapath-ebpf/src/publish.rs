//! Published-port lookup: an exact host address first, then the any-address entry when
//! the destination is one of the host's addresses.

use weir_common::{
    addr::is_loopback,
    publish::{PublishKey, PublishTarget},
};

use crate::maps::{WEIR_PUBLISH, is_host_addr};

/// Whether `daddr:port/proto` is published. Not inlined: a BPF function of its own, so its
/// keys do not grow the stack frame of its caller (from_container's is near the limit).
#[inline(never)]
pub fn is_published(daddr: u32, proto: u8, port: u16) -> bool {
    lookup(daddr, proto, port, false).is_some()
}

/// The target of `daddr:port/proto`. `host_local`: the sockets of the host itself are asking
/// (sock hooks); only they may reach loopback addresses — a port published on 127.0.0.1 is
/// the host's alone, and a packet from a wire claiming 127/8 is a martian.
#[inline(always)]
pub fn lookup(daddr: u32, proto: u8, port: u16, host_local: bool) -> Option<PublishTarget> {
    let loopback = is_loopback(daddr);
    if loopback && !host_local {
        return None;
    }
    // SAFETY: plain value reads.
    unsafe {
        if let Some(t) = WEIR_PUBLISH.get(&PublishKey::new(daddr, port, proto)) {
            return Some(*t);
        }
        if loopback || is_host_addr(daddr) {
            return WEIR_PUBLISH.get(&PublishKey::new(0, port, proto)).copied();
        }
    }
    None
}
