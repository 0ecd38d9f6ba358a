//! `control publish` / `control unpublish`: published ports live in one hash map keyed by
//! (host address or any, protocol, port); the datapath looks them up on new flows only.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;
use weir_common::publish::{PublishKey, PublishTarget};

use super::{Ctx, tx};
use crate::{
    datapath::maps,
    desired,
    error::{Context, Error, Result},
    netlink,
    published::{HostPorts, Port, Publish, PublishBook},
    state::{Phase, Proto, State},
};

#[derive(Debug, Serialize)]
pub struct PublishInfo {
    pub container: String,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
    /// None: a container of an IPv6-only network.
    pub container_ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_ip6: Option<std::net::Ipv6Addr>,
}

impl PublishInfo {
    /// `10.88.0.2:80`, or `[fd00::2]:80` for a container without IPv4.
    pub fn target(&self) -> String {
        match (self.container_ip, self.container_ip6) {
            (Some(ip), _) => format!("{ip}:{}", self.container_port),
            (None, Some(ip6)) => format!("[{ip6}]:{}", self.container_port),
            (None, None) => format!("-:{}", self.container_port),
        }
    }
}

pub fn describe(p: &Publish) -> String {
    let host = match p.host_ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    format!(
        "{host}{}->{}/{}",
        p.host_port,
        p.container_port,
        p.proto.name()
    )
}

pub fn list(st: &State, pubs: &[Publish]) -> Vec<PublishInfo> {
    pubs.iter()
        .map(|p| PublishInfo {
            container: p.container.clone(),
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_port: p.container_port,
            proto: p.proto,
            container_ip: st.containers.get(&p.container).and_then(|c| c.ip),
            container_ip6: st.containers.get(&p.container).and_then(|c| c.ip6),
        })
        .collect()
}

/// The IPv4 map entry for a published port (None: on an IPv6 address alone).
pub fn entry(st: &State, p: &Publish) -> Result<Option<(PublishKey, PublishTarget)>> {
    desired::publish_entry(st, p)
}

pub async fn publish(ctx: &Ctx, container: &str, port: Port) -> Result<PublishInfo> {
    let (_lock, st) = ctx.begin().await?;
    let mut book = PublishBook::open(&ctx.inst)?;
    let what = format!(
        "publish {container} {}:{}/{}",
        port.host_port,
        port.container_port,
        port.proto.name()
    );
    // A refused publish changed nothing (`add` undoes its own half-steps): the journal goes
    // either way.
    let p = tx::run_or_undo(
        ctx,
        &what,
        &mut (),
        async |_| add(ctx, &st, &mut book, container, port, HostPort::CheckFree).await,
        async |_| Ok(()),
    )
    .await?;
    Ok(list(&st, &[p]).remove(0))
}

/// Publishes `port` on the host port `host` names: exactly one, or the first free one —
/// not published, no host socket on it — of a range (`port.host_port` is then ignored).
pub async fn publish_on(
    ctx: &Ctx,
    container: &str,
    port: Port,
    host: HostPorts,
) -> Result<PublishInfo> {
    if let HostPorts::Exactly(host_port) = host {
        return publish(ctx, container, Port { host_port, ..port }).await;
    }
    let (lo, hi) = host.candidates();
    // Idempotent: a publication of this port the range already covers is the answer.
    let st = crate::state::load_required(&ctx.inst)?;
    let same = PublishBook::open(&ctx.inst)?
        .of(container)?
        .into_iter()
        .find(|p| {
            (p.container_port, p.proto, p.host_ip)
                == (port.container_port, port.proto, port.host_ip)
                && (lo..=hi).contains(&p.host_port)
        });
    if let Some(p) = same {
        return Ok(list(&st, &[p]).remove(0));
    }
    for host_port in lo.max(1)..=hi {
        match publish(ctx, container, Port { host_port, ..port }).await {
            Err(Error::Conflict(_)) => continue,
            r => return r,
        }
    }
    Err(Error::conflict(format!(
        "no free host port in {lo}-{hi} for {}/{}: widen the range or free one",
        port.container_port,
        port.proto.name()
    )))
}

/// Who holds the host port of a publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPort {
    /// Nobody yet: refuse it when a host socket already uses it (Weir would steal its traffic).
    CheckFree,
    /// The container runtime (conmon for CNI) holds it itself: no "in use" check.
    HeldByRuntime,
}

