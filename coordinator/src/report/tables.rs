//! The report's tables as formatted cells, the same for every renderer.

use super::{pct, AxisEffects, EarlySummary, Estimate, Matched, Report, Row, SEED};

/// How the report's intervals and verdicts are computed, as every format states it.
pub const METHOD: &str = "Intervals are 95%: for a configuration with several runs (seeds), \
mean +- t(0.975, n-1) * sd / sqrt(n); for a single run, the evaluation set's sampling error, \
accuracy +- 1.96 * sqrt(p(1-p)/N) over its N images, which leaves out seed-to-seed spread; \
either is clipped to [0, 100%], where accuracies lie. \
A value is called better than another only when Welch's t-test (two-sided, alpha = 0.05) says \
so; otherwise the difference is within noise, or needs more seeds.";

/// A table of formatted cells, the same for every renderer.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// The trial id a row stands for, where it stands for one (HTML anchors it).
    pub id: Option<String>,
    pub cells: Vec<String>,
}

fn table(head: &[&str], rows: Vec<TableRow>) -> Table {
    Table {
        head: head.iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

fn interval_cell(e: Option<&Estimate>) -> String {
    match e.and_then(Estimate::bounds) {
        Some((lo, hi)) => format!("{:.2}-{:.2}%", 100.0 * lo, 100.0 * hi),
        None => "-".into(),
    }
}

fn rank_cell(rank: Option<usize>) -> String {
    rank.map_or("-".into(), |r| r.to_string())
}

impl Report {
    /// Configurations (trials that differ only in their seed), best mean first.
    pub fn configs_grid(&self) -> Table {
        let reported = self.configs.iter().any(|c| c.reported.is_some());
        let mut head = vec!["rank", "configuration"];
        head.extend(self.axes.iter().map(String::as_str).filter(|a| *a != SEED));
        head.extend(["runs", "mean", "95% interval", "sd", "basis"]);
        if reported {
            head.extend(["reported", "reported in interval"]);
        }
        let rows = self
            .configs
            .iter()
            .map(|c| {
                let e = c.estimate.as_ref();
                let mut cells = vec![rank_cell(c.rank), c.name.clone()];
                cells.extend(c.axis_values.iter().cloned());
                cells.extend([
                    e.map_or(0, Estimate::runs).to_string(),
                    pct(e.map(|e| e.mean)),
                    interval_cell(e),
                    e.and_then(Estimate::sd)
                        .map_or("-".into(), |s| format!("{:.2}", 100.0 * s)),
                    e.map_or("no result".into(), Estimate::basis),
                ]);
                if reported {
                    let inside = match c.reported_inside {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    };
                    cells.extend([pct(c.reported), inside.into()]);
                }
                TableRow { id: None, cells }
            })
            .collect();
        table(&head, rows)
    }

    /// Every trial, ranked.
    pub fn trials_grid(&self) -> Table {
        let has_reported = self.rows.iter().any(|r| r.reported.is_some());
        let has_labels = self.rows.iter().any(|r| r.label.is_some());
        let mut head = vec!["rank", "trial"];
        if has_labels {
            head.push("label");
        }
        head.extend(self.axes.iter().map(String::as_str));
        head.extend(["status", "test acc", "best val acc"]);
        if has_reported {
            head.extend(["reported", "measured - reported"]);
        }
        head.push("seconds");
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![rank_cell(r.rank), r.id.clone()];
                if has_labels {
                    cells.push(r.label.clone().unwrap_or_default());
                }
                cells.extend(r.axis_values.iter().cloned());
                cells.extend([
                    r.status_text(),
                    pct(r.test_accuracy),
                    pct(r.best_val_accuracy),
                ]);
                if has_reported {
                    let diff = match (r.test_accuracy, r.reported) {
                        (Some(t), Some(rep)) => format!("{:+.2} pts", 100.0 * (t - rep)),
                        _ => "-".into(),
                    };
                    cells.extend([pct(r.reported), diff]);
                }
                cells.push(r.seconds.map_or("-".into(), |s| format!("{s:.0}")));
                TableRow {
                    id: Some(r.id.clone()),
                    cells,
                }
            })
            .collect();
        table(&head, rows)
    }

    /// Binary cross-entropy trials: Keras' binary accuracy beside true top-1.
    pub fn bce_grid(&self, rows: Vec<&Row>) -> Table {
        let rows = rows
            .into_iter()
            .map(|r| TableRow {
                id: Some(r.id.clone()),
                cells: vec![r.name(), pct(r.test_binary_accuracy), pct(r.test_accuracy)],
            })
            .collect();
        table(
            &["trial", "Keras binary accuracy", "true top-1 accuracy"],
            rows,
        )
    }
}

impl EarlySummary {
    /// Each rung: how many trials reached it, how many stopped there.
    pub fn grid(&self) -> Table {
        let rows = self
            .rungs
            .iter()
            .map(|r| TableRow {
                id: None,
                cells: vec![
                    r.epoch.to_string(),
                    r.reached.to_string(),
                    r.stopped.to_string(),
                    r.reached.saturating_sub(r.stopped).to_string(),
                ],
            })
            .collect();
        table(
            &[
                "after epoch",
                "trials that reached it",
                "stopped there",
                "went on",
            ],
            rows,
        )
    }
}

impl AxisEffects {
    pub fn grid(&self) -> Table {
        let rows = self
            .values
            .iter()
            .map(|x| TableRow {
                id: None,
                cells: vec![
                    x.value.clone(),
                    x.trials.to_string(),
                    pct(x.mean()),
                    interval_cell(x.estimate.as_ref()),
                    pct(x.best),
                    match (x.vs_best, self.balanced) {
                        (Some(v), _) => v.describe(),
                        (None, false) => {
                            "not compared: other settings differ (see all else equal)".into()
                        }
                        (None, true) => "-".into(),
                    },
                ],
            })
            .collect();
        table(
            &[
                &self.axis,
                "trials",
                "mean",
                "95% interval",
                "best",
                "vs the best value",
            ],
            rows,
        )
    }
}

/// At most this many matched comparisons are listed; the findings count them all.
pub const MATCHED_ROWS: usize = 200;

/// Pairs of configurations that differ in one axis only.
pub fn matched_grid(matched: &[Matched]) -> Table {
    let rows = matched
        .iter()
        .take(MATCHED_ROWS)
        .map(|m| TableRow {
            id: None,
            cells: vec![
                m.axis.clone(),
                format!("{} ({})", m.better_value, m.better),
                format!("{} ({})", m.other_value, m.other),
                format!("{:.2} pts", 100.0 * m.gap),
                m.verdict.describe(),
            ],
        })
        .collect();
    table(&["axis", "better mean", "other", "gap", "verdict"], rows)
}
