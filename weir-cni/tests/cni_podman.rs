//! Issue #7 with a real runtime: Podman (CNI backend) runs busybox httpd containers on a Weir
//! network through weir-cni, inside a sandbox host namespace (see tests/podman/mod.rs for how
//! podman is confined). Published ports answer from ext and from the host, containers talk
//! without a bridge, `podman rm` cleans up, no netfilter rule appears in the host namespace at
//! any point, and the root namespace never changes. Podman is installed by `cargo xtask
//! setup`; without it the tests fail rather than skip.
//!
//! `start_to_first_byte` (ignored by default) measures `podman run -d` until ext gets the
//! first HTTP byte, Weir against the reference bridge + host-local + portmap plugins:
//!     cargo test -p control --test cni_podman -- --ignored --nocapture start_to_first_byte

mod podman;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use podman::{INDEX, Podman};
use rig::{Netns, Sandbox, UPLINK_IP, net, text};
use serde_json::{Value, json};

mod support;
use support::control;
const PLUGIN: &str = env!("CARGO_BIN_EXE_weir-cni");

/// The conflist a Podman user writes to put containers on Weir network `network`.
fn weir_conflist(name: &str, s: &Sandbox, network: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "weir-cni",
            "stateDir": s.state_dir,
            "network": network,
            "capabilities": {"portMappings": true}
        }]
    })
}

/// `cargo xtask setup` installs podman and what it needs: without them this test fails (a
/// skip would pass on a machine that never ran it).
fn require_podman() {
    if let Some(why) = podman::unavailable() {
        panic!("podman cannot run here: {why}; run `cargo xtask setup`");
    }
}

