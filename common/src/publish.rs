//! Published ports (maps `WEIR_PUBLISH`, `WEIR_PUBLISH6`): host address, protocol and port →
//! container, one definition for both families (`A`: [`Ipv4Be`] or [`Ipv6Be`]).

use bytemuck::{Pod, Zeroable};

use crate::addr::{Ipv4Be, Ipv6Be, PortBe};

/// `addr` all zeros matches any host address (every address in the family's host-address
/// map, plus loopback for connections made on the host itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishKeyOf<A> {
    pub addr: A,
    pub port: PortBe,
    pub proto: u8,
    pub _pad: u8,
}

pub type PublishKey = PublishKeyOf<Ipv4Be>;
pub type PublishKey6 = PublishKeyOf<Ipv6Be>;

impl<A> PublishKeyOf<A> {
    #[inline(always)]
    pub const fn new(addr: A, port: PortBe, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishTargetOf<A> {
    pub addr: A,
    pub port: PortBe,
    pub _pad: u16,
    /// Identity of the container (policy applies to hairpin traffic).
    pub identity: u32,
}

pub type PublishTarget = PublishTargetOf<Ipv4Be>;
pub type PublishTarget6 = PublishTargetOf<Ipv6Be>;

// SAFETY: #[repr(C)], plain integers, no padding (the sizes are the sums of the fields').
unsafe impl Zeroable for PublishKey {}
unsafe impl Pod for PublishKey {}
unsafe impl Zeroable for PublishKey6 {}
unsafe impl Pod for PublishKey6 {}
unsafe impl Zeroable for PublishTarget {}
unsafe impl Pod for PublishTarget {}
unsafe impl Zeroable for PublishTarget6 {}
unsafe impl Pod for PublishTarget6 {}
const _: () = assert!(core::mem::size_of::<PublishKey>() == 8);
const _: () = assert!(core::mem::size_of::<PublishKey6>() == 20);
const _: () = assert!(core::mem::size_of::<PublishTarget>() == 12);
const _: () = assert!(core::mem::size_of::<PublishTarget6>() == 24);

crate::user_pod!(PublishKey, PublishTarget, PublishKey6, PublishTarget6);
