//! CNI error results: `{cniVersion, code, msg, details}` on stdout and a non-zero exit. Codes
//! below 100 are the spec's well-known ones; 999 is libcni's "internal"; 1000 and up are Weir's.

use serde::Serialize;

use control::Error;

/// The spec's well-known error codes (SPEC.md §5 "Error") and Weir's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: cannot serve ADD, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Weir failed (kernel, eBPF, netlink, state file): the same value libcni uses.
    pub const INTERNAL: u32 = 999;
    /// The Weir instance named by `stateDir` was never initialised (`control init`).
    pub const NOT_INITIALISED: u32 = 1000;
    /// Something the request needs is taken: the address, the host port, the interface
    /// name, or the attachment itself (ADD twice without DEL).
    pub const CONFLICT: u32 = 1001;
    /// CHECK found the attachment different from what ADD made.
    pub const CHECK_FAILED: u32 = 1002;
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// The version is filled in by the dispatcher once the request's version is known.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg, "")
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg, "")
    }

    pub fn with_version(mut self, v: &str) -> Self {
        if self.cni_version.is_empty() {
            self.cni_version = v.to_string();
        }
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// Library errors keep their one-line message; the code says who can act on it.
impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let (c, msg) = match &e {
            Error::NotInitialised(_) => (code::NOT_INITIALISED, "Weir is not initialised"),
            Error::Invalid(_) => (code::INVALID_CONFIG, "invalid request"),
            Error::Conflict(_) => (code::CONFLICT, "conflict"),
            Error::NotFound(_) => (code::INVALID_CONFIG, "not found"),
            Error::NotRoot => (code::INTERNAL, "weir-cni must run as root"),
            Error::NoBpf(_) | Error::CorruptState { .. } | Error::Incompatible(_) => {
                (code::INTERNAL, "Weir cannot serve this request")
            }
            Error::Other(_) => (code::INTERNAL, "Weir failed"),
        };
        let details = match &e {
            Error::Other(a) => format!("{a:#}"),
            other => other.to_string(),
        };
        Self::new(c, msg, details.lines().collect::<Vec<_>>().join(" "))
    }
}

pub type CniResult<T> = std::result::Result<T, CniError>;
