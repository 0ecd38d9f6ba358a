//! Published ports reached from the host itself (`curl 127.0.0.1:8080`, `curl <host-ip>:8080`)
//! never cross an ingress hook, so they are translated once per socket at connect/sendmsg
//! time (cgroup sock_addr hooks on the root cgroup) instead of per packet. The hooks are global:
//! they act only in the host namespace this instance serves (netns cookie).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weir_common::{
    conntrack::{IPPROTO_TCP, IPPROTO_UDP},
    maps::{SockRevKey, SockRevValue},
    stats::Path,
};

use crate::{
    maps::{WEIR_SOCK_REVNAT, config},
    metrics, publish,
};

/// Allow the syscall (sock_addr programs return 1 to allow, 0 to refuse).
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    from_published(&ctx);
    ALLOW
}

#[inline(always)]
fn in_our_netns(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = config() else { return false };
    // SAFETY: helper valid for sock_addr programs.
    cfg.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == cfg.netns_cookie
}

/// Points the socket at the container behind a published host address and port.
#[inline(always)]
fn to_published(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: context fields readable and (user_ip4/user_port) writable for these attach types.
    unsafe {
        let proto = (*sa).protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return;
        }
        let daddr = (*sa).user_ip4;
        let dport = (*sa).user_port as u16;
        let Some(t) = publish::lookup(daddr, proto, dport, true) else {
            return;
        };
        if proto == IPPROTO_UDP {
            // Replies must look like they come from the address the application used.
            let key = SockRevKey {
                cookie: bpf_get_socket_cookie(ctx.as_ptr()),
                addr: t.addr,
                port: t.port,
                _pad: 0,
            };
            let val = SockRevValue {
                addr: daddr,
                port: dport,
                _pad: 0,
            };
            let _ = WEIR_SOCK_REVNAT.insert(&key, &val, 0);
        }
        (*sa).user_ip4 = t.addr;
        (*sa).user_port = t.port as u32;
    }
    metrics::path(Path::HostToPublished, 0);
}

/// Restores the published address as the source of datagrams a container answered.
#[inline(always)]
fn from_published(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: as above; recvmsg4 may rewrite user_ip4/user_port.
    unsafe {
        let key = SockRevKey {
            cookie: bpf_get_socket_cookie(ctx.as_ptr()),
            addr: (*sa).user_ip4,
            port: (*sa).user_port as u16,
            _pad: 0,
        };
        if let Some(v) = WEIR_SOCK_REVNAT.get(&key) {
            (*sa).user_ip4 = v.addr;
            (*sa).user_port = v.port as u32;
        }
    }
}
