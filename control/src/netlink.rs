//! rtnetlink operations the control plane needs: links, addresses, routes, neighbours.
//! Never shells out to `ip`: every change is one netlink request we can check.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags},
    link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Context, Error, Result};

/// Opens a netlink connection in the calling thread's namespace, driven by the current runtime.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().ctx(|| "opening a netlink socket".into())?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The errno a netlink request failed with, if it was the kernel that refused it.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// `veth`, `dummy`, … ; None for hardware NICs and loopback.
    pub kind: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
    /// The largest GSO packets the link takes (BIG TCP past 64 KiB); None where the kernel
    /// does not say (IPv4's before Linux 6.3).
    pub gso: Gso<Option<u32>>,
    /// The kernel's counters for the link (from its own point of view: rx is what arrived on
    /// it).
    pub counters: Option<LinkCounters>,
    /// A veth's peer (its ifindex in the peer's namespace).
    pub peer: Option<u32>,
}

/// GSO packet sizes: IPv4's (`gso_ipv4_max_size`) and the rest's, IPv6 among them
/// (`gso_max_size`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Gso<T> {
    pub v4: T,
    pub v6: T,
}

/// Linux's GSO size before BIG TCP, and the default of every link.
pub const GSO_LEGACY: u32 = 65_536;

/// How a container's veth is made: its MTU and the GSO (and GRO) sizes of both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub mtu: u32,
    pub gso: Gso<u32>,
}

impl Shape {
    /// The attributes that give a link the shape's GSO and GRO sizes.
    fn gso_attributes(&self) -> [LinkAttribute; 4] {
        [
            LinkAttribute::GsoMaxSize(self.gso.v6),
            LinkAttribute::GroMaxSize(self.gso.v6),
            LinkAttribute::GsoIpv4MaxSize(self.gso.v4),
            LinkAttribute::GroIpv4MaxSize(self.gso.v4),
        ]
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
        gso: Gso::default(),
        counters: None,
        peer: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(m) => l.mtu = Some(*m),
            LinkAttribute::GsoMaxSize(n) => l.gso.v6 = Some(*n),
            LinkAttribute::GsoIpv4MaxSize(n) => l.gso.v4 = Some(*n),
            LinkAttribute::Link(p) => l.peer = Some(*p),
            LinkAttribute::Stats64(c) => {
                l.counters = Some(LinkCounters {
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                })
            }
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                l.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<Link>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(parse_link)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::Other(anyhow::anyhow!("looking up link {name}: {e}"))),
    }
}

pub async fn link_by_index(h: &Handle, index: u32) -> Result<Option<Link>> {
    let mut s = h.link().get().match_index(index).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(parse_link)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::Other(anyhow::anyhow!(
            "looking up link #{index}: {e}"
        ))),
    }
}

pub async fn links(h: &Handle) -> Result<Vec<Link>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .ctx(|| "listing links".into())?;
    Ok(msgs.iter().map(parse_link).collect())
}

/// Creates a veth pair: `host_name` here, its peer `peer_name` directly inside the namespace
/// open as `peer_netns_fd`, each with the given MAC, both of the given shape.
pub async fn create_veth(
    h: &Handle,
    host_name: &str,
    host_mac: [u8; 6],
    peer_name: &str,
    peer_mac: [u8; 6],
    peer_netns_fd: RawFd,
    shape: Shape,
) -> Result<()> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_name.to_string())
        .address(peer_mac.to_vec())
        .mtu(shape.mtu)
        .setns_by_fd(peer_netns_fd)
        .build();
    peer.attributes.extend(shape.gso_attributes());
    let mut msg = LinkVeth::new(host_name, peer_name)
        .address(host_mac.to_vec())
        .mtu(shape.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    msg.attributes.extend(shape.gso_attributes());
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::conflict(format!(
                "interface {host_name} already exists in the host namespace"
            )),
            _ => Error::Other(anyhow::anyhow!("creating veth {host_name}: {e}")),
        })
}

/// Gives a link the shape's MTU and GSO sizes (flows already open keep the GSO size their
/// socket saw; new ones take the new).
pub async fn set_shape(h: &Handle, index: u32, shape: Shape) -> Result<()> {
    let mut m = LinkUnspec::new_with_index(index).mtu(shape.mtu).build();
    m.attributes.extend(shape.gso_attributes());
    h.link()
        .set(m)
        .execute()
        .await
        .ctx(|| format!("setting the MTU and GSO sizes of link #{index}"))
}

pub async fn set_up(h: &Handle, index: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .ctx(|| format!("bringing link #{index} up"))
}

pub async fn set_mtu(h: &Handle, index: u32, mtu: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .ctx(|| format!("setting the MTU of link #{index} to {mtu}"))
}

/// Deletes a link; absent is fine.
pub async fn delete_link(h: &Handle, index: u32) -> Result<()> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(Error::Other(anyhow::anyhow!("deleting link #{index}: {e}"))),
    }
}

/// Adds an address; present already is fine.
pub async fn add_addr(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    match h
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error::Other(anyhow::anyhow!(
            "adding address {ip}/{prefix}: {e}"
        ))),
    }
}

/// Removes an address; absent is fine.
pub async fn del_addr(h: &Handle, index: u32, ip: Ipv4Addr) -> Result<()> {
    del_ip(h, index, IpAddr::V4(ip)).await
}

