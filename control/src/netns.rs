//! Named network namespaces (`/run/netns/NAME`, the same files `ip netns` uses) and running
//! work inside one. setns/unshare act on the calling thread only, so namespace work runs on a
//! short-lived thread of its own; the main thread stays in the host namespace.

use std::{
    fs::{self, File},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

use crate::error::{Context, Error, Result};

pub const RUN_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Moves the calling thread into the namespace at `p`.
pub fn enter(p: &Path) -> Result<()> {
    let f = File::open(p).map_err(|e| {
        Error::not_found(format!(
            "cannot open network namespace {}: {e}",
            p.display()
        ))
    })?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .ctx(|| format!("entering network namespace {}", p.display()))
}

/// Runs `f` on a thread inside the namespace at `p`.
pub fn run_in<T: Send>(p: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(p)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Other(anyhow::anyhow!(
                "namespace worker thread panicked"
            )))
        })
    })
}

/// Runs async `f` on a private runtime on a thread inside the namespace at `p`; netlink
/// sockets it opens talk to that namespace.
pub fn run_async_in<T, F, Fut>(p: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
{
    run_in(p, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "starting a runtime".into())?;
        rt.block_on(f())
    })
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces created later are
/// visible in mount namespaces that `ip netns exec` creates.
fn ensure_run_dir() -> Result<()> {
    fs::create_dir_all(RUN_DIR).ctx(|| format!("creating {RUN_DIR}"))?;
    for _ in 0..2 {
        match mount(
            None::<&str>,
            RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) => {
                mount(
                    Some(RUN_DIR),
                    RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(|| format!("bind-mounting {RUN_DIR}"))?;
            }
            Err(e) => {
                return Err(Error::Other(anyhow::anyhow!(
                    "making {RUN_DIR} shared: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Creates the named namespace `/run/netns/NAME`; fails if it exists.
pub fn create(name: &str) -> Result<PathBuf> {
    ensure_run_dir()?;
    let p = path(name);
    match File::options().write(true).create_new(true).open(&p) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::conflict(format!(
                "network namespace {name:?} already exists ({}): pick another container name or remove it",
                p.display()
            )));
        }
        Err(e) => {
            return Err(Error::Other(anyhow::anyhow!(
                "creating {}: {e}",
                p.display()
            )));
        }
    }
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).ctx(|| "unshare(CLONE_NEWNET)".into())?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind-mounting the new namespace on {}", p.display()))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Other(anyhow::anyhow!(
                "namespace worker thread panicked"
            )))
        })
    });
    if let Err(e) = made {
        let _ = fs::remove_file(&p);
        return Err(e);
    }
    Ok(p)
}

/// Removes a named namespace (it lives on while processes still use it). Absent is fine.
pub fn delete(name: &str) -> Result<()> {
    let p = path(name);
    if !p.exists() {
        return Ok(());
    }
    match umount2(&p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::Other(anyhow::anyhow!(
                "unmounting {}: {e}",
                p.display()
            )));
        }
    }
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Other(anyhow::anyhow!(
            "removing {}: {e}",
            p.display()
        ))),
    }
}

/// The cookie of the calling thread's network namespace (what `bpf_get_netns_cookie` returns).
pub fn cookie() -> Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: plain socket syscalls on an fd we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Error::Other(anyhow::anyhow!(
                "socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(Error::NoBpf(format!(
                "SO_NETNS_COOKIE unsupported ({err}); Linux 5.14 or newer is needed"
            )));
        }
        Ok(cookie)
    }
}
