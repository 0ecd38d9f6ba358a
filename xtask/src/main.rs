//! `cargo xtask <command>`: the project's entry points.
//!
//!   setup  install what building and testing need (Debian packages, bpf-linker); idempotent
//!   build  setup, then build everything (the eBPF object is embedded in `control`)
//!   demo   setup, build, run a sandboxed demo with containers, traffic and counters
//!   test   setup, build, run every test
//!   bench  setup, build, run the benchmark (`--quick` for a smoke run)

mod demo;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Weir's build, demo, test and bench entry points"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing Debian packages and bpf-linker (skips what is present).
    Setup,
    /// Setup, then build the workspace in release mode.
    Build,
    /// Setup, build, and run a sandboxed demo (network namespaces only; nothing on the real host).
    Demo,
    /// Setup, build, and run every test (unit, datapath, integration). Extra args go to `cargo test`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, and run the benchmark. Args go to the bench binary (try `--help`).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::run()?;
            cargo(&["build", "--release"])
        }
        Cmd::Demo => {
            setup::run()?;
            cargo(&["build", "--release", "-p", "control"])?;
            demo::run(&workspace_root()?.join("target/release/control"))
        }
        Cmd::Test { args } => {
            setup::run()?;
            let mut a = vec!["test", "--no-fail-fast"];
            a.extend(args.iter().map(String::as_str));
            cargo(&a)
        }
        Cmd::Bench { args } => {
            setup::run()?;
            cargo(&[
                "build",
                "--release",
                "-p",
                "control",
                "-p",
                "weir-docker",
                "-p",
                "bench",
            ])?;
            let root = workspace_root()?;
            let status = Command::new(root.join("target/release/bench"))
                .args(&args)
                .env("WEIR_CONTROL", root.join("target/release/control"))
                .env("WEIR_DOCKER", root.join("target/release/weir-docker"))
                .status()
                .context("running the bench")?;
            if !status.success() {
                bail!("bench failed");
            }
            Ok(())
        }
    }
}

pub fn workspace_root() -> Result<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask has no parent dir")?
        .to_path_buf())
}

/// Runs cargo (the one running us) in the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root()?)
        .env("PATH", setup::path_with_cargo_bin())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}
