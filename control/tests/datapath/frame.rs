//! Frame builders: Ethernet + IPv4 (options, fragments, any TTL) or IPv6 + TCP/UDP/ICMP
//! with correct checksums (computed by the reference in `check`), plus raw patching for
//! malformed cases.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::check::{csum, pseudo, pseudo6};

pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_VLAN: u16 = 0x8100;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const CODE_PORT_UNREACH: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

/// IP flags: more fragments.
pub const MF: u16 = 0x2000;
pub const DF: u16 = 0x4000;

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    /// `csum: false` sends UDP's "no checksum" zero.
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        csum: bool,
    },
    Icmp {
        ty: u8,
        code: u8,
        /// Identifier + sequence (echo), unused/next-hop MTU (errors).
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

impl L4 {
    /// The segment with its checksum field zero, and that field's offset (none for raw
    /// payloads and checksum-less UDP).
    pub fn segment(&self) -> (Vec<u8>, Option<usize>) {
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
                payload,
            } => {
                let mut t = Vec::with_capacity(20 + payload.len());
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                let ack = if flags & ACK != 0 { 0x0a0b_0c0du32 } else { 0 };
                t.extend_from_slice(&ack.to_be_bytes());
                t.push(5 << 4);
                t.push(*flags);
                t.extend_from_slice(&64240u16.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                t.extend_from_slice(payload);
                (t, Some(16))
            }
            L4::Udp {
                sport,
                dport,
                payload,
                csum,
            } => {
                let mut u = Vec::with_capacity(8 + payload.len());
                u.extend_from_slice(&sport.to_be_bytes());
                u.extend_from_slice(&dport.to_be_bytes());
                u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.extend_from_slice(payload);
                (u, csum.then_some(6))
            }
            L4::Icmp {
                ty,
                code,
                rest,
                payload,
            } => {
                let mut m = vec![*ty, *code, 0, 0];
                m.extend_from_slice(rest);
                m.extend_from_slice(payload);
                (m, Some(2))
            }
            L4::Raw { payload, .. } => (payload.clone(), None),
        }
    }

    pub fn set_payload(&mut self, data: &[u8]) {
        match self {
            L4::Tcp { payload, .. }
            | L4::Udp { payload, .. }
            | L4::Icmp { payload, .. }
            | L4::Raw { payload, .. } => *payload = data.to_vec(),
        }
    }

    /// The checksum to store: UDP sends a computed zero as 0xffff (zero means "none").
    pub fn finish(&self, c: u16) -> u16 {
        match self {
            L4::Udp { .. } if c == 0 => 0xffff,
            _ => c,
        }
    }
}

/// An IPv4 packet to build.
#[derive(Clone, Debug)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset as on the wire (host order).
    pub frag: u16,
    /// Options, padded with zeros (EOL) to a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub l4: L4,
}

