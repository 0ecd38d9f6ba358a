//! What the driver tests share: the driver daemon serving a sandbox's instance, a dockerd
//! beside it, and ways to look at what Docker and Weir made.

#![allow(dead_code)] // each test binary uses its own part of it

use std::{path::PathBuf, process::Command, time::Duration};

use rig::{Bg, Sandbox, docker::Dockerd, net, text, unique};
use serde_json::Value;

const DRIVER: &str = env!("CARGO_BIN_EXE_weir-docker");

/// weir-docker serving `s`'s instance under a plugin name of its own (/run/docker/plugins is
/// shared by every dockerd on the machine); its socket goes with it.
pub struct Driver {
    pub name: String,
    pub socket: PathBuf,
    state_dir: PathBuf,
    /// The dockerd's Engine API, asked for container names.
    docker_socket: PathBuf,
    process: Option<Bg>,
}

impl Driver {
    pub fn start(s: &Sandbox, docker: &Dockerd) -> Self {
        let name = unique("weirt");
        let mut d = Self {
            socket: PathBuf::from(format!("/run/docker/plugins/{name}.sock")),
            name,
            state_dir: s.state_dir.clone(),
            docker_socket: docker.socket.clone(),
            process: None,
        };
        d.restart();
        d
    }

    /// Starts the daemon (again) and waits for its socket.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(DRIVER)
            .args(["--name", &self.name, "--state-dir"])
            .arg(&self.state_dir)
            .arg("--docker-socket")
            .arg(&self.docker_socket)
            .spawn()
            .expect("starting weir-docker");
        self.process = Some(Bg::from_child(child));
        assert!(
            rig::wait_for(Duration::from_secs(10), || self.socket.exists()),
            "weir-docker did not listen on {}",
            self.socket.display()
        );
    }

    /// SIGKILL: no chance to clean up, as in a crash. The socket is left behind, dead.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }

    /// POSTs `body` to `/method` on the plugin socket, as Docker does.
    pub fn call(&self, method: &str, body: &str) -> Value {
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

/// A sandbox with Weir, a dockerd (with `flags`) in its host namespace, the driver serving
/// it, and the image.
pub fn docker_on_weir(flags: &[&str]) -> (Sandbox, Dockerd, Driver, &'static str) {
    let s = Sandbox::with_weir(rig::control_binary(), &[]);
    docker_in(s, flags)
}

/// [`docker_on_weir`] on a host whose uplink has IPv6 too.
pub fn docker_on_dual_stack_weir() -> (Sandbox, Dockerd, Driver, &'static str) {
    let s = Sandbox::new(rig::control_binary());
    s.add_ipv6();
    s.init(&[]);
    docker_in(s, &[])
}

fn docker_in(s: Sandbox, flags: &[&str]) -> (Sandbox, Dockerd, Driver, &'static str) {
    let d = Dockerd::start_with(&s.host, flags);
    let drv = Driver::start(&s, &d);
    let image = d.busybox();
    (s, d, drv, image)
}

/// The Weir container of a Docker container (by its endpoint on `network`).
pub fn weir_container(s: &Sandbox, d: &Dockerd, ctr: &str, network: &str) -> Value {
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

pub fn wget(d: &Dockerd, from: &str, url: &str) -> Option<String> {
    // `timeout`, not wget's -T: busybox-static 1.35's wget segfaults on -T.
    let o = d.docker(&["exec", from, "timeout", "5", "wget", "-q", "-O-", url]);
    o.status.success().then(|| text(&o.stdout))
}

/// No Weir container, port, veth (host side or Docker's peer) or reachable port is left.
pub fn nothing_left(s: &Sandbox, url: &str) {
    assert_eq!(s.json(&["container", "ls"]), serde_json::json!([]));
    assert_eq!(s.json(&["ports"]), serde_json::json!([]));
    let links = s.host.must(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("wr-") && !links.contains("wd"), "{links}");
    assert!(net::curl(&s.ext, url, 2).is_none());
}

/// Echoes over one TCP connection from `ns` to `addr:port` every 50 ms for `secs` seconds;
/// prints the round trips made, or fails at the first one that breaks.
pub const SESSION: &str = r#"
import socket, sys, time
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((addr, port), timeout=3)
end, n = time.time() + secs, 0
while time.time() < end:
    s.sendall(b"ping\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            sys.exit("closed by the peer after %d round trips" % n)
        got += chunk
    n += 1
    time.sleep(0.05)
print(n)
"#;

pub fn echo_once(ns: &rig::Netns, addr: &str, port: u16) -> bool {
    let o = ns.run(&["python3", "-c", SESSION, addr, &port.to_string(), "0.2"]);
    o.status.success()
}

/// A command line without quoting, as docker's arguments.
pub fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// A TCP echo server on 81 in busybox.
pub const ECHO: &str = "nc -ll -p 81 -e cat";

/// The published ports of Weir container `c`, as `control container ls` describes them.
pub fn published(c: &Value) -> Vec<String> {
    c["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}
