//! Records the datapath pushes to the `WEIR_EVENTS` ring buffer while `control monitor`
//! listens (config flag [`crate::config::flags::EVENTS`]): one layout per family, told apart
//! by `kind` (at the same offset in both).

use bytemuck::{Pod, Zeroable};

use crate::{
    addr::{Ipv4Be, Ipv6Be},
    conntrack::FlowKeyOf,
};

pub const KIND_DROP: u16 = 1;
/// A drop of an IPv6 packet: an [`Event6`].
pub const KIND_DROP6: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventOf<A> {
    pub ts_ns: u64,
    pub kind: u16,
    /// A [`crate::stats::DropReason`].
    pub reason: u16,
    /// A [`crate::stats::Hook`].
    pub hook: u16,
    pub _pad: u16,
    pub ifindex: u32,
    pub _pad2: u32,
    pub flow: FlowKeyOf<A>,
}

pub type Event = EventOf<Ipv4Be>;
pub type Event6 = EventOf<Ipv6Be>;

/// Offset of `kind` in either record.
pub const KIND_OFFSET: usize = 8;

// SAFETY: #[repr(C)], plain integers, no padding (the sizes are the sums of the fields').
unsafe impl Zeroable for Event {}
unsafe impl Pod for Event {}
unsafe impl Zeroable for Event6 {}
unsafe impl Pod for Event6 {}
const _: () = assert!(core::mem::size_of::<Event>() == 8 + 2 * 4 + 4 * 2 + 16);
const _: () = assert!(core::mem::size_of::<Event6>() == 8 + 2 * 4 + 4 * 2 + 40);

crate::user_pod!(Event, Event6);
