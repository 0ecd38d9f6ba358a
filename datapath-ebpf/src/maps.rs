//! The pinned maps. Names, key and value types and sizes come from the table in
//! `weir_common::maps` (each static is typed by its row; control's tests check the built
//! object against the table).

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
        lpm_trie::Key,
    },
};
use weir_common::{
    addr::Ipv6Be,
    config::{Config, Config6},
    conntrack::{CtEntry, CtEntry6},
    endpoint::Endpoint,
    maps::{KeyOf as K, MapDef, ValueOf as V, def},
};

/// A row's default size.
const fn max<M: MapDef>() -> u32 {
    M::SPEC.max_entries
}

#[map]
pub static WEIR_CONFIG: Array<V<def::Config>> = Array::pinned(max::<def::Config>(), 0);

#[map]
pub static WEIR_ENDPOINTS: HashMap<K<def::Endpoints>, V<def::Endpoints>> =
    HashMap::pinned(max::<def::Endpoints>(), 0);

#[map]
pub static WEIR_HOST_ADDRS: HashMap<K<def::HostAddrs>, V<def::HostAddrs>> =
    HashMap::pinned(max::<def::HostAddrs>(), 0);

#[map]
pub static WEIR_PUBLISH: HashMap<K<def::Publish>, V<def::Publish>> =
    HashMap::pinned(max::<def::Publish>(), 0);

#[map]
pub static WEIR_POLICY: HashMap<K<def::Policy>, V<def::Policy>> =
    HashMap::pinned(max::<def::Policy>(), 0);

#[map]
pub static WEIR_NET_LINKS: HashMap<K<def::NetLinks>, V<def::NetLinks>> =
    HashMap::pinned(max::<def::NetLinks>(), 0);

/// A plain (preallocated) hash, not an LRU: under a flood, new flows fail and are counted while
/// established ones stay (an LRU would evict them); expired entries are swept when it is full.
#[map]
pub static WEIR_CT: HashMap<K<def::Conntrack>, V<def::Conntrack>> =
    HashMap::pinned(max::<def::Conntrack>(), 0);

/// Conntrack sweep bookkeeping, two slots per family (IPv4 first): when it last ran, and
/// whether an insert found the map full; then one flag set with either (what the packet path
/// reads). Not pinned: a rate limit, nothing to keep.
#[map]
pub static WEIR_CT_SWEEP: Array<u64> = Array::with_max_entries(5, 0);

/// Per-CPU scratch space for the two entries a new flow inserts ([`SCRATCH_REPLY`],
/// [`SCRATCH_ORIG`]): built here rather than on the stack, which the verifier bounds to 512
/// bytes along a call chain (not pinned: nothing in it outlives a program run).
#[map]
pub static WEIR_CT_SCRATCH: PerCpuArray<CtEntry> = PerCpuArray::with_max_entries(2, 0);
pub const SCRATCH_REPLY: u32 = 0;
pub const SCRATCH_ORIG: u32 = 1;

/// The same for IPv6 entries (112 bytes each).
#[map]
pub static WEIR_CT6_SCRATCH: PerCpuArray<CtEntry6> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU scratch space for the parsed IPv6 packet (see `packet6::parse`).
#[map]
pub static WEIR_PKT6_SCRATCH: PerCpuArray<crate::packet6::Ipv6> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for a NAT66 decision (see `nat6::Snat6`).
#[map]
pub static WEIR_SNAT6_SCRATCH: PerCpuArray<crate::nat6::Snat6> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for the ICMPv6 errors the datapath builds (see `icmp6`): what
/// `bpf_csum_diff` sums at once.
#[map]
pub static WEIR_ICMP6_SCRATCH: PerCpuArray<[u32; 128]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for `bpf_fib_lookup`'s parameters (64 bytes), for the same reason.
#[map]
pub static WEIR_FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static WEIR_SOCK_REVNAT: LruHashMap<K<def::SockRevnat>, V<def::SockRevnat>> =
    LruHashMap::pinned(max::<def::SockRevnat>(), 0);

#[map]
pub static WEIR_FRAGS: LruHashMap<K<def::Fragments>, V<def::Fragments>> =
    LruHashMap::pinned(max::<def::Fragments>(), 0);

#[map]
pub static WEIR_SUBNETS: LpmTrie<K<def::Subnets>, V<def::Subnets>> =
    LpmTrie::pinned(max::<def::Subnets>(), 0);

#[map]
pub static WEIR_STATS: PerCpuArray<V<def::Stats>> = PerCpuArray::pinned(max::<def::Stats>(), 0);

