//! Parsing and validation of user input, each failure a message that says what to do.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{
    error::{Error, Result},
    published::HostPorts,
    state::Proto,
};

/// Longest name we accept: names become netns files and appear in interface aliases.
pub const NAME_MAX: usize = 63;

/// Container and network names: letters, digits, `-`, `_`, `.`, starting with a letter or
/// digit, at most 63 characters — safe as a file name under /run/netns and in messages.
pub fn name(kind: &str, s: &str) -> Result<()> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if s.is_empty() || s.len() > NAME_MAX || !ok_first || !ok_rest {
        return Err(Error::invalid(format!(
            "invalid {kind} name {:?}: use 1-{NAME_MAX} letters, digits, '-', '_' or '.', starting with a letter or digit",
            truncate(s)
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s.to_string()
    }
}

/// A subnet for a network: a network address with a prefix between /8 and /30.
pub fn subnet(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid subnet {:?}: expected IPv4 CIDR like 10.88.0.0/24",
            truncate(s)
        ))
    })?;
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(Error::invalid(format!(
            "subnet {net} has prefix /{}: use a prefix between /8 and /30",
            net.prefix_len()
        )));
    }
    if net.addr() != net.network() {
        return Err(Error::invalid(format!(
            "{s} is not a network address: did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        )));
    }
    let a = net.addr();
    if a.is_loopback()
        || a.is_multicast()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.octets()[0] >= 240
    {
        return Err(Error::invalid(format!(
            "subnet {net} is not a unicast range: pick a private range like 10.88.0.0/24"
        )));
    }
    Ok(net)
}

/// `PORT` in 1..=65535.
pub fn port(what: &str, s: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::invalid(format!(
            "invalid {what} {:?}: use a number from 1 to 65535",
            truncate(s)
        ))),
    }
}

pub fn proto(s: &str) -> Result<Proto> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(Error::invalid(format!(
            "invalid protocol {:?}: use tcp or udp",
            truncate(s)
        ))),
    }
}

/// `HOSTPORT:PORT[/tcp|/udp]`: [`publish_form`] with a fixed host port.
pub fn publish_spec(s: &str) -> Result<(u16, u16, Proto)> {
    match publish_form(s)? {
        (HostPorts::Exactly(h), c, pr) => Ok((h, c, pr)),
        _ => Err(Error::invalid(format!(
            "invalid port mapping {:?}: expected HOSTPORT:PORT[/tcp|/udp], e.g. 8080:80 or 5353:53/udp",
            truncate(s)
        ))),
    }
}

/// `control publish`'s mapping: `HOSTPORT:PORT`, `LO-HI:PORT` (the first free host port of
/// the range) or `PORT` alone (any free host port), each `[/tcp|/udp]`.
pub fn publish_form(s: &str) -> Result<(HostPorts, u16, Proto)> {
    let (ports, pr) = match s.split_once('/') {
        Some((p, pr)) => (p, proto(pr)?),
        None => (s, Proto::Tcp),
    };
    let Some((h, c)) = ports.split_once(':') else {
        return Ok((HostPorts::AnyFree, port("container port", ports)?, pr));
    };
    let host = match h.split_once('-') {
        Some(_) => {
            let (lo, hi) = port_range(h).map_err(|_| {
                Error::invalid(format!(
                    "invalid host port range {:?}: expected LO-HI:PORT with LO <= HI, e.g. 9000-9009:80",
                    truncate(h)
                ))
            })?;
            HostPorts::FirstFreeIn(lo, hi)
        }
        None => HostPorts::Exactly(port("host port", h)?),
    };
    Ok((host, port("container port", c)?, pr))
}

/// `HOSTPORT[/tcp|/udp]`.
pub fn host_port_spec(s: &str) -> Result<(u16, Proto)> {
    let (p, pr) = match s.split_once('/') {
        Some((p, pr)) => (p, proto(pr)?),
        None => (s, Proto::Tcp),
    };
    Ok((port("host port", p)?, pr))
}

