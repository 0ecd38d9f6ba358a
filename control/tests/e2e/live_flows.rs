//! Established flows on every path (published from the world and from the host, masqueraded,
//! container to container; TCP and UDP; bulk transfers both ways) survive every control
//! command run beside them, re-initialisation included: no reset, no lost round trip.

use std::{
    thread,
    time::{Duration, Instant},
};

use rig::{Bg, EXT_IP, Netns, Sandbox, UPLINK_IP, net, text};

use crate::{CONTROL, expand, session::Session};

/// Commands that build what the changes below work on (`$x` and `$y` are containers of other
/// networks).
const SETUP: &[&str] = &[
    "network create $n2 --subnet 10.59.0.0/24",
    "network create $n3 --subnet 10.61.0.0/24",
    "network connect $n2 $n3",
    "container create $x --network $n2 --publish 8081:80",
    "container create $y --network $n3",
];

/// Other networks, containers, ports and rules come and go; every read-only view is taken;
/// the datapath is re-initialised twice. None of it may touch the flows.
const CHANGES: &[&str] = &[
    "publish $x 8082:80",
    "publish $x 8083:53/udp",
    "publish $y 8084:80 --host-ip $uplink",
    "ports",
    "isolate $x",
    "isolate $x $y",
    "allow $y $x",
    "allow $y $x --port 80/tcp",
    "allow $cli $x",
    "rules import $rules",
    "rules",
    "rules --json",
    "conntrack",
    "conntrack --all --json",
    "conntrack flush --container $x",
    "stats",
    "status",
    "gc",
    "network ls",
    "container ls",
    "monitor --duration 0.5",
    // Re-init: programs replaced under the links.
    "init",
    "disallow $y $x --port 80/tcp",
    "disallow $y $x",
    "disallow $cli $x",
    "unisolate $x $y",
    "unisolate $x",
    "unpublish $x 8081",
    "unpublish $x 8082",
    "unpublish $x 8083/udp",
    "unpublish $y 8084 --host-ip $uplink",
    "network disconnect $n2 $n3",
    "container rm $x",
    "container rm $y",
    "network rm $n2",
    "network rm $n3",
    "init --uplink up0",
    "gc",
    "status",
];

/// The sandbox with `web` serving and `cli` as client, both on one network.
struct Live {
    web: Netns,
    cli: Netns,
    _servers: Vec<Bg>,
    // Last: dropped after what runs in it.
    s: Sandbox,
}

impl Live {
    fn new() -> Self {
        let s = Sandbox::with_weir(CONTROL, &[]);
        let n = s.network("n", "10.58.0.0/24", &[]);
        let web = s.container("web", &n, &[]);
        let cli = s.container("cli", &n, &[]);
        let servers = vec![
            net::iperf_server(&web, 5201),
            net::iperf_server(&s.ext, 5202),
            net::tcp_echo(&web, 9000),
            net::tcp_echo(&s.ext, 9000),
            net::udp_echo(&web, 53),
            net::udp_echo(&s.ext, 7),
        ];
        s.ok(&["publish", &web.name, "5201:5201"]);
        s.ok(&["publish", &web.name, "8080:9000"]);
        s.ok(&["publish", &web.name, "5353:53/udp"]);
        Self {
            s,
            web,
            cli,
            _servers: servers,
        }
    }

    /// Long-lived flows over every path: published (from the world and from the host through
    /// the cgroup hooks), masqueraded, container to container; TCP and UDP.
    fn flows(&self) -> Vec<Session> {
        let (s, cli) = (&self.s, &self.cli);
        let web_ip = s.ip_of(&self.web);
        let open = |r: std::io::Result<Session>, what: &str| {
            r.unwrap_or_else(|e| panic!("opening the {what} flow: {e}"))
        };
        vec![
            open(Session::open(&s.ext, UPLINK_IP, 8080, None), "published"),
            open(Session::open(&s.host, "127.0.0.1", 8080, None), "host"),
            open(Session::open(cli, EXT_IP, 9000, None), "masqueraded"),
            open(Session::open(cli, &web_ip, 9000, None), "c2c"),
            open(Session::udp(cli, EXT_IP, 7), "masqueraded udp"),
            open(Session::udp(&s.ext, UPLINK_IP, 5353), "published udp"),
        ]
    }

