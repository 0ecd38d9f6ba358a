//! Makes the kernel match the state file: after an interrupted command, and on demand.

use std::collections::HashMap;

use aya::maps::lpm_trie::Key;

use weir_common::{
    endpoint::{Endpoint, HostAddr},
    maps as names,
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishTarget},
};

use super::{Ctx, container, policy, publish};
use crate::{
    datapath::maps,
    error::{Context, Result},
    published::PublishBook,
    rules::RuleBook,
    state::{Phase, State},
};

/// Removes containers a command left half-created or half-removed and rewrites every map
/// from the state.
pub async fn repair(ctx: &Ctx, st: &mut State) -> Result<()> {
    let broken: Vec<String> = st
        .containers
        .iter()
        .filter(|(_, c)| c.phase != Phase::Ready)
        .map(|(n, _)| n.clone())
        .collect();
    for name in broken {
        ctx.note(&format!(
            "removing container {name}, left incomplete by the interrupted command"
        ));
        container::teardown(ctx, st, &name).await;
        container::forget(&ctx.inst, st, &name)?;
    }
    super::lifecycle::ensure_gateway_dev(ctx, st).await?;
    sync_maps(ctx, st)
}

/// Rewrites endpoints, published ports, policy, network links and host addresses from `st`.
pub fn sync_maps(ctx: &Ctx, st: &State) -> Result<()> {
    let inst = &ctx.inst;
    let eps: HashMap<u32, Endpoint> = st
        .containers
        .keys()
        .filter_map(|n| {
            container::endpoint(st, n)
                .ok()
                .map(|e| (weir_common::addr::from_std(st.containers[n].ip), e))
        })
        .collect();
    sync(maps::hash::<u32, Endpoint>(inst, names::ENDPOINTS)?, eps)?;
    let pubs: HashMap<PublishKey, PublishTarget> = PublishBook::open(inst)?
        .items()?
        .iter()
        .filter_map(|p| publish::entry(st, p).ok())
        .collect();
    sync(
        maps::hash::<PublishKey, PublishTarget>(inst, names::PUBLISH)?,
        pubs,
    )?;
    sync(
        maps::hash::<PolicyKey, u32>(inst, names::POLICY)?,
        policy::compile(st, &RuleBook::open(inst)?.items()?),
    )?;
    let links: HashMap<NetPair, u32> = st
        .net_links
        .iter()
        .filter_map(|(a, b)| {
            Some((
                NetPair::new(st.networks.get(a)?.id, st.networks.get(b)?.id),
                1,
            ))
        })
        .collect();
    sync(maps::hash::<NetPair, u32>(inst, names::NET_LINKS)?, links)?;
    let mut addrs: HashMap<u32, HostAddr> = st
        .networks
        .values()
        .map(|n| (weir_common::addr::from_std(n.gateway), HostAddr::default()))
        .collect();
    for ip in std::iter::once(&st.uplink.ip).chain(&st.uplink.host_addrs) {
        addrs.insert(weir_common::addr::from_std(*ip), HostAddr::default());
    }
    sync(maps::hash::<u32, HostAddr>(inst, names::HOST_ADDRS)?, addrs)?;
    sync_subnets(ctx, st)
}

/// Rewrites the subnet trie from the networks in `st`.
pub fn sync_subnets(ctx: &Ctx, st: &State) -> Result<()> {
    let mut trie = maps::lpm::<u32, u32>(&ctx.inst, names::SUBNETS)?;
    let want: HashMap<(u32, u32), u32> = st
        .networks
        .values()
        .map(|n| {
            (
                (
                    n.subnet.prefix_len() as u32,
                    weir_common::addr::from_std(n.subnet.network()),
                ),
                n.id,
            )
        })
        .collect();
    let have: Vec<Key<u32>> = trie.keys().filter_map(|k| k.ok()).collect();
    for k in have {
        if !want.contains_key(&(k.prefix_len(), k.data())) {
            let _ = trie.remove(&k);
        }
    }
    for ((plen, addr), id) in want {
        trie.insert(&Key::new(plen, addr), id, 0)
            .ctx(|| "writing the subnet map".into())?;
    }
    Ok(())
}

fn sync<K, V>(
    mut map: aya::maps::HashMap<aya::maps::MapData, K, V>,
    want: HashMap<K, V>,
) -> Result<()>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    let have: Vec<K> = map.keys().filter_map(|k| k.ok()).collect();
    for k in have {
        if !want.contains_key(&k) {
            let _ = map.remove(&k);
        }
    }
    for (k, v) in want {
        if map.get(&k, 0).ok() != Some(v) {
            map.insert(k, v, 0).ctx(|| "updating a map entry".into())?;
        }
    }
    Ok(())
}
