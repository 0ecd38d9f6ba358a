//! What a run produced: per workload, per case (a path, a rule count...), the samples of every
//! topology — or why a topology has none (not applicable by design, or an error).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::machine::Machine;

#[derive(Serialize)]
pub struct Results {
    pub mode: &'static str,
    pub machine: Machine,
    pub started_unix: u64,
    pub duration_secs: f64,
    pub samples_per_case: usize,
    pub topologies: Vec<String>,
    pub workloads: Vec<Workload>,
    /// Things a reader must know (tool substitutions, interruptions).
    pub notes: Vec<String>,
}

#[derive(Serialize, Clone)]
pub struct Workload {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The topology whose ratios against the others the tables show.
    pub primary: &'static str,
    /// One paragraph: what is measured, how.
    pub method: String,
    pub cases: Vec<Case>,
}

#[derive(Serialize, Clone, Default)]
pub struct Case {
    pub name: String,
    /// Samples per topology label, in measurement order.
    pub samples: BTreeMap<String, Vec<f64>>,
    /// Topologies this case does not apply to, with the reason.
    pub not_applicable: BTreeMap<String, String>,
    /// Measurements that failed, with the error.
    pub errors: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Workload {
    pub fn new(
        id: &'static str,
        title: &'static str,
        unit: &'static str,
        higher_is_better: bool,
        method: impl Into<String>,
    ) -> Self {
        Self {
            id,
            title,
            unit,
            higher_is_better,
            primary: "weir",
            method: method.into(),
            cases: Vec::new(),
        }
    }

    /// The case named `name`, created on first use (cases keep their first-use order).
    pub fn case(&mut self, name: &str) -> &mut Case {
        if let Some(i) = self.cases.iter().position(|c| c.name == name) {
            return &mut self.cases[i];
        }
        self.cases.push(Case {
            name: name.to_string(),
            ..Case::default()
        });
        self.cases.last_mut().expect("just pushed")
    }
}

impl Case {
    pub fn push(&mut self, topo: &str, v: f64) {
        self.samples.entry(topo.to_string()).or_default().push(v);
    }

    pub fn not_applicable(&mut self, topo: &str, why: &str) {
        self.not_applicable
            .insert(topo.to_string(), why.to_string());
    }

    pub fn error(&mut self, topo: &str, e: String) {
        self.errors.entry(topo.to_string()).or_default().push(e);
    }

    pub fn summary(&self, topo: &str) -> Option<Summary> {
        summarize(self.samples.get(topo)?)
    }
}

/// Median, min and max of the finite samples.
pub fn summarize(xs: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_ignores_non_finite() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        let s = summarize(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        assert!(summarize(&[f64::NAN]).is_none());
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn cases_keep_first_use_order() {
        let mut w = Workload::new("x", "X", "u", true, "m");
        w.case("b").push("weir", 1.0);
        w.case("a").push("weir", 2.0);
        w.case("b").push("weir", 3.0);
        let names: Vec<_> = w.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(w.cases[0].samples["weir"], [1.0, 3.0]);
    }
}
