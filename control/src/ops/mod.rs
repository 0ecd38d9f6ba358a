//! The operations behind each `control` command. Each takes the instance lock, repairs what
//! an interrupted command left behind, changes the kernel, then records the result.

pub mod container;
pub mod inspect;
pub mod lifecycle;
pub mod mtu;
pub mod network;
pub mod policy;
pub mod publish;
pub mod reconcile;

use rtnetlink::Handle;

use crate::{
    error::{Error, Result},
    instance::{Instance, Lock},
    netlink,
    state::{self, State},
};

/// What every operation needs: the instance and a netlink handle in the host namespace.
pub struct Ctx {
    pub inst: Instance,
    pub nl: Handle,
}

impl Ctx {
    /// Must be called inside a tokio runtime, on a thread already in the host namespace.
    pub fn new(inst: Instance) -> Result<Self> {
        Ok(Self {
            inst,
            nl: netlink::connect()?,
        })
    }

    /// Locks the instance and loads its state, first repairing whatever an interrupted
    /// command left half-done.
    pub async fn begin(&self) -> Result<(Lock, State)> {
        let lock = self.inst.lock()?;
        let mut st = state::load_required(&self.inst)?;
        if let Some(what) = state::pending_journal(&self.inst) {
            if let Some(msg) = state::unfinished_init(&what) {
                return Err(Error::conflict(msg));
            }
            eprintln!(
                "note: an earlier command ({}) was interrupted; repairing",
                what.trim()
            );
            reconcile::repair(self, &mut st).await?;
            state::save(&self.inst, &st)?;
            let _ = std::fs::remove_file(self.inst.journal_file());
        }
        Ok((lock, st))
    }
}
