//! The eBPF side as the control plane sees it: the embedded object, loading and pinning the
//! programs, attaching them through pinned bpf_links, and the pinned maps.

pub mod bpfsys;
pub mod links;
pub mod maps;

use std::{fs, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{CgroupSockAddr, SchedClassifier, Xdp},
};
use weir_common::{SCHEMA_VERSION, maps as names};

use crate::{
    error::{Context, Error, Result},
    instance::{BPFFS, Instance},
};

/// The eBPF object built by build.rs from datapath-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir"));

pub const FROM_CONTAINER: &str = "from_container";
/// The new-flow half of from_container, reached by tail call (slot `TAIL_NEW_FLOW`).
pub const FROM_CONTAINER_NEW: &str = "from_container_new";
/// IPv6 from containers (slot `TAIL_FROM_CONTAINER6`) and its new-flow half
/// (`TAIL_FROM_CONTAINER6_NEW`).
pub const FROM_CONTAINER6: &str = "from_container6";
pub const FROM_CONTAINER6_NEW: &str = "from_container6_new";
/// IPv6 from the uplink (slot `TAIL_UPLINK6`).
pub const UPLINK_TC6: &str = "uplink_tc6";
/// The tail-called programs and their slots in `WEIR_TAILS`.
pub const TAILS: [(&str, u32); 4] = [
    (FROM_CONTAINER_NEW, names::TAIL_NEW_FLOW),
    (FROM_CONTAINER6, names::TAIL_FROM_CONTAINER6),
    (FROM_CONTAINER6_NEW, names::TAIL_FROM_CONTAINER6_NEW),
    (UPLINK_TC6, names::TAIL_UPLINK6),
];
pub const TO_CONTAINER: &str = "to_container";
pub const UPLINK_TC: &str = "uplink_tc";
pub const UPLINK_XDP: &str = "uplink_xdp";
/// `uplink_xdp` without its XDP-metadata marker, loaded (and pinned as `uplink_xdp`) where
/// the kernel refuses `bpf_xdp_adjust_meta` to XDP programs.
pub const UPLINK_XDP_PLAIN: &str = "uplink_xdp_plain";
/// The uplink's egress guard: nothing from a Weir network leaves untranslated.
pub const UPLINK_EGRESS: &str = "uplink_egress";
/// The links pinned on the uplink (named as their programs), moved when the uplink changes.
pub const UPLINK_LINKS: [&str; 3] = [UPLINK_TC, UPLINK_EGRESS, UPLINK_XDP];
pub const SOCK_CONNECT4: &str = "sock_connect4";
pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
pub const SOCK_CONNECT6: &str = "sock_connect6";
pub const SOCK_SENDMSG6: &str = "sock_sendmsg6";
pub const SOCK_RECVMSG6: &str = "sock_recvmsg6";
pub const SOCK_PROGRAMS: [&str; 6] = [
    SOCK_CONNECT4,
    SOCK_SENDMSG4,
    SOCK_RECVMSG4,
    SOCK_CONNECT6,
    SOCK_SENDMSG6,
    SOCK_RECVMSG6,
];
pub const PROGRAMS: [&str; 15] = [
    FROM_CONTAINER,
    FROM_CONTAINER_NEW,
    FROM_CONTAINER6,
    FROM_CONTAINER6_NEW,
    UPLINK_TC6,
    TO_CONTAINER,
    UPLINK_TC,
    UPLINK_XDP,
    UPLINK_EGRESS,
    SOCK_CONNECT4,
    SOCK_SENDMSG4,
    SOCK_RECVMSG4,
    SOCK_CONNECT6,
    SOCK_SENDMSG6,
    SOCK_RECVMSG6,
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs on /sys/fs/bpf when it is missing (a fresh mount namespace, a minimal host).
pub fn ensure_bpffs() -> Result<()> {
    let st = nix::sys::statfs::statfs(BPFFS)
        .map_err(|e| Error::NoBpf(format!("{BPFFS} is not available ({e}); is sysfs mounted?")))?;
    if st.filesystem_type().0 as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        Error::NoBpf(format!(
            "mounting bpffs on {BPFFS} failed ({e}): the kernel needs CONFIG_BPF_SYSCALL"
        ))
    })
}

