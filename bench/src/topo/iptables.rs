//! iptables rule text (iptables-restore syntax) for the baselines: Docker's rules for a bridge
//! network (DESIGN.md §6), filler published ports in Docker's and netavark's layouts, and
//! filler isolation rules. Pure text, so the shapes are unit-tested.

use std::fmt::Write;

use super::{PUBLISHED, SERVER_IP, SERVER_IP6, SUBNET, SUBNET6, dummy_ip, dummy_ip6, pair, port};

/// What differs between Docker's iptables and ip6tables rules for one bridge network.
pub struct Fam {
    pub subnet: &'static str,
    pub server: &'static str,
    /// Host prefix length (/32, /128).
    pub host_len: u8,
    /// The OUTPUT chain's `! -d` loopback exception.
    pub loopback: &'static str,
    /// Docker never DNATs a link-local source over IPv6 (`iptabler/port.go`).
    pub dnat_from: &'static str,
    pub dummy: fn(usize) -> String,
}

pub const V4: Fam = Fam {
    subnet: SUBNET,
    server: SERVER_IP,
    host_len: 32,
    loopback: "127.0.0.0/8",
    dnat_from: "",
    dummy: dummy_ip,
};

pub const V6: Fam = Fam {
    subnet: SUBNET6,
    server: SERVER_IP6,
    host_len: 128,
    loopback: "::1/128",
    dnat_from: "! -s fe80::/10 ",
    dummy: dummy_ip6,
};

impl Fam {
    /// `addr:port` as DNAT's --to-destination spells it.
    fn to(&self, addr: &str, port: u16) -> String {
        if self.host_len == 128 {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }
    }
}

/// Chain holding filler isolation rules: jumped to after the ESTABLISHED accept, so (like
/// Weir's policy) only new connections walk it — the best placement for iptables.
pub const ISOLATION_CHAIN: &str = "BENCH-ISOLATION";

/// Docker's ruleset for bridge `br` with the server container's ports published, plus
/// Docker 28's raw-table drop of world traffic addressed to a container directly.
/// `f` picks the family: [`V4`] for iptables-restore, [`V6`] for ip6tables-restore.
pub fn docker_base(br: &str, containers: &[&str], f: &Fam) -> String {
    let mut raw = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in containers {
        let _ = writeln!(raw, "-A PREROUTING -d {c}/{} ! -i {br} -j DROP", f.host_len);
    }
    raw.push_str("COMMIT\n");

    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n",
    );
    let _ = writeln!(nat, "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER");
    let _ = writeln!(
        nat,
        "-A OUTPUT ! -d {} -m addrtype --dst-type LOCAL -j DOCKER",
        f.loopback
    );
    let _ = writeln!(
        nat,
        "-A POSTROUTING -s {} ! -o {br} -j MASQUERADE",
        f.subnet
    );
    for (p, proto) in PUBLISHED {
        let _ = writeln!(
            nat,
            "-A POSTROUTING {}",
            docker_hairpin(f.server, *p, proto, f)
        );
    }
    let _ = writeln!(nat, "-A DOCKER -i {br} -j RETURN");
    for (p, proto) in PUBLISHED {
        let _ = writeln!(
            nat,
            "-A DOCKER {}",
            docker_dnat(br, *p, f.server, *p, proto, f)
        );
    }
    nat.push_str("COMMIT\n");

    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n\
         :DOCKER-USER - [0:0]\n",
    );
    let _ = writeln!(filter, ":{ISOLATION_CHAIN} - [0:0]");
    let _ = writeln!(filter, "-A FORWARD -j DOCKER-USER");
    let _ = writeln!(filter, "-A FORWARD -j DOCKER-ISOLATION-STAGE-1");
    let _ = writeln!(
        filter,
        "-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(filter, "-A FORWARD -j {ISOLATION_CHAIN}");
    let _ = writeln!(filter, "-A FORWARD -o {br} -j DOCKER");
    let _ = writeln!(filter, "-A FORWARD -i {br} ! -o {br} -j ACCEPT");
    let _ = writeln!(filter, "-A FORWARD -i {br} -o {br} -j ACCEPT");
    for (p, proto) in PUBLISHED {
        let _ = writeln!(
            filter,
            "-A DOCKER {}",
            docker_accept(br, f.server, *p, proto, f)
        );
    }
    let _ = writeln!(
        filter,
        "-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2"
    );
    let _ = writeln!(filter, "-A DOCKER-ISOLATION-STAGE-1 -j RETURN");
    let _ = writeln!(filter, "-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP");
    let _ = writeln!(filter, "-A DOCKER-ISOLATION-STAGE-2 -j RETURN");
    let _ = writeln!(filter, "-A DOCKER-USER -j RETURN");
    filter.push_str("COMMIT\n");
    format!("{raw}{nat}{filter}")
}

