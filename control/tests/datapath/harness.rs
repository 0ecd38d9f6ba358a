//! The harness: the datapath object loaded once per test binary, its maps filled for the
//! topology in `topo` (and reset before every test), and BPF_PROG_TEST_RUN on the three
//! packet programs.
//!
//! Runs happen inside a private network namespace holding the devices the programs look up:
//! the kernel resolves the `__sk_buff` ifindex we pass (and `bpf_fib_lookup` routes) in the
//! namespace of the calling thread. A run never transmits anything: a redirect only sets the
//! target and returns TC_ACT_REDIRECT, which the test run reports as the verdict.
//!
//! Nothing outlives the test process, even when it crashes: the maps are pinned (they are
//! declared pinned) in a private bpffs directory removed right after loading, and the
//! namespace loses its name right after setup — both then live only through our fds.
//! Loading (verification) is what costs time, so all tests share one copy, one at a time.

use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use nix::sched::{CloneFlags, setns};
use weir_common::{
    addr::from_std6,
    config::{Config, Config6},
    conntrack::{CtEntry, CtEntry6, FlowKey, FlowKey6},
    endpoint::{Endpoint, Endpoint6, HostAddr, flags as ep_flags},
    maps::{self as names, FragKey, FragKey6, FragPorts},
    policy::{NetPair, PolicyKey},
    publish::{PublishKey, PublishKey6, PublishTarget, PublishTarget6},
    stats::{
        Counter, DROP_BASE, DropReason, EVENT_BASE, Event, HOOKS, Hook, PATH_BASE, Path,
        STATS_ENTRIES,
    },
};

use super::topo::{self, Container};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// A bpffs directory of our own, removed with everything pinned in it.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Puts the calling thread into a network namespace until dropped.
struct InNetns {
    home: File,
}

impl InNetns {
    fn enter(ns: &File) -> Self {
        let home = File::open("/proc/thread-self/ns/net").expect("own netns");
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        Self { home }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns back");
    }
}

/// What a program did with one frame.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The XDP metadata the program put in front of it (XDP only: the kernel returns it
    /// before the frame; uplink_xdp never changes the frame's own length).
    pub meta: Vec<u8>,
    /// Counters that moved: WEIR_STATS index -> packets.
    pub moved: BTreeMap<u32, u64>,
    /// The same counters' bytes: WEIR_STATS index -> bytes.
    pub moved_bytes: BTreeMap<u32, u64>,
}

impl Run {
    /// The drops counted by this run, as (reason, hook).
    pub fn drops(&self) -> Vec<(DropReason, Hook)> {
        self.moved
            .keys()
            .filter(|&&i| i >= DROP_BASE)
            .map(|&i| {
                let r = DropReason::from_u32((i - DROP_BASE) / HOOKS).expect("reason");
                let h = Hook::from_u32((i - DROP_BASE) % HOOKS).expect("hook");
                (r, h)
            })
            .collect()
    }

    pub fn paths(&self) -> Vec<Path> {
        self.moved
            .keys()
            .filter(|&&i| (PATH_BASE..EVENT_BASE).contains(&i))
            .map(|&i| Path::from_u32(i - PATH_BASE).expect("path"))
            .collect()
    }

    /// The bytes this run counted on `path`.
    pub fn path_bytes(&self, path: Path) -> u64 {
        let i = PATH_BASE + path as u32;
        self.moved_bytes.get(&i).copied().unwrap_or(0)
    }

    pub fn events(&self) -> Vec<Event> {
        self.moved
            .keys()
            .filter(|&&i| (EVENT_BASE..DROP_BASE).contains(&i))
            .map(|&i| Event::from_u32(i - EVENT_BASE).expect("event"))
            .collect()
    }

    /// Asserts a TC drop counted for `reason` at `hook`.
    pub fn assert_shot(&self, reason: DropReason, hook: Hook, what: &str) {
        assert_eq!(self.verdict, TC_ACT_SHOT, "{what}: verdict");
        assert_eq!(self.drops(), vec![(reason, hook)], "{what}: drop counters");
    }
}

