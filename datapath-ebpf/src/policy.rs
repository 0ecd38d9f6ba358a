//! Policy for new container-to-container flows: `weir_common::policy::decide` over the maps.

use weir_common::{
    addr::PortBe,
    endpoint::Endpoint,
    policy::{Decided, NetPair, Peer, PolicyKey, RuleSource, decide},
    stats::DropReason,
};

use crate::maps::{WEIR_NET_LINKS, WEIR_POLICY};

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
    };
    let d = Peer {
        identity: dst.identity,
        network: dst.network,
    };
    match decide(&Maps, s, d, proto, port) {
        (true, _) => Ok(()),
        (false, Decided::Isolated) => Err(DropReason::IsolatedDenied),
        (false, Decided::Network) => Err(DropReason::NetworkDenied),
        (false, _) => Err(DropReason::PolicyDenied),
    }
}
