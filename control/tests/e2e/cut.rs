//! Cutting established connections: policy is stateful, so a new rule leaves established
//! flows alone unless `--cut` (or `conntrack flush --container`) ends them — exactly the
//! flows the policy now denies, even when the other side keeps talking.

use std::{path::PathBuf, thread, time::Duration};

use rig::{Netns, Sandbox, net, text};

use crate::{CONTROL, policy::reach};

/// A long-running TCP connection: `from` writes a line every 100 ms to a receiver in `to`
/// that appends what arrives to a file. Established once `start` returns.
struct Stream {
    what: String,
    file: PathBuf,
    _rx: rig::Bg,
    _tx: rig::Bg,
}

impl Stream {
    fn start(from: &Netns, to: &Netns, ip: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(rig::unique("weir-stream-"));
        std::fs::create_dir_all(&dir).expect("stream dir");
        let file = dir.join("received");
        let rx = to
            .spawn(&[
                "sh",
                "-c",
                &format!("exec nc -l -p {port} > {}", file.display()),
            ])
            .with_cleanup(dir);
        net::wait_listening(to, port, "tcp");
        let tx = from.spawn(&[
            "sh",
            "-c",
            &format!("while :; do echo tick; sleep 0.1; done | nc {ip} {port}"),
        ]);
        let st = Self {
            what: format!("{} -> {}:{port}", from.name, to.name),
            file,
            _rx: rx,
            _tx: tx,
        };
        assert!(
            rig::wait_for(Duration::from_secs(5), || st.received() > 0),
            "stream {} never started",
            st.what
        );
        st
    }

    fn received(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }

    /// Whether data still arrives: bytes grow over 1.5 s (after 300 ms for what was in flight).
    fn flowing(&self) -> bool {
        thread::sleep(Duration::from_millis(300));
        let before = self.received();
        thread::sleep(Duration::from_millis(1500));
        self.received() > before
    }
}

/// A long-running TCP connection carrying data both ways: `from` and `to` each write a line
/// every 100 ms (socat) and append what they get to their own file.
struct Duplex {
    what: String,
    to_got: PathBuf,
    from_got: PathBuf,
    _rx: rig::Bg,
    _tx: rig::Bg,
}

impl Duplex {
    fn start(from: &Netns, to: &Netns, ip: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(rig::unique("weir-duplex-"));
        std::fs::create_dir_all(&dir).expect("duplex dir");
        let (to_got, from_got) = (dir.join("to"), dir.join("from"));
        let talk = |file: &PathBuf| {
            format!(
                "SYSTEM:(while :; do echo tick; sleep 0.1; done) & exec cat > {}",
                file.display()
            )
        };
        let rx = to
            .spawn(&[
                "socat",
                &format!("TCP4-LISTEN:{port},reuseaddr"),
                &talk(&to_got),
            ])
            .with_cleanup(dir);
        net::wait_listening(to, port, "tcp");
        let tx = from.spawn(&["socat", &format!("TCP4:{ip}:{port}"), &talk(&from_got)]);
        let d = Self {
            what: format!("{} <-> {}:{port}", from.name, to.name),
            to_got,
            from_got,
            _rx: rx,
            _tx: tx,
        };
        assert!(
            rig::wait_for(Duration::from_secs(5), || d.got().0 > 0 && d.got().1 > 0),
            "duplex {} never started",
            d.what
        );
        d
    }

    /// Bytes received so far by (to, from).
    fn got(&self) -> (u64, u64) {
        let len = |f: &PathBuf| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        (len(&self.to_got), len(&self.from_got))
    }

    /// Whether data still arrives in each direction (to, from) over 1.5 s.
    fn flowing(&self) -> (bool, bool) {
        thread::sleep(Duration::from_millis(300));
        let (t, f) = self.got();
        thread::sleep(Duration::from_millis(1500));
        let (t2, f2) = self.got();
        (t2 > t, f2 > f)
    }
}

