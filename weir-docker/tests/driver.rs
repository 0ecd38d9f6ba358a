//! The driver under a real dockerd (Debian's docker.io, in the sandbox's host namespace with
//! its own roots and no iptables, bridge or forwarding): `docker network create -d`, `docker
//! run --network` and `-p` on Weir's datapath, and what Docker shows when Weir refuses.

use std::{path::PathBuf, process::Command, time::Duration};

use rig::{Bg, EXT_IP, Sandbox, UPLINK_IP, docker::Dockerd, net, text, unique};
use serde_json::Value;

const DRIVER: &str = env!("CARGO_BIN_EXE_weir-docker");

/// weir-docker serving `s`'s instance under a plugin name of its own (/run/docker/plugins is
/// shared by every dockerd on the machine); its socket goes with it.
struct Driver {
    name: String,
    socket: PathBuf,
    _process: Bg,
}

impl Driver {
    fn start(s: &Sandbox) -> Self {
        let name = unique("weirt");
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let child = Command::new(DRIVER)
            .args(["--name", &name, "--state-dir"])
            .arg(&s.state_dir)
            .spawn()
            .expect("starting weir-docker");
        let process = Bg::from_child(child);
        assert!(
            rig::wait_for(Duration::from_secs(10), || socket.exists()),
            "weir-docker did not listen on {}",
            socket.display()
        );
        Self {
            name,
            socket,
            _process: process,
        }
    }