/// Docker's DNAT rule (chain DOCKER of nat) for one published port, without the chain.
pub fn docker_dnat(
    br: &str,
    host_port: u16,
    to: &str,
    to_port: u16,
    proto: &str,
    f: &Fam,
) -> String {
    format!(
        "{}! -i {br} -p {proto} -m {proto} --dport {host_port} -j DNAT --to-destination {}",
        f.dnat_from,
        f.to(to, to_port)
    )
}

/// Docker's ACCEPT (chain DOCKER of filter) for one published port, without the chain.
pub fn docker_accept(br: &str, to: &str, to_port: u16, proto: &str, f: &Fam) -> String {
    format!(
        "-d {to}/{} ! -i {br} -o {br} -p {proto} -m {proto} --dport {to_port} -j ACCEPT",
        f.host_len
    )
}

/// Docker's hairpin MASQUERADE (chain POSTROUTING of nat) for one published port.
pub fn docker_hairpin(to: &str, to_port: u16, proto: &str, f: &Fam) -> String {
    let n = f.host_len;
    format!("-s {to}/{n} -d {to}/{n} -p {proto} -m {proto} --dport {to_port} -j MASQUERADE")
}

/// Filler ports `from..to` published to dummy container `to_ip`, in Docker's layout, placed
/// ahead of the server's own rules (the server is the newest container: its rules come last)
/// but behind the rules Docker keeps first (DOCKER's `-i br -j RETURN`, the subnet MASQUERADE).
pub fn docker_filler_ports(br: &str, from: usize, to: usize, to_ip: &str, f: &Fam) -> String {
    let (mut nat, mut filter) = (String::from("*nat\n"), String::from("*filter\n"));
    for i in from..to {
        let p = port::FILLER_BASE + i as u16;
        let _ = writeln!(
            nat,
            "-I DOCKER 2 {}",
            docker_dnat(br, p, to_ip, p, "tcp", f)
        );
        let _ = writeln!(
            nat,
            "-I POSTROUTING 2 {}",
            docker_hairpin(to_ip, p, "tcp", f)
        );
        let _ = writeln!(
            filter,
            "-I DOCKER 1 {}",
            docker_accept(br, to_ip, p, "tcp", f)
        );
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// Netavark's chains for one container's port forwarding (what `netavark setup` creates).
pub const NETAVARK_DNAT_CHAIN: &str = "NETAVARK-HOSTPORT-DNAT";
pub const NETAVARK_FILLER_CHAIN: &str = "NETAVARK-DN-BENCHFILL";

/// Filler ports `from..to` in netavark's layout: one jump per port in NETAVARK-HOSTPORT-DNAT
/// (inserted first, the server being the newest container) into a per-container chain with
/// netavark's three rules per port.
pub fn netavark_filler_ports(from: usize, to: usize, to_ip: &str, first: bool) -> String {
    let mut s = String::from("*nat\n");
    if first {
        let _ = writeln!(s, ":{NETAVARK_FILLER_CHAIN} - [0:0]");
    }
    for i in from..to {
        let p = port::FILLER_BASE + i as u16;
        let _ = writeln!(
            s,
            "-I {NETAVARK_DNAT_CHAIN} -p tcp -m tcp --dport {p} -m comment --comment \"dnat name: bench id: benchfill\" -j {NETAVARK_FILLER_CHAIN}"
        );
        let _ = writeln!(
            s,
            "-A {NETAVARK_FILLER_CHAIN} -s {SUBNET} -p tcp -m tcp --dport {p} -j NETAVARK-HOSTPORT-SETMARK"
        );
        let _ = writeln!(
            s,
            "-A {NETAVARK_FILLER_CHAIN} -s 127.0.0.1/32 -p tcp -m tcp --dport {p} -j NETAVARK-HOSTPORT-SETMARK"
        );
        let _ = writeln!(
            s,
            "-A {NETAVARK_FILLER_CHAIN} -p tcp -m tcp --dport {p} -j DNAT --to-destination {to_ip}:{p}"
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// Filler isolation rules `from..to`: rule k drops new connections from dummy a to dummy b of
/// pair k (one direction per rule: N iptables rules cover N/2 pairs both ways, while N Weir
/// rules cover N pairs — a count that favours iptables).
pub fn isolation_rules(from: usize, to: usize, f: &Fam) -> String {
    let mut s = String::from("*filter\n");
    for k in from..to {
        let (a, b) = pair(k);
        let n = f.host_len;
        let _ = writeln!(
            s,
            "-A {ISOLATION_CHAIN} -s {}/{n} -d {}/{n} -j DROP",
            (f.dummy)(a),
            (f.dummy)(b)
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// Packets counted by the DROP rules of the raw PREROUTING chain (`iptables -nvxL` output).
pub fn raw_drop_packets(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_base_has_the_rules_of_design_section_6() {
        let r = docker_base("br0", &["10.99.0.2", "10.99.0.3"], &V4);
        for want in [
            ":FORWARD DROP",
            "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
            "-A POSTROUTING -s 10.99.0.0/24 ! -o br0 -j MASQUERADE",
            "-A DOCKER ! -i br0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.99.0.3:8080",
            "-A DOCKER ! -i br0 -p udp -m udp --dport 9000 -j DNAT --to-destination 10.99.0.3:9000",
            "-A DOCKER -d 10.99.0.3/32 ! -i br0 -o br0 -p tcp -m tcp --dport 8080 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2",
            "-A PREROUTING -d 10.99.0.3/32 ! -i br0 -j DROP",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
        assert_eq!(r.matches("COMMIT").count(), 3);
    }

    #[test]
    fn fillers_count_and_ports() {
        let d = docker_filler_ports("br0", 0, 3, "10.99.0.10", &V4);
        assert_eq!(d.matches("-j DNAT").count(), 3);
        assert!(d.contains("--dport 20002 -j DNAT --to-destination 10.99.0.10:20002"));
        let n = netavark_filler_ports(0, 2, "10.99.0.10", true);
        assert_eq!(n.matches(&format!("-I {NETAVARK_DNAT_CHAIN}")).count(), 2);
        assert_eq!(n.matches(&format!("-A {NETAVARK_FILLER_CHAIN}")).count(), 6);
        let i = isolation_rules(0, 3, &V4);
        assert_eq!(i.matches("-j DROP").count(), 3);
        assert!(i.contains("-s 10.99.0.101/32 -d 10.99.0.102/32 -j DROP"));
    }

    #[test]
    fn docker_base6_is_dockers_ip6tables_layout() {
        let r = docker_base("br0", &["fd00:99::2", "fd00:99::3"], &V6);
        for want in [
            ":FORWARD DROP",
            "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER",
            "-A POSTROUTING -s fd00:99::/64 ! -o br0 -j MASQUERADE",
            "-A DOCKER ! -s fe80::/10 ! -i br0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:99::3]:8080",
            "-A DOCKER -d fd00:99::3/128 ! -i br0 -o br0 -p tcp -m tcp --dport 8080 -j ACCEPT",
            "-A POSTROUTING -s fd00:99::3/128 -d fd00:99::3/128 -p tcp -m tcp --dport 8080 -j MASQUERADE",
            "-A PREROUTING -d fd00:99::3/128 ! -i br0 -j DROP",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
        let i = isolation_rules(0, 1, &V6);
        assert!(
            i.contains("-s fd00:99::100/128 -d fd00:99::101/128 -j DROP"),
            "{i}"
        );
    }

    #[test]
    fn raw_counters_are_summed() {
        let listing = "Chain PREROUTING (policy ACCEPT 5 packets, 300 bytes)\n\
            \x20   pkts      bytes target     prot opt in     out     source               destination\n\
            \x20   1000    46000 DROP       0    --  !br0   *       0.0.0.0/0            10.99.0.2\n\
            \x20     23     1058 DROP       0    --  !br0   *       0.0.0.0/0            10.99.0.3\n";
        assert_eq!(raw_drop_packets(listing), 1023);
    }
}