pub struct Datapath {
    bpf: Ebpf,
    /// The namespace, kept alive by this fd alone.
    ns_file: File,
    /// ifindex of each container's host-side veth, by container name.
    ifindex: BTreeMap<&'static str, u32>,
    pub uplink_ifindex: u32,
    /// The `uplink_xdp` loaded: [`control::datapath::UPLINK_XDP_PLAIN`] where the kernel
    /// refuses the metadata helper (then no frame carries the marker).
    pub xdp: &'static str,
    /// Run TC programs on a CHECKSUM_COMPLETE skb (BPF_F_TEST_SKB_CHECKSUM_COMPLETE: the
    /// kernel seeds skb->csum, as a NIC that sums every frame does, and fails the run with
    /// EBADMSG if the program leaves it out of step with the bytes). Reset per test.
    pub checksum_complete: bool,
}

static SHARED: OnceLock<Mutex<Datapath>> = OnceLock::new();

/// The datapath, with its maps as `topo` describes them and no flow, for this test alone.
pub fn datapath() -> MutexGuard<'static, Datapath> {
    let m = SHARED.get_or_init(|| Mutex::new(Datapath::new()));
    // A test that panicked left the maps in some state; reset() starts over anyway.
    let mut dp = m.lock().unwrap_or_else(|p| p.into_inner());
    dp.reset();
    dp
}

fn ifindex_of(ns: &rig::Netns, dev: &str) -> u32 {
    let out = ns.must(&["cat", &format!("/sys/class/net/{dev}/ifindex")]);
    out.trim().parse().expect("ifindex")
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace with `topo`'s veths, gateways, uplink, routes and next hop, kept alive by the
/// returned fd alone. Also returns the host-side veths' ifindexes by container name, and the
/// uplink's.
fn topology_netns() -> (File, BTreeMap<&'static str, u32>, u32) {
    let ns = rig::Netns::new(&rig::unique("wu"));
    let ip = |args: &str| {
        let mut v = vec!["ip", "-n", ns.name.as_str()];
        v.extend(args.split_whitespace());
        rig::must(&v);
    };
    // bpf_fib_lookup answers FWD_DISABLED for an ingress device without forwarding; the
    // control plane enables it on host-side veths.
    ns.must(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
    let mut ifindex = BTreeMap::new();
    for c in topo::CONTAINERS {
        let (h, p) = (format!("h{}", c.name), format!("p{}", c.name));
        let (hm, pm) = (mac_str(&c.host_mac), mac_str(&c.mac));
        ip(&format!(
            "link add {h} address {hm} type veth peer name {p} address {pm}"
        ));
        ip(&format!("link set {h} up"));
        ip(&format!("link set {p} up"));
        ifindex.insert(c.name, ifindex_of(&ns, &h));
    }
    for (_, _, _, gw) in topo::NETWORKS {
        ip(&format!("addr add {gw}/32 dev lo"));
    }
    let (um, nm) = (mac_str(&topo::UPLINK_MAC), mac_str(&topo::NEXTHOP_MAC));
    ip(&format!(
        "link add up0 address {um} type veth peer name ext0 address {nm}"
    ));
    ip("link set up0 up");
    ip("link set ext0 up");
    ip(&format!("addr add {}/24 dev up0", topo::UPLINK_IP));
    ip(&format!("route add default via {}", topo::NEXTHOP));
    let unresolved = Ipv4Addr::from(u32::from(topo::WORLD_UNRESOLVED) & !0xff);
    ip(&format!(
        "route add {unresolved}/24 via {}",
        topo::NEXTHOP_UNRESOLVED
    ));
    ip(&format!(
        "neigh replace {} lladdr {nm} nud permanent dev up0",
        topo::NEXTHOP
    ));
    // IPv6: the uplink's global address, a default route through a resolved next hop, and
    // forwarding, which the IPv6 FIB lookup asks of the ingress device (this namespace is
    // the test's own).
    ns.must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ip(&format!("addr add {}/64 dev up0 nodad", topo::UPLINK_IP6));
    ip(&format!(
        "neigh replace {} lladdr {nm} nud permanent dev up0",
        topo::NEXTHOP6
    ));
    ip(&format!("route add default via {} dev up0", topo::NEXTHOP6));
    let uplink_ifindex = ifindex_of(&ns, "up0");
    let ns_file = File::open(ns.path()).expect("netns file");
    drop(ns); // only its name: the namespace lives on through ns_file
    (ns_file, ifindex, uplink_ifindex)
}

/// The eBPF object with its maps pinned in a directory of its own (removed at once: the
/// maps live on through the object's fds), every program loaded and the tail calls filled.
/// Also returns which `uplink_xdp` the kernel took (the plain one where it refuses the
/// metadata helper).
fn load_programs() -> (Ebpf, &'static str) {
    control::datapath::ensure_bpffs().expect("bpffs");
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/{}",
        rig::unique("weir-unit-")
    )));
    std::fs::create_dir_all(&pins.0).expect("pin dir");
    let mut bpf = EbpfLoader::new()
        .default_map_pin_directory(&pins.0)
        // Small maps: these tests hold a handful of flows.
        .map_max_entries(names::CONNTRACK, 1024)
        .map_max_entries(names::CONNTRACK6, 1024)
        .map_max_entries(names::POLICY, 1024)
        .map_max_entries(names::PUBLISH, 1024)
        .map_max_entries(names::ENDPOINTS, 1024)
        .map_max_entries(names::SOCK_REVNAT, 1024)
        .map_max_entries(names::FRAGMENTS, 1024)
        .load(control::datapath::OBJECT)
        .expect("loading the eBPF object");
    drop(pins);
    let tails = control::datapath::TAILS.map(|(name, _)| name);
    let entries = [
        control::datapath::FROM_CONTAINER,
        control::datapath::UPLINK_TC,
        control::datapath::TO_CONTAINER,
    ];
    for name in entries.into_iter().chain(tails) {
        let p: &mut SchedClassifier = bpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
    }
    control::datapath::fill_tails(&mut bpf).expect("filling the tail-call slots");
    let xdp = control::datapath::load_uplink_xdp(&mut bpf)
        .unwrap_or_else(|e| panic!("loading uplink_xdp: {e}"));
    (bpf, xdp)
}

