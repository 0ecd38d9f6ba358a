//! Policy for new container-to-container flows: `weir_common::policy::decide` over the maps.

use weir_common::{
    addr::PortBe,
    endpoint::{Endpoint, flags},
    policy::{Decided, NetPair, Peer, PolicyKey, RuleSource, decide},
    stats::DropReason,
};

use weir_common::conntrack::FlowKeyOf;

use crate::{
    conntrack::{self, NewFlow, Seg},
    family::Family,
    maps::{WEIR_NET_LINKS, WEIR_POLICY},
};

struct Maps;

impl RuleSource for Maps {
    #[inline(always)]
    fn rule(&self, key: &PolicyKey) -> Option<u32> {
        // SAFETY: plain value read.
        unsafe { WEIR_POLICY.get(key).copied() }
    }
    #[inline(always)]
    fn connected(&self, pair: &NetPair) -> bool {
        WEIR_NET_LINKS.get_ptr(pair).is_some()
    }
}

/// Whether `src` may open a flow to `dst` on `proto`/`port` (the port the target container sees).
#[inline(always)]
pub fn check(src: &Endpoint, dst: &Endpoint, proto: u8, port: PortBe) -> Result<(), DropReason> {
    let s = Peer {
        identity: src.identity,
        network: src.network,
        network_isolated: src.flags & flags::ISOLATED != 0,
    };
    let d = Peer {
        identity: dst.identity,
        network: dst.network,
        network_isolated: dst.flags & flags::ISOLATED != 0,
    };
    match decide(&Maps, s, d, proto, port) {
        (true, _) => Ok(()),
        (false, Decided::Isolated) => Err(DropReason::IsolatedDenied),
        (false, Decided::Network) => Err(DropReason::NetworkDenied),
        (false, _) => Err(DropReason::PolicyDenied),
    }
}

/// Opens a flow `key` from container `src` to container `dst`, if policy allows it: both
/// families. Untracked ICMP (errors, echo with identifier 0, the other port-less messages)
/// is allowed packet by packet, never as a flow (see `Ipv4::tracked`).
#[inline(always)]
pub fn open_local<A: Family>(
    key: &FlowKeyOf<A>,
    seg: Seg,
    tracked: bool,
    src: &Endpoint,
    dst: &Endpoint,
    cfg: &weir_common::config::Config,
) -> Result<(), DropReason> {
    check(src, dst, key.proto, key.dport)?;
    if !tracked {
        return Ok(());
    }
    if conntrack::picked_up(seg) {
        // A TCP flow picked up mid-stream (its entries were cut or lost): either side may
        // have opened it, so both must be allowed to. Otherwise the first segment of the
        // side a cut was meant to protect would reopen, as its own flow, the connection
        // `isolate --cut` had just ended.
        check(dst, src, key.proto, key.sport)?;
    }
    let f = NewFlow {
        flags: 0,
        src_identity: src.identity,
        dst_identity: dst.identity,
    };
    conntrack::create_pair(key, key, &f, cfg, conntrack::now())
}
