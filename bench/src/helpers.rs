//! Small programs the bench runs inside sandbox namespaces (as `bench __NAME ...`): a UDP
//! flood, a UDP sink, and a timer for commands.

use std::{
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
