//! The real anchor: Docker's own bridge driver (docker-bridge) against the Weir driver
//! (docker-weir), the same `docker run` workloads on both, interleaved like every other
//! workload. Container start to first byte served through a published port; time of one
//! `docker run -p` with N published containers present; throughput, latency and new
//! connections per second on Docker's containers (the tools run in their network namespaces).

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Family, Outcome, Runner, Topos, latency, throughput};
use crate::{
    cli::{self, Cli},
    results::Workload,
    tools::{self, Servers},
    topo::{
        Topology, UPLINK_IP,
        docker::{DOCKER_SUBNET, Docker},
        port,
    },
};

/// The topology whose ratios the docker tables show.
const PRIMARY: &str = "docker-weir";
/// Host ports of the start-to-first-byte samples (one per sample, removed after it).
const FIRST_BYTE_BASE: u16 = 45_000;
/// What a first-byte container serves.
const SERVE: &str = "echo ok > /www/index.html && exec httpd -f -p 80 -h /www";

/// What the docker workload needs beyond the other workloads' tools.
pub fn preflight(cli: &Cli) -> Result<()> {
    let (_, docker) = cli.split_topologies();
    if !cli.wants("docker") || docker.is_empty() {
        return Ok(());
    }
    for tool in [
        "dockerd",
        "containerd",
        "nsenter",
        "/usr/bin/docker",
        "/bin/busybox",
    ] {
        if !rig::run(&["sh", "-c", &format!("command -v {tool}")])
            .status
            .success()
        {
            bail!("{tool} is missing (the docker workload): run `cargo xtask setup`");
        }
    }
    if docker.iter().any(|t| t == "docker-weir") && !cli.weir_docker.exists() {
        bail!(
            "no weir-docker binary at {} (set WEIR_DOCKER or --weir-docker, or run `cargo xtask bench`)",
            cli.weir_docker.display()
        );
    }
    Ok(())
}

