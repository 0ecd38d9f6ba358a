//! The `control` binary for the CNI tests: it belongs to another package, so cargo does not
//! build it for these tests (nor name it in `CARGO_BIN_EXE_*`). Built once, in the profile the
//! tests run in, where cargo puts it.

use std::{path::PathBuf, process::Command, sync::OnceLock};

pub fn control() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/<profile>/deps/<this test>: the binary lands in target/<profile>.
        let exe = std::env::current_exe().expect("locating the test binary");
        let dir: PathBuf = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .into();
        let mut args = vec!["build", "-q", "-p", "control", "--bin", "control"];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo to build control")
            .success();
        assert!(ok, "cargo {} failed", args.join(" "));
        dir.join("control").display().to_string()
    })
}
