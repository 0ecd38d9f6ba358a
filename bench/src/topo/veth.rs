//! The upper bound: bare veth pairs, no bridge, no rule, no NAT.
//!
//! - container → container: one veth pair joining the two containers directly (`p2p`), with
//!   /32 routes to each other's usual address — the least any two namespaces can traverse;
//! - container ↔ ext: each container's `eth0` is a veth to the host namespace, which routes
//!   (kernel forwarding, /32 routes per container, gateway 10.99.0.1 on `lo`). No NAT is
//!   needed at all because ext routes 10.99.0.0/24 to the host: "ext → published port" goes to
//!   the server's own address and port (10.99.0.3), "container → ext" arrives unmasqueraded.

use std::time::Duration;

use anyhow::Result;
use rig::{Netns, Sandbox};

use super::{CLIENT_IP, GATEWAY, SERVER_IP, Topology, must, route_ext_to_containers, veth};

pub struct Veth {
    client: Netns,
    server: Netns,
    sandbox: Sandbox,
}

impl Veth {
    pub fn build(control: &std::path::Path) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        let client = Netns::new(&sandbox.name("cli"));
        let server = Netns::new(&sandbox.name("srv"));
        let host = &sandbox.host;
        must(
            host,
            &["ip", "addr", "add", &format!("{GATEWAY}/32"), "dev", "lo"],
        )?;
        for (c, ip, hostif) in [(&client, CLIENT_IP, "vc"), (&server, SERVER_IP, "vs")] {
            veth(host, hostif, c, "eth0")?;
            must(
                c,
                &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
            )?;
            must(
                c,
                &[
                    "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink",
                ],
            )?;
            must(
                host,
                &["ip", "route", "add", &format!("{ip}/32"), "dev", hostif],
            )?;
        }
        must(host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        veth(&client, "p2p", &server, "p2p")?;
        must(
            &client,
            &[
                "ip",
                "route",
                "add",
                &format!("{SERVER_IP}/32"),
                "dev",
                "p2p",
            ],
        )?;
        must(
            &server,
            &[
                "ip",
                "route",
                "add",
                &format!("{CLIENT_IP}/32"),
                "dev",
                "p2p",
            ],
        )?;
        route_ext_to_containers(&sandbox.ext)?;
        Ok(Self {
            client,
            server,
            sandbox,
        })
    }
}

impl Topology for Veth {
    fn label(&self) -> &'static str {
        "veth"
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
    fn published_addr(&self) -> &str {
        SERVER_IP
    }
    /// Nothing to publish: ext reaches the server directly. Measuring anyway at every count
    /// shows the drift of the machine over the run.
    fn set_published_ports(&mut self, _total: usize) -> Result<()> {
        Ok(())
    }
    fn set_isolation_rules(&mut self, _total: usize) -> Result<()> {
        Ok(())
    }
    fn time_publish(&mut self, _i: usize) -> Result<Option<Duration>> {
        Ok(None)
    }
    fn time_isolate(&mut self, _i: usize) -> Result<Option<Duration>> {
        Ok(None)
    }
    fn direct_drops(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}
