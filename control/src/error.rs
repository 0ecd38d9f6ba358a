//! Errors a user can act on. Each message says what was wrong and what to do; `main` prints it
//! as one line and exits non-zero.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "must run as root (CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF are needed): run with sudo"
    )]
    NotRoot,
    #[error("this kernel cannot run Weir: {0}")]
    NoBpf(String),
    #[error("Weir is not initialised for state dir {0}: run `control init` first")]
    NotInitialised(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "state file {path} is corrupt ({reason}); it was left untouched: fix or remove it, or run `control down` to start over"
    )]
    CorruptState { path: PathBuf, reason: String },
    #[error("{0}")]
    Incompatible(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
}

/// Attaches context to kernel/IO failures (netlink, bpf, files) on the way to an [`Error`].
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Other(anyhow::anyhow!("{}: {e}", what())))
    }
}
