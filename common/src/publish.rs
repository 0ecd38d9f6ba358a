//! Published ports (map `WEIR_PUBLISH`): host address, protocol and port → container.

use bytemuck::{Pod, Zeroable};

use crate::addr::{Ipv4Be, PortBe};

/// `addr` 0 matches any host address (every address in `WEIR_HOST_ADDRS`, plus loopback
/// for connections made on the host itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PublishKey {
    pub addr: Ipv4Be,
    pub port: PortBe,
    pub proto: u8,
    pub _pad: u8,
}

impl PublishKey {
    #[inline(always)]
    pub const fn new(addr: Ipv4Be, port: PortBe, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PublishTarget {
    pub addr: Ipv4Be,
    pub port: PortBe,
    pub _pad: u16,
    /// Identity of the container (policy applies to hairpin traffic).
    pub identity: u32,
}

crate::user_pod!(PublishKey, PublishTarget);
