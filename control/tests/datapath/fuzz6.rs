//! The fuzzer's IPv6 frames (see `fuzz`): valid traffic and mangled versions of it — special
//! and spoofed sources (link-local, `::`, `::1`, multicast, v4-mapped, other containers'),
//! hop limits, ICMPv6 errors quoting a flow — from containers and from the world, checked
//! against the same invariants as IPv4's.

use std::net::Ipv6Addr;

use super::{
    check::{parse_ip6, verify6},
    frame::*,
    fuzz::{Rng, checksums_with, drops_accounted, mangled_or_not},
    harness::*,
    topo::*,
};

pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 2);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 3);
pub const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 2);
const GW_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 1);
const GW_C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 1);
const NOBODY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 0x99);

/// A, B (network 1) and C (network 2) dual-stack, with IPv6 published ports to B and A.
pub fn set_up(dp: &mut Datapath) {
    dp.give_ipv6(&A, A6, GW_A6);
    dp.give_ipv6(&B, B6, GW_A6);
    dp.give_ipv6(&C, C6, GW_C6);
    dp.publish6(Ipv6Addr::UNSPECIFIED, TCP, 8080, B6, 80, &B);
    dp.publish6(UPLINK_IP6, UDP, 5353, B6, 53, &B);
    dp.publish6(Ipv6Addr::UNSPECIFIED, TCP, 2222, A6, 22, &A);
}

fn own(c: &Container) -> (Ipv6Addr, Ipv6Addr) {
    match c.name {
        "a" => (A6, GW_A6),
        "b" => (B6, GW_A6),
        _ => (C6, GW_C6),
    }
}

fn address(r: &mut Rng) -> Ipv6Addr {
    let random = Ipv6Addr::from(((r.next() as u128) << 64) | r.next() as u128);
    r.pick(&[
        A6,
        B6,
        C6,
        GW_A6,
        GW_C6,
        NOBODY6,
        UPLINK_IP6,
        WORLD6,
        ROUTER6,
        "fe80::1".parse().unwrap(),
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::UNSPECIFIED,
        "ff02::1".parse().unwrap(),
        "::ffff:10.0.0.2".parse().unwrap(),
        random,
    ])
}

fn port(r: &mut Rng) -> u16 {
    let random = r.next() as u16;
    r.pick(&[22, 53, 80, 443, 2222, 5353, 8080, random])
}

/// A packet with valid headers and checksum and random fields.
fn valid_ip6(r: &mut Rng, src: Ipv6Addr, dst: Ipv6Addr) -> Ip6 {
    let (sport, dport) = (port(r), port(r));
    let kind = r.below(6);
    let mut ip = match kind {
        0 | 1 => Ip6::tcp(src, sport, dst, dport, r.next() as u8),
        2 => Ip6::udp(src, sport, dst, dport),
        3 => Ip6::echo(src, dst, r.pick(&[ICMP6_ECHO, ICMP6_ECHO_REPLY]), sport),
        4 => {
            let quoted = Ip6::tcp(dst, dport, src, sport, SYN).bytes();
            let ty = r.pick(&[1, ICMP6_TOO_BIG, 3]);
            Ip6::icmp(src, dst, ty, 1280u32.to_be_bytes(), &quoted)
        }
        _ => {
            let next = r.pick(&[0, 43, 44, 50, 59, 132]);
            Ip6 {
                l4: L4::Raw {
                    proto: next,
                    payload: r.bytes(16),
                },
                ..Ip6::udp(src, 1, dst, 1)
            }
        }
    };
    if r.chance(20) {
        ip.hop_limit = r.pick(&[0, 1, 2, 255]);
    }
    if r.chance(30) && kind != 4 {
        let n = r.below(300) as usize;
        ip = ip.payload(&r.bytes(n));
    }
    ip
}

/// Breaks the frame's structure; what is left need not have valid checksums.
fn mangle(r: &mut Rng, f: &mut Vec<u8>) {
    match r.below(4) {
        // BPF_PROG_TEST_RUN wants the whole fixed header.
        0 if f.len() > 54 => f.truncate(54 + r.below(f.len() as u64 - 53) as usize),
        1 => f[18..20].copy_from_slice(&(r.next() as u16).to_be_bytes()), // payload length
        2 => f[20] = r.next() as u8,                                      // next header
        _ => {
            let i = r.below(f.len().min(100) as u64) as usize;
            f[i] ^= 1 << r.below(8);
        }
    }
}