/// Publishes `port` to `container`. Idempotent: publishing exactly what is published changes
/// nothing.
pub async fn add(
    ctx: &Ctx,
    st: &State,
    book: &mut PublishBook,
    container: &str,
    port: Port,
    host: HostPort,
) -> Result<Publish> {
    let c = st.container(container)?;
    let net = st.network(&c.network)?;
    if net.internal {
        return Err(Error::invalid(format!(
            "container {container:?} is on internal network {:?}, which cannot be reached from outside: publish from a non-internal network",
            c.network
        )));
    }
    if c.phase == Phase::Removing {
        return Err(Error::conflict(format!(
            "container {container:?} is being removed"
        )));
    }
    let p = Publish::new(container, port);
    let Port {
        host_ip,
        host_port,
        proto,
        ..
    } = port;
    if let Some(existing) = book.clashing(host_ip, host_port, proto)? {
        if existing == p {
            return Ok(p);
        }
        return Err(already_published(&existing));
    }
    if let Some(ip) = host_ip {
        check_host_ip(ctx, st, container, ip).await?;
    }
    if host == HostPort::CheckFree {
        port_free(host_ip, host_port, proto)?;
    }
    let v4 = entry(st, &p)?;
    book.append(&p)?;
    let written = match v4 {
        Some((k, v)) => maps::publish(&ctx.inst).and_then(|mut m| {
            m.insert(k, v, 0)
                .ctx(|| "writing the published-ports map".into())
        }),
        None => Ok(()),
    };
    let written = written.and_then(|()| match desired::publish6_entry(st, &p)? {
        Some((k6, v6)) => maps::publish6(&ctx.inst)?
            .insert(k6, v6, 0)
            .ctx(|| "writing the IPv6 published-ports map".into()),
        None => Ok(()),
    });
    if let Err(e) = written {
        let _ = remove_entry(ctx, st, &p);
        let _ = book.remove(&p);
        return Err(e);
    }
    Ok(p)
}

/// A `--host-ip` must be an address of the host namespace (`::1` too); an IPv6 one needs a
/// container with IPv6.
async fn check_host_ip(ctx: &Ctx, st: &State, container: &str, ip: IpAddr) -> Result<()> {
    let local = match ip {
        IpAddr::V4(v4) => {
            if st.container(container)?.ip.is_none() {
                return Err(Error::invalid(format!(
                    "--host-ip {ip} is an IPv4 address but container {container:?} has no IPv4 (an IPv6-only network): use an IPv6 address"
                )));
            }
            netlink::ipv4_addrs(&ctx.nl, None)
                .await?
                .iter()
                .any(|(_, a, _)| *a == v4)
        }
        IpAddr::V6(v6) => {
            if st.container(container)?.ip6.is_none() {
                return Err(Error::invalid(format!(
                    "--host-ip {ip} is an IPv6 address but container {container:?} has no IPv6: use an IPv4 address, or a dual-stack network"
                )));
            }
            v6.is_loopback()
                || netlink::ipv6_global_addrs(&ctx.nl, None)
                    .await?
                    .contains(&v6)
        }
    };
    if !local {
        return Err(Error::invalid(format!(
            "--host-ip {ip} is not an address of the host namespace: use one of its addresses or omit --host-ip"
        )));
    }
    Ok(())
}

/// The refusal of a host port `existing` holds.
fn already_published(existing: &Publish) -> Error {
    Error::conflict(format!(
        "host port {}/{} is already published ({} {}): unpublish it first or pick another port",
        existing.host_port,
        existing.proto.name(),
        existing.container,
        describe(existing)
    ))
}

/// Checks, before anything is created, that a new container on `network` can publish `ports`
/// (host ports nobody holds yet): `container create --publish` then fails without touching
/// the kernel, instead of rolling back a half-made container.
pub fn precheck(st: &State, book: &PublishBook, network: &str, ports: &[Port]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    if st.network(network)?.internal {
        return Err(Error::invalid(format!(
            "network {network:?} is internal, which cannot be reached from outside: drop --publish or use a non-internal network"
        )));
    }
    for (i, p) in ports.iter().enumerate() {
        let (h, pr) = (p.host_port, p.proto);
        if ports[..i].iter().any(|o| o.host_port == h && o.proto == pr) {
            return Err(Error::invalid(format!(
                "host port {h}/{} is given twice: publish each host port once",
                pr.name()
            )));
        }
        if let Some(existing) = book.clashing(p.host_ip, h, pr)? {
            return Err(already_published(&existing));
        }
        port_free(p.host_ip, h, pr)?;
    }
    Ok(())
}

/// Fails when a socket in the host namespace already owns the port (a listener for TCP, any
/// bound socket for UDP): Weir would silently steal its traffic.
fn port_free(host_ip: Option<IpAddr>, port: u16, proto: Proto) -> Result<()> {
    let ip = host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let res = bind_test(ip, port, proto);
    match res {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EADDRINUSE) => Err(Error::conflict(format!(
            "host port {port}/{} is in use by a socket in the host namespace: stop that service or pick another port",
            proto.name()
        ))),
        Err(nix::errno::Errno::EADDRNOTAVAIL) => Err(Error::invalid(format!(
            "{ip} is not an address of the host namespace"
        ))),
        Err(_) => Ok(()),
    }
}

