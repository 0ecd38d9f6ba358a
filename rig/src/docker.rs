//! A dockerd of a test's own, inside a sandbox namespace: its own data and exec roots, socket
//! and pidfile under one temporary directory; by default no iptables, no bridge, no forwarding
//! sysctl ([`Networking::None`], what a remote driver needs), or Docker's own bridge driver with
//! its iptables rules ([`Networking::Bridge`], whose rules and sysctls live in that namespace
//! alone: the bench's baseline). Started with `nsenter --net=` (`ip netns exec` remounts /sys and hides the v1 cgroup
//! mounts dockerd 20.10 needs). Dropping it stops dockerd by its own pid (it stops its
//! containers and containerd), then unmounts and removes everything under its directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::{Bg, Netns, text, unique, wait_for};

/// Debian's docker.io client, matching its daemon (a newer client on PATH may not be).
const DOCKER: &str = "/usr/bin/docker";

/// The image [`Dockerd::busybox`] imports: busybox-static's applets, nothing else.
pub const BUSYBOX: &str = "weir-busybox:test";

/// What dockerd itself does to the network of its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Networking {
    /// Nothing: no iptables, no default bridge, no forwarding sysctl, no userland proxy.
    None,
    /// Docker's defaults: iptables rules, the default bridge, forwarding on, docker-proxy for
    /// published ports (only in its namespace: the root namespace's rules stay untouched).
    Bridge,
}

impl Networking {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Networking::None => &[
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ],
            Networking::Bridge => &["--iptables=true", "--ip6tables=false"],
        }
    }
}

pub struct Dockerd {
    daemon: Option<Bg>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    netns: PathBuf,
    networking: Networking,
    extra: Vec<String>,
}

impl Dockerd {
    /// Starts dockerd in `ns` with these extra flags (`--live-restore`) and waits until it
    /// answers.
    pub fn start_with(ns: &Netns, extra: &[&str]) -> Self {
        Self::try_start(ns, Networking::None, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts dockerd in `ns` with `networking` and these extra flags; the error carries its log.
    pub fn try_start(ns: &Netns, networking: Networking, extra: &[&str]) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(unique("weir-dockerd-"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("dockerd dir: {e}"))?;
        let mut d = Self {
            daemon: None,
            socket: dir.join("docker.sock"),
            dir,
            netns: ns.path(),
            networking,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        if !d.launch() {
            return Err(format!("dockerd did not start: {}", d.log()));
        }
        Ok(d)
    }

    /// Starts dockerd and waits (a minute at most) until it answers; false if it does not.
    fn launch(&mut self) -> bool {
        let arg = |s: &str| self.dir.join(s).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args([
                "dockerd",
                "--data-root",
                &arg("data"),
                "--exec-root",
                &arg("exec"),
            ])
            .args(["--pidfile", &arg("dockerd.pid")])
            .arg(format!("--host=unix://{}", self.socket.display()))
            .args(self.networking.flags())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.daemon = Some(Bg::from_child(child));
        wait_for(Duration::from_secs(60), || {
            self.docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        })
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker`) and waits until it is gone; with
    /// `--live-restore` its containers keep running.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            // Our own child stays in /proc as a zombie until reaped: ask it, not /proc.
            let daemon = &mut self.daemon;
            wait_for(Duration::from_secs(20), || match daemon.as_mut() {
                Some(d) => !d.is_running(),
                None => !Path::new(&format!("/proc/{pid}")).exists(),
            });
        }
        drop(self.daemon.take());
    }

    /// Starts dockerd again on the same roots and socket.
    pub fn start_again(&mut self) {
        assert!(self.launch(), "dockerd did not start again: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker client against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    /// Runs docker, asserts success, returns stdout trimmed.
    pub fn must(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout).trim().to_string()
    }

    /// Runs docker, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            !o.status.success(),
            "docker {args:?} should have failed: {}",
            text(&o.stdout)
        );
        text(&o.stderr)
    }

    /// Imports [`BUSYBOX`] from the machine's busybox-static (offline: no registry).
    pub fn busybox(&self) -> &'static str {
        let root = self.dir.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
            std::fs::create_dir_all(root.join(d)).expect("rootfs");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
        let script = format!(
            "cd {0}/bin && for a in $(./busybox --list); do [ \"$a\" = busybox ] || ln -sf busybox \"$a\"; done && \
             echo 'root:x:0:0:root:/root:/bin/sh' > {0}/etc/passwd && echo 'root:x:0:' > {0}/etc/group && \
             tar -C {0} -c . | {DOCKER} --host unix://{1} import -c 'CMD [\"/bin/sh\"]' - {BUSYBOX}",
            root.display(),
            self.socket.display()
        );
        let o = crate::sh(&script);
        assert!(o.status.success(), "docker import: {}", text(&o.stderr));
        BUSYBOX
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // A test that stopped a --live-restore dockerd left its containers running: only a
        // dockerd can remove them.
        if self.daemon.is_none() {
            self.launch();
        }
        // Containers first, so their endpoints leave the driver while it still runs.
        let ids = text(&self.docker(&["ps", "-aq"]).stdout);
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        self.stop();
        crate::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
