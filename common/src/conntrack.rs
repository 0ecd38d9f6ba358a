//! Connection tracking and NAT state: one hash map of per-direction entries.
//!
//! Every tracked flow has two entries, one keyed by the tuple its packets carry in each
//! direction as the datapath sees them *before* rewriting. An entry says what tuple the packet
//! leaves with (`rewrite`; equal to the key when nothing is translated) and names its
//! `twin`, so state changes and garbage collection always act on the pair. NAT is decided on
//! these entries alone: a missing entry means "new flow", never "reply" (cilium#47425).

use bytemuck::{Pod, Zeroable};

use crate::{
    addr::{Ipv4Be, Ipv6Be, PortBe},
    config::Timeouts,
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A flow 5-tuple in packet orientation, for either family (`A` is [`Ipv4Be`] or
/// [`Ipv6Be`]: one definition, so both families share every piece of flow logic). For ICMP
/// echo the identifier stands in for a port: requests carry it as `sport` (with `dport` 0),
/// replies as `dport`, so `reversed()` of a request is its reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: PortBe,
    pub dport: PortBe,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// An IPv4 flow (16 bytes: the layout pinned in `WEIR_CT`).
pub type FlowKey = FlowKeyOf<Ipv4Be>;
/// An IPv6 flow (40 bytes, in `WEIR_CT6`).
pub type FlowKey6 = FlowKeyOf<Ipv6Be>;

impl<A: Copy> FlowKeyOf<A> {
    #[inline(always)]
    pub const fn new(saddr: A, daddr: A, sport: PortBe, dport: PortBe, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// The tuple of a packet travelling the other way.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self::new(self.daddr, self.saddr, self.dport, self.sport, self.proto)
    }
}

/// Entry flags.
pub mod flags {
    /// This entry matches the reply direction of the flow.
    pub const REPLY: u16 = 1 << 0;
    /// Source translated to the uplink address (MASQUERADE).
    pub const SNAT: u16 = 1 << 1;
    /// Destination translated to a container (published port).
    pub const DNAT: u16 = 1 << 2;
    /// Container → host address → container (published port reached from a container).
    pub const HAIRPIN: u16 = 1 << 3;
    /// This direction has sent a FIN.
    pub const FIN: u16 = 1 << 4;
    /// Created from the uplink (the world initiated the flow).
    pub const FROM_WORLD: u16 = 1 << 5;
}

/// Flow states, shared by both entries of a pair.
pub mod state {
    /// TCP: a SYN (or a segment picked up mid-stream) seen, no reply yet. UDP/ICMP/other: no
    /// reply yet.
    pub const NEW: u8 = 1;
    /// UDP/ICMP/other: a reply was seen. TCP: the handshake completed — a reply, then the
    /// initiator again (a reply alone, which a spoofed SYN earns, is [`REPLIED`]).
    pub const ESTABLISHED: u8 = 2;
    /// TCP: one side sent FIN.
    pub const FIN_WAIT: u8 = 3;
    /// TCP: both sides sent FIN, or RST seen.
    pub const CLOSED: u8 = 4;
    /// TCP: the other side answered, the initiator has not spoken since (SYN_RECV).
    pub const REPLIED: u8 = 5;

    pub const fn name(s: u8) -> &'static str {
        match s {
            NEW => "new",
            ESTABLISHED => "established",
            FIN_WAIT => "fin-wait",
            CLOSED => "closed",
            REPLIED => "replied",
            _ => "?",
        }
    }

    /// Not yet shown to be a real two-way flow: what a flood of forged or unanswered packets
    /// creates. These keep the short SYN (or unreplied) timeout, and a full table drops them
    /// first (see the datapath's sweep), as the kernel's early_drop prefers unassured entries.
    pub const fn unconfirmed(s: u8) -> bool {
        s == NEW || s == REPLIED
    }
}

/// TCP flag bits as in the header's 13th byte.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    /// A connection-opening segment: SYN without ACK, RST or FIN. SYN+FIN is no opening:
    /// Linux discards it in LISTEN and nf_conntrack calls it invalid, so it must neither
    /// open a (published-port) flow nor reopen a closed one.
    pub const fn is_syn_only(f: u8) -> bool {
        f & (SYN | ACK | RST | FIN) == SYN
    }
}