    /// TcpEstabResets in every namespace a flow ends in (ext, host, web, cli).
    fn resets(&self, when: &str) -> Vec<u64> {
        let r = [&self.s.ext, &self.s.host, &self.web, &self.cli]
            .iter()
            .map(|ns| net::nstat(ns, "TcpEstabResets"))
            .collect();
        eprintln!("TcpEstabResets {when} (ext, host, web, cli): {r:?}");
        r
    }
}

/// Runs each command of `table`, then checks every flow; returns how many ran.
fn run_checked(s: &Sandbox, table: &[&str], vars: &[(&str, &str)], flows: &mut [Session]) -> usize {
    for line in table {
        let args = expand(line, vars);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.ok(&args);
        for f in flows.iter_mut() {
            f.check_after(&format!("after `control {}`", args.join(" ")));
        }
    }
    table.len()
}

#[test]
fn established_flows_survive_every_control_command() {
    let live = Live::new();
    let s = &live.s;
    // The bulk transfers must outlast every command below (asserted), so the reset counters
    // are read while they still run. Two of the commands re-initialise, which loads and
    // verifies every program (seconds on a busy machine): the length follows a timed re-init.
    let t = Instant::now();
    s.init(&[]);
    let bulk_secs = ((t.elapsed().as_secs() * 2 + 10) * 2).max(25);
    let secs = bulk_secs.to_string();
    let inbound = s
        .ext
        .spawn_piped(&["iperf3", "-J", "-c", UPLINK_IP, "-p", "5201", "-t", &secs]);
    let mut outbound = live
        .cli
        .spawn_piped(&["iperf3", "-J", "-c", EXT_IP, "-p", "5202", "-t", &secs]);
    let mut flows = live.flows();
    let resets_before = live.resets("before");
    thread::sleep(Duration::from_millis(800));

    let (n2, n3, x, y) = (s.name("n2"), s.name("n3"), s.name("x"), s.name("y"));
    let rules_file = std::env::temp_dir().join(format!("weir-rules-{}", s.id));
    std::fs::write(
        &rules_file,
        format!(
            "# imported\nisolate {y}\nallow {x} {y} --port 53/udp\nisolate {x} {web}\n",
            web = live.web.name
        ),
    )
    .unwrap();
    let rules = rules_file.to_str().unwrap();
    let vars = [
        ("n2", n2.as_str()),
        ("n3", n3.as_str()),
        ("x", x.as_str()),
        ("y", y.as_str()),
        ("cli", live.cli.name.as_str()),
        ("uplink", UPLINK_IP),
        ("rules", rules),
    ];
    let started = Instant::now();
    let mut ran = run_checked(s, SETUP, &vars, &mut flows);
    // Flows of x for the flush to cut.
    assert!(
        net::ping(&Netns::borrowed(&x), EXT_IP, 1),
        "x has no egress"
    );
    ran += run_checked(s, CHANGES, &vars, &mut flows);
    let _ = std::fs::remove_file(&rules_file);
    let took = started.elapsed();
    eprintln!("{ran} commands in {took:?} with every flow checked after each");
    // Counted while the bulk transfers still run (iperf3 may end its own streams with a reset).
    assert!(
        outbound.is_running() && took < Duration::from_secs(bulk_secs - 5),
        "the commands took {took:?}, the bulk flows {bulk_secs} s: they must outlive them"
    );
    let resets_after = live.resets("after");
    assert_eq!(
        resets_after, resets_before,
        "TcpEstabResets moved (ext, host, web, cli): a connection was reset"
    );
    for f in flows.iter_mut() {
        f.check_after("at the end");
    }
    assert!(s.problems().is_empty());
    for (name, bg) in [("inbound", inbound), ("outbound", outbound)] {
        let o = bg.finish_within(Duration::from_secs(bulk_secs + 15));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert!(
            o.status.success() && v.get("error").is_none(),
            "{name} iperf3 broke: {}",
            text(&o.stdout)
        );
        assert!(net::iperf_bps(&v) > 1e8, "{name} stalled");
    }
}
