//! A runtime waits for its plugin: weir-cni must not hang forever behind a `control` command
//! that holds the instance lock (stuck on a wedged netlink call, stopped in a debugger). It
//! waits up to `busyTimeout` seconds for the lock, then answers code 11, "try again later",
//! which is what the spec has for a locked resource.

use std::{
    fs::File,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use super::error::{CniError, CniResult, code};
use control::{
    instance::{Instance, Lock},
    ops::Ctx,
    state::State,
};

/// How long to wait when the configuration does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the instance lock is free (or `timeout` passed), then takes it the ordinary
/// way, repairing whatever an interrupted command left behind.
///
/// The probe uses its own open file and lets go before `Ctx::begin` locks again (flock locks
/// belong to the open file: holding the probe would deadlock us). Someone may slip in between;
/// they hold the lock for one short command, which `begin` then waits out.
pub async fn begin(ctx: &Ctx, timeout: Duration) -> CniResult<(Lock, State)> {
    wait_until_free(&ctx.inst, timeout)?;
    Ok(ctx.begin().await?)
}

/// The lock alone, for read-only commands (CHECK).
pub fn lock(inst: &Instance, timeout: Duration) -> CniResult<Lock> {
    wait_until_free(inst, timeout)?;
    Ok(inst.lock()?)
}

fn wait_until_free(inst: &Instance, timeout: Duration) -> CniResult<()> {
    let path = inst.state_dir.join("lock");
    // No lock file: nobody has ever locked this instance, so nobody holds it.
    let Ok(f) = File::open(&path) else {
        return Ok(());
    };
    let start = Instant::now();
    loop {
        // SAFETY: flock on a valid fd; the lock goes away with `f` (or explicitly below).
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // SAFETY: as above.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(CniError::new(
                code::INTERNAL,
                "cannot lock the Weir instance",
                format!("locking {}: {err}", path.display()),
            ));
        }
        if start.elapsed() >= timeout {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "Weir is busy",
                format!(
                    "another command has held {} for {}s (busyTimeout): try again later",
                    path.display(),
                    timeout.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
