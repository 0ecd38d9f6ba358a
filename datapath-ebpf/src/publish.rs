//! Published-port lookup: an exact host address first, then the any-address entry when
//! the destination is one of the host's addresses.

use weir_common::{
    addr::{Ipv6Be, is_loopback},
    publish::{PublishKey, PublishKey6, PublishTarget, PublishTarget6},
};

use crate::maps::{WEIR_PUBLISH, WEIR_PUBLISH6, is_host_addr, is_host_addr6};

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

/// [`lookup`] for IPv6: an exact host address first, then the any-address entry when the
/// destination is one of the host's IPv6 addresses — or `::1`, for the host's own sockets
/// (`host_local`) only: from a wire it is a martian.
#[inline(always)]
pub fn lookup6(daddr: &Ipv6Be, proto: u8, port: u16, host_local: bool) -> Option<PublishTarget6> {
    let loopback = daddr[0] == 0 && daddr[1] == 0 && daddr[2] == 0 && daddr[3] == 1u32.to_be();
    if loopback && !host_local {
        return None;
    }
    // SAFETY: plain value reads.
    unsafe {
        if let Some(t) = WEIR_PUBLISH6.get(&PublishKey6::new(*daddr, port, proto)) {
            return Some(*t);
        }
        if loopback || is_host_addr6(daddr) {
            return WEIR_PUBLISH6
                .get(&PublishKey6::new([0; 4], port, proto))
                .copied();
        }
    }
    None
}

/// Whether `daddr:port/proto` is published over IPv6 (see [`is_published`]).
#[inline(never)]
pub fn is_published6(daddr: &Ipv6Be, proto: u8, port: u16) -> bool {
    lookup6(daddr, proto, port, false).is_some()
}
