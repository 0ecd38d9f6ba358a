//! An instance's life: `init` picks its defaults and `WEIR_STATE_DIR` selects it, one host
//! namespace has one instance, `network rm` frees the name and subnet, and `down` leaves
//! nothing behind.

use std::process::{Command, Stdio};

use rig::{EXT_IP, Sandbox, UPLINK_IP, net, text};

use crate::CONTROL;

#[test]
fn down_leaves_nothing_behind() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.45.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _b = s.container("b", &n, &[]);
    let status = s.json(&["status"]);
    let pin_dir = s.pin_dir();
    assert!(pin_dir.exists());
    s.ok(&["down"]);
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    assert!(!s.state_dir.exists(), "state dir left");
    assert!(!a.path().exists(), "container netns left");
    let links = s.host.must(&["ip", "-o", "link"]);
    assert!(!links.contains("wr-"), "host veths left: {links}");
    let addrs = s.host.must(&["ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        !addrs.contains("10.45.0.1"),
        "gateway address left: {addrs}"
    );
    // tcx links on the uplink are gone too: nothing but the kernel's own handling remains.
    let tc = text(&rig::run(&["bpftool", "link", "show"]).stdout);
    let prog_ids: Vec<String> = status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["program_id"].as_u64())
        .map(|i| format!("prog {i} "))
        .collect();
    for id in prog_ids {
        assert!(!tc.contains(&id), "a link to {id} remains: {tc}");
    }
    // down is idempotent.
    s.ok(&["down"]);
}

/// A state dir of its own, removed on drop.
struct OtherStateDir(std::path::PathBuf);

