//! DEL and GC: release attachments. Both succeed when there is nothing to release (DEL is
//! called again after a DEL, after a failed ADD, or for containers Weir never saw).

use std::collections::HashSet;

use super::{
    busy,
    config::NetConf,
    env::Env,
    error::{CniError, CniResult},
    find,
};
use control::{
    ops::{Ctx, container},
    state,
};

/// Removes the attachment's map entries (endpoint, published ports, policy, conntrack), its
/// from_container link and its veth (the peer in the runtime's namespace goes with it). The
/// namespace itself belongs to the runtime and stays.
pub async fn del(ctx: &Ctx, env: &Env, conf: &NetConf) -> CniResult<()> {
    let (_lock, st) = busy::begin(ctx, conf.busy_timeout()).await?;
    let Some(name) = find(&st, conf.network(), &env.container_id) else {
        return Ok(());
    };
    // An attachment is (container, interface, network): the DEL a runtime sends after an ADD
    // of a second interface failed is not about the first one.
    if st.containers[&name]
        .cni_ifname
        .as_deref()
        .is_some_and(|i| i != env.ifname)
    {
        return Ok(());
    }
    release(ctx, st, &[name], "cni del").await
}

/// GC: releases every attachment on this network whose container the runtime no longer
/// lists in `cni.dev/valid-attachments`. Containers made by `control container create` are
/// never touched.
pub async fn gc(ctx: &Ctx, conf: &NetConf) -> CniResult<()> {
    let valid: HashSet<&str> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::config("GC needs \"cni.dev/valid-attachments\""))?
        .iter()
        .map(|a| a.container_id.as_str())
        .collect();
    let (_lock, st) = busy::begin(ctx, conf.busy_timeout()).await?;
    let doomed: Vec<String> = st
        .containers
        .iter()
        .filter(|(_, c)| {
            c.network == conf.network() && c.cni_id.as_deref().is_some_and(|id| !valid.contains(id))
        })
        .map(|(n, _)| n.clone())
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    for n in &doomed {
        ctx.note(&format!("garbage-collecting attachment {n}"));
    }
    release(ctx, st, &doomed, "cni gc").await
}

async fn release(ctx: &Ctx, mut st: state::State, names: &[String], what: &str) -> CniResult<()> {
    let what = format!("{what} {}", names.join(" "));
    Ok(container::detach(ctx, &mut st, names, &what).await?)
}
