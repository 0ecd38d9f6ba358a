//! End-to-end tests: each one builds sandboxed hosts with the `rig` crate (a "host" namespace
//! running its own Weir instance, an "ext" namespace behind its uplink, containers), drives
//! them with the `control` binary and checks the traffic, the kernel's objects and the maps.
//! One module per concern; helpers several modules share live in `rig`, or here when they
//! read the instance through the control library.

mod big_tcp;
mod checksums;
mod cli;
mod crafted;
mod cut;
mod drift;
mod exhaustion;
mod forwarding;
mod hardening;
mod host_ports;
mod inspect;
mod instance;
mod ipv6;
mod leftovers;
mod live_flows;
mod masquerade;
mod metrics;
mod monitor;
mod multinet;
mod network_options;
mod policy;
mod publish;
mod reboot;
mod repair;
mod session;
mod upgrade;
mod uplink;

/// The `control` binary under test.
const CONTROL: &str = env!("CARGO_BIN_EXE_control");

/// A command line of a table row, split at spaces, with each `$name` word replaced by its value
/// in `vars` (a value may hold spaces or be empty: it stays one argument).
fn expand(line: &str, vars: &[(&str, &str)]) -> Vec<String> {
    line.split_whitespace()
        .map(|w| match w.strip_prefix('$') {
            Some(name) => vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| panic!("{line:?}: no value for ${name}")),
            None => w.to_string(),
        })
        .collect()
}
