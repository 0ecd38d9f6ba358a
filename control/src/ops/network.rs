//! `control network create|rm|ls|connect|disconnect`.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::{Change, Ctx, lifecycle, tx};
use crate::{
    datapath::maps,
    desired,
    error::{Context, Error, Result},
    netlink,
    state::{Network, State},
    validate,
};

#[derive(Debug, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub isolated: bool,
    pub containers: Vec<String>,
    pub connected: Vec<String>,
}

/// Whether a network's containers reach beyond the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The world through MASQUERADE, and published ports from it.
    World,
    /// The host and connected networks only (`--internal`).
    Internal,
}

/// Whether a network's containers reach each other without a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// They do (the network default of the policy model).
    Open,
    /// Only where a rule allows it (`--isolated`): the host, the world and connected
    /// networks still reach them as before.
    Isolated,
}

/// Whether a network carries IPv6 too, and on which subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Choice {
    /// IPv4 only: its containers have IPv6 disabled.
    Off,
    /// This subnet (`--subnet6`, checked by [`validate::subnet6`]).
    Subnet(Ipv6Net),
    /// A /64 of the instance's ULA /48 (`--ipv6`).
    Derived,
}

/// What `network create` makes, parsed and checked at the edge ([`validate::subnet`],
/// [`validate::gateway`], [`validate::subnet6`]).
#[derive(Clone, Copy, Debug)]
pub struct NetworkSpec {
    /// The IPv4 subnet; None for an IPv6-only network.
    pub subnet: Option<Ipv4Net>,
    /// The IPv4 gateway address, else the subnet's first host address.
    pub gateway: Option<Ipv4Addr>,
    pub reach: Reach,
    pub ipv6: Ipv6Choice,
    /// The containers' MTU when it must be lower than the uplink's (checked by [`mtu_for`]).
    pub mtu: Option<u32>,
    pub members: Members,
}

pub async fn create(ctx: &Ctx, name: &str, spec: NetworkSpec) -> Result<NetworkInfo> {
    validate::name("network", name)?;
    if spec.subnet.is_none() && spec.ipv6 == Ipv6Choice::Off {
        return Err(Error::invalid(
            "a network needs an IPv4 subnet (--subnet), an IPv6 one (--subnet6 or --ipv6), or both",
        ));
    }
    let gateway = spec
        .subnet
        .map(|s| gateway_of(s, spec.gateway))
        .transpose()?;
    if spec.ipv6 != Ipv6Choice::Off {
        crate::ipv6::host_supports()?;
    }
    let (internal, isolated) = (
        spec.reach == Reach::Internal,
        spec.members == Members::Isolated,
    );
    let (_lock, mut st) = ctx.begin().await?;
    if let Some(n) = st.networks.get(name) {
        if is_like(n, &spec, gateway) {
            return Ok(info(&st, name)); // idempotent
        }
        return Err(Error::conflict(format!(
            "network {name:?} already exists with {}: remove it first or pick another name",
            describe(n)
        )));
    }
    if let Some(m) = spec.mtu {
        mtu_for(ctx, &st, m, spec.ipv6 != Ipv6Choice::Off).await?;
    }
    if let Some(s) = spec.subnet {
        check_subnet(ctx, &st, s).await?;
    }
    let id = st.next_network_id;
    let subnet6 = match spec.ipv6 {
        Ipv6Choice::Off => None,
        Ipv6Choice::Subnet(s6) => Some(s6),
        Ipv6Choice::Derived => Some(crate::ipv6::derived_subnet(&st.instance, id)),
    };
    if let Some(s6) = subnet6 {
        check_subnet6(ctx, &st, s6).await?;
    }
    st.next_network_id += 1;
    st.networks.insert(
        name.to_string(),
        Network {
            id,
            subnet: spec.subnet,
            gateway,
            internal,
            subnet6,
            gateway6: subnet6.map(crate::ipv6::gateway_of),
            mtu: spec.mtu,
            isolated,
        },
    );
    tx::run(
        ctx,
        &format!("network create {name}"),
        &mut st,
        async |st| {
            lifecycle::ensure_gateway_dev(ctx, st).await?;
            if let Some((addr, host)) = desired::gateway_addr(&st.networks[name]) {
                maps::host_addrs(&ctx.inst)?
                    .insert(addr, host, 0)
                    .ctx(|| "adding the gateway to the host addresses map".into())?;
            }
            if let Some((addr, host)) = desired::gateway_addr6(&st.networks[name]) {
                maps::host_addrs6(&ctx.inst)?
                    .insert(addr, host, 0)
                    .ctx(|| "adding the IPv6 gateway to the host addresses map".into())?;
            }
            super::reconcile::sync_subnets(ctx, st)
        },
    )
    .await?;
    Ok(info(&st, name))
}

