//! Who may open connections to whom. Rules live in hash maps keyed by identities, so
//! deciding costs at most four lookups whatever the number of rules or containers.
//!
//! Resolution for a new flow from container `src` to container `dst` on `proto`/`port`,
//! most specific first — the first level that has an entry decides:
//!  1. a rule for exactly (src, dst, proto, port)        — `control allow A B --port P/proto`
//!  2. a rule for (src, dst, any port)                   — `control isolate A B`, `control allow A B`
//!  3. a rule for (anyone, dst, any port)                — `control isolate B` (default-deny ingress)
//!  4. the network default: same network (unless it is `--isolated`) or connected networks
//!     allow, otherwise deny.
//!
//! At one level an allow beats a deny (the control plane compiles both into one entry).
//! Only new flows are checked; replies ride on conntrack.

use bytemuck::{Pod, Zeroable};

use crate::addr::PortBe;

/// Matches any identity (or any port/protocol when 0 in those fields).
pub const IDENTITY_ANY: u32 = 0;
/// Anything behind the uplink.
pub const IDENTITY_WORLD: u32 = 2;
/// Containers get identities from here up.
pub const IDENTITY_FIRST_CONTAINER: u32 = 256;

pub const VERDICT_ALLOW: u32 = 1;
pub const VERDICT_DENY: u32 = 2;

/// Key of `WEIR_POLICY`; value is a verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PolicyKey {
    pub src: u32,
    pub dst: u32,
    pub port: PortBe,
    pub proto: u8,
    pub _pad: u8,
}

impl PolicyKey {
    #[inline(always)]
    pub const fn new(src: u32, dst: u32, proto: u8, port: PortBe) -> Self {
        Self {
            src,
            dst,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Key of `WEIR_NET_LINKS` (networks joined with `control network connect`), stored with
/// `a <= b`; value is 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct NetPair {
    pub a: u32,
    pub b: u32,
}

impl NetPair {
    #[inline(always)]
    pub const fn new(x: u32, y: u32) -> Self {
        if x <= y {
            Self { a: x, b: y }
        } else {
            Self { a: y, b: x }
        }
    }
}

/// One side of a flow, as far as policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub identity: u32,
    pub network: u32,
    /// Its network is `--isolated`: its members do not reach each other by default.
    pub network_isolated: bool,
}

/// Which level of the resolution order decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Source and destination are the same container (its own published port, say).
    Itself,
    PortRule,
    PairRule,
    Isolated,
    Network,
}

/// Where rules come from: BPF maps in the datapath, the desired state in the control plane.
pub trait RuleSource {
    fn rule(&self, key: &PolicyKey) -> Option<u32>;
    fn connected(&self, pair: &NetPair) -> bool;
}

/// Decides a new flow from `src` to `dst`. Returns whether it is allowed and which level said so.
#[inline(always)]
pub fn decide<S: RuleSource>(
    s: &S,
    src: Peer,
    dst: Peer,
    proto: u8,
    port: PortBe,
) -> (bool, Decided) {
    if src.identity == dst.identity {
        return (true, Decided::Itself);
    }
    if let Some(v) = s.rule(&PolicyKey::new(src.identity, dst.identity, proto, port)) {
        return (v == VERDICT_ALLOW, Decided::PortRule);
    }
    if let Some(v) = s.rule(&PolicyKey::new(src.identity, dst.identity, 0, 0)) {
        return (v == VERDICT_ALLOW, Decided::PairRule);
    }
    if let Some(v) = s.rule(&PolicyKey::new(IDENTITY_ANY, dst.identity, 0, 0)) {
        return (v == VERDICT_ALLOW, Decided::Isolated);
    }
    let same = src.network == dst.network && !dst.network_isolated;
    let ok = same || s.connected(&NetPair::new(src.network, dst.network));
    (ok, Decided::Network)
}

