//! Containers for every front end (`control container`, weir-cni, and those to come): one
//! typed [`attach`] and [`detach`]. A container is a veth whose peer lives in its namespace,
//! addresses and routes on both sides, the endpoint in the map and `from_container` on the
//! host side. No bridge.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::Serialize;
use weir_common::{
    conntrack::{CtEntry, CtEntry6, CtEntryOf, FlowKey, FlowKey6, FlowKeyOf},
    endpoint::{Endpoint, flags as ep_flags},
};

use super::{
    Ctx, policy,
    publish::{self, HostPort},
    tx,
};
use crate::{
    datapath::{links, maps},
    error::{Context, Error, Result},
    instance::Instance,
    netlink, netns,
    published::{Port, Publish, PublishBook},
    rules::RuleBook,
    state::{Container, Phase, State},
    sysctl,
};

/// Which front end asked for a container, and what it names the container by.
#[derive(Clone, Debug)]
pub enum Origin {
    /// `control container create`.
    Cli,
    /// A CNI runtime: the attachment is (network, container id, interface name).
    Cni {
        container_id: String,
        ifname: String,
    },
    /// Docker's remote network driver (weir-docker): the attachment is Docker's endpoint.
    Docker { endpoint_id: String },
}

/// Who owns the container's network namespace.
#[derive(Clone, Debug)]
pub enum NetnsOwner {
    /// Weir creates it (named like the container, under /run/netns) and deletes it.
    Weir,
    /// The runtime made it and deletes it: Weir only uses it.
    Runtime(PathBuf),
    /// The one Weir made for the CLI container of this name (a further network of it).
    Of(String),
}

/// Who puts the container end of the veth into the namespace and configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Weir: it is created inside, then given its address, route and MAC there.
    MoveIntoNetns,
    /// The runtime (as Docker does with a network driver's veth): it is created in the host
    /// namespace under `ifname` (which must then be free there), and the runtime moves and
    /// configures it from the address, gateway and MAC Weir reports.
    LeaveInHost,
}

/// When a new container's endpoint entry goes in, letting its traffic through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Once wired: every rule that can name it is in force by then.
    Now,
    /// Once its front end names it ([`name`]): rules may name it by a name the front end
    /// learns only after the runtime started it (Docker's container names). Until then it
    /// neither sends nor receives.
    WhenNamed,
}

/// Everything [`attach`] needs, parsed and validated by the front end.
#[derive(Clone, Debug)]
pub struct AttachSpec {
    pub name: String,
    pub network: String,
    pub origin: Origin,
    pub netns: NetnsOwner,
    pub peer: Peer,
    /// The container end's interface name.
    pub ifname: String,
    /// A fixed address (checked against the network), else the lowest free one.
    pub ip: Option<Ipv4Addr>,
    /// A fixed IPv6 address on a dual-stack network, else the lowest free one; refused on an
    /// IPv4-only network.
    pub ip6: Option<Ipv6Addr>,
    /// A fixed MAC, else one derived from the address.
    pub mac: Option<[u8; 6]>,
    pub ports: Vec<Port>,
    /// Who holds the published host ports.
    pub host_ports: HostPort,
    /// Another name rules and commands may select it by ([`Container::alias`]).
    pub alias: Option<String>,
    pub admit: Admit,
}

#[derive(Debug, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    /// The name it answers to besides its own (Docker's container name, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub network: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mac: String,
    pub host_if: String,
    pub netns: String,
    pub identity: u32,
    pub phase: Phase,
    pub published: Vec<String>,
}

impl ContainerInfo {
    /// Its IPv4 address, or its IPv6 one on an IPv6-only network.
    pub fn address(&self) -> String {
        match (self.ip, self.ip6) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(ip6)) => ip6.to_string(),
            (None, None) => "-".into(),
        }
    }
}

/// What `container ls` shows of `name`; `pubs`: the published ports (all, or its own).
pub fn info(st: &State, pubs: &[Publish], name: &str) -> ContainerInfo {
    let c = &st.containers[name];
    let gw = st.networks.get(&c.network).and_then(|n| n.gateway);
    ContainerInfo {
        name: name.to_string(),
        alias: c.alias.clone(),
        network: c.network.clone(),
        ip: c.ip,
        gateway: gw,
        ip6: c.ip6,
        gateway6: st.networks.get(&c.network).and_then(|n| n.gateway6),
        mac: c.mac.clone(),
        host_if: c.host_if.clone(),
        netns: netns_path(name, c).display().to_string(),
        identity: c.identity,
        phase: c.phase,
        published: pubs
            .iter()
            .filter(|p| p.container == name)
            .map(publish::describe)
            .collect(),
    }
}

