//! Issue #6 (bad input): every malformed or conflicting command fails with one line on stderr
//! and a non-zero exit, and leaves nothing behind — the listings, the kernel objects and the
//! maps are exactly as before. The state file is written atomically and never silently reset.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use control::instance::Instance;
use rig::{Netns, Sandbox, net, text};
use weir_common::maps as names;

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

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
fn snapshot(s: &Sandbox) -> BTreeMap<String, String> {
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
    m
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
    let o = rig::run(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        pin.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "bpftool on {}: {}",
        pin.display(),
        text(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bpftool output for {}: {e}", pin.display()));
    let mut entries: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("bpftool output for {}: not a list", pin.display()))
        .iter()
        .map(|e| e.to_string())
        .collect();
    entries.sort();
    format!("{} entries: {}", entries.len(), entries.join(" "))
}

/// A file outside the state dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(s: &Sandbox, what: &str, content: &str) -> Self {
        let p = std::env::temp_dir().join(format!("weir-{what}-{}", s.id));
        std::fs::write(&p, content).unwrap();
        Self(p)
    }

    fn path(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `index: name` of every link in `ns` (no counters or flags that traffic could change).
fn link_names(ns: &Netns) -> String {
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
fn sandbox_namespaces(s: &Sandbox) -> Vec<String> {
    all_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", s.id)))
        .collect()
}

/// `control` with the sandbox's state dir but a free choice of everything else.
fn raw(s: &Sandbox, global: &[&str], args: &[&str]) -> Output {
    Command::new(CONTROL)
        .arg("--state-dir")
        .arg(&s.state_dir)
        .args(global)
        .args(args)
        .env_remove("WEIR_STATE_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("running control")
}

/// Asserts a failed run printed exactly one line on stderr; returns it.
fn one_error_line(o: &Output, what: &str) -> String {
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

/// A bad command and a fragment its error message must contain (so the right check fired).
struct Case {
    args: Vec<String>,
    says: &'static str,
}

fn case(args: &[&str], says: &'static str) -> Case {
    Case {
        args: args.iter().map(|a| a.to_string()).collect(),
        says,
    }
}

/// Runs every case against `s`, checking one stderr line, the expected message and that
/// nothing changed. Each case is compared with the snapshot taken just before it, so a change
/// is blamed on the command that made it. Returns how many ran.
fn run_cases(s: &Sandbox, cases: &[Case]) -> usize {
    let mut before = snapshot(s);
    let mut failures = Vec::new();
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(|a| a.as_str()).collect();
        let line = s.fails(&args);
        if !line.to_lowercase().contains(&c.says.to_lowercase()) {
            failures.push(format!("{args:?}: {line:?} does not mention {:?}", c.says));
        }
        let after = snapshot(s);
        for change in changes(&before, &after) {
            failures.push(format!("{args:?} changed {change}"));
        }
        before = after;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}

/// What differs between two snapshots, each difference shown around where it starts.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
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

#[test]
fn bad_input_fails_cleanly_on_a_live_host() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.80.0.0/24", &[]);
    let other = s.network("o", "10.80.8.0/24", &[]);
    let a = s.container("a", &n, &["--publish", "8080:80"]);
    let b = s.container("b", &n, &[]);
    // c on a network connected to n: the links map and a second network have content too.
    let c = s.container("c", &other, &[]);
    s.ok(&["network", "connect", &n, &other]);
    s.ok(&["isolate", &a.name, &b.name]);
    s.ok(&["allow", &a.name, &b.name, "--port", "443/tcp"]);
    let aip = s.ip_of(&a);
    // A host service holding a port Weir must not steal.
    let _held = net::tcp_listener(&s.host, 9500);
    let long = "x".repeat(300);
    // One over the limit (63).
    let just_too_long = "y".repeat(64);
    let (an, bn, cn) = (a.name.as_str(), b.name.as_str(), c.name.as_str());
    // Rule files with one bad line among good, new ones: all or nothing, no rule is added.
    let rules_file = TempFile::new(
        &s,
        "rules",
        &format!("isolate {an} {bn}\nallow {an} {bn} --port 80/tcp\nisolate {an} nobody-here\n"),
    );
    let rf = rules_file.path();
    let bad_middle = TempFile::new(
        &s,
        "rules-middle",
        &format!(
            "# new rules first\nisolate {bn} {cn}\nallow {cn} {an} --port 22/tcp\n\
             isolate {cn} ../etc\nisolate {an}\nallow {an} {cn}\n"
        ),
    );
    let bad_port = TempFile::new(
        &s,
        "rules-port",
        &format!("isolate {bn} {cn}\nallow {cn} {an} --port 70000/tcp\n"),
    );
    let bad_verb = TempFile::new(
        &s,
        "rules-verb",
        &format!("isolate {bn} {cn}\nisolate {cn}\nblock {an} {cn}\n"),
    );
    let bad_last = TempFile::new(
        &s,
        "rules-last",
        &format!("isolate {bn} {cn}\nallow {an} {cn}\nisolate {cn} {cn}\n"),
    );
    let (rm, rp, rv, rl) = (
        bad_middle.path(),
        bad_port.path(),
        bad_verb.path(),
        bad_last.path(),
    );
    let x = s.name("x");
    let cases = vec![
        // Names.
        case(
            &["network", "create", "a/b", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["network", "create", "..", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["network", "create", "../etc", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["network", "create", &long, "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["network", "create", "a b", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["container", "create", "a/b", "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", "..", "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", "../../tmp/x", "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", &long, "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", "", "--network", &n],
            "invalid container name",
        ),
        // Subnets.
        case(
            &["network", "create", &x, "--subnet", "10.81.0.0/33"],
            "invalid subnet",
        ),
        case(
            &["network", "create", &x, "--subnet", "10.81.0.0"],
            "invalid subnet",
        ),
        case(
            &["network", "create", &x, "--subnet", "300.1.1.0/24"],
            "invalid subnet",
        ),
        case(
            &["network", "create", &x, "--subnet", "banana"],
            "invalid subnet",
        ),
        case(
            &["network", "create", &x, "--subnet", "10.81.0.1/24"],
            "did you mean 10.81.0.0/24",
        ),
        case(
            &["network", "create", &x, "--subnet", "10.81.0.0/31"],
            "prefix",
        ),
        case(
            &["network", "create", &x, "--subnet", "127.0.0.0/8"],
            "not a unicast range",
        ),
        case(
            &["network", "create", &x, "--subnet", "224.1.0.0/16"],
            "not a unicast range",
        ),
        case(
            &["network", "create", &x, "--subnet", "10.80.0.0/16"],
            "overlaps network",
        ),
        case(
            &["network", "create", &x, "--subnet", "10.80.0.128/25"],
            "overlaps network",
        ),
        case(
            &["network", "create", &x, "--subnet", "198.18.0.0/24"],
            "overlaps host address",
        ),
        case(
            &["network", "create", &x, "--subnet", "198.16.0.0/12"],
            "overlaps host address",
        ),
        case(
            &["network", "create", &x, "--subnet", "198.18.0.128/25"],
            "overlaps host address",
        ),
        case(
            &["network", "create", &n, "--subnet", "10.82.0.0/24"],
            "already exists",
        ),
        // Networks.
        case(&["network", "rm", &n], "still has 2 container(s)"),
        case(&["network", "rm", "no-such-net"], "no network named"),
        case(
            &["network", "connect", &n, "no-such-net"],
            "no network named",
        ),
        case(&["network", "connect", &n, &n], "same network"),
        // Containers.
        case(
            &["container", "create", &x, "--network", "no-such-net"],
            "no network named",
        ),
        case(
            &["container", "create", an, "--network", &n],
            "already exists",
        ),
        case(
            &["container", "create", &s.ext.name, "--network", &n],
            "namespace",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--ip",
                "10.80.9.5",
            ],
            "outside network",
        ),
        case(
            &["container", "create", &x, "--network", &n, "--ip", &aip],
            "already used by container",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--ip",
                "10.80.0.1",
            ],
            "gateway",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--ip",
                "10.80.0.255",
            ],
            "broadcast",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--ip",
                "10.80.0.0",
            ],
            "network, broadcast",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--ip",
                "10.80.0.300",
            ],
            "invalid address",
        ),
        case(
            &["container", "rm", "no-such-container"],
            "no container named",
        ),
        // Ports (including a container create that must roll back after plumbing).
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "0:80",
            ],
            "invalid host port",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "70000:80",
            ],
            "invalid host port",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "8080:80",
            ],
            "already published",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "9001:80",
                "--publish",
                "9001:81",
            ],
            "given twice",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "9500:80",
            ],
            "in use",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &other,
                "--publish",
                "9002",
            ],
            "invalid port mapping",
        ),
        case(&["publish", an, "0:80"], "invalid host port"),
        case(&["publish", an, "8081:0"], "invalid container port"),
        case(&["publish", an, "8081:70000"], "invalid container port"),
        case(&["publish", an, "8081:80/sctp"], "invalid protocol"),
        case(&["publish", an, "8080:81"], "already published"),
        case(&["publish", bn, "8080:80"], "already published"),
        case(&["publish", bn, "9500:80"], "in use"),
        case(
            &["publish", bn, "9003:80", "--host-ip", "10.9.9.9"],
            "not an address of the host",
        ),
        case(
            &["publish", bn, "9003:80", "--host-ip", "nonsense"],
            "invalid host IP",
        ),
        case(
            &["publish", "no-such-container", "9004:80"],
            "no container named",
        ),
        case(&["unpublish", an, "0"], "invalid host port"),
        case(&["unpublish", an, "8080/sctp"], "invalid protocol"),
        case(
            &["unpublish", "no-such-container", "8080"],
            "no container named",
        ),
        // Rules.
        case(&["isolate", "no-such-container"], "no container named"),
        case(&["allow", an, "no-such-container"], "no container named"),
        case(&["allow", an, bn, "--port", "0/tcp"], "from 1 to 65535"),
        case(&["allow", an, bn, "--port", "80/icmp"], "invalid protocol"),
        case(&["isolate", an, an], "twice"),
        case(
            &["rules", "import", "/nonexistent/rules"],
            "cannot read rules file",
        ),
        case(&["rules", "import", &rf], "line 3"),
        case(&["rules", "import", &rm], "line 4"),
        case(&["rules", "import", &rp], "line 2"),
        case(&["rules", "import", &rv], "line 3"),
        case(&["rules", "import", &rl], "line 3"),
        case(
            &["conntrack", "flush", "--container", "no-such-container"],
            "no container named",
        ),
        // Names nothing was ever created with, everywhere a name is looked up ('/', '..',
        // spaces, 300 characters): refused, and no path is built from them.
        case(
            &["network", "create", "", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &["network", "create", ".hidden", "--subnet", "10.81.0.0/24"],
            "invalid network name",
        ),
        case(
            &[
                "network",
                "create",
                &just_too_long,
                "--subnet",
                "10.81.0.0/24",
            ],
            "invalid network name",
        ),
        case(
            &["container", "create", "a b", "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", &just_too_long, "--network", &n],
            "invalid container name",
        ),
        case(
            &["container", "create", &x, "--network", "../etc"],
            "no network named",
        ),
        case(
            &["container", "create", &x, "--network", &long],
            "no network named",
        ),
        case(&["container", "rm", "a/b"], "no container named"),
        case(&["container", "rm", ".."], "no container named"),
        case(&["container", "rm", "../../tmp/x"], "no container named"),
        case(&["container", "rm", "a b"], "no container named"),
        case(&["container", "rm", &long], "no container named"),
        case(&["network", "rm", "../etc"], "no network named"),
        case(&["network", "rm", "a b"], "no network named"),
        case(&["network", "rm", &long], "no network named"),
        case(&["network", "connect", &n, ".."], "no network named"),
        case(&["network", "connect", "a/b", &n], "no network named"),
        case(&["publish", "../x", "8081:80"], "no container named"),
        case(&["publish", &long, "8081:80"], "no container named"),
        case(&["unpublish", "a b", "8080"], "no container named"),
        case(&["isolate", "../x"], "no container named"),
        case(&["isolate", an, "a/b"], "no container named"),
        case(&["allow", an, &long], "no container named"),
        case(&["allow", "a b", an], "no container named"),
        case(
            &["conntrack", "flush", "--container", ".."],
            "no container named",
        ),
        // Networks: removing one with containers (also connected to another), disconnecting.
        case(&["network", "rm", &other], "still has 1 container(s)"),
        case(
            &["network", "disconnect", &n, "no-such-net"],
            "no network named",
        ),
        case(
            &["network", "disconnect", "no-such-net", &n],
            "no network named",
        ),
        case(&["network", "disconnect", &n, &n], "same network"),
        case(&["network", "disconnect", &n], "required"),
        // Undoing rules: the same checks as making them.
        case(&["unisolate", "no-such-container"], "no container named"),
        case(
            &["unisolate", an, "no-such-container"],
            "no container named",
        ),
        case(
            &["unisolate", "no-such-container", an],
            "no container named",
        ),
        case(&["unisolate", an, an], "twice"),
        case(&["disallow", an, "no-such-container"], "no container named"),
        case(&["disallow", "no-such-container", bn], "no container named"),
        case(&["disallow", an, an], "twice"),
        case(&["disallow", an], "required"),
        case(&["disallow", an, bn, "--port", "0/tcp"], "from 1 to 65535"),
        case(&["disallow", an, bn, "--port", "70000"], "from 1 to 65535"),
        case(
            &["disallow", an, bn, "--port", "443/icmp"],
            "invalid protocol",
        ),
        case(&["disallow", an, bn, "--port", "https"], "from 1 to 65535"),
        case(&["disallow", an, bn, "--port=-1/tcp"], "from 1 to 65535"),
        case(&["allow", an, bn, "--port", "70000/tcp"], "from 1 to 65535"),
        case(&["allow", an, bn, "--port", "0"], "from 1 to 65535"),
        case(&["allow", an], "required"),
        case(
            &["unpublish", an, "8080", "--host-ip", "nonsense"],
            "invalid host IP",
        ),
        case(
            &["unpublish", an, "8080", "--host-ip", "10.80.0.300"],
            "invalid host IP",
        ),
        // Published on every address, so not on this one alone.
        case(
            &["unpublish", an, "8080", "--host-ip", rig::UPLINK_IP],
            "without --host-ip",
        ),
        case(&["unpublish", an, "70000"], "invalid host port"),
        case(&["unpublish", an, "0/udp"], "invalid host port"),
        case(&["unpublish", an, "8080:80"], "invalid host port"),
        case(&["unpublish", an, ""], "invalid host port"),
        // Ports 0 and 70000 everywhere a port is read.
        case(&["publish", an, "70000:80"], "invalid host port"),
        case(&["publish", an, "0:0"], "invalid host port"),
        case(&["publish", an, "8081:80/"], "invalid protocol"),
        case(&["publish", an, "8081"], "invalid port mapping"),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "8081:0",
            ],
            "invalid container port",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "8081:70000",
            ],
            "invalid container port",
        ),
        case(
            &[
                "container",
                "create",
                &x,
                "--network",
                &n,
                "--publish",
                "0:0",
            ],
            "invalid host port",
        ),
        // init on the live host: nothing may change, not even the programs.
        case(
            &["init", "--uplink", "up0", "--ct-timeout", "bogus=5"],
            "unknown conntrack timeout",
        ),
        case(
            &["init", "--uplink", "up0", "--ct-timeout", "udp"],
            "expected NAME=SECONDS",
        ),
        case(
            &["init", "--uplink", "up0", "--ct-timeout", "udp=soon"],
            "must be a number",
        ),
        case(
            &["init", "--uplink", "up0", "--ct-timeout", "udp=0"],
            "out of range",
        ),
        case(
            &["init", "--uplink", "up0", "--snat-ports", "5000-4000"],
            "invalid port range",
        ),
        case(
            &["init", "--uplink", "up0", "--snat-ports", "0-100"],
            "invalid port",
        ),
        case(
            &["init", "--uplink", "up0", "--snat-ports", "1000-70000"],
            "invalid port",
        ),
        case(
            &["init", "--uplink", "up0", "--snat-ports", "many"],
            "invalid port range",
        ),
        case(
            &["init", "--uplink", "up0", "--snat-ports", "50000-61000"],
            "overlaps the host's ephemeral ports",
        ),
        case(
            &["init", "--uplink", "up0", "--conntrack-max", "10"],
            "out of range",
        ),
        case(
            &["init", "--uplink", "up0", "--conntrack-max", "128"],
            "only after `control down`",
        ),
        case(&["init", "--uplink", "nope0"], "no interface"),
        // Usage errors clap catches before anything runs: one line too.
        case(&["init", "--conntrack-max", "lots"], "invalid value"),
        case(&["init", "--xdp", "maybe"], "invalid value"),
        case(&["container", "create", &x], "--network"),
        case(&["network", "create", &x, "-x"], "unexpected argument"),
        case(&["frobnicate"], "unrecognized subcommand"),
        case(&["monitor", "--duration", "0"], "--duration"),
        case(&["monitor", "--count", "some"], "invalid value"),
    ];
    let ran = run_cases(&s, &cases);
    eprintln!("{ran} bad-input cases on a live host");

    // Another host namespace than the one recorded at init.
    let o = raw(&s, &["--host-netns", &s.ext.name], &["network", "ls"]);
    assert!(one_error_line(&o, "wrong --host-netns").contains("serves host namespace"));

    // Undoing what is not there, or adding what is: success, a confirmation, no change.
    let before = snapshot(&s);
    let present = TempFile::new(
        &s,
        "rules-present",
        &format!("# both present\nisolate {bn} {an}\nallow {an} {bn} --port 443/tcp\n"),
    );
    for (args, says) in [
        (&["unisolate", an, cn][..], "no such rule: isolate"),
        // A prefix of the line `isolate A B` is not the rule `isolate A`.
        (&["unisolate", an], "no such rule: isolate"),
        (&["disallow", an, bn], "no such rule: allow"),
        (
            &["disallow", an, bn, "--port", "443/udp"],
            "no such rule: allow",
        ),
        (&["isolate", bn, an], "rule already present: isolate"),
        (
            &["allow", an, bn, "--port", "443/tcp"],
            "rule already present: allow",
        ),
        (&["network", "connect", &other, &n], "already connected"),
        (
            &["unpublish", an, "9999"],
            "is not published: nothing to do",
        ),
        (
            &["unpublish", an, "8080/udp"],
            "is not published: nothing to do",
        ),
        // Held by another container: still nothing of this one's to undo, with a note.
        (
            &["unpublish", bn, "8080"],
            "8080/tcp is not published (it is published on * to",
        ),
        (
            &["unpublish", cn, "8080"],
            "is not published (it is published on",
        ),
        (&["rules", "import", &present.path()], "added 0 rule(s)"),
    ] {
        let out = s.ok(args);
        assert!(
            out.contains(says),
            "{args:?}: {out:?} does not say {says:?}"
        );
        let after = snapshot(&s);
        assert!(
            after == before,
            "{args:?} changed {}",
            changes(&before, &after).join("\n")
        );
    }

    // And everything still works: a pair no rule isolates reaches each other across the
    // connected networks, and the isolated pair is still refused by the datapath.
    let cip = s.ip_of(&c);
    assert!(net::ping(&b, &cip, 3), "b cannot reach c at {cip}");
    assert!(net::ping(&c, &aip, 3), "c cannot reach a at {aip}");
    let denied = s.drops("policy-denied");
    assert!(!net::ping(&a, &s.ip_of(&b), 1), "isolated a reached b");
    assert!(
        s.drops("policy-denied") > denied,
        "a -> b was not refused by policy"
    );
    assert!(s.ok(&["status"]).contains("healthy"));
    assert!(Netns::borrowed(&s.ext.name).run(&["true"]).status.success());
}

