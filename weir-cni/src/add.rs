//! ADD: attach the runtime's namespace to a Weir network through the same
//! [`container::attach`] as `control container create`, with the namespace handed to us.

use std::{fs::File, net::Ipv4Addr, path::Path};

use serde_json::Value;

use super::{
    busy,
    config::NetConf,
    env::Env,
    error::{CniError, CniResult, code},
    find,
    result::{self, Attached},
    version::Version,
};
use control::{
    netlink, netns,
    ops::{
        Ctx,
        container::{self, AttachSpec, NetnsOwner, Origin, Peer},
        publish::HostPort,
    },
    published::Port,
    state::{Phase, State},
    validate,
};

pub async fn add(ctx: &Ctx, env: &Env, conf: &NetConf, v: Version) -> CniResult<Value> {
    let ns = env.netns.as_deref().expect("ADD requires CNI_NETNS");
    File::open(ns)
        .map_err(|e| CniError::env(format!("CNI_NETNS {} cannot be opened: {e}", ns.display())))?;
    let ports = conf
        .mappings()?
        .iter()
        .map(|m| Port {
            host_ip: m.host_ip,
            host_port: m.host_port,
            container_port: m.container_port,
            proto: m.proto,
        })
        .collect();
    let ip = requested_ip(env, conf)?;
    let mac = requested_mac(env, conf)?;
    let network = conf.network();

    let (_lock, mut st) = busy::begin(ctx, conf.busy_timeout()).await?;
    st.network(network).map_err(|_| {
        CniError::config(format!(
            "no Weir network {network:?} in {}: create it with `control network create {network} --subnet CIDR`",
            ctx.inst.state_dir.display()
        ))
    })?;
    replace_stale(ctx, &mut st, env, network, ns).await?;
    if interface_exists(ns, &env.ifname)? {
        return Err(CniError::new(
            code::CONFLICT,
            format!("interface {} already exists", env.ifname),
            format!(
                "{} already has an interface named {}: pick another CNI_IFNAME",
                ns.display(),
                env.ifname
            ),
        ));
    }
    let spec = AttachSpec {
        name: choose_name(&st, env),
        network: network.to_string(),
        origin: Origin::Cni {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        },
        netns: NetnsOwner::Runtime(ns.to_path_buf()),
        peer: Peer::MoveIntoNetns,
        ifname: env.ifname.clone(),
        ip,
        ip6: None,
        mac,
        ports,
        // The runtime (conmon) holds the host port itself: no "in use" check.
        host_ports: HostPort::HeldByRuntime,
        alias: None,
        admit: container::Admit::Now,
    };
    let c = container::attach(ctx, &mut st, spec).await?;
    let net = st.network(network)?;
    let ip6 = c
        .ip6
        .zip(net.subnet6)
        .zip(net.gateway6)
        .map(|((ip6, s6), gw6)| (ip6, s6.prefix_len(), gw6));
    let a = Attached {
        host_if: c.host_if,
        host_mac: st.containers[&c.name].host_mac.clone(),
        ifname: env.ifname.clone(),
        mac: c.mac,
        sandbox: ns.display().to_string(),
        ip: (c.ip.zip(net.subnet).zip(c.gateway)).map(|((ip, s), gw)| (ip, s.prefix_len(), gw)),
        ip6,
    };
    Ok(result::add_result(
        v,
        &a,
        conf.dns.as_ref(),
        conf.prev_result.as_ref(),
    ))
}

/// Refuses an ADD of an attachment that exists and is live; replaces one left over from a
/// runtime or host crash (its namespace or veth is gone).
async fn replace_stale(
    ctx: &Ctx,
    st: &mut State,
    env: &Env,
    network: &str,
    ns: &Path,
) -> CniResult<()> {
    let Some(old) = find(st, network, &env.container_id) else {
        return Ok(());
    };
    if is_live(ctx, st, &old, ns).await {
        return Err(CniError::new(
            code::CONFLICT,
            "container is already attached",
            format!(
                "container {} is attached to Weir network {network:?} as {old:?}: a runtime must DEL before ADDing the same attachment again",
                env.container_id
            ),
        ));
    }
    ctx.note(&format!(
        "replacing stale attachment {old:?} of container {}",
        env.container_id
    ));
    let what = format!("cni replace {old}");
    Ok(container::detach(ctx, st, std::slice::from_ref(&old), &what).await?)
}

