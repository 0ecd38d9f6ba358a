//! Idempotent machine setup, following ../shared/DESIGN.md §1: Debian's rustc-web (which ships
//! a prebuilt `core` for bpfel-unknown-none), LLVM of the same major version, bpf-linker built
//! against it, and the tools the tests and the bench drive.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Tools the tests and the bench use (all real peers, no mocks).
const TOOLS: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "curl",
    "iperf3",
    "sockperf",
    "wrk",
    "nginx-light",
    "iptables",
    "nftables",
    "conntrack",
    "bpftool",
    "tcpdump",
    "netavark",
    "containernetworking-plugins",
    "ethtool",
    "netcat-openbsd",
    "socat",
    "python3",
    "python3-scapy",
    "podman",
    "busybox-static",
    "runc",
    // promtool, which the metrics tests check `control metrics` with.
    "prometheus",
    // dockerd and its client for weir-docker's tests and the bench's docker workload, which
    // start their own dockerd in a sandbox namespace (the package's docker.service is never
    // started: NoServiceStarts).
    "docker.io",
    // systemd-analyze, which checks the units in dist/systemd.
    "systemd",
];

const TOOLCHAIN: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
const LLVM_DEPS: &[&str] = &["zlib1g-dev", "libzstd-dev", "libxml2-dev"];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("setup installs packages and the tests create network namespaces: run as root");
    }
    let mut want: Vec<String> = TOOLCHAIN
        .iter()
        .chain(TOOLS)
        .map(|s| s.to_string())
        .collect();
    apt_install(&want)?;
    let llvm = llvm_major()?;
    want = LLVM_DEPS.iter().map(|s| s.to_string()).collect();
    want.push(format!("llvm-{llvm}-dev"));
    apt_install(&want)?;
    bpf_linker(&llvm)?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(pkgs: &[String]) -> Result<()> {
    let missing: Vec<&String> = pkgs.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "setup: installing {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ok = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("apt-get update failed");
    }
    // Packages such as prometheus ship a service: never let an install start one here.
    let _guard = NoServiceStarts::new()?;
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing.iter().map(|s| s.as_str()))
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("apt-get install failed");
    }
    Ok(())
}

/// The LLVM major version Debian's rustc was built with (read, never hard-coded).
fn llvm_major() -> Result<String> {
    let out = Command::new("/usr/bin/rustc")
        .arg("-vV")
        .output()
        .context("running /usr/bin/rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("no LLVM version in /usr/bin/rustc -vV")?;
    Ok(v.to_string())
}

fn cargo_bin() -> std::path::PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cargo")
        });
    home.join("bin")
}

/// PATH with cargo's bin directory (where bpf-linker lands) in front.
pub fn path_with_cargo_bin() -> String {
    format!(
        "{}:{}",
        cargo_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn bpf_linker(llvm: &str) -> Result<()> {
    let have = Command::new(cargo_bin().join("bpf-linker"))
        .arg("--version")
        .output();
    if let Ok(o) = have
        && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (about a minute)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm}"))
        // Without it the build finds the base image's LLVM 14 ("unable to find library -lLLVM").
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}"))
        .status()
        .context("running cargo install bpf-linker")?
        .success();
    if !ok {
        bail!("installing bpf-linker failed");
    }
    Ok(())
}

/// While alive, Debian's maintainer scripts start no service (invoke-rc.d asks
/// /usr/sbin/policy-rc.d, and 101 means "not allowed"). Only a file this guard wrote is
/// removed again: a policy the machine already has stays as it was.
struct NoServiceStarts(Option<&'static str>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn new() -> Result<Self> {
        if std::path::Path::new(Self::PATH).exists() {
            return Ok(Self(None));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            Self::PATH,
            "#!/bin/sh\n# written by cargo xtask setup for one apt-get run\nexit 101\n",
        )
        .with_context(|| format!("writing {}", Self::PATH))?;
        std::fs::set_permissions(Self::PATH, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self(Some(Self::PATH)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
