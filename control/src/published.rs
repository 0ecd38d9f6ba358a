//! Published ports as the user asked for them: one line each in the port book, a [`Book`]
//! beside the state (`*:8080/tcp web 80`, `192.0.2.10:5353/udp dns 53`).

use std::{fmt, net::IpAddr, str::FromStr};

use crate::{
    book::Book,
    error::{Error, Result},
    instance::Instance,
    state::Proto,
    validate,
};

/// A port mapping as a front end parsed it: host port (on `host_ip`, None: every host
/// address) to container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// Which host port a publication takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPorts {
    Exactly(u16),
    /// The first free one of `LO..=HI` (Docker's `-p LO-HI:PORT`).
    FirstFreeIn(u16, u16),
    /// Any free one, from the host's ephemeral range as Docker's allocator takes them
    /// (`-p PORT`, `-P`).
    AnyFree,
}

impl HostPorts {
    /// The host ports to try, in order.
    pub fn candidates(self) -> (u16, u16) {
        match self {
            HostPorts::Exactly(p) => (p, p),
            HostPorts::FirstFreeIn(lo, hi) => (lo, hi),
            HostPorts::AnyFree => ephemeral_range(),
        }
    }
}

/// The ephemeral range of the namespace we run in (`net.ipv4.ip_local_port_range`), else
/// Docker's default.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut w = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((w.next()??, w.next()??))
        })
        .unwrap_or((49153, 65535))
}

impl Port {
    /// `HOSTPORT:PORT[/tcp|/udp]`, on `host_ip`.
    pub fn parse(spec: &str, host_ip: Option<IpAddr>) -> Result<Self> {
        let (host_port, container_port, proto) = validate::publish_spec(spec)?;
        Ok(Self {
            host_ip,
            host_port,
            container_port,
            proto,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub container: String,
    /// None: every host address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl Publish {
    pub fn new(container: &str, p: Port) -> Self {
        Self {
            container: container.to_string(),
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_port: p.container_port,
            proto: p.proto,
        }
    }

    /// Whether it takes `host_port/proto` on `host_ip` (None: every address) — two publishes
    /// clash when their ports match and their addresses overlap.
    pub fn clashes(&self, host_ip: Option<IpAddr>, host_port: u16, proto: Proto) -> bool {
        self.proto == proto
            && self.host_port == host_port
            && (self.host_ip == host_ip || self.host_ip.is_none() || host_ip.is_none())
    }

    /// The part of its line that names its host port: a search hint for the book.
    pub fn port_hint(host_port: u16, proto: Proto) -> String {
        format!(":{host_port}/{} ", proto.name())
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Some(ip) => write!(f, "{ip}")?,
            None => f.write_str("*")?,
        }
        write!(
            f,
            ":{}/{} {} {}",
            self.host_port,
            self.proto.name(),
            self.container,
            self.container_port
        )
    }
}

impl FromStr for Publish {
    type Err = Error;

    fn from_str(line: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "invalid published port {line:?}: expected `HOST:PORT/PROTO CONTAINER PORT`"
            ))
        };
        let w: Vec<&str> = line.split(' ').collect();
        let [host, container, cport] = w.as_slice() else {
            return Err(bad());
        };
        let (addr, hport) = host.rsplit_once(':').ok_or_else(bad)?;
        let host_ip = match addr {
            "*" => None,
            a => Some(validate::host_ip(
                a.trim_start_matches('[').trim_end_matches(']'),
            )?),
        };
        let (host_port, proto) = validate::host_port_spec(hport)?;
        if !hport.contains('/') {
            return Err(bad());
        }
        validate::name("container", container)?;
        let container_port = validate::port("container port", cport)?;
        Ok(Publish {
            container: container.to_string(),
            host_ip,
            host_port,
            container_port,
            proto,
        })
    }
}

/// The port book (see [`crate::book`]).
pub type PublishBook = Book<Publish>;

impl PublishBook {
    pub fn open(inst: &Instance) -> Result<Self> {
        Book::load(inst.publishes_file())
    }

