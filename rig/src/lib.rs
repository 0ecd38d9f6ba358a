//! The test rig (DESIGN.md §4): a sandboxed "host" network namespace running a Weir instance,
//! an "ext" namespace behind its uplink (198.18.0.0/15, the benchmarking range), and
//! containers — all with unique names, all removed by RAII guards even when a test panics.
//!
//! Nothing here touches the root namespace's interfaces, routes or firewall: links are created
//! directly inside the sandbox namespaces.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub mod capture;
pub mod docker;
pub mod maps;
pub mod net;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The `control` binary for tests of other packages (weir-cni, weir-docker): cargo neither
/// builds it for them nor names it in `CARGO_BIN_EXE_*`. Built once per process, in the
/// profile the calling test runs in, where cargo puts it.
pub fn control_binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        // target/<profile>/deps/<the test>: the binary lands in target/<profile>.
        let exe = std::env::current_exe().expect("locating the test binary");
        let dir: PathBuf = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .into();
        let mut args = vec!["build", "-q", "-p", "control", "--bin", "control"];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo to build control")
            .success();
        assert!(ok, "cargo {} failed", args.join(" "));
        dir.join("control").display().to_string()
    })
}

/// A name no other test (in this or any concurrently running process) uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id())
}

/// Runs a program, capturing output.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a shell script, capturing output.
pub fn sh(script: &str) -> Output {
    run(&["sh", "-c", script])
}

