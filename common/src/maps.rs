//! Map names (the eBPF statics carry the same names; user space opens them by pin path)
//! and default sizes.

pub const CONFIG: &str = "WEIR_CONFIG";
pub const ENDPOINTS: &str = "WEIR_ENDPOINTS";
pub const HOST_ADDRS: &str = "WEIR_HOST_ADDRS";
pub const PUBLISH: &str = "WEIR_PUBLISH";
pub const POLICY: &str = "WEIR_POLICY";
pub const NET_LINKS: &str = "WEIR_NET_LINKS";
pub const CONNTRACK: &str = "WEIR_CT";
pub const SOCK_REVNAT: &str = "WEIR_SOCK_REVNAT";
pub const FRAGMENTS: &str = "WEIR_FRAGS";
/// LPM trie of every network's subnet (key: prefix length + address) → network id.
pub const SUBNETS: &str = "WEIR_SUBNETS";
pub const STATS: &str = "WEIR_STATS";
pub const EVENTS: &str = "WEIR_EVENTS";
/// Programs reached by tail call (a program array).
pub const TAILS: &str = "WEIR_TAILS";
/// Slot of `from_container_new`, the new-flow half of `from_container`.
pub const TAIL_NEW_FLOW: u32 = 0;
pub const TAILS_MAX: u32 = 4;

/// Every pinned map, for schema checks and teardown.
pub const ALL: [&str; 13] = [
    CONFIG,
    ENDPOINTS,
    HOST_ADDRS,
    PUBLISH,
    POLICY,
    NET_LINKS,
    CONNTRACK,
    SOCK_REVNAT,
    FRAGMENTS,
    SUBNETS,
    STATS,
    EVENTS,
    TAILS,
];

pub const ENDPOINTS_MAX: u32 = 16_384;
pub const HOST_ADDRS_MAX: u32 = 256;
pub const PUBLISH_MAX: u32 = 65_536;
pub const POLICY_MAX: u32 = 131_072;
pub const NET_LINKS_MAX: u32 = 4_096;
/// Entries, two per flow; `control init --conntrack-max` overrides it.
pub const CONNTRACK_MAX: u32 = 262_144;
pub const SOCK_REVNAT_MAX: u32 = 65_536;
pub const FRAGMENTS_MAX: u32 = 8_192;
pub const SUBNETS_MAX: u32 = 1_024;
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Key of `WEIR_SOCK_REVNAT`: a UDP socket that sent to a published port, and the container
/// address its datagrams were rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SockRevKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Value of `WEIR_SOCK_REVNAT`: the published address the application used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SockRevValue {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Key of `WEIR_FRAGS`: a fragmented datagram; the value is the ports its first fragment carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
}

crate::user_pod!(SockRevKey, SockRevValue, FragKey, FragPorts);