pub fn list(st: &State, pubs: &[Publish]) -> Vec<ContainerInfo> {
    st.containers.keys().map(|n| info(st, pubs, n)).collect()
}

pub fn netns_path(name: &str, c: &Container) -> PathBuf {
    match (&c.external_netns, c.weir_netns(name)) {
        (Some(p), _) => PathBuf::from(p),
        (None, ns) => netns::path(ns.unwrap_or(name)),
    }
}

/// The endpoint map value for a container.
pub fn endpoint(st: &State, name: &str) -> Result<Endpoint> {
    let c = st.container(name)?;
    let net = st.network(&c.network)?;
    Ok(Endpoint {
        ifindex: c.host_ifindex,
        identity: c.identity,
        network: net.id,
        flags: if net.internal { ep_flags::INTERNAL } else { 0 }
            | if net.isolated { ep_flags::ISOLATED } else { 0 },
        // Self-hairpin's SNAT source; an IPv6-only network has no IPv4 to hairpin.
        gateway: weir_common::addr::from_std(net.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
        mac: netlink::parse_mac(&c.mac).unwrap_or_default(),
        host_mac: netlink::parse_mac(&c.host_mac).unwrap_or_default(),
    })
}

/// The IPv4 address of a new container on `network`: the requested one (checked) or the
/// lowest free one; None on an IPv6-only network.
pub fn choose_ip(st: &State, network: &str, want: Option<Ipv4Addr>) -> Result<Option<Ipv4Addr>> {
    let net = st.network(network)?;
    let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
        return match want {
            Some(ip) => Err(Error::invalid(format!(
                "network {network:?} is IPv6-only (cannot give {ip}): use --ip6, or a network with --subnet"
            ))),
            None => Ok(None),
        };
    };
    let user = |ip: Ipv4Addr| {
        st.containers
            .iter()
            .find(|(_, c)| c.network == network && c.ip == Some(ip))
            .map(|(n, _)| n.clone())
    };
    if let Some(ip) = want {
        if !subnet.contains(&ip) {
            return Err(Error::invalid(format!(
                "{ip} is outside network {network:?} ({subnet}): pick an address inside it"
            )));
        }
        if ip == subnet.network() || ip == subnet.broadcast() || ip == gw {
            return Err(Error::invalid(format!(
                "{ip} is the network, broadcast or gateway address of {subnet}: pick a host address"
            )));
        }
        if let Some(other) = user(ip) {
            return Err(Error::conflict(format!(
                "{ip} is already used by container {other:?}"
            )));
        }
        return Ok(Some(ip));
    }
    subnet
        .hosts()
        .find(|ip| *ip != gw && user(*ip).is_none())
        .map(Some)
        .ok_or_else(|| {
            Error::conflict(format!(
                "network {network:?} ({subnet}) has no free address left"
            ))
        })
}

/// The IPv6 address of a new container on `network`: the requested one (checked) or the
/// lowest free one; None on an IPv4-only network.
pub fn choose_ip6(st: &State, network: &str, want: Option<Ipv6Addr>) -> Result<Option<Ipv6Addr>> {
    let net = st.network(network)?;
    let (Some(subnet6), Some(gw6)) = (net.subnet6, net.gateway6) else {
        return match want {
            Some(ip) => Err(Error::invalid(format!(
                "network {network:?} has no IPv6 (cannot give {ip}): create it with --subnet6 or --ipv6"
            ))),
            None => Ok(None),
        };
    };
    let used = |ip: Ipv6Addr| {
        st.containers
            .iter()
            .find(|(_, c)| c.network == network && c.ip6 == Some(ip))
            .map(|(n, _)| n.clone())
    };
    if let Some(ip) = want {
        if !subnet6.contains(&ip) {
            return Err(Error::invalid(format!(
                "{ip} is outside network {network:?} ({subnet6}): pick an address inside it"
            )));
        }
        if ip == subnet6.network() || ip == gw6 {
            return Err(Error::invalid(format!(
                "{ip} is the network or gateway address of {subnet6}: pick another"
            )));
        }
        if let Some(other) = used(ip) {
            return Err(Error::conflict(format!(
                "{ip} is already used by container {other:?}"
            )));
        }
        return Ok(Some(ip));
    }
    let base = u128::from(subnet6.network());
    let size = 1u128 << (128 - subnet6.prefix_len()).min(127);
    (2..size.min(1 << 20))
        .map(|i| Ipv6Addr::from(base + i))
        .find(|ip| *ip != gw6 && used(*ip).is_none())
        .map(Some)
        .ok_or_else(|| {
            Error::conflict(format!(
                "network {network:?} ({subnet6}) has no free IPv6 address left"
            ))
        })
}