/// Removes an IPv6 address; absent is fine.
pub async fn del_addr6(h: &Handle, index: u32, ip: Ipv6Addr) -> Result<()> {
    del_ip(h, index, IpAddr::V6(ip)).await
}

async fn del_ip(h: &Handle, index: u32, ip: IpAddr) -> Result<()> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .ctx(|| "listing addresses".into())?;
    for m in msgs {
        let has = m
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Address(x) if *x == ip));
        if has {
            match h.address().del(m).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(Error::Other(anyhow::anyhow!("removing address {ip}: {e}"))),
            }
        }
    }
    Ok(())
}

/// IPv4 addresses (with prefix length) of one link, or of all links when `index` is None.
pub async fn ipv4_addrs(h: &Handle, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
    let mut req = h.address().get();
    if let Some(i) = index {
        req = req.set_link_index_filter(i);
    }
    let msgs: Vec<_> = req
        .execute()
        .try_collect()
        .await
        .ctx(|| "listing addresses".into())?;
    let mut out = Vec::new();
    for m in msgs {
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                out.push((m.header.index, *ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Adds a link-scope host route `ip/32 dev index src src` (replacing any previous one).
pub async fn add_host_route(h: &Handle, ip: Ipv4Addr, index: u32, src: Ipv4Addr) -> Result<()> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .output_interface(index)
        .pref_source(src)
        .scope(RouteScope::Link)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .ctx(|| format!("adding route to {ip}"))
}

/// Adds `default via gw` in the calling thread's namespace.
pub async fn add_default_route(h: &Handle, gw: Ipv4Addr) -> Result<()> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .ctx(|| format!("adding default route via {gw}"))
}

/// The output interface of the IPv4 default route, if there is one.
pub async fn default_route_ifindex(h: &Handle) -> Result<Option<u32>> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .ctx(|| "listing routes".into())?;
    for m in msgs {
        if m.header.destination_prefix_length != 0 || m.header.table != 254 {
            continue;
        }
        let has_dst = m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(_))));
        if has_dst {
            continue;
        }
        for a in &m.attributes {
            if let RouteAttribute::Oif(i) = a {
                return Ok(Some(*i));
            }
        }
    }
    Ok(None)
}

/// Adds a permanent neighbour entry so the host never ARPs for a container.
pub async fn add_neigh(h: &Handle, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
    h.neighbours()
        .add(index, ip)
        .link_layer_address(&mac)
        .replace()
        .execute()
        .await
        .ctx(|| format!("adding neighbour {ip}"))
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Software devices (no driver-level XDP worth attaching by default).
pub fn is_virtual_kind(kind: &str) -> bool {
    matches!(
        kind,
        "veth"
            | "dummy"
            | "bridge"
            | "bond"
            | "vlan"
            | "macvlan"
            | "ipvlan"
            | "vxlan"
            | "tun"
            | "netkit"
    )
}

/// Adds an IPv6 address usable at once: `IFA_F_NODAD`, so it is never tentative (a container
/// could otherwise not bind it for a second or so). Present already is fine.
pub async fn add_addr6(h: &Handle, index: u32, ip: Ipv6Addr, prefix: u8) -> Result<()> {
    let mut req = h.address().add(index, IpAddr::V6(ip), prefix);
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error::Other(anyhow::anyhow!(
            "adding address {ip}/{prefix}: {e}"
        ))),
    }
}

/// The global IPv6 addresses of one link, or of all links when `index` is None: what the
/// host can be reached at from beyond its links (link-local and loopback left out).
pub async fn ipv6_global_addrs(h: &Handle, index: Option<u32>) -> Result<Vec<Ipv6Addr>> {
    let mut req = h.address().get();
    if let Some(i) = index {
        req = req.set_link_index_filter(i);
    }
    let msgs: Vec<_> = req
        .execute()
        .try_collect()
        .await
        .ctx(|| "listing addresses".into())?;
    let mut out = Vec::new();
    for m in msgs {
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V6(ip)) = a
                && !ip.is_loopback()
                && !ip.is_unicast_link_local()
                && !ip.is_multicast()
            {
                out.push(*ip);
            }
        }
    }
    Ok(out)
}

/// Adds a host route `ip/128 dev index [src src]` (replacing any previous one).
pub async fn add_host_route6(
    h: &Handle,
    ip: Ipv6Addr,
    index: u32,
    src: Option<Ipv6Addr>,
) -> Result<()> {
    let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(ip, 128)
        .output_interface(index);
    if let Some(s) = src {
        b = b.pref_source(s);
    }
    h.route()
        .add(b.build())
        .replace()
        .execute()
        .await
        .ctx(|| format!("adding route to {ip}"))
}

/// Adds `default via gw` (IPv6) in the calling thread's namespace.
pub async fn add_default_route6(h: &Handle, gw: Ipv6Addr) -> Result<()> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .ctx(|| format!("adding default route via {gw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:42:0a:00:00:05"), Some([2, 0x42, 10, 0, 0, 5]));
        assert_eq!(mac_string(&[2, 0x42, 10, 0, 0, 5]), "02:42:0a:00:00:05");
        for bad in [
            "zz:02:42:0a:00:00:05",
            "02:42:0a:00:00",
            "02:42:0a:00:00:05:06",
            "2:42:0a:00:00:05",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