// Methods are named after the programs they run (`from_container` is not a conversion).
#[allow(clippy::wrong_self_convention)]
impl Datapath {
    /// Own namespace, own maps, programs loaded.
    fn new() -> Self {
        let (ns_file, ifindex, uplink_ifindex) = topology_netns();
        let (bpf, xdp) = load_programs();
        Self {
            bpf,
            xdp,
            checksum_complete: false,
            ns_file,
            ifindex,
            uplink_ifindex,
        }
    }

    /// Empties every map and writes the topology again.
    fn reset(&mut self) {
        self.clear::<FlowKey, CtEntry>(names::CONNTRACK);
        self.clear::<FragKey, FragPorts>(names::FRAGMENTS);
        self.clear::<PolicyKey, u32>(names::POLICY);
        self.clear::<NetPair, u32>(names::NET_LINKS);
        self.clear::<PublishKey, PublishTarget>(names::PUBLISH);
        self.clear::<u32, Endpoint>(names::ENDPOINTS);
        self.clear::<u32, HostAddr>(names::HOST_ADDRS);
        self.clear::<[u32; 4], Endpoint6>(names::ENDPOINTS6);
        self.clear::<u32, [u32; 4]>(names::LINKS6);
        self.clear::<[u32; 4], HostAddr>(names::HOST_ADDRS6);
        self.clear::<FlowKey6, CtEntry6>(names::CONNTRACK6);
        self.clear::<PublishKey6, PublishTarget6>(names::PUBLISH6);
        self.clear::<FragKey6, FragPorts>(names::FRAGMENTS6);
        self.clear_trie::<u32>(names::SUBNETS);
        self.clear_trie::<[u32; 4]>(names::SUBNETS6);
        self.checksum_complete = false;
        self.fill_maps();
    }

    fn clear_trie<K: aya::Pod>(&mut self, name: &str) {
        let mut t: LpmTrie<_, K, u32> = self.map(name);
        let keys: Vec<Key<K>> = t.keys().filter_map(|k| k.ok()).collect();
        for k in keys {
            t.remove(&k).unwrap();
        }
    }

