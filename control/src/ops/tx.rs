//! The one way a command changes anything: a journal names the change while it is in flight,
//! so that a change either completes or leaves nothing once the next command has run.
//!
//! The order within a change is fixed. Adding: record it in the state first, then apply it
//! to the kernel; removing: mark it, unapply it, then forget it. Either way the saved state
//! never names less than the kernel holds, so an interrupted command leaves the journal and a
//! state that [`super::reconcile::repair`] (run by the next command's [`super::Ctx::begin`])
//! can finish from: it removes whatever is not `Ready` and rewrites every map.

use super::Ctx;
use crate::{
    error::Result,
    state::{self, Journal, State},
};

/// What a change saves around its effect. The state file for most changes; `()` for changes
/// whose record keeps itself (the rule and port books are written as they change).
pub trait Record {
    fn save(&self, ctx: &Ctx) -> Result<()>;
}

impl Record for State {
    fn save(&self, ctx: &Ctx) -> Result<()> {
        state::save(&ctx.inst, self)
    }
}

impl Record for () {
    fn save(&self, _: &Ctx) -> Result<()> {
        Ok(())
    }
}

/// Runs `effect` as the change `what`: journal, save the record (what the caller already put
/// in it), effect, save again, journal done. When the effect fails the journal stays: the next
/// command repairs from the saved record.
pub async fn run<R: Record, T>(
    ctx: &Ctx,
    what: &str,
    rec: &mut R,
    effect: impl AsyncFnOnce(&mut R) -> Result<T>,
) -> Result<T> {
    let j = Journal::begin(&ctx.inst, what)?;
    rec.save(ctx)?;
    let out = effect(rec).await?;
    rec.save(ctx)?;
    j.done()?;
    Ok(out)
}

/// [`run`], but a failed effect is rolled back at once by `undo` (which puts the record back
/// as it was before the change) and the change ends there: its error is returned with nothing
/// left for a repair.
pub async fn run_or_undo<R: Record, T>(
    ctx: &Ctx,
    what: &str,
    rec: &mut R,
    effect: impl AsyncFnOnce(&mut R) -> Result<T>,
    undo: impl AsyncFnOnce(&mut R) -> Result<()>,
) -> Result<T> {
    run(ctx, what, rec, async |rec: &mut R| {
        match effect(rec).await {
            Ok(v) => Ok(Ok(v)),
            Err(e) => {
                undo(rec).await?;
                Ok(Err(e))
            }
        }
    })
    .await?
}
