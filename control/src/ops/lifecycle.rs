//! `control init` and `control down`.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use aya::programs::TcAttachType;
use serde::Serialize;
use weir_common::{SCHEMA_VERSION, config::Timeouts, maps as names};

use super::{Ctx, container, reconcile, restore, shape, tx};
use crate::{
    cgroup,
    datapath::{self, links, maps},
    desired,
    error::{Error, Result},
    instance::Instance,
    netlink, netns, snat_ports,
    state::{self, BigTcp, Settings, State, Uplink, XdpMode},
};

/// Where every network's gateway address lives (as a /32) so the host owns those addresses
/// without a bridge. Loopback: always present (this kernel has no dummy driver) and never
/// carries traffic to containers, which follows the per-container /32 routes.
pub const GATEWAY_DEV: &str = "lo";

#[derive(Default, Debug)]
pub struct InitOpts {
    pub host_netns: Option<String>,
    pub uplink: Option<String>,
    pub xdp: Option<XdpMode>,
    pub big_tcp: Option<BigTcp>,
    pub conntrack_max: Option<u32>,
    pub timeouts: Vec<(String, u32)>,
    pub snat_ports: Option<(u16, u16)>,
    /// CLI containers whose links are gone (a reboot): recreated or forgotten.
    pub missing: restore::Missing,
}

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub state_dir: String,
    pub pin_dir: String,
    pub uplink: String,
    pub uplink_ip: Ipv4Addr,
    pub xdp: bool,
    pub xdp_note: Option<String>,
    pub reinitialised: bool,
    pub containers_updated: usize,
    pub snat_ports: (u16, u16),
    /// Why the instance's SNAT ports moved, when they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat_note: Option<String>,
    /// Containers whose links took a changed MTU or GSO size (the uplink's, or `--big-tcp`).
    pub mtu_resynced: usize,
    /// The GSO sizes container links get (BIG TCP past 65,536).
    pub gso: crate::netlink::Gso<u32>,
    /// Containers whose links were gone (after a reboot), and what became of them.
    pub restored: restore::Restored,
}

/// Refuses a host namespace another instance (another state dir) already serves: two would
/// share the uplink, the gateway device and the `wr-` names, and undo each other's work.
fn sole_instance(inst: &Instance) -> Result<()> {
    let Some(parent) = inst.pin_dir.parent() else {
        return Ok(());
    };
    let Ok(dirs) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let here = netns::cookie()?;
    for d in dirs.flatten() {
        let id = d.file_name().to_string_lossy().into_owned();
        if id == inst.id {
            continue;
        }
        let other = Instance {
            state_dir: Default::default(),
            id,
            pin_dir: d.path(),
        };
        if let Ok(Some(cfg)) = maps::read_config(&other)
            && cfg.netns_cookie == here
        {
            return Err(Error::conflict(format!(
                "another Weir instance (pins {}) already serves this host namespace: use its --state-dir, or `control down` it first",
                other.pin_dir.display()
            )));
        }
    }
    Ok(())
}

