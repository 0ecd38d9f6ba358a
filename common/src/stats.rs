//! Datapath counters (per-CPU array `WEIR_STATS`, summed by `control stats`): packets and
//! bytes per forwarding path, NAT/conntrack events, and drops per (reason, hook). Every
//! drop in the datapath names one of these reasons.

use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

crate::user_pod!(Counter);

/// Declares a `#[repr(u32)]` enum with `ALL`, `name()` and `from_u32()`.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal => $s:literal,)* }) => {
        $(#[$m])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
            pub const fn from_u32(n: u32) -> Option<Self> { match n { $($n => Some($name::$v),)* _ => None } }
        }
    };
}

named_enum!(
    /// Where a packet was handled.
    Hook {
        FromContainer = 0 => "from-container",
        UplinkTc = 1 => "uplink-tc",
        UplinkXdp = 2 => "uplink-xdp",
        // 3 was the socket hooks', which drop nothing (they rewrite or leave alone).
        ToContainer = 4 => "to-container",
        UplinkEgress = 5 => "uplink-egress",
    }
);
/// Room for more hooks without changing the stats map's layout.
pub const HOOKS: u32 = 8;

named_enum!(
    /// How a packet was forwarded.
    Path {
        /// Container to container, delivered with bpf_redirect_peer.
        ContainerToContainer = 0 => "container-to-container",
        /// Container to an address of the host itself (handed to the host stack).
        ContainerToHost = 1 => "container-to-host",
        /// Container to the world, masqueraded (and replies' reverse direction).
        Egress = 2 => "egress-masquerade",
        /// World to container: replies to masqueraded flows.
        EgressReply = 3 => "egress-reply",
        /// World to a published port, DNATed into the container.
        Published = 4 => "published-in",
        /// Container's replies to world traffic on a published port.
        PublishedReply = 5 => "published-reply",
        /// Container to a published port through a host address.
        Hairpin = 6 => "hairpin",
        /// ARP requests answered by the datapath.
        ArpReply = 7 => "arp-reply",
        /// Host sockets connecting to a published port, rewritten at connect/sendmsg.
        HostToPublished = 8 => "host-to-published",
        /// ICMP errors translated back to the flow they belong to.
        IcmpError = 9 => "icmp-error-translated",
        /// Uplink traffic for the host itself, left to the host stack.
        UplinkToHost = 10 => "uplink-to-host",
        /// IPv6 neighbour solicitations answered by the datapath.
        NdpReply = 11 => "ndp-reply",
    }
);

named_enum!(
    /// NAT and conntrack events.
    Event {
        CtCreated = 0 => "conntrack-created",
        SnatNew = 1 => "snat-new",
        DnatNew = 2 => "dnat-new",
        SnatPortRetry = 3 => "snat-port-retried",
        CtReclaimed = 4 => "conntrack-expired-reclaimed",
        CtReopened = 5 => "conntrack-reopened",
        /// Expired entries freed by the datapath's own sweep of a full conntrack map.
        CtSwept = 6 => "conntrack-swept",
    }
);