#[map]
pub static WEIR_EVENTS: RingBuf = RingBuf::pinned(max::<def::Events>(), 0);

#[map]
pub static WEIR_LINK_DROPS: LruPerCpuHashMap<K<def::LinkDrops>, V<def::LinkDrops>> =
    LruPerCpuHashMap::pinned(max::<def::LinkDrops>(), 0);

#[map]
pub static WEIR_TAILS: ProgramArray = ProgramArray::pinned(max::<def::Tails>(), 0);

#[map]
pub static WEIR_CONFIG6: Array<V<def::Config6>> = Array::pinned(max::<def::Config6>(), 0);

#[map]
pub static WEIR_ENDPOINTS6: HashMap<K<def::Endpoints6>, V<def::Endpoints6>> =
    HashMap::pinned(max::<def::Endpoints6>(), 0);

#[map]
pub static WEIR_LINKS6: HashMap<K<def::Links6>, V<def::Links6>> =
    HashMap::pinned(max::<def::Links6>(), 0);

#[map]
pub static WEIR_HOST_ADDRS6: HashMap<K<def::HostAddrs6>, V<def::HostAddrs6>> =
    HashMap::pinned(max::<def::HostAddrs6>(), 0);

#[map]
pub static WEIR_SUBNETS6: LpmTrie<K<def::Subnets6>, V<def::Subnets6>> =
    LpmTrie::pinned(max::<def::Subnets6>(), 0);

#[map]
pub static WEIR_CT6: HashMap<K<def::Conntrack6>, V<def::Conntrack6>> =
    HashMap::pinned(max::<def::Conntrack6>(), 0);

#[map]
pub static WEIR_FRAGS6: LruHashMap<K<def::Fragments6>, V<def::Fragments6>> =
    LruHashMap::pinned(max::<def::Fragments6>(), 0);

#[map]
pub static WEIR_SOCK_REVNAT6: LruHashMap<K<def::SockRevnat6>, V<def::SockRevnat6>> =
    LruHashMap::pinned(max::<def::SockRevnat6>(), 0);

#[map]
pub static WEIR_PUBLISH6: HashMap<K<def::Publish6>, V<def::Publish6>> =
    HashMap::pinned(max::<def::Publish6>(), 0);

/// The configuration, `None` until `control init` has written it (the array's one slot is
/// all zeros until then, and a written one always carries its schema).
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    WEIR_CONFIG.get(0).filter(|c| c.schema != 0)
}

#[inline(always)]
pub fn endpoint(addr: u32) -> Option<&'static Endpoint> {
    // SAFETY: endpoints are only replaced whole by the control plane; a racing reader sees
    // either the old or the new value of each field, both valid.
    unsafe { WEIR_ENDPOINTS.get(&addr) }
}

#[inline(always)]
pub fn is_host_addr(addr: u32) -> bool {
    WEIR_HOST_ADDRS.get_ptr(&addr).is_some()
}

/// Whether `addr` lies inside one of Weir's networks.
#[inline(always)]
pub fn in_weir_subnet(addr: u32) -> bool {
    WEIR_SUBNETS.get(Key::new(32, addr)).is_some()
}

#[inline(always)]
pub fn config6() -> Option<&'static Config6> {
    WEIR_CONFIG6.get(0)
}

#[inline(always)]
pub fn endpoint6(addr: &Ipv6Be) -> Option<&'static Endpoint> {
    // SAFETY: as for `endpoint`.
    unsafe { WEIR_ENDPOINTS6.get(addr).map(|e| &e.ep) }
}

/// The IPv6 gateway of the container at `addr`.
#[inline(always)]
pub fn gateway6_of(addr: &Ipv6Be) -> Option<Ipv6Be> {
    // SAFETY: as for `endpoint`.
    unsafe { WEIR_ENDPOINTS6.get(addr).map(|e| e.gateway6) }
}

/// The IPv6 address of the container behind host-side veth `ifindex`.
#[inline(always)]
pub fn link6(ifindex: u32) -> Option<Ipv6Be> {
    // SAFETY: plain value read.
    unsafe { WEIR_LINKS6.get(&ifindex).copied() }
}

#[inline(always)]
pub fn is_host_addr6(addr: &Ipv6Be) -> bool {
    WEIR_HOST_ADDRS6.get_ptr(addr).is_some()
}

/// The Weir network `addr` lies in, if any.
#[inline(always)]
pub fn subnet6(addr: &Ipv6Be) -> Option<u32> {
    WEIR_SUBNETS6.get(Key::new(128, *addr)).copied()
}
