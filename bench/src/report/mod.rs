//! Writes a run's results: results.json (everything, raw samples included), results.md
//! (tables), and one SVG chart per workload.

pub mod markdown;
pub mod svg;

use std::path::Path;

use anyhow::{Context, Result};

use crate::results::{Results, Workload};

/// The charts of a workload: (file name, SVG).
fn charts(w: &Workload) -> Vec<(String, String)> {
    let labels = markdown::labels(w);
    let series = |cases: &[&crate::results::Case]| -> Vec<svg::Series> {
        labels
            .iter()
            .filter(|l| cases.iter().any(|c| c.samples.contains_key(**l)))
            .map(|l| svg::Series {
                label: l.to_string(),
                values: cases.iter().map(|c| c.summary(l)).collect(),
            })
            .collect()
    };
    let title = format!("{} ({})", w.title, w.unit);
    if w.id.starts_with("connrate") {
        let cases: Vec<_> = w.cases.iter().collect();
        let xs: Vec<String> = cases
            .iter()
            .map(|c| c.name.split(' ').next().unwrap_or("").to_string())
            .collect();
        let x_title = format!(
            "{title} vs. {}",
            w.cases[0].name.split_once(' ').map(|x| x.1).unwrap_or("")
        );
        return vec![(
            format!("{}.svg", w.id),
            svg::lines(&x_title, w.unit, &xs, &series(&cases)),
        )];
    }
    if w.id == "latency" {
        return ["p50", "p99"]
            .iter()
            .map(|p| {
                let cases: Vec<_> = w.cases.iter().filter(|c| c.name.ends_with(p)).collect();
                let groups: Vec<String> = cases
                    .iter()
                    .map(|c| c.name.trim_end_matches(p).trim_end().to_string())
                    .collect();
                (
                    format!("latency-{p}.svg"),
                    svg::bars(
                        &format!("{} {p} ({})", w.title, w.unit),
                        w.unit,
                        &groups,
                        &series(&cases),
                    ),
                )
            })
            .collect();
    }
    let cases: Vec<_> = w.cases.iter().collect();
    let groups: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    vec![(
        format!("{}.svg", w.id),
        svg::bars(&title, w.unit, &groups, &series(&cases)),
    )]
}

pub fn write(dir: &Path, r: &Results) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut index = Vec::new();
    for w in &r.workloads {
        if w.cases.is_empty() {
            continue;
        }
        for (file, body) in charts(w) {
            std::fs::write(dir.join(&file), body)?;
            index.push((w.id.to_string(), file));
        }
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )?;
    std::fs::write(dir.join("results.md"), markdown::document(r, &index))?;
    Ok(())
}
