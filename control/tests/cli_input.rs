//! Issue #6 (bad input): every malformed or conflicting command fails with one line on stderr
//! and a non-zero exit, and leaves nothing behind — the listings, the kernel objects and the
//! maps are exactly as before. The state file is written atomically and never silently reset.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output, Stdio},
};

use control::instance::Instance;
use rig::{Netns, Sandbox, net, text};
use weir_common::maps as names;

const CONTROL: &str = env!("CARGO_BIN_EXE_control");

/// What a failed command must not change: the user-visible listings, the host namespace's
/// links, gateway addresses and routes, the sandbox's namespaces and the size of every map.
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
    // A refused `init` must not even replace the programs.
    m.insert(
        "programs".into(),
        s.json(&["status"])["programs"].to_string(),
    );
    m.insert("links".into(), link_names(&s.host));
    m.insert(
        "lo addresses".into(),
        s.host.must(&["ip", "-o", "addr", "show", "dev", "lo"]),
    );
    m.insert("routes".into(), s.host.must(&["ip", "route", "show"]));
    m.insert("namespaces".into(), sandbox_namespaces(s).join(" "));
    let inst = Instance::new(&s.state_dir).expect("instance");
    for name in [
        names::ENDPOINTS,
        names::PUBLISH,
        names::POLICY,
        names::HOST_ADDRS,
        names::NET_LINKS,
        names::SUBNETS,
    ] {
        m.insert(format!("map {name}"), map_len(&inst, name).to_string());
    }
    m.insert(
        "journal".into(),
        s.state_dir.join("journal").exists().to_string(),
    );
    m
}

/// Entries of a pinned hash map, counted through `bpftool` so the value layout does not matter.
fn map_len(inst: &Instance, name: &str) -> usize {
    let o = rig::run(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        inst.map_pin(name).to_str().unwrap(),
    ]);
    assert!(o.status.success(), "bpftool on {name}: {}", text(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or_else(|| panic!("bpftool output for {name}"))
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

/// Named namespaces belonging to the sandbox's containers.
fn sandbox_namespaces(s: &Sandbox) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{}-", s.id)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
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
/// nothing changed. Returns how many ran.
fn run_cases(s: &Sandbox, cases: &[Case]) -> usize {
    let before = snapshot(s);
    let mut failures = Vec::new();
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(|a| a.as_str()).collect();
        let line = s.fails(&args);
        if !line.to_lowercase().contains(&c.says.to_lowercase()) {
            failures.push(format!("{args:?}: {line:?} does not mention {:?}", c.says));
        }
        let after = snapshot(s);
        for (k, v) in &before {
            if after.get(k) != Some(v) {
                failures.push(format!(
                    "{args:?} changed {k}:\n  before {v}\n  after  {}",
                    after.get(k).map(String::as_str).unwrap_or("(missing)")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}

#[test]
fn bad_input_fails_cleanly_on_a_live_host() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.80.0.0/24", &[]);
    let other = s.network("o", "10.80.8.0/24", &[]);
    let a = s.container("a", &n, &["--publish", "8080:80"]);
    let b = s.container("b", &n, &[]);
    s.ok(&["isolate", &a.name, &b.name]);
    let aip = s.ip_of(&a);
    // A host service holding a port Weir must not steal.
    let _held = net::tcp_listener(&s.host, 9500);
    let long = "x".repeat(300);
    let rules_file = std::env::temp_dir().join(format!("weir-rules-{}", s.id));
    std::fs::write(
        &rules_file,
        format!(
            "isolate {a} {b}\nallow {a} {b} --port 80/tcp\nisolate {a} nobody-here\n",
            a = a.name,
            b = b.name
        ),
    )
    .unwrap();
    let rf = rules_file.to_str().unwrap().to_string();
    let x = s.name("x");
    let (an, bn) = (a.name.as_str(), b.name.as_str());
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
        case(&["unpublish", an, "9999"], "no published host port"),
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
        case(
            &["conntrack", "flush", "--container", "no-such-container"],
            "no container named",
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
    let _ = std::fs::remove_file(&rules_file);

    // Another host namespace than the one recorded at init.
    let o = raw(&s, &["--host-netns", &s.ext.name], &["network", "ls"]);
    assert!(one_error_line(&o, "wrong --host-netns").contains("serves host namespace"));
    // And everything still works.
    assert!(net::ping(&a, &s.ip_of(&b), 1) || s.drops("policy-denied") > 0);
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
    assert_eq!(snapshot(&s), before);
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