/// Runs the docker workloads on freshly built docker-* topologies, if chosen.
pub fn phase(cli: &Cli, control: &Path, r: &mut Runner, out: &mut Vec<Workload>) -> Result<()> {
    let (_, which) = cli.split_topologies();
    if !cli.wants("docker") || which.is_empty() {
        return Ok(());
    }
    let weir_docker = std::fs::canonicalize(&cli.weir_docker).context("weir-docker path")?;
    let mut topos: Topos = Vec::new();
    for label in &which {
        r.note(&format!("building the {label} topology"));
        let t = Instant::now();
        topos.push(match label.as_str() {
            "docker-bridge" => Box::new(Docker::bridge(control)?),
            "docker-weir" => Box::new(Docker::weir(control, &weir_docker)?),
            other => bail!(
                "unknown docker topology {other} (pick from {:?})",
                cli::DOCKER_TOPOLOGIES
            ),
        });
        r.note(&format!(
            "{label} built in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    let servers: Vec<Servers> = topos
        .iter()
        .map(|t| Servers::start(t.as_ref()))
        .collect::<Result<_>>()?;
    let tp = throughput::run(r, &mut topos, Family::V4)?;
    out.push(docker_view(
        tp,
        "docker-throughput",
        "Docker: TCP throughput",
        PATHS,
    ));
    let lat = latency::run(r, &mut topos, Family::V4)?;
    out.push(docker_view(
        lat,
        "docker-latency",
        "Docker: latency (sockperf ping-pong)",
        PATHS,
    ));
    out.push(first_byte(r, &mut topos)?);
    let (rate, run) = published_containers(r, &mut topos)?;
    out.extend([rate, run]);
    drop(servers);
    Ok(())
}

const PATHS: &str = "The containers are Docker's (busybox, `docker run --network N --ip ...`, \
    the server with -p 5201:5201 -p 11111:11111 -p 11111:11111/udp -p 8080:8080 -p 9000:9000/udp); \
    iperf3, sockperf and nginx run from the host's filesystem inside their network namespaces \
    (`ip netns attach` of the container's pid), which is the same network path. \
    container→container: 10.99.0.2 to 10.99.0.3 on one network; container→ext: to 198.18.0.2 \
    (docker-bridge: Docker's MASQUERADE; docker-weir: Weir's); ext→published port: ext to the \
    host's uplink address (docker-bridge: Docker's DNAT; docker-weir: Weir's published-port map).";

/// A workload measured by the common code, presented as one of the docker workloads.
fn docker_view(mut w: Workload, id: &'static str, title: &'static str, how: &str) -> Workload {
    w.id = id;
    w.title = title;
    w.primary = PRIMARY;
    w.method = format!("{} {how}", w.method);
    w
}

fn first_byte(r: &mut Runner, topos: &mut Topos) -> Result<Workload> {
    let mut w = Workload::new(
        "docker-start",
        "Docker: container start to first byte served",
        "ms",
        false,
        format!(
            "From the start of `docker run -d -p H:80 busybox httpd -f -p 80` to the first HTTP \
             200 ext gets from the host's uplink address on port H (a poller in ext tries a new \
             connection every 2 ms, each with a 50 ms connect timeout, so a dropped SYN costs no \
             retransmission delay); the container is removed after each sample. Includes what \
             `docker run` does before the network (image, containerd, runc) alike on both. \
             Network {DOCKER_SUBNET}."
        ),
    );
    w.primary = PRIMARY;
    r.heading("docker: container start to first byte");
    let mut sample = 0usize;
    let case = "docker run -p to first byte from ext".to_string();
    r.interleave(&mut w, topos, &[case], r.plan.update_samples, |t| {
        sample += 1;
        let d = t.as_docker().context("not a docker topology")?;
        Ok(Outcome::Values(vec![first_byte_once(d, sample)?]))
    })?;
    Ok(w)
}

/// One start-to-first-byte sample, in ms.
fn first_byte_once(d: &Docker, i: usize) -> Result<f64> {
    let host_port = FIRST_BYTE_BASE + i as u16;
    let exe = std::env::current_exe()?;
    let dst = format!("{UPLINK_IP}:{host_port}");
    let poller = d.ext().spawn_piped(&[
        exe.to_str().unwrap_or_default(),
        "__http-first",
        &dst,
        "30000",
    ]);
    // Long enough for `ip netns exec` to start it: the container takes far longer to serve.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = monotonic_ns();
    let (id, _) = d.run_published(host_port, &["sh", "-c", SERVE])?;
    let o = poller.finish_within(Duration::from_secs(35));
    d.remove(&[id])?;
    let out = rig::text(&o.stdout);
    let at: u64 = out.trim().parse().with_context(|| {
        format!(
            "__http-first printed {out:?}: {}",
            rig::text(&o.stderr).trim()
        )
    })?;
    Ok(at.saturating_sub(t0) as f64 / 1e6)
}

/// New connections per second through a published port, and the time of one more `docker
/// run -p`, with N other published containers present.
fn published_containers(r: &mut Runner, topos: &mut Topos) -> Result<(Workload, Workload)> {
    let secs = r.plan.wrk_secs;
    let mut rate = Workload::new(
        "docker-connrate",
        "Docker: new connections from ext through a published port",
        "conn/s",
        true,
        format!(
            "wrk -t1 -c32 -d{secs}s -H 'Connection: close' from ext to nginx (in the server \
             container's network namespace) through the published port 8080, with N other \
             published containers present (each a busybox `sleep` with -p P:80; on \
             docker-bridge each has Docker's DNAT rules and a docker-proxy)."
        ),
    );
    rate.primary = PRIMARY;
    let mut run = Workload::new(
        "docker-run",
        "Docker: time of `docker run -p` with published containers present",
        "ms",
        false,
        "Wall time of `docker run -d --network N -p P:80 busybox sleep` (the client returns \
         once the container runs, its network and port set up), with N other published \
         containers present; removed after each sample.",
    );
    run.primary = PRIMARY;
    r.heading("docker: published containers (wrk, docker run -p)");
    let mut sample = 0usize;
    let mut fill_note = String::new();
    for &n in &r.plan.docker_counts.clone() {
        // A count the machine cannot afford (or a failed start) ends the workload with an
        // error on its cases, keeping what the smaller counts measured.
        if let Err(e) = fill_all(r, topos, n, &mut fill_note) {
            r.note(&format!("filling to {n} failed: {e:#}"));
            for t in topos.iter() {
                let e = format!("filling to {n}: {e:#}");
                rate.case(&format!("{n} other published containers"))
                    .error(t.label(), e.clone());
                run.case(&format!("{n} published containers present"))
                    .error(t.label(), e);
            }
            break;
        }
        let case = format!("{n} other published containers");
        r.interleave(&mut rate, topos, &[case], r.plan.samples, |t| {
            let addr = t.published_addr().to_string();
            Ok(Outcome::Values(vec![tools::wrk(
                t.ext(),
                &addr,
                port::HTTP,
                secs,
            )?]))
        })?;
        let case = format!("{n} published containers present");
        r.interleave(&mut run, topos, &[case], r.plan.update_samples, |t| {
            sample += 1;
            let d = t.time_publish(sample)?.context("no docker run to time")?;
            Ok(Outcome::Values(vec![d.as_secs_f64() * 1e3]))
        })?;
    }
    if !fill_note.is_empty() {
        let _ = write!(
            run.method,
            " Filler containers were started {} at a time:{fill_note}",
            crate::topo::docker::PARALLEL
        );
    }
    Ok((rate, run))
}

/// Makes `n` filler containers exist on every topology, noting what each step cost.
fn fill_all(r: &Runner, topos: &mut Topos, n: usize, note: &mut String) -> Result<()> {
    for t in topos.iter_mut() {
        let label = t.label();
        let d = t.as_docker().context("not a docker topology")?;
        let before = d.filler_count();
        r.note(&format!(
            "{label}: starting {} filler containers",
            n - before
        ));
        let took = d.fill(n)?;
        if n > before {
            let per = took.as_secs_f64() * 1e3 / (n - before) as f64;
            let _ = write!(
                note,
                " {label}: {} more in {:.1} s ({per:.0} ms each).",
                n - before,
                took.as_secs_f64()
            );
            r.note(&format!("{label}: {per:.0} ms per filler container"));
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in ns: one clock for the bench and its helper in ext (no time namespace).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `__http-first ADDR:PORT MILLIS`: tries a new HTTP/1.0 GET every 2 ms until one answers
/// 200, then prints CLOCK_MONOTONIC (ns) of that answer; fails after MILLIS.
pub fn http_first(args: &[String]) -> Result<()> {
    let [dst, ms] = args else {
        bail!("usage: __http-first ADDR:PORT MILLIS");
    };
    let dst: SocketAddr = dst.parse::<SocketAddrV4>().context("ADDR:PORT")?.into();
    let until = Instant::now() + Duration::from_millis(ms.parse().context("MILLIS")?);
    while Instant::now() < until {
        if http_ok(&dst) {
            println!("{}", monotonic_ns());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("no HTTP 200 from {dst} in {ms} ms")
}

fn http_ok(dst: &SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(dst, Duration::from_millis(50)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = &head[..got];
    line.starts_with(b"HTTP/1.") && line.windows(5).any(|w| w == b" 200 ")
}
