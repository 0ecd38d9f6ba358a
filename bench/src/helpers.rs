//! Small programs the bench runs inside sandbox namespaces (as `bench __NAME ...`): a UDP
//! flood, a UDP sink, a timer for commands, and an IPv6 ping-pong (client and server).

use std::{
    io::{Read, Write},
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Payload of a 64-byte Ethernet frame: 64 - 4 (FCS) - 14 (Ethernet) - 20 (IPv4) - 8 (UDP).
const PAYLOAD: usize = 18;
const BATCH: usize = 64;

/// `__udp-flood ADDR:PORT MILLIS THREADS`: sends as fast as `sendmmsg` goes; prints the count.
pub fn udp_flood(args: &[String]) -> Result<()> {
    let [dst, ms, threads] = args else {
        bail!("usage: __udp-flood ADDR:PORT MILLIS THREADS");
    };
    let dst: SocketAddrV4 = dst.parse().context("ADDR:PORT")?;
    let until = Instant::now() + Duration::from_millis(ms.parse().context("MILLIS")?);
    let threads: usize = threads.parse().context("THREADS")?;
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || flood_one(dst, until)))
        .collect();
    let mut total = 0u64;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    }
    println!("{total}");
    Ok(())
}

fn flood_one(dst: SocketAddrV4, until: Instant) -> Result<u64> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(dst)?;
    let mut payload = [0x5au8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: PAYLOAD,
    };
    // SAFETY: all-zero mmsghdr is valid; each points at the one iovec above, which outlives
    // every sendmmsg call below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0u64;
    while Instant::now() < until {
        // SAFETY: `msgs` holds BATCH initialised headers.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        // Errors (an ICMP error reported on the connected socket, a full queue) are part of
        // flooding: count what went out and keep going.
        if n > 0 {
            sent += n as u64;
        }
    }
    Ok(sent)
}

/// `__udp-sink PORT`: holds the port with a tiny receive buffer and never reads, so flood
/// packets are delivered and discarded at the socket without an ICMP error per packet.
pub fn udp_sink(args: &[String]) -> Result<()> {
    let [port] = args else {
        bail!("usage: __udp-sink PORT");
    };
    let sock = UdpSocket::bind(("0.0.0.0", port.parse::<u16>().context("PORT")?))?;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt with a c_int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `__timed 'CMD ARGS' ...`: runs each command (split on whitespace) in turn, fails if one
/// fails, prints the total wall time in seconds.
pub fn timed(args: &[String]) -> Result<()> {
    let start = Instant::now();
    for cmd in args {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        let Some((prog, rest)) = argv.split_first() else {
            continue;
        };
        let o = Command::new(prog)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {prog}"))?;
        if !o.status.success() {
            bail!("{cmd}: {}", String::from_utf8_lossy(&o.stderr).trim());
        }
    }
    println!("{:.6}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Message size of the ping-pong helpers (sockperf's `-m 64`).
const MSG: usize = 64;

/// `__pingpong-server PORT`: echoes 64-byte messages over TCP and UDP on `[::]:PORT`, IPv6
/// only — the IPv6 twin of `sockperf sr`, whose Debian build (3.7) has no IPv6; the IPv4
/// sockperf servers keep `0.0.0.0:PORT`.
pub fn pingpong_server(args: &[String]) -> Result<()> {
    let [port] = args else {
        bail!("usage: __pingpong-server PORT");
    };
    let port: u16 = port.parse().context("PORT")?;
    let tcp = std::net::TcpListener::from(v6only(libc::SOCK_STREAM, port)?);
    let udp = UdpSocket::from(v6only(libc::SOCK_DGRAM, port)?);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    for conn in tcp.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut buf = [0u8; MSG];
            while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
        });
    }
    Ok(())
}

/// A socket bound to `[::]:port` with IPV6_V6ONLY (listening, for TCP), so it shares the
/// port with an IPv4 socket on 0.0.0.0.
fn v6only(kind: libc::c_int, port: u16) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned from creation; the address is a
    // zero-initialised sockaddr_in6 with family and port set.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for (level, opt) in [
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        ] {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        if libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            len,
        ) < 0
        {
            bail!("bind [::]:{port}: {}", std::io::Error::last_os_error());
        }
        if kind == libc::SOCK_STREAM && libc::listen(fd.as_raw_fd(), 128) < 0 {
            bail!("listen: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// `__pingpong ADDR PORT tcp|udp SECS`: 64-byte ping-pong against `__pingpong-server`, after
/// a 400 ms warm-up as sockperf's; prints p50 and p99 of half the round trip in µs, as
/// sockperf reports them.
pub fn pingpong(args: &[String]) -> Result<()> {
    let [addr, port, proto, secs] = args else {
        bail!("usage: __pingpong ADDR PORT tcp|udp SECS");
    };
    let ip: std::net::IpAddr = addr.parse().context("ADDR")?;
    let to = std::net::SocketAddr::new(ip, port.parse().context("PORT")?);
    let secs: u64 = secs.parse().context("SECS")?;
    let mut round: Box<dyn FnMut() -> Result<bool>> = match proto.as_str() {
        "tcp" => {
            let mut c = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0x5au8; MSG];
            Box::new(move || {
                c.write_all(&buf)?;
                c.read_exact(&mut buf)?;
                Ok(true)
            })
        }
        "udp" => {
            let s = UdpSocket::bind(if ip.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut buf = [0x5au8; MSG];
            // A lost datagram costs one timeout and no sample (sockperf's UDP does the same).
            Box::new(move || {
                s.send(&buf)?;
                Ok(s.recv(&mut buf).is_ok())
            })
        }
        other => bail!("protocol {other}: tcp or udp"),
    };
    let warm = Instant::now() + Duration::from_millis(400);
    while Instant::now() < warm {
        round()?;
    }
    let (end, mut half_rtt) = (Instant::now() + Duration::from_secs(secs), Vec::new());
    while Instant::now() < end {
        let t = Instant::now();
        if round()? {
            half_rtt.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
        }
    }
    if half_rtt.is_empty() {
        bail!("no reply from {to}");
    }
    half_rtt.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let pct = |p: f64| half_rtt[((half_rtt.len() - 1) as f64 * p).round() as usize];
    println!("{:.3} {:.3}", pct(0.50), pct(0.99));
    Ok(())
}
