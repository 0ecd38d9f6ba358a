//! The pinned maps. Names, key and value types come from `weir_common`.

use aya_ebpf::{
    bindings::bpf_fib_lookup,
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf, lpm_trie::Key,
    },
};
use weir_common::{
    config::Config,
    conntrack::{CtEntry, FlowKey},
    endpoint::{Endpoint, HostAddr},
    maps::*,
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishTarget},
    stats::{Counter, STATS_ENTRIES},
};

#[map]
pub static WEIR_CONFIG: Array<Config> = Array::pinned(1, 0);

#[map]
pub static WEIR_ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(ENDPOINTS_MAX, 0);

#[map]
pub static WEIR_HOST_ADDRS: HashMap<u32, HostAddr> = HashMap::pinned(HOST_ADDRS_MAX, 0);

#[map]
pub static WEIR_PUBLISH: HashMap<PublishKey, PublishTarget> = HashMap::pinned(PUBLISH_MAX, 0);

#[map]
pub static WEIR_POLICY: HashMap<PolicyKey, u32> = HashMap::pinned(POLICY_MAX, 0);

#[map]
pub static WEIR_NET_LINKS: HashMap<NetPair, u32> = HashMap::pinned(NET_LINKS_MAX, 0);

/// A plain (preallocated) hash, not an LRU: under a flood, new flows fail and are counted while
/// established ones stay (an LRU would evict them); expired entries are swept when it is full.
#[map]
pub static WEIR_CT: HashMap<FlowKey, CtEntry> = HashMap::pinned(CONNTRACK_MAX, 0);

/// Conntrack sweep bookkeeping: [0] when it last ran, [1] whether an insert found the map
/// full (not pinned: a rate limit, nothing to keep).
#[map]
pub static WEIR_CT_SWEEP: Array<u64> = Array::with_max_entries(2, 0);

/// Per-CPU scratch space for the two entries a new flow inserts ([`SCRATCH_REPLY`],
/// [`SCRATCH_ORIG`]): built here rather than on the stack, which the verifier bounds to 512
/// bytes along a call chain (not pinned: nothing in it outlives a program run).
#[map]
pub static WEIR_CT_SCRATCH: PerCpuArray<CtEntry> = PerCpuArray::with_max_entries(2, 0);
pub const SCRATCH_REPLY: u32 = 0;
pub const SCRATCH_ORIG: u32 = 1;

/// Per-CPU scratch space for `bpf_fib_lookup`'s parameters (64 bytes), for the same reason.
#[map]
pub static WEIR_FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static WEIR_SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::pinned(SOCK_REVNAT_MAX, 0);

#[map]
pub static WEIR_FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::pinned(FRAGMENTS_MAX, 0);

#[map]
pub static WEIR_SUBNETS: LpmTrie<u32, u32> = LpmTrie::pinned(SUBNETS_MAX, 0);

#[map]
pub static WEIR_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_ENTRIES, 0);

#[map]
pub static WEIR_EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map]
pub static WEIR_TAILS: ProgramArray = ProgramArray::pinned(TAILS_MAX, 0);

/// The configuration, or `None` before `control init` has written it.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    WEIR_CONFIG.get(0)
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
