//! What each derived map should hold, computed from the desired state (the state file and the
//! books). One derivation per map: the commands that change a few entries and the full rebuild
//! (`ops::reconcile::sync_maps`, through [`crate::drift`]) both write what these return, so the
//! two can never disagree.

use std::collections::HashMap;

use weir_common::{
    addr::{Ipv6Be, from_std, from_std6, port_be},
    config::{Config, Config6},
    endpoint::{Endpoint, Endpoint6, HostAddr},
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishKey6, PublishTarget, PublishTarget6},
};

use crate::{
    error::Result,
    ops::{container, policy},
    published::Publish,
    rules::Rule,
    state::{Network, Phase, Settings, State, Uplink},
};

/// The `WEIR_ENDPOINTS` entry of container `name`, if it has an IPv4 address.
pub fn endpoint(st: &State, name: &str) -> Result<Option<(u32, Endpoint)>> {
    let Some(ip) = st.container(name)?.ip else {
        return Ok(None);
    };
    Ok(Some((from_std(ip), container::endpoint(st, name)?)))
}

/// Every container's endpoint (none for a container awaiting its name: it is kept dark).
pub fn endpoints(st: &State) -> HashMap<u32, Endpoint> {
    st.containers
        .iter()
        .filter(|(_, c)| c.phase != Phase::AwaitingName)
        .filter_map(|(n, _)| endpoint(st, n).ok().flatten())
        .collect()
}

/// The `WEIR_ENDPOINTS6` entry of container `name`, if it has an IPv6 address: the same value
/// as its IPv4 entry.
pub fn endpoint6(st: &State, name: &str) -> Result<Option<(Ipv6Be, Endpoint6)>> {
    let c = st.container(name)?;
    let (Some(ip6), Some(gw6)) = (c.ip6, st.network(&c.network)?.gateway6) else {
        return Ok(None);
    };
    let e = Endpoint6 {
        ep: container::endpoint(st, name)?,
        gateway6: from_std6(gw6),
    };
    Ok(Some((from_std6(ip6), e)))
}

/// Every dual-stack container's IPv6 endpoint (none while awaiting its name).
pub fn endpoints6(st: &State) -> HashMap<Ipv6Be, Endpoint6> {
    st.containers
        .iter()
        .filter(|(_, c)| c.phase != Phase::AwaitingName)
        .filter_map(|(n, _)| endpoint6(st, n).ok().flatten())
        .collect()
}

/// `WEIR_LINKS6`: each dual-stack container's host-side veth → its IPv6 address.
pub fn links6(st: &State) -> HashMap<u32, Ipv6Be> {
    st.containers
        .values()
        .filter(|c| c.host_ifindex != 0)
        .filter_map(|c| Some((c.host_ifindex, from_std6(c.ip6?))))
        .collect()
}

/// The `WEIR_HOST_ADDRS6` entry of a network's IPv6 gateway.
pub fn gateway_addr6(net: &Network) -> Option<(Ipv6Be, HostAddr)> {
    Some((from_std6(net.gateway6?), HostAddr::default()))
}

/// The host's own IPv6 addresses: every IPv6 gateway and the global addresses recorded at
/// init (never link-local ones: see `WEIR_HOST_ADDRS6`).
pub fn host_addrs6(st: &State) -> HashMap<Ipv6Be, HostAddr> {
    st.networks
        .values()
        .filter_map(gateway_addr6)
        .chain(
            st.uplink
                .host_addrs6
                .iter()
                .map(|ip| (from_std6(*ip), HostAddr::default())),
        )
        .collect()
}

/// The `WEIR_SUBNETS6` entries: (prefix length, network address) → network id.
pub fn subnets6(st: &State) -> HashMap<(u32, Ipv6Be), u32> {
    st.networks
        .values()
        .filter_map(|n| {
            let s6 = n.subnet6?;
            Some(((s6.prefix_len() as u32, from_std6(s6.network())), n.id))
        })
        .collect()
}

/// The `WEIR_CONFIG6` entry.
pub fn config6(uplink: &Uplink) -> Config6 {
    Config6 {
        uplink_ip6: uplink.ip6.map(from_std6).unwrap_or_default(),
        flags: 0,
        _pad: 0,
    }
}

/// The `WEIR_PUBLISH` key of a published port (None: it is on an IPv6 address alone).
pub fn publish_key(p: &Publish) -> Option<PublishKey> {
    let addr = match p.host_ip {
        None => 0,
        Some(std::net::IpAddr::V4(ip)) => from_std(ip),
        Some(std::net::IpAddr::V6(_)) => return None,
    };
    Some(PublishKey::new(
        addr,
        port_be(p.host_port),
        p.proto.number(),
    ))
}

