//! Human tables by default, JSON (`--json`) for machines: the same data either way.

use std::io::{BufWriter, Write};

use serde::Serialize;

/// Prints rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<width$}  ", c, width = w[i]));
            }
        }
        s.truncate(s.trim_end().len());
        s
    };
    lines(
        std::iter::once(line(header)).chain(
            rows.iter()
                .map(|r| line(&r.iter().map(String::as_str).collect::<Vec<_>>())),
        ),
    );
}

/// Prints lines through one buffered writer (listings can have a hundred thousand rows).
pub fn lines(lines: impl IntoIterator<Item = impl AsRef<str>>) {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for l in lines {
        if writeln!(out, "{}", l.as_ref()).is_err() {
            return;
        }
    }
    let _ = out.flush();
}

pub fn json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: serialising output: {e}"),
    }
}
