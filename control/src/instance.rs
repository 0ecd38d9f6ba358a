//! One Weir instance = one state directory. Everything it pins lives under a bpffs directory
//! derived from that state directory, so several instances (tests run many sandboxed hosts
//! side by side) never share maps, programs or links.

use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::error::{Context, Error, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/weir";
pub const BPFFS: &str = "/sys/fs/bpf";

#[derive(Clone, Debug)]
pub struct Instance {
    pub state_dir: PathBuf,
    /// Short id derived from the state dir; names the pin directory.
    pub id: String,
    pub pin_dir: PathBuf,
}

impl Instance {
    pub fn new(state_dir: &Path) -> Result<Self> {
        let abs = if state_dir.is_absolute() {
            state_dir.to_path_buf()
        } else {
            std::env::current_dir()
                .ctx(|| "reading the current directory".into())?
                .join(state_dir)
        };
        let id = format!("{:016x}", fnv1a(abs.as_os_str().as_encoded_bytes()));
        let pin_dir = Path::new(BPFFS).join("weir").join(&id);
        Ok(Self {
            state_dir: abs,
            id,
            pin_dir,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
    /// The rule book: policy rules, one per line (see [`crate::rules`]).
    pub fn rules_file(&self) -> PathBuf {
        self.state_dir.join("rules")
    }
    /// The port book: published ports, one per line (see [`crate::published`]).
    pub fn publishes_file(&self) -> PathBuf {
        self.state_dir.join("ports")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }
    pub fn journal_file(&self) -> PathBuf {
        self.state_dir.join("journal")
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }
    pub fn progs_dir(&self) -> PathBuf {
        self.pin_dir.join("progs")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    pub fn prog_pin(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }
    pub fn link_pin(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }

    /// Takes the instance's exclusive lock (held until the guard drops), creating the state
    /// dir if needed. Commands that change anything hold it for their whole run.
    pub fn lock(&self) -> Result<Lock> {
        fs::create_dir_all(&self.state_dir)
            .ctx(|| format!("creating state dir {}", self.state_dir.display()))?;
        let path = self.lock_file();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Other(anyhow::anyhow!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        remove_stale_temp_files(&self.state_dir);
        Ok(Lock { _file: file })
    }
}

/// Every state write happens under the instance lock (write to `NAME.tmp.PID`, then rename),
/// so a temp file found by the lock holder belongs to a command that died mid-write: its
/// content never became the state, and nothing else would ever remove it.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name
            .rsplit_once(".tmp.")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Exclusive instance lock; released when dropped (or when the process dies).
pub struct Lock {
    _file: File,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
