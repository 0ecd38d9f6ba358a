//! Podman (Debian's 4.3, CNI backend) confined to a sandbox: private containers.conf and
//! storage.conf in a temporary work dir (storage, run and lock files, CNI configs and plugin
//! binaries all live there), every command run as `nsenter --net=/run/netns/HOST podman ...`.
//!
//! nsenter switches only the network namespace: podman keeps the machine's mount namespace,
//! so the container namespaces it bind-mounts under /run/netns are visible to everyone (the
//! plugin, `ip netns`, the test), while everything network-side it and its plugins do —
//! veths, conmon's host-port sockets, the reference plugins' bridge and iptables rules —
//! happens in the sandbox's host namespace, never in the root one.
//!
//! Outside the work dir podman still touches what it has no setting for: libcni's result cache
//! (/var/lib/cni/results/NET-ID-IF, deleted again by the DEL of `podman rm`), the image
//! copier's blob-info cache (/var/lib/containers/cache, written by `podman import`), runc's
//! state root (/run/runc, one directory per running container) and the cgroupfs parent
//! `libpod_parent` (with conmon's `conmon` child) in every cgroup hierarchy. Drop removes each
//! of those if it did not exist before the harness was made.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
};

use rig::{Netns, text};

/// Podman harnesses in one test binary take turns: they share the two system caches above.
static TURN: Mutex<()> = Mutex::new(());

/// The image every test runs: busybox-static with httpd serving /www/index.html.
pub const IMAGE: &str = "localhost/weir-bb:latest";
pub const INDEX: &str = "hello from podman";

/// Why podman cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    for (bin, pkg) in [
        ("/usr/bin/podman", "podman"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/bin/conmon", "conmon"),
        ("/usr/bin/nsenter", "util-linux"),
    ] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} is missing (Debian package {pkg}; `cargo xtask setup` installs it)"
            ));
        }
    }
    let bb = rig::run(&["dpkg-query", "-W", "-f", "${Status}", "busybox-static"]);
    if !text(&bb.stdout).contains("installed") {
        return Some("busybox-static is not installed (`cargo xtask setup` installs it)".into());
    }
    None
}

pub struct Podman {
    pub work: PathBuf,
    host: String,
    made_dirs: Vec<&'static str>,
    made_cgroups: bool,
    _turn: MutexGuard<'static, ()>,
}

