//! The comparison every refusal test rests on: a snapshot of everything a command could
//! change (listings, pins, configuration maps, the state dir, links, addresses, routes and
//! namespaces), and what differs between two of them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Output,
};

use rig::{Netns, Sandbox, text};
use weir_common::maps as names;

/// Maps the datapath itself writes while traffic flows (counters, the event ring, conntrack
/// and its helpers): a failed command may leave them as they are, the rest it must not touch.
/// (`WEIR_CT_SWEEP`, the sweep's clock, is not pinned.)
const VOLATILE_MAPS: [&str; 5] = [
    names::STATS,
    names::EVENTS,
    names::CONNTRACK,
    names::FRAGMENTS,
    names::SOCK_REVNAT,
];

/// What a failed command must not change: the user-visible listings and status, every pin and
/// the content of every configuration map, the state dir's files (state, rule book, journal),
/// the host namespace's links, addresses and routes, the sandbox's namespaces and what is
/// inside each container namespace.
pub fn snapshot(s: &Sandbox) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for what in [
        &["network", "ls"][..],
        &["container", "ls"],
        &["ports"],
        &["rules"],
    ] {
        m.insert(what.join(" "), s.json(what).to_string());
    }
    let mut status = s.json(&["status"]);
    // A refused `init` must not even replace the programs.
    m.insert("programs".into(), status["programs"].to_string());
    let pin_dir = PathBuf::from(status["pin_dir"].as_str().expect("status: pin_dir"));
    // Live flows (none here, but expiry may count one down) are not configuration.
    status["conntrack_entries"] = serde_json::Value::Null;
    m.insert("status".into(), status.to_string());
    for sub in ["maps", "progs", "links"] {
        m.insert(
            format!("pins {sub}"),
            dir_names(&pin_dir.join(sub)).join(" "),
        );
    }
    record_maps(&mut m, &pin_dir);
    // The state dir: every file and its content (state.json, the rule book `rules`, a
    // journal left by an interrupted change, the lock).
    for f in dir_names(&s.state_dir) {
        let p = s.state_dir.join(&f);
        let content = std::fs::read(&p)
            .map(|b| text(&b))
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        m.insert(format!("state dir {f}"), content);
    }
    m.insert(
        "journal".into(),
        s.state_dir.join("journal").exists().to_string(),
    );
    record_namespaces(&mut m, s);
    m
}

/// Every map is pinned; records the content of each but the volatile ones.
fn record_maps(m: &mut BTreeMap<String, String>, pin_dir: &Path) {
    let maps = dir_names(&pin_dir.join("maps"));
    for name in names::ALL {
        assert!(
            maps.iter().any(|m| m == name),
            "{name} is not pinned in {}: {maps:?}",
            pin_dir.display()
        );
    }
    for name in maps.iter().filter(|n| !VOLATILE_MAPS.contains(&n.as_str())) {
        m.insert(
            format!("map {name}"),
            map_dump(&pin_dir.join("maps").join(name)),
        );
    }
}

/// The host namespace's links, addresses and routes, every sandbox namespace and what Weir
/// put inside each container namespace.
fn record_namespaces(m: &mut BTreeMap<String, String>, s: &Sandbox) {
    m.insert("links".into(), link_names(&s.host));
    let host = s.host.name.as_str();
    for (what, args) in [
        ("host ip -o link", &["ip", "-n", host, "-o", "link"][..]),
        // IPv4 only: IPv6 link-local addresses change state (DAD) on their own.
        (
            "host ip -4 -o addr",
            &["ip", "-n", host, "-4", "-o", "addr"],
        ),
        ("host ip route", &["ip", "-n", host, "route"]),
    ] {
        m.insert(what.into(), rig::must(args));
    }
    m.insert(
        "lo addresses".into(),
        s.host.must(&["ip", "-o", "addr", "show", "dev", "lo"]),
    );
    m.insert("routes".into(), s.host.must(&["ip", "route", "show"]));
    let namespaces = sandbox_namespaces(s);
    m.insert("namespaces".into(), namespaces.join(" "));
    // What Weir put inside each container namespace (eth0, its address, its routes).
    for ns in &namespaces {
        for (what, args) in [
            ("ip -o link", &["ip", "-n", ns, "-o", "link"][..]),
            ("ip -o addr", &["ip", "-n", ns, "-o", "addr"]),
            ("ip route", &["ip", "-n", ns, "route"]),
        ] {
            m.insert(format!("{ns} {what}"), rig::must(args));
        }
    }
    // The sandbox's own namespaces are still there.
    let all = all_namespaces();
    m.insert(
        "sandbox namespaces".into(),
        [&s.host.name, &s.ext.name]
            .iter()
            .map(|n| format!("{n}={}", all.contains(n)))
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// Sorted names of the entries of `dir` (empty if it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every entry of a pinned map, through `bpftool` so the value layout does not matter, in
/// a canonical order (a hash map's iteration order is not part of its content).
fn map_dump(pin: &Path) -> String {
    let mut entries: Vec<String> = rig::maps::entries(pin)
        .iter()
        .map(|e| e.to_string())
        .collect();
    entries.sort();
    format!("{} entries: {}", entries.len(), entries.join(" "))
}

/// A file outside the state dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(s: &Sandbox, what: &str, content: &str) -> Self {
        let p = std::env::temp_dir().join(format!("weir-{what}-{}", s.id));
        std::fs::write(&p, content).unwrap();
        Self(p)
    }

    pub fn path(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `index: name` of every link in `ns` (no counters or flags that traffic could change).
pub fn link_names(ns: &Netns) -> String {
    ns.must(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some(format!("{}:{}", f.next()?.trim(), f.next()?.trim()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every named namespace (`ls /run/netns`).
fn all_namespaces() -> Vec<String> {
    dir_names(Path::new("/run/netns"))
}

/// Named namespaces belonging to the sandbox's containers.
pub fn sandbox_namespaces(s: &Sandbox) -> Vec<String> {
    all_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", s.id)))
        .collect()
}

/// `control` with the sandbox's state dir but a free choice of everything else.
pub fn raw(s: &Sandbox, global: &[&str], args: &[&str]) -> Output {
    s.bare_command()
        .args(global)
        .args(args)
        .output()
        .expect("running control")
}

/// Asserts a failed run printed exactly one line on stderr; returns it.
pub fn one_error_line(o: &Output, what: &str) -> String {
    assert!(!o.status.success(), "{what} should have failed");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line, got {err:?}"
    );
    lines[0].to_string()
}

/// What differs between two snapshots, each difference shown around where it starts.
pub fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for k in before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
    {
        let (b, a) = (before.get(k), after.get(k));
        if b != a {
            let (b, a) = (
                b.map(String::as_str).unwrap_or("(missing)"),
                a.map(String::as_str).unwrap_or("(missing)"),
            );
            out.push(format!(
                "{k}:\n  before {}\n  after  {}",
                excerpt(b, a),
                excerpt(a, b)
            ));
        }
    }
    out
}

/// `s` around the first place it differs from `other`.
fn excerpt(s: &str, other: &str) -> String {
    let at = s
        .char_indices()
        .zip(other.chars())
        .find(|((_, x), y)| x != y)
        .map(|((i, _), _)| i)
        .unwrap_or(s.len().min(other.len()));
    let from = s.floor_char_boundary(at.saturating_sub(80));
    let to = s.ceil_char_boundary((at + 160).min(s.len()));
    format!(
        "{}{}{}",
        if from > 0 { "…" } else { "" },
        &s[from..to],
        if to < s.len() { "…" } else { "" }
    )
}
