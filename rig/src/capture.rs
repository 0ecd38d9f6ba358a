//! Seeing packets: tcpdump captures inside a namespace, and crafted frames sent with scapy.

use std::time::Duration;

use crate::{Bg, Netns, Sandbox, text, wait_for};

/// A capture (tcpdump, line per packet) on `dev` in `ns` for `secs` seconds; returns once the
/// capture socket exists. Read it with `Bg::finish_within`.
pub fn live(ns: &Netns, dev: &str, filter: &str, secs: u32) -> Bg {
    let secs = secs.to_string();
    let mut argv = vec!["timeout", secs.as_str(), "tcpdump", "-l", "-n", "-i", dev];
    argv.extend(filter.split_whitespace());
    let bg = ns.spawn_piped(&argv);
    capturing(ns);
    bg
}

/// Waits until a tcpdump in `ns` captures. A fixed sleep is not enough: under load tcpdump
/// took longer than 700 ms to open its socket, and the packets sent meanwhile went uncounted.
fn capturing(ns: &Netns) {
    let up = wait_for(Duration::from_secs(5), || {
        text(&ns.run(&["ss", "-H", "-0", "-p"]).stdout).contains("tcpdump")
    });
    assert!(up, "tcpdump did not start in {}", ns.name);
    // The socket exists; give libpcap a moment to attach its filter and ring.
    std::thread::sleep(Duration::from_millis(300));
}

/// Captures on `dev` in `ns` while `f` runs; returns how many packets matched `filter`.
pub fn count_while(ns: &Netns, dev: &str, filter: &str, f: impl FnOnce()) -> usize {
    let pcap = std::env::temp_dir().join(crate::unique("weir-cap-"));
    let pcap_s = pcap.to_str().unwrap().to_string();
    let cap = ns.spawn(&["tcpdump", "-i", dev, "-n", "-U", "-w", &pcap_s, filter]);
    capturing(ns);
    f();
    std::thread::sleep(Duration::from_millis(500));
    drop(cap.finish_within(Duration::from_millis(1)));
    let o = crate::run(&["tcpdump", "-n", "-r", &pcap_s]);
    let _ = std::fs::remove_file(&pcap);
    text(&o.stdout).lines().count()
}

/// Runs a scapy script in `ns` (`from scapy.all import *` done), asserting it succeeded.
pub fn scapy(ns: &Netns, script: &str) {
    let full = format!("from scapy.all import *\nconf.verb = 0\n{script}\n");
    crate::net::python(ns, &full, &[]);
}

/// The MAC address of `dev` in `ns`.
pub fn mac(ns: &Netns, dev: &str) -> String {
    ns.must(&["cat", &format!("/sys/class/net/{dev}/address")])
        .trim()
        .to_string()
}

/// The MAC of `c`'s host-side veth (its gateway, as `c` sees it).
pub fn host_mac_of(s: &Sandbox, c: &Netns) -> String {
    mac(&s.host, &s.host_if_of(c))
}