/// The N of a `cut N <what>` line in `control` output (panics when there is none).
fn cut_count(out: &str, what: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("cut ")
                .and_then(|r| r.strip_suffix(what))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no \"cut N {what}\" in output: {out:?}"))
}

#[test]
fn established_connections_continue_unless_cut() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.65.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let bip = s.ip_of(&b);
    let _srv = net::iperf_server(&b, 5201);
    // A long-lived flow, then isolation without --cut: it keeps flowing.
    let flow = a.spawn_piped(&["iperf3", "-J", "-c", &bip, "-p", "5201", "-t", "3"]);
    thread::sleep(Duration::from_millis(500));
    s.ok(&["isolate", &a.name, &b.name]);
    let o = flow.finish_within(Duration::from_secs(10));
    assert!(
        o.status.success(),
        "established flow was cut without --cut: {}",
        text(&o.stdout)
    );
    s.ok(&["unisolate", &a.name, &b.name]);
    // With --cut the established flow dies.
    let flow = a.spawn_piped(&["iperf3", "-J", "-c", &bip, "-p", "5201", "-t", "4"]);
    thread::sleep(Duration::from_millis(800));
    s.ok(&["isolate", &a.name, &b.name, "--cut"]);
    let o = flow.finish_within(Duration::from_secs(15));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let sent_after = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let intervals = v["intervals"].as_array().map(|a| a.len()).unwrap_or(0);
    let last = v["intervals"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|i| i["sum"]["bytes"].as_u64())
        .unwrap_or(0);
    assert!(
        !o.status.success() || last == 0 || intervals < 4,
        "flow kept going after --cut (sent {sent_after})"
    );
}

/// `isolate A B --cut` ends A↔B's established connection at once; A's connection to C and
/// C's to D, still allowed, keep flowing.
#[test]
fn isolate_cut_ends_only_that_pairs_connections() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.69.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let d = s.container("d", &n, &[]);
    let ab = Stream::start(&a, &b, &s.ip_of(&b), 7001);
    let ac = Stream::start(&a, &c, &s.ip_of(&c), 7002);
    let cd = Stream::start(&c, &d, &s.ip_of(&d), 7003);
    assert!(ab.flowing(), "{} does not flow before the cut", ab.what);
    let out = s.ok(&["isolate", &a.name, &b.name, "--cut"]);
    assert!(
        cut_count(&out, "established flow(s)") >= 1,
        "isolate --cut cut nothing: {out}"
    );
    assert!(
        !ab.flowing(),
        "{} kept flowing after isolate --cut",
        ab.what
    );
    assert!(ac.flowing(), "{} was cut too", ac.what);
    assert!(cd.flowing(), "{} was cut too", cd.what);
}

/// `disallow A B --cut` under `isolate B` ends A→B's established connection, while C→B (still
/// allowed) keeps flowing; `disallow` without --cut leaves C→B running (stateful).
#[test]
fn disallow_cut_ends_only_what_is_now_denied() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.70.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let bip = s.ip_of(&b);
    s.ok(&["isolate", &b.name]);
    s.ok(&["allow", &a.name, &b.name]);
    s.ok(&["allow", &c.name, &b.name]);
    let ab = Stream::start(&a, &b, &bip, 7001);
    let cb = Stream::start(&c, &b, &bip, 7002);
    assert!(ab.flowing(), "{} does not flow before the cut", ab.what);
    let out = s.ok(&["disallow", &a.name, &b.name, "--cut"]);
    assert!(
        cut_count(&out, "established flow(s)") >= 1,
        "disallow --cut cut nothing: {out}"
    );
    assert!(
        !ab.flowing(),
        "{} kept flowing after disallow --cut",
        ab.what
    );
    assert!(cb.flowing(), "{} (still allowed) was cut", cb.what);
    // The cut flow stays cut and new ones are refused.
    assert!(!reach(&a, &bip, 7009));
    // Without --cut, the established connection continues.
    s.ok(&["disallow", &c.name, &b.name]);
    assert!(cb.flowing(), "{} was cut without --cut", cb.what);
}

