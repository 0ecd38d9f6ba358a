//! Typed handles on the pinned maps (opened by path for each command).

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf};
use weir_common::{
    config::Config,
    conntrack::{CtEntry, FlowKey},
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

/// Every conntrack entry, each once, even while the datapath adds and evicts entries.
pub fn conntrack_entries(inst: &Instance) -> Result<Vec<(FlowKey, CtEntry)>> {
    super::bpfsys::dump_hash(&inst.map_pin(weir_common::maps::CONNTRACK))
}

/// The datapath configuration, or None when no config map is pinned yet.
pub fn read_config(inst: &Instance) -> Result<Option<Config>> {
    if !inst.map_pin(weir_common::maps::CONFIG).exists() {
        return Ok(None);
    }
    let a: Array<MapData, Config> = array(inst, weir_common::maps::CONFIG)?;
    let c = a.get(&0, 0).ctx(|| "reading the config map".into())?;
    Ok((c.schema != 0).then_some(c))
}

pub fn write_config(inst: &Instance, cfg: &Config) -> Result<()> {
    let mut a: Array<MapData, Config> = array(inst, weir_common::maps::CONFIG)?;
    a.set(0, cfg, 0).ctx(|| "writing the config map".into())
}
