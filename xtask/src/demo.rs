//! A sandboxed tour: a host namespace running Weir, an "ext" namespace behind its uplink,
//! two networks, containers talking, masquerade to ext, a published port, isolation, counters.
//! Everything lives in namespaces this demo creates and removes.

use std::path::Path;

use anyhow::{Result, bail};
use rig::{Sandbox, net, text};

fn step(title: &str) {
    eprintln!("\n\x1b[1m== {title}\x1b[0m");
}

fn show(s: &Sandbox, args: &[&str]) -> Result<String> {
    eprintln!("$ control {}", args.join(" "));
    let o = s.control(args);
    let out = text(&o.stdout);
    print!("{out}");
    if !o.status.success() {
        bail!("control {} failed: {}", args.join(" "), text(&o.stderr));
    }
    Ok(out)
}

fn check(what: &str, ok: bool) -> Result<()> {
    eprintln!("{} {what}", if ok { "  ok  " } else { "  FAIL" });
    if !ok {
        bail!("demo step failed: {what}");
    }
    Ok(())
}

pub fn run(control: &Path) -> Result<()> {
    step("sandbox: host namespace + ext namespace (198.18.0.2) behind uplink up0 (198.18.0.1)");
    let s = Sandbox::new(control);
    eprintln!(
        "host netns {}, ext netns {}, state dir {}",
        s.host.name,
        s.ext.name,
        s.state_dir.display()
    );
    show(&s, &["init", "--uplink", "up0"])?;
    let d = Demo::create(&s)?;
    // Servers live until the end: later steps publish and isolate what they serve.
    let _api_web = net::http_server(&d.a, 80, "hello from api\n");
    let _ext_web = net::http_server(&s.ext, 80, "hello from ext\n");
    d.container_to_container()?;
    d.boundaries()?;
    d.isolation()?;
    d.inspect()?;

    step("teardown");
    show(&s, &["down"])?;
    eprintln!("\ndemo finished: everything it created is gone.");
    Ok(())
}

/// The demo's sandbox, its three containers and their addresses.
struct Demo<'s> {
    s: &'s Sandbox,
    front: String,
    api: String,
    store: String,
    f: rig::Netns,
    a: rig::Netns,
    st: rig::Netns,
    aip: String,
    stip: String,
}

impl<'s> Demo<'s> {
    fn create(s: &'s Sandbox) -> Result<Self> {
        step("two networks, three containers");
        let web = s.name("web");
        let db = s.name("db");
        show(s, &["network", "create", &web, "--subnet", "10.88.0.0/24"])?;
        let internal = [
            "network",
            "create",
            &db,
            "--subnet",
            "10.89.0.0/24",
            "--internal",
        ];
        show(s, &internal)?;
        let (front, api, store) = (s.name("front"), s.name("api"), s.name("store"));
        show(s, &["container", "create", &front, "--network", &web])?;
        show(s, &["container", "create", &api, "--network", &web])?;
        show(s, &["container", "create", &store, "--network", &db])?;
        show(s, &["container", "ls"])?;
        let (f, a, st) = (
            rig::Netns::borrowed(&front),
            rig::Netns::borrowed(&api),
            rig::Netns::borrowed(&store),
        );
        let (aip, stip) = (s.ip_of(&a), s.ip_of(&st));
        Ok(Self {
            s,
            front,
            api,
            store,
            f,
            a,
            st,
            aip,
            stip,
        })
    }

    fn container_to_container(&self) -> Result<()> {
        step("container to container (bpf_redirect_peer, no bridge)");
        let (front, api, aip) = (&self.front, &self.api, &self.aip);
        check(
            &format!("{front} pings {api} ({aip})"),
            net::ping(&self.f, aip, 2),
        )?;
        let body = net::curl(&self.f, &format!("http://{aip}/"), 5);
        check(
            &format!("{front} curls {api}: {:?}", body.as_deref().unwrap_or("")),
            body.is_some(),
        )?;
        let _srv = net::iperf_server(&self.a, 5201);
        let r = net::iperf(&self.f, aip, 5201, &["-t", "2"]);
        eprintln!(
            "  iperf3 {front} -> {api}: {:.1} Gbit/s",
            net::iperf_bps(&r) / 1e9
        );
        Ok(())
    }

    fn boundaries(&self) -> Result<()> {
        step("networks are isolated; the world reaches containers only through published ports");
        let (front, api, store) = (&self.front, &self.api, &self.store);
        check(
            &format!("{front} cannot reach {store} on another network"),
            !net::ping(&self.f, &self.stip, 1),
        )?;
        let body = net::curl(&self.f, "http://198.18.0.2/", 5);
        check(
            &format!(
                "{front} reaches ext through MASQUERADE: {:?}",
                body.as_deref().unwrap_or("")
            ),
            body.is_some(),
        )?;
        check(
            &format!("{store} (internal network) has no egress"),
            net::curl(&self.st, "http://198.18.0.2/", 2).is_none(),
        )?;
        show(self.s, &["publish", api, "8080:80"])?;
        let body = net::curl(&self.s.ext, "http://198.18.0.1:8080/", 5);
        check(
            &format!(
                "ext curls host:8080 -> {api}:80: {:?}",
                body.as_deref().unwrap_or("")
            ),
            body.is_some(),
        )?;
        let body = net::curl(&self.s.host, "http://127.0.0.1:8080/", 5);
        check(
            &format!(
                "the host curls 127.0.0.1:8080: {:?}",
                body.as_deref().unwrap_or("")
            ),
            body.is_some(),
        )
    }

    fn isolation(&self) -> Result<()> {
        step("isolation");
        show(self.s, &["isolate", &self.front, &self.api])?;
        check(
            &format!("{} can no longer reach {}", self.front, self.api),
            net::curl(&self.f, &format!("http://{}/", self.aip), 2).is_none(),
        )?;
        show(self.s, &["rules"]).map(drop)
    }

    fn inspect(&self) -> Result<()> {
        step("what the datapath saw");
        show(self.s, &["conntrack"])?;
        show(self.s, &["stats"])?;
        show(self.s, &["status"])?;
        eprintln!(
            "  kernel IpForwDatagrams in the host namespace: {}",
            net::nstat(&self.s.host, "IpForwDatagrams")
        );
        Ok(())
    }
}
