//! Ctrl-C and SIGTERM become a flag the bench polls between measurements, so it returns
//! normally and every RAII guard (namespaces, Weir instances, servers) runs its cleanup.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers (the default action would kill us before any cleanup runs).
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once an interrupt was requested, so `?` unwinds to the cleanup.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}
