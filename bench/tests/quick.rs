//! The quick bench, as CI runs it: every workload reports exactly its cases (each path, stream
//! count, protocol, percentile, port and rule count), every case has a number from every
//! topology (or an explicit not-applicable, where that is by design), and nothing failed.
//! Never a speed threshold.

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

/// The weir-docker driver: $WEIR_DOCKER, else the one beside `bench` (built for weir-docker's
/// own tests by `cargo test` at the workspace root).
fn weir_docker() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_DOCKER") {
        return p.into();
    }
    let beside = Path::new(BENCH).with_file_name("weir-docker");
    assert!(
        beside.exists(),
        "no weir-docker binary at {}: run `cargo test` at the workspace root, `cargo build -p \
         weir-docker` first, or set WEIR_DOCKER",
        beside.display()
    );
    beside
}

/// The topologies of every workload but docker's, and of docker's (bench/src/cli.rs).
const TOPOLOGIES: [&str; 4] = ["weir", "iptables", "netavark", "veth"];
const DOCKER_TOPOLOGIES: [&str; 2] = ["docker-bridge", "docker-weir"];

/// The workloads of a whole run, in report order (the update workload is fed by both
/// connection-rate phases, and comes last).
const WORKLOAD_IDS: [&str; 16] = [
    "throughput",
    "throughput6",
    "latency",
    "latency6",
    "packets-dnat",
    "packets-drop",
    "connrate-ports",
    "connrate-ports6",
    "connrate-rules",
    "connrate-rules6",
    "docker-throughput",
    "docker-latency",
    "docker-start",
    "docker-connrate",
    "docker-run",
    "update",
];

/// (workload, topology) pairs that have nothing to measure by design.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("packets-drop", "netavark"), // forwards world traffic to containers: no filter to time
    ("packets-drop", "veth"),
    ("update", "veth"), // no control plane
    // IPv4-only in the bench.
    ("throughput6", "netavark"),
    ("latency6", "netavark"),
    ("connrate-ports6", "netavark"),
    ("connrate-rules6", "netavark"),
];

/// The three paths of throughput and latency (bench/src/workload/mod.rs, `Path::name`).
const PATHS: [&str; 3] = [
    "container→container",
    "container→ext (MASQUERADE)",
    "ext→published port (DNAT)",
];

/// The port and rule counts of the quick plan (bench/src/plan.rs, `Plan::quick().counts`).
const QUICK_COUNTS: [usize; 2] = [0, 100];
/// The published-container counts of the quick plan's docker workload (`docker_counts`).
const QUICK_DOCKER_COUNTS: [usize; 2] = [0, 10];

/// Every case workload `id` must report, in the order it measures them
/// (bench/src/workload/*.rs).
fn expected_cases(id: &str) -> Vec<String> {
    // The IPv6 twins have the IPv4 workloads' cases.
    let id = id.strip_suffix('6').unwrap_or(id);
    match id {
        "docker-throughput" => expected_cases("throughput"),
        "docker-latency" => expected_cases("latency"),
        "docker-start" => vec!["docker run -p to first byte from ext".into()],
        "docker-connrate" => QUICK_DOCKER_COUNTS
            .iter()
            .map(|n| format!("{n} other published containers"))
            .collect(),
        "docker-run" => QUICK_DOCKER_COUNTS
            .iter()
            .map(|n| format!("{n} published containers present"))
            .collect(),
        "throughput" => PATHS
            .iter()
            .flat_map(|p| [format!("{p}, 1 stream"), format!("{p}, 2 streams")])
            .collect(),
        "latency" => PATHS
            .iter()
            .flat_map(|p| {
                ["TCP", "UDP"].into_iter().flat_map(move |proto| {
                    [format!("{p}, {proto} p50"), format!("{p}, {proto} p99")]
                })
            })
            .collect(),
        "packets-dnat" => vec![
            "forwarded into the container".into(),
            "offered by the flood".into(),
        ],
        "packets-drop" => vec!["dropped".into(), "offered by the flood".into()],
        "connrate-ports" => QUICK_COUNTS
            .iter()
            .map(|n| format!("{n} other published ports"))
            .collect(),
        "connrate-rules" => QUICK_COUNTS
            .iter()
            .map(|n| format!("{n} isolation rules"))
            .collect(),
        // The ports phase runs before the rules phase; both feed this workload.
        "update" => QUICK_COUNTS
            .iter()
            .map(|n| format!("publish one port, {n} present"))
            .chain(
                QUICK_COUNTS
                    .iter()
                    .map(|n| format!("add one isolation rule, {n} present")),
            )
            .collect(),
        other => panic!("unexpected workload {other}"),
    }
}