    /// The ports published to `container`.
    pub fn of(&self, container: &str) -> Result<Vec<Publish>> {
        self.matching(container, |p| p.container == container)
    }

    /// The publishes that take `host_port/proto` on `host_ip` (None: on any address).
    pub fn on_port(
        &self,
        host_ip: Option<IpAddr>,
        host_port: u16,
        proto: Proto,
    ) -> Result<Vec<Publish>> {
        let hint = Publish::port_hint(host_port, proto);
        self.matching(&hint, |p| p.clashes(host_ip, host_port, proto))
    }

    /// The publish that takes `host_port/proto` on `host_ip`, if one does.
    pub fn clashing(
        &self,
        host_ip: Option<IpAddr>,
        host_port: u16,
        proto: Proto,
    ) -> Result<Option<Publish>> {
        Ok(self.on_port(host_ip, host_port, proto)?.into_iter().next())
    }

    /// Drops every port published to `container` (it is going away).
    pub fn forget(&mut self, container: &str) -> Result<usize> {
        self.retain(container, |p| p.container != container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_round_trip_as_lines() {
        for s in [
            "*:8080/tcp web 80",
            "192.0.2.10:5353/udp dns-1.x 53",
            "127.0.0.1:1/tcp a 65535",
        ] {
            let p: Publish = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        for bad in [
            "",
            "*:8080 web 80",
            "*:8080/sctp web 80",
            "*:0/tcp web 80",
            "*:8080/tcp web 70000",
            "8080/tcp web 80",
            "*:8080/tcp we/b 80",
            "*:8080/tcp web 80 extra",
            "300.1.1.1:8080/tcp web 80",
            "[fd00::zz]:8080/tcp web 80",
        ] {
            assert!(bad.parse::<Publish>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_host_addresses_round_trip_in_brackets() {
        let line = "[2001:db8::10]:8080/tcp web 80";
        let p: Publish = line.parse().unwrap();
        assert_eq!(p.host_ip, Some("2001:db8::10".parse().unwrap()));
        assert_eq!(p.to_string(), line);
        let lo: Publish = "[::1]:53/udp dns 53".parse().unwrap();
        assert_eq!(lo.to_string(), "[::1]:53/udp dns 53");
    }

    #[test]
    fn clashes_follow_addresses() {
        let p: Publish = "192.0.2.10:8080/tcp web 80".parse().unwrap();
        let other = Some(std::net::Ipv4Addr::new(192, 0, 2, 11).into());
        assert!(p.clashes(None, 8080, Proto::Tcp));
        assert!(p.clashes(p.host_ip, 8080, Proto::Tcp));
        assert!(!p.clashes(other, 8080, Proto::Tcp));
        assert!(!p.clashes(None, 8080, Proto::Udp));
        assert!(!p.clashes(None, 8081, Proto::Tcp));
    }

    #[test]
    fn the_book_finds_clashes_and_a_containers_ports() {
        let d = tempfile::tempdir().unwrap();
        let inst = Instance::new(d.path()).unwrap();
        let mut b = PublishBook::open(&inst).unwrap();
        b.extend(&[
            "*:8080/tcp web 80".parse().unwrap(),
            "*:18080/tcp webby 80".parse().unwrap(),
            "192.0.2.10:53/udp dns 53".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            b.clashing(None, 8080, Proto::Tcp)
                .unwrap()
                .unwrap()
                .container,
            "web"
        );
        assert!(b.clashing(None, 808, Proto::Tcp).unwrap().is_none());
        assert!(
            b.clashing(
                Some(std::net::Ipv4Addr::new(192, 0, 2, 9).into()),
                53,
                Proto::Udp
            )
            .unwrap()
            .is_none()
        );
        assert_eq!(b.of("web").unwrap().len(), 1);
        assert_eq!(b.forget("web").unwrap(), 1);
        assert_eq!(b.of("webby").unwrap().len(), 1);
    }
}
