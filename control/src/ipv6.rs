//! IPv6 addressing the control plane decides: the per-host ULA prefix networks created with
//! `--ipv6` take their /64 from (as Docker derives one since v27), and whether the host can
//! carry IPv6 at all.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::error::{Error, Result};

/// The instance's ULA /48 (RFC 4193: `fd` + a 40-bit global ID), derived from the instance id
/// so that it is stable for the life of the instance and differs between hosts (instances).
pub fn ula_base(instance: &str) -> Ipv6Net {
    // FNV-1a: stable across releases and platforms, which std's hasher is not.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"weir-ula:".iter().chain(instance.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let g = h.to_be_bytes();
    let mut o = [0u8; 16];
    o[0] = 0xfd;
    o[1..6].copy_from_slice(&g[3..8]);
    Ipv6Net::new(Ipv6Addr::from(o), 48).expect("48 is a valid prefix length")
}

/// The /64 of the instance's ULA /48 that network number `id` gets with `--ipv6`.
pub fn derived_subnet(instance: &str, id: u32) -> Ipv6Net {
    let mut o = ula_base(instance).network().octets();
    o[6..8].copy_from_slice(&(id as u16).to_be_bytes());
    Ipv6Net::new(Ipv6Addr::from(o), 64).expect("64 is a valid prefix length")
}

/// The gateway of an IPv6 subnet: `<prefix>::1`, the host's address on it.
pub fn gateway_of(subnet: Ipv6Net) -> Ipv6Addr {
    let n = u128::from(subnet.network());
    Ipv6Addr::from(n + 1)
}

/// Whether the calling thread's namespace can carry IPv6 (the kernel may be booted with
/// `ipv6.disable=1`, or the namespace have it disabled): an error saying what to do if not.
pub fn host_supports() -> Result<()> {
    let all = std::path::Path::new("/proc/sys/net/ipv6/conf/all/disable_ipv6");
    let disabled = match std::fs::read_to_string(all) {
        Ok(v) => v.trim() == "1",
        Err(_) => true,
    };
    if disabled {
        return Err(Error::invalid(
            "IPv6 is disabled on this host (ipv6.disable=1 or net.ipv6.conf.all.disable_ipv6=1): create the network without --subnet6/--ipv6, or enable IPv6 first",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ula_prefixes_are_stable_and_per_instance() {
        let a = ula_base("/var/lib/weir");
        assert_eq!(a, ula_base("/var/lib/weir"));
        assert_ne!(a, ula_base("/var/lib/weir-2"));
        assert_eq!(a.network().octets()[0], 0xfd);
        let s = derived_subnet("/var/lib/weir", 3);
        assert_eq!(s.prefix_len(), 64);
        assert!(a.contains(&s));
        assert_eq!(s.network().octets()[6..8], [0, 3]);
        assert_ne!(s, derived_subnet("/var/lib/weir", 4));
        let gw = gateway_of("fd00:1:2:3::/64".parse().unwrap());
        assert_eq!(gw, "fd00:1:2:3::1".parse::<Ipv6Addr>().unwrap());
    }
}
