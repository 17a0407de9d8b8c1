//! Tables for terminal and Markdown output, and charts ([`chart`]).
//!
//! Foundation layer: depends on no other strnas module; stages and the CLI hand it rows and points.

pub mod chart;

/// A table with a header row; numeric-looking cells are right-aligned.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Row indices after which a separator line is drawn.
    rules: Vec<usize>,
}

fn numeric(s: &str) -> bool {
    let s = s.trim_end_matches('%').trim_start_matches(['+', '-']);
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ',' || c == '_')
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), ..Default::default() }
    }
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
    /// Draws a separator under the last row added.
    pub fn rule(&mut self) {
        if !self.rows.is_empty() {
            self.rules.push(self.rows.len() - 1);
        }
    }
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String], out: &mut String| {
            let mut parts = vec![];
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                parts.push(if numeric(c) { format!("{c:>width$}") } else { format!("{c:<width$}") });
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        let sep: String = w.iter().map(|&x| "-".repeat(x)).collect::<Vec<_>>().join("  ");
        let mut out = String::new();
        line(&self.header, &mut out);
        out.push_str(&sep);
        out.push('\n');
        for (i, r) in self.rows.iter().enumerate() {
            line(r, &mut out);
            if self.rules.contains(&i) && i + 1 < self.rows.len() {
                out.push_str(&sep);
                out.push('\n');
            }
        }
        out
    }
}

impl Table {
    /// The table as GitHub Markdown (numeric columns right-aligned).
    pub fn markdown(&self) -> String {
        let esc = |c: &str| c.replace('|', "\\|");
        let n = self.header.len();
        let right: Vec<bool> = (0..n).map(|i| !self.rows.is_empty() && self.rows.iter().all(|r| r.get(i).is_none_or(|c| numeric(c) || c == "-"))).collect();
        let mut out = format!("| {} |\n", self.header.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | "));
        out.push_str(&format!("|{}|\n", right.iter().map(|&r| if r { "---:" } else { "---" }).collect::<Vec<_>>().join("|")));
        for r in &self.rows {
            let cells: Vec<String> = (0..n).map(|i| esc(r.get(i).map(String::as_str).unwrap_or(""))).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// `14101234` -> `14,101,234`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Millions with 3 decimals (the paper's "params x10^6" column).
pub fn millions(n: u64) -> String {
    format!("{:.3}", n as f64 / 1e6)
}

/// FLOPs in G (M below 1 G).
pub fn gflops(n: u64) -> String {
    if n as f64 >= 1e9 {
        format!("{:.2}G", n as f64 / 1e9)
    } else {
        format!("{:.1}M", n as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(14101234), "14,101,234");
        assert_eq!(thousands(999), "999");
        assert_eq!(millions(14101234), "14.101");
        let mut t = Table::new(["model", "params"]);
        t.row(["a", "1,000"]);
        t.row(["bbbb", "10"]);
        assert_eq!(t.render(), "model  params\n-----  ------\na       1,000\nbbbb       10\n");
        assert_eq!(t.markdown(), "| model | params |\n|---|---:|\n| a | 1,000 |\n| bbbb | 10 |\n");
    }
}