pub async fn init(ctx: &Ctx, opts: InitOpts) -> Result<InitReport> {
    datapath::ensure_bpffs()?;
    let _lock = ctx.inst.lock()?;
    let prev = state::load(&ctx.inst)?;
    if let (Some(p), Some(want)) = (&prev, &opts.host_netns)
        && p.host_netns.as_deref() != Some(want.as_str())
    {
        return Err(Error::conflict(format!(
            "this instance serves host namespace {:?}, not {want:?}: use another --state-dir or `control down` first",
            p.host_netns.as_deref().unwrap_or("(the current one)")
        )));
    }
    datapath::check_pinned(&ctx.inst, prev.as_ref().map(|p| p.settings.conntrack_max))?;
    sole_instance(&ctx.inst)?;
    let (settings, snat_note) = merge_settings(
        prev.as_ref().map(|p| &p.settings),
        &opts,
        ctx.inst.map_pin(names::CONNTRACK).exists(),
        snat_ports::host_ephemeral()?,
    )?;
    let uplink = resolve_uplink(
        ctx,
        opts.uplink
            .as_deref()
            .or(prev.as_ref().map(|p| p.uplink.name.as_str())),
    )
    .await?;
    let mut st = prev
        .clone()
        .unwrap_or_else(|| fresh_state(ctx, &opts, &uplink, &settings));
    // Names the uplink: an interrupted init is finished by running it again (see Ctx::begin).
    // The state is saved only once everything is in place: until then the journal alone says
    // that init has to run again.
    let what = format!("init --uplink {}", uplink.name);
    tx::run(ctx, &what, &mut (), async |_| {
        if let Some(p) = &prev
            && p.uplink.name != uplink.name
        {
            for link in datapath::UPLINK_LINKS {
                links::unpin(&ctx.inst, link)?;
            }
        }
        st.settings = settings.clone();
        st.schema = SCHEMA_VERSION;
        let _bpf = datapath::load_and_pin(&ctx.inst, settings.conntrack_max)?;
        // A `control monitor` listening right now keeps listening through the upgrade.
        let listening = maps::read_config(&ctx.inst)
            .ok()
            .flatten()
            .map_or(0, |c| c.flags & weir_common::config::flags::EVENTS);
        let cfg = desired::config(&uplink, &settings, netns::cookie()?, listening);
        maps::write_config(&ctx.inst, &cfg)?;
        // Before anything attaches to them: links a reboot took are made again (or their
        // containers forgotten), so attach_all finds every ready container's veth.
        ensure_gateway_dev(ctx, &st).await?;
        let restored = restore::missing_containers(ctx, &mut st, opts.missing).await?;
        let attached = attach_all(ctx, &mut st, &uplink, &settings.xdp).await?;
        // Fresh maps get everything; kept maps are brought in line with the state (normally a no-op).
        reconcile::sync_maps(ctx, &st)?;
        let mtu_resynced = shape::resync(ctx, &st).await?;
        let up = shape::uplink(ctx, &st).await?.unwrap_or(shape::FALLBACK);
        let gso = shape::gso(st.settings.big_tcp, up.1);
        state::save(&ctx.inst, &st)?;
        Ok(InitReport {
            state_dir: ctx.inst.state_dir.display().to_string(),
            pin_dir: ctx.inst.pin_dir.display().to_string(),
            uplink: uplink.name.clone(),
            uplink_ip: uplink.ip,
            xdp: attached.xdp,
            xdp_note: attached.xdp_note,
            reinitialised: prev.is_some(),
            containers_updated: attached.containers,
            snat_ports: settings.snat_ports,
            snat_note,
            mtu_resynced,
            gso,
            restored,
        })
    })
    .await
}

/// The state of an instance initialised for the first time.
fn fresh_state(ctx: &Ctx, opts: &InitOpts, uplink: &Uplink, settings: &Settings) -> State {
    State {
        version: state::STATE_VERSION,
        schema: SCHEMA_VERSION,
        instance: ctx.inst.id.clone(),
        host_netns: opts.host_netns.clone(),
        uplink: uplink.clone(),
        settings: settings.clone(),
        cgroup2: String::new(),
        next_identity: weir_common::policy::IDENTITY_FIRST_CONTAINER,
        next_network_id: 1,
        networks: BTreeMap::new(),
        net_links: Vec::new(),
        containers: BTreeMap::new(),
    }
}