/// The `WEIR_PUBLISH` entry of a published port (None: on an IPv6 address alone, or of a
/// container without IPv4).
pub fn publish_entry(st: &State, p: &Publish) -> Result<Option<(PublishKey, PublishTarget)>> {
    let c = st.container(&p.container)?;
    let (Some(key), Some(ip)) = (publish_key(p), c.ip) else {
        return Ok(None);
    };
    let target = PublishTarget {
        addr: from_std(ip),
        port: port_be(p.container_port),
        _pad: 0,
        identity: c.identity,
    };
    Ok(Some((key, target)))
}

/// Every published port's entry (those of containers that no longer exist are skipped).
pub fn published(st: &State, pubs: &[Publish]) -> HashMap<PublishKey, PublishTarget> {
    pubs.iter()
        .filter_map(|p| publish_entry(st, p).ok().flatten())
        .collect()
}

/// The `WEIR_PUBLISH6` entry of a published port of a container with IPv6: on every IPv6
/// address of the host for a port published without `--host-ip` (as Docker publishes
/// `-p 8080:80` on both families), or on its IPv6 `--host-ip`.
pub fn publish6_entry(st: &State, p: &Publish) -> Result<Option<(PublishKey6, PublishTarget6)>> {
    let c = st.container(&p.container)?;
    let Some(ip6) = c.ip6 else {
        return Ok(None);
    };
    let addr = match p.host_ip {
        None => [0; 4],
        Some(std::net::IpAddr::V6(h)) => from_std6(h),
        Some(std::net::IpAddr::V4(_)) => return Ok(None),
    };
    let key = PublishKey6::new(addr, port_be(p.host_port), p.proto.number());
    let target = PublishTarget6 {
        addr: from_std6(ip6),
        port: port_be(p.container_port),
        _pad: 0,
        identity: c.identity,
    };
    Ok(Some((key, target)))
}

/// Every published port's IPv6 entry.
pub fn published6(st: &State, pubs: &[Publish]) -> HashMap<PublishKey6, PublishTarget6> {
    pubs.iter()
        .filter_map(|p| publish6_entry(st, p).ok().flatten())
        .collect()
}

/// The `WEIR_POLICY` entries of `rules`.
pub fn policy(st: &State, rules: &[Rule]) -> HashMap<PolicyKey, u32> {
    policy::compile(st, rules)
}

/// The `WEIR_NET_LINKS` key of networks `a` and `b` (None while one does not exist).
pub fn net_pair(st: &State, a: &str, b: &str) -> Option<NetPair> {
    Some(NetPair::new(st.networks.get(a)?.id, st.networks.get(b)?.id))
}

/// Every connected pair of networks.
pub fn net_links(st: &State) -> HashMap<NetPair, u32> {
    st.net_links
        .iter()
        .filter_map(|(a, b)| Some((net_pair(st, a, b)?, 1)))
        .collect()
}

/// The `WEIR_HOST_ADDRS` entry of a network's IPv4 gateway, if it has IPv4.
pub fn gateway_addr(net: &Network) -> Option<(u32, HostAddr)> {
    Some((from_std(net.gateway?), HostAddr::default()))
}

/// The host's own addresses: every gateway, the uplink's address and the host addresses
/// recorded at init.
pub fn host_addrs(st: &State) -> HashMap<u32, HostAddr> {
    let uplink = std::iter::once(&st.uplink.ip).chain(&st.uplink.host_addrs);
    st.networks
        .values()
        .filter_map(gateway_addr)
        .chain(uplink.map(|ip| (from_std(*ip), HostAddr::default())))
        .collect()
}

/// The `WEIR_SUBNETS` entries: (prefix length, network address) → network id.
pub fn subnets(st: &State) -> HashMap<(u32, u32), u32> {
    st.networks
        .values()
        .filter_map(|n| {
            let s = n.subnet?;
            Some(((s.prefix_len() as u32, from_std(s.network())), n.id))
        })
        .collect()
}

/// The `WEIR_CONFIG` entry. `flags` are run-time switches (`control monitor` sets one), not
/// state: the caller passes what the map holds.
pub fn config(uplink: &Uplink, settings: &Settings, netns_cookie: u64, flags: u32) -> Config {
    Config {
        schema: weir_common::SCHEMA_VERSION,
        flags,
        uplink_ifindex: uplink.ifindex,
        uplink_ip: from_std(uplink.ip),
        netns_cookie,
        snat_port_min: settings.snat_ports.0,
        snat_port_max: settings.snat_ports.1,
        host_port_min: settings.host_ports.0,
        host_port_max: settings.host_ports.1,
        timeouts: settings.timeouts,
    }
}