/// Checks one case of workload `id`: no errors, and every topology of `expected` (and no
/// other) has one positive number or, where that is by design, a not-applicable with a reason.
/// Returns how many numbers it checked.
fn check_case(id: &str, c: &Value, expected: &[&str]) -> usize {
    let mut checked = 0;
    let name = c["name"].as_str().unwrap();
    assert!(
        c["errors"].as_object().unwrap().is_empty(),
        "{id} / {name}: {}",
        c["errors"]
    );
    // Every topology (and no other) has a number or an explicit not-applicable.
    let measured: Vec<&str> = c["samples"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let na = c["not_applicable"].as_object().unwrap();
    let mut accounted: Vec<&str> = measured
        .iter()
        .copied()
        .chain(na.keys().map(String::as_str))
        .collect();
    accounted.sort_unstable();
    assert_eq!(
        accounted, expected,
        "{id} / {name}: topologies with a number or n/a"
    );
    for t in expected {
        let samples = c["samples"][t].as_array();
        let na = c["not_applicable"].get(*t);
        if NOT_APPLICABLE.contains(&(id, *t)) {
            assert!(
                na.and_then(|w| w.as_str()).is_some_and(|w| !w.is_empty()) && samples.is_none(),
                "{id} / {name} / {t}: expected n/a with a reason"
            );
            continue;
        }
        assert!(na.is_none(), "{id} / {name} / {t}: n/a {na:?}");
        let v = samples.unwrap_or_else(|| panic!("{id} / {name} / {t}: no number"));
        assert!(
            v.len() == 1
                && v.iter()
                    .all(|x| x.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)),
            "{id} / {name} / {t}: {v:?}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn quick_bench_measures_every_topology_and_workload() {
    let out = std::env::temp_dir().join(format!("weir-bench-quick-{}", std::process::id()));
    let status = Command::new(BENCH)
        .args(["--quick", "--out", out.to_str().unwrap()])
        .env("WEIR_CONTROL", control())
        .env("WEIR_DOCKER", weir_docker())
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
    assert_eq!(
        topologies,
        [&TOPOLOGIES[..], &DOCKER_TOPOLOGIES[..]].concat()
    );
    let workloads = r["workloads"].as_array().unwrap();
    let ids: Vec<&str> = workloads
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, WORKLOAD_IDS);
    // Quick: one round of everything, so every topology has exactly one sample per case.
    assert_eq!(r["mode"], "quick");
    assert_eq!(r["samples_per_case"], 1);
    let mut checked = 0;
    for w in workloads {
        let id = w["id"].as_str().unwrap();
        let cases = w["cases"].as_array().unwrap();
        assert!(!cases.is_empty(), "{id} has no cases");
        let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, expected_cases(id), "{id}: not the expected cases");
        let mut expected = if id.starts_with("docker-") {
            DOCKER_TOPOLOGIES.to_vec()
        } else {
            TOPOLOGIES.to_vec()
        };
        if id == "packets-drop" {
            expected.push("weir-xdp");
        }
        expected.sort_unstable();
        for c in cases {
            checked += check_case(id, c, &expected);
        }
    }
    // 6 + 12 + 2 + 2 + 2 + 2 + 4 cases; 4 topologies (5 for packets-drop) less the n/a ones;
    // the IPv6 twins' 6 + 12 + 2 + 2 cases on the 3 topologies with IPv6;
    // docker: 6 + 12 + 1 + 2 + 2 cases on 2 topologies.
    assert_eq!(
        checked,
        (6 + 12 + 2 + 2 + 2) * 4 + 2 * 3 + 4 * 3 + (6 + 12 + 2 + 2) * 3 + (6 + 12 + 1 + 2 + 2) * 2,
        "numbers checked"
    );
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