/// The Weir container listed under `name` (Podman passes its container name as K8S_POD_NAME).
fn weir_container(s: &Sandbox, name: &str) -> Option<Value> {
    s.json(&["container", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Podman's web1 (published on 18080, at `url`) and web2 (`ips`) reach each other and the
/// published port (hairpin), and ext and the host reach the published port.
fn reaches_published_and_peers(s: &Sandbox, pm: &Podman, url: &str, (ip1, ip2): (&str, &str)) {
    // The published port from ext and from the host (uplink address and loopback).
    assert!(
        rig::wait_for(Duration::from_secs(10), || net::curl(&s.ext, url, 2)
            .is_some()),
        "{url} unreachable from ext"
    );
    assert_eq!(net::curl(&s.ext, url, 5).as_deref(), Some(INDEX));
    assert_eq!(net::curl(&s.host, url, 5).as_deref(), Some(INDEX));
    assert_eq!(
        net::curl(&s.host, "http://127.0.0.1:18080/", 5).as_deref(),
        Some(INDEX)
    );
    // Container to container, both ways, and to the published port (hairpin): no bridge.
    // (`timeout`, not wget's -T: busybox-static 1.35's wget segfaults on -T.)
    for (from, to) in [("web2", ip1), ("web1", ip2)] {
        let got = pm.must(&[
            "exec",
            from,
            "timeout",
            "5",
            "wget",
            "-q",
            "-O-",
            &format!("http://{to}/"),
        ]);
        assert_eq!(got, INDEX, "{from} -> {to}");
    }
    assert_eq!(
        pm.must(&["exec", "web2", "timeout", "5", "wget", "-q", "-O-", url]),
        INDEX
    );
}

#[test]
fn podman_containers_on_a_weir_network() {
    require_podman();
    let root_before = podman::root_netns_snapshot();
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("pod", "10.90.0.0/24", &[]);
    let pm = Podman::new(&s.host, &[("weir-cni", Path::new(PLUGIN))]);
    pm.network("weirnet", &weir_conflist("weirnet", &s, &n));
    // Weir (init, network create, and the plugin below) adds no netfilter rule: the sandbox's
    // host namespace has none before, while the containers run and after they are gone.
    let fw_before = podman::netns_firewall(&s.host);
    assert!(
        podman::firewall_is_empty(&fw_before),
        "the host namespace has netfilter rules before any container: {fw_before}"
    );

    let web1 = pm.httpd("web1", "weirnet", Some("18080:80"));
    let web2 = pm.httpd("web2", "weirnet", None);
    let c1 = weir_container(&s, "web1").expect("web1 is a Weir container");
    let c2 = weir_container(&s, "web2").expect("web2 is a Weir container");
    assert_eq!(c1["published"], json!(["18080->80/tcp"]));
    let ns1 = c1["netns"].as_str().unwrap().to_string();
    let ns2 = c2["netns"].as_str().unwrap().to_string();
    assert!(
        ns1.starts_with("/run/netns/netns-"),
        "podman's namespace: {ns1}"
    );
    let (ip1, ip2) = (c1["ip"].as_str().unwrap(), c2["ip"].as_str().unwrap());

    let url = format!("http://{UPLINK_IP}:18080/");
    reaches_published_and_peers(&s, &pm, &url, (ip1, ip2));
    assert!(s.path_packets("container-to-container") > 0);
    assert!(s.path_packets("published-in") > 0);
    let bridges = text(
        &s.host
            .run(&["ip", "-o", "link", "show", "type", "bridge"])
            .stdout,
    );
    assert!(bridges.trim().is_empty(), "a bridge exists: {bridges}");
    assert_eq!(s.json(&["status"])["problems"], json!([]));
    assert_eq!(
        podman::netns_firewall(&s.host),
        fw_before,
        "netfilter rules appeared in the host namespace while Weir containers run"
    );

    // `podman rm` runs DEL: nothing of either container is left in Weir or the host.
    pm.must(&["rm", "--force", "--time", "0", &web1, &web2]);
    assert_eq!(s.json(&["container", "ls"]), json!([]));
    assert_eq!(s.json(&["ports"]), json!([]));
    let links = text(&s.host.run(&["ip", "-o", "link", "show"]).stdout);
    assert!(!links.contains("wr-"), "host veths left: {links}");
    assert!(!Path::new(&ns1).exists() && !Path::new(&ns2).exists());
    assert!(net::curl(&s.ext, &url, 2).is_none());
    assert_eq!(
        podman::netns_firewall(&s.host),
        fw_before,
        "netfilter rules left in the host namespace after podman rm"
    );

    drop(pm);
    drop(s);
    assert_eq!(
        podman::root_netns_snapshot(),
        root_before,
        "the root namespace's routes, links or firewall changed"
    );
}

#[test]
fn podman_containers_on_a_dual_stack_weir_network() {
    require_podman();
    let s = Sandbox::new(control());
    s.add_ipv6();
    s.init(&[]);
    let n = s.network("pod6", "10.91.0.0/24", &["--subnet6", "fd00:91::/64"]);
    let pm = Podman::new(&s.host, &[("weir-cni", Path::new(PLUGIN))]);
    pm.network("weirnet6", &weir_conflist("weirnet6", &s, &n));
    let web = pm.httpd("web6", "weirnet6", Some("18081:80"));
    let c = weir_container(&s, "web6").expect("web6 is a Weir container");
    let ip6 = c["ip6"].as_str().expect("an IPv6 address").to_string();
    assert!(ip6.starts_with("fd00:91::"), "{ip6}");
    // The runtime was told both addresses (podman shows what the plugin's result listed).
    let inspect = pm.must(&[
        "inspect",
        &web,
        "--format",
        "{{json .NetworkSettings.Networks}}",
    ]);
    assert!(
        inspect.contains(&ip6),
        "podman was not given the IPv6 address: {inspect}"
    );
    // Published on the host's IPv6 address too, and the host reaches the container directly.
    let url = format!("http://[{}]:18081/", rig::UPLINK_IP6);
    assert_eq!(net::curl(&s.ext, &url, 5).as_deref(), Some(INDEX));
    let direct = format!("http://[{ip6}]:80/");
    assert_eq!(net::curl(&s.host, &direct, 5).as_deref(), Some(INDEX));
    pm.must(&["rm", "--force", "--time", "0", &web]);
    assert_eq!(s.json(&["container", "ls"]), json!([]));
    assert!(net::curl(&s.ext, &url, 2).is_none(), "published after DEL");
}

/// Connects from inside `ns` to `addr` until an HTTP request gets its first byte back;
/// returns when that happened. New connection each try: before the port is wired, a try may
/// land on conmon's placeholder socket (accepted, never answered) or be refused.
fn first_byte(
    ns: &Netns,
    addr: SocketAddr,
    deadline: Duration,
) -> std::thread::JoinHandle<Option<Instant>> {
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
                let mut b = [0u8; 1];
                if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && matches!(s.read(&mut b), Ok(1))
                {
                    return Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn start_to_first_byte() {
    require_podman();
    let reps: usize = std::env::var("WEIR_CNI_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let root_before = podman::root_netns_snapshot();
    let s = Sandbox::with_weir(control(), &[]);
    let n = s.network("pod", "10.91.0.0/24", &[]);
    let plugins: Vec<(&str, &Path)> = vec![("weir-cni", Path::new(PLUGIN))];
    let pm = Podman::new(&s.host, &plugins);
    pm.network("weirnet", &weir_conflist("weirnet", &s, &n));
    let ipam_dir = pm.work.join("ipam");
    pm.network(
        "refnet",
        &json!({
            "cniVersion": "1.0.0",
            "name": "refnet",
            "plugins": [
                {"type": "bridge", "bridge": "cnibr0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": ipam_dir, "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": "10.92.0.0/24", "gateway": "10.92.0.1"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }),
    );
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("weir-cni", vec![], vec![]),
        ("bridge+host-local+portmap", vec![], vec![]),
    ];
    let nets = ["weirnet", "refnet"];
    // One warm-up per network, then ABBA order so drift hits both alike.
    for rep in 0..=reps {
        let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let port = 20000 + (rep * 2 + k) as u16;
            let addr: SocketAddr = format!("{UPLINK_IP}:{port}").parse().unwrap();
            let probe = first_byte(&s.ext, addr, Duration::from_secs(30));
            let t0 = Instant::now();
            let name = format!("m{rep}{k}");
            pm.httpd(&name, nets[k], Some(&format!("{port}:80")));
            let returned = t0.elapsed();
            let got = probe.join().unwrap().expect("no first byte within 30 s");
            pm.must(&["rm", "--force", "--time", "0", &name]);
            if rep > 0 {
                results[k].1.push((got - t0).as_secs_f64() * 1e3);
                results[k].2.push(returned.as_secs_f64() * 1e3);
            }
        }
    }
    println!(
        "\npodman run -d … -p PORT:80 httpd → first HTTP byte at ext ({reps} runs each, interleaved)"
    );
    println!(
        "{:<28} {:>18} {:>22} {:>10} {:>10}",
        "network", "median first byte", "median `podman run`", "min", "max"
    );
    for (what, fb, run) in &results {
        let (mn, mx) = fb
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        println!(
            "{what:<28} {:>15.1} ms {:>19.1} ms {mn:>7.1} ms {mx:>7.1} ms",
            median(fb.clone()),
            median(run.clone())
        );
    }
    println!("samples (ms): {results:?}");
    // The reference plugins make a bridge and iptables rules: in the sandbox, not here.
    drop(pm);
    drop(s);
    assert_eq!(
        podman::root_netns_snapshot(),
        root_before,
        "the root namespace's routes, links or firewall changed"
    );
}
