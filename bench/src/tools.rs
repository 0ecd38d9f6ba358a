//! The measuring tools, run inside the sandbox namespaces: iperf3 (throughput), sockperf
//! (latency), wrk against nginx (new-connection rate), and the bench's own UDP flood. Each
//! client call has a hard timeout so a wedged path fails a sample instead of the run.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rig::{Bg, Netns};

use crate::topo::{Scratch, Topology, port};

/// Servers of one topology: in the server container (all ports) and in ext (for the
/// container → ext paths). Killed when dropped.
pub struct Servers {
    _bg: Vec<Bg>,
    _www: Scratch,
}

impl Servers {
    pub fn start(t: &dyn Topology) -> Result<Self> {
        let (srv, ext) = (t.server(), t.ext());
        let mut bg = Vec::new();
        for ns in [srv, ext] {
            bg.push(ns.spawn(&["iperf3", "-s", "-p", &port::IPERF.to_string()]));
            let p = port::SOCKPERF.to_string();
            let pin = [
                "taskset",
                "-c",
                LATENCY_CPU,
                "sockperf",
                "sr",
                "-i",
                "0.0.0.0",
                "-p",
            ];
            bg.push(ns.spawn(&[&pin[..], &[p.as_str(), "--tcp"]].concat()));
            bg.push(ns.spawn(&[&pin[..], &[p.as_str()]].concat()));
        }
        let www = Scratch::dir(&format!("{}-nginx", srv.name))?;
        let conf = www.path.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&www.path.to_string_lossy()))?;
        bg.push(srv.spawn(&["nginx", "-c", conf.to_str().unwrap()]));
        let exe = std::env::current_exe()?;
        bg.push(srv.spawn(&[exe.to_str().unwrap(), "__udp-sink", &port::SINK.to_string()]));
        for ns in [srv, ext] {
            wait_listening(ns, port::IPERF, "tcp")?;
            wait_listening(ns, port::SOCKPERF, "tcp")?;
            wait_listening(ns, port::SOCKPERF, "udp")?;
        }
        // After sockperf is up, so its wait cannot mistake this server's port for its own.
        if t.ipv6() {
            let (exe, p) = (std::env::current_exe()?, port::SOCKPERF.to_string());
            let e = exe.to_string_lossy();
            for ns in [srv, ext] {
                let pp = ["taskset", "-c", LATENCY_CPU, &e, "__pingpong-server", &p];
                bg.push(ns.spawn(&pp));
                wait_listening6(ns, port::SOCKPERF)?;
            }
        }
        wait_listening(srv, port::HTTP, "tcp")?;
        wait_listening(srv, port::SINK, "udp")?;
        Ok(Self { _bg: bg, _www: www })
    }
}

/// Waits for the IPv6 ping-pong server (TCP and UDP on `[::]`) in `ns`.
fn wait_listening6(ns: &Netns, port: u16) -> Result<()> {
    let ok = rig::wait_for(Duration::from_secs(10), || {
        ["-tln", "-uln"].iter().all(|flag| {
            let o = ns.run(&["ss", "-H", "-6", flag, "sport", &format!("= :{port}")]);
            !rig::text(&o.stdout).trim().is_empty()
        })
    });
    if !ok {
        bail!(
            "the IPv6 ping-pong server does not listen on {port} in {}",
            ns.name
        );
    }
    Ok(())
}

