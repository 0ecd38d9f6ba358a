//! CHECK: is the attachment still what ADD made? Read-only; compares the state record, the
//! kernel (veth, from_container link, endpoint and published-port map entries, the interface
//! and address inside the namespace) and the runtime's `prevResult`. Routes are not checked:
//! the spec lets later plugins in the chain change them.

use std::net::Ipv4Addr;

use super::{
    busy,
    config::NetConf,
    env::Env,
    error::{CniError, CniResult, code},
    find, result,
};
use control::{
    datapath::{links, maps},
    netlink, netns,
    ops::{Ctx, publish},
    published::{Publish, PublishBook},
    state::{self, Phase, State},
};

pub async fn check(ctx: &Ctx, env: &Env, conf: &NetConf) -> CniResult<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs \"prevResult\", the result of the ADD"))?;
    let _lock = busy::lock(&ctx.inst, conf.busy_timeout())?;
    let st = state::load_required(&ctx.inst)?;
    let network = conf.network();
    let name = find(&st, network, &env.container_id).ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "container unknown",
            format!(
                "container {} is not attached to Weir network {network:?}",
                env.container_id
            ),
        )
    })?;
    let problems = problems(ctx, &st, &name, env, conf, prev).await?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        code::CHECK_FAILED,
        format!("attachment {name} is not as ADD made it"),
        problems.join("; "),
    ))
}

async fn problems(
    ctx: &Ctx,
    st: &State,
    name: &str,
    env: &Env,
    conf: &NetConf,
    prev: &serde_json::Value,
) -> CniResult<Vec<String>> {
    let c = &st.containers[name];
    let v4 =
        c.ip.zip(st.network(&c.network)?.subnet.map(|s| s.prefix_len()));
    let mut bad = Vec::new();
    if c.phase != Phase::Ready {
        bad.push(format!("it is {:?}", c.phase));
    }
    let ns = env.netns.as_deref().expect("CHECK requires CNI_NETNS");
    if c.external_netns.as_deref() != Some(&*ns.display().to_string()) {
        bad.push(format!(
            "it was made in {}, not {}",
            c.external_netns.as_deref().unwrap_or("?"),
            ns.display()
        ));
    }
    if let Some((ip, prefix)) = v4
        && !result::ipv4s(prev).contains(&(ip, prefix))
    {
        bad.push(format!("prevResult does not list {ip}/{prefix}"));
    }
    match netlink::link_by_name(&ctx.nl, &c.host_if).await? {
        Some(l) if l.index == c.host_ifindex && l.up => {}
        Some(l) if l.index == c.host_ifindex => bad.push(format!("{} is down", c.host_if)),
        _ => bad.push(format!("host interface {} is missing", c.host_if)),
    }
    if links::program_id(&ctx.inst, &links::container_link(c.identity)).is_none() {
        bad.push(format!("from_container is not attached to {}", c.host_if));
    }
    if links::program_id(&ctx.inst, &links::container_egress_link(c.identity)).is_none() {
        bad.push(format!("to_container is not attached to {}", c.host_if));
    }
    if let Some((ip, _)) = v4 {
        let ep = maps::endpoints(&ctx.inst)?
            .get(&weir_common::addr::from_std(ip), 0)
            .ok();
        if !ep.is_some_and(|e| e.identity == c.identity && e.ifindex == c.host_ifindex) {
            bad.push(format!("the endpoint entry for {ip} is missing or stale"));
        }
    }
    bad.extend(published_problems(ctx, st, name, conf)?);
    if ns.exists() {
        bad.extend(inside(ns, &env.ifname, &c.mac, v4)?);
    } else {
        bad.push(format!("namespace {} is gone", ns.display()));
    }
    Ok(bad)
}

/// Every requested port mapping is recorded for this container and its map entry points here.
fn published_problems(ctx: &Ctx, st: &State, name: &str, conf: &NetConf) -> CniResult<Vec<String>> {
    let m = maps::publish(&ctx.inst)?;
    let book = PublishBook::open(&ctx.inst)?;
    let mut bad = Vec::new();
    for want in conf.mappings()? {
        let p = Publish {
            container: name.to_string(),
            host_ip: want.host_ip,
            host_port: want.host_port,
            container_port: want.container_port,
            proto: want.proto,
        };
        // (A mapping on an IPv6 host address has no IPv4 entry to check.)
        let entry_ok = match publish::entry(st, &p) {
            Ok(Some((k, v))) => m.get(&k, 0).ok() == Some(v),
            Ok(None) => true,
            Err(_) => false,
        };
        if !book.contains(&p) || !entry_ok {
            bad.push(format!(
                "port mapping {} is not published",
                publish::describe(&p)
            ));
        }
    }
    Ok(bad)
}

/// The container side: the interface exists, is up, has our MAC and address.
fn inside(
    ns: &std::path::Path,
    ifname: &str,
    mac: &str,
    v4: Option<(Ipv4Addr, u8)>,
) -> CniResult<Vec<String>> {
    let (ifname, mac) = (ifname.to_string(), mac.to_string());
    Ok(netns::run_async_in(ns, move || async move {
        let h = netlink::connect()?;
        let Some(l) = netlink::link_by_name(&h, &ifname).await? else {
            return Ok(vec![format!("{ifname} is missing in the container")]);
        };
        let mut bad = Vec::new();
        if !l.up {
            bad.push(format!("{ifname} is down"));
        }
        if l.mac.map(|m| netlink::mac_string(&m)) != Some(mac.clone()) {
            bad.push(format!("{ifname} no longer has MAC {mac}"));
        }
        let addrs = netlink::ipv4_addrs(&h, Some(l.index)).await?;
        if let Some((ip, prefix)) = v4
            && !addrs.iter().any(|(_, a, p)| *a == ip && *p == prefix)
        {
            bad.push(format!("{ifname} no longer has {ip}/{prefix}"));
        }
        Ok(bad)
    })?)
}