/// Runs and asserts success; returns stdout.
pub fn must(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop together with every
/// process still running in it.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn new(name: &str) -> Self {
        must(&["ip", "netns", "add", name]);
        must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Self {
            name: name.to_string(),
            owned: true,
        }
    }

    /// A namespace someone else (Weir) created and will delete; we only run things in it.
    pub fn borrowed(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: false,
        }
    }

    fn prefix<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// Runs a program inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.prefix(args))
    }

    /// Runs and asserts success; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        must(&self.prefix(args))
    }

    /// Runs a shell script inside the namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// Starts a background process inside the namespace; killed on drop.
    pub fn spawn(&self, args: &[&str]) -> Bg {
        let argv = self.prefix(args);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv:?}: {e}"));
        Bg {
            child: Some(child),
            cleanup: None,
        }
    }

    /// Starts a background process with piped stdout/stderr (read them via `Bg::finish`).
    pub fn spawn_piped(&self, args: &[&str]) -> Bg {
        let argv = self.prefix(args);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv:?}: {e}"));
        Bg {
            child: Some(child),
            cleanup: None,
        }
    }

    /// Kills every process in the namespace.
    pub fn kill_all(&self) {
        let pids = run(&["ip", "netns", "pids", &self.name]);
        for pid in text(&pids.stdout).split_whitespace() {
            if let Ok(p) = pid.parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        if self.owned {
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }
}

/// A background process, killed (and reaped) on drop.
pub struct Bg {
    child: Option<Child>,
    /// A directory removed together with the process.
    cleanup: Option<PathBuf>,
}

impl Bg {
    /// Takes over a process started elsewhere: killed and reaped when dropped.
    pub fn from_child(child: Child) -> Self {
        Self {
            child: Some(child),
            cleanup: None,
        }
    }

    /// Removes `dir` when the process is dropped.
    pub fn with_cleanup(mut self, dir: PathBuf) -> Self {
        self.cleanup = Some(dir);
        self
    }

    /// Waits for the process and returns its output (stdout, stderr, success).
    pub fn finish(mut self) -> Output {
        self.child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("waiting for child")
    }

    /// Waits at most `timeout`; kills on timeout.
    pub fn finish_within(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("child");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().expect("waiting for child")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.cleanup.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Addresses of the sandbox uplink (host side .1, ext side .2).
pub const UPLINK_IP: &str = "198.18.0.1";
pub const EXT_IP: &str = "198.18.0.2";
/// The uplink's and ext's IPv6 addresses, when a test asks for them ([`Sandbox::add_ipv6`]).
pub const UPLINK_IP6: &str = "2001:db8:18::1";
pub const EXT_IP6: &str = "2001:db8:18::2";

/// A sandboxed host running its own Weir instance, with an ext namespace behind the uplink.
/// Dropping it runs `control down`, then removes every namespace it knows of.
pub struct Sandbox {
    pub id: String,
    pub control: PathBuf,
    pub state_dir: PathBuf,
    pub host: Netns,
    pub ext: Netns,
}

impl Sandbox {
    /// Builds host and ext namespaces joined by a veth (`up0` in host, `eth0` in ext) with
    /// the host's default route via ext. Weir is not initialised yet: call [`Sandbox::init`].
    pub fn new(control: impl AsRef<Path>) -> Self {
        let id = unique("s");
        let host = Netns::new(&format!("{id}h"));
        let ext = Netns::new(&format!("{id}x"));
        must(&[
            "ip", "link", "add", "up0", "netns", &host.name, "type", "veth", "peer", "name",
            "eth0", "netns", &ext.name,
        ]);
        host.must(&[
            "ip",
            "addr",
            "add",
            &format!("{UPLINK_IP}/24"),
            "dev",
            "up0",
        ]);
        host.must(&["ip", "link", "set", "up0", "up"]);
        host.must(&["ip", "route", "add", "default", "via", EXT_IP]);
        ext.must(&["ip", "addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"]);
        ext.must(&["ip", "link", "set", "eth0", "up"]);
        let state_dir = std::env::temp_dir().join(format!("weir-test-{id}"));
        Self {
            id,
            control: control.as_ref().to_path_buf(),
            state_dir,
            host,
            ext,
        }
    }

    /// Gives the uplink and ext IPv6 addresses (no duplicate-address detection: usable at
    /// once) and the host a default IPv6 route via ext. Before `init`, which records them.
    pub fn add_ipv6(&self) {
        let u = format!("{UPLINK_IP6}/64");
        self.host
            .must(&["ip", "-6", "addr", "add", &u, "dev", "up0", "nodad"]);
        let e = format!("{EXT_IP6}/64");
        self.ext
            .must(&["ip", "-6", "addr", "add", &e, "dev", "eth0", "nodad"]);
        self.host
            .must(&["ip", "-6", "route", "add", "default", "via", EXT_IP6]);
    }

    /// A new sandbox with Weir initialised on its uplink (extra `init` flags appended).
    pub fn with_weir(control: impl AsRef<Path>, init_args: &[&str]) -> Self {
        let s = Self::new(control);
        s.init(init_args);
        s
    }

    pub fn init(&self, extra: &[&str]) -> String {
        let mut a = vec!["init", "--uplink", "up0"];
        a.extend_from_slice(extra);
        self.ok(&a)
    }

    /// `control` with this instance's state dir and nothing else: the caller chooses the other
    /// global flags (another `--host-netns`, none), the command and how to run it.
    pub fn bare_command(&self) -> Command {
        let mut c = Command::new(&self.control);
        c.arg("--state-dir")
            .arg(&self.state_dir)
            .env_remove("WEIR_STATE_DIR")
            .stdin(Stdio::null());
        c
    }

    /// `control args` against this instance, not started yet (to spawn, pipe or kill it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.bare_command();
        c.arg("--host-netns").arg(&self.host.name).args(args);
        c
    }

    /// Runs `control` against this instance.
    pub fn control(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running control {args:?}: {e}"))
    }

    /// Runs `control`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.control(args);
        assert!(
            o.status.success(),
            "control {args:?} failed: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Runs `control`, asserts failure with exactly one line on stderr, returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.control(args);
        assert!(
            !o.status.success(),
            "control {args:?} should have failed: {}",
            text(&o.stdout)
        );
        let err = text(&o.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
        assert_eq!(
            lines.len(),
            1,
            "control {args:?}: expected one error line, got {err:?}"
        );
        lines[0].to_string()
    }

    /// `control ... --json` parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a))
            .unwrap_or_else(|e| panic!("control {args:?} --json: {e}"))
    }

    /// A unique container name for this sandbox (container namespaces are global files).
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.id)
    }

    /// Creates a network (name made unique) and returns its name.
    pub fn network(&self, short: &str, subnet: &str, extra: &[&str]) -> String {
        let n = self.name(short);
        let mut a = vec!["network", "create", n.as_str(), "--subnet", subnet];
        a.extend_from_slice(extra);
        self.ok(&a);
        n
    }

    /// Creates a container (name made unique) and returns a handle to run things in it.
    pub fn container(&self, short: &str, network: &str, extra: &[&str]) -> Netns {
        let n = self.name(short);
        let mut a = vec!["container", "create", n.as_str(), "--network", network];
        a.extend_from_slice(extra);
        self.ok(&a);
        Netns::borrowed(&n)
    }

    /// A string field of a container's `control container ls --json` entry.
    fn listed(&self, c: &Netns, field: &str) -> String {
        let v = self.json(&["container", "ls"]);
        v.as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == c.name.as_str()))
            .and_then(|x| x[field].as_str())
            .unwrap_or_else(|| panic!("container {} not listed with a {field}", c.name))
            .to_string()
    }

    /// The address `control` gave a container.
    pub fn ip_of(&self, c: &Netns) -> String {
        self.listed(c, "ip")
    }

    /// The IPv6 address `control` gave a container (panics when it has none).
    pub fn ip6_of(&self, c: &Netns) -> String {
        self.listed(c, "ip6")
    }

    /// The name of a container's host-side veth.
    pub fn host_if_of(&self, c: &Netns) -> String {
        self.listed(c, "host_if")
    }

    /// Summed datapath counters (`control stats --json`).
    pub fn stats(&self) -> serde_json::Value {
        self.json(&["stats"])
    }

    /// Packets dropped for `reason` (all hooks).
    pub fn drops(&self, reason: &str) -> u64 {
        let s = self.stats();
        s["drops"][reason]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    }

    /// The problems `control status` reports (none on a healthy instance).
    pub fn problems(&self) -> Vec<serde_json::Value> {
        self.json(&["status"])["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Where this instance pins its programs, links and maps (`control status`'s pin_dir).
    pub fn pin_dir(&self) -> PathBuf {
        let st = self.json(&["status"]);
        PathBuf::from(
            st["pin_dir"]
                .as_str()
                .unwrap_or_else(|| panic!("status without a pin_dir: {st}")),
        )
    }

    /// The pin of this instance's map `name`.
    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.pin_dir().join("maps").join(name)
    }

    /// Packets counted on forwarding path `path`.
    pub fn path_packets(&self, path: &str) -> u64 {
        self.stats()["paths"][path]["packets"].as_u64().unwrap_or(0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kill servers in containers first so namespaces can go away with them.
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{}-", self.id)) {
                    Netns::borrowed(&n).kill_all();
                }
            }
        }
        if self.state_dir.exists() {
            let _ = self.control(&["down", "--force"]);
        }
        // Anything `down` could not remove (e.g. when init never ran).
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{}-", self.id)) {
                    let _ = run(&["ip", "netns", "del", &n]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Lazily unmounts every mount point under `dir` (deepest first): what a container engine
/// left there (overlay layers, netns bind mounts, shm).
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}