impl Drop for OtherStateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn one_host_namespace_has_one_instance() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.47.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let a_ip = s.ip_of(&a);
    let pins = || std::fs::read_dir("/sys/fs/bpf/weir").map_or(0, |d| d.count());
    let before = pins();
    // A second state dir serving the same host namespace would share its uplink, gateway
    // device and `wr-` names: refused, with nothing created.
    let other = OtherStateDir(std::env::temp_dir().join(rig::unique("weir-second-")));
    let o = Command::new(CONTROL)
        .arg("--state-dir")
        .arg(&other.0)
        .args(["--host-netns", &s.host.name, "init", "--uplink", "up0"])
        .env_remove("WEIR_STATE_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a second instance was initialised");
    let err = text(&o.stderr);
    assert!(err.contains("another Weir instance"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(pins(), before, "the refused init pinned something");
    assert!(net::ping(&s.host, &a_ip, 1), "a lost its link");

    // A create whose host-side name is taken by a link it did not make fails — and its
    // rollback leaves that link alone (it deletes only a link with its own MAC).
    let a_if = s.host_if_of(&a);
    let next = u32::from_str_radix(a_if.trim_start_matches("wr-"), 16).unwrap() + 1;
    let squatter = format!("wr-{next:x}");
    s.host.must(&[
        "ip", "link", "add", &squatter, "type", "veth", "peer", "name", "sq-peer",
    ]);
    let e = s.fails(&["container", "create", &s.name("b"), "--network", &n]);
    assert!(e.contains("already exists"), "{e}");
    assert!(
        s.host
            .run(&["ip", "link", "show", &squatter])
            .status
            .success(),
        "the failed create deleted {squatter}, which was not its own"
    );
    s.host.must(&["ip", "link", "del", &squatter]);
    assert!(net::ping(&s.host, &a_ip, 1), "a lost its link");
}

/// Whether `dev` in the host namespace carries `addr` (as a /32, like the gateways on lo).
fn host_has_addr(s: &Sandbox, dev: &str, addr: &str) -> bool {
    s.host
        .must(&["ip", "-o", "-4", "addr", "show", "dev", dev])
        .contains(&format!("inet {addr}/32 "))
}

/// A successful `network rm` removes the gateway address from the host's lo and the network
/// from the listing; the same name and subnet can then be created again and work.
#[test]
fn network_rm_removes_it_and_frees_name_and_subnet() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.48.0.0/24", &[]);
    let other = s.network("o", "10.48.1.0/24", &[]);
    s.ok(&["network", "connect", &n, &other]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    assert!(net::ping(&a, &s.ip_of(&b), 1));
    assert!(host_has_addr(&s, "lo", "10.48.0.1"), "no gateway on lo");
    let listed = |name: &str| {
        s.json(&["network", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == name)
    };
    assert!(listed(&n));
    // Refused while containers use it, and nothing changes.
    let e = s.fails(&["network", "rm", &n]);
    assert!(e.contains(&a.name), "{e}");
    assert!(listed(&n) && host_has_addr(&s, "lo", "10.48.0.1"));
    s.ok(&["container", "rm", &a.name]);
    s.ok(&["container", "rm", &b.name]);
    assert!(!a.path().exists() && !b.path().exists());
    s.ok(&["network", "rm", &n]);
    assert!(
        !host_has_addr(&s, "lo", "10.48.0.1"),
        "gateway address left on lo after network rm"
    );
    assert!(!listed(&n), "network still listed after rm");
    assert!(listed(&other));
    let links = s.host.must(&["ip", "-o", "link"]);
    assert!(!links.contains("wr-"), "host veths left: {links}");
    // Same name, same subnet, same container names: it works again.
    s.ok(&["network", "create", &n, "--subnet", "10.48.0.0/24"]);
    assert!(listed(&n));
    assert!(
        host_has_addr(&s, "lo", "10.48.0.1"),
        "gateway not back on lo"
    );
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    assert!(
        net::ping(&a, &bip, 2),
        "containers of the re-created network"
    );
    let _web = net::http_server(&b, 80, "again");
    assert_eq!(
        net::curl(&a, &format!("http://{bip}/"), 5).as_deref(),
        Some("again")
    );
    assert!(
        net::ping(&a, "10.48.0.1", 1),
        "gateway of the re-created network"
    );
    // The old network link went with the network: the new one is not connected to `other`.
    let c = s.container("c", &other, &[]);
    let _cweb = net::http_server(&c, 80, "other");
    assert!(
        net::curl(&a, &format!("http://{}/", s.ip_of(&c)), 2).is_none(),
        "the re-created network inherited the removed one's connection"
    );
}

/// `init` without `--uplink` picks the default route's interface and, by default, attaches no
/// XDP to a veth uplink; `WEIR_STATE_DIR` selects the instance like `--state-dir`.
#[test]
fn init_defaults_and_state_dir_from_env() {
    let s = Sandbox::new(CONTROL);
    s.ok(&["init"]);
    let st = s.json(&["status"]);
    assert_eq!(st["uplink"], "up0", "{st}");
    assert_eq!(st["uplink_ip"], UPLINK_IP, "{st}");
    assert_eq!(st["xdp"], false, "XDP attached to a veth by default: {st}");
    let has_xdp = || {
        s.host
            .must(&["ip", "-d", "link", "show", "dev", "up0"])
            .contains("xdp")
    };
    assert!(!has_xdp(), "an XDP program is attached to up0");
    // `auto` never picks a veth either.
    s.ok(&["init", "--xdp", "auto"]);
    assert_eq!(s.json(&["status"])["xdp"], false);
    assert!(!has_xdp(), "--xdp auto attached XDP to a veth");
    // The check above sees XDP when it is there.
    s.ok(&["init", "--xdp", "on"]);
    assert_eq!(s.json(&["status"])["xdp"], true);
    assert!(has_xdp(), "ip link does not show the XDP program");
    s.ok(&["init", "--xdp", "off"]);
    assert!(!has_xdp());
    // The uplink it picked works: masquerade out of up0.
    let n = s.network("n", "10.49.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let _echo = net::peer_echo(&s.ext, 9000, 0);
    assert_eq!(net::peer_seen(&a, EXT_IP, 9000), UPLINK_IP);

    // WEIR_STATE_DIR instead of --state-dir (and no --host-netns: init recorded it).
    let env_control = |dir: &std::path::Path, args: &[&str]| {
        Command::new(CONTROL)
            .args(args)
            .env("WEIR_STATE_DIR", dir)
            .stdin(Stdio::null())
            .output()
            .expect("running control")
    };
    let o = env_control(&s.state_dir, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        std::path::Path::new(st["state_dir"].as_str().unwrap()),
        s.state_dir.as_path()
    );
    assert_eq!(st["host_netns"], s.host.name.as_str());
    assert_eq!(st["networks"], 1);
    let m = s.name("m");
    let o = env_control(
        &s.state_dir,
        &["network", "create", &m, "--subnet", "10.49.1.0/24"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let names: Vec<String> = s
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&m) && names.contains(&n),
        "the network created through WEIR_STATE_DIR is not this instance's: {names:?}"
    );
    assert!(host_has_addr(&s, "lo", "10.49.1.1"));
    // Another WEIR_STATE_DIR is another (here: uninitialised) instance.
    let elsewhere = std::env::temp_dir().join(format!("weir-test-{}-none", s.id));
    let o = env_control(&elsewhere, &["network", "ls", "--json"]);
    let _ = std::fs::remove_dir_all(&elsewhere);
    assert!(
        !o.status.success() && !text(&o.stdout).contains(&m),
        "WEIR_STATE_DIR={} showed this instance: {}",
        elsewhere.display(),
        text(&o.stdout)
    );
}
