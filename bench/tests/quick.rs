//! The quick bench, as CI runs it: every workload runs on every topology and produces a
//! number (or is not applicable by design), and nothing failed. Never a speed threshold.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// The control binary: $WEIR_CONTROL, else the one beside `bench` (cargo puts a workspace's
/// binaries in one directory; `cargo test` at the workspace root builds it for control's own
/// tests).
fn control() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_CONTROL") {
        return p.into();
    }
    let beside = Path::new(BENCH).with_file_name("control");
    assert!(
        beside.exists(),
        "no control binary at {}: run `cargo test` at the workspace root, `cargo build -p control` \
         first, or set WEIR_CONTROL",
        beside.display()
    );
    beside
}

/// (workload, topology) pairs that have nothing to measure by design.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("packets-drop", "netavark"), // forwards world traffic to containers: no filter to time
    ("packets-drop", "veth"),
    ("update", "veth"), // no control plane
];

#[test]
fn quick_bench_measures_every_topology_and_workload() {
    let out = std::env::temp_dir().join(format!("weir-bench-quick-{}", std::process::id()));
    let status = Command::new(BENCH)
        .args(["--quick", "--out", out.to_str().unwrap()])
        .env("WEIR_CONTROL", control())
        .status()
        .expect("running bench --quick");
    let json = std::fs::read_to_string(out.join("results.json"));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap_or_default();
    let svgs = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension() == Some("svg".as_ref()))
                .count()
        })
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&out);
    assert!(status.success(), "bench --quick failed: {md}");
    let r: Value = serde_json::from_str(&json.expect("results.json")).expect("results.json parses");

    let topologies: Vec<&str> = r["topologies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(topologies, ["weir", "iptables", "netavark", "veth"]);
    let workloads = r["workloads"].as_array().unwrap();
    let ids: Vec<&str> = workloads
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "throughput",
            "latency",
            "packets-dnat",
            "packets-drop",
            "connrate-ports",
            "connrate-rules",
            "update"
        ]
    );
    for w in workloads {
        let id = w["id"].as_str().unwrap();
        let cases = w["cases"].as_array().unwrap();
        assert!(!cases.is_empty(), "{id} has no cases");
        let mut expected = topologies.clone();
        if id == "packets-drop" {
            expected.push("weir-xdp");
        }
        for c in cases {
            let name = c["name"].as_str().unwrap();
            assert!(
                c["errors"].as_object().unwrap().is_empty(),
                "{id} / {name}: {}",
                c["errors"]
            );
            for t in &expected {
                let samples = c["samples"][t].as_array();
                let na = c["not_applicable"].get(*t).is_some();
                if NOT_APPLICABLE.contains(&(id, *t)) {
                    assert!(na && samples.is_none(), "{id} / {name} / {t}: expected n/a");
                    continue;
                }
                let v = samples.unwrap_or_else(|| panic!("{id} / {name} / {t}: no number"));
                assert!(
                    !v.is_empty() && v.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)),
                    "{id} / {name} / {t}: {v:?}"
                );
            }
        }
    }
    // Every workload's table and chart made it into the report.
    for w in workloads {
        assert!(
            md.contains(w["title"].as_str().unwrap()),
            "results.md lacks {}",
            w["id"]
        );
    }
    assert!(svgs >= workloads.len(), "only {svgs} charts");
}