crate::user_pod!(PolicyKey, NetPair);

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::{addr::port_be, conntrack::IPPROTO_TCP};

    #[derive(Default)]
    struct Rules {
        rules: HashMap<PolicyKey, u32>,
        links: HashSet<NetPair>,
    }
    impl RuleSource for Rules {
        fn rule(&self, key: &PolicyKey) -> Option<u32> {
            self.rules.get(key).copied()
        }
        fn connected(&self, pair: &NetPair) -> bool {
            self.links.contains(pair)
        }
    }

    const NET1: u32 = 1;
    const NET2: u32 = 2;
    fn peer(id: u32, net: u32) -> Peer {
        Peer {
            identity: id,
            network: net,
            network_isolated: false,
        }
    }

    #[test]
    fn resolution_order() {
        let (app1, app2, db) = (peer(300, NET1), peer(301, NET1), peer(302, NET1));
        let mut r = Rules::default();
        let p3306 = port_be(3306);
        assert_eq!(
            decide(&r, app1, db, IPPROTO_TCP, p3306),
            (true, Decided::Network)
        );
        // `isolate db`, `allow app1 db --port 3306/tcp`.
        r.rules.insert(
            PolicyKey::new(IDENTITY_ANY, db.identity, 0, 0),
            VERDICT_DENY,
        );
        r.rules.insert(
            PolicyKey::new(app1.identity, db.identity, IPPROTO_TCP, p3306),
            VERDICT_ALLOW,
        );
        assert_eq!(
            decide(&r, app1, db, IPPROTO_TCP, p3306),
            (true, Decided::PortRule)
        );
        assert_eq!(
            decide(&r, app1, db, IPPROTO_TCP, port_be(22)),
            (false, Decided::Isolated)
        );
        assert_eq!(
            decide(&r, app2, db, IPPROTO_TCP, p3306),
            (false, Decided::Isolated)
        );
        // db may still open connections out.
        assert_eq!(
            decide(&r, db, app1, IPPROTO_TCP, p3306),
            (true, Decided::Network)
        );
        // `isolate app1 app2` is a pair rule both ways.
        r.rules.insert(
            PolicyKey::new(app1.identity, app2.identity, 0, 0),
            VERDICT_DENY,
        );
        r.rules.insert(
            PolicyKey::new(app2.identity, app1.identity, 0, 0),
            VERDICT_DENY,
        );
        assert_eq!(
            decide(&r, app2, app1, IPPROTO_TCP, p3306),
            (false, Decided::PairRule)
        );
    }

    #[test]
    fn networks() {
        let (fe, be) = (peer(300, NET1), peer(400, NET2));
        let mut r = Rules::default();
        assert!(!decide(&r, fe, be, IPPROTO_TCP, port_be(80)).0);
        r.links.insert(NetPair::new(NET2, NET1));
        assert!(decide(&r, fe, be, IPPROTO_TCP, port_be(80)).0);
        assert!(decide(&r, be, fe, IPPROTO_TCP, port_be(80)).0);
    }

    #[test]
    fn isolated_network_members_need_a_rule() {
        let member = |id| Peer {
            network_isolated: true,
            ..peer(id, NET1)
        };
        let (a, b, other) = (member(300), member(301), peer(400, NET2));
        let mut r = Rules::default();
        assert_eq!(
            decide(&r, a, b, IPPROTO_TCP, port_be(80)),
            (false, Decided::Network)
        );
        assert_eq!(
            decide(&r, a, a, IPPROTO_TCP, port_be(80)).1,
            Decided::Itself
        );
        r.rules
            .insert(PolicyKey::new(a.identity, b.identity, 0, 0), VERDICT_ALLOW);
        assert!(decide(&r, a, b, IPPROTO_TCP, port_be(80)).0);
        assert!(!decide(&r, b, a, IPPROTO_TCP, port_be(80)).0);
        // A connected network still reaches it: isolation is among its own members.
        r.links.insert(NetPair::new(NET1, NET2));
        assert!(decide(&r, other, b, IPPROTO_TCP, port_be(80)).0);
    }
    use proptest::prelude::*;

    /// A rule as the CLI states it: who (any when None), to whom, on which port (any when
    /// None), and the verdict.
    type Rule = (Option<u32>, u32, Option<(u8, u16)>, bool);

    /// Reference: the documented resolution order by matching rules rather than looking keys
    /// up — the most specific matching rule wins (a port rule over a pair rule over an
    /// isolation; the last statement of equal specificity wins, as a map insert does);
    /// without one, the network default.
    fn reference(
        rules: &[Rule],
        links: &[(u32, u32)],
        src: Peer,
        dst: Peer,
        proto: u8,
        port: u16,
    ) -> (bool, Decided) {
        // A container always reaches itself, whatever the rules.
        if src.identity == dst.identity {
            return (true, Decided::Itself);
        }
        let mut best: Option<(u8, bool)> = None;
        for &(who, to, on, allow) in rules {
            let matches = who.is_none_or(|w| w == src.identity)
                && to == dst.identity
                && on.is_none_or(|(p, n)| p == proto && n == port);
            let rank = match (who.is_some(), on.is_some()) {
                (true, true) => 3,
                (true, false) => 2,
                (false, false) => 1,
                (false, true) => continue, // not a rule the control plane writes
            };
            if matches && best.is_none_or(|(r, _)| rank >= r) {
                best = Some((rank, allow));
            }
        }
        match best {
            Some((3, v)) => (v, Decided::PortRule),
            Some((2, v)) => (v, Decided::PairRule),
            Some((_, v)) => (v, Decided::Isolated),
            None => {
                let (a, b) = (src.network, dst.network);
                let linked = links.iter().any(|&l| l == (a, b) || l == (b, a));
                (
                    (a == b && !dst.network_isolated) || linked,
                    Decided::Network,
                )
            }
        }
    }

    fn rule() -> impl Strategy<Value = Rule> {
        let id = 300u32..304;
        let port = prop_oneof![
            Just((IPPROTO_TCP, 22)),
            Just((IPPROTO_TCP, 3306)),
            Just((17u8, 53))
        ];
        prop_oneof![
            (id.clone(), any::<bool>()).prop_map(|(b, v)| (None, b, None, v)),
            (id.clone(), id.clone(), any::<bool>()).prop_map(|(a, b, v)| (Some(a), b, None, v)),
            (id.clone(), id, port, any::<bool>()).prop_map(|(a, b, p, v)| (Some(a), b, Some(p), v)),
        ]
    }

    proptest! {
        /// `decide` over the maps the control plane would write agrees with the reference for
        /// any rule set, network layout and flow.
        #[test]
        fn decide_matches_the_reference(
            rules in proptest::collection::vec(rule(), 0..12),
            links in proptest::collection::vec((1u32..4, 1u32..4), 0..3),
            s in (300u32..304, 1u32..4),
            d in (300u32..304, 1u32..4),
            proto in prop_oneof![Just(1u8), Just(IPPROTO_TCP), Just(17u8)],
            port in prop_oneof![Just(0u16), Just(22), Just(53), Just(3306), Just(8080)],
        ) {
            let mut r = Rules::default();
            for &(who, to, on, allow) in &rules {
                let (p, n) = on.unwrap_or((0, 0));
                let key = PolicyKey::new(who.unwrap_or(IDENTITY_ANY), to, p, port_be(n));
                r.rules.insert(key, if allow { VERDICT_ALLOW } else { VERDICT_DENY });
            }
            for &(a, b) in &links {
                r.links.insert(NetPair::new(a, b));
            }
            // Network 3 is `--isolated`.
            let member = |(id, net): (u32, u32)| Peer { network_isolated: net == 3, ..peer(id, net) };
            let (src, dst) = (member(s), member(d));
            prop_assert_eq!(
                decide(&r, src, dst, proto, port_be(port)),
                reference(&rules, &links, src, dst, proto, port)
            );
        }

        /// Network pairs are stored one way round: either order gives the same key.
        #[test]
        fn net_pairs_are_normalised(x in any::<u32>(), y in any::<u32>()) {
            let p = NetPair::new(x, y);
            prop_assert_eq!(p, NetPair::new(y, x));
            prop_assert!(p.a <= p.b);
            prop_assert_eq!((p.a, p.b), (x.min(y), x.max(y)));
        }
    }
}
