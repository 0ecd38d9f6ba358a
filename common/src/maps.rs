//! The pinned maps, declared once: [`maps!`] below is the table. From it come the names (the
//! eBPF statics carry the same names; user space opens them by pin path), [`ALL`], each map's
//! kind and key/value types ([`MapDef`], one marker type per map in [`def`]) and [`TABLE`],
//! the layout `control init` checks pinned maps against. The eBPF statics are typed with
//! [`KeyOf`]/[`ValueOf`] of the markers, and control's tests compare the built object with
//! [`TABLE`], so the kernel side cannot drift from it either.

use core::mem::size_of;

use crate::{
    addr::Ipv6Be,
    config::{Config, Config6},
    conntrack::{CtEntry, CtEntry6, FlowKey, FlowKey6},
    endpoint::{Endpoint, Endpoint6, HostAddr},
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishKey6, PublishTarget, PublishTarget6},
    stats::{Counter, STATS_ENTRIES},
};

/// The kinds of map the datapath uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Array,
    ProgramArray,
    PerCpuArray,
    LruHash,
    LruPerCpuHash,
    LpmTrie,
    RingBuf,
}

impl Kind {
    /// The kernel's `bpf_map_type`.
    pub const fn bpf_type(self) -> u32 {
        match self {
            Kind::Hash => 1,
            Kind::Array => 2,
            Kind::ProgramArray => 3,
            Kind::PerCpuArray => 6,
            Kind::LruHash => 9,
            Kind::LruPerCpuHash => 10,
            Kind::LpmTrie => 11,
            Kind::RingBuf => 27,
        }
    }

    /// The kernel key size for a declared key type of `size` bytes: an LPM trie key carries
    /// its prefix length (a u32) before the data.
    pub const fn key_size(self, size: usize) -> u32 {
        match self {
            Kind::LpmTrie => 4 + size as u32,
            _ => size as u32,
        }
    }
}

/// A map as the kernel sees it: what a pin must match to be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub key_size: u32,
    pub value_size: u32,
    /// The default size (`control init --conntrack-max` overrides the conntrack map's).
    pub max_entries: u32,
}

/// One map of the table: its key and value types (for an LPM trie, the key's data; for a
/// ring buffer, `()`) and its kernel layout.
pub trait MapDef {
    type Key;
    type Value;
    const SPEC: Spec;
}

pub type KeyOf<M> = <M as MapDef>::Key;
pub type ValueOf<M> = <M as MapDef>::Value;

