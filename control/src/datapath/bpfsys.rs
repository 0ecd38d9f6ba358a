//! bpf(2) commands aya does not expose for pinned objects: opening any pin as an fd,
//! BPF_LINK_UPDATE, which swaps the program behind a link atomically (no gap for traffic), and
//! BPF_MAP_LOOKUP_BATCH, which reads a busy hash map without restarting.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use crate::error::{Error, Result};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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

/// The interface a tcx or XDP link pinned at `link` is attached to (0 once that interface is
/// gone and the link defunct).
pub fn link_ifindex(link: &Path) -> Result<u32> {
    let l = obj_get(link)?;
    // struct bpf_link_info { u32 type, id, prog_id; union (8-aligned) { tcx/xdp: u32 ifindex
    // first } }: the ifindex is at byte 16.
    let mut info = [0u64; 16];
    let mut attr = [0u64; 16];
    // struct { u32 bpf_fd; u32 info_len; u64 info; }
    attr[0] = (l.as_raw_fd() as u32 as u64) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) < 0 {
        return Err(Error::Other(anyhow::anyhow!(
            "reading link {}: {}",
            link.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(info[2] as u32)
}

/// The program id in slot `index` of the program array pinned at `path` (a lookup from user
/// space answers ids, not fds), or None when the slot is empty.
pub fn prog_array_id(path: &Path, index: u32) -> Result<Option<u32>> {
    let map = obj_get(path)?;
    let mut id = 0u32;
    let mut attr = [0u64; 16];
    // struct { u32 map_fd; u64 key; u64 value; u64 flags; } (key aligned to 8)
    attr[0] = map.as_raw_fd() as u32 as u64;
    attr[1] = &index as *const u32 as u64;
    attr[2] = &mut id as *mut u32 as u64;
    if bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(Error::Other(anyhow::anyhow!(
            "reading {}: {err}",
            path.display()
        )));
    }
    Ok(Some(id))
}

/// Every entry of the hash map pinned at `path`, read bucket by bucket with
/// BPF_MAP_LOOKUP_BATCH. A get_next_key walk restarts from the first key whenever the current
/// one was deleted meanwhile, so on a map the datapath churns (conntrack under a flood) it
/// counts entries several times over and may never finish; a batch walk sees each entry at
/// most once and always ends.
pub fn dump_hash<K: bytemuck::Pod, V: bytemuck::Pod>(path: &Path) -> Result<Vec<(K, V)>> {
    // Larger than any bucket can grow (the kernel fails with ENOSPC otherwise).
    const CHUNK: usize = 4096;
    let map = obj_get(path)?;
    let mut keys = vec![K::zeroed(); CHUNK];
    let mut values = vec![V::zeroed(); CHUNK];
    let mut out = Vec::new();
    // Hash maps use a bucket index as the batch token.
    let (mut in_batch, mut out_batch) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = [0u64; 16];
        // struct { u64 in_batch; u64 out_batch; u64 keys; u64 values; u32 count; u32 map_fd;
        //          u64 elem_flags; u64 flags; }
        attr[0] = if first {
            0
        } else {
            &in_batch as *const u32 as u64
        };
        attr[1] = &mut out_batch as *mut u32 as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = CHUNK as u64 | ((map.as_raw_fd() as u32 as u64) << 32);
        let rc = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let err = std::io::Error::last_os_error();
        // The kernel writes back how many elements it filled, also on the last (ENOENT) batch.
        let n = ((attr[4] & 0xffff_ffff) as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if rc < 0 {
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(out);
            }
            return Err(Error::Other(anyhow::anyhow!(
                "reading map {}: {err}",
                path.display()
            )));
        }
        in_batch = out_batch;
        first = false;
    }
}
