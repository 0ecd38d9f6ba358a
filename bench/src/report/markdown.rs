//! results.md: machine and run facts, a summary of Weir against the baseline, then one table
//! per workload (median and min–max per topology, interleaved ratios) with its chart.

use std::fmt::Write;

use crate::{
    results::{Case, Results, Workload, summarize},
    workload::fmt_value,
};

/// Display order of topology columns.
pub const ORDER: [&str; 9] = [
    "weir-xdp",
    "weir",
    "weir-base",
    crate::cli::BIG_TCP,
    "iptables",
    "netavark",
    "veth",
    "docker-weir",
    "docker-bridge",
];

/// Topologies a workload mentions, in display order.
pub fn labels(w: &Workload) -> Vec<&'static str> {
    ORDER
        .iter()
        .copied()
        .filter(|l| {
            w.cases.iter().any(|c| {
                c.samples.contains_key(*l)
                    || c.not_applicable.contains_key(*l)
                    || c.errors.contains_key(*l)
            })
        })
        .collect()
}

/// `a ÷ b` for a case: the median of per-round ratios when both have one sample per round
/// (rounds measure all topologies back to back, so drift cancels), else the ratio of medians.
pub fn ratio(c: &Case, a: &str, b: &str) -> Option<f64> {
    let (xa, xb) = (c.samples.get(a)?, c.samples.get(b)?);
    if xa.len() == xb.len() && !xa.is_empty() {
        let per_round: Vec<f64> = xa.iter().zip(xb).map(|(x, y)| x / y).collect();
        return summarize(&per_round).map(|s| s.median);
    }
    Some(summarize(xa)?.median / summarize(xb)?.median)
}

/// Whether `primary` beats `other` on this case (beyond a 2% tie band).
pub fn ahead(w: &Workload, c: &Case, other: &str) -> Option<bool> {
    let r = ratio(c, w.primary, other)?;
    Some(if w.higher_is_better {
        r > 1.02
    } else {
        r < 0.98
    })
}

fn cell(c: &Case, label: &str) -> String {
    if let Some(s) = c.summary(label) {
        if s.n > 1 {
            format!(
                "{} ({}–{})",
                fmt_value(s.median),
                fmt_value(s.min),
                fmt_value(s.max)
            )
        } else {
            fmt_value(s.median)
        }
    } else if c.not_applicable.contains_key(label) {
        "n/a".into()
    } else if c.errors.contains_key(label) {
        "error".into()
    } else {
        "—".into()
    }
}

/// The ratio a column shows: the primary against `other`, but a variant of Weir
/// (`weir-bigtcp`) against Weir, so that above 1 means the variant gains.
fn pair<'a>(w: &'a Workload, other: &'a str) -> (&'a str, &'a str) {
    if other == crate::cli::BIG_TCP {
        (other, w.primary)
    } else {
        (w.primary, other)
    }
}