impl Ip {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            frag: DF,
            options: Vec::new(),
            l4,
        }
    }

    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
                payload: Vec::new(),
            },
        )
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self::new(
            src,
            dst,
            L4::Udp {
                sport,
                dport,
                payload: b"weir udp payload".to_vec(),
                csum: true,
            },
        )
    }

    pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Self {
        Self::icmp(src, dst, ICMP_ECHO, 0, id)
    }

    pub fn echo_reply(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Self {
        Self::icmp(src, dst, ICMP_ECHO_REPLY, 0, id)
    }

    /// Any ICMP message; `id` fills the identifier field (meaningful for echo only).
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, id: u16) -> Self {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&7u16.to_be_bytes());
        Self::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code,
                rest,
                payload: b"ping payload".to_vec(),
            },
        )
    }

    /// An ICMP error from `src` to `dst` quoting `quoted` (its first `quote_len` bytes, or
    /// all of it), as a router or the destination would send it.
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ty: u8,
        code: u8,
        quoted: &Ip,
        quote_len: Option<usize>,
    ) -> Self {
        let mut q = quoted.bytes();
        if let Some(n) = quote_len {
            q.truncate(n);
        }
        let mut rest = [0u8; 4];
        if ty == ICMP_UNREACH && code == CODE_FRAG_NEEDED {
            rest[2..].copy_from_slice(&1400u16.to_be_bytes());
        }
        let mut ip = Self::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code,
                rest,
                payload: q,
            },
        );
        ip.frag = 0;
        ip
    }

    pub fn raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Self {
        Self::new(
            src,
            dst,
            L4::Raw {
                proto,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn options(mut self, opts: &[u8]) -> Self {
        self.options = opts.to_vec();
        self
    }

    pub fn payload(mut self, data: &[u8]) -> Self {
        self.l4.set_payload(data);
        self
    }

    pub fn no_udp_csum(mut self) -> Self {
        if let L4::Udp { csum, .. } = &mut self.l4 {
            *csum = false;
        }
        self
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 1,
            L4::Raw { proto, .. } => proto,
        }
    }

    fn header_len(&self) -> usize {
        20 + self.options.len().div_ceil(4) * 4
    }

    /// The L4 segment (header + payload) with its checksum.
    pub fn l4_bytes(&self) -> Vec<u8> {
        let (mut b, at) = self.l4.segment();
        if let Some(at) = at {
            let seed = match self.l4 {
                L4::Icmp { .. } => 0,
                _ => pseudo(self.src, self.dst, self.proto(), b.len()),
            };
            let c = self.l4.finish(csum(seed, &b));
            b[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    fn header(&self, frag: u16, l3_payload: usize) -> Vec<u8> {
        let hlen = self.header_len();
        let mut h = Vec::with_capacity(hlen);
        h.push(0x40 | (hlen / 4) as u8);
        h.push(0);
        h.extend_from_slice(&((hlen + l3_payload) as u16).to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        h.resize(hlen, 0);
        let c = csum(0, &h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// The whole IPv4 packet.
    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut p = self.header(self.frag, l4.len());
        p.extend_from_slice(&l4);
        p
    }

    /// The datagram split in two fragments: the first carries `first_len` bytes of L4 data
    /// (a multiple of 8), the second the rest.
    pub fn fragments(&self, first_len: usize) -> (Vec<u8>, Vec<u8>) {
        assert_eq!(first_len % 8, 0);
        let l4 = self.l4_bytes();
        let mut first = self.header(MF, first_len);
        first.extend_from_slice(&l4[..first_len]);
        let mut later = self.header((first_len / 8) as u16, l4.len() - first_len);
        later.extend_from_slice(&l4[first_len..]);
        (first, later)
    }
}

/// An IPv6 packet to build (no extension headers).
#[derive(Clone, Debug)]
pub struct Ip6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub l4: L4,
}

pub const ICMP6_TOO_BIG: u8 = 2;
pub const ICMP6_ECHO: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;

impl Ip6 {
    fn new(src: Ipv6Addr, dst: Ipv6Addr, l4: L4) -> Self {
        Self {
            src,
            dst,
            hop_limit: 64,
            l4,
        }
    }

    pub fn tcp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Self {
        let payload = Vec::new();
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
                payload,
            },
        )
    }

    pub fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        let payload = Vec::new();
        Self::new(
            src,
            dst,
            L4::Udp {
                sport,
                dport,
                payload,
                csum: true,
            },
        )
    }

    /// An ICMPv6 message: `rest` is identifier + sequence (echo) or the MTU (too big).
    pub fn icmp(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, rest: [u8; 4], payload: &[u8]) -> Self {
        let payload = payload.to_vec();
        Self::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code: 0,
                rest,
                payload,
            },
        )
    }

    pub fn echo(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, id: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        Self::icmp(src, dst, ty, [a, b, 0, 1], &[])
    }

    pub fn payload(mut self, data: &[u8]) -> Self {
        self.l4.set_payload(data);
        self
    }

    fn next(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 58,
            L4::Raw { proto, .. } => proto,
        }
    }

    /// The whole IPv6 packet, its upper-layer checksum over the pseudo-header.
    pub fn bytes(&self) -> Vec<u8> {
        let (mut l4, at) = self.l4.segment();
        if let Some(at) = at {
            let c = csum(
                pseudo6(self.src, self.dst, l4.len() as u32, self.next()),
                &l4,
            );
            l4[at..at + 2].copy_from_slice(&self.l4.finish(c).to_be_bytes());
        }
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[self.next(), self.hop_limit]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&l4);
        p
    }
}

/// An Ethernet frame around `payload`.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet in an Ethernet frame.
pub fn ip_frame(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    eth(dst, src, ETH_IP, ip)
}

/// An 802.1Q-tagged IPv4 frame.
pub fn vlan_frame(dst: [u8; 6], src: [u8; 6], vid: u16, ip: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&vid.to_be_bytes());
    p.extend_from_slice(&ETH_IP.to_be_bytes());
    p.extend_from_slice(ip);
    eth(dst, src, ETH_VLAN, &p)
}

/// A minimal IPv6 packet from fdfd:…, to fefe:… (UDP with a non-zero checksum, not checked:
/// it must not matter whether it is right).
pub fn ipv6_frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    p.extend_from_slice(&[0xfd; 16]);
    p.extend_from_slice(&[0xfe; 16]);
    p.extend_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 8, 0x11, 0x11]);
    eth(dst, src, ETH_IPV6, &p)
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet.
pub fn arp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    eth(eth_dst, eth_src, ETH_ARP, &p)
}

pub const BROADCAST: [u8; 6] = [0xff; 6];
