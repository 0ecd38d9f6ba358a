//! Everything the eBPF datapath and the control plane must agree on: map names, the
//! `#[repr(C)]` key and value types stored in those maps, and the small pieces of pure
//! logic both sides run (checksum deltas, flow tuples, conntrack expiry, SNAT port
//! candidates, policy resolution). Defined once here, never duplicated.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod addr;
pub mod config;
pub mod conntrack;
pub mod csum;
pub mod endpoint;
pub mod event;
pub mod maps;
pub mod policy;
pub mod ports;
pub mod publish;
pub mod stats;
pub mod xdp_meta;

/// Bumped whenever a map's key/value layout or meaning changes. `control init` refuses to
/// reuse pinned maps written by another schema (see calico#13279: never trust old pins).
pub const SCHEMA_VERSION: u32 = 3;

/// Marks map key/value types as plain old data for aya on the user side.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is #[repr(C)], bytemuck::Pod (no padding, any bit pattern valid).
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;