    fn clear<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) {
        let mut m: HashMap<_, K, V> = self.map(name);
        let keys: Vec<K> = m.keys().filter_map(|k| k.ok()).collect();
        for k in keys {
            m.remove(&k).unwrap();
        }
    }

    fn fill_maps(&mut self) {
        let cfg = Config {
            uplink_ifindex: self.uplink_ifindex,
            uplink_ip: be(topo::UPLINK_IP),
            host_port_min: topo::HOST_EPHEMERAL.0,
            host_port_max: topo::HOST_EPHEMERAL.1,
            ..Config::default()
        };
        let mut a: Array<_, Config> = self.map(names::CONFIG);
        a.set(0, cfg, 0).unwrap();
        let up6 = from_std6(topo::UPLINK_IP6);
        let mut a6: Array<_, Config6> = self.map(names::CONFIG6);
        a6.set(
            0,
            Config6 {
                uplink_ip6: up6,
                ..Config6::default()
            },
            0,
        )
        .unwrap();
        let mut h6: HashMap<_, [u32; 4], HostAddr> = self.map(names::HOST_ADDRS6);
        h6.insert(up6, HostAddr::default(), 0).unwrap();

        let eps: Vec<(u32, Endpoint)> = topo::CONTAINERS
            .iter()
            .map(|c| (be(c.ip), self.endpoint(c)))
            .collect();
        let mut m: HashMap<_, u32, Endpoint> = self.map(names::ENDPOINTS);
        for (k, v) in eps {
            m.insert(k, v, 0).unwrap();
        }
        let mut h: HashMap<_, u32, HostAddr> = self.map(names::HOST_ADDRS);
        h.insert(be(topo::UPLINK_IP), HostAddr::default(), 0)
            .unwrap();
        for (_, _, _, gw) in topo::NETWORKS {
            h.insert(be(gw), HostAddr::default(), 0).unwrap();
        }
        let mut t: LpmTrie<_, u32, u32> = self.map(names::SUBNETS);
        for (id, net, plen, _) in topo::NETWORKS {
            t.insert(&Key::new(plen, be(net)), id, 0).unwrap();
        }
        for (host, proto, port, c, cport) in topo::PUBLISHED {
            self.publish(host, proto, port, c, cport);
        }
    }

    /// The `Endpoint` the control plane would write for `c`.
    pub fn endpoint(&self, c: &Container) -> Endpoint {
        Endpoint {
            ifindex: self.ifindex_of(c),
            identity: c.identity,
            network: c.network,
            flags: if c.internal { ep_flags::INTERNAL } else { 0 },
            gateway: be(c.gateway),
            mac: c.mac,
            host_mac: c.host_mac,
        }
    }

    pub fn ifindex_of(&self, c: &Container) -> u32 {
        self.ifindex[c.name]
    }

    fn map<'a, M>(&'a mut self, name: &str) -> M
    where
        M: TryFrom<&'a mut aya::maps::Map>,
        <M as TryFrom<&'a mut aya::maps::Map>>::Error: std::fmt::Debug,
    {
        let m = self
            .bpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("map {name}"));
        M::try_from(m).expect("map type")
    }

    pub fn publish(&mut self, host: Ipv4Addr, proto: u8, port: u16, c: &Container, cport: u16) {
        let mut p: HashMap<_, PublishKey, PublishTarget> = self.map(names::PUBLISH);
        p.insert(
            PublishKey::new(be(host), port.to_be(), proto),
            PublishTarget {
                addr: be(c.ip),
                port: cport.to_be(),
                _pad: 0,
                identity: c.identity,
            },
            0,
        )
        .unwrap();
    }

    /// Writes a policy rule (`port` 0 and `proto` 0 for any).
    pub fn rule(&mut self, src: u32, dst: u32, proto: u8, port: u16, verdict: u32) {
        let mut p: HashMap<_, PolicyKey, u32> = self.map(names::POLICY);
        p.insert(PolicyKey::new(src, dst, proto, port.to_be()), verdict, 0)
            .unwrap();
    }

    pub fn connect_networks(&mut self, a: u32, b: u32) {
        let mut l: HashMap<_, NetPair, u32> = self.map(names::NET_LINKS);
        l.insert(NetPair::new(a, b), 1, 0).unwrap();
    }

    /// The conntrack entry stored under `key`.
    /// Gives container `c` the IPv6 address `ip6`, as the control plane does for a container
    /// of a dual-stack network (its endpoint under that address, its link's address), and
    /// makes `host6` an address of the host (a gateway).
    pub fn give_ipv6(&mut self, c: &Container, ip6: Ipv6Addr, host6: Ipv6Addr) {
        let a = from_std6(ip6);
        let ep = Endpoint6 {
            ep: self.endpoint(c),
            gateway6: from_std6(host6),
        };
        let ifindex = self.ifindex_of(c);
        let mut m: HashMap<_, [u32; 4], Endpoint6> = self.map(names::ENDPOINTS6);
        m.insert(a, ep, 0).unwrap();
        let mut l: HashMap<_, u32, [u32; 4]> = self.map(names::LINKS6);
        l.insert(ifindex, a, 0).unwrap();
        let mut h: HashMap<_, [u32; 4], HostAddr> = self.map(names::HOST_ADDRS6);
        h.insert(from_std6(host6), HostAddr::default(), 0).unwrap();
        let mut t: LpmTrie<_, [u32; 4], u32> = self.map(names::SUBNETS6);
        let net = Ipv6Addr::from(u128::from(ip6) & !((1u128 << 64) - 1));
        t.insert(&Key::new(64, from_std6(net)), c.network, 0)
            .unwrap();
    }

    /// Publishes `[host]:port` (`::` for every host address) on `c`'s IPv6 address `ip6`.
    pub fn publish6(
        &mut self,
        host: Ipv6Addr,
        proto: u8,
        port: u16,
        ip6: Ipv6Addr,
        cport: u16,
        c: &Container,
    ) {
        let mut p: HashMap<_, PublishKey6, PublishTarget6> = self.map(names::PUBLISH6);
        p.insert(
            PublishKey6::new(from_std6(host), port.to_be(), proto),
            PublishTarget6 {
                addr: from_std6(ip6),
                port: cport.to_be(),
                _pad: 0,
                identity: c.identity,
            },
            0,
        )
        .unwrap();
    }

    /// The IPv6 conntrack entries.
    pub fn ct6_len(&mut self) -> usize {
        let m: HashMap<_, FlowKey6, CtEntry6> = self.map(names::CONNTRACK6);
        m.keys().count()
    }

    pub fn ct(&mut self, key: FlowKey) -> Option<CtEntry> {
        let m: HashMap<_, FlowKey, CtEntry> = self.map(names::CONNTRACK);
        m.get(&key, 0).ok()
    }

    /// Zeroes the configuration, as it is before `control init` writes it.
    pub fn wipe_config(&mut self) {
        let mut a: Array<_, Config> = self.map(names::CONFIG);
        a.set(0, <Config as bytemuck::Zeroable>::zeroed(), 0)
            .unwrap();
    }

    pub fn ct_len(&mut self) -> usize {
        let m: HashMap<_, FlowKey, CtEntry> = self.map(names::CONNTRACK);
        m.keys().count()
    }

    /// Empties both families' conntrack maps.
    pub fn flush_ct(&mut self) {
        self.clear::<FlowKey, CtEntry>(names::CONNTRACK);
        self.clear::<FlowKey6, CtEntry6>(names::CONNTRACK6);
    }

    /// Every counter as (packets, bytes), summed over the CPUs.
    fn stats(&mut self) -> Vec<(u64, u64)> {
        let s: PerCpuArray<_, Counter> = self.map(names::STATS);
        (0..STATS_ENTRIES)
            .map(|i| {
                let per_cpu = s.get(&i, 0).unwrap();
                (
                    per_cpu.iter().map(|c| c.packets).sum(),
                    per_cpu.iter().map(|c| c.bytes).sum(),
                )
            })
            .collect()
    }

    fn run(&mut self, prog: &str, frame: &[u8], ctx: Option<&[u8]>) -> std::io::Result<Run> {
        let before = self.stats();
        let mut out = vec![0u8; frame.len() + 256];
        let xdp = matches!(self.bpf.program(prog), Some(aya::programs::Program::Xdp(_)));
        let (verdict, size_out) = {
            let _in = InNetns::enter(&self.ns_file);
            if self.checksum_complete && !xdp {
                let p: &SchedClassifier = self.bpf.program(prog).unwrap().try_into().unwrap();
                let fd = p.fd().expect("loaded").as_fd().as_raw_fd();
                test_run_complete(fd, frame, &mut out, ctx.unwrap_or(&[]))?
            } else {
                self.test_run(prog, frame, &mut out, ctx)?
            }
        };
        out.truncate(size_out as usize);
        let meta = if xdp && out.len() > frame.len() {
            out.drain(..out.len() - frame.len()).collect()
        } else {
            Vec::new()
        };
        let after = self.stats();
        let delta = |part: fn(&(u64, u64)) -> u64| -> BTreeMap<u32, u64> {
            before
                .iter()
                .zip(&after)
                .enumerate()
                .filter(|(_, (b, a))| part(a) != part(b))
                .map(|(i, (b, a))| (i as u32, part(a) - part(b)))
                .collect()
        };
        Ok(Run {
            verdict,
            frame: out,
            meta,
            moved: delta(|c| c.0),
            moved_bytes: delta(|c| c.1),
        })
    }

    /// BPF_PROG_TEST_RUN through aya.
    fn test_run(
        &self,
        prog: &str,
        frame: &[u8],
        out: &mut [u8],
        ctx: Option<&[u8]>,
    ) -> std::io::Result<(u32, u32)> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ctx_in: ctx,
            ..TestRunOptions::default()
        };
        let r = match self.bpf.program(prog).unwrap() {
            aya::programs::Program::Xdp(x) => x.test_run(opts),
            aya::programs::Program::SchedClassifier(c) => c.test_run(opts),
            _ => unreachable!(),
        };
        let res = r.map_err(|e| match e {
            aya::programs::ProgramError::SyscallError(s) => s.io_error,
            other => std::io::Error::other(other.to_string()),
        })?;
        Ok((res.return_value, res.data_size_out))
    }

    /// A `__sk_buff` context up to `ifindex`: the kernel resolves `ifindex` as the device the
    /// packet is on (and `ingress_ifindex` as where it came in).
    fn skb_ctx(ifindex: u32) -> Vec<u8> {
        let mut ctx = vec![0u8; 44];
        ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes()); // ingress_ifindex
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes()); // ifindex
        ctx
    }

    /// `from_container` on the host-side veth of `c`.
    pub fn from_container(&mut self, c: &Container, frame: &[u8]) -> Run {
        let ifindex = self.ifindex_of(c);
        self.from_container_on(ifindex, frame)
    }

    pub fn from_container_on(&mut self, ifindex: u32, frame: &[u8]) -> Run {
        self.try_from_container_on(ifindex, frame)
            .expect("BPF_PROG_TEST_RUN from_container")
    }

    pub fn try_from_container_on(&mut self, ifindex: u32, frame: &[u8]) -> std::io::Result<Run> {
        let ctx = Self::skb_ctx(ifindex);
        self.run(control::datapath::FROM_CONTAINER, frame, Some(&ctx))
    }

    pub fn uplink_tc(&mut self, frame: &[u8]) -> Run {
        self.try_uplink_tc(frame)
            .expect("BPF_PROG_TEST_RUN uplink_tc")
    }

    pub fn try_uplink_tc(&mut self, frame: &[u8]) -> std::io::Result<Run> {
        let ctx = Self::skb_ctx(self.uplink_ifindex);
        self.run(control::datapath::UPLINK_TC, frame, Some(&ctx))
    }

    /// `to_container` on the egress of `c`'s host-side veth, for a packet that came in on
    /// `came_in_on` (0: sent by the host itself).
    pub fn to_container(&mut self, c: &Container, came_in_on: u32, frame: &[u8]) -> Run {
        let mut ctx = Self::skb_ctx(self.ifindex_of(c));
        ctx[36..40].copy_from_slice(&came_in_on.to_ne_bytes());
        self.run(control::datapath::TO_CONTAINER, frame, Some(&ctx))
            .expect("BPF_PROG_TEST_RUN to_container")
    }

    pub fn uplink_xdp(&mut self, frame: &[u8]) -> Run {
        self.try_uplink_xdp(frame)
            .expect("BPF_PROG_TEST_RUN uplink_xdp")
    }

    pub fn try_uplink_xdp(&mut self, frame: &[u8]) -> std::io::Result<Run> {
        self.run(self.xdp, frame, None)
    }
}

/// A flow key as the datapath stores it (addresses and ports in network order).
pub fn key(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> FlowKey {
    FlowKey::new(be(src), be(dst), sport.to_be(), dport.to_be(), proto)
}

/// BPF_PROG_TEST_RUN of the TC program `fd` on a CHECKSUM_COMPLETE skb, by hand: aya's
/// options cannot carry the flag (Linux 6.11+). Returns the verdict and the output's size.
fn test_run_complete(
    fd: i32,
    frame: &[u8],
    out: &mut [u8],
    ctx: &[u8],
) -> std::io::Result<(u32, u32)> {
    /// `union bpf_attr`'s `test` member.
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_F_TEST_SKB_CHECKSUM_COMPLETE: u32 = 1 << 2;
    let mut a = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_SKB_CHECKSUM_COMPLETE,
        ..TestAttr::default()
    };
    // SAFETY: the attribute points at buffers that outlive the call, with their true sizes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut a as *mut TestAttr,
            std::mem::size_of::<TestAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((a.retval, a.data_size_out))
}
