//! The cgroup v2 hierarchy the sock_addr programs attach to (at its root, so they see every
//! socket; they filter by network namespace themselves).

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::error::{Context, Result};

/// Where Weir mounts cgroup2 itself when the system has not mounted it anywhere.
pub const OWN_MOUNT: &str = "/run/weir/cgroup2";

/// The mount point of the cgroup v2 hierarchy, mounting it if needed.
pub fn root() -> Result<PathBuf> {
    if let Some(p) = find_mount()? {
        return Ok(p);
    }
    std::fs::create_dir_all(OWN_MOUNT).ctx(|| format!("creating {OWN_MOUNT}"))?;
    mount(
        Some("cgroup2"),
        OWN_MOUNT,
        Some("cgroup2"),
        MsFlags::empty(),
        None::<&str>,
    )
    .ctx(|| format!("mounting cgroup2 on {OWN_MOUNT}"))?;
    Ok(PathBuf::from(OWN_MOUNT))
}

fn find_mount() -> Result<Option<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "reading /proc/self/mountinfo".into())?;
    for line in info.lines() {
        // "... mount_point ... - fstype source options"
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        if fields.len() > 4 && fields[3] == "/" {
            return Ok(Some(Path::new(&unescape(fields[4])).to_path_buf()));
        }
    }
    Ok(None)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
}
