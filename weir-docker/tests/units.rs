//! The systemd units in dist/systemd: valid for systemd (`systemd-analyze verify`, with the
//! binaries this build made), and ordered so that Weir's datapath and the driver are up
//! before dockerd restores containers.

use std::path::Path;

const DRIVER: &str = env!("CARGO_BIN_EXE_weir-docker");

fn unit(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/systemd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key=value` lines of a unit (the last one wins, as systemd reads them).
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn units_verify_and_start_before_docker() {
    let init = unit("weir-init.service");
    let driver = unit("weir-docker.service");
    assert!(
        values(&init, "Before").contains(&"docker.service"),
        "{init}"
    );
    assert!(
        values(&init, "Before").contains(&"weir-docker.service"),
        "{init}"
    );
    assert!(
        values(&driver, "Before").contains(&"docker.service"),
        "{driver}"
    );
    assert!(
        values(&driver, "After").contains(&"weir-init.service"),
        "{driver}"
    );
    assert!(
        values(&driver, "Requires").contains(&"weir-init.service"),
        "{driver}"
    );
    assert!(init.contains("ExecStart=/usr/local/bin/control init --uplink ${WEIR_UPLINK}"));
    assert!(driver.contains("ExecStart=/usr/local/bin/weir-docker"));

    // systemd-analyze checks the binaries exist: point the units at this build's.
    let control = rig::control_binary();
    let dir = std::env::temp_dir().join(rig::unique("weir-units-"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let mut paths = Vec::new();
    for (name, text) in [
        ("weir-init.service", &init),
        ("weir-docker.service", &driver),
    ] {
        let text = text
            .replace("/usr/local/bin/control", control)
            .replace("/usr/local/bin/weir-docker", DRIVER);
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p.display().to_string());
    }
    let mut args = vec!["verify"];
    args.extend(paths.iter().map(String::as_str));
    let o = std::process::Command::new("systemd-analyze")
        .args(&args)
        .output()
        .expect("systemd-analyze");
    let err = rig::text(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
