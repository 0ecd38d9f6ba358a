//! Attachments as pinned bpf_links: they outlive every `control` process, and re-running
//! `control init` swaps programs under them atomically.

use std::{fs::File, path::Path};

use aya::programs::{
    CgroupAttachMode, LinkOrder, TcAttachType, XdpMode,
    links::{FdLink, PinnedLink},
    tc::TcAttachOptions,
};

use super::{bpfsys, classifier, sock_program, xdp};
use crate::{
    error::{Context, Result},
    instance::Instance,
};

/// Attaches the pinned classifier `prog` to `ifname`'s TC ingress or egress (tcx, appended
/// after any existing program) and pins the link as `link`; if that link exists, swaps its
/// program.
/// Whether the link pinned at `link_pin` is attached to `ifname` (then its program is swapped
/// in place). A pin on another interface — left by an init killed while it moved the uplink —
/// or on one that is gone is removed, so the caller attaches afresh.
fn on_interface(link_pin: &Path, ifname: &str) -> Result<bool> {
    if !link_pin.exists() {
        return Ok(false);
    }
    let want = nix::net::if_::if_nametoindex(ifname).unwrap_or(0);
    if want != 0 && bpfsys::link_ifindex(link_pin).ok() == Some(want) {
        return Ok(true);
    }
    std::fs::remove_file(link_pin).ctx(|| format!("removing stale pin {}", link_pin.display()))?;
    Ok(false)
}

pub fn tc_attach(
    inst: &Instance,
    prog: &str,
    ifname: &str,
    dir: TcAttachType,
    link: &str,
) -> Result<()> {
    let link_pin = inst.link_pin(link);
    if on_interface(&link_pin, ifname)? {
        return bpfsys::link_update(&link_pin, &inst.prog_pin(prog));
    }
    let mut p = classifier(inst, prog)?;
    let id = p
        .attach_with_options(ifname, dir, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .ctx(|| format!("attaching {prog} to {ifname} (tcx {dir:?})"))?;
    let l = p.take_link(id).ctx(|| format!("taking the {prog} link"))?;
    let fd: FdLink = l
        .try_into()
        .ctx(|| format!("{prog} on {ifname} is not a bpf_link"))?;
    pin(fd, &link_pin)
}

/// Attaches the uplink XDP program in native (driver) mode, or generic mode when `skb`.
pub fn xdp_attach(inst: &Instance, ifname: &str, link: &str, skb: bool) -> Result<()> {
    let link_pin = inst.link_pin(link);
    if on_interface(&link_pin, ifname)? {
        return bpfsys::link_update(&link_pin, &inst.prog_pin(super::UPLINK_XDP));
    }
    let mut p = xdp(inst)?;
    let flags = if skb { XdpMode::Skb } else { XdpMode::Driver };
    let id = p
        .attach(ifname, flags)
        .ctx(|| format!("attaching XDP to {ifname}"))?;
    let l = p.take_link(id).ctx(|| "taking the XDP link".to_string())?;
    let fd: FdLink = l
        .try_into()
        .ctx(|| format!("XDP on {ifname} is not a bpf_link"))?;
    pin(fd, &link_pin)
}

/// Attaches a sock_addr program to the root of the cgroup v2 hierarchy at `cgroup`.
pub fn cgroup_attach(inst: &Instance, prog: &str, cgroup: &Path) -> Result<()> {
    let link_pin = inst.link_pin(prog);
    if link_pin.exists() {
        return bpfsys::link_update(&link_pin, &inst.prog_pin(prog));
    }
    let mut p = sock_program(inst, prog)?;
    let cg = File::open(cgroup).ctx(|| format!("opening cgroup {}", cgroup.display()))?;
    // bpf_link attachments to a cgroup always allow multiple programs (flags must be 0).
    let id = p
        .attach(&cg, CgroupAttachMode::Single)
        .ctx(|| format!("attaching {prog} to {}", cgroup.display()))?;
    let l = p.take_link(id).ctx(|| format!("taking the {prog} link"))?;
    let fd: FdLink = l.try_into().ctx(|| format!("{prog} is not a bpf_link"))?;
    pin(fd, &link_pin)
}

fn pin(fd: FdLink, path: &Path) -> Result<()> {
    fd.pin(path)
        .map(|_| ())
        .ctx(|| format!("pinning link {}", path.display()))
}

/// Removes a pinned link; the attachment goes away with its last reference. Absent is fine.
pub fn unpin(inst: &Instance, link: &str) -> Result<()> {
    let p = inst.link_pin(link);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::Other(anyhow::anyhow!(
            "unpinning {}: {e}",
            p.display()
        ))),
    }
}

/// The program id behind a pinned link, if the link exists and is live.
pub fn program_id(inst: &Instance, link: &str) -> Option<u32> {
    let p = inst.link_pin(link);
    let l = PinnedLink::from_pin(&p).ok()?;
    let fd: FdLink = l.into();
    fd.info().ok().map(|i| i.program_id())
}

/// Link pin name of a container's from_container attachment (host-side veth ingress).
pub fn container_link(identity: u32) -> String {
    format!("c{identity}")
}

/// Link pin name of a container's to_container attachment (host-side veth egress).
pub fn container_egress_link(identity: u32) -> String {
    format!("e{identity}")
}

/// Attaches (or, on re-init, updates) both programs of a container's host-side veth.
pub fn container_attach(inst: &Instance, identity: u32, host_if: &str) -> Result<()> {
    tc_attach(
        inst,
        super::FROM_CONTAINER,
        host_if,
        TcAttachType::Ingress,
        &container_link(identity),
    )?;
    tc_attach(
        inst,
        super::TO_CONTAINER,
        host_if,
        TcAttachType::Egress,
        &container_egress_link(identity),
    )
}

/// Detaches both programs of a container's host-side veth.
pub fn container_detach(inst: &Instance, identity: u32) -> Result<()> {
    unpin(inst, &container_link(identity))?;
    unpin(inst, &container_egress_link(identity))
}