/// The MAC a container at `ip` gets unless one is given: locally administered, derived from
/// the address like Docker's 02:42:…
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The four address bytes a container's MACs are derived from: its IPv4 address, or on an
/// IPv6-only network the low 32 bits of its IPv6 one (unique on its network, which is all a
/// MAC must be: every veth is a segment of its own).
fn mac_seed(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> Ipv4Addr {
    match (ip, ip6) {
        (Some(ip), _) => ip,
        (None, Some(ip6)) => Ipv4Addr::from(u128::from(ip6) as u32),
        (None, None) => Ipv4Addr::UNSPECIFIED,
    }
}

/// A new container record (phase Creating) with its identity, addresses, MACs and host-side
/// name.
pub fn new_record(
    st: &mut State,
    network: &str,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
) -> Container {
    let identity = st.alloc_identity();
    let seed = mac_seed(ip, ip6);
    let o = seed.octets();
    Container {
        identity,
        network: network.to_string(),
        ip,
        mac: netlink::mac_string(&mac_for(seed)),
        host_mac: netlink::mac_string(&[0x02, 0xfe, o[0], o[1], o[2], o[3]]),
        host_if: format!("wr-{identity:x}"),
        host_ifindex: 0,
        ip6,
        phase: Phase::Creating,
        external_netns: None,
        cni_id: None,
        cni_ifname: None,
        alias: None,
        ifname: None,
    }
}

/// Creates the container `spec` asks for, or nothing: a failure rolls back what it made.
/// `st` is the state under the instance lock, which the caller holds (front ends differ in
/// how long they wait for it and in what they check under it first).
pub async fn attach(ctx: &Ctx, st: &mut State, spec: AttachSpec) -> Result<ContainerInfo> {
    let name = spec.name.as_str();
    if st.containers.contains_key(name) {
        return Err(Error::conflict(format!(
            "container {name:?} already exists: remove it first or pick another name"
        )));
    }
    let ip = choose_ip(st, &spec.network, spec.ip)?;
    let ip6 = choose_ip6(st, &spec.network, spec.ip6)?;
    let mut book = PublishBook::open(&ctx.inst)?;
    if spec.host_ports == HostPort::CheckFree {
        publish::precheck(st, &book, &spec.network, &spec.ports)?;
    }
    if matches!(spec.netns, NetnsOwner::Weir) && netns::exists(name) {
        return Err(Error::conflict(format!(
            "network namespace {name:?} already exists in {}: pick another container name",
            netns::RUN_DIR
        )));
    }
    let rec = record(st, &spec, ip, ip6);
    st.containers.insert(name.to_string(), rec);
    let what = match spec.origin {
        Origin::Cli => format!("container create {name}"),
        Origin::Cni { .. } => format!("cni add {name}"),
        Origin::Docker { .. } => format!("docker join {name}"),
    };
    tx::run_or_undo(
        ctx,
        &what,
        st,
        async |st: &mut State| {
            let ns = match &spec.netns {
                NetnsOwner::Weir => netns::create(name)?,
                NetnsOwner::Runtime(p) => p.clone(),
                NetnsOwner::Of(owner) => netns::path(owner),
            };
            plumb(ctx, st, name, &ns, &spec.ifname, spec.peer, spec.admit).await?;
            for p in &spec.ports {
                publish::add(ctx, st, &mut book, name, *p, spec.host_ports).await?;
            }
            st.containers.get_mut(name).expect("just inserted").phase = match spec.admit {
                Admit::Now => Phase::Ready,
                Admit::WhenNamed => Phase::AwaitingName,
            };
            Ok(())
        },
        async |st: &mut State| {
            teardown(ctx, st, name).await;
            forget(&ctx.inst, st, name)
        },
    )
    .await?;
    Ok(info(st, &book.of(name)?, name))
}

/// Wires again a CLI container whose links are gone (after a reboot): its namespace, made
/// again if it is gone too, gets a new veth, addresses, routes and endpoint, as at create.
pub async fn replumb(ctx: &Ctx, st: &mut State, name: &str) -> Result<()> {
    let c = st.container(name)?;
    let ns_name = c.weir_netns(name).unwrap_or(name).to_string();
    let ifname = c.ifname.clone().unwrap_or_else(|| "eth0".into());
    let ns = if netns::exists(&ns_name) {
        netns::path(&ns_name)
    } else {
        netns::create(&ns_name)?
    };
    plumb(ctx, st, name, &ns, &ifname, Peer::MoveIntoNetns, Admit::Now).await
}

/// Gives record `name` the alias its front end learned (or takes it away with `None`), puts
/// the rules naming that alias in force for it, and admits it if it was waiting for its name.
/// Idempotent.
pub async fn name(ctx: &Ctx, st: &mut State, name: &str, alias: Option<&str>) -> Result<()> {
    let c = st.container(name)?;
    let waiting = c.phase == Phase::AwaitingName;
    if c.alias.as_deref() == alias && !waiting {
        return Ok(());
    }
    if let Some(a) = alias {
        crate::validate::name("container", a)?;
    }
    let what = format!("name {name} {}", alias.unwrap_or("-"));
    tx::run(ctx, &what, st, async |st: &mut State| {
        // The old alias's rules stop holding for it, the new one's start to.
        policy::remove_for(ctx, st, name)?;
        let c = st.containers.get_mut(name).expect("checked");
        c.alias = alias.map(str::to_string);
        if waiting {
            c.phase = Phase::Ready;
        }
        policy::apply_for(ctx, st, name)?;
        admit_endpoint(ctx, st, name)
    })
    .await
}

/// The new record of what `spec` asks for, at `ip`.
fn record(
    st: &mut State,
    spec: &AttachSpec,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
) -> Container {
    let mut rec = new_record(st, &spec.network, ip, ip6);
    if let NetnsOwner::Runtime(p) = &spec.netns {
        rec.external_netns = Some(p.display().to_string());
    }
    if spec.ifname != "eth0" && spec.peer == Peer::MoveIntoNetns {
        rec.ifname = Some(spec.ifname.clone());
    }
    if let Origin::Cni {
        container_id,
        ifname,
    } = &spec.origin
    {
        rec.cni_id = Some(container_id.clone());
        rec.cni_ifname = Some(ifname.clone());
    }
    if let Some(m) = spec.mac {
        rec.mac = netlink::mac_string(&m);
    }
    rec.alias.clone_from(&spec.alias);
    rec
}

/// Wires a container whose namespace exists at `ns`: veth (host side `wr-…`, `ifname` inside),
/// addresses, routes, endpoint entry and the from_container attachment. With
/// [`Peer::LeaveInHost`] the container end stays in the host namespace, unconfigured.
async fn plumb(
    ctx: &Ctx,
    st: &mut State,
    name: &str,
    ns: &Path,
    ifname: &str,
    peer: Peer,
    admit: Admit,
) -> Result<()> {
    let c = st.container(name)?.clone();
    let net = st.network(&c.network)?.clone();
    let (mac, host_mac) = (
        netlink::parse_mac(&c.mac).unwrap_or_default(),
        netlink::parse_mac(&c.host_mac).unwrap_or_default(),
    );
    let peer_ns = match peer {
        Peer::MoveIntoNetns => ns,
        Peer::LeaveInHost => Path::new("/proc/thread-self/ns/net"),
    };
    let nsfile =
        File::open(peer_ns).ctx(|| format!("opening network namespace {}", peer_ns.display()))?;
    let shape = super::shape::of_network(ctx, st, &net).await?;
    netlink::create_veth(
        &ctx.nl,
        &c.host_if,
        host_mac,
        ifname,
        mac,
        nsfile.as_raw_fd(),
        shape,
    )
    .await?;
    let host = netlink::link_by_name(&ctx.nl, &c.host_if)
        .await?
        .ok_or_else(|| Error::Other(anyhow::anyhow!("{} vanished after creation", c.host_if)))?;
    st.containers.get_mut(name).expect("exists").host_ifindex = host.index;
    match c.ip6 {
        Some(_) => sysctl::enable_ipv6(&c.host_if)?,
        None => sysctl::disable_ipv6(&c.host_if)?,
    }
    // from_container goes on before the link comes up, and forwarding comes on last: a link
    // that forwards without its filter lets the kernel route the container's packets itself.
    // Until the endpoint entry exists, from_container drops everything the container sends.
    links::container_attach(&ctx.inst, c.identity, &c.host_if)?;
    netlink::set_up(&ctx.nl, host.index).await?;

    if peer == Peer::MoveIntoNetns {
        // The default route is the first network's; a further one's subnet is on its link.
        let first = c.alias.is_none();
        let v4 = c.ip.zip(net.subnet).map(|(ip, s)| Inside4 {
            ip,
            prefix: s.prefix_len(),
            gateway: net.gateway.filter(|_| first),
        });
        let v6 = c.ip6.zip(net.subnet6).map(|(ip6, s6)| Inside6 {
            ip: ip6,
            prefix: s6.prefix_len(),
            gateway: net.gateway6.filter(|_| first),
        });
        configure_inside(ns, ifname, v4, v6)?;
    }
    if let (Some(ip), Some(gw)) = (c.ip, net.gateway) {
        netlink::add_host_route(&ctx.nl, ip, host.index, gw).await?;
        netlink::add_neigh(&ctx.nl, host.index, ip.into(), mac).await?;
    }
    if let Some(ip6) = c.ip6 {
        netlink::add_host_route6(&ctx.nl, ip6, host.index, net.gateway6).await?;
        netlink::add_neigh(&ctx.nl, host.index, ip6.into(), mac).await?;
    }
    // Rules may name this container already (a CNI container re-added under its old name):
    // they are in force before the endpoint lets its first packet through.
    policy::apply_for(ctx, st, name)?;
    if admit == Admit::Now {
        admit_endpoint(ctx, st, name)?;
    }
    sysctl::enable_forwarding(&c.host_if)?;
    Ok(())
}

/// Writes container `name`'s endpoint entry: from then on its traffic passes.
fn admit_endpoint(ctx: &Ctx, st: &State, name: &str) -> Result<()> {
    if let Some((key, ep)) = crate::desired::endpoint6(st, name)? {
        maps::links6(&ctx.inst)?
            .insert(ep.ep.ifindex, key, 0)
            .ctx(|| "adding the IPv6 link".into())?;
        maps::endpoints6(&ctx.inst)?
            .insert(key, ep, 0)
            .ctx(|| "adding the IPv6 endpoint".into())?;
    }
    if let Some((key, ep)) = crate::desired::endpoint(st, name)? {
        maps::endpoints(&ctx.inst)?
            .insert(key, ep, 0)
            .ctx(|| "adding the endpoint".into())?;
    }
    Ok(())
}

/// A container's IPv4 side, as its namespace gets it.
#[derive(Clone, Copy)]
struct Inside4 {
    ip: Ipv4Addr,
    prefix: u8,
    /// The default route's next hop (the first network's gateway only).
    gateway: Option<Ipv4Addr>,
}

/// A container's IPv6 side, as its namespace gets it.
#[derive(Clone, Copy)]
struct Inside6 {
    ip: Ipv6Addr,
    prefix: u8,
    /// The default route's next hop (the first network's gateway only).
    gateway: Option<Ipv6Addr>,
}

/// Inside the container's namespace: loopback up, `ifname` addressed and up, the default
/// routes via the gateways if given. IPv6 only on a dual-stack network (otherwise it stays
/// disabled: no link-local address, no multicast groups, nothing to poison).
fn configure_inside(
    ns: &Path,
    ifname: &str,
    v4: Option<Inside4>,
    v6: Option<Inside6>,
) -> Result<()> {
    let ifname_owned = ifname.to_string();
    netns::run_async_in(ns, move || async move {
        let h = netlink::connect()?;
        match v6 {
            Some(_) => sysctl::enable_ipv6_inside(&ifname_owned)?,
            None => sysctl::disable_ipv6(&ifname_owned)?,
        }
        if let Some(lo) = netlink::link_by_name(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        let eth = netlink::link_by_name(&h, &ifname_owned)
            .await?
            .ok_or_else(|| {
                Error::Other(anyhow::anyhow!(
                    "{ifname_owned} missing in the container namespace"
                ))
            })?;
        if let Some(v4) = v4 {
            netlink::add_addr(&h, eth.index, v4.ip, v4.prefix).await?;
        }
        if let Some(v6) = v6 {
            netlink::add_addr6(&h, eth.index, v6.ip, v6.prefix).await?;
        }
        netlink::set_up(&h, eth.index).await?;
        if let Some(gw) = v4.and_then(|v| v.gateway) {
            netlink::add_default_route(&h, gw).await?;
        }
        match v6.and_then(|v| v.gateway) {
            Some(gw6) => netlink::add_default_route6(&h, gw6).await,
            None => Ok(()),
        }
    })
}

/// The record of CLI container `name`'s attachment to a further `network`. `@` is in no name
/// a user can give, so it never collides with a container's.
pub fn attachment_name(name: &str, network: &str) -> String {
    format!("{name}@{network}")
}

/// `control container connect`: CLI container `name` joins a further `network` with an
/// interface `ethN` in its namespace (record [`attachment_name`], alias `name`: rules naming
/// `name` cover it). The default route stays on the first network.
pub async fn connect(
    ctx: &Ctx,
    st: &mut State,
    name: &str,
    network: &str,
    ip: Option<Ipv4Addr>,
) -> Result<ContainerInfo> {
    let c = st.container(name)?;
    if !c.owns_netns() || c.cni_id.is_some() {
        return Err(Error::invalid(format!(
            "{name:?} was not made by `control container create`: its runtime connects it to networks"
        )));
    }
    let record = attachment_name(name, network);
    if c.network == network || st.containers.contains_key(&record) {
        return Err(Error::conflict(format!(
            "container {name:?} is already on network {network:?}"
        )));
    }
    let used: Vec<&str> = st
        .containers
        .values()
        .filter(|x| x.alias.as_deref() == Some(name))
        .filter_map(|x| x.ifname.as_deref())
        .collect();
    let ifname = (1..)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(&n.as_str()))
        .expect("a free ethN");
    let spec = AttachSpec {
        name: record,
        network: network.to_string(),
        origin: Origin::Cli,
        netns: NetnsOwner::Of(name.to_string()),
        peer: Peer::MoveIntoNetns,
        ifname,
        ip,
        ip6: None,
        mac: None,
        ports: Vec::new(),
        host_ports: HostPort::CheckFree,
        alias: Some(name.to_string()),
        admit: Admit::Now,
    };
    attach(ctx, st, spec).await
}

/// `control container disconnect`: takes CLI container `name` off a further `network`.
pub async fn disconnect(ctx: &Ctx, st: &mut State, name: &str, network: &str) -> Result<()> {
    if st.container(name)?.network == network {
        return Err(Error::invalid(format!(
            "{network:?} is {name:?}'s first network: `control container rm {name}` removes the container"
        )));
    }
    let record = attachment_name(name, network);
    if !st.containers.contains_key(&record) {
        return Err(Error::not_found(format!(
            "container {name:?} is not on network {network:?}: see `control container ls`"
        )));
    }
    let what = format!("container disconnect {name} {network}");
    detach(ctx, st, std::slice::from_ref(&record), &what).await
}

/// The records `container rm NAME` removes: every one answering to `name`, the one that owns
/// the namespace last (its further networks' interfaces live there).
pub fn removal_order(st: &State, name: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = st
        .answering_some(name)?
        .into_iter()
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| st.containers.get(n).is_some_and(Container::owns_netns));
    Ok(names)
}

