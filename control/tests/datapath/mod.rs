//! BPF_PROG_TEST_RUN harness for the packet programs (`harness`), frame builders (`frame`),
//! independent checks of the output (`check`), the topology the maps describe (`topo`), and
//! the cases, one module per concern.

pub mod check;
pub mod frame;
pub mod harness;
pub mod topo;

mod arp;
mod checksums;
mod fragments;
mod from_container;
mod fuzz;
mod fuzz6;
mod icmp_errors;
mod malformed;
mod nat66;
mod ndp;
mod policy;
mod to_container;
mod uplink;
mod xdp;

use check::{Out, parse, verify};
use frame::{Ip, ip_frame};
use harness::{Run, TC_ACT_REDIRECT};
use topo::{Container, NEXTHOP_MAC, UPLINK_MAC};

/// A frame container `c` sends: from its MAC to its host-side veth's.
pub fn sent_by(c: &Container, ip: &Ip) -> Vec<u8> {
    ip_frame(c.host_mac, c.mac, &ip.bytes())
}

/// A frame arriving on the uplink from the next hop.
pub fn inbound(ip: &Ip) -> Vec<u8> {
    ip_frame(UPLINK_MAC, NEXTHOP_MAC, &ip.bytes())
}

/// Asserts the run redirected the frame into `c` (it sees its gateway MAC to its own) with
/// every checksum valid; returns the parsed output.
pub fn assert_delivered(r: &Run, c: &Container, what: &str) -> Out {
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "{what}: verdict ({r:?})");
    assert!(r.drops().is_empty(), "{what}: drops {:?}", r.drops());
    let o = parse(&r.frame);
    assert_eq!(o.dst_mac, c.mac, "{what}: destination MAC");
    assert_eq!(o.src_mac, c.host_mac, "{what}: source MAC");
    verify(&r.frame, what);
    o
}

/// Asserts the run redirected the frame out of the uplink to the resolved next hop.
pub fn assert_to_uplink(r: &Run, what: &str) -> Out {
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "{what}: verdict ({r:?})");
    assert!(r.drops().is_empty(), "{what}: drops {:?}", r.drops());
    let o = parse(&r.frame);
    assert_eq!(o.dst_mac, NEXTHOP_MAC, "{what}: destination MAC");
    assert_eq!(o.src_mac, UPLINK_MAC, "{what}: source MAC");
    verify(&r.frame, what);
    o
}

/// Asserts the run left the frame to the host stack untouched, without counting a drop.
pub fn assert_to_host(r: &Run, input: &[u8], what: &str) {
    assert_eq!(r.verdict, harness::TC_ACT_OK, "{what}: verdict ({r:?})");
    assert!(r.drops().is_empty(), "{what}: drops {:?}", r.drops());
    assert_eq!(r.frame, input, "{what}: frame modified");
}