impl Podman {
    /// A private podman serving the sandbox host namespace `host`, with `plugins` (name, path)
    /// installed in its CNI plugin directory next to /usr/lib/cni, and the busybox image.
    pub fn new(host: &Netns, plugins: &[(&str, &Path)]) -> Self {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let made_dirs = ["/var/lib/cni", "/var/lib/containers", "/run/runc"]
            .into_iter()
            .filter(|d| !Path::new(d).exists())
            .collect();
        let made_cgroups = libpod_cgroups().is_empty();
        let work = std::env::temp_dir().join(rig::unique("weir-podman-"));
        let p = Self {
            work,
            host: host.name.clone(),
            made_dirs,
            made_cgroups,
            _turn: turn,
        };
        for d in [
            "net.d",
            "cnibin",
            "tmp",
            "storage/graph",
            "storage/run",
            "rootfs",
        ] {
            fs::create_dir_all(p.work.join(d)).unwrap();
        }
        let w = p.work.display().to_string();
        fs::write(
            p.work.join("containers.conf"),
            format!(
                r#"[containers]
# root here lacks CAP_SYS_RESOURCE: podman's default ulimits would be refused.
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[engine]
# crun 1.8 rejects this cgroup v1/v2 hybrid.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{w}/tmp/events.log"
tmp_dir = "{w}/tmp"
image_copy_tmp_dir = "{w}/tmp"
# File locks in tmp_dir instead of the machine-wide /dev/shm/libpod_lock.
lock_type = "file"
static_dir = "{w}/storage/graph/libpod"
volume_path = "{w}/storage/graph/volumes"
[network]
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni", "{w}/cnibin"]
network_config_dir = "{w}/net.d"
"#
            ),
        )
        .unwrap();
        fs::write(
            p.work.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{w}/storage/graph\"\nrunroot = \"{w}/storage/run\"\n"
            ),
        )
        .unwrap();
        for (name, path) in plugins {
            fs::copy(path, p.work.join("cnibin").join(name)).unwrap();
        }
        p.import_busybox();
        p
    }

    /// A busybox rootfs (no registry): the static binary, its applets, passwd/group, /www.
    fn import_busybox(&self) {
        let root = self.work.join("rootfs");
        for d in ["bin", "etc", "www", "tmp"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "httpd", "wget", "nc", "ip", "cat", "sleep", "ls", "timeout",
        ] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(root.join("www/index.html"), INDEX).unwrap();
        let tar = self.work.join("bb.tar");
        rig::must(&[
            "tar",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ]);
        self.must(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            tar.to_str().unwrap(),
            IMAGE,
        ]);
    }

    /// Writes `net.d/NAME.conflist`.
    pub fn network(&self, name: &str, conflist: &serde_json::Value) {
        fs::write(
            self.work.join("net.d").join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(conflist).unwrap(),
        )
        .unwrap();
    }

    /// The command line for `podman ARGS` in the sandbox host namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "nsenter"])
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.work.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.work.join("storage.conf"))
            .env("TMPDIR", self.work.join("tmp"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    pub fn must(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed ({}): {}{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// `podman run -d` of the busybox httpd serving /www on port 80.
    pub fn httpd(&self, name: &str, network: &str, publish: Option<&str>) -> String {
        let mut a = vec!["run", "-d", "--name", name, "--network", network];
        if let Some(p) = publish {
            a.extend(["-p", p]);
        }
        a.extend([
            IMAGE,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        self.must(&a).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        // Whatever podman left mounted under the work dir (overlay layers, shm) goes first.
        rig::unmount_under(&self.work);
        let _ = fs::remove_dir_all(&self.work);
        // Only what we made, and only when empty once our part is gone: another runtime may
        // have started using them meanwhile.
        for d in &self.made_dirs {
            match *d {
                "/var/lib/containers" => {
                    let _ = fs::remove_dir_all(Path::new(d).join("cache"));
                }
                "/var/lib/cni" => {
                    let _ = fs::remove_dir(Path::new(d).join("results"));
                }
                _ => {}
            }
            let _ = fs::remove_dir(d);
        }
        if self.made_cgroups {
            remove_libpod_cgroups();
        }
    }
}

/// `libpod_parent` in each cgroup hierarchy (v1 controllers, the unified one, or a pure v2 root).
fn libpod_cgroups() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("libpod_parent"))
                .collect()
        })
        .unwrap_or_default();
    found.push(root.join("libpod_parent"));
    found.retain(|p| p.is_dir());
    found
}

/// Removes the (empty) cgroups podman made. conmon can take a moment to exit after `podman rm`,
/// and a cgroup with a process in it cannot be removed: retry briefly.
fn remove_libpod_cgroups() {
    for _ in 0..50 {
        for parent in libpod_cgroups() {
            if let Ok(children) = fs::read_dir(&parent) {
                for c in children
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                {
                    let _ = fs::remove_dir(c.path());
                }
            }
            let _ = fs::remove_dir(&parent);
        }
        if libpod_cgroups().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// What the root namespace looks like to someone auditing routes, links and firewall
/// (counters and timestamps stripped).
pub fn root_netns_snapshot() -> String {
    let strip_counters = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let mut out = String::new();
                let mut words = l.split(' ').peekable();
                while let Some(w) = words.next() {
                    // iptables-save: ":CHAIN POLICY [p:b]"; nft: "counter packets N bytes M".
                    if w.starts_with('[') && w.ends_with(']') && w.contains(':') {
                        continue;
                    }
                    if w == "packets" || w == "bytes" {
                        words.next();
                        continue;
                    }
                    out.push_str(w);
                    out.push(' ');
                }
                out
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut s = String::new();
    for (what, args) in [
        ("routes", &["ip", "route", "show", "table", "all"][..]),
        ("links", &["ip", "-o", "link", "show"][..]),
        ("iptables", &["iptables-save"][..]),
        ("nft", &["nft", "list", "ruleset"][..]),
    ] {
        let o = rig::run(args);
        s.push_str(&format!("== {what}\n{}\n", strip_counters(text(&o.stdout))));
    }
    s
}

/// The netfilter ruleset of namespace `ns` as every tool that can hold one sees it: iptables
/// and ip6tables (nf_tables and legacy back ends) and nft. Comment lines (timestamps) are
/// dropped; a tool that fails fails the test, so an unreadable ruleset never reads as empty.
pub fn netns_firewall(ns: &Netns) -> String {
    let mut s = String::new();
    for args in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["iptables-legacy-save"],
        &["ip6tables-legacy-save"],
        &["nft", "list", "ruleset"],
    ] {
        let o = ns.run(args);
        assert!(
            o.status.success(),
            "{args:?} in {}: {}",
            ns.name,
            text(&o.stderr)
        );
        let rules: Vec<String> = text(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        s.push_str(&format!("== {}\n", args.join(" ")));
        for r in rules {
            s.push_str(&r);
            s.push('\n');
        }
    }
    s
}

/// Whether a [`netns_firewall`] listing holds no table, chain or rule at all.
pub fn firewall_is_empty(listing: &str) -> bool {
    listing.lines().all(|l| l.starts_with("== "))
}