/// `isolate B --cut` while B itself keeps talking on a connection A opened: the connection
/// must stay cut. B may still open connections to A, and the datapath picks TCP flows up
/// mid-stream (nf_conntrack_tcp_loose style), so B's next segment creates a fresh B -> A
/// entry whose reply entry lets A's segments through again — unless, as the datapath does, a
/// flow picked up mid-stream must be allowed in both directions.
#[test]
fn cut_stays_cut_when_the_other_side_talks() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.73.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let bip = s.ip_of(&b);
    let ab = Duplex::start(&a, &b, &bip, 7001);
    // A connection b opened itself is not denied by `isolate b` and survives.
    let ba = Duplex::start(&b, &c, &s.ip_of(&c), 7002);
    let out = s.ok(&["isolate", &b.name, "--cut"]);
    assert!(cut_count(&out, "established flow(s)") >= 1, "{out}");
    let (b_got, a_got) = ab.flowing();
    let kept = s.ok(&["conntrack"]);
    assert!(
        !b_got && !a_got,
        "{} came back after isolate --cut (b still gets data: {b_got}, a: {a_got}); \
         tracked now:\n{kept}",
        ab.what
    );
    assert_eq!(ba.flowing(), (true, true), "{} was cut", ba.what);
}

/// `conntrack flush --container A` ends A's connections that the policy now denies (kept so
/// far because policy is stateful), leaves another isolated pair's connection alone, and
/// counts every flow it cut once.
#[test]
fn conntrack_flush_container_cuts_only_its_flows() {
    let s = Sandbox::with_weir(CONTROL, &[]);
    let n = s.network("n", "10.71.0.0/24", &[]);
    let a = s.container("a", &n, &[]);
    let b = s.container("b", &n, &[]);
    let c = s.container("c", &n, &[]);
    let d = s.container("d", &n, &[]);
    let bip = s.ip_of(&b);
    let ab = Stream::start(&a, &b, &bip, 7001);
    let cd = Stream::start(&c, &d, &s.ip_of(&d), 7002);
    // Eight more (idle) connections of a's, so the count below means something.
    let _idle_srv = b.spawn(&["socat", "TCP4-LISTEN:7010,fork,reuseaddr", "SYSTEM:cat"]);
    net::wait_listening(&b, 7010, "tcp");
    let _idle = a.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,time\n\
             s=[socket.create_connection(('{bip}',7010),timeout=5) for _ in range(8)]\n\
             print('up',flush=True)\ntime.sleep(600)"
        ),
    ]);
    let a_flows = || {
        s.json(&["conntrack"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["original"]
                    .as_str()
                    .is_some_and(|o| o.contains(&format!("{bip}:7010")))
            })
            .count()
    };
    assert!(
        rig::wait_for(Duration::from_secs(5), || a_flows() >= 8),
        "the idle connections did not open: {}",
        s.ok(&["conntrack"])
    );
    s.ok(&["isolate", &a.name, &b.name]);
    s.ok(&["isolate", &c.name, &d.name]);
    assert!(ab.flowing(), "{} cut without --cut", ab.what);
    assert!(cd.flowing(), "{} cut without --cut", cd.what);
    let out = s.ok(&["conntrack", "flush", "--container", &a.name]);
    assert!(!ab.flowing(), "{} kept flowing after flush", ab.what);
    assert!(cd.flowing(), "{} was flushed too", cd.what);
    assert_eq!(a_flows(), 0, "flush left a's idle flows");
    // a had nine flows (the stream and eight idle ones): each is one cut flow, whichever of
    // its two entries the map walk meets first.
    let n = cut_count(&out, "flow(s)");
    assert!(
        n >= 9,
        "conntrack flush --container cut a's 9 flows but reported {n}: {out}"
    );
}
