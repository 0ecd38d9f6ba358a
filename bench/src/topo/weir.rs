//! Weir: `control init` on the sandbox's uplink (IPv4 and IPv6), one dual-stack network
//! 10.99.0.0/24 + fd00:99::/64, the client and server containers at fixed addresses, the
//! server's ports published (both families, no host IP given) — no bridge, no rule.
//!
//! Filler published ports belong to filler containers (`container create --publish ...`, one
//! command per count step); filler isolation rules are `isolate A B` pairs among dummy
//! containers, added with `rules import` (Weir rules name existing containers: 10,000 pairs
//! need 142 dummies).

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use rig::{Netns, Sandbox};

use super::{
    CLIENT_IP, CLIENT_IP6, PUBLISHED, SERVER_IP, SERVER_IP6, SUBNET, SUBNET6, Scratch, Topology,
    dummies_for, dummy_ip, dummy_ip6, pair, port, route_ext_to_containers,
    route_ext_to_containers6, timed_here,
};

pub struct Weir {
    label: &'static str,
    client: Netns,
    server: Netns,
    sandbox: Sandbox,
    network: String,
    ports: usize,
    fillers: usize,
    rules: usize,
    dummies: usize,
    /// Whether this build of `control` has IPv6 (a baseline from before it has not).
    ipv6: bool,
}

impl Weir {
    /// `xdp`: attach `uplink_xdp` too (only for the drop-rate workload: native XDP on a veth
    /// turns TSO off on its peer, which would hurt every other workload).
    pub fn build(control: &Path, xdp: bool) -> Result<Self> {
        if xdp {
            Self::build_as(control, &["--xdp", "on"], "weir-xdp")
        } else {
            Self::build_as(control, &[], "weir")
        }
    }

    /// The same topology on another build of `control` (`--baseline-control`), so that a
    /// change is measured against the code before it in the same interleaved run.
    pub fn baseline(control: &Path) -> Result<Self> {
        Self::build_as(control, &[], "weir-base")
    }

    /// Weir with BIG TCP on the containers' links (`control init --big-tcp on`).
    pub fn big_tcp(control: &Path) -> Result<Self> {
        Self::build_as(control, &["--big-tcp", "on"], crate::cli::BIG_TCP)
    }

    /// `init_extra`: flags for `control init` beside the uplink (XDP is off unless given).
    fn build_as(control: &Path, init_extra: &[&str], label: &'static str) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        let ipv6 = has_ipv6(control)?;
        // Before `init`: ports published without a host IP answer on the addresses the host
        // has at `init`, IPv6 ones included.
        sandbox.add_ipv6();
        let mut me = Self {
            label,
            client: Netns::borrowed(&sandbox.name("cli")),
            server: Netns::borrowed(&sandbox.name("srv")),
            network: sandbox.name("n"),
            sandbox,
            ports: 0,
            fillers: 0,
            rules: 0,
            dummies: 0,
            ipv6,
        };
        let mut init = vec!["init", "--uplink", "up0"];
        if !init_extra.contains(&"--xdp") {
            init.extend(["--xdp", "off"]);
        }
        init.extend_from_slice(init_extra);
        me.ctl(&init)?;
        let net = me.network.clone();
        let mut a = vec!["network", "create", &net, "--subnet", SUBNET];
        if ipv6 {
            a.extend(["--subnet6", SUBNET6]);
        }
        me.ctl(&a)?;
        let cli = me.client.name.clone();
        me.ctl(&me.v6(
            &[
                "container",
                "create",
                &cli,
                "--network",
                &net,
                "--ip",
                CLIENT_IP,
            ],
            CLIENT_IP6,
        ))?;
        let srv = me.server.name.clone();
        let mut a: Vec<String> = me
            .v6(
                &[
                    "container",
                    "create",
                    &srv,
                    "--network",
                    &net,
                    "--ip",
                    SERVER_IP,
                ],
                SERVER_IP6,
            )
            .into_iter()
            .map(String::from)
            .collect();
        for (p, proto) in PUBLISHED {
            a.push("--publish".into());
            a.push(format!("{p}:{p}/{proto}"));
        }
        me.ctl(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
        route_ext_to_containers(&me.sandbox.ext)?;
        if ipv6 {
            route_ext_to_containers6(&me.sandbox.ext)?;
        }
        Ok(me)
    }

    /// `args` with `--ip6 ip6` when this build has IPv6.
    fn v6<'a>(&self, args: &[&'a str], ip6: &'a str) -> Vec<&'a str> {
        let mut v = args.to_vec();
        if self.ipv6 {
            v.extend(["--ip6", ip6]);
        }
        v
    }

