//! What an instance holds, read through the control library (typed map views) and its
//! JSON listings: shared by the modules that check state after floods, kills and upgrades.

use control::{datapath::maps, instance::Instance};
use rig::Sandbox;
use serde_json::Value;
use weir_common::conntrack::{CtEntry, FlowKey};

/// The library's handle on the sandbox's instance.
pub fn instance(s: &Sandbox) -> Instance {
    Instance::new(&s.state_dir).expect("instance")
}

/// Keys of a pinned hash map.
pub fn keys<K: aya::Pod, V: aya::Pod>(s: &Sandbox, map: &str) -> Vec<K> {
    maps::hash::<K, V>(&instance(s), map)
        .expect("map")
        .keys()
        .filter_map(|k| k.ok())
        .collect()
}

/// Every conntrack map entry (both directions of each flow).
pub fn ct_entries(s: &Sandbox) -> Vec<(FlowKey, CtEntry)> {
    maps::conntrack_entries(&instance(s)).expect("conntrack map")
}

/// `control conntrack` (with `--all`: expired entries too), one JSON object per flow.
pub fn flows(s: &Sandbox, all: bool) -> Vec<Value> {
    let args: &[&str] = if all {
        &["conntrack", "--all"]
    } else {
        &["conntrack"]
    };
    s.json(args).as_array().cloned().unwrap_or_default()
}

/// How often the datapath counted event `name`.
pub fn event(s: &Sandbox, name: &str) -> u64 {
    s.stats()["events"][name].as_u64().unwrap_or(0)
}

/// Program id per attachment, from `status --json`.
pub fn program_ids(s: &Sandbox) -> Vec<(String, u64)> {
    s.json(&["status"])["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["attached_to"].as_str().unwrap().to_string(),
                p["program_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("program not attached: {p}")),
            )
        })
        .collect()
}