/// One direction of a tracked flow, for either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntryOf<A> {
    /// The tuple packets matching the key leave with.
    pub rewrite: FlowKeyOf<A>,
    /// The key of the other direction's entry.
    pub twin: FlowKeyOf<A>,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last refresh.
    pub last_seen: u64,
    /// When the flow was created (same clock).
    pub created: u64,
    /// Identity of the flow's initiator and of its target (for `control conntrack` and for
    /// re-checking established flows against changed policy).
    pub src_identity: u32,
    pub dst_identity: u32,
    pub flags: u16,
    pub state: u8,
    pub _pad: [u8; 5],
}

/// An IPv4 entry (64 bytes, pinned in `WEIR_CT`).
pub type CtEntry = CtEntryOf<Ipv4Be>;
/// An IPv6 entry (112 bytes).
pub type CtEntry6 = CtEntryOf<Ipv6Be>;

impl<A: Copy> CtEntryOf<A> {
    pub const fn is_reply(&self) -> bool {
        self.flags & flags::REPLY != 0
    }

    /// True once the entry has outlived its state's timeout at `now_ns`.
    #[inline(always)]
    pub fn expired(&self, now_ns: u64, t: &Timeouts) -> bool {
        let limit = t.for_state(self.rewrite.proto, self.state) as u64 * 1_000_000_000;
        now_ns.saturating_sub(self.last_seen) > limit
    }
}

// SAFETY: #[repr(C)] with every field a plain integer (array), and no padding: the sizes
// below are the sums of the fields' sizes (a padded layout would fail to compile here).
unsafe impl Zeroable for FlowKey {}
unsafe impl Pod for FlowKey {}
unsafe impl Zeroable for FlowKey6 {}
unsafe impl Pod for FlowKey6 {}
unsafe impl Zeroable for CtEntry {}
unsafe impl Pod for CtEntry {}
unsafe impl Zeroable for CtEntry6 {}
unsafe impl Pod for CtEntry6 {}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 4 + 4 + 2 + 2 + 1 + 3);
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 16 + 16 + 2 + 2 + 1 + 3);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 16 * 2 + 8 * 2 + 4 * 2 + 2 + 1 + 5);
const _: () = assert!(core::mem::size_of::<CtEntry6>() == 40 * 2 + 8 * 2 + 4 * 2 + 2 + 1 + 5);

/// What a packet does to a TCP flow's state. `this_fin`/`twin_fin` say whether each
/// direction has already sent a FIN. Returns the new shared state and whether this
/// direction has now sent a FIN, or `None` when nothing changes (the common case).
#[inline(always)]
pub const fn tcp_transition(
    state: u8,
    is_reply: bool,
    this_fin: bool,
    twin_fin: bool,
    tcp_flags: u8,
) -> Option<(u8, bool)> {
    if tcp_flags & tcp::RST != 0 {
        return if state == state::CLOSED {
            None
        } else {
            Some((state::CLOSED, this_fin))
        };
    }
    // A late FIN (after an RST) leaves a closed flow closed, as nf_conntrack does: going back
    // to FIN_WAIT would keep a reset connection 12 times longer.
    if tcp_flags & tcp::FIN != 0 && !this_fin && state != state::CLOSED {
        let next = if twin_fin {
            state::CLOSED
        } else {
            state::FIN_WAIT
        };
        return Some((next, true));
    }
    if state == state::NEW && is_reply {
        return Some((state::REPLIED, this_fin));
    }
    if state == state::REPLIED && !is_reply {
        return Some((state::ESTABLISHED, this_fin));
    }
    None
}

/// For UDP, ICMP and other protocols: a reply makes the flow established.
#[inline(always)]
pub const fn datagram_transition(state: u8, is_reply: bool) -> Option<u8> {
    if state == state::NEW && is_reply {
        Some(state::ESTABLISHED)
    } else {
        None
    }
}

/// A TCP segment that starts a new connection on a tuple whose previous connection is
/// closing or closed (port reuse) replaces the old flow instead of riding on it.
#[inline(always)]
pub const fn reopens(state: u8, proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_TCP
        && tcp::is_syn_only(tcp_flags)
        && (state == state::FIN_WAIT || state == state::CLOSED)
}