/// The settings of an init: explicit flags, else what the instance already had (`prev`),
/// else defaults. `conntrack_pinned`: the conntrack map exists already (its size is fixed).
/// `host_ports`: the host's ephemeral ports, which the SNAT ports keep clear of; the note
/// says why the SNAT ports moved, when they did.
pub fn merge_settings(
    prev: Option<&Settings>,
    opts: &InitOpts,
    conntrack_pinned: bool,
    host_ports: (u16, u16),
) -> Result<(Settings, Option<String>)> {
    let mut settings = prev.cloned().unwrap_or(Settings {
        xdp: XdpMode::Auto,
        conntrack_max: names::CONNTRACK_MAX,
        timeouts: Timeouts::KERNEL_DEFAULTS,
        // Both chosen below, from the host's ephemeral ports.
        snat_ports: (0, 0),
        host_ports: (0, 0),
        big_tcp: BigTcp::Auto,
    });
    if let Some(x) = &opts.xdp {
        settings.xdp = x.clone();
    }
    if let Some(b) = opts.big_tcp {
        settings.big_tcp = b;
    }
    if let Some(n) = opts.conntrack_max {
        if !(64..=16_777_216).contains(&n) {
            return Err(Error::invalid(format!(
                "--conntrack-max {n} is out of range: use 64 to 16777216"
            )));
        }
        if prev.is_some() && n != settings.conntrack_max && conntrack_pinned {
            return Err(Error::conflict(format!(
                "the conntrack map already holds up to {} entries; its size changes only after `control down`",
                settings.conntrack_max
            )));
        }
        settings.conntrack_max = n;
    }
    for (k, v) in &opts.timeouts {
        let slot = settings.timeouts.get_mut(k).ok_or_else(|| {
            Error::invalid(format!(
                "unknown conntrack timeout {k:?}: use one of {}",
                Timeouts::NAMES.join(", ")
            ))
        })?;
        if *v == 0 || *v > 2_000_000 {
            return Err(Error::invalid(format!(
                "timeout {k}={v} is out of range: use 1 to 2000000 seconds"
            )));
        }
        *slot = *v;
    }
    let (snat, note) = snat_ports::choose(opts.snat_ports, prev.map(|p| p.snat_ports), host_ports)?;
    settings.snat_ports = snat;
    settings.host_ports = host_ports;
    Ok((settings, note))
}

/// What [`attach_all`] attached.
struct Attached {
    xdp: bool,
    xdp_note: Option<String>,
    containers: usize,
}

/// Attaches every program (or swaps programs under existing links: established flows see no
/// gap): the uplink's, the cgroup's and every ready container's; then the gateway device and
/// the host addresses in `st`.
async fn attach_all(ctx: &Ctx, st: &mut State, uplink: &Uplink, xdp: &XdpMode) -> Result<Attached> {
    links::tc_attach(
        &ctx.inst,
        datapath::UPLINK_TC,
        &uplink.name,
        TcAttachType::Ingress,
        datapath::UPLINK_TC,
    )?;
    links::tc_attach(
        &ctx.inst,
        datapath::UPLINK_EGRESS,
        &uplink.name,
        TcAttachType::Egress,
        datapath::UPLINK_EGRESS,
    )?;
    let (xdp, xdp_note) = attach_xdp(ctx, xdp, uplink).await?;
    let cg = cgroup::root()?;
    for p in datapath::SOCK_PROGRAMS {
        links::cgroup_attach(&ctx.inst, p, &cg)?;
    }
    st.cgroup2 = cg.display().to_string();
    let mut containers = 0;
    for c in st.containers.values().filter(|c| c.phase.is_wired()) {
        links::container_attach(&ctx.inst, c.identity, &c.host_if)?;
        containers += 1;
    }
    let gateways: Vec<Ipv4Addr> = st.networks.values().filter_map(|n| n.gateway).collect();
    let host_addrs = netlink::ipv4_addrs(&ctx.nl, None)
        .await?
        .into_iter()
        .map(|(_, ip, _)| ip)
        .filter(|ip| !ip.is_loopback() && !gateways.contains(ip))
        .collect();
    let gateways6: Vec<std::net::Ipv6Addr> =
        st.networks.values().filter_map(|n| n.gateway6).collect();
    let host_addrs6 = netlink::ipv6_global_addrs(&ctx.nl, None)
        .await?
        .into_iter()
        .filter(|ip| !gateways6.contains(ip))
        .collect();
    st.uplink = Uplink {
        xdp,
        host_addrs,
        host_addrs6,
        ..uplink.clone()
    };
    Ok(Attached {
        xdp,
        xdp_note,
        containers,
    })
}

