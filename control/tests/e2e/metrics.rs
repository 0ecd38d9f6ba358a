//! `control metrics`: the Prometheus text format, checked by Debian's `promtool`, with the
//! counters that matter moving with real traffic — per path, per drop reason, conntrack and
//! SNAT occupancy, and per container (the noisy one is the one whose drops grow) — printed
//! once or served live at /metrics.

use std::{io::Write, process::Stdio, time::Duration};

use rig::{Bg, EXT_IP, Netns, Sandbox, net, wait_for};

use crate::CONTROL;

/// The value of the one sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must_sample(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut c = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus: run `cargo xtask setup`)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said = format!("{}{}", rig::text(&o.stdout), rig::text(&o.stderr));
    (o.status.success(), said)
}

fn container_series(name: &str, c: &str, n: &str) -> String {
    format!("{name}{{container=\"{c}\",network=\"{n}\"}}")
}

#[test]
fn metrics_pass_promtool_and_follow_the_traffic() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.76.0.0/24", &[]);
    let noisy = s.container("noisy", &n, &[]);
    let quiet = s.container("quiet", &n, &[]);
    let web = s.container("web", &n, &[]);
    let _srv = net::http_server(&web, 80, "web");
    let _ext = net::http_server(&s.ext, 8080, "ext");
    s.ok(&["isolate", &noisy.name, &web.name]);

    let before = s.ok(&["metrics"]);
    let (ok, said) = promtool(&before);
    assert!(ok, "promtool check metrics: {said}\n{before}");

    // Denied connections from one container, allowed ones from another, one masqueraded.
    let web_url = format!("http://{}/", s.ip_of(&web));
    for _ in 0..3 {
        assert!(net::curl(&noisy, &web_url, 1).is_none());
    }
    assert_eq!(net::curl(&quiet, &web_url, 5).as_deref(), Some("web"));
    let ext_url = format!("http://{EXT_IP}:8080/");
    assert_eq!(net::curl(&quiet, &ext_url, 5).as_deref(), Some("ext"));

    let after = s.ok(&["metrics"]);
    let (ok, said) = promtool(&after);
    assert!(ok, "promtool check metrics: {said}\n{after}");
    let drops = |t: &str, c: &Netns| {
        sample(
            t,
            &container_series("weir_container_dropped_packets_total", &c.name, &n),
        )
        .unwrap_or(0.0)
    };
    assert!(drops(&after, &noisy) > drops(&before, &noisy), "{after}");
    assert_eq!(drops(&after, &quiet), 0.0, "{after}");
    let denied = "weir_drops_total{hook=\"from-container\",reason=\"policy-denied\"}";
    assert!(must_sample(&after, denied) >= 1.0, "{after}");
    let c2c = "weir_path_packets_total{path=\"container-to-container\"}";
    assert!(must_sample(&after, c2c) > must_sample(&before, c2c));
    let got = |c: &Netns| {
        must_sample(
            &after,
            &container_series("weir_container_received_packets_total", &c.name, &n),
        )
    };
    assert!(got(&quiet) > 0.0 && got(&web) > 0.0, "{after}");
    let sent = container_series("weir_container_sent_bytes_total", &quiet.name, &n);
    assert!(must_sample(&after, &sent) > 0.0);

    // The masqueraded flow holds one SNAT port towards ext:8080 until its entry expires.
    let snat = format!("weir_snat_ports_in_use{{destination=\"{EXT_IP}:8080\",proto=\"tcp\"}}");
    assert_eq!(must_sample(&after, &snat), 1.0, "{after}");
    assert!(must_sample(&after, "weir_conntrack_entries") >= 4.0);
    assert!(must_sample(&after, "weir_conntrack_capacity") >= 1024.0);
    assert!(must_sample(&after, "weir_snat_ports_capacity") >= 1024.0);
}

/// `control metrics --listen` in the host namespace, stopped by its pid when the test ends.
struct Server {
    url: String,
    _proc: Bg,
}

impl Server {
    fn start(s: &Sandbox) -> Self {
        // A port of its own per test run (parallel tests, several sandboxes).
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        let addr = format!("127.0.0.1:{port}");
        let child = s
            .command(&["metrics", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning control metrics --listen");
        let me = Self {
            url: format!("http://{addr}/metrics"),
            _proc: Bg::from_child(child),
        };
        let up = wait_for(Duration::from_secs(5), || me.scrape(&s.host).is_some());
        assert!(up, "control metrics --listen never served {}", me.url);
        me
    }

    fn scrape(&self, host: &Netns) -> Option<String> {
        let o = host.run(&["curl", "-sf", "--max-time", "3", &self.url]);
        o.status.success().then(|| rig::text(&o.stdout))
    }
}

#[test]
fn metrics_listen_serves_live_counters_while_traffic_flows() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.77.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let _srv = net::iperf_server(&b, 5201);
    let srv = Server::start(&s);
    let first = srv.scrape(&s.host).expect("first scrape");
    let bytes = container_series("weir_container_received_bytes_total", &b.name, &n);
    let start = must_sample(&first, &bytes);

    // Scraped again while a transfer runs: the counter moves between scrapes.
    let ip = s.ip_of(&b);
    let flow = std::thread::scope(|t| {
        let h = t.spawn(|| net::iperf(&a, &ip, 5201, &["-t", "3"]));
        std::thread::sleep(Duration::from_millis(1500));
        let during = srv.scrape(&s.host).expect("scrape during the transfer");
        let (ok, said) = promtool(&during);
        assert!(ok, "promtool check metrics: {said}");
        assert!(must_sample(&during, &bytes) > start + 1e6, "{during}");
        h.join().unwrap()
    });
    assert!(net::iperf_bps(&flow) > 0.0);
    let last = srv.scrape(&s.host).expect("last scrape");
    assert!(must_sample(&last, &bytes) > start + 1e7, "{last}");
}

#[test]
fn metrics_listen_refuses_a_taken_address_in_one_line() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let _taken = net::tcp_listener(&s.host, port);
    let err = s.fails(&["metrics", "--listen", &format!("127.0.0.1:{port}")]);
    assert!(
        err.contains("cannot listen on") && err.contains("another"),
        "{err}"
    );
    let err = s.fails(&["metrics", "--listen", "localhost"]);
    assert!(err.contains("--listen"), "{err}");
}
