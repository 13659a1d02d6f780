//! The markdown table, the "End to end" section of docs/performance.md, and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::stats::Samples;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    part: &'static str,
    what: String,
    chipcard: String,
    reference: String,
    ratio: Option<f64>,
    target: &'static str,
    met: Option<bool>,
}

impl Row {
    /// A measured row.
    pub fn new(
        part: &'static str,
        what: String,
        chipcard: String,
        reference: String,
        ratio: Option<f64>,
        target: &'static str,
        met: Option<bool>,
    ) -> Row {
        Row {
            part,
            what,
            chipcard,
            reference,
            ratio,
            target,
            met,
        }
    }

    /// A part that did not run.
    pub fn skipped(part: &'static str, why: String) -> Row {
        Row::new(part, why, "—".into(), String::new(), None, "", None)
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| part | measure | chipcard | reference | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.part, r.what, r.chipcard, r.reference, ratio, r.target, met
        );
    }
    out
}

/// Part b's plot, beside the markdown file: chipcardd's round trips and the floor's.
pub const PLOT_B: &str = "performance-latency.svg";

/// Part c's plot, beside the markdown file: through chipcardd and the pcsc driver, and the
/// pcsc crate direct.
pub const PLOT_C: &str = "performance-latency-pcscd.svg";

/// The whole "## End to end" section; `plots` are the plots written beside it ([`PLOT_B`],
/// [`PLOT_C`]).
pub fn section(rows: &[Row], quick: bool, plots: &[&str]) -> String {
    let mut s = String::from("## End to end\n\n");
    s.push_str(
        "Measured by `scripts/bench --write docs/performance.md` (release build; \
         `chipcard-bench --help` for options), every comparison side by side in one run on the \
         same machine, so the ratios matter more than the absolute figures. References: **a** \
         serde_json reading and writing serde structs of the same content as the group format \
         (the ipc crate's bench content: a `CommandCard` with a 255-byte APDU, a \
         `CardAvailable`, a `ListReadersResponse` with 16 readers, and the three in a row), the \
         fastest of many batches each, ratio serde_json / group format; **b** the floor, a \
         relay of the same framed bytes over the same three-process path (client → \
         `chipcard-bench relay` → `chipcard-bench echo-driver` over a socketpair) without \
         parsing, its client on the same kind of socket halves as chipcard-client \
         (`chipcard_sock`), measured in alternating batches with chipcardd; **c** the `pcsc` \
         crate talking to the same virtual card (chipcard-vpcd-card) behind the same isolated \
         pcscd, both connected to the card (shared) at once and measured in alternating \
         batches.\n\n",
    );
    if quick {
        s.push_str("*Quick mode: small counts, targets not judged.*\n\n");
    }
    s.push_str(&table(rows));
    for plot in plots {
        let (alt, what) = if *plot == PLOT_C {
            (
                "APDU round-trip latency: via pcscd vs pcsc crate direct",
                "part c's round trips",
            )
        } else {
            (
                "APDU round-trip latency: chipcardd vs floor",
                "part b's round trips",
            )
        };
        let _ = write!(
            s,
            "\n![{alt}]({plot})\n\nThe plot shows the cumulative distribution of {what}.\n"
        );
    }
    s
}

/// Replaces (or appends) the "## End to end" section of `file`.
pub fn write_section(file: &Path, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Performance\n".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut out = String::new();
    let mut lines = old.split_inclusive('\n').peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.trim_end() == "## End to end" && !replaced {
            out.push_str(section);
            // Skip the old section: up to the next level-2 (or level-1) heading.
            while let Some(next) = lines.peek() {
                if next.starts_with("## ") || next.starts_with("# ") {
                    out.push('\n');
                    break;
                }
                lines.next();
            }
            replaced = true;
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        if !out.ends_with("\n\n") {
            out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
        }
        out.push_str(section);
    }
    std::fs::write(file, out).with_context(|| format!("writing {}", file.display()))
}

/// An SVG with the cumulative distributions of `series` (name, colour, samples).
pub fn cdf_svg(series: &[(&str, &str, &Samples)]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 360.0, 60.0, 40.0, 20.0, 20.0);
    // x: 0 .. the largest p99.5, so that the tail does not flatten the plot.
    let max = series
        .iter()
        .map(|(_, _, s)| s.pct(99.5))
        .max()
        .unwrap_or(Duration::from_micros(1))
        .as_secs_f64()
        * 1e6;
    let max = nice_ceiling(max.max(1.0));
    let x = |v: f64| left + (v / max).min(1.0) * (w - left - right);
    let y = |p: f64| h - bottom - p * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{v:.0}</text>",
            x(v),
            top,
            h - bottom,
            h - bottom + 15.0
        );
        let p = f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{p:.1}</text>",
            y(p),
            w - right,
            left - 5.0,
            y(p) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">round trip (µs)</text>\
         <text x=\"15\" y=\"{:.1}\" transform=\"rotate(-90 15 {:.1})\" text-anchor=\"middle\">fraction ≤ x</text>",
        (left + w - right) / 2.0,
        h - 5.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (i, (name, colour, s)) in series.iter().enumerate() {
        let n = s.len().max(1);
        let step = (n / 400).max(1);
        let mut points = String::new();
        for (k, d) in s.sorted().iter().enumerate().step_by(step) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x(d.as_secs_f64() * 1e6),
                y((k + 1) as f64 / n as f64)
            );
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{points}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name} (p50 {:.1} µs)</text>",
            w - right - 200.0,
            h - bottom - 20.0 - 16.0 * i as f64,
            s.pct(50.0).as_secs_f64() * 1e6
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.md");
        std::fs::write(&file, "# P\n\n## Group format\n\ntheirs\n").expect("write");
        write_section(&file, "## End to end\n\nold\n").expect("append");
        write_section(&file, "## End to end\n\nnew\n").expect("replace");
        let text = std::fs::read_to_string(&file).expect("read");
        assert_eq!(
            text,
            "# P\n\n## Group format\n\ntheirs\n\n## End to end\n\nnew\n"
        );
        std::fs::write(&file, "# P\n\n## End to end\n\nold\n\n## Later\n\nx\n").expect("write");
        write_section(&file, "## End to end\n\nnew\n").expect("replace");
        let text = std::fs::read_to_string(&file).expect("read");
        assert_eq!(text, "# P\n\n## End to end\n\nnew\n\n## Later\n\nx\n");
    }

    #[test]
    fn section_names_the_command_and_references_each_plot() {
        let rows = [Row::skipped("a", "x".to_owned())];
        let s = section(&rows, false, &[PLOT_B, PLOT_C]);
        assert!(
            s.contains("`scripts/bench --write docs/performance.md`"),
            "{s}"
        );
        assert!(s.contains("(performance-latency.svg)"), "{s}");
        assert!(s.contains("via pcscd vs pcsc crate direct](performance-latency-pcscd.svg)"));
        let s = section(&rows, true, &[]);
        assert!(!s.contains("!["), "{s}");
    }

    #[test]
    fn ceilings() {
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
    }
}
