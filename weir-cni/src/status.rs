//! STATUS (1.1.0): can we serve ADD? 50 when not (no network, no free address, no
//! from_container program to attach); 51 when the shared programs are detached, which also
//! hurts containers already running.

use super::{
    config::NetConf,
    error::{CniError, CniResult, code},
};
use control::{
    datapath::{self, links},
    ops::{Ctx, container},
    state,
};

pub async fn status(ctx: &Ctx, conf: &NetConf) -> CniResult<()> {
    let st = state::load_required(&ctx.inst)?;
    let network = conf.network();
    let unavailable =
        |details: String| CniError::new(code::NOT_AVAILABLE, "weir-cni cannot serve ADD", details);
    if st.network(network).is_err() {
        return Err(unavailable(format!(
            "Weir network {network:?} does not exist: create it with `control network create`"
        )));
    }
    if let Err(e) = container::choose_ip(&st, network, None) {
        return Err(unavailable(e.to_string()));
    }
    if !ctx.inst.prog_pin(datapath::FROM_CONTAINER).exists() {
        return Err(unavailable(
            "the from_container program is not loaded: run `control init`".into(),
        ));
    }
    let mut shared: Vec<&str> = vec![datapath::UPLINK_TC, datapath::UPLINK_EGRESS];
    if st.uplink.xdp {
        shared.push(datapath::UPLINK_XDP);
    }
    shared.extend(datapath::SOCK_PROGRAMS);
    let detached: Vec<&str> = shared
        .into_iter()
        .filter(|p| links::program_id(&ctx.inst, p).is_none())
        .collect();
    if !detached.is_empty() {
        return Err(CniError::new(
            code::LIMITED_CONNECTIVITY,
            "Weir's datapath is incomplete",
            format!(
                "{} not attached: run `control init` to repair",
                detached.join(", ")
            ),
        ));
    }
    Ok(())
}
