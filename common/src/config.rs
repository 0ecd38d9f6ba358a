//! The single-entry configuration map the control plane writes at `control init`.

use bytemuck::{Pod, Zeroable};

use crate::{
    addr::{Ipv4Be, Ipv6Be},
    conntrack::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, state},
};

/// Conntrack timeouts in seconds, per protocol and state. Defaults follow the kernel's
/// nf_conntrack sysctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_fin: u32,
    pub tcp_closed: u32,
    pub udp: u32,
    pub udp_stream: u32,
    pub icmp: u32,
    pub other: u32,
}

impl Timeouts {
    /// nf_conntrack_tcp_timeout_syn_sent, _established, _fin_wait, _close; _udp_timeout,
    /// _udp_timeout_stream, _icmp_timeout, _generic_timeout.
    pub const KERNEL_DEFAULTS: Self = Self {
        tcp_syn: 120,
        tcp_established: 432_000,
        tcp_fin: 120,
        tcp_closed: 10,
        udp: 30,
        udp_stream: 120,
        icmp: 30,
        other: 600,
    };

    /// Names accepted by `control init --ct-timeout NAME=SECONDS`.
    pub const NAMES: [&'static str; 8] = [
        "tcp-syn",
        "tcp-established",
        "tcp-fin",
        "tcp-closed",
        "udp",
        "udp-stream",
        "icmp",
        "other",
    ];

    pub fn get_mut(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name {
            "tcp-syn" => &mut self.tcp_syn,
            "tcp-established" => &mut self.tcp_established,
            "tcp-fin" => &mut self.tcp_fin,
            "tcp-closed" => &mut self.tcp_closed,
            "udp" => &mut self.udp,
            "udp-stream" => &mut self.udp_stream,
            "icmp" => &mut self.icmp,
            "other" => &mut self.other,
            _ => return None,
        })
    }

    /// The timeout of a flow of `proto` in state `s`. Every field is read with a volatile load
    /// and the choice made among values: otherwise LLVM turns the match into a computed field
    /// offset that the BPF verifier rejects.
    #[inline(always)]
    pub fn for_state(&self, proto: u8, s: u8) -> u32 {
        let v = |f: &u32| unsafe { core::ptr::read_volatile(f) };
        let (syn, est, fin, closed) = (
            v(&self.tcp_syn),
            v(&self.tcp_established),
            v(&self.tcp_fin),
            v(&self.tcp_closed),
        );
        let (udp, udp_stream, icmp, other) = (
            v(&self.udp),
            v(&self.udp_stream),
            v(&self.icmp),
            v(&self.other),
        );
        if proto == IPPROTO_TCP {
            if s == state::ESTABLISHED {
                est
            } else if s == state::FIN_WAIT {
                fin
            } else if s == state::CLOSED {
                closed
            } else {
                syn
            }
        } else if proto == IPPROTO_UDP {
            if s == state::ESTABLISHED {
                udp_stream
            } else {
                udp
            }
        } else if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
            icmp
        } else {
            other
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::KERNEL_DEFAULTS
    }
}

/// Config flags.
pub mod flags {
    /// `control monitor` is listening: emit events to the ring buffer.
    pub const EVENTS: u32 = 1 << 0;
}

/// Datapath-wide settings (array map `WEIR_CONFIG`, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// [`crate::SCHEMA_VERSION`] of whoever wrote the maps.
    pub schema: u32,
    pub flags: u32,
    pub uplink_ifindex: u32,
    /// The address containers are masqueraded to.
    pub uplink_ip: Ipv4Be,
    /// Cookie of the host network namespace this instance serves; the cgroup programs act
    /// only on sockets in that namespace.
    pub netns_cookie: u64,
    /// The ports SNAT picks from when a container's own port may not be kept. Disjoint from
    /// the host's ephemeral range (the control plane refuses an overlap).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// The host's ephemeral range (`net.ipv4.ip_local_port_range`) when the config was
    /// written: its stack picks its own flows' source ports there, without seeing Weir's
    /// table, so no masqueraded flow may hold one (see the datapath's `nat::masquerade`).
    pub host_port_min: u16,
    pub host_port_max: u16,
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            schema: crate::SCHEMA_VERSION,
            flags: 0,
            uplink_ifindex: 0,
            uplink_ip: 0,
            netns_cookie: 0,
            snat_port_min: 1024,
            snat_port_max: 32767,
            host_port_min: 32768,
            host_port_max: 60999,
            timeouts: Timeouts::KERNEL_DEFAULTS,
        }
    }
}

/// IPv6 settings (array map `WEIR_CONFIG6`, one entry): a map of its own, so that adding IPv6
/// changed no pinned layout and `control init` upgrades a live IPv4 instance in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config6 {
    /// The uplink's global IPv6 address NAT66 falls back on when the kernel cannot say which
    /// source it would pick for a destination (`BPF_FIB_LOOKUP_SRC`, Linux 6.7); all zeros
    /// when the uplink has none (containers then reach no IPv6 world).
    pub uplink_ip6: Ipv6Be,
    pub flags: u32,
    pub _pad: u32,
}

crate::user_pod!(Config, Timeouts, Config6);
