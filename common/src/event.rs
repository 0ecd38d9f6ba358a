//! Records the datapath pushes to the `WEIR_EVENTS` ring buffer while `control monitor`
//! listens (config flag [`crate::config::flags::EVENTS`]).

use bytemuck::{Pod, Zeroable};

use crate::conntrack::FlowKey;

pub const KIND_DROP: u16 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Event {
    pub ts_ns: u64,
    pub kind: u16,
    /// A [`crate::stats::DropReason`].
    pub reason: u16,
    /// A [`crate::stats::Hook`].
    pub hook: u16,
    pub _pad: u16,
    pub ifindex: u32,
    pub _pad2: u32,
    pub flow: FlowKey,
}

crate::user_pod!(Event);
