//! Upgrades: `control init` re-run on a live host swaps every program without resetting a
//! connection or losing a rule or port, and refuses pins an incompatible build left (another
//! layout, kind or schema) before it changes anything.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use control::datapath::maps;
use rig::{EXT_IP, Sandbox, UPLINK_IP, net, text};
use serde_json::Value;
use weir_common::maps::{self as names, SockRevKey, SockRevValue};

use crate::{
    CONTROL,
    inspect::{instance, program_ids},
    session::{Session, connect_from},
};

#[test]
fn reinit_on_a_live_host_keeps_every_connection_rule_and_port() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.93.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let web = s.container("web", &n, &["--publish", "8080:9000"]);
    let db = s.container("db", &n, &[]);
    let web_ip = s.ip_of(&web);
    let db_ip = s.ip_of(&db);
    s.ok(&["isolate", &db.name]);
    s.ok(&["allow", &a.name, &db.name, "--port", "9000/tcp"]);
    let _e1 = net::tcp_echo(&s.ext, 9000);
    let _e2 = net::tcp_echo(&web, 9000);
    let _e3 = net::tcp_echo(&db, 9000);
    let _ip = net::iperf_server(&s.ext, 5201);

    // Four long-lived sessions over every kind of path, plus a bulk transfer.
    let mut sessions = [
        Session::open(&a, EXT_IP, 9000, None).expect("masquerade"),
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published"),
        Session::open(&a, &web_ip, 9000, None).expect("container to container"),
        Session::open(&a, &db_ip, 9000, None).expect("allowed by rule"),
        Session::open(&s.host, "127.0.0.1", 8080, None).expect("host to published"),
    ];
    // The bulk transfer must outlast every re-init below; each loads and verifies every
    // program, which takes seconds on a busy machine: its length follows a timed re-init.
    let reinits = 4;
    let t = Instant::now();
    s.init(&[]);
    let per = t.elapsed() + Duration::from_millis(1500);
    let bulk_secs = ((per.as_secs_f64() * reinits as f64 * 2.0).ceil() as u64).max(15);
    let secs = bulk_secs.to_string();
    let iperf = a.spawn_piped(&["iperf3", "-J", "-c", EXT_IP, "-p", "5201", "-t", &secs]);
    let talker = Talker::start(Session::open(&a, EXT_IP, 9000, None).expect("busy session"));
    let ports_before = s.json(&["ports"]);
    let rules_before = s.json(&["rules"]);
    thread::sleep(Duration::from_secs(1));
    reinit_times(&s, reinits, &mut sessions);
    // Counted while the bulk transfer still runs (iperf3 may end its own streams with a reset).
    let resets: Vec<(String, u64)> = [&a, &web, &db, &s.ext, &s.host]
        .iter()
        .map(|ns| (ns.name.clone(), net::nstat(ns, "TcpEstabResets")))
        .collect();
    let mut iperf = iperf;
    assert!(
        iperf.is_running(),
        "iperf3 ({bulk_secs} s) ended before the last re-init"
    );
    let rounds = talker.stop();
    assert!(rounds > 100);
    let report = iperf.finish_within(Duration::from_secs(bulk_secs + 30));
    let v: Value = serde_json::from_slice(&report.stdout).unwrap_or_default();
    assert!(
        report.status.success() && v.get("error").is_none(),
        "iperf3 across re-init failed: {}",
        text(&report.stdout)
    );
    assert!(net::iperf_bps(&v) > 0.0);
    for x in sessions.iter_mut() {
        x.check();
    }
    for (ns, n) in resets {
        assert_eq!(n, 0, "a connection in {ns} was reset during the re-inits");
    }
    eprintln!(
        "{reinits} re-inits: {} sessions + iperf3 ({:.1} Gbit/s) kept, {rounds} busy round trips",
        sessions.len() + 1,
        net::iperf_bps(&v) / 1e9,
    );
    // Ports and rules as before, and still in force for new connections.
    assert_still_in_force(&s, &web, &a, &db_ip, (ports_before, rules_before));
}

