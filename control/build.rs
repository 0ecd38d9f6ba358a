//! Builds the eBPF programs (datapath-ebpf) with Debian's Rust toolchain in /usr, which ships a
//! prebuilt `core` for bpfel-unknown-none (rustup's nightly here lacks rust-src; see
//! ../shared/DESIGN.md §1), and leaves the object in OUT_DIR for `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "datapath-ebpf")
        .ok_or_else(|| anyhow!("datapath-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let toolchain = std::env::var("WEIR_EBPF_TOOLCHAIN").unwrap_or_else(|_| "/usr".into());
    println!("cargo:rerun-if-env-changed=WEIR_EBPF_TOOLCHAIN");
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), ..Default::default() }],
        Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs failed; run `cargo xtask setup` first (installs Debian's rustc-web, libstd-rust-web-dev-bpf and bpf-linker)")
}