async fn resolve_uplink(ctx: &Ctx, name: Option<&str>) -> Result<Uplink> {
    let link = match name {
        Some(n) => netlink::link_by_name(&ctx.nl, n).await?.ok_or_else(|| {
            Error::not_found(format!(
                "no interface {n:?} in the host namespace: pass an existing --uplink"
            ))
        })?,
        None => {
            let idx = netlink::default_route_ifindex(&ctx.nl)
                .await?
                .ok_or_else(|| {
                    Error::invalid(
                        "the host namespace has no IPv4 default route: pass --uplink IFACE",
                    )
                })?;
            netlink::link_by_index(&ctx.nl, idx).await?.ok_or_else(|| {
                Error::not_found(format!("default route interface #{idx} vanished"))
            })?
        }
    };
    let addrs = netlink::ipv4_addrs(&ctx.nl, Some(link.index)).await?;
    let ip = addrs.first().map(|a| a.1).ok_or_else(|| {
        Error::invalid(format!(
            "uplink {} has no IPv4 address: add one or pick another --uplink",
            link.name
        ))
    })?;
    let ip6 = netlink::ipv6_global_addrs(&ctx.nl, Some(link.index))
        .await?
        .into_iter()
        .next();
    Ok(Uplink {
        name: link.name,
        ifindex: link.index,
        ip,
        xdp: false,
        host_addrs: Vec::new(),
        host_addrs6: Vec::new(),
        ip6,
    })
}

async fn attach_xdp(ctx: &Ctx, mode: &XdpMode, uplink: &Uplink) -> Result<(bool, Option<String>)> {
    let link = datapath::UPLINK_XDP;
    match mode {
        XdpMode::Off => {
            links::unpin(&ctx.inst, link)?;
            Ok((false, None))
        }
        XdpMode::On => {
            links::xdp_attach(&ctx.inst, &uplink.name, link, false).or_else(|e| {
                links::xdp_attach(&ctx.inst, &uplink.name, link, true).map_err(|_| e)
            })?;
            Ok((true, None))
        }
        XdpMode::Auto => {
            let kind = netlink::link_by_index(&ctx.nl, uplink.ifindex)
                .await?
                .and_then(|l| l.kind);
            if let Some(k) = kind.filter(|k| netlink::is_virtual_kind(k)) {
                links::unpin(&ctx.inst, link)?;
                // Native XDP on a veth turns TSO off on its peer (DESIGN.md §2): not by default.
                return Ok((
                    false,
                    Some(format!(
                        "uplink is a {k} device: XDP not attached (use --xdp on to force)"
                    )),
                ));
            }
            match links::xdp_attach(&ctx.inst, &uplink.name, link, false) {
                Ok(()) => Ok((true, None)),
                Err(e) => Ok((
                    false,
                    Some(format!("native XDP unavailable on {}: {e}", uplink.name)),
                )),
            }
        }
    }
}

/// Gives the gateway device (up) every network's gateway address.
pub async fn ensure_gateway_dev(ctx: &Ctx, st: &State) -> Result<()> {
    let dev = netlink::link_by_name(&ctx.nl, GATEWAY_DEV)
        .await?
        .ok_or_else(|| Error::Other(anyhow::anyhow!("{GATEWAY_DEV} vanished after creation")))?;
    netlink::set_up(&ctx.nl, dev.index).await?;
    for n in st.networks.values() {
        if let Some(gw) = n.gateway {
            netlink::add_addr(&ctx.nl, dev.index, gw, 32).await?;
        }
        if let Some(gw6) = n.gateway6 {
            netlink::add_addr6(&ctx.nl, dev.index, gw6, 128).await?;
        }
    }
    Ok(())
}

#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    pub containers_removed: Vec<String>,
    pub warnings: Vec<String>,
    pub was_initialised: bool,
}