#[test]
fn commands_before_init_and_without_root() {
    let s = Sandbox::new(CONTROL);
    let n = s.name("n");
    let cases = [
        (&["network", "ls"][..], "not initialised"),
        (
            &["network", "create", &n, "--subnet", "10.83.0.0/24"],
            "not initialised",
        ),
        (
            &["container", "create", &n, "--network", &n],
            "not initialised",
        ),
        (&["container", "ls"], "not initialised"),
        (&["publish", &n, "8080:80"], "not initialised"),
        (&["isolate", &n], "not initialised"),
        (&["rules"], "not initialised"),
        (&["ports"], "not initialised"),
        (&["status"], "not initialised"),
        (&["stats"], "not initialised"),
        (&["conntrack"], "not initialised"),
        (&["gc"], "not initialised"),
        (&["monitor", "--count", "1"], "not initialised"),
        (&["init", "--uplink", "nope0"], "no interface"),
        (
            &["init", "--uplink", "up0", "--ct-timeout", "nope=1"],
            "unknown conntrack timeout",
        ),
    ];
    let pins = Instance::new(&s.state_dir).unwrap().pin_dir;
    for (args, says) in cases {
        let line = s.fails(args);
        assert!(line.contains(says), "{args:?}: {line}");
        assert!(
            !s.state_dir.join("state.json").exists(),
            "{args:?} wrote state"
        );
        assert!(
            !pins.exists(),
            "{args:?} pinned something in {}",
            pins.display()
        );
        assert!(!link_names(&s.host).contains("wr-"), "{args:?} made a veth");
        assert!(
            sandbox_namespaces(&s).is_empty(),
            "{args:?} made a namespace"
        );
    }
    // A host namespace that does not exist.
    let o = raw(&s, &["--host-netns", "weir-no-such-ns"], &["init"]);
    assert!(one_error_line(&o, "missing host netns").contains("does not exist"));

    // Not root: refused before anything is touched.
    s.init(&[]);
    let before = snapshot(&s);
    for args in [
        &["status"][..],
        &["network", "create", &n, "--subnet", "10.83.0.0/24"],
        &["down", "--force"],
        &["init"],
    ] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", CONTROL])
            .arg("--state-dir")
            .arg(&s.state_dir)
            .args(["--host-netns", &s.host.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv");
        let line = one_error_line(&o, &format!("{args:?} as nobody"));
        assert!(line.contains("must run as root"), "{args:?}: {line}");
    }
    let after = snapshot(&s);
    assert!(
        after == before,
        "a refused command changed {}",
        changes(&before, &after).join("\n")
    );
}

#[test]
fn state_file_is_atomic_and_never_silently_reset() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.84.0.0/24", &[]);
    let a = s.container("a", &n, &["--publish", "8080:80"]);
    let state = s.state_dir.join("state.json");
    // A temp file a killed writer left behind is ignored and does not disturb later writes.
    let leftover = s.state_dir.join("state.json.tmp.999999");
    std::fs::write(&leftover, b"{ half written").unwrap();
    let b = s.container("b", &n, &[]);
    let listed = s.json(&["container", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        s.json(&["status"])["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_file(&leftover);
    // Written whole: the file parses after every command.
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state).unwrap()).unwrap();

    // Corrupt: every command reports it (naming the file) and leaves it as it is.
    let good = std::fs::read(&state).unwrap();
    let corrupt = b"{\"version\": 1, \"networks\": {".to_vec();
    std::fs::write(&state, &corrupt).unwrap();
    for args in [
        &["network", "ls"][..],
        &["status"],
        &["container", "create", &s.name("c"), "--network", &n],
        &["init", "--uplink", "up0"],
        &["down"],
    ] {
        let line = s.fails(args);
        assert!(
            line.contains("state file") && line.contains(state.to_str().unwrap()),
            "{args:?}: {line}"
        );
        assert_eq!(
            std::fs::read(&state).unwrap(),
            corrupt,
            "{args:?} rewrote the state file"
        );
    }
    assert!(
        b.path().exists() && a.path().exists(),
        "containers vanished"
    );

    // A newer version than this control understands: refused, named, untouched.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["version"] = 99.into();
    let newer = serde_json::to_vec(&v).unwrap();
    std::fs::write(&state, &newer).unwrap();
    let line = s.fails(&["container", "ls"]);
    assert!(
        line.contains("version 99") && line.contains("state file"),
        "{line}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), newer);

    // down --force still removes everything.
    std::fs::write(&state, &corrupt).unwrap();
    let pins = Instance::new(&s.state_dir).unwrap().pin_dir;
    let o = s.control(&["down", "--force"]);
    assert!(o.status.success(), "down --force: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("state"),
        "no warning about the state: {}",
        text(&o.stderr)
    );
    assert!(!s.state_dir.exists(), "state dir left");
    assert!(!pins.exists(), "pins left in {}", pins.display());
    assert!(!link_names(&s.host).contains("wr-"), "veths left");
    let lo = s.host.must(&["ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(!lo.contains("10.84.0.1/"), "gateway address left: {lo}");
    // Without the state file the namespaces cannot be named; only the veths and pins go.
    // The sandbox's own cleanup removes them; they must hold no Weir link any more.
    for c in [&a, &b] {
        if c.path().exists() {
            let links = link_names(c);
            assert!(!links.contains("eth0"), "{} still wired: {links}", c.name);
        }
    }
    assert!(Path::new(&s.host.path()).exists());
}
