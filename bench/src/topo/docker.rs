//! Docker itself, twice, on the sandbox shape of the other topologies: a dockerd of the
//! bench's own in the sandbox's host namespace (`nsenter --net`, data and exec roots, socket
//! and pidfile under a temporary directory: rig's harness), the busybox image imported
//! offline, one user-defined network 10.99.0.0/16, a client container at 10.99.0.2 and a
//! server container at 10.99.0.3 publishing the server ports.
//!
//! * docker-bridge: Docker's bridge driver as shipped (`--iptables=true`, docker-proxy for
//!   every published port); its rules and sysctls live in the sandbox's namespace only.
//! * docker-weir: the same dockerd with `--iptables=false --bridge=none --ip-forward=false`,
//!   a Weir instance on the uplink and `weir-docker` serving it under a plugin name of its own
//!   (`/run/docker/plugins` is shared by every dockerd on the machine).
//!
//! The measuring tools are not in the image: they run from the host's filesystem inside the
//! containers' network namespaces (attached as named namespaces from the containers' pids),
//! which is the same network path.

use std::{
    mem::ManuallyDrop,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use rig::{
    Bg, Netns, Sandbox,
    docker::{Dockerd, Networking},
};

use super::{CLIENT_IP, GATEWAY, PUBLISHED, SERVER_IP, Topology, port};

/// Room for 1,000 filler containers beside the client and server.
pub const DOCKER_SUBNET: &str = "10.99.0.0/16";
/// `docker run` processes at once while filling: dockerd does the work, mostly waiting on
/// containerd and disk, so a few in flight keep both cores busy.
pub const PARALLEL: usize = 8;
/// Threads (pids) one published container costs, measured here: its containerd shim runs 12,
/// and on docker-bridge its two docker-proxies (0.0.0.0 and ::) 7 each; on docker-weir there
/// is no proxy. Rounded up.
const THREADS_PER_CONTAINER: usize = 30;
const THREADS_PER_CONTAINER_NO_PROXY: usize = 15;
/// Share of the machine's pid space the fillers may fill: it is shared with other people's
/// builds and tests, and a fork failing there breaks their work, not only ours.
const PID_BUDGET: f64 = 0.7;
/// What a container runs when it only has to exist.
const IDLE: [&str; 2] = ["sleep", "1000000"];

/// A container's network namespace under a name of ours (`ip netns attach`), so every tool
/// the other topologies use runs in it unchanged. Dropping it kills what the bench left in
/// it — nginx's workers outlive their killed master — but not the container's own process,
/// which is dockerd's to stop.
pub struct Attached {
    ns: ManuallyDrop<Netns>,
    container_pid: String,
}

impl Attached {
    fn new(name: String, pid: &str) -> Result<Self> {
        super::host_must(&["ip", "netns", "attach", &name, pid])?;
        Ok(Self {
            ns: ManuallyDrop::new(Netns::borrowed(&name)),
            container_pid: pid.to_string(),
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let pids = rig::run(&["ip", "netns", "pids", &self.ns.name]);
        for pid in rig::text(&pids.stdout).split_whitespace() {
            if pid != self.container_pid
                && let Ok(p) = pid.parse::<i32>()
            {
                // SAFETY: plain kill(2) of a process in a namespace the bench made.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = rig::run(&["ip", "netns", "del", &self.ns.name]);
    }
}

/// weir-docker serving one sandbox's Weir instance; killed (by its pid) and its socket removed
/// when dropped.
struct Driver {
    name: String,
    socket: PathBuf,
    _process: Bg,
}

impl Driver {
    fn start(binary: &Path, s: &Sandbox, d: &Dockerd) -> Result<Self> {
        let name = rig::unique("weirb");
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let log = std::fs::File::create(d.dir.join("weir-docker.log"))?;
        let child = Command::new(binary)
            .args(["--name", &name, "--state-dir"])
            .arg(&s.state_dir)
            .arg("--docker-socket")
            .arg(&d.socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let me = Self {
            name,
            socket,
            _process: Bg::from_child(child),
        };
        if !rig::wait_for(Duration::from_secs(10), || me.socket.exists()) {
            let log = std::fs::read_to_string(d.dir.join("weir-docker.log")).unwrap_or_default();
            bail!(
                "weir-docker did not listen on {}: {log}",
                me.socket.display()
            );
        }
        Ok(me)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub struct Docker {
    label: &'static str,
    image: &'static str,
    network: String,
    client: Option<Attached>,
    server: Option<Attached>,
    /// Filler containers (ids), each publishing one port.
    fillers: Vec<String>,
    // Dropped in this order: containers go while dockerd and the driver still run.
    dockerd: Option<Dockerd>,
    driver: Option<Driver>,
    sandbox: Sandbox,
}

impl Docker {
    /// docker-bridge: Docker's bridge driver, its iptables rules and docker-proxy.
    pub fn bridge(control: &Path) -> Result<Self> {
        Self::build("docker-bridge", control, None)
    }

    /// docker-weir: the same dockerd without its networking, on Weir through `weir-docker`.
    pub fn weir(control: &Path, weir_docker: &Path) -> Result<Self> {
        Self::build("docker-weir", control, Some(weir_docker))
    }

    fn build(label: &'static str, control: &Path, weir_docker: Option<&Path>) -> Result<Self> {
        let sandbox = Sandbox::new(control);
        let networking = match weir_docker {
            Some(_) => Networking::None,
            None => Networking::Bridge,
        };
        if weir_docker.is_some() {
            let o = sandbox.control(&["init", "--uplink", "up0", "--xdp", "off"]);
            if !o.status.success() {
                bail!("control init: {}", rig::text(&o.stderr).trim());
            }
        }
        let dockerd = Dockerd::try_start(&sandbox.host, networking, &[]).map_err(|e| anyhow!(e))?;
        let driver = match weir_docker {
            Some(bin) => Some(Driver::start(bin, &sandbox, &dockerd)?),
            None => None,
        };
        let mut me = Self {
            label,
            image: rig::docker::BUSYBOX,
            network: rig::unique("wbn"),
            client: None,
            server: None,
            fillers: Vec::new(),
            dockerd: Some(dockerd),
            driver,
            sandbox,
        };
        me.image = me.dockerd().busybox();
        let driver_name = me.driver.as_ref().map_or("bridge", |d| d.name.as_str());
        let net = me.network.clone();
        let args = [
            "network",
            "create",
            "-d",
            driver_name,
            "--subnet",
            DOCKER_SUBNET,
            "--gateway",
            GATEWAY,
            &net,
        ];
        me.docker(&args.map(String::from))?;
        me.client = Some(me.start_endpoint("cli", CLIENT_IP, &[])?);
        let published: Vec<String> = PUBLISHED
            .iter()
            .flat_map(|(p, proto)| ["-p".to_string(), format!("{p}:{p}/{proto}")])
            .collect();
        me.server = Some(me.start_endpoint("srv", SERVER_IP, &published)?);
        // Many short connections from one client: use the whole port range.
        super::must(
            &me.sandbox.ext,
            &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"],
        )?;
        Ok(me)
    }

    fn dockerd(&self) -> &Dockerd {
        self.dockerd.as_ref().expect("dockerd runs until drop")
    }

    /// Runs the docker client against this dockerd; stdout trimmed.
    pub fn docker(&self, args: &[String]) -> Result<String> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.dockerd().docker(&a);
        if !o.status.success() {
            bail!(
                "docker {} ({}): {}",
                a.join(" "),
                self.label,
                rig::text(&o.stderr).trim()
            );
        }
        Ok(rig::text(&o.stdout).trim().to_string())
    }

    /// `docker run -d --network N EXTRA... IMAGE CMD...`: argv for the client.
    fn run_args(&self, extra: &[String], cmd: &[&str]) -> Vec<String> {
        let mut a = ["run", "-d", "--network", &self.network]
            .map(String::from)
            .to_vec();
        a.extend(extra.iter().cloned());
        a.push(self.image.to_string());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// A long-running container at `ip`, its namespace attached under a name of ours.
    fn start_endpoint(&self, short: &str, ip: &str, extra: &[String]) -> Result<Attached> {
        let mut e = vec!["--ip".to_string(), ip.to_string()];
        e.extend(extra.iter().cloned());
        let id = self.docker(&self.run_args(&e, &IDLE))?;
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", &id].map(String::from))?;
        Attached::new(format!("{}k{short}", self.sandbox.id), &pid)
    }

    /// Runs `docker run -d -p HOST:80 ... CMD` and returns (container id, wall time).
    pub fn run_published(&self, host_port: u16, cmd: &[&str]) -> Result<(String, Duration)> {
        let args = self.run_args(&["-p".into(), format!("{host_port}:80")], cmd);
        let t = Instant::now();
        let id = self.docker(&args)?;
        Ok((id, t.elapsed()))
    }

    pub fn remove(&self, ids: &[String]) -> Result<()> {
        let mut a = vec!["rm".to_string(), "-f".to_string()];
        a.extend(ids.iter().cloned());
        self.docker(&a).map(drop)
    }

    /// Removes the filler containers, in parallel batches (one at a time would take minutes
    /// at 1,000).
    fn remove_fillers(&mut self) {
        let batches: Vec<Vec<String>> = self
            .fillers
            .chunks(self.fillers.len().div_ceil(PARALLEL).max(1))
            .map(<[String]>::to_vec)
            .collect();
        std::thread::scope(|s| {
            for b in &batches {
                let me = &*self;
                s.spawn(move || me.remove(b));
            }
        });
        self.fillers.clear();
    }

    pub fn filler_count(&self) -> usize {
        self.fillers.len()
    }

    /// Makes `total` filler containers exist, each publishing a port of its own, started
    /// `PARALLEL` at a time. Returns how long the new ones took.
    pub fn fill(&mut self, total: usize) -> Result<Duration> {
        let each = if self.driver.is_some() {
            THREADS_PER_CONTAINER_NO_PROXY
        } else {
            THREADS_PER_CONTAINER
        };
        affordable(total.saturating_sub(self.fillers.len()), each)?;
        let t = Instant::now();
        while self.fillers.len() < total {
            crate::interrupt::check()?;
            let first = self.fillers.len();
            let n = PARALLEL.min(total - first);
            let made: Vec<Result<String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (first..first + n)
                    .map(|i| {
                        let me = &*self;
                        s.spawn(move || {
                            let p = format!("{}:80", port::FILLER_BASE as usize + i);
                            me.docker(&me.run_args(&["-p".into(), p], &IDLE))
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("panicked"))))
                    .collect()
            });
            // Keep every one that started, so the parallel removal finds them all.
            let mut first_error = None;
            for m in made {
                match m {
                    Ok(id) => self.fillers.push(id),
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(t.elapsed())
    }
}

/// Fails, before starting any, when `more` containers of `each` threads would take the
/// machine's pid space (pid_max 32,768 here: 1,000 containers on both Docker topologies at
/// once need ~36,000 threads) past [`PID_BUDGET`].
fn affordable(more: usize, each: usize) -> Result<()> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    // /proc/loadavg's fourth field: runnable/total scheduling entities, i.e. threads.
    let in_use: usize = read("/proc/loadavg")
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1)?.parse().ok())
        .unwrap_or(0);
    let limit = ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"]
        .iter()
        .filter_map(|p| read(p).trim().parse::<usize>().ok())
        .min()
        .unwrap_or(usize::MAX);
    let need = more * each;
    if (in_use + need) as f64 > limit as f64 * PID_BUDGET {
        bail!(
            "{more} more containers need ~{need} threads; {in_use} of the machine's {limit} are \
             in use, and the bench keeps within {:.0}% of them: unaffordable here (lower the \
             docker counts)",
            PID_BUDGET * 100.0
        );
    }
    Ok(())
}

impl Topology for Docker {
    fn label(&self) -> &'static str {
        self.label
    }
    fn ext(&self) -> &Netns {
        &self.sandbox.ext
    }
    fn client(&self) -> &Netns {
        &self.client.as_ref().expect("built").ns
    }
    fn server(&self) -> &Netns {
        &self.server.as_ref().expect("built").ns
    }
    fn set_published_ports(&mut self, total: usize) -> Result<()> {
        self.fill(total).map(drop)
    }
    fn set_isolation_rules(&mut self, _total: usize) -> Result<()> {
        bail!("{} has no isolation rules in this bench", self.label)
    }
    fn time_publish(&mut self, i: usize) -> Result<Option<Duration>> {
        let (id, d) = self.run_published(port::UPDATE_BASE + i as u16, &IDLE)?;
        self.remove(&[id])?;
        Ok(Some(d))
    }
    fn time_isolate(&mut self, _i: usize) -> Result<Option<Duration>> {
        Ok(None)
    }
    fn direct_drops(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    fn as_docker(&mut self) -> Option<&mut Docker> {
        Some(self)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.client = None;
        self.server = None;
        self.remove_fillers();
        // dockerd's own drop removes the rest (client, server, a sample's leftovers) while the
        // driver still serves, then stops dockerd by its pid; the fields after it follow.
        drop(self.dockerd.take());
        drop(self.driver.take());
    }
}