/// What `down` does when the state file cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Refuse: the state names what to remove.
    Refuse,
    /// Proceed (`--force`), removing what can be found without it.
    Proceed,
}

/// Removes everything this instance created; `unreadable` says what to do without a readable
/// state file.
pub async fn down(ctx: &Ctx, unreadable: Unreadable) -> Result<DownReport> {
    let force = unreadable == Unreadable::Proceed;
    let mut report = DownReport::default();
    let lock = ctx.inst.lock()?;
    let st = match state::load(&ctx.inst) {
        Ok(s) => s,
        Err(e) if force => {
            report
                .warnings
                .push(format!("ignoring unreadable state: {e}"));
            None
        }
        Err(e) => return Err(e),
    };
    report.was_initialised = st.is_some() || ctx.inst.pin_dir.exists();
    let st_for_gw = st.clone();
    if let Some(mut st) = st {
        let names: Vec<String> = st.containers.keys().cloned().collect();
        for n in names {
            container::teardown(ctx, &st, &n).await;
            st.containers.remove(&n);
            report.containers_removed.push(n);
        }
    } else if force {
        // Without state: the namespaces of containers still named in an unreadable file
        // (another release's, say), and host-side veths named like ours.
        for n in state::salvage_namespaces(&ctx.inst) {
            if netns::delete(&n).is_ok() {
                report.containers_removed.push(n);
            }
        }
        for l in netlink::links(&ctx.nl).await? {
            if l.name.starts_with("wr-") {
                let _ = netlink::delete_link(&ctx.nl, l.index).await;
            }
        }
    }
    // Without a readable state the pinned subnet map still names the networks: their gateway
    // addresses go too (left on the gateway device, the host would answer them forever).
    let gateways: Vec<Ipv4Addr> = match &st_for_gw {
        Some(st) => st.networks.values().filter_map(|n| n.gateway).collect(),
        None => pinned_gateways(ctx),
    };
    // (IPv6 gateways need a readable state: the IPv6 subnet trie's keys name prefixes only.)
    let gateways6: Vec<std::net::Ipv6Addr> = st_for_gw
        .iter()
        .flat_map(|st| st.networks.values().filter_map(|n| n.gateway6))
        .collect();
    if let Some(dev) = netlink::link_by_name(&ctx.nl, GATEWAY_DEV).await? {
        for gw in gateways {
            netlink::del_addr(&ctx.nl, dev.index, gw).await?;
        }
        for gw in gateways6 {
            netlink::del_addr6(&ctx.nl, dev.index, gw).await?;
        }
    }
    remove_tree(&ctx.inst.pin_dir, &mut report.warnings);
    // The per-instance parent directory /sys/fs/bpf/weir stays if other instances use it.
    if let Some(parent) = ctx.inst.pin_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    drop(lock);
    remove_state_files(&ctx.inst, &mut report.warnings);
    Ok(report)
}

/// Removes the files Weir keeps in the state dir, then the dir if that left it empty: the
/// user may have pointed --state-dir at a directory holding other things.
fn remove_state_files(inst: &Instance, warnings: &mut Vec<String>) {
    let ours = [
        inst.state_file(),
        inst.rules_file(),
        inst.publishes_file(),
        inst.journal_file(),
        inst.lock_file(),
    ];
    for f in &ours {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!("could not remove {}: {e}", f.display())),
        }
    }
    crate::instance::remove_stale_temp_files(&inst.state_dir);
    let _ = std::fs::remove_dir(&inst.state_dir);
}

/// Gateways (first host address) of the networks in the pinned subnet map, if it is there.
fn pinned_gateways(ctx: &Ctx) -> Vec<Ipv4Addr> {
    if !ctx.inst.map_pin(names::SUBNETS).exists() {
        return Vec::new();
    }
    let Ok(trie) = maps::subnets(&ctx.inst) else {
        return Vec::new();
    };
    trie.keys()
        .filter_map(|k| k.ok())
        .filter_map(|k| {
            let net =
                ipnet::Ipv4Net::new(weir_common::addr::to_std(k.data()), k.prefix_len() as u8);
            net.ok()?.hosts().next()
        })
        .collect()
}

