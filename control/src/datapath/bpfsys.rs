//! Two bpf(2) commands aya does not expose for pinned objects: opening any pin as an fd, and
//! BPF_LINK_UPDATE, which swaps the program behind a link atomically (no gap for traffic).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use crate::error::{Error, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> libc::c_long {
    // SAFETY: attr is a zero-initialised bpf_attr-sized buffer the kernel reads and writes.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    }
}

/// Opens the object pinned at `path`.
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("bad pin path {}", path.display())))?;
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr);
    if fd < 0 {
        return Err(Error::Other(anyhow::anyhow!(
            "opening pin {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Points the link pinned at `link` to the program pinned at `prog`.
pub fn link_update(link: &Path, prog: &Path) -> Result<()> {
    let l = obj_get(link)?;
    let p = obj_get(prog)?;
    let mut attr = [0u64; 16];
    // struct { u32 link_fd; u32 new_prog_fd; u32 flags; u32 old_prog_fd; }
    attr[0] = (l.as_raw_fd() as u32 as u64) | ((p.as_raw_fd() as u32 as u64) << 32);
    if bpf(BPF_LINK_UPDATE, &mut attr) < 0 {
        return Err(Error::Other(anyhow::anyhow!(
            "replacing the program of link {}: {}",
            link.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