/// An attachment is live when it is complete, in this namespace, and its veth still exists.
async fn is_live(ctx: &Ctx, st: &State, name: &str, ns: &Path) -> bool {
    let c = &st.containers[name];
    c.phase == Phase::Ready
        && c.external_netns.as_deref() == Some(&*ns.display().to_string())
        && ns.exists()
        && matches!(netlink::link_by_name(&ctx.nl, &c.host_if).await, Ok(Some(l)) if l.index == c.host_ifindex)
}

fn interface_exists(ns: &Path, ifname: &str) -> CniResult<bool> {
    let ifname = ifname.to_string();
    Ok(netns::run_async_in(ns, move || async move {
        let h = netlink::connect()?;
        Ok(netlink::link_by_name(&h, &ifname).await?.is_some())
    })?)
}

/// K8S_POD_NAME (Podman passes the container name there) when it is a valid, unused
/// container name; else `cni-` and as much of the container id as keeps it unique.
fn choose_name(st: &State, env: &Env) -> String {
    let free = |n: &str| validate::name("container", n).is_ok() && !st.containers.contains_key(n);
    if let Some(p) = env.args.get("K8S_POD_NAME")
        && free(p)
    {
        return p.to_string();
    }
    let id = &env.container_id;
    for len in [12, 16, 24, 32, validate::NAME_MAX - 4] {
        let n = format!("cni-{}", &id[..len.min(id.len())]);
        if free(&n) {
            return n;
        }
    }
    let short = &id[..12.min(id.len())];
    (2u32..)
        .map(|i| format!("cni-{short}-{i}"))
        .find(|n| free(n))
        .expect("some suffix is free")
}

/// A fixed address: `IP=` in CNI_ARGS (Podman's --ip) or the `ips` capability, with or
/// without a prefix length. IPv6 entries are ignored (Weir is IPv4); more than one IPv4
/// address is an error (one address per attachment).
fn requested_ip(env: &Env, conf: &NetConf) -> CniResult<Option<Ipv4Addr>> {
    let mut want: Vec<(String, &str)> = Vec::new();
    if let Some(s) = env.args.get("IP") {
        for a in s.split(',').filter(|a| !a.contains(':')) {
            want.push((a.to_string(), "CNI_ARGS IP"));
        }
    }
    for a in conf.runtime_config.ips.iter().filter(|a| !a.contains(':')) {
        want.push((a.clone(), "runtimeConfig.ips"));
    }
    let mut ips = Vec::new();
    for (a, from) in &want {
        let bare = a.split('/').next().unwrap_or_default().trim();
        let ip = validate::ipv4("address", bare).map_err(|e| {
            let msg = format!("{from}: {e}");
            if from.starts_with("CNI_ARGS") {
                CniError::env(msg)
            } else {
                CniError::config(msg)
            }
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.len() > 1 {
        return Err(CniError::config(format!(
            "{} IPv4 addresses requested ({ips:?}): Weir gives an attachment one address",
            ips.len()
        )));
    }
    Ok(ips.first().copied())
}

/// A fixed MAC: `MAC=` in CNI_ARGS (Podman's --mac-address) or the `mac` capability.
fn requested_mac(env: &Env, conf: &NetConf) -> CniResult<Option<[u8; 6]>> {
    let (s, from_args) = match (env.args.get("MAC"), conf.runtime_config.mac.as_deref()) {
        (Some(s), _) => (s, true),
        (None, Some(s)) if !s.is_empty() => (s, false),
        _ => return Ok(None),
    };
    let well_formed = s.split(':').count() == 6
        && s.split(':')
            .all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()));
    match netlink::parse_mac(s).filter(|_| well_formed) {
        Some(m) if m[0] & 1 == 0 && m != [0; 6] => Ok(Some(m)),
        _ => {
            let msg =
                format!("invalid MAC {s:?}: expected a unicast address like 02:42:0a:00:00:05");
            Err(if from_args {
                CniError::env(format!("CNI_ARGS {msg}"))
            } else {
                CniError::config(format!("runtimeConfig.mac: {msg}"))
            })
        }
    }
}