fn assert_still_in_force(
    s: &Sandbox,
    web: &rig::Netns,
    a: &rig::Netns,
    db_ip: &str,
    (ports_before, rules_before): (Value, Value),
) {
    assert_eq!(s.json(&["ports"]), ports_before);
    assert_eq!(s.json(&["rules"]), rules_before);
    Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published port after re-init");
    Session::open(a, db_ip, 9000, None).expect("allowed after re-init");
    assert!(
        connect_from(&web.name, db_ip, 9000, None, Duration::from_secs(1)).is_err(),
        "isolation lost in re-init"
    );
    assert!(s.problems().is_empty());
}

/// A session that round-trips without pause on its own thread, through every re-init.
struct Talker {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl Talker {
    fn start(mut busy: Session) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (stop2, rounds2) = (stop.clone(), rounds.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                busy.roundtrip()?;
                rounds2.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        Talker {
            stop,
            rounds,
            thread,
        }
    }

    /// Stops it; panics if the session broke. Returns the round trips it made.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("the busy session broke during re-init: {e}"));
        self.rounds.load(Ordering::Relaxed)
    }
}

/// Re-runs `control init` `times` times: each replaces every program, and every session
/// keeps working after each.
fn reinit_times(s: &Sandbox, times: usize, sessions: &mut [Session]) {
    let mut ids = program_ids(s);
    for r in 0..times {
        let out = s.init(&[]);
        assert!(out.contains("re-initialised"), "{out}");
        let now = program_ids(s);
        assert_eq!(now.len(), ids.len());
        for ((what, old), (what2, new)) in ids.iter().zip(&now) {
            assert_eq!(what, what2);
            assert_ne!(old, new, "re-init {r}: program on {what} not replaced");
        }
        ids = now;
        for x in sessions.iter_mut() {
            x.check();
        }
        thread::sleep(Duration::from_millis(1500));
    }
}

/// A map another build could have pinned in place of ours, and what refusing it must say.
struct Foreign<'a> {
    map: &'a str,
    kind: &'a str,
    key: usize,
    value: usize,
    /// `bpftool map update` arguments writing its content, if any.
    fill: Vec<String>,
    says: Vec<String>,
}

/// Puts `f` in place of this instance's pin of `f.map` (the real map, which the attached
/// programs keep using, is moved aside). Returns the pin and where the real one went.
fn fake_pin(s: &Sandbox, f: &Foreign) -> (PathBuf, PathBuf) {
    let pin = s.map_pin(f.map);
    // bpffs refuses names containing a dot.
    let aside = pin.with_file_name(format!("{}_real", f.map));
    std::fs::rename(&pin, &aside).expect("moving the real pin aside");
    let (k, v) = (f.key.to_string(), f.value.to_string());
    rig::maps::bpftool(&[
        "map",
        "create",
        pin.to_str().unwrap(),
        "type",
        f.kind,
        "key",
        &k,
        "value",
        &v,
        "entries",
        "16",
        "name",
        "weir_other",
    ]);
    if !f.fill.is_empty() {
        let mut a = vec!["map", "update", "pinned", pin.to_str().unwrap()];
        a.extend(f.fill.iter().map(String::as_str));
        rig::maps::bpftool(&a);
    }
    (pin, aside)
}

/// What older or newer builds could have left pinned: a value layout, a map kind and size,
/// a config schema other than ours (`cfg` with another schema number).
fn foreign_pins(cfg: weir_common::config::Config) -> Vec<Foreign<'static>> {
    let value_size = size_of::<SockRevValue>();
    let older = weir_common::SCHEMA_VERSION - 1;
    let old_cfg = weir_common::config::Config {
        schema: older,
        ..cfg
    };
    let old_bytes: Vec<String> = bytemuck::bytes_of(&old_cfg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut fill: Vec<String> = ["key", "hex", "00", "00", "00", "00", "value", "hex"]
        .map(String::from)
        .into();
    fill.extend(old_bytes);
    vec![
        Foreign {
            map: names::SOCK_REVNAT,
            kind: "hash",
            key: size_of::<SockRevKey>(),
            value: value_size / 2,
            fill: Vec::new(),
            says: vec![
                format!("{}/{}", size_of::<SockRevKey>(), value_size / 2),
                format!("expects {}/{value_size}", size_of::<SockRevKey>()),
            ],
        },
        // Right key and value sizes, wrong kind and size: an LRU of 16 entries would silently
        // evict established flows.
        Foreign {
            map: names::CONNTRACK,
            kind: "lru_hash",
            key: size_of::<weir_common::conntrack::FlowKey>(),
            value: size_of::<weir_common::conntrack::CtEntry>(),
            fill: Vec::new(),
            says: vec![
                "type 9 with 16 entries".to_string(),
                format!("expects type 1 with {}", names::CONNTRACK_MAX),
            ],
        },
        Foreign {
            map: names::CONFIG,
            kind: "array",
            key: 4,
            value: size_of::<weir_common::config::Config>(),
            fill,
            says: vec![
                format!("schema {older}"),
                format!("uses {}", weir_common::SCHEMA_VERSION),
            ],
        },
    ]
}