/// How the embedded object's pinned maps disagree with the table in `weir_common::maps`
/// (none in a sound build; the unit test below keeps it so): a row missing from the object,
/// one of another layout, or a pinned map the table does not know.
pub fn object_mismatches() -> Result<Vec<String>> {
    let object = aya_obj::Object::parse(OBJECT)
        .map_err(|e| Error::NoBpf(format!("parsing the embedded eBPF object: {e}")))?;
    let mut bad = Vec::new();
    for spec in names::TABLE {
        let Some(def) = object.maps.get(spec.name) else {
            bad.push(format!("map {} is missing from the eBPF object", spec.name));
            continue;
        };
        let got = (
            def.map_type(),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
        );
        let want = (
            spec.kind.bpf_type(),
            spec.key_size,
            spec.value_size,
            spec.max_entries,
        );
        if got != want || def.pinning() != aya_obj::maps::PinningType::ByName {
            bad.push(format!(
                "map {} in the eBPF object is (type, key, value, entries) {got:?}, pinned {:?}; the table says {want:?}, pinned",
                spec.name,
                def.pinning()
            ));
        }
    }
    for (name, def) in &object.maps {
        if def.pinning() == aya_obj::maps::PinningType::ByName
            && !names::ALL.contains(&name.as_str())
        {
            bad.push(format!(
                "pinned map {name} of the eBPF object is not in the table"
            ));
        }
    }
    Ok(bad)
}

/// Checks pinned maps left by an earlier `init` against this build's schema and the table's
/// layouts: key and value sizes, map type and size (the conntrack map's size is
/// `conntrack_max`, when the instance's settings are known).
pub fn check_pinned(inst: &Instance, conntrack_max: Option<u32>) -> Result<()> {
    let dir = inst.maps_dir();
    if let Some(bad) = object_mismatches()?.into_iter().next() {
        return Err(Error::Other(anyhow::anyhow!(
            "this build is inconsistent: {bad}"
        )));
    }
    if let Some(cfg) = maps::read_config(inst)?
        && cfg.schema != SCHEMA_VERSION
    {
        return Err(Error::Incompatible(format!(
            "pinned maps in {} were written by datapath schema {} but this build uses {SCHEMA_VERSION}: run `control down` first (established flows will be cut)",
            dir.display(),
            cfg.schema
        )));
    }
    for spec in names::TABLE {
        let p = dir.join(spec.name);
        if !p.exists() {
            continue;
        }
        let info = MapData::from_pin(&p)
            .and_then(|m| m.info())
            .ctx(|| format!("reading pinned map {}", p.display()))?;
        let (k, v) = (spec.key_size, spec.value_size);
        if info.key_size() != k || info.value_size() != v {
            return Err(Error::Incompatible(format!(
                "pinned map {} has key/value sizes {}/{} but this build expects {k}/{v}: run `control down` first",
                p.display(),
                info.key_size(),
                info.value_size()
            )));
        }
        let have_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let want_entries = match (spec.name, conntrack_max) {
            (names::CONNTRACK | names::CONNTRACK6, Some(n)) => Some(n),
            (names::CONNTRACK | names::CONNTRACK6, None) => None,
            _ => Some(spec.max_entries),
        };
        let want_type = spec.kind.bpf_type();
        if have_type != want_type || want_entries.is_some_and(|n| n != info.max_entries()) {
            return Err(Error::Incompatible(format!(
                "pinned map {} is of type {have_type} with {} entries but this build expects type {want_type} with {}: run `control down` first",
                p.display(),
                info.max_entries(),
                want_entries.map_or("any number of".to_string(), |n| n.to_string())
            )));
        }
    }
    Ok(())
}

/// Loads the object (reusing pinned maps, creating and pinning missing ones) and pins every
/// program, replacing older program pins atomically (pin under a temporary name, rename).
pub fn load_and_pin(inst: &Instance, conntrack_max: u32) -> Result<Ebpf> {
    fs::create_dir_all(inst.maps_dir())
        .ctx(|| format!("creating {}", inst.maps_dir().display()))?;
    fs::create_dir_all(inst.progs_dir())
        .ctx(|| format!("creating {}", inst.progs_dir().display()))?;
    fs::create_dir_all(inst.links_dir())
        .ctx(|| format!("creating {}", inst.links_dir().display()))?;
    let mut bpf = EbpfLoader::new()
        .default_map_pin_directory(inst.maps_dir())
        .map_max_entries(names::CONNTRACK, conntrack_max)
        .map_max_entries(names::CONNTRACK6, conntrack_max)
        .load(OBJECT)
        .map_err(|e| Error::NoBpf(format!("loading the eBPF object failed: {e}")))?;
    for name in PROGRAMS {
        // bpffs refuses names containing a dot.
        let tmp = inst.prog_pin(&format!("{name}_new"));
        let _ = fs::remove_file(&tmp);
        let loaded = if name == UPLINK_XDP {
            load_uplink_xdp(&mut bpf)
        } else {
            load_program(&mut bpf, name).map(|()| name)
        };
        loaded
            .and_then(|actual| pin_program(&mut bpf, actual, &tmp))
            .map_err(|e| Error::NoBpf(format!("loading program {name}: {e}")))?;
        fs::rename(&tmp, inst.prog_pin(name)).ctx(|| format!("pinning program {name}"))?;
    }
    fill_tails(&mut bpf)?;
    Ok(bpf)
}

