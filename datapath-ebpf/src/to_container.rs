//! `to_container`: TC egress on every host-side veth, i.e. what the host stack itself sends
//! into a container.
//!
//! Weir delivers every packet it forwards with `bpf_redirect_peer`, which never passes this
//! hook. What does pass it is the host's own traffic — its sockets, the ICMP errors it
//! generates, all with no ingress device — or a packet the kernel forwarded from an interface
//! Weir does not watch: another NIC, the uplink of a host that forwards (Docker hosts set
//! ip_forward=1), a source-routed packet. Those skipped every check Weir makes and are
//! dropped, so the kernel never forwards into a container, whatever the host's sysctls.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{
    conntrack::FlowKey,
    stats::{DropReason, Hook},
};

use crate::{
    context::{PacketCtx, ifindex},
    metrics::{self, Drop},
    packet::{self, ETH_P_IP},
};

#[classifier]
pub fn to_container(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let came_in_on = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if came_in_on == 0 {
        return TC_ACT_OK as i32;
    }
    let flow = match packet::ether_type(&ctx) {
        Some(ETH_P_IP) => packet::ipv4_addrs(&ctx),
        _ => None,
    }
    .unwrap_or(FlowKey::new(0, 0, 0, 0, 0));
    metrics::dropped(
        Drop::flow(DropReason::KernelForwarded, flow),
        Hook::ToContainer,
        ifindex(&ctx),
        ctx.packet_len(),
    );
    TC_ACT_SHOT as i32
}
