//! Makes the kernel match the state file: after an interrupted command, and on demand.

use super::{Ctx, container, tx};
use crate::{
    drift::{self, MapDrift},
    error::Result,
    state::State,
};

/// Removes containers a command left half-created or half-removed and rewrites every map
/// from the state.
pub async fn repair(ctx: &Ctx, st: &mut State) -> Result<()> {
    let broken: Vec<String> = st
        .containers
        .iter()
        .filter(|(_, c)| !c.phase.is_wired())
        .map(|(n, _)| n.clone())
        .collect();
    for name in broken {
        ctx.note(&format!(
            "removing container {name}, left incomplete by the interrupted command"
        ));
        container::teardown(ctx, st, &name).await;
        container::forget(&ctx.inst, st, &name)?;
    }
    super::lifecycle::ensure_gateway_dev(ctx, st).await?;
    sync_maps(ctx, st)
}

/// Rewrites every derived map (endpoints, published ports, policy, network links, host
/// addresses, subnets, config) from `st`.
pub fn sync_maps(ctx: &Ctx, st: &State) -> Result<()> {
    drift::check(&ctx.inst, st, true).map(drop)
}

/// Rewrites the subnet trie from the networks in `st`.
pub fn sync_subnets(ctx: &Ctx, st: &State) -> Result<()> {
    drift::sync_subnets(&ctx.inst, st)
}

/// `control repair`: puts back what was changed in the maps behind Weir's back. Returns the
/// maps that had drifted, as found.
pub async fn repair_maps(ctx: &Ctx) -> Result<Vec<MapDrift>> {
    let (_lock, st) = ctx.begin().await?;
    // Nothing is recorded (the state is what the maps are brought back to); the journal lets
    // the next command finish an interrupted repair with its own full rewrite of the maps.
    tx::run(ctx, "repair", &mut (), async |_| {
        let found = drift::check(&ctx.inst, &st, true)?;
        Ok(found.into_iter().filter(|d| !d.is_clean()).collect())
    })
    .await
}
