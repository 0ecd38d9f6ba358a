//! Repair: `control` killed mid-command (create, remove, network create, init) leaves a
//! journal the next command repairs, so that the kernel's objects, the maps and the listings
//! agree again; an interrupted init is finished by init alone.

use std::{
    net::Ipv4Addr,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use rig::{Sandbox, UPLINK_IP, net, text};
use weir_common::{endpoint::Endpoint, maps as names};

use crate::{CONTROL, inspect::keys};

/// Everything the kernel holds for the sandbox agrees with `control container ls`: no problems,
/// no stray namespaces, veths or endpoint entries, and no journal left.
fn assert_consistent(s: &Sandbox, when: &str) {
    let p = s.problems();
    assert!(p.is_empty(), "{when}: problems {p:?}");
    assert!(
        !s.state_dir.join("journal").exists(),
        "{when}: journal left"
    );
    let listed = s.json(&["container", "ls"]);
    let listed = listed.as_array().unwrap();
    let mut names: Vec<String> = listed
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut netns: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{}-", s.id)))
        .collect();
    netns.sort();
    assert_eq!(names, netns, "{when}: containers vs namespaces");
    let mut veths: Vec<String> = s
        .host
        .must(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .filter(|n| n.starts_with("wr-"))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    veths.sort();
    let mut want_veths: Vec<String> = listed
        .iter()
        .map(|c| c["host_if"].as_str().unwrap().to_string())
        .collect();
    want_veths.sort();
    assert_eq!(veths, want_veths, "{when}: host veths");
    let mut eps: Vec<Ipv4Addr> = keys::<u32, Endpoint>(s, names::ENDPOINTS)
        .into_iter()
        .map(weir_common::addr::to_std)
        .collect();
    eps.sort();
    let mut ips: Vec<Ipv4Addr> = listed
        .iter()
        .map(|c| c["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    ips.sort();
    assert_eq!(eps, ips, "{when}: endpoint map");
    // Each network's gateway, and nothing else, on the host's loopback.
    let mut gws: Vec<String> = s
        .host
        .must(&["ip", "-o", "-4", "addr", "show", "dev", "lo"])
        .split_whitespace()
        .filter(|w| w.ends_with("/32"))
        .map(|w| w.trim_end_matches("/32").to_string())
        .collect();
    gws.sort();
    let mut want_gws: Vec<String> = s
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["gateway"].as_str().unwrap().to_string())
        .collect();
    want_gws.sort();
    assert_eq!(gws, want_gws, "{when}: gateway addresses");
}

/// Kills `control args` with SIGKILL after `delay`; true if it had not finished by then.
fn kill_after(s: &Sandbox, args: &[&str], delay: Duration) -> bool {
    let mut child = s
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning control");
    thread::sleep(delay);
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// After a kill: an interrupted init is finished by init alone (other changes refuse, saying
/// so), and the next changing command repairs anything else, saying so. Returns whether the
/// kill left a journal to repair.
fn repair_after_kill(s: &Sandbox) -> bool {
    let journal = s.state_dir.join("journal").exists();
    let pending = std::fs::read_to_string(s.state_dir.join("journal")).unwrap_or_default();
    if pending.starts_with("init") {
        // Only init can finish an init (it needs its options): other changes refuse,
        // saying so, and running it again finishes it.
        let e = s.fails(&["gc"]);
        assert!(e.contains("interrupted: run it again"), "{e}");
        assert!(
            s.ok(&["status"]).contains("interrupted"),
            "status does not report the interrupted init"
        );
        s.ok(&["init"]);
    }
    // The next changing command repairs first, and says so.
    let o = s.control(&["gc"]);
    assert!(o.status.success(), "gc after a kill: {}", text(&o.stderr));
    if journal && !pending.starts_with("init") {
        assert!(
            text(&o.stderr).contains("interrupted"),
            "repair not reported: {}",
            text(&o.stderr)
        );
    }
    // A journal other than init's was repaired by gc; an init's, by the init above.
    journal
}

#[test]
fn control_killed_mid_command_is_repaired_by_the_next_one() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.92.0.0/24", &[]);
    let keep = s.container("keep", &n, &["--publish", "8080:80"]);
    let _web = net::http_server(&keep, 80, "kept");
    // How long uninterrupted commands take: kills are spread over those windows.
    let timed = |args: &[&str]| {
        let t = Instant::now();
        s.ok(args);
        t.elapsed()
    };
    let create = timed(&["container", "create", &s.name("probe"), "--network", &n]);
    s.ok(&["container", "rm", &s.name("probe")]);
    let init = timed(&["init"]);

    // At least 30 rounds, more (up to 120) until enough kills landed mid-command: on a busy
    // machine commands take longer than the windows timed above, and more kills come late.
    let (rounds, enough) = (30u32, 8);
    let (mut interrupted, mut repaired, mut ran) = (0, 0, 0);
    for i in 0..rounds * 4 {
        if i >= rounds && repaired >= enough {
            break;
        }
        ran += 1;
        let name = s.name(&format!("k{i}"));
        let net_name = s.name(&format!("kn{i}"));
        let subnet = format!("10.92.{}.0/24", 100 + i);
        let frac = |d: Duration| d * (i % rounds / 5) / (rounds / 5) + Duration::from_millis(1);
        // Creates (with a published port), removals, network creates and re-inits in turn.
        let (args, delay): (Vec<&str>, Duration) = match i % 5 {
            0 | 1 => (
                vec![
                    "container",
                    "create",
                    &name,
                    "--network",
                    &n,
                    "--publish",
                    "9000:80",
                ],
                frac(create),
            ),
            2 => {
                s.ok(&["container", "create", &name, "--network", &n]);
                (vec!["container", "rm", &name], frac(create))
            }
            3 => (
                vec!["network", "create", &net_name, "--subnet", &subnet],
                frac(create),
            ),
            _ => (vec!["init"], frac(init)),
        };
        if kill_after(&s, &args, delay) {
            interrupted += 1;
        }
        if repair_after_kill(&s) {
            repaired += 1;
        }
        let when = format!("round {i} ({args:?} killed after {delay:?})");
        assert_consistent(&s, &when);
        // The names are usable again whatever happened.
        let _ = s.control(&["container", "rm", &name]);
        let _ = s.control(&["network", "rm", &net_name]);
        assert_consistent(&s, &format!("{when}, then removed"));
    }
    eprintln!("{ran} kills: {interrupted} mid-command, {repaired} left a journal to repair");
    assert!(
        repaired >= enough,
        "too few kills landed mid-command to test repair ({repaired} of {ran})"
    );

    // The survivor still works, its published port included, and new containers wire up.
    assert_eq!(
        net::curl(&s.ext, "http://198.18.0.1:8080/", 5).as_deref(),
        Some("kept")
    );
    let fresh = s.container("fresh", &n, &["--publish", "9000:80"]);
    let _w = net::http_server(&fresh, 80, "fresh");
    assert_eq!(
        net::curl(&s.ext, "http://198.18.0.1:9000/", 5).as_deref(),
        Some("fresh")
    );
    assert!(net::ping(&fresh, &s.ip_of(&keep), 1));
}

#[test]
fn an_init_killed_while_moving_the_uplink_is_finished_by_init() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.95.0.0/24", &[]);
    let web = s.container("web", &n, &["--publish", "8080:80"]);
    let _w = net::http_server(&web, 80, "web");
    // Another interface of the host to move the uplink to.
    s.host.must(&[
        "ip", "link", "add", "up9", "type", "veth", "peer", "name", "up9p",
    ]);
    s.host
        .must(&["ip", "addr", "add", "198.18.9.1/24", "dev", "up9"]);
    s.host.must(&["ip", "link", "set", "up9", "up"]);
    s.host.must(&["ip", "link", "set", "up9p", "up"]);
    // The move got as far as attaching to up9 and was killed before it saved the state: the
    // state still names up0, the uplink's link pin sits on up9, the journal is left.
    let state = s.state_dir.join("state.json");
    let before = std::fs::read(&state).unwrap();
    s.ok(&["init", "--uplink", "up9"]);
    std::fs::write(&state, &before).unwrap();
    std::fs::write(s.state_dir.join("journal"), "init --uplink up9").unwrap();

    // Only init finishes an init: other changes refuse, and status says why.
    let e = s.fails(&["publish", &web.name, "8081:80"]);
    assert!(e.contains("interrupted: run it again"), "{e}");
    assert!(s.ok(&["status"]).contains("was interrupted"));
    // Running it again (here: for up0, as the state says) finishes it — the stale pin on up9
    // is replaced, not reused, so up0 serves the published port again.
    s.ok(&["init"]);
    assert!(!s.state_dir.join("journal").exists());
    assert_eq!(
        net::curl(&s.ext, &format!("http://{UPLINK_IP}:8080/"), 5).as_deref(),
        Some("web")
    );
    assert!(s.ok(&["status"]).contains("healthy"));
    s.ok(&["publish", &web.name, "8081:80"]);
}