/// The IPv4 gateway: the one asked for, else the subnet's first host address.
fn gateway_of(subnet: Ipv4Net, asked: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
    match asked {
        Some(g) => Ok(g),
        None => subnet
            .hosts()
            .next()
            .ok_or_else(|| Error::invalid(format!("subnet {subnet} has no host addresses"))),
    }
}

/// Whether existing network `n` is what `spec` (with IPv4 gateway `gateway`) asks for.
fn is_like(n: &Network, spec: &NetworkSpec, gateway: Option<Ipv4Addr>) -> bool {
    let same6 = match spec.ipv6 {
        Ipv6Choice::Off => n.subnet6.is_none(),
        Ipv6Choice::Subnet(s6) => n.subnet6 == Some(s6),
        Ipv6Choice::Derived => n.subnet6.is_some(),
    };
    n.subnet == spec.subnet
        && n.gateway == gateway
        && n.internal == (spec.reach == Reach::Internal)
        && same6
        && n.mtu == spec.mtu
        && n.isolated == (spec.members == Members::Isolated)
}

/// What a network is, for messages: `subnet 10.88.0.0/24 gateway 10.88.0.1 (internal)`.
fn describe(n: &Network) -> String {
    let mut d = Vec::new();
    if let (Some(s), Some(g)) = (n.subnet, n.gateway) {
        d.push(format!("subnet {s} gateway {g}"));
    }
    if let Some(s6) = n.subnet6 {
        d.push(format!("subnet6 {s6}"));
    }
    let mut d = d.join(" ");
    if let Some(m) = n.mtu {
        d += &format!(" mtu {m}");
    }
    for (on, what) in [(n.internal, " (internal)"), (n.isolated, " (isolated)")] {
        if on {
            d += what;
        }
    }
    d
}

/// A network's own MTU must be one its families can use and no larger than the uplink's:
/// the datapath forwards without fragmenting, so a larger one would only make the containers
/// send what cannot leave.
async fn mtu_for(ctx: &Ctx, st: &State, mtu: u32, ipv6: bool) -> Result<()> {
    let (min, why) = if ipv6 {
        (1280, "IPv6's minimum")
    } else {
        (68, "IPv4's minimum")
    };
    if mtu < min {
        return Err(Error::invalid(format!(
            "MTU {mtu} is below {why} {min}: give --mtu {min} or more"
        )));
    }
    if let Some(up) = super::shape::uplink_mtu(ctx, st).await?
        && mtu > up
    {
        return Err(Error::invalid(format!(
            "MTU {mtu} is above the uplink's {up}: Weir forwards without fragmenting, so a network's MTU may only be lower: omit it to follow the uplink"
        )));
    }
    Ok(())
}

/// An IPv4 subnet must overlap no other network's and no address of the host.
async fn check_subnet(ctx: &Ctx, st: &State, subnet: Ipv4Net) -> Result<()> {
    for (other, n) in &st.networks {
        if let Some(o) = n.subnet
            && (o.contains(&subnet.network()) || subnet.contains(&o.network()))
        {
            return Err(Error::conflict(format!(
                "subnet {subnet} overlaps network {other:?} ({o}): pick a disjoint range"
            )));
        }
    }
    let gateways: Vec<Ipv4Addr> = st.networks.values().filter_map(|n| n.gateway).collect();
    for (idx, ip, plen) in netlink::ipv4_addrs(&ctx.nl, None).await? {
        if gateways.contains(&ip) || ip.is_loopback() {
            continue;
        }
        let host_net = Ipv4Net::new(ip, plen)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| Ipv4Net::from(ip));
        if subnet.contains(&ip) || host_net.contains(&subnet.network()) {
            let which = netlink::link_by_index(&ctx.nl, idx)
                .await?
                .map(|l| l.name)
                .unwrap_or_default();
            return Err(Error::conflict(format!(
                "subnet {subnet} overlaps host address {ip}/{plen} on {which}: pick a range the host does not use"
            )));
        }
    }
    Ok(())
}