/// Entries are refreshed at most this often per direction, to keep writes to shared cache
/// lines off the per-packet path; timeouts are far coarser than this.
pub const REFRESH_NS: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{ipv4, port_be};

    #[test]
    fn reverse_is_an_involution() {
        let k = FlowKey::new(
            ipv4(10, 0, 0, 2),
            ipv4(198, 18, 0, 2),
            port_be(40000),
            port_be(80),
            IPPROTO_TCP,
        );
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().saddr, k.daddr);
        assert_eq!(k.reversed().sport, k.dport);
    }

    #[test]
    fn tcp_lifecycle() {
        use state::*;
        // SYN, SYN-ACK, ACK.
        assert_eq!(tcp_transition(NEW, false, false, false, tcp::SYN), None);
        assert_eq!(
            tcp_transition(NEW, true, false, false, tcp::SYN | tcp::ACK),
            Some((REPLIED, false))
        );
        assert_eq!(
            tcp_transition(REPLIED, true, false, false, tcp::SYN | tcp::ACK),
            None
        );
        assert_eq!(
            tcp_transition(REPLIED, false, false, false, tcp::ACK),
            Some((ESTABLISHED, false))
        );
        assert_eq!(
            tcp_transition(ESTABLISHED, false, false, false, tcp::ACK),
            None
        );
        // FIN one way, FIN the other.
        assert_eq!(
            tcp_transition(ESTABLISHED, false, false, false, tcp::FIN | tcp::ACK),
            Some((FIN_WAIT, true))
        );
        assert_eq!(
            tcp_transition(FIN_WAIT, false, true, false, tcp::FIN | tcp::ACK),
            None
        );
        assert_eq!(
            tcp_transition(FIN_WAIT, true, false, true, tcp::FIN | tcp::ACK),
            Some((CLOSED, true))
        );
        // RST closes from anywhere, once.
        assert_eq!(
            tcp_transition(ESTABLISHED, true, false, false, tcp::RST),
            Some((CLOSED, false))
        );
        assert_eq!(tcp_transition(CLOSED, true, false, false, tcp::RST), None);
        assert!(reopens(CLOSED, IPPROTO_TCP, tcp::SYN));
        assert!(!reopens(ESTABLISHED, IPPROTO_TCP, tcp::SYN));
        assert!(!reopens(CLOSED, IPPROTO_TCP, tcp::SYN | tcp::ACK));
        assert!(!reopens(CLOSED, IPPROTO_UDP, tcp::SYN));
    }

    #[test]
    fn expiry_follows_state_timeouts() {
        let t = Timeouts::KERNEL_DEFAULTS;
        let mut e = CtEntry {
            last_seen: 1_000_000_000,
            ..Default::default()
        };
        e.rewrite.proto = IPPROTO_UDP;
        e.state = state::NEW;
        let s = 1_000_000_000u64;
        assert!(!e.expired(s + t.udp as u64 * s, &t));
        assert!(e.expired(2 * s + t.udp as u64 * s, &t));
        e.state = state::ESTABLISHED;
        assert!(!e.expired(2 * s + t.udp as u64 * s, &t));
        // A clock reading older than last_seen (another CPU refreshed it) is not expiry.
        assert!(!e.expired(0, &t));
    }

    use proptest::prelude::*;

    /// Segments worth telling apart, plus any byte at all.
    fn tcp_flags() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(tcp::SYN),
            Just(tcp::SYN | tcp::ACK),
            Just(tcp::ACK),
            Just(tcp::FIN | tcp::ACK),
            Just(tcp::FIN),
            Just(tcp::RST),
            Just(tcp::RST | tcp::ACK),
            Just(tcp::SYN | tcp::FIN),
            Just(0),
            any::<u8>(),
        ]
    }

    /// Reference: a TCP flow's state from the whole history of its packets (direction,
    /// flags) — not step by step: any RST, or a FIN each way, closes it for good; one FIN
    /// makes it half-closed; the initiator speaking again after a reply establishes it; a
    /// reply alone leaves it replied.
    fn tcp_state_after(history: &[(bool, u8)]) -> u8 {
        let any = |pred: &dyn Fn(bool, u8) -> bool| history.iter().any(|&(r, f)| pred(r, f));
        let fin_from = |reply: bool| any(&|r, f| r == reply && f & tcp::FIN != 0);
        let first_reply = history.iter().position(|&(r, _)| r);
        if any(&|_, f| f & tcp::RST != 0) || (fin_from(false) && fin_from(true)) {
            state::CLOSED
        } else if fin_from(false) || fin_from(true) {
            state::FIN_WAIT
        } else if first_reply.is_some_and(|i| history[i..].iter().any(|&(r, _)| !r)) {
            state::ESTABLISHED
        } else if first_reply.is_some() {
            state::REPLIED
        } else {
            state::NEW
        }
    }

    proptest! {
        /// Driving `tcp_transition` packet by packet, the way the datapath does (each
        /// direction's FIN flag only ever set, the state shared), always agrees with the
        /// reference; and it only answers `Some` for a real change.
        #[test]
        fn tcp_transition_matches_the_history_model(
            history in proptest::collection::vec((any::<bool>(), tcp_flags()), 1..24),
        ) {
            let mut st = state::NEW;
            let mut fin = [false; 2];
            for (i, &(reply, f)) in history.iter().enumerate() {
                let (this, twin) = (fin[reply as usize], fin[!reply as usize]);
                if let Some((s, this_fin)) = tcp_transition(st, reply, this, twin, f) {
                    prop_assert!((s, this_fin) != (st, this), "Some without a change");
                    st = s;
                    fin[reply as usize] |= this_fin;
                }
                prop_assert_eq!(
                    st,
                    tcp_state_after(&history[..=i]),
                    "after {:?}",
                    &history[..=i]
                );
            }
        }

        /// Datagram flows: established by the first reply, nothing else changes them.
        #[test]
        fn datagram_transition_matches_the_history_model(
            replies in proptest::collection::vec(any::<bool>(), 1..16),
        ) {
            let mut st = state::NEW;
            for (i, &reply) in replies.iter().enumerate() {
                if let Some(s) = datagram_transition(st, reply) {
                    st = s;
                }
                let want = if replies[..=i].iter().any(|&r| r) {
                    state::ESTABLISHED
                } else {
                    state::NEW
                };
                prop_assert_eq!(st, want);
            }
        }

        #[test]
        fn reversal_swaps_ends_and_is_an_involution(
            s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(), p in any::<u8>(),
        ) {
            let k = FlowKey::new(s, d, sp, dp, p);
            let r = k.reversed();
            prop_assert_eq!((r.saddr, r.daddr, r.sport, r.dport, r.proto), (d, s, dp, sp, p));
            prop_assert_eq!(r.reversed(), k);
            prop_assert_eq!(r == k, s == d && sp == dp);
            prop_assert_eq!(r._pad, [0; 3]);
        }

        /// Expiry: strictly more than the state's timeout since the last refresh, per the
        /// table of which timeout applies to which (protocol, state); never for a clock
        /// reading older than the refresh.
        #[test]
        fn expiry_matches_the_timeout_table(
            proto in prop_oneof![Just(IPPROTO_ICMP), Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(47u8)],
            st in 1u8..=5,
            secs in proptest::collection::vec(0u32..2_000_000, 8),
            last in any::<u64>(),
            ago in prop_oneof![any::<u64>(), 0u64..3_000_000_000_000_000],
        ) {
            let t = Timeouts {
                tcp_syn: secs[0],
                tcp_established: secs[1],
                tcp_fin: secs[2],
                tcp_closed: secs[3],
                udp: secs[4],
                udp_stream: secs[5],
                icmp: secs[6],
                other: secs[7],
            };
            let limit = match (proto, st) {
                (IPPROTO_TCP, state::ESTABLISHED) => t.tcp_established,
                (IPPROTO_TCP, state::FIN_WAIT) => t.tcp_fin,
                (IPPROTO_TCP, state::CLOSED) => t.tcp_closed,
                (IPPROTO_TCP, _) => t.tcp_syn,
                (IPPROTO_UDP, state::ESTABLISHED) => t.udp_stream,
                (IPPROTO_UDP, _) => t.udp,
                (IPPROTO_ICMP, _) => t.icmp,
                _ => t.other,
            };
            let mut e = CtEntry { last_seen: last, state: st, ..Default::default() };
            e.rewrite.proto = proto;
            let now = last.wrapping_add(ago);
            let want = now > last && (now - last) as u128 > limit as u128 * 1_000_000_000;
            prop_assert_eq!(e.expired(now, &t), want);
        }
    }

    /// Opening segments: SYN without ACK, RST or FIN; other bits (ECN setup, PSH, URG) do
    /// not matter.
    #[test]
    fn syn_only_is_exactly_an_opening_segment() {
        for f in 0..=255u8 {
            let bit = |b: u8| f & b != 0;
            let want = bit(tcp::SYN) && !bit(tcp::ACK) && !bit(tcp::RST) && !bit(tcp::FIN);
            assert_eq!(tcp::is_syn_only(f), want, "flags {f:#04x}");
            assert_eq!(
                reopens(state::CLOSED, IPPROTO_TCP, f),
                want,
                "reopen with {f:#04x}"
            );
        }
        assert!(tcp::is_syn_only(tcp::SYN | 0x40 | 0x80)); // SYN + ECE + CWR
    }
}
crate::user_pod!(FlowKey, CtEntry, FlowKey6, CtEntry6);
