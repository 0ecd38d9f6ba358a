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
    addr::Ipv6Be,
    conntrack::{IPPROTO_TCP, IPPROTO_UDP},
    maps::{SockRevKey, SockRevKey6, SockRevValue, SockRevValue6},
    stats::Path,
};

use crate::{
    maps::{WEIR_SOCK_REVNAT, WEIR_SOCK_REVNAT6, config},
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

// IPv6 sockets. A dual-stack socket's IPv4-mapped destination (`::ffff:a.b.c.d`) reaches
// connect6 (TCP, and UDP connect) and recvmsg6, but an unconnected UDP send to one runs
// sendmsg4 (the kernel converts it first): the mapped cases are served by the IPv4 logic on
// the last word, the only one written back (rewriting to another family is refused).

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    to_published6(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    to_published6(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    from_published6(&ctx);
    ALLOW
}

/// `user_ip6` read as four 32-bit loads (the only widths the kernel allows there).
#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> Ipv6Be {
    let sa = ctx.sock_addr;
    // SAFETY: context fields readable for the IPv6 sock_addr attach types.
    unsafe {
        [
            core::ptr::read_volatile(&(*sa).user_ip6[0]),
            core::ptr::read_volatile(&(*sa).user_ip6[1]),
            core::ptr::read_volatile(&(*sa).user_ip6[2]),
            core::ptr::read_volatile(&(*sa).user_ip6[3]),
        ]
    }
}

#[inline(always)]
fn set_user_ip6(ctx: &SockAddrContext, a: &Ipv6Be) {
    let sa = ctx.sock_addr;
    // SAFETY: writable for connect6/sendmsg6/recvmsg6, 32 bits at a time.
    unsafe {
        core::ptr::write_volatile(&mut (*sa).user_ip6[0], a[0]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[1], a[1]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[2], a[2]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[3], a[3]);
    }
}

/// `::ffff:0:0/96`.
#[inline(always)]
fn is_v4_mapped(a: &Ipv6Be) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[inline(always)]
fn to_published6(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: context fields readable (user_port writable) for these attach types.
    let (proto, dport) = unsafe { ((*sa).protocol as u8, (*sa).user_port as u16) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return;
    }
    let daddr = user_ip6(ctx);
    // SAFETY: helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if is_v4_mapped(&daddr) {
        let Some(t) = publish::lookup(daddr[3], proto, dport, true) else {
            return;
        };
        if proto == IPPROTO_UDP {
            let key = SockRevKey {
                cookie,
                addr: t.addr,
                port: t.port,
                _pad: 0,
            };
            let val = SockRevValue {
                addr: daddr[3],
                port: dport,
                _pad: 0,
            };
            let _ = WEIR_SOCK_REVNAT.insert(&key, &val, 0);
        }
        let sa = ctx.sock_addr;
        // SAFETY: as above.
        unsafe {
            core::ptr::write_volatile(&mut (*sa).user_ip6[3], t.addr);
            (*sa).user_port = t.port as u32;
        }
        metrics::path(Path::HostToPublished, 0);
        return;
    }
    let Some(t) = publish::lookup6(&daddr, proto, dport, true) else {
        return;
    };
    if proto == IPPROTO_UDP {
        let key = SockRevKey6 {
            cookie,
            addr: t.addr,
            port: t.port,
            _pad: [0; 6],
        };
        let val = SockRevValue6 {
            addr: daddr,
            port: dport,
            _pad: 0,
        };
        let _ = WEIR_SOCK_REVNAT6.insert(&key, &val, 0);
    }
    set_user_ip6(ctx, &t.addr);
    // SAFETY: as above.
    unsafe { (*sa).user_port = t.port as u32 };
    metrics::path(Path::HostToPublished, 0);
}

#[inline(always)]
fn from_published6(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let saddr = user_ip6(ctx);
    // SAFETY: as above; recvmsg6 may rewrite user_ip6/user_port.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        let port = (*sa).user_port as u16;
        if is_v4_mapped(&saddr) {
            let key = SockRevKey {
                cookie,
                addr: saddr[3],
                port,
                _pad: 0,
            };
            if let Some(v) = WEIR_SOCK_REVNAT.get(&key) {
                core::ptr::write_volatile(&mut (*sa).user_ip6[3], v.addr);
                (*sa).user_port = v.port as u32;
            }
            return;
        }
        let key = SockRevKey6 {
            cookie,
            addr: saddr,
            port,
            _pad: [0; 6],
        };
        if let Some(v) = WEIR_SOCK_REVNAT6.get(&key) {
            let (addr, port) = (v.addr, v.port);
            set_user_ip6(ctx, &addr);
            (*sa).user_port = port as u32;
        }
    }
}