/// An IPv6 subnet must overlap no other network's and contain no global address of the host.
async fn check_subnet6(ctx: &Ctx, st: &State, subnet6: Ipv6Net) -> Result<()> {
    for (other, n) in &st.networks {
        if let Some(o) = n.subnet6
            && (o.contains(&subnet6.network()) || subnet6.contains(&o.network()))
        {
            return Err(Error::conflict(format!(
                "IPv6 subnet {subnet6} overlaps network {other:?} ({o}): pick a disjoint range"
            )));
        }
    }
    let gateways: Vec<Ipv6Addr> = st.networks.values().filter_map(|n| n.gateway6).collect();
    for ip in netlink::ipv6_global_addrs(&ctx.nl, None).await? {
        if subnet6.contains(&ip) && !gateways.contains(&ip) {
            return Err(Error::conflict(format!(
                "IPv6 subnet {subnet6} contains host address {ip}: pick a range the host does not use"
            )));
        }
    }
    Ok(())
}

pub async fn remove(ctx: &Ctx, name: &str) -> Result<()> {
    let (_lock, mut st) = ctx.begin().await?;
    let net = st.network(name)?.clone();
    let users: Vec<&String> = st
        .containers
        .iter()
        .filter(|(_, c)| c.network == name)
        .map(|(n, _)| n)
        .collect();
    if !users.is_empty() {
        let list: Vec<&str> = users.iter().map(|s| s.as_str()).collect();
        return Err(Error::conflict(format!(
            "network {name:?} still has {} container(s) ({}): remove them first",
            list.len(),
            list.join(", ")
        )));
    }
    tx::run(ctx, &format!("network rm {name}"), &mut st, async |st| {
        let mut links = maps::net_links(&ctx.inst)?;
        for (a, b) in st.net_links.iter().filter(|(a, b)| a == name || b == name) {
            if let Some(pair) = desired::net_pair(st, a, b) {
                let _ = links.remove(&pair);
            }
        }
        st.net_links.retain(|(a, b)| a != name && b != name);
        if let Some((addr, _)) = desired::gateway_addr(&net) {
            let _ = maps::host_addrs(&ctx.inst)?.remove(&addr);
        }
        if let Some((addr, _)) = desired::gateway_addr6(&net) {
            let _ = maps::host_addrs6(&ctx.inst)?.remove(&addr);
        }
        if let Some(dev) = netlink::link_by_name(&ctx.nl, lifecycle::GATEWAY_DEV).await? {
            if let Some(gw) = net.gateway {
                netlink::del_addr(&ctx.nl, dev.index, gw).await?;
            }
            if let Some(gw6) = net.gateway6 {
                netlink::del_addr6(&ctx.nl, dev.index, gw6).await?;
            }
        }
        st.networks.remove(name);
        super::reconcile::sync_subnets(ctx, st)
    })
    .await
}

pub fn info(st: &State, name: &str) -> NetworkInfo {
    let n = &st.networks[name];
    NetworkInfo {
        name: name.to_string(),
        id: n.id,
        subnet: n.subnet,
        gateway: n.gateway,
        subnet6: n.subnet6,
        gateway6: n.gateway6,
        internal: n.internal,
        mtu: n.mtu,
        isolated: n.isolated,
        containers: st
            .containers
            .iter()
            .filter(|(_, c)| c.network == name)
            .map(|(k, _)| k.clone())
            .collect(),
        connected: st
            .net_links
            .iter()
            .filter_map(|(a, b)| {
                if a == name {
                    Some(b.clone())
                } else if b == name {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect(),
    }
}

pub fn list(st: &State) -> Vec<NetworkInfo> {
    st.networks.keys().map(|n| info(st, n)).collect()
}

/// Lets containers of networks `a` and `b` open connections to each other (subject to rules),
/// or stops it. Returns false when they already were (or were not) connected.
pub async fn connect(ctx: &Ctx, a: &str, b: &str, change: Change) -> Result<bool> {
    let (_lock, mut st) = ctx.begin().await?;
    st.network(a)?;
    st.network(b)?;
    let link = desired::net_pair(&st, a, b).expect("both networks exist");
    if a == b {
        return Err(Error::invalid(format!(
            "{a:?} is the same network: containers on one network already talk"
        )));
    }
    let pair = if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    };
    if st.net_links.contains(&pair) == (change == Change::Add) {
        return Ok(false);
    }
    let verb = match change {
        Change::Add => "connect",
        Change::Remove => "disconnect",
    };
    tx::run(
        ctx,
        &format!("network {verb} {a} {b}"),
        &mut st,
        async |st| {
            let mut links = maps::net_links(&ctx.inst)?;
            match change {
                Change::Add => {
                    links
                        .insert(link, 1, 0)
                        .ctx(|| "writing the network links map".into())?;
                    st.net_links.push(pair);
                }
                Change::Remove => {
                    let _ = links.remove(&link);
                    st.net_links.retain(|p| *p != pair);
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(true)
}
