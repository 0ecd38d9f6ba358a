//! The state file is written atomically and never silently reset: a leftover temp file is
//! ignored, a corrupt or newer one is refused by every command and left as it is, and
//! `down --force` still removes everything.

use std::path::Path;

use control::instance::Instance;
use rig::{Sandbox, text};

use super::snapshot::link_names;
use crate::CONTROL;

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