/// The table: `Marker NAME = STATIC: Kind<Key, Value>, max_entries;` per pinned map.
macro_rules! maps {
    ($($(#[$doc:meta])* $marker:ident $konst:ident = $name:ident : $kind:ident<$k:ty, $v:ty>, $max:expr;)*) => {
        $($(#[$doc])* pub const $konst: &str = stringify!($name);)*

        /// Marker types of the maps, one per row of the table.
        pub mod def {
            $(pub struct $marker;)*
        }

        $(impl MapDef for def::$marker {
            type Key = $k;
            type Value = $v;
            const SPEC: Spec = Spec {
                name: $konst,
                kind: Kind::$kind,
                key_size: Kind::$kind.key_size(size_of::<$k>()),
                value_size: size_of::<$v>() as u32,
                max_entries: $max,
            };
        })*

        /// Every pinned map, for schema checks and teardown.
        pub const ALL: [&str; [$($konst),*].len()] = [$($konst),*];

        /// Every pinned map's layout, in the order of [`ALL`].
        pub const TABLE: [Spec; ALL.len()] = [$(<def::$marker as MapDef>::SPEC),*];
    };
}

maps! {
    Config CONFIG = WEIR_CONFIG: Array<u32, Config>, 1;
    Endpoints ENDPOINTS = WEIR_ENDPOINTS: Hash<u32, Endpoint>, ENDPOINTS_MAX;
    HostAddrs HOST_ADDRS = WEIR_HOST_ADDRS: Hash<u32, HostAddr>, HOST_ADDRS_MAX;
    Publish PUBLISH = WEIR_PUBLISH: Hash<PublishKey, PublishTarget>, PUBLISH_MAX;
    Policy POLICY = WEIR_POLICY: Hash<PolicyKey, u32>, POLICY_MAX;
    NetLinks NET_LINKS = WEIR_NET_LINKS: Hash<NetPair, u32>, NET_LINKS_MAX;
    Conntrack CONNTRACK = WEIR_CT: Hash<FlowKey, CtEntry>, CONNTRACK_MAX;
    SockRevnat SOCK_REVNAT = WEIR_SOCK_REVNAT: LruHash<SockRevKey, SockRevValue>, SOCK_REVNAT_MAX;
    Fragments FRAGMENTS = WEIR_FRAGS: LruHash<FragKey, FragPorts>, FRAGMENTS_MAX;
    /// LPM trie of every network's subnet (key: prefix length + address) → network id.
    Subnets SUBNETS = WEIR_SUBNETS: LpmTrie<u32, u32>, SUBNETS_MAX;
    Stats STATS = WEIR_STATS: PerCpuArray<u32, Counter>, STATS_ENTRIES;
    Events EVENTS = WEIR_EVENTS: RingBuf<(), ()>, EVENTS_BYTES;
    /// Programs reached by tail call (a program array).
    Tails TAILS = WEIR_TAILS: ProgramArray<u32, u32>, TAILS_MAX;
    /// Drops per host-side veth (the container behind it; key: ifindex), for finding a noisy
    /// container. Written only when a packet is dropped; an LRU, so links that are gone age out
    /// and it never fills.
    LinkDrops LINK_DROPS = WEIR_LINK_DROPS: LruPerCpuHash<u32, Counter>, LINK_DROPS_MAX;
    // IPv6: maps of their own beside the IPv4 ones (whose pinned layouts stay as they were,
    // so `control init` adds these to a live instance). Policy and network links are keyed
    // by identity and network, so they serve both families.
    Config6 CONFIG6 = WEIR_CONFIG6: Array<u32, Config6>, 1;
    /// Containers by IPv6 address: the same value as their `WEIR_ENDPOINTS` entry.
    Endpoints6 ENDPOINTS6 = WEIR_ENDPOINTS6: Hash<Ipv6Be, Endpoint6>, ENDPOINTS_MAX;
    /// Host-side veth ifindex → its container's IPv6 address: what neighbour discovery is
    /// judged by (a solicitation comes from a link-local address, or from `::`).
    Links6 LINKS6 = WEIR_LINKS6: Hash<u32, Ipv6Be>, ENDPOINTS_MAX;
    /// The host's IPv6 addresses: gateways and the uplink's global ones (never link-local).
    HostAddrs6 HOST_ADDRS6 = WEIR_HOST_ADDRS6: Hash<Ipv6Be, HostAddr>, HOST_ADDRS_MAX;
    Subnets6 SUBNETS6 = WEIR_SUBNETS6: LpmTrie<Ipv6Be, u32>, SUBNETS_MAX;
    /// `control init --conntrack-max` sizes it like `WEIR_CT`.
    Conntrack6 CONNTRACK6 = WEIR_CT6: Hash<FlowKey6, CtEntry6>, CONNTRACK_MAX;
    Publish6 PUBLISH6 = WEIR_PUBLISH6: Hash<PublishKey6, PublishTarget6>, PUBLISH_MAX;
    SockRevnat6 SOCK_REVNAT6 = WEIR_SOCK_REVNAT6: LruHash<SockRevKey6, SockRevValue6>, SOCK_REVNAT_MAX;
    Fragments6 FRAGMENTS6 = WEIR_FRAGS6: LruHash<FragKey6, FragPorts>, FRAGMENTS_MAX;
}

/// Slot of `from_container_new`, the new-flow half of `from_container`.
pub const TAIL_NEW_FLOW: u32 = 0;
/// Slot of `from_container6`: every IPv6 packet a container sends.
pub const TAIL_FROM_CONTAINER6: u32 = 1;
/// Slot of `uplink_tc6`: every IPv6 packet the uplink receives.
pub const TAIL_UPLINK6: u32 = 2;
/// Slot of `from_container6_new`, the new-flow half of `from_container6`.
pub const TAIL_FROM_CONTAINER6_NEW: u32 = 3;
pub const TAILS_MAX: u32 = 4;

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
pub const LINK_DROPS_MAX: u32 = 16_384;

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

/// Key of `WEIR_SOCK_REVNAT6`: [`SockRevKey`] for IPv6 (a host UDP socket that sent to a port
/// published on an IPv6 address of the host, or `::1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SockRevKey6 {
    pub cookie: u64,
    pub addr: Ipv6Be,
    pub port: u16,
    pub _pad: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SockRevValue6 {
    pub addr: Ipv6Be,
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

/// Key of `WEIR_FRAGS6`: [`FragKey`] for IPv6, whose fragment identification is 32 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragKey6 {
    pub saddr: Ipv6Be,
    pub daddr: Ipv6Be,
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
}

crate::user_pod!(
    SockRevKey,
    SockRevValue,
    SockRevKey6,
    SockRevValue6,
    FragKey,
    FragKey6,
    FragPorts
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts pinned by earlier builds: a change here must bump `SCHEMA_VERSION`.
    #[test]
    fn layouts_are_the_pinned_ones() {
        let got: Vec<(&str, u32, u32, u32)> = TABLE
            .iter()
            .map(|s| (s.name, s.kind.bpf_type(), s.key_size, s.value_size))
            .collect();
        let want = [
            ("WEIR_CONFIG", 2, 4, size_of::<Config>() as u32),
            ("WEIR_ENDPOINTS", 1, 4, size_of::<Endpoint>() as u32),
            ("WEIR_HOST_ADDRS", 1, 4, size_of::<HostAddr>() as u32),
            ("WEIR_PUBLISH", 1, 8, 12),
            ("WEIR_POLICY", 1, size_of::<PolicyKey>() as u32, 4),
            ("WEIR_NET_LINKS", 1, size_of::<NetPair>() as u32, 4),
            (
                "WEIR_CT",
                1,
                size_of::<FlowKey>() as u32,
                size_of::<CtEntry>() as u32,
            ),
            ("WEIR_SOCK_REVNAT", 9, 16, 8),
            ("WEIR_FRAGS", 9, 12, 4),
            ("WEIR_SUBNETS", 11, 8, 4),
            ("WEIR_STATS", 6, 4, size_of::<Counter>() as u32),
            ("WEIR_EVENTS", 27, 0, 0),
            ("WEIR_TAILS", 3, 4, 4),
            ("WEIR_LINK_DROPS", 10, 4, size_of::<Counter>() as u32),
            ("WEIR_CONFIG6", 2, 4, 24),
            ("WEIR_ENDPOINTS6", 1, 16, size_of::<Endpoint>() as u32 + 16),
            ("WEIR_LINKS6", 1, 4, 16),
            ("WEIR_HOST_ADDRS6", 1, 16, size_of::<HostAddr>() as u32),
            ("WEIR_SUBNETS6", 11, 20, 4),
            ("WEIR_CT6", 1, 40, 112),
            ("WEIR_PUBLISH6", 1, 20, 24),
            ("WEIR_SOCK_REVNAT6", 9, 32, 20),
            ("WEIR_FRAGS6", 9, 40, 4),
        ];
        assert_eq!(got, want);
        assert_eq!(ALL.len(), TABLE.len());
        assert!(ALL.iter().zip(TABLE.iter()).all(|(n, s)| *n == s.name));
    }
}
