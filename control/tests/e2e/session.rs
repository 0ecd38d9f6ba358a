//! Long-lived flows opened from inside a namespace (the socket stays there): a TCP connection
//! or a connected UDP socket to an echo server, whose every round trip must come back intact.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{FromRawFd, OwnedFd},
    thread,
    time::Duration,
};

use rig::{Netns, text};

/// Runs `f` on a short-lived thread inside namespace `ns`: sockets it opens stay in there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = control::netns::path(ns);
    thread::scope(|sc| {
        sc.spawn(|| {
            control::netns::enter(&path).map_err(|e| io::Error::other(e.to_string()))?;
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Connects from inside namespace `ns`, optionally from a fixed source port (SO_REUSEADDR, so
/// a port a closed flow still holds can be taken again).
pub fn connect_from(
    ns: &str,
    addr: &str,
    port: u16,
    sport: Option<u16>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let ip: Ipv4Addr = addr.parse().expect("IPv4 address");
    in_netns(ns, || {
        // SAFETY: plain socket calls on a descriptor we own; structs fully initialised.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let one: libc::c_int = 1;
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
            // connect(2) honours the send timeout.
            let tv = libc::timeval {
                tv_sec: timeout.as_secs() as _,
                tv_usec: timeout.subsec_micros() as _,
            };
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
            let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            if let Some(p) = sport {
                let local = sa(Ipv4Addr::UNSPECIFIED, p);
                if libc::bind(
                    raw,
                    (&local as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            let remote = sa(ip, port);
            if libc::connect(
                raw,
                (&remote as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            fd
        };
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// A long-lived flow to an echo server; every round trip must come back intact.
pub struct Session {
    what: String,
    conn: Conn,
    n: u64,
}

impl Session {
    /// A TCP connection from `ns` (optionally from source port `sport`), checked once.
    pub fn open(ns: &Netns, addr: &str, port: u16, sport: Option<u16>) -> io::Result<Self> {
        let stream = connect_from(&ns.name, addr, port, sport, Duration::from_secs(3))?;
        Self::started(
            format!("tcp {} -> {addr}:{port}", ns.name),
            Conn::Tcp(stream),
        )
    }

    /// A connected UDP socket from `ns`, checked once.
    pub fn udp(ns: &Netns, addr: &str, port: u16) -> io::Result<Self> {
        let to: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let sock = in_netns(&ns.name, || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            Ok(s)
        })?;
        Self::started(format!("udp {} -> {to}", ns.name), Conn::Udp(sock))
    }

    fn started(what: String, conn: Conn) -> io::Result<Self> {
        let mut s = Self { what, conn, n: 0 };
        s.roundtrip()?;
        Ok(s)
    }

    /// One message there and back.
    pub fn roundtrip(&mut self) -> io::Result<()> {
        self.n += 1;
        let msg = format!("{:08}\n", self.n);
        match &mut self.conn {
            Conn::Tcp(s) => {
                s.write_all(msg.as_bytes())?;
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back)?;
                if back != msg.as_bytes() {
                    return Err(io::Error::other(format!(
                        "{}: sent {msg:?}, got {:?}",
                        self.what,
                        text(&back)
                    )));
                }
                Ok(())
            }
            Conn::Udp(s) => udp_roundtrip(s, msg.as_bytes()),
        }
    }

    /// A round trip that must succeed.
    pub fn check(&mut self) {
        self.check_after("");
    }

    /// A round trip that must succeed; `when` says what just happened (for the message).
    pub fn check_after(&mut self, when: &str) {
        if let Err(e) = self.roundtrip() {
            panic!(
                "session {} broke after {} round trips{}: {e}",
                self.what,
                self.n,
                if when.is_empty() {
                    String::new()
                } else {
                    format!(" ({when})")
                }
            );
        }
    }
}

/// A datagram may be lost on a busy veth: three tries, stale echoes skipped.
fn udp_roundtrip(s: &UdpSocket, msg: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        s.send(msg)?;
        loop {
            match s.recv(&mut buf) {
                Ok(n) if &buf[..n] == msg => return Ok(()),
                Ok(_) => continue,
                // A stop and continue (SIGSTOP/SIGCONT, e.g. a paused test run) interrupts a
                // receive with a timeout even without a handler; like read_exact, try again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::other(format!(
        "no echo of {:?} in 3 tries",
        text(msg)
    )))
}
