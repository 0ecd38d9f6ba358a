//! Published-port lookup: an exact host address first, then the any-address entry when
//! the destination is one of the host's addresses.

use weir_common::publish::{PublishKey, PublishTarget};

use crate::maps::{WEIR_PUBLISH, is_host_addr};

#[inline(always)]
pub fn lookup(daddr: u32, proto: u8, port: u16, also_loopback: bool) -> Option<PublishTarget> {
    // SAFETY: plain value reads.
    unsafe {
        if let Some(t) = WEIR_PUBLISH.get(&PublishKey::new(daddr, port, proto)) {
            return Some(*t);
        }
        if is_host_addr(daddr) || (also_loopback && weir_common::addr::is_loopback(daddr)) {
            return WEIR_PUBLISH.get(&PublishKey::new(0, port, proto)).copied();
        }
    }
    None
}