/// Removes the containers `names` (marked, unplumbed, then forgotten) as the change `what`.
/// `st` is the state under the instance lock, which the caller holds.
pub async fn detach(ctx: &Ctx, st: &mut State, names: &[String], what: &str) -> Result<()> {
    for n in names {
        st.container(n)?;
    }
    for n in names {
        st.containers.get_mut(n).expect("checked").phase = Phase::Removing;
    }
    tx::run(ctx, what, st, async |st: &mut State| {
        for n in names {
            teardown(ctx, st, n).await;
            forget(&ctx.inst, st, n)?;
        }
        Ok(())
    })
    .await
}

/// Removes a container's kernel objects, best effort (used on rollback, rm, repair and down).
pub async fn teardown(ctx: &Ctx, st: &State, name: &str) {
    let Some(c) = st.containers.get(name) else {
        return;
    };
    // The veth goes first: with from_container detached while the link still forwards, the
    // kernel would route the container's packets itself, unfiltered (spoofed, unmasqueraded,
    // out of an internal network). Deleting the link takes its tcx attachments with it.
    // Only the link this container made (its MAC): a create that failed because the name
    // was taken must not delete the link that holds it.
    let ours = netlink::parse_mac(&c.host_mac);
    if let Ok(Some(l)) = netlink::link_by_name(&ctx.nl, &c.host_if).await
        && ours.is_some()
        && l.mac == ours
    {
        let _ = sysctl::disable_forwarding(&c.host_if);
        let _ = netlink::delete_link(&ctx.nl, l.index).await;
    }
    let _ = links::container_detach(&ctx.inst, c.identity);
    let ip = c.ip.map(weir_common::addr::from_std);
    if let Some(ip) = ip
        && let Ok(mut m) = maps::endpoints(&ctx.inst)
        && m.get(&ip, 0).is_ok_and(|e| e.identity == c.identity)
    {
        let _ = m.remove(&ip);
    }
    if let Ok(pubs) = PublishBook::open(&ctx.inst).and_then(|b| b.of(name)) {
        for p in &pubs {
            let _ = publish::remove_entry(ctx, st, p);
        }
    }
    let _ = policy::remove_for(ctx, st, name);
    if let Some(ip) = ip {
        let _ = purge_conntrack(ctx, |k, _| k.saddr == ip || k.daddr == ip);
    }
    if let Some(ip6) = c.ip6.map(weir_common::addr::from_std6) {
        if let Ok(mut m) = maps::endpoints6(&ctx.inst)
            && m.get(&ip6, 0).is_ok_and(|e| e.ep.identity == c.identity)
        {
            let _ = m.remove(&ip6);
        }
        if let Ok(mut m) = maps::links6(&ctx.inst) {
            let _ = m.remove(&c.host_ifindex);
        }
        let _ = purge_conntrack6(ctx, |k, _| k.saddr == ip6 || k.daddr == ip6);
    }
    if c.owns_netns() {
        let _ = netns::delete(name);
    }
}

