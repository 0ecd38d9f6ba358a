//! The family seam: what differs between IPv4 and IPv6 for the logic both share (conntrack,
//! SNAT port probing). Implemented on the address types themselves, so generic callers infer
//! the family from the flow key they hold and the per-family maps stay separate (as Cilium's
//! and Calico's do): IPv4's pinned layouts never change for IPv6's sake.

use aya_ebpf::{
    bindings::bpf_redir_neigh,
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use weir_common::{
    addr::{Ipv4Be, Ipv6Be},
    conntrack::{CtEntryOf, FlowKeyOf},
};

use crate::{
    maps::{WEIR_CT, WEIR_CT_SCRATCH, WEIR_CT6, WEIR_CT6_SCRATCH},
    nat, publish,
};

pub trait Family: Copy + 'static {
    /// The family's conntrack map.
    fn ct() -> &'static HashMap<FlowKeyOf<Self>, CtEntryOf<Self>>;
    /// Its per-CPU scratch slots for building entries off the stack.
    fn scratch() -> &'static PerCpuArray<CtEntryOf<Self>>;
    /// The first of its two `WEIR_CT_SWEEP` slots (last run, wanted).
    const SWEEP: u32;
    /// Word-wise equality: `==` on a `[u32; 4]` may become a `bcmp` call the BPF target
    /// lacks.
    fn same(a: &Self, b: &Self) -> bool;
    /// Equality of whole flow keys, as cheap for the verifier as the family allows.
    fn same_flow(a: &FlowKeyOf<Self>, b: &FlowKeyOf<Self>) -> bool;
    /// Whether a socket of the host would receive the replies of a flow leaving as `out`.
    fn socket_holds(ctx: &TcContext, out: &FlowKeyOf<Self>) -> bool;
    /// Whether `addr:port/proto` is a published port.
    fn is_published(addr: &Self, proto: u8, port: u16) -> bool;
    /// Points `bpf_redirect_neigh`'s parameters at next hop `a`.
    fn set_nexthop(nh: &mut bpf_redir_neigh, a: &Self);
}

/// Whether two flow keys are the same tuple.
#[inline(always)]
pub fn same_flow<A: Family>(a: &FlowKeyOf<A>, b: &FlowKeyOf<A>) -> bool {
    A::same_flow(a, b)
}

impl Family for Ipv4Be {
    #[inline(always)]
    fn ct() -> &'static HashMap<FlowKeyOf<Self>, CtEntryOf<Self>> {
        &WEIR_CT
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<CtEntryOf<Self>> {
        &WEIR_CT_SCRATCH
    }
    const SWEEP: u32 = 0;
    #[inline(always)]
    fn same(a: &Self, b: &Self) -> bool {
        a == b
    }
    #[inline(always)]
    fn same_flow(a: &FlowKeyOf<Self>, b: &FlowKeyOf<Self>) -> bool {
        // The derived comparison covers every byte (padding included): LLVM merges it into
        // two 8-byte compares.
        a == b
    }
    #[inline(always)]
    fn socket_holds(ctx: &TcContext, out: &FlowKeyOf<Self>) -> bool {
        nat::host_socket_holds(ctx, out)
    }
    #[inline(always)]
    fn is_published(addr: &Self, proto: u8, port: u16) -> bool {
        publish::is_published(*addr, proto, port)
    }
    #[inline(always)]
    fn set_nexthop(nh: &mut bpf_redir_neigh, a: &Self) {
        nh.nh_family = crate::deliver::AF_INET as u32;
        nh.__bindgen_anon_1.ipv4_nh = *a;
    }
}

impl Family for Ipv6Be {
    #[inline(always)]
    fn ct() -> &'static HashMap<FlowKeyOf<Self>, CtEntryOf<Self>> {
        &WEIR_CT6
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<CtEntryOf<Self>> {
        &WEIR_CT6_SCRATCH
    }
    const SWEEP: u32 = 2;
    #[inline(always)]
    fn same(a: &Self, b: &Self) -> bool {
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
    }
    #[inline(always)]
    fn same_flow(a: &FlowKeyOf<Self>, b: &FlowKeyOf<Self>) -> bool {
        // Branch-free: one verifier path, not one per field.
        let ports = (a.sport ^ b.sport) as u32 | (a.dport ^ b.dport) as u32;
        Self::same(&a.saddr, &b.saddr)
            & Self::same(&a.daddr, &b.daddr)
            & ((ports | (a.proto ^ b.proto) as u32) == 0)
    }
    #[inline(always)]
    fn socket_holds(ctx: &TcContext, out: &FlowKeyOf<Self>) -> bool {
        crate::nat6::host_socket_holds(ctx, out)
    }
    #[inline(always)]
    fn is_published(addr: &Self, proto: u8, port: u16) -> bool {
        publish::is_published6(addr, proto, port)
    }
    #[inline(always)]
    fn set_nexthop(nh: &mut bpf_redir_neigh, a: &Self) {
        nh.nh_family = crate::deliver::AF_INET6 as u32;
        nh.__bindgen_anon_1.ipv6_nh = *a;
    }
}
