//! Issue #12: map entries deleted or changed behind Weir's back (here with bpftool) show as
//! drift in `control status`, and `control repair` puts them back from the state.

use rig::{Bg, Netns, Sandbox, UPLINK_IP, maps, net};
use serde_json::{Value, json};

use crate::CONTROL;

/// Runs bpftool on a pinned map: `op` (delete/update) then key and value bytes.
fn bpftool(s: &Sandbox, map: &str, op: &str, bytes: &str) {
    let p = s.map_pin(map);
    let mut args = vec!["map", op, "pinned", p.to_str().unwrap()];
    args.extend(bytes.split_whitespace());
    maps::bpftool(&args);
}

fn drift(s: &Sandbox) -> Value {
    s.json(&["status"])["drift"].clone()
}

/// A network with container `a` and container `b` at 10.112.0.20 publishing 8080 → 80,
/// serving HTTP; `a` reaches `b` and ext reaches the published port.
fn two_containers(s: &Sandbox) -> (Netns, Netns, Bg) {
    let n = s.network("n", "10.112.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &["--ip", "10.112.0.20", "--publish", "8080:80"]);
    let web = net::http_server(&b, 80, "b");
    assert!(net::ping(&a, "10.112.0.20", 2), "a cannot ping b");
    assert_eq!(published(s, 5).as_deref(), Some("b"));
    assert_eq!(drift(s), json!([]), "a fresh instance has drifted");
    (a, b, web)
}

fn published(s: &Sandbox, secs: u32) -> Option<String> {
    net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), secs)
}

/// The WEIR_PUBLISH key of 8080/tcp on every host address: any address, port (big endian),
/// protocol, padding.
const PUBLISH_8080: &str = "key 0 0 0 0 0x1f 0x90 6 0";

#[test]
fn deleted_entries_show_as_drift_and_repair_restores_them() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let (a, _b, _web) = two_containers(&s);
    bpftool(&s, "WEIR_ENDPOINTS", "delete", "key 10 112 0 20");
    bpftool(&s, "WEIR_PUBLISH", "delete", PUBLISH_8080);
    assert!(
        !net::ping(&a, "10.112.0.20", 1),
        "b is reachable without its endpoint"
    );
    assert!(
        published(&s, 2).is_none(),
        "the port is published without its entry"
    );

    let row = |map: &str| json!({"map": map, "missing": 1, "extra": 0, "different": 0});
    assert_eq!(
        drift(&s),
        json!([row("WEIR_ENDPOINTS"), row("WEIR_PUBLISH")])
    );
    // Drift is a problem status reports, like a missing interface; status itself succeeds.
    let human = s.ok(&["status"]);
    assert!(
        human.contains(
            "problem: map WEIR_ENDPOINTS differs from the state (1 missing): run `control repair`"
        ),
        "{human}"
    );
    assert!(!human.contains("healthy"), "{human}");

    assert_eq!(
        s.ok(&["repair"]).trim(),
        "repaired WEIR_ENDPOINTS (1 missing), WEIR_PUBLISH (1 missing)"
    );
    assert!(
        net::ping(&a, "10.112.0.20", 2),
        "a cannot ping b after repair"
    );
    assert_eq!(published(&s, 5).as_deref(), Some("b"));
    assert_eq!(drift(&s), json!([]));
    assert!(s.ok(&["status"]).contains("healthy"));
    assert_eq!(s.ok(&["repair"]).trim(), "nothing to repair");
}

#[test]
fn changed_and_extra_entries_are_drift_too() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let (_a, _b, _web) = two_containers(&s);
    // The published port now leads to port 81 of b (identity 0), and two networks that do not
    // exist are connected.
    bpftool(
        &s,
        "WEIR_PUBLISH",
        "update",
        &format!("{PUBLISH_8080} value 10 112 0 20 0 81 0 0 0 0 0 0"),
    );
    bpftool(
        &s,
        "WEIR_NET_LINKS",
        "update",
        "key 98 0 0 0 99 0 0 0 value 1 0 0 0",
    );
    assert!(
        published(&s, 2).is_none(),
        "the changed entry still reaches port 80"
    );
    assert_eq!(
        drift(&s),
        json!([
            {"map": "WEIR_PUBLISH", "missing": 0, "extra": 0, "different": 1},
            {"map": "WEIR_NET_LINKS", "missing": 0, "extra": 1, "different": 0},
        ])
    );
    assert_eq!(
        s.ok(&["repair"]).trim(),
        "repaired WEIR_PUBLISH (1 different), WEIR_NET_LINKS (1 extra)"
    );
    assert_eq!(published(&s, 5).as_deref(), Some("b"));
    assert_eq!(s.ok(&["repair"]).trim(), "nothing to repair");
}

#[test]
fn repair_of_a_clean_instance_changes_nothing() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    assert_eq!(s.ok(&["repair"]).trim(), "nothing to repair");
    assert_eq!(drift(&s), json!([]));
}
