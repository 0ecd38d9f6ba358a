//! Desired state: networks, containers, published ports and rules, as the user asked for
//! them. The kernel side (maps, links, namespaces) is derived from it. Written atomically
//! (temp file, fsync, rename) so a crash leaves either the old or the new file, and a
//! journal marks commands in flight so the next command can repair what one left half-done.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use weir_common::config::Timeouts;

use crate::{
    error::{Context, Error, Result},
    instance::Instance,
};

pub const STATE_VERSION: u32 = 3;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    Auto,
    On,
    Off,
}

/// BIG TCP on the containers' links (`control init --big-tcp`): GSO and GRO packets past
/// 64 KiB. `Auto` follows the uplink (on where the uplink takes them, so traffic to the
/// world is never segmented in software for it).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BigTcp {
    #[default]
    Auto,
    On,
    Off,
}

impl BigTcp {
    pub fn name(self) -> &'static str {
        match self {
            BigTcp::Auto => "auto",
            BigTcp::On => "on",
            BigTcp::Off => "off",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Uplink {
    pub name: String,
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    /// Whether the XDP program is attached to it.
    pub xdp: bool,
    /// Every IPv4 address of the host namespace at `control init` (published ports without
    /// --host-ip answer on all of them, like Docker's `addrtype LOCAL`).
    #[serde(default)]
    pub host_addrs: Vec<Ipv4Addr>,
    /// The host namespace's global IPv6 addresses at `control init` (never link-local).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_addrs6: Vec<Ipv6Addr>,
    /// The uplink's global IPv6 address NAT66 falls back on (see `Config6::uplink_ip6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub id: u32,
    /// The IPv4 subnet and its gateway; None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    /// Dual stack: the IPv6 subnet and its gateway (`<prefix>::1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// The containers' MTU (`--mtu`), lower than the uplink's; None: the uplink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Its containers reach each other only by rule (`--isolated`; Docker's `enable_icc=false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A command was creating it and may not have finished.
    Creating,
    Ready,
    /// A command was removing it and may not have finished.
    Removing,
    /// Wired, but without its endpoint entry (it neither sends nor receives) until its front
    /// end learns the name rules may know it by (see [`Container::alias`]).
    AwaitingName,
}

impl Phase {
    /// Whether the container's links and namespace are complete (a command is not midway).
    pub fn is_wired(self) -> bool {
        matches!(self, Phase::Ready | Phase::AwaitingName)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub identity: u32,
    pub network: String,
    /// Its IPv4 address; None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    pub host_mac: String,
    pub host_if: String,
    pub host_ifindex: u32,
    pub phase: Phase,
    /// Netns path when the namespace was handed to us (CNI); we then never delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_netns: Option<String>,
    /// CNI container id, when created through weir-cni.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_id: Option<String>,
    /// CNI_IFNAME of that attachment: with the container id and the network, what names it
    /// (a DEL for another interface of the same container is not about this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_ifname: Option<String>,
    /// Another name this attachment answers to in rules, `ports` and `conntrack`: Docker's
    /// container name (the record is named after Docker's endpoint), or for a CLI container's
    /// further network, that container's name. Several records may share one: a container on
    /// several networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The container end's name when it is not `eth0` (a CLI container's further networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

impl Container {
    /// The /run/netns name of the namespace Weir made for this CLI attachment: the
    /// container's own name, which is the alias of its further networks' records. None when
    /// a runtime owns the namespace.
    pub fn weir_netns<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        match self.external_netns {
            Some(_) => None,
            None => Some(self.alias.as_deref().unwrap_or(name)),
        }
    }

    /// Whether removing this record removes its namespace: a CLI container's own record
    /// only, never a further network's (the namespace is the container's).
    pub fn owns_netns(&self) -> bool {
        self.external_netns.is_none() && self.alias.is_none()
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => weir_common::conntrack::IPPROTO_TCP,
            Proto::Udp => weir_common::conntrack::IPPROTO_UDP,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub xdp: XdpMode,
    pub conntrack_max: u32,
    pub timeouts: Timeouts,
    pub snat_ports: (u16, u16),
    /// The host's own ephemeral ports (its `net.ipv4.ip_local_port_range` when init last
    /// ran), which masquerading keeps clear of. Older state files lack it: Linux's default.
    #[serde(default = "default_host_ports")]
    pub host_ports: (u16, u16),
    /// Older state files lack it: `Auto`, which is what they had (64 KiB where the uplink is).
    #[serde(default)]
    pub big_tcp: BigTcp,
}

fn default_host_ports() -> (u16, u16) {
    let c = weir_common::config::Config::default();
    (c.host_port_min, c.host_port_max)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub schema: u32,
    pub instance: String,
    pub host_netns: Option<String>,
    pub uplink: Uplink,
    pub settings: Settings,
    /// Where the cgroup v2 hierarchy the sock_addr programs attach to is mounted.
    pub cgroup2: String,
    pub next_identity: u32,
    pub next_network_id: u32,
    pub networks: BTreeMap<String, Network>,
    /// Pairs of connected networks (names, sorted within a pair).
    pub net_links: Vec<(String, String)>,
    pub containers: BTreeMap<String, Container>,
    // Published ports and policy rules live in books of their own (`crate::published`,
    // `crate::rules`): they grow with the host, and a change must not rewrite them all.
}

impl State {
    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "no network named {name:?}: see `control network ls`"
            ))
        })
    }

    pub fn container(&self, name: &str) -> Result<&Container> {
        self.containers.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "no container named {name:?}: see `control container ls`"
            ))
        })
    }

    /// The records `name` selects: the one named so, and every one with it as alias.
    pub fn answering(&self, name: &str) -> Vec<&str> {
        self.containers
            .iter()
            .filter(|(n, c)| n.as_str() == name || c.alias.as_deref() == Some(name))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The identities `name` selects: one per attachment (a container on several networks has
    /// one per network).
    pub fn identities(&self, name: &str) -> Vec<u32> {
        self.answering(name)
            .into_iter()
            .filter_map(|n| self.containers.get(n).map(|c| c.identity))
            .collect()
    }

    /// Like [`answering`](Self::answering), but an error when `name` selects nothing.
    pub fn answering_some(&self, name: &str) -> Result<Vec<&str>> {
        let found = self.answering(name);
        if found.is_empty() {
            return Err(Error::not_found(format!(
                "no container named {name:?}: see `control container ls`"
            )));
        }
        Ok(found)
    }

    /// The one record `name` selects for a change made on one attachment (publishing): the
    /// record of that name, else the only one with it as alias.
    pub fn one_answering(&self, name: &str) -> Result<&str> {
        if let Some((n, _)) = self.containers.get_key_value(name) {
            return Ok(n.as_str());
        }
        match self.answering_some(name)?.as_slice() {
            [one] => Ok(one),
            many => Err(Error::invalid(format!(
                "{name:?} is on several networks ({}): name one of them",
                many.join(", ")
            ))),
        }
    }

    pub fn container_by_ip(&self, ip: Ipv4Addr) -> Option<(&String, &Container)> {
        self.containers.iter().find(|(_, c)| c.ip == Some(ip))
    }

    pub fn alloc_identity(&mut self) -> u32 {
        let id = self.next_identity;
        self.next_identity += 1;
        id
    }
}

fn read(inst: &Instance) -> Result<Option<String>> {
    let path = inst.state_file();
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Other(anyhow::anyhow!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

fn corrupt(inst: &Instance, e: serde_json::Error) -> Error {
    Error::CorruptState {
        path: inst.state_file(),
        reason: e.to_string(),
    }
}

fn check_version(inst: &Instance, version: u32) -> Result<()> {
    if version != STATE_VERSION {
        return Err(Error::Incompatible(format!(
            "state file {} has version {version} but this control understands {STATE_VERSION}: use the matching control binary, or `control down --force` and init again",
            inst.state_file().display()
        )));
    }
    Ok(())
}

/// Reads the state file: `Ok(None)` when the instance was never initialised.
pub fn load(inst: &Instance) -> Result<Option<State>> {
    let Some(text) = read(inst)? else {
        return Ok(None);
    };
    // The version first: a file from another release must be reported as such, not as corrupt.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_str(&text).map_err(|e| corrupt(inst, e))?;
    check_version(inst, v.version)?;
    let state: State = serde_json::from_str(&text).map_err(|e| corrupt(inst, e))?;
    Ok(Some(state))
}

/// The host namespace recorded at `control init`, if any. Every command needs it before it
/// can do anything else, so it is read without building the rest of the state.
pub fn recorded_host_netns(inst: &Instance) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Head {
        version: u32,
        host_netns: Option<String>,
    }
    let Some(text) = read(inst)? else {
        return Ok(None);
    };
    let head: Head = serde_json::from_str(&text).map_err(|e| corrupt(inst, e))?;
    // Only the name is needed here; loading checks the version (and `down --force` of another
    // release's instance must still enter the right namespace).
    let _ = head.version;
    Ok(head.host_netns)
}

/// Names of the namespaces Weir created for containers, read from a state file that does not
/// load (another release's or damaged), as far as it is readable: for `down --force`.
pub fn salvage_namespaces(inst: &Instance) -> Vec<String> {
    let Ok(Some(text)) = read(inst) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let Some(containers) = v.get("containers").and_then(|c| c.as_object()) else {
        return Vec::new();
    };
    containers
        .iter()
        .filter(|(_, c)| c.get("external_netns").is_none_or(|e| e.is_null()))
        .map(|(n, _)| n.clone())
        .filter(|n| crate::validate::name("container", n).is_ok())
        .collect()
}

/// Loads the state of an initialised instance.
pub fn load_required(inst: &Instance) -> Result<State> {
    load(inst)?.ok_or_else(|| Error::NotInitialised(inst.state_dir.clone()))
}

/// Writes `state` atomically and durably. Compact JSON: with 10,000 rules the file is over a
/// megabyte, and every change parses and writes it once (`jq .` makes it readable).
pub fn save(inst: &Instance, state: &State) -> Result<()> {
    let text = serde_json::to_vec(state).ctx(|| "serialising state".into())?;
    write_atomic(&inst.state_file(), &text, true)
}

/// Replaces `path` with `bytes` via a temp file and rename, so readers and crashes see the old
/// or the new content, never a mix. `durable` adds an fsync before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::File::create(&tmp).ctx(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .ctx(|| format!("writing {}", tmp.display()))?;
    if durable {
        f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
    }
    drop(f);
    fs::rename(&tmp, path).ctx(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Marks a command in flight. If the process dies before [`Journal::done`], the next command
/// finds the journal and reconciles the kernel with the state file.
pub struct Journal {
    path: std::path::PathBuf,
}

impl Journal {
    pub fn begin(inst: &Instance, what: &str) -> Result<Self> {
        let path = inst.journal_file();
        // Not fsynced: it guards against a command dying (kill, panic), after which the page
        // cache still has it; after a machine crash there is no kernel state left to repair.
        write_atomic(&path, what.as_bytes(), false)?;
        Ok(Self { path })
    }

    pub fn done(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Other(anyhow::anyhow!(
                "removing {}: {e}",
                self.path.display()
            ))),
        }
    }
}

/// When the pending journal `what` is an interrupted `control init`, what to tell the user:
/// only init itself can finish that (it needs its options and reloads the programs), so no
/// other command "repairs" it.
pub fn unfinished_init(what: &str) -> Option<String> {
    let what = what.trim();
    (what == "init" || what.starts_with("init "))
        .then(|| format!("an earlier `control {what}` was interrupted: run it again to finish"))
}

/// The interrupted command's description, if the previous command did not finish.
pub fn pending_journal(inst: &Instance) -> Option<String> {
    fs::read_to_string(inst.journal_file()).ok()
}
