//! Docker's containers are Weir's by their Docker names: `control container ls` lists them
//! so, rules, `ports` and `conntrack` take those names, a container on several networks is
//! covered on each, and a rule by name holds across `docker restart` (the restarted
//! container is dark until Docker names it) and goes with `docker rm`.

mod support;

use std::time::{Duration, Instant};

use rig::{Sandbox, UPLINK_IP, docker::Dockerd, net};
use serde_json::Value;
use support::*;

/// The Weir records answering to Docker name `name`, once the driver has learned it.
fn named(s: &Sandbox, name: &str, records: usize) -> Vec<Value> {
    let mut found = Vec::new();
    let ok = rig::wait_for(Duration::from_secs(15), || {
        found = s
            .json(&["container", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["alias"] == name)
            .cloned()
            .collect();
        found.len() == records
    });
    assert!(
        ok,
        "{name}: {} record(s), not {records}: {}",
        found.len(),
        s.json(&["container", "ls"])
    );
    found
}

fn pings(d: &Dockerd, from: &str, ip: &str) -> bool {
    let o = d.docker(&["exec", from, "ping", "-c", "1", "-W", "1", ip]);
    o.status.success()
}

fn ip(c: &Value) -> String {
    c["ip"].as_str().unwrap().to_string()
}

/// The address Docker gave container `ctr` on `network`.
fn docker_ip(d: &Dockerd, ctr: &str, network: &str) -> String {
    d.must(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        ctr,
    ])
}

#[test]
fn rules_ports_and_conntrack_by_docker_name() {
    let (s, d, drv, image) = docker_on_weir(&[]);
    for (net, subnet) in [("front", "10.85.0.0/24"), ("back", "10.86.0.0/24")] {
        let create = format!("network create -d {} --subnet {subnet} {net}", drv.name);
        d.must(&words(&create));
    }
    let run = |name: &str, net: &str, extra: &str| {
        let line = format!("run -d --name {name} --network {net} {extra}");
        d.must(&[&words(&line)[..], &[image], &words(ECHO)[..]].concat());
    };
    run("api", "front", "-p 9100:81");
    run("db", "back", "");
    // peer tries api the moment it starts, before Docker could tell anyone its name.
    let early = format!(
        "for i in 1 2 3; do ping -c 1 -W 1 {} && echo REACHED; done > /early 2>&1; {ECHO}",
        docker_ip(&d, "api", "front")
    );
    let line = "run -d --name peer --network front";
    d.must(&[&words(line)[..], &[image, "sh", "-c", &early]].concat());
    let api = &named(&s, "api", 1)[0];
    assert_eq!(ip(api), docker_ip(&d, "api", "front"));
    let ls = s.control(&["container", "ls"]);
    assert!(rig::text(&ls.stdout).contains("api "), "{ls:?}");

    // `ports` and `conntrack` by Docker name.
    let ports = s.json(&["ports", "api"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    assert!(echo_once(&s.ext, UPLINK_IP, 9100));
    let _session = s
        .ext
        .spawn_piped(&["python3", "-c", SESSION, UPLINK_IP, "9100", "3"]);
    assert!(rig::wait_for(Duration::from_secs(3), || {
        !s.json(&["conntrack", "--container", "api"])
            .as_array()
            .unwrap()
            .is_empty()
    }));
    assert_eq!(
        s.json(&["conntrack", "--container", "db"]),
        serde_json::json!([]),
        "db has no flows"
    );

    several_networks(&s, &d, "api", "db", "peer");
    restart_keeps_the_rule(&s, &d, "api", "peer");

    // `docker rm`: the rules naming it go once Docker says the container is gone.
    d.must(&["rm", "-f", "peer"]);
    let gone = rig::wait_for(Duration::from_secs(10), || {
        !s.json(&["rules"]).to_string().contains("peer")
    });
    assert!(gone, "rules outlived the container: {}", s.json(&["rules"]));
    d.must(&["rm", "-f", "api", "db"]);
    nothing_left(&s, &format!("http://{UPLINK_IP}:9100/"));
    assert_eq!(s.json(&["rules"]), serde_json::json!([]));
    d.must(&["network", "rm", "front", "back"]);
}

/// `docker network connect`: the second interface has the container's name at once, and a
/// rule by that name holds on both networks.
fn several_networks(s: &Sandbox, d: &Dockerd, api: &str, db: &str, peer: &str) {
    let db_ip = docker_ip(d, db, "back");
    let peer_ip = docker_ip(d, peer, "front");
    assert!(!pings(d, api, &db_ip), "api is not on back yet");
    d.must(&["network", "connect", "back", api]);
    let records = named(s, api, 2);
    assert!(pings(d, api, &db_ip), "api on back reaches db");
    s.ok(&["isolate", api, db]);
    s.ok(&["isolate", api, peer]);
    assert!(!pings(d, api, &db_ip), "isolated over back");
    assert!(!pings(d, db, &docker_ip(d, api, "back")), "both ways");
    assert!(!pings(d, api, &peer_ip), "isolated over front");
    s.ok(&["unisolate", api, db]);
    assert!(pings(d, api, &db_ip), "unisolated");
    // A rule naming one record covers that record alone.
    let back = records
        .iter()
        .find(|c| c["ip"] == docker_ip(d, api, "back"))
        .unwrap();
    let record = back["name"].as_str().unwrap();
    s.ok(&["isolate", record, db]);
    assert!(!pings(d, api, &db_ip));
    s.ok(&["unisolate", record, db]);
    d.must(&["network", "disconnect", "back", api]);
    named(s, api, 1);
    assert!(!pings(d, api, &peer_ip), "the rule holds on front");
}

/// `docker restart` of a container a rule names: the new endpoint is dark until Docker names
/// it, so the rule holds from its first packet on.
fn restart_keeps_the_rule(s: &Sandbox, d: &Dockerd, api: &str, peer: &str) {
    // The first run's attempts went through (no rule then): only the restart's count.
    d.must(&["exec", peer, "rm", "/early"]);
    let t = Instant::now();
    d.must(&["restart", "-t", "0", peer]);
    eprintln!("docker restart took {:?}", t.elapsed());
    let peer_ip = docker_ip(d, peer, "front");
    let mut early = String::new();
    let done = rig::wait_for(Duration::from_secs(10), || {
        early = d.must(&["exec", peer, "cat", "/early"]);
        early.matches("packets transmitted").count() == 3
    });
    assert!(done, "{early}");
    assert!(
        !early.contains("REACHED"),
        "through before its name was known: {early}"
    );
    assert!(
        !pings(d, peer, &ip(&named(s, api, 1)[0])),
        "isolated after the restart"
    );
    let rec = &named(s, peer, 1)[0];
    assert_eq!(rec["phase"], "ready", "{rec}");
    assert!(
        !pings(d, api, &peer_ip),
        "isolated after the restart, both ways"
    );
    assert!(pings(d, peer, "10.85.0.1"), "admitted once named");
    let t = Instant::now();
    d.must(&["restart", "-t", "0", api]);
    eprintln!("docker restart took {:?}", t.elapsed());
    assert!(
        !pings(d, api, &peer_ip),
        "isolated after the other's restart"
    );
    assert!(
        net::ping(&s.host, &ip(&named(s, api, 1)[0]), 1),
        "the host reaches it"
    );
}