/// Drops a container and everything that names it from the state and the books.
pub fn forget(inst: &Instance, st: &mut State, name: &str) -> Result<()> {
    PublishBook::open(inst)?.forget(name)?;
    RuleBook::open(inst)?.forget(name)?;
    st.containers.remove(name);
    Ok(())
}

/// Deletes IPv4 conntrack entries (and their twins) matching `pred`; returns how many flows.
pub fn purge_conntrack(ctx: &Ctx, pred: impl Fn(&FlowKey, &CtEntry) -> bool) -> Result<usize> {
    Ok(purge_in(
        maps::conntrack(&ctx.inst)?,
        maps::conntrack_entries(&ctx.inst)?,
        pred,
    ))
}

/// The same for IPv6 flows.
pub fn purge_conntrack6(ctx: &Ctx, pred: impl Fn(&FlowKey6, &CtEntry6) -> bool) -> Result<usize> {
    Ok(purge_in(
        maps::conntrack6(&ctx.inst)?,
        maps::conntrack6_entries(&ctx.inst)?,
        pred,
    ))
}

/// Deletes, from either family's conntrack map, the entries of `entries` matching `pred` and
/// their twins.
fn purge_in<A: Copy>(
    mut ct: aya::maps::HashMap<aya::maps::MapData, FlowKeyOf<A>, CtEntryOf<A>>,
    entries: Vec<(FlowKeyOf<A>, CtEntryOf<A>)>,
    pred: impl Fn(&FlowKeyOf<A>, &CtEntryOf<A>) -> bool,
) -> usize
where
    FlowKeyOf<A>: aya::Pod,
    CtEntryOf<A>: aya::Pod,
{
    let doomed = entries
        .into_iter()
        .filter(|(k, e)| pred(k, e) || pred(&e.rewrite, e));
    // A flow counts once, whichever of its two entries the walk met first: the pair is gone
    // when the first removal of either entry succeeds.
    let mut flows = 0;
    for (k, e) in doomed {
        let this = ct.remove(&k).is_ok();
        let twin = ct.remove(&e.twin).is_ok();
        if this || twin {
            flows += 1;
        }
    }
    flows
}
