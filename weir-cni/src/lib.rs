//! weir-cni: Weir as a CNI plugin (spec 1.0.0; 0.3.x, 0.4.0 and 1.1.0 configurations too).
//!
//! A runtime (Podman, containerd, CRI-O, kubelet) runs the `weir-cni` binary with the request
//! in the environment and the plugin configuration on stdin. ADD plumbs the container's
//! namespace through the same `control::ops::container::attach` as `control container create`
//! — same veth, addresses, endpoint, from_container attachment, policy and published ports —
//! and records it in the instance's
//! state with the runtime's namespace (`external_netns`, never deleted by Weir) and container
//! id (`cni_id`). Every `control` command then sees it like any other container.
//!
//! An attachment is keyed by (Weir network, CNI_CONTAINERID): one interface per container per
//! Weir network.

pub mod add;
pub mod busy;
pub mod check;
pub mod config;
pub mod del;
pub mod env;
pub mod error;
pub mod result;
pub mod status;
pub mod version;

use serde_json::Value;

use self::{
    config::NetConf,
    env::{Command, Env},
    error::{CniError, CniResult, code},
    version::Version,
};
use control::{
    datapath::maps,
    instance::Instance,
    netns,
    ops::Ctx,
    state::{self, State},
};

/// Runs one plugin invocation: `get` reads the environment, `stdin` is the configuration.
/// Returns what to print on stdout on success (None: print nothing).
///
/// Enters the Weir instance's host namespace on the calling thread before starting any
/// runtime, so call it from `main` of a single-threaded process (the weir-cni binary).
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> CniResult<Option<Value>> {
    let asked = asked_version(stdin);
    let fail = |e: CniError| e.with_version(asked.as_deref().unwrap_or(version::LATEST));
    if env::command(&get).map_err(fail)? == Command::Version {
        let info = version::info(asked.as_deref());
        return Ok(Some(serde_json::to_value(info).expect("plain struct")));
    }
    let env = env::parse(&get).map_err(fail)?;
    let (conf, v) = NetConf::decode(stdin).map_err(fail)?;
    let fail = |e: CniError| e.with_version(&conf.cni_version);
    conf.validate().map_err(fail)?;
    match env.command {
        Command::Check => v.require(Version::V0_4_0, "CHECK").map_err(fail)?,
        Command::Status => v.require(Version::V1_1_0, "STATUS").map_err(fail)?,
        Command::Gc => v.require(Version::V1_1_0, "GC").map_err(fail)?,
        _ => {}
    }
    serve(&env, &conf, v).map_err(fail)
}

/// The `cniVersion` of stdin, if it parses that far (for error results before full decoding).
fn asked_version(stdin: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(stdin)
        .ok()?
        .get("cniVersion")?
        .as_str()
        .map(str::to_string)
}

fn serve(env: &Env, conf: &NetConf, v: Version) -> CniResult<Option<Value>> {
    if !nix::unistd::geteuid().is_root() {
        return Err(control::Error::NotRoot.into());
    }
    let inst = Instance::new(conf.state_dir())?;
    let Some(st) = state::load(&inst)? else {
        return match env.command {
            // Nothing was ever attached: DEL and GC have nothing to release.
            Command::Del | Command::Gc => Ok(None),
            Command::Status => Err(CniError::new(
                code::NOT_AVAILABLE,
                "Weir is not initialised",
                format!(
                    "no Weir instance in {}: run `control --state-dir {0} init`",
                    inst.state_dir.display()
                ),
            )),
            _ => Err(control::Error::NotInitialised(inst.state_dir.clone()).into()),
        };
    };
    if env.command == Command::Del
        && let Some(h) = &st.host_netns
        && !netns::exists(h)
    {
        // The namespace Weir serves is gone, and with it every veth and program attachment:
        // nothing is left to release, and a failing DEL would only wedge the runtime.
        eprintln!(
            "note: Weir's host namespace {h:?} is gone; nothing to release for container {}",
            env.container_id
        );
        return Ok(None);
    }
    enter_host(&inst, &st, conf)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::INTERNAL, "starting a runtime", e.to_string()))?;
    rt.block_on(async {
        let ctx = Ctx::new(inst)?.with_notes(|n| eprintln!("note: {n}"));
        match env.command {
            Command::Add => add::add(&ctx, env, conf, v).await.map(Some),
            Command::Del => del::del(&ctx, env, conf).await.map(|()| None),
            Command::Check => check::check(&ctx, env, conf).await.map(|()| None),
            Command::Status => status::status(&ctx, conf).await.map(|()| None),
            Command::Gc => del::gc(&ctx, conf).await.map(|()| None),
            Command::Version => unreachable!("answered before"),
        }
    })
}

/// Moves this thread into the namespace the instance serves: the one it was initialised with
/// (`--host-netns`), else `hostNetns`, else the one we run in. The datapath was configured
/// with that namespace's cookie: a mismatch is an error rather than veths in the wrong place.
fn enter_host(inst: &Instance, st: &State, conf: &NetConf) -> CniResult<()> {
    if let (Some(rec), Some(want)) = (&st.host_netns, &conf.host_netns)
        && rec != want
    {
        return Err(CniError::config(format!(
            "\"hostNetns\" {want:?} does not match the Weir instance in {}, which serves {rec:?}",
            inst.state_dir.display()
        )));
    }
    if let Some(h) = st.host_netns.as_ref().or(conf.host_netns.as_ref()) {
        if !netns::exists(h) {
            return Err(CniError::new(
                code::INTERNAL,
                "Weir's host namespace is missing",
                format!("{} does not exist", netns::path(h).display()),
            ));
        }
        netns::enter(&netns::path(h))?;
    }
    if let Some(cfg) = maps::read_config(inst)?
        && cfg.netns_cookie != netns::cookie()?
    {
        return Err(CniError::config(format!(
            "weir-cni runs in a different network namespace than the one the Weir instance in {} serves: run the runtime there or set \"hostNetns\"",
            inst.state_dir.display()
        )));
    }
    Ok(())
}

/// The container name of the attachment (network, CNI container id), if Weir has one.
pub fn find(st: &State, network: &str, container_id: &str) -> Option<String> {
    st.containers
        .iter()
        .find(|(_, c)| c.network == network && c.cni_id.as_deref() == Some(container_id))
        .map(|(n, _)| n.clone())
}