    /// POSTs `body` to `/method` on the plugin socket, as Docker does.
    fn call(&self, method: &str, body: &str) -> Value {
        let out = rig::must(&[
            "curl",
            "-s",
            "--unix-socket",
            self.socket.to_str().unwrap(),
            "-X",
            "POST",
            "--data-binary",
            body,
            &format!("http://plugin/{method}"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The Weir container of a Docker container (by its endpoint on `network`).
fn weir_container(s: &Sandbox, d: &Dockerd, ctr: &str, network: &str) -> Value {
    let eid = d.must(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}"),
        ctr,
    ]);
    let name = format!("docker-{}", &eid[..12]);
    let all = s.json(&["container", "ls"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{ctr} ({name}) is not a Weir container: {all}"))
}

fn wget(d: &Dockerd, from: &str, url: &str) -> Option<String> {
    // `timeout`, not wget's -T: busybox-static 1.35's wget segfaults on -T.
    let o = d.docker(&["exec", from, "timeout", "5", "wget", "-q", "-O-", url]);
    o.status.success().then(|| text(&o.stdout))
}

#[test]
fn docker_containers_run_on_a_weir_network() {
    let s = Sandbox::with_weir(rig::control_binary(), &[]);
    let d = Dockerd::start(&s.host);
    let drv = Driver::start(&s);
    let image = d.busybox();
    let net_id = d.must(&[
        "network",
        "create",
        "-d",
        &drv.name,
        "--subnet",
        "10.77.0.0/24",
        "web",
    ]);
    let weir_net = format!("docker-{}", &net_id[..12]);
    let nets = s.json(&["network", "ls"]);
    let n = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == weir_net.as_str());
    assert_eq!(
        n.expect("a Weir network")["subnet"],
        "10.77.0.0/24",
        "{nets}"
    );

    let serve = "echo served by web1 > /www/index.html && httpd -f -p 80 -h /www";
    d.must(&[
        "run",
        "-d",
        "--name",
        "web1",
        "--network",
        "web",
        "-p",
        "8080:80",
        image,
        "sh",
        "-c",
        serve,
    ]);
    d.must(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "web",
        image,
        "sleep",
        "600",
    ]);
    let (w1, c2) = (
        weir_container(&s, &d, "web1", "web"),
        weir_container(&s, &d, "c2", "web"),
    );
    let ip1 = w1["ip"].as_str().unwrap().to_string();
    let docker_ip = d.must(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.web.IPAddress}}",
        "web1",
    ]);
    assert_eq!(ip1, docker_ip, "Weir and Docker agree on the address");
    assert_eq!(w1["published"], serde_json::json!(["8080->80/tcp"]), "{w1}");
    // Docker set the MAC Weir chose (the one anti-spoofing checks).
    let mac = d.must(&["exec", "c2", "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(mac, c2["mac"].as_str().unwrap());

    let url = format!("http://{UPLINK_IP}:8080/");
    reach_each_other_and_the_world(&s, &d, &ip1, &url);
    only_weirs_datapath(&s);

    // Removal leaves nothing: no container, port, veth or network.
    d.must(&["rm", "-f", "web1", "c2"]);
    nothing_left(&s, &url);
    d.must(&["network", "rm", "web"]);
    assert_eq!(s.json(&["network", "ls"]), serde_json::json!([]));
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

/// No Weir container, port, veth (host side or Docker's peer) or reachable port is left.
fn nothing_left(s: &Sandbox, url: &str) {
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
    assert_eq!(s.json(&["ports"]), serde_json::json!([]));
    let links = s.host.must(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("wr-") && !links.contains("wd"), "{links}");
    assert!(net::curl(&s.ext, url, 2).is_none());
}

/// c2 reaches web1 (at `ip1`, serving its page on 80, published at `url`) by address and by
/// name; ext, the host and c2 (hairpin) reach the published port; c2 reaches ext.
fn reach_each_other_and_the_world(s: &Sandbox, d: &Dockerd, ip1: &str, url: &str) {
    // Container to container: ping and TCP, by address and by name (Docker's DNS).
    assert!(
        d.docker(&["exec", "c2", "ping", "-c", "1", "-W", "2", ip1])
            .status
            .success()
    );
    let page = "served by web1\n";
    assert!(
        rig::wait_for(Duration::from_secs(10), || {
            wget(d, "c2", &format!("http://{ip1}/")).is_some()
        }),
        "c2 cannot reach web1's httpd"
    );
    assert_eq!(
        wget(d, "c2", "http://web1/").as_deref(),
        Some(page),
        "by name"
    );
    // The published port: from ext, from the host (uplink address, loopback), and hairpin.
    assert_eq!(net::curl(&s.ext, url, 5).as_deref(), Some(page));
    assert_eq!(net::curl(&s.host, url, 5).as_deref(), Some(page));
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:8080/", 5).as_deref(),
        Some(page)
    );
    assert_eq!(wget(d, "c2", url).as_deref(), Some(page), "hairpin");
    // Out to the world through MASQUERADE.
    assert!(
        d.docker(&["exec", "c2", "ping", "-c", "1", "-W", "2", EXT_IP])
            .status
            .success()
    );
}

/// Weir's datapath did it: no bridge, no netfilter rule, no docker-proxy.
fn only_weirs_datapath(s: &Sandbox) {
    assert!(s.path_packets("container-to-container") > 0);
    assert!(s.path_packets("published-in") > 0);
    let bridges = s.host.must(&["ip", "-o", "link", "show", "type", "bridge"]);
    assert!(bridges.trim().is_empty(), "{bridges}");
    let rules = text(&s.host.run(&["nft", "list", "ruleset"]).stdout);
    assert!(
        !rules.contains("chain"),
        "netfilter rules in the host namespace: {rules}"
    );
    let proxies = text(&rig::run(&["pgrep", "-f", "docker-proxy"]).stdout);
    assert!(proxies.trim().is_empty(), "docker-proxy running: {proxies}");
}

#[test]
fn what_weir_refuses_docker_shows() {
    let s = Sandbox::with_weir(rig::control_binary(), &[]);
    let d = Dockerd::start(&s.host);
    let drv = Driver::start(&s);
    let image = d.busybox();
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        &drv.name,
        "--ipv6",
        "--subnet",
        "fd77::/64",
        "v6",
    ]);
    assert!(e.contains("IPv4-only"), "{e}");
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        &drv.name,
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "foo=bar",
        "o",
    ]);
    assert!(e.contains("\"foo\""), "{e}");
    d.must(&[
        "network",
        "create",
        "-d",
        &drv.name,
        "--subnet",
        "10.78.0.0/24",
        "ok",
    ]);
    let e = d.fails(&[
        "run",
        "--rm",
        "--network",
        "ok",
        "-p",
        "6000:60/sctp",
        image,
        "true",
    ]);
    assert!(e.contains("60/sctp"), "{e}");
    // Nothing of the refused container is left.
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
    assert_eq!(s.json(&["ports"]), serde_json::json!([]));
    // Bad requests on the socket itself: an error reply, never a crash.
    let r = drv.call("NetworkDriver.CreateNetwork", "{not json");
    assert!(
        r["Err"].as_str().unwrap().contains("not the JSON expected"),
        "{r}"
    );
    let r = drv.call(
        "NetworkDriver.CreateEndpoint",
        r#"{"NetworkID":"00000000000000000000","EndpointID":"1111111111111111","Interface":{"Address":"10.9.0.2/24"}}"#,
    );
    assert!(
        r["Err"].as_str().unwrap().contains("no network named"),
        "{r}"
    );
    let r = drv.call("NetworkDriver.Frobnicate", "{}");
    assert!(r["Err"].as_str().is_some(), "{r}");
    assert_eq!(
        drv.call("Plugin.Activate", "")["Implements"][0],
        "NetworkDriver"
    );
    d.must(&["network", "rm", "ok"]);
}