fn remove_tree(p: &Path, warnings: &mut Vec<String>) {
    if !p.exists() {
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(p) {
        warnings.push(format!("could not remove {}: {e}", p.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's default ephemeral ports.
    const HOST: (u16, u16) = (32768, 60999);

    fn opts() -> InitOpts {
        InitOpts::default()
    }

    #[test]
    fn defaults_without_flags_or_history() {
        let s = merge_settings(None, &opts(), false, HOST).unwrap().0;
        assert_eq!(s.xdp, XdpMode::Auto);
        assert_eq!(s.conntrack_max, names::CONNTRACK_MAX);
        assert_eq!(s.snat_ports, (1024, 32767), "beside the host's, not in it");
        assert_eq!(s.host_ports, HOST);
        assert_eq!(s.big_tcp, BigTcp::Auto, "follows the uplink");
    }

    #[test]
    fn flags_beat_history_and_history_beats_defaults() {
        let prev = Settings {
            xdp: XdpMode::Off,
            conntrack_max: 1000,
            timeouts: Timeouts::KERNEL_DEFAULTS,
            snat_ports: (10000, 20000),
            host_ports: HOST,
            big_tcp: BigTcp::On,
        };
        let kept = merge_settings(Some(&prev), &opts(), true, HOST).unwrap().0;
        assert_eq!(
            (kept.xdp, kept.snat_ports, kept.big_tcp),
            (XdpMode::Off, (10000, 20000), BigTcp::On)
        );
        let o = InitOpts {
            xdp: Some(XdpMode::On),
            snat_ports: Some((1024, 2048)),
            big_tcp: Some(BigTcp::Off),
            ..opts()
        };
        let s = merge_settings(Some(&prev), &o, true, HOST).unwrap().0;
        assert_eq!(
            (s.xdp, s.snat_ports, s.big_tcp),
            (XdpMode::On, (1024, 2048), BigTcp::Off)
        );
        // An instance from before the host's range was kept clear moves, and says so.
        let old = Settings {
            snat_ports: HOST,
            ..prev
        };
        let (moved, note) = merge_settings(Some(&old), &opts(), true, HOST).unwrap();
        assert_eq!(moved.snat_ports, (1024, 32767));
        assert!(note.is_some());
    }

    #[test]
    fn conntrack_size_is_fixed_once_pinned() {
        let prev = merge_settings(None, &opts(), false, HOST).unwrap().0;
        let o = InitOpts {
            conntrack_max: Some(4096),
            ..opts()
        };
        assert!(matches!(
            merge_settings(Some(&prev), &o, true, HOST),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            merge_settings(Some(&prev), &o, false, HOST)
                .unwrap()
                .0
                .conntrack_max,
            4096
        );
        let huge = InitOpts {
            conntrack_max: Some(1 << 30),
            ..opts()
        };
        assert!(matches!(
            merge_settings(None, &huge, false, HOST),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn timeouts_are_named_and_bounded() {
        let bad_name = InitOpts {
            timeouts: vec![("nope".into(), 5)],
            ..opts()
        };
        assert!(matches!(
            merge_settings(None, &bad_name, false, HOST),
            Err(Error::Invalid(_))
        ));
        let name = Timeouts::NAMES[0].to_string();
        let zero = InitOpts {
            timeouts: vec![(name.clone(), 0)],
            ..opts()
        };
        assert!(merge_settings(None, &zero, false, HOST).is_err());
        let ok = InitOpts {
            timeouts: vec![(name.clone(), 7)],
            ..opts()
        };
        let mut s = merge_settings(None, &ok, false, HOST).unwrap().0;
        assert_eq!(*s.timeouts.get_mut(&name).unwrap(), 7);
    }
}