/// One IPv6 frame container `c` sends (sometimes from another address or MAC); whether it
/// was built valid.
pub fn container_frame(r: &mut Rng, c: &Container) -> (Vec<u8>, bool) {
    let eth_src = if r.chance(90) {
        c.mac
    } else {
        [0x02, 0xba, 0xd0, 0, 0, 1]
    };
    let src = if r.chance(80) { own(c).0 } else { address(r) };
    let dst = address(r);
    let f = eth(
        c.host_mac,
        eth_src,
        ETH_IPV6,
        &valid_ip6(r, src, dst).bytes(),
    );
    mangled_or_not(r, f, mangle)
}

/// One IPv6 frame from the world: mostly to the host's address and its published ports.
pub fn world_frame(r: &mut Rng) -> (Vec<u8>, bool) {
    let src = if r.chance(85) {
        r.pick(&[WORLD6, ROUTER6])
    } else {
        address(r)
    };
    let dst = if r.chance(70) { UPLINK_IP6 } else { address(r) };
    let f = eth(
        UPLINK_MAC,
        NEXTHOP_MAC,
        ETH_IPV6,
        &valid_ip6(r, src, dst).bytes(),
    );
    mangled_or_not(r, f, mangle)
}

/// The sources a frame from the world may never carry into a container: the containers'
/// side, the host's, and addresses that are no one's on a wire.
fn inside(ip: Ipv6Addr) -> bool {
    [A6, B6, C6, GW_A6, GW_C6, NOBODY6, UPLINK_IP6].contains(&ip)
        || ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unicast_link_local()
        || ip.to_ipv4_mapped().is_some()
}

fn container_by_mac(mac: &[u8]) -> Option<&'static Container> {
    CONTAINERS.iter().copied().find(|c| c.mac == mac)
}

/// What from_container may let through from `sender` (an IPv6 frame).
pub fn check_from_container(sender: &Container, r: &Run, valid: bool) -> Result<(), String> {
    drops_accounted(r, TC_ACT_SHOT)?;
    if r.verdict != TC_ACT_REDIRECT {
        return Ok(());
    }
    let ethertype = u16::from_be_bytes([r.frame[12], r.frame[13]]);
    if ethertype != ETH_IPV6 {
        return Err(format!("ethertype {ethertype:#06x} redirected"));
    }
    checksums_with(r, valid, verify6)?;
    let o = parse_ip6(&r.frame[14..]);
    let Some(to) = container_by_mac(&r.frame[..6]) else {
        return match o.src == UPLINK_IP6 {
            true => Ok(()),
            false => Err(format!("to {:02x?} from {}", &r.frame[..6], o.src)),
        };
    };
    let (ip6, gw6) = own(sender);
    // Its own address; its gateway's for what Weir answers itself; a neighbour
    // advertisement back to the asker comes from the address it asked about.
    let answer_to_itself = to.name == sender.name && o.next == 58 && o.icmp_type == 136;
    if o.src != ip6 && o.src != gw6 && !answer_to_itself {
        return Err(format!(
            "into {} from {}, not {}'s",
            to.name, o.src, sender.name
        ));
    }
    let pair = (sender.identity, to.identity);
    if pair == (A.identity, B.identity) || pair == (B.identity, A.identity) {
        return Err(format!("{} reached {} (denied)", sender.name, to.name));
    }
    Ok(())
}

/// What uplink_tc may deliver from the world (an IPv6 frame).
pub fn check_uplink_tc(r: &Run, valid: bool) -> Result<(), String> {
    drops_accounted(r, TC_ACT_SHOT)?;
    if r.verdict != TC_ACT_REDIRECT {
        return Ok(());
    }
    checksums_with(r, valid, verify6)?;
    let o = parse_ip6(&r.frame[14..]);
    let to =
        container_by_mac(&r.frame[..6]).ok_or(format!("redirected to {:02x?}", &r.frame[..6]))?;
    if inside(o.src) {
        return Err(format!(
            "into {} from the world with source {}",
            to.name, o.src
        ));
    }
    Ok(())
}
