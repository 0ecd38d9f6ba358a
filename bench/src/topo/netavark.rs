//! Podman's network backend as a real peer: `netavark setup` (run inside the sandbox's host
//! namespace) creates its bridge, veths, addresses and iptables rules for the two containers
//! exactly as Podman would, from the JSON Podman would send it.
//!
//! Filler published ports are written in netavark's own rule layout with iptables-restore
//! instead of by netavark: netavark 1.4 runs the `iptables` binary once per rule, and 1,000
//! mappings took 39 s here (quadratic as the ruleset grows), far beyond the bench's budget.
//! Netavark has no per-container isolation rules; filler rules go into the chain a Podman user
//! would have to use, jumped to from NETAVARK_FORWARD after its ESTABLISHED accept.

use std::time::Duration;

use anyhow::Result;
use rig::{Netns, Sandbox};
use serde_json::json;

use super::{
    CLIENT_IP, GATEWAY, PUBLISHED, SERVER_IP, SUBNET, Scratch, Topology, dummy_ip, iptables, port,
    route_ext_to_containers, timed_in,
};

pub const BINARY: &str = "/usr/lib/podman/netavark";
const BR: &str = "nv0";
const NETWORK_ID: &str = "b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2";

pub struct Netavark {
    client: Netns,
    server: Netns,
    sandbox: Sandbox,
    config: Scratch,
    ports: usize,
    rules: usize,
    isolation_chain: bool,
}

/// The options JSON Podman hands `netavark setup` for one container on our network.
fn options(name: &str, ip: &str, ports: &[(u16, &str)]) -> String {
    let id = format!(
        "{:0>64}",
        name.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mappings: Vec<_> = ports
        .iter()
        .map(|(p, proto)| {
            json!({"host_ip": "", "container_port": p, "host_port": p, "range": 1, "protocol": proto})
        })
        .collect();
    json!({
        "container_id": &id[id.len() - 64..],
        "container_name": name,
        "port_mappings": mappings,
        "networks": {"bench": {"static_ips": [ip], "interface_name": "eth0"}},
        "network_info": {"bench": {
            "name": "bench", "id": NETWORK_ID, "driver": "bridge", "network_interface": BR,
            "subnets": [{"subnet": SUBNET, "gateway": GATEWAY}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": {"driver": "host-local"}
        }}
    })
    .to_string()
}

impl Netavark {
    pub fn build(control: &std::path::Path) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        let client = Netns::new(&sandbox.name("cli"));
        let server = Netns::new(&sandbox.name("srv"));
        let config = Scratch::dir(&format!("{}-netavark", sandbox.id))?;
        let me = Self {
            client,
            server,
            sandbox,
            config,
            ports: 0,
            rules: 0,
            isolation_chain: false,
        };
        me.setup(&me.client, CLIENT_IP, &[])?;
        me.setup(&me.server, SERVER_IP, PUBLISHED)?;
        route_ext_to_containers(&me.sandbox.ext)?;
        Ok(me)
    }

    fn setup_command(
        &self,
        c: &Netns,
        ip: &str,
        ports: &[(u16, &str)],
    ) -> Result<(String, Scratch)> {
        let f = Scratch::file(&format!("{}.json", c.name), &options(&c.name, ip, ports))?;
        let cmd = format!(
            "{BINARY} --config {} -f {} setup {}",
            self.config.path.display(),
            f.path.display(),
            c.path().display()
        );
        Ok((cmd, f))
    }

    /// The chain for isolation rules, jumped to after NETAVARK_FORWARD's ESTABLISHED accept.
    fn ensure_isolation_chain(&mut self) -> Result<()> {
        if !self.isolation_chain {
            let c = iptables::ISOLATION_CHAIN;
            super::iptables_restore(
                &self.sandbox.host,
                &format!("*filter\n:{c} - [0:0]\n-I NETAVARK_FORWARD 2 -j {c}\nCOMMIT\n"),
            )?;
            self.isolation_chain = true;
        }
        Ok(())
    }

    fn setup(&self, c: &Netns, ip: &str, ports: &[(u16, &str)]) -> Result<Duration> {
        let (cmd, _f) = self.setup_command(c, ip, ports)?;
        timed_in(&self.sandbox.host, &[cmd])
    }
}

impl Topology for Netavark {
    /// Its IPv6 setup (a second subnet in the JSON, ip6tables) is not built here.
    fn ipv6(&self) -> bool {
        false
    }
    fn label(&self) -> &'static str {
        "netavark"
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
            let rules =
                iptables::netavark_filler_ports(self.ports, total, &dummy_ip(0), self.ports == 0);
            super::iptables_restore(&self.sandbox.host, &rules)?;
            self.ports = total;
        }
        Ok(())
    }

    fn set_isolation_rules(&mut self, total: usize) -> Result<()> {
        self.ensure_isolation_chain()?;
        if total > self.rules {
            let rules = iptables::isolation_rules(self.rules, total, &iptables::V4);
            super::iptables_restore(&self.sandbox.host, &rules)?;
            self.rules = total;
        }
        Ok(())
    }

    /// Netavark cannot add a port to a running container: Podman sets up a (new) container's
    /// network with its mappings. Timed: `netavark setup` of a fresh container with one port.
    fn time_publish(&mut self, i: usize) -> Result<Option<Duration>> {
        let c = Netns::new(&self.sandbox.name(&format!("pub{i}")));
        let p = port::UPDATE_BASE + i as u16;
        let ip = format!("10.99.0.{}", 250 + (i % 4));
        let (cmd, _f) = self.setup_command(&c, &ip, &[(p, "tcp")])?;
        let d = timed_in(&self.sandbox.host, std::slice::from_ref(&cmd))?;
        timed_in(&self.sandbox.host, &[cmd.replace(" setup ", " teardown ")])?;
        Ok(Some(d))
    }

    fn time_isolate(&mut self, i: usize) -> Result<Option<Duration>> {
        self.ensure_isolation_chain()?;
        let spec = format!(
            "{} -s {CLIENT_IP}/32 -d {}/32 -j DROP",
            iptables::ISOLATION_CHAIN,
            dummy_ip(i % 100)
        );
        let d = timed_in(&self.sandbox.host, &[format!("iptables -w -I {spec}")])?;
        timed_in(&self.sandbox.host, &[format!("iptables -w -D {spec}")])?;
        Ok(Some(d))
    }

    fn direct_drops(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_what_podman_sends() {
        let v: serde_json::Value =
            serde_json::from_str(&options("x", "10.99.0.3", &[(8080, "tcp")])).unwrap();
        assert_eq!(v["container_id"].as_str().unwrap().len(), 64);
        assert_eq!(v["port_mappings"][0]["host_port"], 8080);
        assert_eq!(v["networks"]["bench"]["static_ips"][0], "10.99.0.3");
        assert_eq!(v["network_info"]["bench"]["subnets"][0]["gateway"], GATEWAY);
    }
}
