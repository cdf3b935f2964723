//! Reports of many runs: JSON with every run's figures, and a markdown summary with an SVG
//! chart of the convergence-time distribution of each scenario (`--report DIR`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::scenarios::Report;

/// The figures that say how fast a scenario converged (simulated ms), by scenario: one chart
/// row each (hub-latency has two, the same runs with and without hubs).
pub fn convergence_figures(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "publish-converge" | "byzantine" | "swarm" => &["converge_ms"],
        "partition-heal" => &["heal_converge_ms"],
        "churn" | "hub-churn" => &["converge_after_churn_ms"],
        "governance" => &["revocation_ms"],
        "hub-latency" => &["converge_ms_hubs", "converge_ms_mesh"],
        "rate-limit" => &["polite_p50_ms"],
        _ => &[],
    }
}

/// Order statistics of one figure over many runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Runs with a value.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest.
    pub max: f64,
}

impl Distribution {
    /// The distribution of `values`, or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            count: sorted.len(),
            min: sorted[0],
            p10: at(0.1),
            median: at(0.5),
            p90: at(0.9),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Every numeric figure of `reports`, by name, in run order.
fn numeric_figures(reports: &[&Report]) -> BTreeMap<&'static str, Vec<f64>> {
    let mut figures: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for report in reports {
        for (name, value) in &report.figures {
            if let Some(number) = value.as_f64() {
                figures.entry(name).or_default().push(number);
            }
        }
    }
    figures
}

/// The markdown summary: per scenario, runs, failures (with replay commands) and every
/// numeric figure's distribution; then the chart.
pub fn markdown(reports: &[Report], wall_secs: f64, chart_file: &str) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&Report>> = BTreeMap::new();
    for report in reports {
        by_scenario.entry(report.scenario).or_default().push(report);
    }
    let mut out = String::new();
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(out, "# Simulation report\n");
    let _ = writeln!(
        out,
        "{} runs, {failed} failed, in {wall_secs:.0} s of wall-clock time (the only figure here that is not reproducible).",
        reports.len()
    );
    let _ = writeln!(
        out,
        "Simulated times are in milliseconds; every run replays exactly from its seed with\n`cargo run -p meridian-simulations --release -- --scenario NAME --seed S`.\n"
    );
    for (scenario, runs) in &by_scenario {
        let seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
        let (first, last) = (
            seeds.iter().min().copied().unwrap_or(0),
            seeds.iter().max().copied().unwrap_or(0),
        );
        let failures: Vec<&&Report> = runs.iter().filter(|r| !r.passed()).collect();
        let _ = writeln!(out, "## {scenario}\n");
        let _ = writeln!(
            out,
            "{} runs (seeds {first} to {last}), {} failed.\n",
            runs.len(),
            failures.len()
        );
        let _ = writeln!(out, "| figure | runs | min | p10 | median | p90 | max |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (name, values) in numeric_figures(runs) {
            if let Some(d) = Distribution::of(&values) {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {} | {} |",
                    d.count, d.min, d.p10, d.median, d.p90, d.max
                );
            }
        }
        let _ = writeln!(out);
        for report in failures.iter().take(20) {
            let _ = writeln!(
                out,
                "- seed {} failed: {} (replay: `--scenario {scenario} --seed {}`)",
                report.seed,
                report.failures.first().map_or("", String::as_str),
                report.seed
            );
        }
        if !failures.is_empty() {
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "## Convergence times\n");
    let _ = writeln!(
        out,
        "Each bar spans p10 to p90 of a scenario's convergence figure (hub-latency: the same runs with hubs, `converge_ms_hubs`, and without, `converge_ms_mesh`; rate-limit: the polite orgs' median call), the line min to max, the tick the median.\n"
    );
    let _ = writeln!(out, "![convergence times]({chart_file})");
    out
}

/// The convergence-time chart: one horizontal box per scenario and convergence figure (min,
/// p10, median, p90, max); hub-latency gets a row with hubs and one without.
pub fn svg(reports: &[Report]) -> String {
    let mut rows: Vec<(String, Distribution)> = Vec::new();
    let mut by_row: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for report in reports {
        for figure in convergence_figures(report.scenario) {
            if let Some(value) = report.figures.get(figure).and_then(Value::as_f64) {
                by_row
                    .entry((report.scenario, figure))
                    .or_default()
                    .push(value);
            }
        }
    }
    for ((scenario, figure), values) in by_row {
        if let Some(d) = Distribution::of(&values) {
            rows.push((format!("{scenario} ({figure})"), d));
        }
    }
    let (left, width, row_height) = (300.0, 520.0, 34.0);
    let height = 50.0 + row_height * rows.len() as f64;
    let max = rows
        .iter()
        .map(|(_, d)| d.max)
        .fold(1.0_f64, f64::max)
        .max(1.0);
    let x = |v: f64| left + v / max * width;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 40.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, (label, d)) in rows.iter().enumerate() {
        let y = 20.0 + row_height * index as f64;
        let mid = y + row_height / 2.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
            left - 8.0,
            mid + 4.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{mid}" x2="{}" y2="{mid}" stroke="#555"/>"##,
            x(d.min),
            x(d.max)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#8fb8de" stroke="#345"/>"##,
            x(d.p10),
            y + 8.0,
            (x(d.p90) - x(d.p10)).max(1.0),
            row_height - 16.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#123" stroke-width="2"/>"##,
            x(d.median),
            y + 6.0,
            y + row_height - 6.0
        );
    }
    let axis_y = 20.0 + row_height * rows.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#000"/>"##,
        left + width
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{value:.0} ms</text>"#,
            x(value),
            axis_y + 16.0
        );
    }
    let _ = writeln!(out, "</svg>");
    out
}

/// Writes `report.json`, `report.md` and `convergence.svg` into `dir`.
pub fn write(dir: &Path, reports: &[Report], wall_secs: f64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let runs: Vec<Value> = reports.iter().map(Report::to_json).collect();
    let json = json!({ "runs": runs, "wall_secs": wall_secs });
    std::fs::write(dir.join("report.json"), format!("{json:#}\n"))?;
    std::fs::write(dir.join("convergence.svg"), svg(reports))?;
    std::fs::write(
        dir.join("report.md"),
        markdown(reports, wall_secs, "convergence.svg"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(scenario: &'static str, seed: u64, ms: u64, passed: bool) -> Report {
        Report {
            scenario,
            seed,
            failures: if passed {
                vec![]
            } else {
                vec!["node 3 lags".into()]
            },
            figures: [("converge_ms", json!(ms)), ("nodes", json!(50))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn distributions_summaries_and_charts_say_what_the_runs_did() {
        let d = Distribution::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.count, d.min, d.median, d.max), (5, 1.0, 3.0, 5.0));
        assert!(Distribution::of(&[]).is_none());
        let reports = vec![
            report("byzantine", 1, 250, true),
            report("byzantine", 2, 400, false),
            report("swarm", 1, 900, true),
        ];
        let md = markdown(&reports, 12.0, "c.svg");
        assert!(md.contains("3 runs, 1 failed"));
        assert!(
            md.contains("| converge_ms | 2 | 250 | 250 | 400 | 400 | 400 |"),
            "{md}"
        );
        assert!(
            md.contains("seed 2 failed: node 3 lags (replay: `--scenario byzantine --seed 2`)")
        );
        let chart = svg(&reports);
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert!(chart.contains("byzantine (converge_ms)") && chart.contains("swarm (converge_ms)"));
    }
}
