//! Typed handles on the pinned maps (opened by path for each command). The named openers take
//! their key and value types from the table in `weir_common::maps`: a caller expecting other
//! types, or a map of another kind, does not compile.

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use weir_common::{
    addr::Ipv6Be,
    config::{Config, Config6},
    conntrack::{CtEntry, CtEntry6, FlowKey, FlowKey6},
    endpoint::{Endpoint, Endpoint6, HostAddr},
    maps::{KeyOf, Kind, MapDef, ValueOf, def},
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishKey6, PublishTarget, PublishTarget6},
    stats::Counter,
};

use crate::{
    error::{Context, Result},
    instance::Instance,
};

fn open(inst: &Instance, name: &str) -> Result<Map> {
    let p = inst.map_pin(name);
    let data = MapData::from_pin(&p).ctx(|| {
        format!(
            "opening pinned map {} (is this instance initialised? run `control init`)",
            p.display()
        )
    })?;
    Map::from_map_data(data).ctx(|| format!("opening map {name}"))
}

pub fn hash<K: aya::Pod, V: aya::Pod>(
    inst: &Instance,
    name: &str,
) -> Result<HashMap<MapData, K, V>> {
    HashMap::try_from(open(inst, name)?).ctx(|| format!("map {name} has an unexpected type"))
}

pub fn lpm<K: aya::Pod, V: aya::Pod>(
    inst: &Instance,
    name: &str,
) -> Result<LpmTrie<MapData, K, V>> {
    LpmTrie::try_from(open(inst, name)?).ctx(|| format!("map {name} has an unexpected type"))
}

pub fn array<V: aya::Pod>(inst: &Instance, name: &str) -> Result<Array<MapData, V>> {
    Array::try_from(open(inst, name)?).ctx(|| format!("map {name} has an unexpected type"))
}

pub fn per_cpu_array<V: aya::Pod>(inst: &Instance, name: &str) -> Result<PerCpuArray<MapData, V>> {
    PerCpuArray::try_from(open(inst, name)?).ctx(|| format!("map {name} has an unexpected type"))
}

pub fn ring_buf(inst: &Instance, name: &str) -> Result<RingBuf<MapData>> {
    RingBuf::try_from(open(inst, name)?).ctx(|| format!("map {name} has an unexpected type"))
}

/// Opens the hash map of table row `M`.
fn hash_of<M: MapDef>(inst: &Instance) -> Result<HashMap<MapData, KeyOf<M>, ValueOf<M>>>
where
    KeyOf<M>: aya::Pod,
    ValueOf<M>: aya::Pod,
{
    const { assert!(matches!(M::SPEC.kind, Kind::Hash | Kind::LruHash)) };
    hash(inst, M::SPEC.name)
}

pub fn endpoints6(inst: &Instance) -> Result<HashMap<MapData, Ipv6Be, Endpoint6>> {
    hash_of::<def::Endpoints6>(inst)
}

pub fn links6(inst: &Instance) -> Result<HashMap<MapData, u32, Ipv6Be>> {
    hash_of::<def::Links6>(inst)
}

pub fn host_addrs6(inst: &Instance) -> Result<HashMap<MapData, Ipv6Be, HostAddr>> {
    hash_of::<def::HostAddrs6>(inst)
}

pub fn subnets6(inst: &Instance) -> Result<LpmTrie<MapData, Ipv6Be, u32>> {
    lpm::<KeyOf<def::Subnets6>, ValueOf<def::Subnets6>>(inst, weir_common::maps::SUBNETS6)
}

pub fn publish6(inst: &Instance) -> Result<HashMap<MapData, PublishKey6, PublishTarget6>> {
    hash_of::<def::Publish6>(inst)
}

pub fn conntrack6(inst: &Instance) -> Result<HashMap<MapData, FlowKey6, CtEntry6>> {
    hash_of::<def::Conntrack6>(inst)
}

/// Every IPv6 conntrack entry (see [`conntrack_entries`]).
pub fn conntrack6_entries(inst: &Instance) -> Result<Vec<(FlowKey6, CtEntry6)>> {
    super::bpfsys::dump_hash(&inst.map_pin(weir_common::maps::CONNTRACK6))
}

pub fn config6(inst: &Instance) -> Result<Array<MapData, Config6>> {
    array::<ValueOf<def::Config6>>(inst, weir_common::maps::CONFIG6)
}

pub fn endpoints(inst: &Instance) -> Result<HashMap<MapData, u32, Endpoint>> {
    hash_of::<def::Endpoints>(inst)
}

pub fn host_addrs(inst: &Instance) -> Result<HashMap<MapData, u32, HostAddr>> {
    hash_of::<def::HostAddrs>(inst)
}

pub fn publish(inst: &Instance) -> Result<HashMap<MapData, PublishKey, PublishTarget>> {
    hash_of::<def::Publish>(inst)
}

pub fn policy(inst: &Instance) -> Result<HashMap<MapData, PolicyKey, u32>> {
    hash_of::<def::Policy>(inst)
}

pub fn net_links(inst: &Instance) -> Result<HashMap<MapData, NetPair, u32>> {
    hash_of::<def::NetLinks>(inst)
}

pub fn conntrack(inst: &Instance) -> Result<HashMap<MapData, FlowKey, CtEntry>> {
    hash_of::<def::Conntrack>(inst)
}

pub fn subnets(inst: &Instance) -> Result<LpmTrie<MapData, u32, u32>> {
    lpm::<KeyOf<def::Subnets>, ValueOf<def::Subnets>>(inst, weir_common::maps::SUBNETS)
}

pub fn stats(inst: &Instance) -> Result<PerCpuArray<MapData, Counter>> {
    per_cpu_array::<ValueOf<def::Stats>>(inst, weir_common::maps::STATS)
}

/// Drops per host-side veth ifindex (per CPU).
pub fn link_drops(inst: &Instance) -> Result<PerCpuHashMap<MapData, u32, Counter>> {
    let name = <def::LinkDrops as MapDef>::SPEC.name;
    PerCpuHashMap::<_, KeyOf<def::LinkDrops>, ValueOf<def::LinkDrops>>::try_from(open(inst, name)?)
        .ctx(|| format!("map {name} has an unexpected type"))
}

pub fn events(inst: &Instance) -> Result<RingBuf<MapData>> {
    ring_buf(inst, weir_common::maps::EVENTS)
}

fn config(inst: &Instance) -> Result<Array<MapData, Config>> {
    array::<ValueOf<def::Config>>(inst, weir_common::maps::CONFIG)
}

/// Every conntrack entry, each once, even while the datapath adds and evicts entries.
pub fn conntrack_entries(inst: &Instance) -> Result<Vec<(FlowKey, CtEntry)>> {
    super::bpfsys::dump_hash(&inst.map_pin(weir_common::maps::CONNTRACK))
}

/// The datapath configuration, or None when no config map is pinned yet.
pub fn read_config(inst: &Instance) -> Result<Option<Config>> {
    if !inst.map_pin(weir_common::maps::CONFIG).exists() {
        return Ok(None);
    }
    let c = config(inst)?
        .get(&0, 0)
        .ctx(|| "reading the config map".into())?;
    Ok((c.schema != 0).then_some(c))
}

pub fn write_config(inst: &Instance, cfg: &Config) -> Result<()> {
    config(inst)?
        .set(0, cfg, 0)
        .ctx(|| "writing the config map".into())
}
