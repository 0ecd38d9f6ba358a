//! Commands before `init` and without root fail with one line and touch nothing.

use std::process::{Command, Stdio};

use control::instance::Instance;
use rig::Sandbox;

use super::snapshot::{changes, link_names, one_error_line, raw, sandbox_namespaces, snapshot};
use crate::CONTROL;

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
