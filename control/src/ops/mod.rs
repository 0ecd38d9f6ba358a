//! The operations behind each `control` command and each front end. Each takes the instance
//! lock ([`Ctx::begin`], which repairs what an interrupted command left behind), then makes
//! its change through [`tx`], which fixes the order of recording and applying.

pub mod container;
pub mod inspect;
pub mod lifecycle;
pub mod metrics;
pub mod network;
pub mod policy;
pub mod publish;
pub mod reconcile;
pub mod restore;
pub mod shape;
pub mod tx;

use rtnetlink::Handle;

use crate::{
    error::{Error, Result},
    instance::{Instance, Lock},
    netlink,
    state::{self, State},
};

/// Whether a change adds something or takes it away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// Where the library's notes go: things a user may want to know that are not errors (an
/// interrupted command being repaired). The front end decides how to show them.
pub type Notes = Box<dyn Fn(&str) + Send + Sync>;

/// What every operation needs: the instance and a netlink handle in the host namespace.
pub struct Ctx {
    pub inst: Instance,
    pub nl: Handle,
    notes: Notes,
}

impl Ctx {
    /// Must be called inside a tokio runtime, on a thread already in the host namespace.
    pub fn new(inst: Instance) -> Result<Self> {
        Ok(Self {
            inst,
            nl: netlink::connect()?,
            notes: Box::new(|_| {}),
        })
    }

    /// Sends the notes of every operation on this context to `notes` (dropped by default).
    pub fn with_notes(mut self, notes: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.notes = Box::new(notes);
        self
    }

    /// Passes a note to the front end.
    pub fn note(&self, msg: &str) {
        (self.notes)(msg)
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
            self.note(&format!(
                "an earlier command ({}) was interrupted; repairing",
                what.trim()
            ));
            reconcile::repair(self, &mut st).await?;
            state::save(&self.inst, &st)?;
            let _ = std::fs::remove_file(self.inst.journal_file());
        }
        Ok((lock, st))
    }
}