fn restore_pin((pin, aside): (PathBuf, PathBuf)) {
    std::fs::remove_file(&pin).expect("removing the foreign pin");
    std::fs::rename(&aside, &pin).expect("restoring the real pin");
}

/// Pins left by an older or newer build (a map with another value layout, a config map written
/// by another datapath schema) make `control init` fail before it changes anything: one error
/// line, non-zero exit, the same programs attached, the state file untouched, the foreign pin
/// left as it was, and every flow still forwarded.
#[test]
fn reinit_refuses_incompatible_pins_and_changes_nothing() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.96.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let web = s.container("web", &n, &["--publish", "8080:9000"]);
    let web_ip = s.ip_of(&web);
    let _e1 = net::tcp_echo(&s.ext, 9000);
    let _e2 = net::tcp_echo(&web, 9000);
    let mut sessions = [
        Session::open(&a, EXT_IP, 9000, None).expect("masquerade"),
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("published"),
        Session::open(&a, &web_ip, 9000, None).expect("container to container"),
        Session::open(&s.host, "127.0.0.1", 8080, None).expect("host to published"),
    ];
    let ids = program_ids(&s);
    let state_file = s.state_dir.join("state.json");
    let state = std::fs::read(&state_file).expect("state.json");
    let ports = s.json(&["ports"]);
    let cfg = maps::read_config(&instance(&s))
        .expect("config")
        .expect("config");

    let cases = foreign_pins(cfg);
    for f in &cases {
        let (map, k, v) = (f.map, f.key, f.value);
        let pins = fake_pin(&s, f);
        let e = s.fails(&["init"]);
        eprintln!("init with a foreign {map} pin: {e}");
        for want in f.says.iter().map(String::as_str).chain(["control down"]) {
            assert!(e.contains(want), "{map}: error should say {want:?}: {e}");
        }
        assert!(e.starts_with("error: "), "{e}");
        // Nothing was applied: same programs, same state, no journal, the foreign pin as it was.
        assert_eq!(program_ids(&s), ids, "{map}: programs replaced");
        assert_eq!(
            std::fs::read(&state_file).unwrap(),
            state,
            "{map}: state.json rewritten"
        );
        assert!(!s.state_dir.join("journal").exists(), "{map}: journal left");
        assert_eq!(
            rig::maps::info(&pins.0),
            ("weir_other".to_string(), k as u64, v as u64),
            "{map}: the foreign pin was replaced"
        );
        // Still forwarding: established flows and new ones, on every path.
        for x in sessions.iter_mut() {
            x.check();
        }
        Session::open(&s.ext, UPLINK_IP, 8080, None).expect("new published flow");
        Session::open(&a, EXT_IP, 9000, None).expect("new masqueraded flow");
        Session::open(&s.host, UPLINK_IP, 8080, None).expect("new host flow");
        restore_pin(pins);
    }
    assert_eq!(s.json(&["ports"]), ports);

    // With the real pins back, init works again and swaps the programs as usual.
    let out = s.init(&[]);
    assert!(out.contains("re-initialised"), "{out}");
    for ((what, old), (_, new)) in ids.iter().zip(&program_ids(&s)) {
        assert_ne!(old, new, "program on {what} not replaced");
    }
    for x in sessions.iter_mut() {
        x.check();
    }
    for ns in [&a, &web, &s.ext, &s.host] {
        assert_eq!(
            net::nstat(ns, "TcpEstabResets"),
            0,
            "a connection in {} was reset",
            ns.name
        );
    }
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}
