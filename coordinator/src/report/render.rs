//! The report's text formats, all read from one [`Report`]: the terminal table, `report.md`,
//! `results.csv` and `results.json`; `report.html` is [`crate::report::html`]. [`files`] and [`write`]
//! produce all four.

use crate::report::{Estimate, Report, Table};
use std::fmt::Write as _;
use std::path::Path;

/// Text that may come from a worker (a reason, notes, a device, class names) made inert in
/// Markdown: viewers render raw HTML (`<script>`, `<img onerror=...>`), so `&`, `<` and `>`
/// become entities, and line breaks become spaces (a cell or a finding keeps to its line).
pub fn md_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

/// A [`Table`] as markdown: cells through [`md_text`], and `|` in a cell becomes `/`.
pub fn md_table(t: &Table) -> String {
    let row = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| md_text(c).replace('|', "/")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = row(&t.head) + &format!("|{}\n", "---|".repeat(t.head.len()));
    for r in &t.rows {
        out += &row(&r.cells);
    }
    out
}

pub fn configs_table(report: &Report) -> String {
    md_table(&report.configs_grid())
}

/// Every trial, ranked.
pub fn table(report: &Report) -> String {
    md_table(&report.trials_grid())
}

/// What the terminal shows at the end of a sweep: configurations when seeds repeat them,
/// then every trial.
pub fn terminal(report: &Report) -> String {
    if report.has_repeats() {
        format!("{}\n{}", configs_table(report), table(report))
    } else {
        table(report)
    }
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# Sweep `{}`\n\nRanked by {} ({:?}).\n\n## Findings\n\n",
        report.sweep,
        report.metric_name(),
        report.direction
    );
    for f in &report.findings {
        let _ = writeln!(out, "- {}", md_text(f));
    }
    let _ = write!(
        out,
        "\n{}\n\n## Configurations\n\n{}",
        crate::report::METHOD,
        configs_table(report)
    );
    let _ = write!(out, "\n## Every trial\n\n{}", table(report));
    if !report.effects.is_empty() {
        out += "\n## Effect of each axis\n\nThe ranking metric over the trials with each value (other axes vary within it), and the best value against each other.\n";
        for fx in &report.effects {
            let _ = write!(out, "\n### {}\n\n{}", fx.axis, md_table(&fx.grid()));
        }
    }
    if !report.matched.is_empty() {
        let _ = write!(
            out,
            "\n## All else equal\n\nConfigurations that differ in one axis only.\n\n{}",
            md_table(&crate::report::matched_grid(&report.matched))
        );
    }
    if let Some(early) = &report.early_stopping {
        let _ = write!(
            out,
            "\n## Early stopping\n\n{}\n\n{}",
            early.describe(),
            md_table(&early.grid())
        );
    }
    if let Some(search) = &report.search {
        let _ = write!(
            out,
            "\n## Search\n\n{}\n\nThe best so far, at each trial that improved it (every trial's value and the best so far are in results.csv, `suggested` and `best_so_far`):\n\n{}\n{}\n\n{}",
            search.describe(),
            md_table(&search.improvements()),
            crate::report::search::METHOD,
            md_table(&search.importance_table())
        );
    }
    if let Some(pbt) = &report.pbt {
        let _ = write!(
            out,
            "\n## Population-based training\n\n{}\n\n{}",
            pbt.describe(),
            md_table(&pbt.lineage())
        );
    }
    let bce = report.bce_rows();
    if !bce.is_empty() {
        out += "\n## Binary cross-entropy: what Keras showed vs true accuracy\n\n";
        out += &md_table(&report.bce_grid(bce));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One line per trial; the last columns carry its configuration's estimate and interval.
pub fn csv(report: &Report) -> String {
    let mut out = String::from("id,label,status");
    for a in &report.axes {
        out += &format!(",{}", csv_field(a));
    }
    out += ",test_accuracy,best_val_accuracy,reported,seconds,worker,attempt,rank,\
            config,config_rank,config_runs,config_mean,config_sd,config_ci95_low,config_ci95_high,config_basis";
    // A search's trials: their place in the suggestion order and the best value up to it.
    let steps: Option<std::collections::HashMap<&str, &crate::report::search::Step>> = report
        .search
        .as_ref()
        .map(|s| s.steps.iter().map(|st| (st.id.as_str(), st)).collect());
    out += if steps.is_some() {
        ",suggested,best_so_far\n"
    } else {
        "\n"
    };
    let num = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let int = |v: Option<usize>| v.map_or(String::new(), |v| v.to_string());
    for r in &report.rows {
        let mut cells = vec![
            r.id.clone(),
            csv_field(r.label.as_deref().unwrap_or("")),
            r.status.to_string(),
        ];
        cells.extend(r.axis_values.iter().map(|v| csv_field(v)));
        cells.extend([
            num(r.test_accuracy),
            num(r.best_val_accuracy),
            num(r.reported),
            num(r.seconds),
            csv_field(r.worker.as_deref().unwrap_or("")),
            r.attempt.to_string(),
            int(r.rank),
        ]);
        let c = r.config.as_ref();
        let e = c.and_then(|c| c.estimate.as_ref());
        let bounds = e.and_then(Estimate::bounds);
        cells.extend([
            csv_field(c.map_or("", |c| c.name.as_str())),
            int(c.and_then(|c| c.rank)),
            e.map_or(String::new(), |e| e.runs().to_string()),
            num(e.map(|e| e.mean)),
            num(e.and_then(Estimate::sd)),
            num(bounds.map(|b| b.0)),
            num(bounds.map(|b| b.1)),
            csv_field(&e.map_or(String::new(), Estimate::basis)),
        ]);
        if let Some(steps) = &steps {
            let step = steps.get(r.id.as_str());
            cells.push(step.map_or(String::new(), |s| s.n.to_string()));
            cells.push(num(step.and_then(|s| s.best)));
        }
        out += &cells.join(",");
        out.push('\n');
    }
    out
}

/// `results.json`: every trial's row, each with its configuration's estimate.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(&report.rows).unwrap_or_default()
}

/// Every name a report's file may have: what [`files`] writes, and all that a remote
/// `coordinator report` accepts from a server.
pub const FILE_NAMES: [&str; 5] = [
    "report.md",
    "results.json",
    "results.csv",
    "report.html",
    REPLAY,
];

/// A population's best member's whole schedule.
const REPLAY: &str = "replay.toml";

/// The files [`write`] writes, as (name, contents): report.md, results.json, results.csv,
/// report.html, and for a population its best member's schedule, replay.toml.
pub fn files(report: &Report) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (FILE_NAMES[0], markdown(report)),
        (FILE_NAMES[1], json(report)),
        (FILE_NAMES[2], csv(report)),
        (FILE_NAMES[3], crate::report::html::render(report)),
    ];
    if let Some(replay) = report.pbt.as_ref().and_then(|p| p.replay.clone()) {
        out.push((REPLAY, replay));
    }
    out
}

/// Writes [`files`] into `dir`.
pub fn write(report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in files(report) {
        std::fs::write(dir.join(name), contents)?;
    }
    Ok(())
}
