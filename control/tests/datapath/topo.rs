//! The one topology every case runs against: what the maps say (containers, networks, host
//! addresses, published ports) and what the private namespace holds (veths, an uplink with a
//! default route and a resolved next hop).

use std::net::{Ipv4Addr, Ipv6Addr};

/// A container as the control plane would register it.
#[derive(Debug)]
pub struct Container {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    /// Its eth0 (the source MAC of everything it sends).
    pub mac: [u8; 6],
    /// The host-side veth (answers ARP, source MAC of what is delivered to it).
    pub host_mac: [u8; 6],
    pub identity: u32,
    pub network: u32,
    pub gateway: Ipv4Addr,
    pub internal: bool,
}

pub const N1: u32 = 1;
pub const N2: u32 = 2;
/// `--internal`: no egress to the world.
pub const N3: u32 = 3;
pub const GW1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const GW2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const GW3: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// (network, subnet, prefix length, gateway).
pub const NETWORKS: [(u32, Ipv4Addr, u32, Ipv4Addr); 3] = [
    (N1, Ipv4Addr::new(10, 0, 0, 0), 24, GW1),
    (N2, Ipv4Addr::new(10, 1, 0, 0), 24, GW2),
    (N3, Ipv4Addr::new(10, 2, 0, 0), 24, GW3),
];

pub const A: Container = Container {
    name: "a",
    ip: Ipv4Addr::new(10, 0, 0, 2),
    mac: [0x02, 0xc0, 0, 0, 0, 0x0a],
    host_mac: [0x02, 0x40, 0, 0, 0, 0x0a],
    identity: 256,
    network: N1,
    gateway: GW1,
    internal: false,
};
pub const B: Container = Container {
    name: "b",
    ip: Ipv4Addr::new(10, 0, 0, 3),
    mac: [0x02, 0xc0, 0, 0, 0, 0x0b],
    host_mac: [0x02, 0x40, 0, 0, 0, 0x0b],
    identity: 257,
    network: N1,
    gateway: GW1,
    internal: false,
};
pub const C: Container = Container {
    name: "c",
    ip: Ipv4Addr::new(10, 1, 0, 2),
    mac: [0x02, 0xc0, 0, 0, 0, 0x0c],
    host_mac: [0x02, 0x40, 0, 0, 0, 0x0c],
    identity: 258,
    network: N2,
    gateway: GW2,
    internal: false,
};
pub const D: Container = Container {
    name: "d",
    ip: Ipv4Addr::new(10, 2, 0, 2),
    mac: [0x02, 0xc0, 0, 0, 0, 0x0d],
    host_mac: [0x02, 0x40, 0, 0, 0, 0x0d],
    identity: 259,
    network: N3,
    gateway: GW3,
    internal: true,
};
pub const CONTAINERS: [&Container; 4] = [&A, &B, &C, &D];

/// Inside a network but held by no container.
pub const NOBODY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);

/// The host's own ephemeral ports in this topology: above every port the tests' containers
/// use as their own, so those are kept (Linux's default range would cover 40000).
pub const HOST_EPHEMERAL: (u16, u16) = (45000, 60999);
/// A container port inside [`HOST_EPHEMERAL`]: masquerading must move it.
pub const HOST_OWNED_PORT: u16 = 50001;

pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The uplink's global IPv6 address (NAT66 source), its default route's next hop (with a
/// permanent neighbour entry, [`NEXTHOP_MAC`]) and two world hosts behind it.
pub const UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
pub const NEXTHOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
pub const WORLD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0x10);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0xfe);
pub const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];
/// The default route's next hop, with a permanent neighbour entry.
pub const NEXTHOP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const NEXTHOP_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x02];
/// A next hop nobody has resolved (routes through it answer BPF_FIB_LKUP_RET_NO_NEIGH).
pub const NEXTHOP_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// A world host behind the default route.
pub const WORLD: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// A second world host (another client).
pub const WORLD2: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
/// A world host routed through the unresolved next hop.
pub const WORLD_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 10);
/// A router on the path (sends ICMP errors about flows it did not terminate).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);

/// Published ports: (host address or 0.0.0.0 for any, proto, host port, container, port).
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
pub const PUBLISHED: [(Ipv4Addr, u8, u16, &Container, u16); 4] = [
    (ANY, TCP, 8080, &B, 80),
    (ANY, UDP, 5353, &B, 53),
    (UPLINK_IP, TCP, 2222, &A, 22),
    // Published by A and reached by A itself (self-hairpin).
    (ANY, TCP, 8081, &A, 81),
];
