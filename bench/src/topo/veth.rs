//! The upper bound: bare veth pairs, no bridge, no rule, no NAT.
//!
//! - container → container: one veth pair joining the two containers directly (`p2p`), with
//!   /32 routes to each other's usual address — the least any two namespaces can traverse;
//! - container ↔ ext: each container's `eth0` is a veth to the host namespace, which routes
//!   (kernel forwarding, /32 routes per container, gateway 10.99.0.1 on `lo`). No NAT is
//!   needed at all because ext routes 10.99.0.0/24 to the host: "ext → published port" goes to
//!   the server's own address and port (10.99.0.3), "container → ext" arrives unmasqueraded.
//! - IPv6 the same way (fd00:99::/64 routed to the host, forwarding on in the sandbox's host
//!   namespace). Neighbour discovery answers only for an address on the asking link (unlike
//!   ARP), so the gateway sits on each host-side veth and each container's address on `p2p`
//!   too.

use std::time::Duration;

use anyhow::Result;
use rig::{Netns, Sandbox};

use super::{
    CLIENT_IP, CLIENT_IP6, GATEWAY, GATEWAY6, SERVER_IP, SERVER_IP6, Topology, enable_forwarding,
    must, route_ext_to_containers, route_ext_to_containers6, veth,
};

pub struct Veth {
    client: Netns,
    server: Netns,
    sandbox: Sandbox,
}

impl Veth {
    pub fn build(control: &std::path::Path) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        sandbox.add_ipv6();
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
        enable_forwarding(host)?;
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
        ipv6(host, &client, &server)?;
        route_ext_to_containers6(&sandbox.ext)?;
        Ok(Self {
            client,
            server,
            sandbox,
        })
    }
}

/// The IPv6 twin of the IPv4 addresses and routes `Veth::build` sets up.
fn ipv6(host: &Netns, client: &Netns, server: &Netns) -> Result<()> {
    let add = |ns: &Netns, a: &str, dev: &str| {
        let a = format!("{a}/128");
        must(ns, &["ip", "-6", "addr", "add", &a, "dev", dev, "nodad"])
    };
    let ends = [
        (client, CLIENT_IP6, "vc", SERVER_IP6),
        (server, SERVER_IP6, "vs", CLIENT_IP6),
    ];
    for (c, ip6, hostif, peer6) in ends {
        add(host, GATEWAY6, hostif)?;
        add(c, ip6, "eth0")?;
        add(c, ip6, "p2p")?;
        must(
            c,
            &[
                "ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0", "onlink",
            ],
        )?;
        let host_route = format!("{ip6}/128");
        must(
            host,
            &["ip", "-6", "route", "replace", &host_route, "dev", hostif],
        )?;
        let peer = format!("{peer6}/128");
        must(c, &["ip", "-6", "route", "replace", &peer, "dev", "p2p"])?;
    }
    Ok(())
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
    fn published_addr6(&self) -> &str {
        SERVER_IP6
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
