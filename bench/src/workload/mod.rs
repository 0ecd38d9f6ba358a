//! Workloads and the interleaving that makes their ratios meaningful: every case is measured
//! in rounds, and each round measures every topology back to back (starting with a different
//! one each round), so slow drift of a shared VM hits all topologies alike.

pub mod connrate;
pub mod docker;
pub mod latency;
pub mod packets;
pub mod throughput;

use std::time::Instant;

use anyhow::Result;

use crate::{
    interrupt,
    plan::Plan,
    results::{Workload, summarize},
    topo::Topology,
};

pub type Topos = Vec<Box<dyn Topology>>;

/// What one measurement of one topology gave.
pub enum Outcome {
    /// One value per case.
    Values(Vec<f64>),
    /// The topology has no such thing to measure (why).
    NotApplicable(&'static str),
}

/// Shared by the workloads: the plan and progress on the terminal.
pub struct Runner {
    pub plan: Plan,
    start: Instant,
    done: usize,
}

impl Runner {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            start: Instant::now(),
            done: 0,
        }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    pub fn heading(&self, what: &str) {
        eprintln!("[{}] == {what}", self.clock());
    }

    pub fn note(&self, what: &str) {
        eprintln!("[{}]    {what}", self.clock());
    }

    fn clock(&self) -> String {
        let s = self.start.elapsed().as_secs();
        format!("{:2}m{:02}s", s / 60, s % 60)
    }

    /// Measures `cases` (names; `measure` returns one value per case, in order) on every
    /// topology, `rounds` times, interleaved. A failed measurement is recorded as an error on
    /// its cases and the run goes on; an interrupt stops it.
    pub fn interleave(
        &mut self,
        w: &mut Workload,
        topos: &mut Topos,
        cases: &[String],
        rounds: usize,
        mut measure: impl FnMut(&mut dyn Topology) -> Result<Outcome>,
    ) -> Result<()> {
        let n = topos.len();
        for r in 0..rounds {
            for i in 0..n {
                interrupt::check()?;
                let t = &mut topos[(r + i) % n];
                let label = t.label();
                let res = measure(t.as_mut());
                interrupt::check()?;
                self.done += 1;
                match res {
                    Ok(Outcome::NotApplicable(why)) => {
                        eprintln!(
                            "[{}] {:4} {:<11} {:<40} {:<9} n/a ({why})",
                            self.clock(),
                            self.done,
                            w.id,
                            cases.join(" / "),
                            label
                        );
                        for c in cases {
                            w.case(c).not_applicable(label, why);
                        }
                    }
                    Ok(Outcome::Values(values)) => {
                        let shown: Vec<String> = values.iter().map(|v| fmt_value(*v)).collect();
                        eprintln!(
                            "[{}] {:4} {:<11} {:<40} {:<9} {} {}",
                            self.clock(),
                            self.done,
                            w.id,
                            cases.join(" / "),
                            label,
                            shown.join(" / "),
                            w.unit
                        );
                        for (c, v) in cases.iter().zip(values) {
                            w.case(c).push(label, v);
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "[{}] {:4} {:<11} {:<40} {:<9} FAILED: {e:#}",
                            self.clock(),
                            self.done,
                            w.id,
                            cases.join(" / "),
                            label
                        );
                        for c in cases {
                            w.case(c).error(label, format!("{e:#}"));
                        }
                    }
                }
            }
        }
        for c in cases {
            let line: Vec<String> = topos
                .iter()
                .filter_map(|t| {
                    let s = summarize(w.case(c).samples.get(t.label())?)?;
                    Some(format!("{} {}", t.label(), fmt_value(s.median)))
                })
                .collect();
            self.note(&format!("{c}: medians {}", line.join(", ")));
        }
        Ok(())
    }
}

/// A number with about three significant digits.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The address family a workload measures: each IPv4 workload has an IPv6 twin (its id
/// suffixed `6`, its title " (IPv6)") with the same cases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The twin of workload (id, title) in this family.
    pub fn workload(self, id: &'static str, title: &'static str) -> (&'static str, &'static str) {
        match (self, id) {
            (Family::V4, _) => (id, title),
            (Family::V6, "throughput") => ("throughput6", "TCP throughput (IPv6)"),
            (Family::V6, "latency") => ("latency6", "Latency (ping-pong, IPv6)"),
            (Family::V6, "connrate-ports") => (
                "connrate-ports6",
                "New connections from ext through a published port (IPv6)",
            ),
            (Family::V6, "connrate-rules") => (
                "connrate-rules6",
                "New connections container→container with isolation rules (IPv6)",
            ),
            (Family::V6, other) => unreachable!("{other} has no IPv6 twin"),
        }
    }

    /// Why a topology has no number for this family, if it has none.
    pub fn missing(self, t: &dyn Topology) -> Option<Outcome> {
        (self == Family::V6 && !t.ipv6()).then_some(Outcome::NotApplicable("IPv4-only here"))
    }
}

/// The three paths every throughput and latency workload measures, with who is the client
/// and which address it aims at.
#[derive(Clone, Copy)]
pub enum Path {
    ContainerToContainer,
    ContainerToExt,
    ExtToPublished,
}

impl Path {
    pub const ALL: [Path; 3] = [
        Path::ContainerToContainer,
        Path::ContainerToExt,
        Path::ExtToPublished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::ContainerToContainer => "container→container",
            Path::ContainerToExt => "container→ext (MASQUERADE)",
            Path::ExtToPublished => "ext→published port (DNAT)",
        }
    }

    /// (client namespace, server address) on topology `t`.
    pub fn ends(self, t: &dyn Topology, f: Family) -> (&rig::Netns, String) {
        let v4 = f == Family::V4;
        match self {
            Path::ContainerToContainer if v4 => (t.client(), t.server_addr().to_string()),
            Path::ContainerToContainer => (t.client(), t.server_addr6().to_string()),
            Path::ContainerToExt if v4 => (t.client(), crate::topo::EXT_IP.to_string()),
            Path::ContainerToExt => (t.client(), crate::topo::EXT_IP6.to_string()),
            Path::ExtToPublished if v4 => (t.ext(), t.published_addr().to_string()),
            Path::ExtToPublished => (t.ext(), t.published_addr6().to_string()),
        }
    }
}
