//! The machine the numbers come from: kernel, CPUs, and how busy it was (others share it).

use serde::Serialize;

#[derive(Serialize, Clone)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    /// 1-minute load average when the run started and ended: above ~0.5 before the start means
    /// someone else was using the CPU, and absolute figures are lower than they could be.
    pub load_start: f64,
    pub load_end: f64,
    pub iptables: String,
    pub netavark: String,
}

impl Machine {
    pub fn probe() -> Self {
        Self {
            kernel: first_line(&rig::text(&rig::run(&["uname", "-r"]).stdout)),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            memory_gib: std::fs::read_to_string("/proc/meminfo")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
                .unwrap_or(0.0),
            load_start: load_average(),
            load_end: 0.0,
            iptables: first_line(&rig::text(&rig::run(&["iptables", "-V"]).stdout)),
            netavark: first_line(&rig::text(
                &rig::run(&[crate::topo::netavark::BINARY, "--version"]).stdout,
            )),
        }
    }
}

pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
