//! Pinned eBPF maps read from outside, with `bpftool`: what the kernel holds, whatever the
//! control plane's own view of it (and whatever the value layouts).

use std::path::Path;

use serde_json::Value;

use crate::text;

/// Runs bpftool, asserting success; its stdout.
pub fn bpftool(args: &[&str]) -> String {
    let mut a = vec!["bpftool"];
    a.extend_from_slice(args);
    crate::must(&a)
}

/// Every entry of the map pinned at `pin`, as bpftool prints it (`key`, `value` or `values`,
/// and `formatted` where the map has BTF).
pub fn entries(pin: &Path) -> Vec<Value> {
    let o = crate::run(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        &pin.to_string_lossy(),
    ]);
    assert!(
        o.status.success(),
        "bpftool map dump {}: {}",
        pin.display(),
        text(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bpftool output for {}: {e}", pin.display()));
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("bpftool output for {}: not a list", pin.display()))
}

/// How many entries the map pinned at `pin` holds.
pub fn len(pin: &Path) -> usize {
    entries(pin).len()
}

/// The raw bytes of an entry's `key` or `value` as bpftool prints them (`["0x0a", ...]`).
pub fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("bpftool printed no raw bytes: {v}"))
        .iter()
        .map(|b| {
            let s = b.as_str().unwrap_or_else(|| panic!("not a byte: {b}"));
            u8::from_str_radix(s.trim_start_matches("0x"), 16)
                .unwrap_or_else(|e| panic!("not a byte: {s}: {e}"))
        })
        .collect()
}

/// (name, key size, value size) of the map pinned at `pin`.
pub fn info(pin: &Path) -> (String, u64, u64) {
    let out = bpftool(&["-j", "map", "show", "pinned", &pin.to_string_lossy()]);
    let v: Value = serde_json::from_str(&out).expect("bpftool map show: JSON");
    (
        v["name"].as_str().unwrap_or("").to_string(),
        v["bytes_key"].as_u64().unwrap(),
        v["bytes_value"].as_u64().unwrap(),
    )
}
