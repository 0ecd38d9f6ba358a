//! Drift: where the derived maps differ from what the desired state says they hold (an entry
//! deleted or changed behind Weir's back, e.g. with bpftool), and its repair. The full rebuild
//! (`ops::reconcile::sync_maps`), `control status` and `control repair` all go through
//! [`check`].

use std::{collections::HashMap, hash::Hash};

use aya::maps::{MapData, lpm_trie::Key};
use serde::Serialize;
use weir_common::maps as names;

use crate::{
    datapath::maps,
    desired,
    error::{Context, Result},
    instance::Instance,
    netns,
    published::PublishBook,
    rules::RuleBook,
    state::State,
};

/// How one map differs from the desired state, in entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapDrift {
    pub map: &'static str,
    /// Entries the state calls for that the map lacks.
    pub missing: usize,
    /// Entries the map holds that the state does not call for.
    pub extra: usize,
    /// Entries whose value differs from the state's.
    pub different: usize,
}

impl MapDrift {
    pub fn is_clean(&self) -> bool {
        self.missing + self.extra + self.different == 0
    }

    /// "1 missing, 2 extra" (the non-zero counts).
    pub fn summary(&self) -> String {
        [
            (self.missing, "missing"),
            (self.extra, "extra"),
            (self.different, "different"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Compares every derived map with the desired state and, with `fix`, makes it match. Returns
/// the drift found (before fixing), one row per map.
pub fn check(inst: &Instance, st: &State, fix: bool) -> Result<Vec<MapDrift>> {
    let pubs = PublishBook::open(inst)?.items()?;
    let rules = RuleBook::open(inst)?.items()?;
    let cfg = maps::read_config(inst)?;
    let want_cfg = desired::config(
        &st.uplink,
        &st.settings,
        netns::cookie()?,
        cfg.map_or(0, |c| c.flags),
    );
    Ok([
        one(
            names::ENDPOINTS,
            &mut maps::endpoints(inst)?,
            desired::endpoints(st),
            fix,
        )?,
        one(
            names::PUBLISH,
            &mut maps::publish(inst)?,
            desired::published(st, &pubs),
            fix,
        )?,
        one(
            names::POLICY,
            &mut maps::policy(inst)?,
            desired::policy(st, &rules),
            fix,
        )?,
        one(
            names::NET_LINKS,
            &mut maps::net_links(inst)?,
            desired::net_links(st),
            fix,
        )?,
        one(
            names::HOST_ADDRS,
            &mut maps::host_addrs(inst)?,
            desired::host_addrs(st),
            fix,
        )?,
        one(
            names::SUBNETS,
            &mut maps::subnets(inst)?,
            desired::subnets(st),
            fix,
        )?,
        one(
            names::CONFIG,
            &mut ConfigMap(inst),
            HashMap::from([((), want_cfg)]),
            fix,
        )?,
    ]
    .into_iter()
    .chain(check6(inst, st, fix)?)
    .collect())
}

/// [`check`]'s IPv6 maps.
fn check6(inst: &Instance, st: &State, fix: bool) -> Result<Vec<MapDrift>> {
    Ok(vec![
        one(
            names::ENDPOINTS6,
            &mut maps::endpoints6(inst)?,
            desired::endpoints6(st),
            fix,
        )?,
        one(
            names::PUBLISH6,
            &mut maps::publish6(inst)?,
            desired::published6(st, &PublishBook::open(inst)?.items()?),
            fix,
        )?,
        one(
            names::LINKS6,
            &mut maps::links6(inst)?,
            desired::links6(st),
            fix,
        )?,
        one(
            names::HOST_ADDRS6,
            &mut maps::host_addrs6(inst)?,
            desired::host_addrs6(st),
            fix,
        )?,
        one(
            names::SUBNETS6,
            &mut maps::subnets6(inst)?,
            desired::subnets6(st),
            fix,
        )?,
        one(
            names::CONFIG6,
            &mut Config6Map(inst),
            HashMap::from([((), desired::config6(&st.uplink))]),
            fix,
        )?,
    ])
}

/// Only the derived maps `SUBNETS` and `SUBNETS6`, rebuilt (networks come and go).
pub fn sync_subnets(inst: &Instance, st: &State) -> Result<()> {
    one(
        names::SUBNETS,
        &mut maps::subnets(inst)?,
        desired::subnets(st),
        true,
    )?;
    one(
        names::SUBNETS6,
        &mut maps::subnets6(inst)?,
        desired::subnets6(st),
        true,
    )
    .map(drop)
}

/// A map as a set of entries, whatever its kind.
trait Entries<K, V> {
    fn read(&self) -> Vec<(K, V)>;
    fn put(&mut self, k: &K, v: &V) -> Result<()>;
    fn del(&mut self, k: &K);
}

impl<K: aya::Pod, V: aya::Pod> Entries<K, V> for aya::maps::HashMap<MapData, K, V> {
    fn read(&self) -> Vec<(K, V)> {
        self.iter().filter_map(|e| e.ok()).collect()
    }
    fn put(&mut self, k: &K, v: &V) -> Result<()> {
        Ok(self.insert(k, v, 0).map_err(anyhow::Error::from)?)
    }
    fn del(&mut self, k: &K) {
        let _ = self.remove(k);
    }
}

/// The subnet tries (either family), keyed (prefix length, address).
impl<A: aya::Pod> Entries<(u32, A), u32> for aya::maps::LpmTrie<MapData, A, u32> {
    fn read(&self) -> Vec<((u32, A), u32)> {
        self.iter()
            .filter_map(|e| e.ok())
            .map(|(k, v)| ((k.prefix_len(), k.data()), v))
            .collect()
    }
    fn put(&mut self, k: &(u32, A), v: &u32) -> Result<()> {
        Ok(self
            .insert(&Key::new(k.0, k.1), v, 0)
            .map_err(anyhow::Error::from)?)
    }
    fn del(&mut self, k: &(u32, A)) {
        let _ = self.remove(&Key::new(k.0, k.1));
    }
}

/// The IPv6 config map's one entry.
struct Config6Map<'a>(&'a Instance);

impl Entries<(), weir_common::config::Config6> for Config6Map<'_> {
    fn read(&self) -> Vec<((), weir_common::config::Config6)> {
        maps::config6(self.0)
            .ok()
            .and_then(|m| m.get(&0, 0).ok())
            .map(|c| ((), c))
            .into_iter()
            .collect()
    }
    fn put(&mut self, _: &(), v: &weir_common::config::Config6) -> Result<()> {
        Ok(maps::config6(self.0)?
            .set(0, v, 0)
            .map_err(anyhow::Error::from)?)
    }
    fn del(&mut self, _: &()) {}
}

/// The config map's one entry (absent until init wrote it).
struct ConfigMap<'a>(&'a Instance);

impl Entries<(), weir_common::config::Config> for ConfigMap<'_> {
    fn read(&self) -> Vec<((), weir_common::config::Config)> {
        maps::read_config(self.0)
            .ok()
            .flatten()
            .map(|c| ((), c))
            .into_iter()
            .collect()
    }
    fn put(&mut self, _: &(), v: &weir_common::config::Config) -> Result<()> {
        maps::write_config(self.0, v)
    }
    fn del(&mut self, _: &()) {}
}

/// Diffs one map against `want` and, with `fix`, writes the difference.
fn one<K, V>(
    name: &'static str,
    map: &mut impl Entries<K, V>,
    want: HashMap<K, V>,
    fix: bool,
) -> Result<MapDrift>
where
    K: Eq + Hash,
    V: PartialEq,
{
    let have: HashMap<K, V> = map.read().into_iter().collect();
    let extra: Vec<&K> = have.keys().filter(|k| !want.contains_key(k)).collect();
    let wrong: Vec<(&K, &V)> = want
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .collect();
    let missing = wrong.iter().filter(|(k, _)| !have.contains_key(k)).count();
    let drift = MapDrift {
        map: name,
        missing,
        extra: extra.len(),
        different: wrong.len() - missing,
    };
    if fix {
        for k in extra {
            map.del(k);
        }
        for (k, v) in wrong {
            map.put(k, v).ctx(|| format!("writing map {name}"))?;
        }
    }
    Ok(drift)
}