/// `PORT[/tcp|/udp]`.
pub fn port_spec(s: &str) -> Result<(Proto, u16)> {
    let (p, pr) = host_port_spec(s)?;
    Ok((pr, p))
}

pub fn ipv4(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {:?}: expected an IPv4 address like 10.88.0.5",
            truncate(s)
        ))
    })
}

/// A gateway for `subnet`: one of its host addresses (not the network or broadcast address).
/// An IPv6 subnet for a network: a network address with a prefix between /48 and /120, in
/// unicast space a container may use (not link-local, loopback, multicast or IPv4-mapped).
pub fn subnet6(s: &str) -> Result<ipnet::Ipv6Net> {
    let net: ipnet::Ipv6Net = s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid IPv6 subnet {:?}: expected a CIDR like fd00:88::/64",
            truncate(s)
        ))
    })?;
    if !(48..=120).contains(&net.prefix_len()) {
        return Err(Error::invalid(format!(
            "IPv6 subnet {net} has prefix /{}: use a prefix between /48 and /120 (/64 is usual)",
            net.prefix_len()
        )));
    }
    if net.addr() != net.network() {
        return Err(Error::invalid(format!(
            "{s} is not a network address: did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        )));
    }
    let a = net.addr();
    let mapped = a.to_ipv4_mapped().is_some();
    if a.is_loopback()
        || a.is_multicast()
        || a.is_unspecified()
        || a.is_unicast_link_local()
        || mapped
    {
        return Err(Error::invalid(format!(
            "{net} is not unicast space a container can use: pick a ULA (fd00::/8) or global prefix"
        )));
    }
    Ok(net)
}

/// A host address to publish on: IPv4, or IPv6 (brackets allowed, as in `[::1]`).
pub fn host_ip(s: &str) -> Result<std::net::IpAddr> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            Error::invalid(format!(
                "invalid host IP {:?}: expected an IPv4 or IPv6 address, e.g. 192.0.2.10 or ::1",
                truncate(s)
            ))
        })
}

/// A container's IPv6 address.
pub fn ipv6(what: &str, s: &str) -> Result<std::net::Ipv6Addr> {
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {:?}: expected an IPv6 address like fd00:88::10",
            truncate(s)
        ))
    })
}

pub fn gateway(subnet: Ipv4Net, s: &str) -> Result<Ipv4Addr> {
    let ip = ipv4("gateway", s)?;
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Error::invalid(format!(
            "gateway {ip} is not a host address of {subnet}: pick one inside it, e.g. {}",
            subnet.hosts().next().unwrap_or(subnet.addr())
        )));
    }
    Ok(ip)
}

/// `MIN-MAX` port range.
pub fn port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::invalid(format!(
            "invalid port range {:?}: expected MIN-MAX, e.g. 10000-32767",
            truncate(s)
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (port("port", a)?, port("port", b)?);
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("container", "web-1.a_b").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".x",
            "-x",
            &"a".repeat(64),
            "a b",
            "é",
        ] {
            assert!(name("container", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subnets() {
        assert!(subnet("10.88.0.0/24").is_ok());
        assert!(
            subnet("10.88.0.1/24")
                .unwrap_err()
                .to_string()
                .contains("did you mean 10.88.0.0/24")
        );
        assert!(subnet("10.0.0.0/31").is_err());
        assert!(subnet("10.0.0.0").is_err());
        assert!(subnet("300.0.0.0/8").is_err());
        assert!(subnet("127.0.0.0/8").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(publish_spec("8080:80").unwrap(), (8080, 80, Proto::Tcp));
        assert_eq!(publish_spec("53:5353/UDP").unwrap(), (53, 5353, Proto::Udp));
        for bad in ["0:80", "70000:80", "80", "a:b", "80:80/sctp", "80:-1"] {
            assert!(publish_spec(bad).is_err(), "{bad}");
        }
        assert_eq!(port_range("1000-2000").unwrap(), (1000, 2000));
        assert!(port_range("2000-1000").is_err());
    }
}
