//! Containers as the datapath knows them (map `WEIR_ENDPOINTS`, keyed by container IPv4).

use bytemuck::{Pod, Zeroable};

use crate::addr::Ipv4Be;

/// Endpoint flags.
pub mod flags {
    /// The container's network is `--internal`: no egress to the world.
    pub const INTERNAL: u32 = 1 << 0;
    /// The container's network is `--isolated`: its members reach each other only by rule.
    pub const ISOLATED: u32 = 1 << 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    /// ifindex of the host-side veth: where the container's packets arrive, and the device
    /// `bpf_redirect_peer` targets to deliver into the container.
    pub ifindex: u32,
    /// Policy identity (see [`crate::policy`]).
    pub identity: u32,
    /// Network id.
    pub network: u32,
    pub flags: u32,
    /// The network's gateway address (source of self-hairpin SNAT).
    pub gateway: Ipv4Be,
    /// MAC of the container's eth0.
    pub mac: [u8; 6],
    /// MAC of the host-side veth, which answers ARP for everything but the container itself.
    pub host_mac: [u8; 6],
}

/// Value of `WEIR_HOST_ADDRS`: addresses that count as "the host" for published ports
/// published without `--host-ip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostAddr {
    pub flags: u32,
}

/// Value of `WEIR_ENDPOINTS6`: the container's [`Endpoint`] (the same as its IPv4 entry) and
/// its network's IPv6 gateway (the source of what the datapath sends it itself: errors,
/// self-hairpin).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint6 {
    pub ep: Endpoint,
    pub gateway6: crate::addr::Ipv6Be,
}

crate::user_pod!(Endpoint, HostAddr, Endpoint6);