    /// Runs `control` against this instance.
    fn ctl(&mut self, args: &[&str]) -> Result<String> {
        let o = self.sandbox.control(args);
        if !o.status.success() {
            bail!(
                "control {}: {}",
                args.join(" "),
                rig::text(&o.stderr).trim()
            );
        }
        Ok(rig::text(&o.stdout))
    }

    fn control_argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            self.sandbox.control.to_str().unwrap_or_default(),
            "--state-dir",
            self.sandbox.state_dir.to_str().unwrap_or_default(),
        ];
        v.extend_from_slice(args);
        v
    }

    fn dummy(&self, i: usize) -> String {
        self.sandbox.name(&format!("d{i}"))
    }

    fn ensure_dummies(&mut self, n: usize) -> Result<()> {
        while self.dummies < n {
            let (name, ip, ip6, net) = (
                self.dummy(self.dummies),
                dummy_ip(self.dummies),
                dummy_ip6(self.dummies),
                self.network.clone(),
            );
            let a = self.v6(
                &["container", "create", &name, "--network", &net, "--ip", &ip],
                &ip6,
            );
            self.ctl(&a)?;
            self.dummies += 1;
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<serde_json::Value> {
        let o = self.sandbox.control(&["stats", "--json"]);
        if !o.status.success() {
            bail!("control stats: {}", rig::text(&o.stderr).trim());
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

impl Topology for Weir {
    fn label(&self) -> &'static str {
        self.label
    }
    fn ext(&self) -> &Netns {
        &self.sandbox.ext
    }
    fn client(&self) -> &Netns {
        &self.client
    }
    fn server(&self) -> &Netns {
        &self.server
    }
    fn ipv6(&self) -> bool {
        self.ipv6
    }

    fn set_published_ports(&mut self, total: usize) -> Result<()> {
        if total <= self.ports {
            return Ok(());
        }
        let name = self.sandbox.name(&format!("f{}", self.fillers));
        let ip = format!("10.99.0.{}", 10 + self.fillers);
        let ip6 = format!("fd00:99::{}", 10 + self.fillers);
        let net = self.network.clone();
        let mut a: Vec<String> = self
            .v6(
                &["container", "create", &name, "--network", &net, "--ip", &ip],
                &ip6,
            )
            .into_iter()
            .map(String::from)
            .collect();
        for i in self.ports..total {
            let p = port::FILLER_BASE + i as u16;
            a.push("--publish".into());
            a.push(format!("{p}:{p}"));
        }
        self.ctl(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
        self.fillers += 1;
        self.ports = total;
        Ok(())
    }

    fn set_isolation_rules(&mut self, total: usize) -> Result<()> {
        // A few dummies even at 0 rules, so `time_isolate` has partners.
        self.ensure_dummies(dummies_for(total).max(4))?;
        if total <= self.rules {
            return Ok(());
        }
        let lines: Vec<String> = (self.rules..total)
            .map(|k| {
                let (a, b) = pair(k);
                format!("isolate {} {}", self.dummy(a), self.dummy(b))
            })
            .collect();
        let f = Scratch::file(&format!("{}-rules", self.sandbox.id), &lines.join("\n"))?;
        self.ctl(&["rules", "import", f.path.to_str().unwrap()])?;
        self.rules = total;
        Ok(())
    }

    fn time_publish(&mut self, i: usize) -> Result<Option<Duration>> {
        let p = port::UPDATE_BASE + i as u16;
        let (srv, spec) = (self.server.name.clone(), format!("{p}:{}", port::HTTP));
        let d = timed_here(&self.control_argv(&["publish", &srv, &spec]))?;
        self.ctl(&["unpublish", &srv, &p.to_string()])?;
        Ok(Some(d))
    }

    fn time_isolate(&mut self, i: usize) -> Result<Option<Duration>> {
        self.ensure_dummies(4)?;
        let (cli, d) = (self.client.name.clone(), self.dummy(i % self.dummies));
        let t = timed_here(&self.control_argv(&["isolate", &cli, &d]))?;
        self.ctl(&["unisolate", &cli, &d])?;
        Ok(Some(t))
    }

    fn direct_drops(&self) -> Result<Option<u64>> {
        let s = self.stats()?;
        Ok(Some(
            s["drops"]["not-published"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
                .unwrap_or(0),
        ))
    }
}

/// Whether a build of `control` has IPv6 networks (`network create --subnet6`): a baseline
/// from before the IPv6 work runs the IPv4 workloads only.
fn has_ipv6(control: &Path) -> Result<bool> {
    let o = std::process::Command::new(control)
        .args(["network", "create", "--help"])
        .output()
        .with_context(|| format!("running {}", control.display()))?;
    Ok(rig::text(&o.stdout).contains("--subnet6"))
}
