//! Checksums through every translation, on many pseudo-random flows (ports, addresses,
//! payload lengths and bytes), and UDP's special cases: a zero checksum means "none" and
//! must stay zero, and a real checksum that computes to zero must go out as 0xffff.

use std::net::Ipv4Addr;

use super::{
    assert_delivered, assert_to_uplink,
    check::{csum, parse, pseudo},
    frame::*,
    harness::*,
    inbound, sent_by,
    topo::*,
};

/// xorshift32: deterministic, so a failure names a reproducible case.
pub struct Rng(pub u32);

impl Rng {
    pub fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub fn port(&mut self) -> u16 {
        1024 + (self.next() % 60000) as u16
    }
}

#[test]
fn random_flows_keep_every_checksum_valid() {
    random_flows(false);
}

/// The same on CHECKSUM_COMPLETE skbs: a run that leaves skb->csum stale fails (EBADMSG).
#[test]
fn random_flows_keep_skb_csum_complete_in_step() {
    random_flows(true);
}

fn random_flows(complete: bool) {
    let mut dp = datapath();
    dp.checksum_complete = complete;
    let mut rng = Rng(0x5eed_1234);
    for i in 0..150u32 {
        let world = Ipv4Addr::new(
            198,
            19,
            (rng.next() % 200) as u8,
            1 + (rng.next() % 250) as u8,
        );
        let (c, sport, dport) = ([&A, &B, &C][i as usize % 3], rng.port(), rng.port());
        let len = (rng.next() % 80) as usize;
        let body = rng.bytes(len);
        let kind = i % 4;
        let build = |src, sp, dst, dp_: u16, reply: bool| -> Ip {
            match kind {
                0 => Ip::tcp(src, sp, dst, dp_, if reply { SYN | ACK } else { SYN }),
                1 => Ip::udp(src, sp, dst, dp_),
                2 => Ip::udp(src, sp, dst, dp_).no_udp_csum(),
                _ if reply => Ip::echo_reply(src, dst, sp),
                _ => Ip::echo(src, dst, sp),
            }
            .payload(&body)
        };
        let what = format!("case {i} kind {kind} {}:{sport} -> {world}:{dport}", c.name);
        // Out (masqueraded) and back.
        let r = dp.from_container(c, &sent_by(c, &build(c.ip, sport, world, dport, false)));
        let o = assert_to_uplink(&r, &what);
        assert_eq!(o.ip.src, UPLINK_IP, "{what}");
        let back = if kind == 3 {
            build(world, o.ip.sport, UPLINK_IP, 0, true)
        } else {
            build(world, dport, UPLINK_IP, o.ip.sport, true)
        };
        let r = dp.uplink_tc(&inbound(&back));
        let i_ = assert_delivered(&r, c, &format!("{what} reply"));
        assert_eq!(i_.ip.dst, c.ip, "{what}");
        if kind == 1 {
            assert_ne!(o.ip.l4_csum, 0, "{what}: a UDP checksum turned into 'none'");
            assert_ne!(
                i_.ip.l4_csum, 0,
                "{what}: a UDP checksum turned into 'none'"
            );
        }
        if kind == 2 {
            assert_eq!((o.ip.l4_csum, i_.ip.l4_csum), (0, 0), "{what}");
        }
    }
    // In through published ports from random clients, and B's answers.
    for i in 0..50u32 {
        let world = Ipv4Addr::new(
            198,
            19,
            1 + (rng.next() % 200) as u8,
            1 + (rng.next() % 250) as u8,
        );
        let sport = rng.port();
        let len = (rng.next() % 80) as usize;
        let body = rng.bytes(len);
        let (ip, reply) = if i % 2 == 0 {
            (
                Ip::tcp(world, sport, UPLINK_IP, 8080, SYN).payload(&body),
                Ip::tcp(B.ip, 80, world, sport, SYN | ACK).payload(&body),
            )
        } else {
            (
                Ip::udp(world, sport, UPLINK_IP, 5353).payload(&body),
                Ip::udp(B.ip, 53, world, sport).payload(&body),
            )
        };
        let what = format!("published case {i} from {world}:{sport}");
        assert_delivered(&dp.uplink_tc(&inbound(&ip)), &B, &what);
        let o = assert_to_uplink(&dp.from_container(&B, &sent_by(&B, &reply)), &what);
        assert_eq!(o.ip.src, UPLINK_IP);
    }
}

/// Two payload bytes that make the UDP checksum of `src -> dst` compute to zero (a sender
/// then transmits 0xffff).
fn payload_summing_to_zero(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut u = Ip::udp(src, sport, dst, dport)
        .no_udp_csum()
        .payload(&[0, 0])
        .l4_bytes();
    let c = csum(pseudo(src, dst, 17, u.len()), &u);
    // Adding the word `c` (= !sum) brings the sum to 0xffff: the checksum becomes 0.
    let n = u.len();
    u[n - 2..].copy_from_slice(&c.to_be_bytes());
    assert_eq!(csum(pseudo(src, dst, 17, u.len()), &u), 0);
    u[n - 2..].to_vec()
}

#[test]
fn udp_checksum_computing_to_zero_goes_out_as_ffff() {
    let mut dp = datapath();
    // Egress: zero after SNAT to the uplink address.
    let body = payload_summing_to_zero(UPLINK_IP, 40000, WORLD, 53);
    let ip = Ip::udp(A.ip, 40000, WORLD, 53).payload(&body);
    let o = assert_to_uplink(&dp.from_container(&A, &sent_by(&A, &ip)), "egress");
    assert_eq!(o.ip.l4_csum, 0xffff, "egress");
    // Published: zero after DNAT to B:53.
    let body = payload_summing_to_zero(WORLD, 50000, B.ip, 53);
    let ip = Ip::udp(WORLD, 50000, UPLINK_IP, 5353).payload(&body);
    let o = assert_delivered(&dp.uplink_tc(&inbound(&ip)), &B, "published");
    assert_eq!(o.ip.l4_csum, 0xffff, "published");
    // And the opposite: a 0xffff checksum that is no longer zero after NAT is a normal value.
    let body = payload_summing_to_zero(A.ip, 40001, WORLD, 53);
    let ip = Ip::udp(A.ip, 40001, WORLD, 53).payload(&body);
    assert_eq!(parse(&sent_by(&A, &ip)).ip.l4_csum, 0xffff);
    let o = assert_to_uplink(&dp.from_container(&A, &sent_by(&A, &ip)), "from 0xffff");
    assert_ne!(o.ip.l4_csum, 0);
}