/// Puts the tail-called programs of a loaded object in their slots of the (pinned) program
/// array. On re-init this swaps them atomically, like the links. The map stays in the object:
/// a program array empties itself when its last user reference (fd or pin) goes.
pub fn fill_tails(bpf: &mut Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (name, slot) in TAILS {
        let prog: &SchedClassifier = bpf
            .program(name)
            .ok_or_else(|| {
                Error::Other(anyhow::anyhow!(
                    "program {name} missing from the eBPF object"
                ))
            })?
            .try_into()
            .ctx(|| format!("{name} is not a classifier"))?;
        let fd = prog
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .ctx(|| format!("{name} is not loaded"))?;
        fds.push((slot, fd));
    }
    let map = bpf.map_mut(names::TAILS).ok_or_else(|| {
        Error::Other(anyhow::anyhow!(
            "map {} missing from the eBPF object",
            names::TAILS
        ))
    })?;
    let mut tails = ProgramArray::try_from(map).ctx(|| format!("opening {}", names::TAILS))?;
    for (slot, fd) in fds {
        tails
            .set(slot, &fd, 0)
            .ctx(|| format!("filling {}", names::TAILS))?;
    }
    Ok(())
}

/// Loads `uplink_xdp`, or where the kernel refuses it (its metadata helper), the same checks
/// without the marker; returns the name of the program loaded. The first error is the one
/// reported when neither loads.
pub fn load_uplink_xdp(bpf: &mut Ebpf) -> std::result::Result<&'static str, String> {
    match load_program(bpf, UPLINK_XDP) {
        Ok(()) => Ok(UPLINK_XDP),
        Err(e) => load_program(bpf, UPLINK_XDP_PLAIN)
            .map(|()| UPLINK_XDP_PLAIN)
            .map_err(|_| e),
    }
}

fn load_program(bpf: &mut Ebpf, name: &str) -> std::result::Result<(), String> {
    let loaded = match bpf.program_mut(name) {
        None => return Err(format!("program {name} missing from the eBPF object")),
        Some(aya::programs::Program::SchedClassifier(p)) => p.load(),
        Some(aya::programs::Program::Xdp(p)) => p.load(),
        Some(aya::programs::Program::CgroupSockAddr(p)) => p.load(),
        Some(_) => return Err(format!("unexpected program type for {name}")),
    };
    loaded.map_err(|e| verifier_message(&e))
}

fn pin_program(bpf: &mut Ebpf, name: &str, at: &Path) -> std::result::Result<(), String> {
    let pinned = match bpf.program_mut(name) {
        Some(aya::programs::Program::SchedClassifier(p)) => p.pin(at),
        Some(aya::programs::Program::Xdp(p)) => p.pin(at),
        Some(aya::programs::Program::CgroupSockAddr(p)) => p.pin(at),
        _ => return Err(format!("program {name} is not loaded")),
    };
    pinned.map_err(|e| e.to_string())
}

fn verifier_message(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => other.to_string(),
    }
}

/// Opens a pinned program for attaching.
pub fn classifier(inst: &Instance, name: &str) -> Result<SchedClassifier> {
    SchedClassifier::from_pin(inst.prog_pin(name)).ctx(|| format!("opening pinned program {name}"))
}

pub fn xdp(inst: &Instance) -> Result<Xdp> {
    Xdp::from_pin(
        inst.prog_pin(UPLINK_XDP),
        aya_obj::programs::XdpAttachType::Interface,
    )
    .ctx(|| format!("opening pinned program {UPLINK_XDP}"))
}

pub fn sock_program(inst: &Instance, name: &str) -> Result<CgroupSockAddr> {
    use aya::programs::cgroup_sock_addr::CgroupSockAddrAttachType as T;
    let t = match name {
        SOCK_CONNECT4 => T::Connect4,
        SOCK_SENDMSG4 => T::UDPSendMsg4,
        SOCK_RECVMSG4 => T::UDPRecvMsg4,
        SOCK_CONNECT6 => T::Connect6,
        SOCK_SENDMSG6 => T::UDPSendMsg6,
        _ => T::UDPRecvMsg6,
    };
    CgroupSockAddr::from_pin(inst.prog_pin(name), t)
        .ctx(|| format!("opening pinned program {name}"))
}

#[cfg(test)]
mod tests {
    /// The eBPF statics and the table agree on every map: name, kind, key and value sizes,
    /// size and pinning.
    #[test]
    fn object_matches_the_table() {
        assert_eq!(super::object_mismatches().unwrap(), Vec::<String>::new());
    }
}
