//! The few per-interface sysctls Weir sets. /proc/sys/net is per network namespace: the file
//! is resolved in the namespace of the thread that opens it.

use crate::error::{Context, Result};

fn write(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).ctx(|| format!("writing {value} to {path}"))
}

/// IPv4 forwarding on one host-side veth: `bpf_fib_lookup` refuses to route for an ingress
/// device without it (BPF_FIB_LKUP_RET_FWD_DISABLED). The kernel itself forwards nothing
/// Weir hands it except TTL-expiring packets, which it answers with ICMP time exceeded — so
/// what a router would also accept from that device is turned off: source-routed packets
/// (which the host would otherwise forward to the hop they name, past every check) and
/// ICMP redirects either way.
pub fn enable_forwarding(ifname: &str) -> Result<()> {
    let conf = format!("/proc/sys/net/ipv4/conf/{ifname}");
    write(&format!("{conf}/accept_source_route"), "0")?;
    write(&format!("{conf}/send_redirects"), "0")?;
    write(&format!("{conf}/accept_redirects"), "0")?;
    write(&format!("{conf}/forwarding"), "1")
}

/// Forwarding off again on a link about to go, so nothing it receives is routed once its
/// filter is gone.
pub fn disable_forwarding(ifname: &str) -> Result<()> {
    write(&format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"), "0")
}

/// IPv6 on a host-side veth of a dual-stack container: the host must route to the container's
/// /128 over it (a route via a device with IPv6 disabled is refused), and `bpf_fib_lookup`
/// must route IPv6 arriving on it, which takes this device's `forwarding` (only this
/// device's: `all.forwarding`, which would make the host a router and drop its
/// router-advertised default route, moby#43466, is never touched, nor is the uplink's).
/// RAs and DAD off before IPv6 comes on, so the link-local address is never tentative.
pub fn enable_ipv6(ifname: &str) -> Result<()> {
    let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
    write(&format!("{conf}/accept_ra"), "0")?;
    write(&format!("{conf}/accept_dad"), "0")?;
    write(&format!("{conf}/accept_redirects"), "0")?;
    write(&format!("{conf}/forwarding"), "1")?;
    write(&format!("{conf}/disable_ipv6"), "0")
}

/// IPv6 on a container's interface (in its namespace): a static address, no router
/// advertisements, no autoconfiguration, no duplicate-address detection, set in that order
/// before IPv6 comes on, so the address is usable at once and nothing the network says
/// changes the container's routes.
pub fn enable_ipv6_inside(ifname: &str) -> Result<()> {
    let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
    write(&format!("{conf}/accept_dad"), "0")?;
    write(&format!("{conf}/accept_ra"), "0")?;
    write(&format!("{conf}/autoconf"), "0")?;
    write(&format!("{conf}/router_solicitations"), "0")?;
    write(&format!("{conf}/disable_ipv6"), "0")
}

/// Containers of IPv4-only networks get no IPv6: no link-local addresses, router
/// solicitations or DAD noise.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if std::path::Path::new(&p).exists() {
        write(&p, "1")
    } else {
        Ok(())
    }
}
