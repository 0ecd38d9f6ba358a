//! Hand-written SVG charts: grouped bars (median, with min–max whiskers) and lines over a
//! categorical x axis (rate vs. rule count). No dependencies; readable in any browser.

use std::fmt::Write;

use crate::results::Summary;

/// One topology's values, one per group (or x position).
pub struct Series {
    pub label: String,
    pub values: Vec<Option<Summary>>,
}

pub fn color(label: &str) -> &'static str {
    match label {
        "weir" => "#2f9e44",
        "weir-xdp" => "#1864ab",
        "weir-base" => "#8ce99a",
        "iptables" => "#e03131",
        "netavark" => "#9c36b5",
        "veth" => "#868e96",
        _ => "#f08c00",
    }
}

const W: f64 = 960.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(title: &str, unit: &str) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        W / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>",
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(unit)
    );
    s
}

fn legend(s: &mut String, series: &[Series]) {
    let mut x = LEFT;
    for se in series {
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"30\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"40\">{}</text>",
            color(&se.label),
            x + 16.0,
            esc(&se.label)
        );
        x += 30.0 + 8.0 * se.label.len() as f64;
    }
}

/// A "nice" axis maximum and tick step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| s * 5.0 >= max)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn y_axis(s: &mut String, top: f64, step: f64, y: impl Fn(f64) -> f64) {
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e9ecef\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            crate::workload::fmt_value(v)
        );
        v += step;
    }
}

/// Two-line group label: split at the last ", ".
fn label_lines(s: &str) -> (String, String) {
    match s.rsplit_once(", ") {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (s.to_string(), String::new()),
    }
}

pub fn bars(title: &str, unit: &str, groups: &[String], series: &[Series]) -> String {
    let mut s = header(title, unit);
    legend(&mut s, series);
    let max = series
        .iter()
        .flat_map(|se| se.values.iter().flatten().map(|v| v.max))
        .fold(0.0, f64::max);
    let (top, step) = nice(max);
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    y_axis(&mut s, top, step, y);
    let gw = (W - LEFT - RIGHT) / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (g, name) in groups.iter().enumerate() {
        let gx = LEFT + gw * g as f64 + gw * 0.1;
        for (i, se) in series.iter().enumerate() {
            let Some(v) = se.values.get(g).copied().flatten() else {
                continue;
            };
            let x = gx + bw * i as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {} {}</title></rect>",
                y(v.median),
                bw * 0.9,
                (y(0.0) - y(v.median)).max(0.0),
                color(&se.label),
                esc(&se.label),
                esc(name),
                crate::workload::fmt_value(v.median),
                esc(unit)
            );
            let cx = x + bw * 0.45;
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"1\"/>",
                y(v.min),
                y(v.max)
            );
        }
        let (a, b) = label_lines(name);
        let lx = LEFT + gw * (g as f64 + 0.5);
        let _ = writeln!(
            s,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\
             <text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            H - BOTTOM + 16.0,
            esc(&a),
            H - BOTTOM + 30.0,
            esc(&b)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
        W - RIGHT,
        y(0.0),
        y(0.0)
    );
    s.push_str("</svg>\n");
    s
}

pub fn lines(title: &str, unit: &str, xs: &[String], series: &[Series]) -> String {
    let mut s = header(title, unit);
    legend(&mut s, series);
    let max = series
        .iter()
        .flat_map(|se| se.values.iter().flatten().map(|v| v.max))
        .fold(0.0, f64::max);
    let (top, step) = nice(max);
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    y_axis(&mut s, top, step, y);
    let n = xs.len().max(1) as f64;
    let x = |i: usize| LEFT + 40.0 + (W - LEFT - RIGHT - 80.0) * (i as f64 + 0.5) / n;
    for (i, name) in xs.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            H - BOTTOM + 18.0,
            esc(name)
        );
    }
    for se in series {
        let pts: Vec<String> = se
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v.median))))
            .collect();
        let c = color(&se.label);
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>",
            pts.join(" ")
        );
        for (i, v) in se.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"{c}\"/>\
                 <circle cx=\"{0:.1}\" cy=\"{3:.1}\" r=\"4\" fill=\"{c}\"><title>{4} {5}: {6} {7}</title></circle>",
                x(i),
                y(v.min),
                y(v.max),
                y(v.median),
                esc(&se.label),
                esc(&xs[i]),
                crate::workload::fmt_value(v.median),
                esc(unit)
            );
        }
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
        W - RIGHT,
        y(0.0),
        y(0.0)
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_covers_the_maximum() {
        for m in [0.7, 1.0, 3.3, 14.2, 99.0, 12_345.0] {
            let (top, step) = nice(m);
            assert!(top >= m && top <= m * 2.5 + step, "{m}: {top} {step}");
        }
        assert_eq!(nice(0.0), (1.0, 0.2));
    }

    #[test]
    fn charts_are_well_formed() {
        let v = Some(Summary {
            median: 2.0,
            min: 1.0,
            max: 3.0,
            n: 3,
        });
        let se = [Series {
            label: "weir".into(),
            values: vec![v, None],
        }];
        let b = bars("t<", "u", &["a, b".into(), "c".into()], &se);
        assert!(b.starts_with("<svg") && b.trim_end().ends_with("</svg>"));
        assert!(b.contains("t&lt;") && b.contains("<rect x="));
        let l = lines("t", "u", &["0".into(), "1".into()], &se);
        assert!(l.contains("<polyline") && l.contains("<circle"));
    }
}
