//! The Docker-equivalent baseline: a Linux bridge `br0` (10.99.0.1/24) with the containers'
//! veths enslaved, kernel forwarding on, and Docker's iptables rules (DESIGN.md §6) — all
//! inside the sandbox's host namespace (iptables there never touches the root namespace).
//! Bridged container-to-container traffic passes iptables too (bridge-nf-call-iptables is 1
//! in every namespace here, as Docker requires). IPv6 is Docker 27's `--ipv6` network with
//! ip6tables on: gateway fd00:99::1/64 on the bridge, the same rules in ip6tables (NAT66
//! MASQUERADE, DNAT `! -s fe80::/10`), IPv6 forwarding on in the sandbox's host namespace.

use std::time::Duration;

use anyhow::Result;
use rig::{Netns, Sandbox};

use super::{
    CLIENT_IP, CLIENT_IP6, GATEWAY, GATEWAY6, SERVER_IP, SERVER_IP6, Topology, dummy_ip, dummy_ip6,
    enable_forwarding, ip6tables_restore, iptables, iptables_restore, must, port,
    route_ext_to_containers, route_ext_to_containers6, timed_in, veth,
};

const BR: &str = "br0";

pub struct Bridge {
    // Field order is drop order: containers before the sandbox.
    client: Netns,
    server: Netns,
    sandbox: Sandbox,
    ports: usize,
    rules: usize,
}

impl Bridge {
    pub fn build(control: &std::path::Path) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        sandbox.add_ipv6();
        let client = Netns::new(&sandbox.name("cli"));
        let server = Netns::new(&sandbox.name("srv"));
        let host = &sandbox.host;
        must(host, &["ip", "link", "add", BR, "type", "bridge"])?;
        must(
            host,
            &["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", BR],
        )?;
        let gw6 = format!("{GATEWAY6}/64");
        must(host, &["ip", "-6", "addr", "add", &gw6, "dev", BR, "nodad"])?;
        must(host, &["ip", "link", "set", BR, "up"])?;
        let ends = [
            (&client, CLIENT_IP, CLIENT_IP6, "vc"),
            (&server, SERVER_IP, SERVER_IP6, "vs"),
        ];
        for (c, ip, ip6, hostif) in ends {
            veth(host, hostif, c, "eth0")?;
            must(host, &["ip", "link", "set", hostif, "master", BR])?;
            must(
                c,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            let a6 = format!("{ip6}/64");
            must(c, &["ip", "-6", "addr", "add", &a6, "dev", "eth0", "nodad"])?;
            must(c, &["ip", "route", "add", "default", "via", GATEWAY])?;
            must(c, &["ip", "-6", "route", "add", "default", "via", GATEWAY6])?;
        }
        enable_forwarding(host)?;
        let base = iptables::docker_base(BR, &[CLIENT_IP, SERVER_IP], &iptables::V4);
        iptables_restore(host, &base)?;
        let base6 = iptables::docker_base(BR, &[CLIENT_IP6, SERVER_IP6], &iptables::V6);
        ip6tables_restore(host, &base6)?;
        route_ext_to_containers(&sandbox.ext)?;
        route_ext_to_containers6(&sandbox.ext)?;
        Ok(Self {
            client,
            server,
            sandbox,
            ports: 0,
            rules: 0,
        })
    }

    fn iptables(&self, args: &str) -> String {
        format!("iptables -w {args}")
    }
}

impl Topology for Bridge {
    fn label(&self) -> &'static str {
        "iptables"
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

    fn set_published_ports(&mut self, total: usize) -> Result<()> {
        if total > self.ports {
            let (from, v4, v6) = (self.ports, &iptables::V4, &iptables::V6);
            let rules = iptables::docker_filler_ports(BR, from, total, &dummy_ip(0), v4);
            iptables_restore(&self.sandbox.host, &rules)?;
            // Docker publishes on both families when no host IP is given.
            let rules = iptables::docker_filler_ports(BR, from, total, &dummy_ip6(0), v6);
            ip6tables_restore(&self.sandbox.host, &rules)?;
            self.ports = total;
        }
        Ok(())
    }

    fn set_isolation_rules(&mut self, total: usize) -> Result<()> {
        if total > self.rules {
            let rules = iptables::isolation_rules(self.rules, total, &iptables::V4);
            iptables_restore(&self.sandbox.host, &rules)?;
            let rules = iptables::isolation_rules(self.rules, total, &iptables::V6);
            ip6tables_restore(&self.sandbox.host, &rules)?;
            self.rules = total;
        }
        Ok(())
    }

    /// The three rules Docker adds to publish a port: DNAT, filter ACCEPT, hairpin MASQUERADE.
    fn time_publish(&mut self, i: usize) -> Result<Option<Duration>> {
        let p = port::UPDATE_BASE + i as u16;
        let rules = [
            (
                "-t nat",
                "DOCKER",
                iptables::docker_dnat(BR, p, SERVER_IP, p, "tcp", &iptables::V4),
            ),
            (
                "",
                "DOCKER",
                iptables::docker_accept(BR, SERVER_IP, p, "tcp", &iptables::V4),
            ),
            (
                "-t nat",
                "POSTROUTING",
                iptables::docker_hairpin(SERVER_IP, p, "tcp", &iptables::V4),
            ),
        ];
        let add: Vec<String> = rules
            .iter()
            .map(|(t, chain, spec)| self.iptables(&format!("{t} -A {chain} {spec}")))
            .collect();
        let d = timed_in(&self.sandbox.host, &add)?;
        let del: Vec<String> = rules
            .iter()
            .map(|(t, chain, spec)| self.iptables(&format!("{t} -D {chain} {spec}")))
            .collect();
        timed_in(&self.sandbox.host, &del)?;
        Ok(Some(d))
    }

    fn time_isolate(&mut self, i: usize) -> Result<Option<Duration>> {
        let spec = format!(
            "{} -s {CLIENT_IP}/32 -d {}/32 -j DROP",
            iptables::ISOLATION_CHAIN,
            dummy_ip(i % 100)
        );
        let d = timed_in(&self.sandbox.host, &[self.iptables(&format!("-I {spec}"))])?;
        timed_in(&self.sandbox.host, &[self.iptables(&format!("-D {spec}"))])?;
        Ok(Some(d))
    }

    fn direct_drops(&self) -> Result<Option<u64>> {
        let out = must(
            &self.sandbox.host,
            &["iptables", "-w", "-t", "raw", "-nvxL", "PREROUTING"],
        )?;
        Ok(Some(iptables::raw_drop_packets(&out)))
    }
}