pub fn table(w: &Workload) -> String {
    let labels = labels(w);
    let others: Vec<&str> = labels
        .iter()
        .copied()
        .filter(|l| *l != w.primary && w.cases.iter().any(|c| c.samples.contains_key(*l)))
        .collect();
    let mut s = String::from("| case |");
    for l in &labels {
        let _ = write!(s, " {l} |");
    }
    for o in &others {
        let (a, b) = pair(w, o);
        let _ = write!(s, " {a}/{b} |");
    }
    s.push_str("\n|---|");
    for _ in 0..labels.len() + others.len() {
        s.push_str("---:|");
    }
    s.push('\n');
    for c in &w.cases {
        let _ = write!(s, "| {} |", c.name);
        for l in &labels {
            let _ = write!(s, " {} |", cell(c, l));
        }
        for o in &others {
            let (a, b) = pair(w, o);
            match ratio(c, a, b) {
                Some(r) => {
                    // A variant of Weir is compared with Weir itself: no "ahead" mark.
                    let mark = if a == w.primary && ahead(w, c, o) == Some(true) {
                        " ✓"
                    } else {
                        ""
                    };
                    let _ = write!(s, " {r:.2}×{mark} |");
                }
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
    let notes: Vec<String> = w
        .cases
        .iter()
        .flat_map(|c| c.not_applicable.iter().map(|(l, why)| format!("{l} {why}")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\nn/a: {}.", notes.join("; "));
    }
    let errors: Vec<String> = w
        .cases
        .iter()
        .flat_map(|c| {
            c.errors
                .iter()
                .map(move |(l, e)| format!("{} / {l}: {}", c.name, e[0]))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nErrors:");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}

/// Every case where the primary topology has a ratio against iptables: (workload, case, ratio, ahead).
pub fn versus_iptables(r: &Results) -> String {
    versus(r, "weir", "iptables")
}

/// Every case where the primary topology (`me` in the header) has a ratio against `other`.
fn versus(r: &Results, me: &str, other: &str) -> String {
    let mut s = format!("| workload | case | {me}/{other} | {me} ahead |\n|---|---|---:|:---:|\n");
    for w in &r.workloads {
        for c in &w.cases {
            if let Some(x) = ratio(c, w.primary, other) {
                let a = match ahead(w, c, other) {
                    Some(true) => "yes",
                    _ if (0.98..=1.02).contains(&x) => "tie",
                    _ => "**no**",
                };
                let who = if w.primary == me {
                    String::new()
                } else {
                    format!(" ({})", w.primary)
                };
                let _ = writeln!(s, "| {} | {}{who} | {x:.2}× | {a} |", w.title, c.name);
            }
        }
    }
    s
}

pub fn document(r: &Results, charts: &[(String, String)]) -> String {
    let m = &r.machine;
    let mut s = String::from("# Weir benchmark results\n\n");
    let _ = writeln!(
        s,
        "Mode **{}**, {} interleaved sample(s) per case, run took {:.0} s. Machine: kernel {}, \
         {} CPUs ({}), {} GiB; {}; {}. 1-minute load average {:.2} at the start, {:.2} at the end \
         (the machine is shared: other people's builds and tests may have run at the same time, \
         which lowers absolute figures but hits every topology alike within a round).\n",
        r.mode,
        r.samples_per_case,
        r.duration_secs,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.iptables,
        m.netavark,
        m.load_start,
        m.load_end
    );
    s.push_str(
        "How to read: each cell is the median (min–max) of the samples; `weir/x` columns are \
         the median of per-round ratios (each round measures every topology back to back, in \
         rotating order, so the VM's drift cancels); ✓ marks where Weir is ahead by more than \
         2%. Absolute numbers swing ±30% between runs on these VMs — compare ratios.\n\n",
    );
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    if !r.notes.is_empty() {
        s.push('\n');
    }
    s.push_str("## Weir against the Docker-equivalent baseline\n\n");
    s.push_str(&versus_iptables(r));
    let docker = versus(r, "docker-weir", "docker-bridge");
    if docker.lines().count() > 2 {
        s.push_str("\n## The Weir Docker driver against Docker's bridge driver\n\n");
        s.push_str(&docker);
    }
    for w in &r.workloads {
        let dir = if w.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(s, "\n## {} ({}, {dir})\n\n{}\n", w.title, w.unit, w.method);
        s.push_str(&table(w));
        for (id, file) in charts {
            if id == w.id {
                let _ = writeln!(s, "\n![{}]({file})", w.title);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        let mut w = Workload::new("t", "T", "u", true, "m");
        let c = w.case("c1");
        for (a, b) in [(10.0, 5.0), (12.0, 6.0), (30.0, 10.0)] {
            c.push("weir", a);
            c.push("iptables", b);
        }
        c.not_applicable("veth", "has none");
        w
    }

    #[test]
    fn ratios_pair_rounds() {
        let w = workload();
        // Per-round ratios 2, 2, 3 -> median 2 (the ratio of medians would be 2 too, but
        // the pairing is what makes drift cancel).
        assert_eq!(ratio(&w.cases[0], "weir", "iptables"), Some(2.0));
        assert_eq!(ahead(&w, &w.cases[0], "iptables"), Some(true));
        assert_eq!(ratio(&w.cases[0], "weir", "veth"), None);
    }

    #[test]
    fn table_shows_cells_ratios_and_reasons() {
        let t = table(&workload());
        assert!(
            t.contains("| case | weir | iptables | veth | weir/iptables |"),
            "{t}"
        );
        assert!(
            t.contains("| c1 | 12.0 (10.0–30.0) | 6.00 (5.00–10.0) | n/a | 2.00× ✓ |"),
            "{t}"
        );
        assert!(t.contains("n/a: veth has none."), "{t}");
    }
}