named_enum!(
    /// Why a packet was dropped.
    DropReason {
        Malformed = 0 => "malformed",
        SpoofedSource = 1 => "spoofed-source",
        UnknownEndpoint = 2 => "unknown-endpoint",
        UnsupportedL3 = 3 => "unsupported-l3",
        ArpInvalid = 4 => "arp-invalid",
        PolicyDenied = 5 => "policy-denied",
        IsolatedDenied = 6 => "policy-isolated",
        NetworkDenied = 7 => "policy-network",
        NotPublished = 8 => "not-published",
        InternalNetwork = 9 => "internal-network",
        NoRoute = 10 => "no-route",
        SnatExhausted = 11 => "snat-ports-exhausted",
        CtInsertFailed = 12 => "conntrack-insert-failed",
        Fragment = 13 => "fragment-untracked",
        TtlExceeded = 14 => "ttl-exceeded",
        Multicast = 15 => "multicast-broadcast",
        /// A helper that rewrites the packet (store, resize) failed.
        WriteFailed = 16 => "write-failed",
        RedirectFailed = 17 => "redirect-failed",
        IcmpErrorUnmatched = 18 => "icmp-error-unmatched",
        Martian = 19 => "martian-address",
        /// Forwarded into a container by the kernel rather than by Weir (see to_container).
        KernelForwarded = 20 => "kernel-forwarded",
        /// ICMP that opens no flow: anything but an echo request, to the world.
        IcmpUntracked = 21 => "icmp-untracked",
        /// A VLAN-tagged frame from a container (never legitimate: no tag reaches the uplink).
        VlanTagged = 22 => "vlan-tagged",
        /// The new-flow program was not in its tail-call slot (only during `control init`).
        TailCallFailed = 23 => "tail-call-failed",
        /// Larger than the uplink's MTU and not to be fragmented by Weir (no DF bit to answer).
        TooBig = 24 => "too-big",
        /// A protocol without ports (GRE, ESP, IP-in-IP, SCTP…) from a container to the world:
        /// masquerade has nothing but the address to tell its flows from the host's.
        UnsupportedL4 = 25 => "unsupported-l4",
        /// Leaving the uplink from a Weir network's address, untranslated: the kernel routed it
        /// (Weir masquerades everything it sends out), past every check of Weir's.
        Unmasqueraded = 26 => "unmasqueraded-egress",
        /// From a container before `control init` wrote the configuration (or after it was
        /// wiped behind Weir's back): nothing can be decided without it. The uplink's
        /// programs hand such traffic to the host stack instead.
        NotInitialised = 27 => "not-initialised",
        /// A helper that patches a checksum (`bpf_l3/l4_csum_replace`) failed.
        ChecksumFailed = 28 => "checksum-failed",
        /// A data packet from or to a link-local (or unspecified) IPv6 address: those are
        /// legal only for neighbour discovery, and routed they would reach the host.
        LinkLocal = 29 => "link-local",
        /// Neighbour discovery a container may not send (router solicitations and
        /// advertisements, advertisements, redirects) or a malformed solicitation.
        NdpInvalid = 30 => "ndp-invalid",
        /// An IPv6 extension-header chain Weir does not follow: a routing header with segments
        /// left (a source route), hop-by-hop options not first, or a chain too long.
        ExtHeader = 31 => "ipv6-ext-header",
    }
);
pub const DROP_REASONS: u32 = 32;

/// Index layout of `WEIR_STATS`.
pub const PATH_BASE: u32 = 0;
pub const EVENT_BASE: u32 = 32;
pub const DROP_BASE: u32 = 64;
pub const STATS_ENTRIES: u32 = DROP_BASE + DROP_REASONS * HOOKS;

#[inline(always)]
pub const fn path_index(p: Path) -> u32 {
    PATH_BASE + p as u32
}

#[inline(always)]
pub const fn event_index(e: Event) -> u32 {
    EVENT_BASE + e as u32
}

#[inline(always)]
pub const fn drop_index(r: DropReason, h: Hook) -> u32 {
    DROP_BASE + r as u32 * HOOKS + h as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_distinct_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for p in Path::ALL {
            assert!(seen.insert(path_index(*p)));
            assert!(path_index(*p) < EVENT_BASE);
        }
        for e in Event::ALL {
            assert!(seen.insert(event_index(*e)));
            assert!(event_index(*e) < DROP_BASE);
        }
        for r in DropReason::ALL {
            assert!((*r as u32) < DROP_REASONS);
            for h in Hook::ALL {
                assert!(seen.insert(drop_index(*r, *h)));
                assert!(drop_index(*r, *h) < STATS_ENTRIES);
            }
        }
        assert_eq!(DropReason::from_u32(5), Some(DropReason::PolicyDenied));
    }
}