/// One worker (2 cores: the other is left to wrk and softirq work), no logging, a tiny reply.
fn nginx_conf(dir: &str) -> String {
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log error;\nevents {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         \x20 fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         \x20 server {{\n    listen {p} backlog=8192;\n    listen [::]:{p} backlog=8192;\n\
         \x20   location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        p = port::HTTP
    )
}

/// Waits until something listens on `port`/`proto` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16, proto: &str) -> Result<()> {
    let flag = if proto == "udp" { "-uln" } else { "-tln" };
    let ok = rig::wait_for(Duration::from_secs(10), || {
        let o = ns.run(&["ss", "-H", flag, "sport", &format!("= :{port}")]);
        !rig::text(&o.stdout).trim().is_empty()
    });
    if !ok {
        bail!("nothing listens on {port}/{proto} in {}", ns.name);
    }
    Ok(())
}

/// Runs `args` in `ns` under `timeout`, returning stdout; fails with stderr.
fn run_bounded(ns: &Netns, secs: u32, args: &[&str]) -> Result<String> {
    let t = secs.to_string();
    let mut a = vec!["timeout", "-k", "2", t.as_str()];
    a.extend_from_slice(args);
    let o = ns.run(&a);
    if !o.status.success() {
        bail!(
            "{} in {} failed ({}): {}{}",
            args[0],
            ns.name,
            o.status,
            rig::text(&o.stderr).trim(),
            rig::text(&o.stdout)
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(rig::text(&o.stdout))
}

/// TCP throughput from `ns` to `addr` in Gbit/s (received), over `streams` parallel streams.
pub fn iperf(ns: &Netns, addr: &str, secs: u32, streams: u32) -> Result<f64> {
    let (t, p, n) = (
        secs.to_string(),
        port::IPERF.to_string(),
        streams.to_string(),
    );
    let out = run_bounded(
        ns,
        secs + 15,
        &["iperf3", "-J", "-c", addr, "-p", &p, "-t", &t, "-P", &n],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 JSON")?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON has no end.sum_received")?;
    Ok(bps / 1e9)
}

/// CPU the latency client and server share: on a VM, a wake-up across CPUs costs ~30 µs
/// (an IPI through the hypervisor) and would drown the datapath's few µs, bimodally.
pub const LATENCY_CPU: &str = "0";

fn sockperf_args(addr: &str, secs: u32, tcp: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "timeout",
        "-k",
        "2",
        &(secs + 10).to_string(),
        "taskset",
        "-c",
        LATENCY_CPU,
    ]
    .map(String::from)
    .to_vec();
    a.extend(
        [
            "sockperf",
            "pp",
            "-i",
            addr,
            "-p",
            &port::SOCKPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-m",
            "64",
        ]
        .map(String::from),
    );
    if tcp {
        a.push("--tcp".into());
    }
    a
}

/// The bench's own ping-pong client (`__pingpong`), pinned like sockperf: for IPv6 addresses.
fn pingpong_args(addr: &str, secs: u32, tcp: bool) -> Vec<String> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "bench".into());
    let t = (secs + 10).to_string();
    let proto = if tcp { "tcp" } else { "udp" };
    let p = port::SOCKPERF.to_string();
    let e = exe.to_string_lossy();
    [
        "timeout",
        "-k",
        "2",
        &t,
        "taskset",
        "-c",
        LATENCY_CPU,
        &e,
        "__pingpong",
        addr,
        &p,
        proto,
        &secs.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The latency client for `addr`: sockperf for IPv4, `__pingpong` for IPv6.
fn latency_args(addr: &str, secs: u32, tcp: bool) -> Vec<String> {
    if addr.contains(':') {
        pingpong_args(addr, secs, tcp)
    } else {
        sockperf_args(addr, secs, tcp)
    }
}

/// Ping-pong latency (half the round trip, as sockperf reports it) in µs: (p50, p99).
pub fn sockperf(ns: &Netns, addr: &str, secs: u32, tcp: bool) -> Result<(f64, f64)> {
    let a = latency_args(addr, secs, tcp);
    let o = ns.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    sockperf_result(&o)
}

/// Starts a latency client in the background (the quick run measures topologies at once:
/// sockperf spends a fixed 2 s warming up each run).
pub fn sockperf_spawn(ns: &Netns, addr: &str, secs: u32, tcp: bool) -> Bg {
    let a = latency_args(addr, secs, tcp);
    ns.spawn_piped(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Reads sockperf's percentiles, or `__pingpong`'s one line "P50 P99".
pub fn sockperf_result(o: &std::process::Output) -> Result<(f64, f64)> {
    if o.status.success()
        && let [p50, p99] = rig::text(&o.stdout).split_whitespace().collect::<Vec<_>>()[..]
        && let (Ok(p50), Ok(p99)) = (p50.parse(), p99.parse())
    {
        return Ok((p50, p99));
    }
    let out = rig::text(&o.stdout) + &rig::text(&o.stderr);
    if !o.status.success() {
        bail!("sockperf failed ({}): {}", o.status, out.trim());
    }
    let pct = |want: &str| -> Result<f64> {
        out.lines()
            .find(|l| l.contains(&format!("percentile {want} =")))
            .and_then(|l| l.rsplit('=').next()?.trim().parse().ok())
            .with_context(|| format!("sockperf printed no {want} percentile: {out}"))
    };
    Ok((pct("50.000")?, pct("99.000")?))
}

/// New HTTP connections per second (wrk, `Connection: close`) from `ns` to `addr:port`.
pub fn wrk(ns: &Netns, addr: &str, port: u16, secs: u32) -> Result<f64> {
    let url = if addr.contains(':') {
        format!("http://[{addr}]:{port}/")
    } else {
        format!("http://{addr}:{port}/")
    };
    let d = format!("{secs}s");
    let out = run_bounded(
        ns,
        secs + 15,
        &[
            "wrk",
            "-t",
            "1",
            "-c",
            "32",
            "-d",
            &d,
            "-H",
            "Connection: close",
            &url,
        ],
    )?;
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .with_context(|| format!("wrk printed no Requests/sec: {out}"))?;
    if rps <= 0.0 || out.contains("Non-2xx") {
        bail!("wrk got no good responses: {out}");
    }
    Ok(rps)
}

/// Floods `addr:port` with 18-byte UDP payloads (64-byte Ethernet frames with FCS) from `ns`
/// on two threads; returns the packets sent.
pub fn udp_flood(ns: &Netns, addr: &str, port: u16, length: Duration) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let (dst, ms) = (format!("{addr}:{port}"), length.as_millis().to_string());
    let secs = (length.as_secs() + 10) as u32;
    let out = run_bounded(
        ns,
        secs,
        &[exe.to_str().unwrap(), "__udp-flood", &dst, &ms, "2"],
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("__udp-flood printed {out:?}"))
}

/// Packets received on `ifname` in `ns` (/proc/net/dev).
pub fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = crate::topo::must(ns, &["cat", "/proc/net/dev"])?;
    out.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == ifname).then(|| rest.split_whitespace().nth(1)?.parse().ok())?
        })
        .with_context(|| format!("no {ifname} in /proc/net/dev of {}", ns.name))
}
