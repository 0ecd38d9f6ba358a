//! `control`: Weir's command-line control plane. Each command opens the pinned state, changes
//! it and exits; the datapath keeps running with no process alive.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use control::{Error, Result, instance::Instance, netns, ops::Ctx, state, validate};

use cli::Cli;

fn main() -> ExitCode {
    // Behave like other CLI tools when piped into `head`: die quietly on SIGPIPE.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help, --version and bare `control network`: clap's full output is the point.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A usage error as one line, like every other error (clap spreads it over several: the
/// error, tips, usage and a pointer to --help).
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let mut first = parts.next().unwrap_or("error: invalid usage").to_string();
    let mut rest: Vec<&str> = parts.collect();
    // "the following required arguments were not provided:" continues on the next line.
    if first.ends_with(':') && !rest.is_empty() {
        first = format!("{first} {}", rest.remove(0));
    }
    if rest.is_empty() {
        first
    } else {
        format!("{first} ({})", rest.join("; "))
    }
}

fn one_line(e: &Error) -> String {
    let s = match e {
        Error::Other(a) => format!("{a:#}"),
        other => other.to_string(),
    };
    s.lines().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let inst = Instance::new(&cli.state_dir)?;
    // The host namespace: as given, else as recorded at init. Entered before any thread exists
    // so every thread and socket the command creates lives there.
    let recorded = match state::recorded_host_netns(&inst) {
        Err(_) if cli.cmd.tolerates_bad_state() => None,
        r => r?,
    };
    if let (Some(given), Some(rec)) = (&cli.host_netns, &recorded)
        && given != rec
        && !cli.cmd.is_init()
    {
        return Err(Error::conflict(format!(
            "state dir {} serves host namespace {rec:?}, not {given:?}",
            inst.state_dir.display()
        )));
    }
    let host_netns = cli.host_netns.clone().or(recorded);
    if let Some(h) = &host_netns {
        validate::name("host namespace", h)?;
        if !netns::exists(h) {
            return Err(Error::not_found(format!(
                "host network namespace {h:?} does not exist in {}",
                netns::RUN_DIR
            )));
        }
        netns::enter(&netns::path(h))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(anyhow::anyhow!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let ctx = Ctx::new(inst)?.with_notes(|n| eprintln!("note: {n}"));
        cli::dispatch(&ctx, cli.cmd, host_netns).await
    })
}