/// Binds (and closes) a socket of `proto` on `ip:port`: what a publication would shadow.
fn bind_test(ip: IpAddr, port: u16, proto: Proto) -> std::result::Result<(), nix::errno::Errno> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
    let (family, ty) = (
        match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        },
        match proto {
            Proto::Tcp => SockType::Stream,
            Proto::Udp => SockType::Datagram,
        },
    );
    let s = nix::sys::socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if proto == Proto::Tcp {
        // SO_REUSEADDR: only a listening socket makes bind fail, not TIME_WAIT leftovers.
        let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReuseAddr, &true);
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    match ip {
        IpAddr::V4(a) => {
            nix::sys::socket::bind(fd, &SockaddrIn::from(std::net::SocketAddrV4::new(a, port)))
        }
        IpAddr::V6(a) => nix::sys::socket::bind(
            fd,
            &SockaddrIn6::from(std::net::SocketAddrV6::new(a, port, 0, 0)),
        ),
    }
}

/// What `unpublish` did.
pub enum Unpublished {
    /// The container's publications of that port (on every address it had it on, unless
    /// one was named).
    Removed(Vec<Publish>),
    /// The container does not publish that port: a repeat, nothing to do. `held_by`: the
    /// publication of another container on it, if any (worth a note: a typo, maybe).
    NotPublished {
        host_port: u16,
        proto: Proto,
        held_by: Option<Publish>,
    },
}

/// Unpublishes `spec` from `container`: every publication of that host port it has, or the
/// one on `host_ip`. Idempotent: NotPublished when it has none. An error only when `host_ip`
/// names one address of a port the container publishes on every address (that cannot be
/// taken away from one address alone).
pub async fn unpublish(
    ctx: &Ctx,
    container: &str,
    (hp, proto): (u16, Proto),
    host_ip: Option<IpAddr>,
) -> Result<Unpublished> {
    let (_lock, st) = ctx.begin().await?;
    st.container(container)?;
    let mut book = PublishBook::open(&ctx.inst)?;
    // Everything on that port the request covers: the container's own, or another's.
    let (mine, others): (Vec<Publish>, Vec<Publish>) = book
        .on_port(host_ip, hp, proto)?
        .into_iter()
        .partition(|p| p.container == container);
    // With --host-ip, a publication on every address covers it without being it.
    let (mine, everywhere): (Vec<Publish>, Vec<Publish>) = mine
        .into_iter()
        .partition(|p| host_ip.is_none() || p.host_ip == host_ip);
    if mine.is_empty() {
        if !everywhere.is_empty() {
            return Err(Error::not_found(format!(
                "container {container:?} publishes {hp}/{} on every host address, not on one alone: unpublish it without --host-ip",
                proto.name()
            )));
        }
        return Ok(Unpublished::NotPublished {
            host_port: hp,
            proto,
            held_by: others.into_iter().next(),
        });
    }
    let what = format!("unpublish {container} {hp}/{}", proto.name());
    tx::run(ctx, &what, &mut (), async |_| {
        for p in &mine {
            remove_entry(ctx, &st, p)?;
        }
        book.retain(&Publish::port_hint(hp, proto), |p| !mine.contains(p))?;
        Ok(())
    })
    .await?;
    Ok(Unpublished::Removed(mine))
}

/// Removes a published port's map entry (the state is the caller's business).
pub fn remove_entry(ctx: &Ctx, st: &State, p: &Publish) -> Result<()> {
    if let Some(key) = desired::publish_key(p) {
        remove_entry4(ctx, st, p, key)?;
    }
    if let Ok(Some((key6, mine))) = desired::publish6_entry(st, p) {
        let mut m6 = maps::publish6(&ctx.inst)?;
        if m6.get(&key6, 0).is_ok_and(|cur| cur.addr == mine.addr) {
            let _ = m6.remove(&key6);
        }
    }
    Ok(())
}

/// The IPv4 half of [`remove_entry`].
fn remove_entry4(ctx: &Ctx, st: &State, p: &Publish, key: PublishKey) -> Result<()> {
    let mut m = maps::publish(&ctx.inst)?;
    // Only if it still points at this container (a stale state must not remove someone else's).
    if let (Ok(cur), Some(c)) = (m.get(&key, 0), st.containers.get(&p.container))
        && c.ip.map(weir_common::addr::from_std) != Some(cur.addr)
    {
        return Ok(());
    }
    let _ = m.remove(&key);
    Ok(())
}
