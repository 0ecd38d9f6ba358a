//! After a reboot the state dir remains but the pins, namespaces and links are gone. `control
//! init` finds every container whose host-side veth no longer exists and recreates it (a
//! CLI container: its namespace and veth, as `container create` made them) or forgets it
//! (the user's choice, `--missing forget`). A runtime-owned container (CNI, Docker) is always
//! forgotten: its namespace was the runtime's, and the runtime attaches it again when it
//! starts it again (a stale record would hold its address against that).

use serde::Serialize;

use super::{Ctx, container};
use crate::{
    error::Result,
    netlink,
    state::{Phase, State},
};

/// What `init` does with a CLI container whose links are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// Recreate it: namespace (if gone), veth, addresses, routes, endpoint; its rules and
    /// published ports are in force again.
    #[default]
    Recreate,
    /// Forget it, with its published ports and rules.
    Forget,
}

#[derive(Debug, Default, Serialize)]
pub struct Restored {
    pub recreated: Vec<String>,
    pub forgotten: Vec<String>,
    /// Runtime-owned containers forgotten: their runtime attaches them again.
    pub left_to_runtime: Vec<String>,
}

/// Recreates or forgets every ready container whose host-side veth is gone. Needs the
/// programs and maps in place (it plumbs as `container create` does).
pub async fn missing_containers(ctx: &Ctx, st: &mut State, missing: Missing) -> Result<Restored> {
    let mut r = Restored::default();
    let ready: Vec<(String, bool)> = st
        .containers
        .iter()
        .filter(|(_, c)| c.phase == Phase::Ready)
        .map(|(n, c)| (n.clone(), c.external_netns.is_some()))
        .collect();
    for (name, runtime_owned) in ready {
        let host_if = st.container(&name)?.host_if.clone();
        if netlink::link_by_name(&ctx.nl, &host_if).await?.is_some() {
            continue;
        }
        if runtime_owned {
            container::forget(&ctx.inst, st, &name)?;
            r.left_to_runtime.push(name);
        } else if missing == Missing::Forget {
            container::forget(&ctx.inst, st, &name)?;
            r.forgotten.push(name);
        } else {
            container::replumb(ctx, st, &name).await?;
            r.recreated.push(name);
        }
    }
    Ok(r)
}
