//! `weir-docker`: the Docker network driver daemon. Start it before dockerd (it is found by
//! its socket, `/run/docker/plugins/NAME.sock`), in the namespace of the Weir instance, which
//! must be dockerd's.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use control::{Error, Result, datapath::maps, instance::Instance, netns, ops::Ctx, state};
use weir_docker::{driver::Driver, names::EngineApi, server};

const EXAMPLES: &str = "\
Examples:
  control init --uplink eth0 && weir-docker &
  docker network create -d weir --subnet 10.88.0.0/24 web
  docker run --network web -p 8080:80 nginx

Networks and endpoints are Weir's own (`control network ls` shows networks as docker-<id>,
`control container ls` containers under their Docker names, asked of --docker-socket); rules
by Docker name hold across `docker restart`. Traffic keeps flowing while weir-docker is down,
and a restarted weir-docker picks up from Weir's state.";

#[derive(Parser)]
#[command(name = "weir-docker", version, about, after_help = EXAMPLES)]
struct Cli {
    /// The driver's name: `docker network create -d NAME`.
    #[arg(long, default_value = "weir", value_name = "NAME")]
    name: String,
    /// The plugin socket. Default: /run/docker/plugins/NAME.sock, where dockerd looks.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The Weir instance to drive (as `control --state-dir`).
    #[arg(
        long,
        env = "WEIR_STATE_DIR",
        default_value = "/var/lib/weir",
        value_name = "DIR"
    )]
    state_dir: PathBuf,
    /// dockerd's Engine API socket, asked for container names (`control container ls`, rules
    /// by Docker name).
    #[arg(long, default_value = "/var/run/docker.sock", value_name = "PATH")]
    docker_socket: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    control::validate::name("driver", &cli.name)?;
    let socket = cli
        .socket
        .unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{}.sock", cli.name)));
    let inst = Instance::new(&cli.state_dir)?;
    let st = state::load_required(&inst)?;
    // Before any thread exists: the veths must be made where the instance (and dockerd) is.
    if let Some(h) = &st.host_netns {
        netns::enter(&netns::path(h))?;
    }
    if let Some(cfg) = maps::read_config(&inst)?
        && cfg.netns_cookie != netns::cookie()?
    {
        return Err(Error::invalid(format!(
            "weir-docker runs in another network namespace than the Weir instance in {} serves: start it (and dockerd) there",
            inst.state_dir.display()
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(e.into()))?;
    rt.block_on(async {
        let ctx = Ctx::new(inst)?.with_notes(|n| eprintln!("weir-docker: note: {n}"));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let api = EngineApi::new(&cli.docker_socket);
        server::serve(Driver::new(ctx, Some(api), tx), &socket, rx).await
    })
}
