//! Ranked results: terminal table, `report.md`, `results.json`, `results.csv`, and the effect
//! of each axis (mean and best of the ranking metric for every value of it).
//!
//! Failed, diverged, cancelled and unfinished trials are listed below the ranked ones, never
//! dropped; ties keep plan order.

use crate::core::{Core, TrialState};
use crate::store::StoredSweep;
use crate::sweep::{Direction, Metric};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use sweep_proto::{EpochMetrics, Provenance, TrialSpec, TrialStatus};

/// One trial's row (this is also the `results.json` object).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub label: Option<String>,
    /// Every resolved trial field.
    pub params: serde_json::Value,
    /// completed, diverged, failed, cancelled, queued or running.
    pub status: String,
    pub reason: Option<String>,
    pub test_accuracy: Option<f64>,
    pub best_val_accuracy: Option<f64>,
    /// Keras-style binary accuracy on the test set, for binary cross-entropy trials.
    pub test_binary_accuracy: Option<f64>,
    pub reported: Option<f64>,
    pub epochs: Vec<EpochMetrics>,
    pub seconds: Option<f64>,
    pub worker: Option<String>,
    pub attempt: u32,
    /// Test-set `confusion[true][predicted]`, for completed trials.
    pub confusion: Option<Vec<Vec<u64>>>,
    /// Where and how the result was produced (versions, device, threads, times, data
    /// fingerprint, trainer semantics), for finished trials that recorded it.
    pub provenance: Option<Provenance>,
    #[serde(skip)]
    pub(crate) axis_values: Vec<String>,
}

impl Row {
    pub fn metric(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::TestAccuracy => self.test_accuracy,
            Metric::BestValAccuracy => self.best_val_accuracy,
        }
    }
}

/// The ranking metric over the trials that share one value of an axis.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisEffect {
    pub value: String,
    pub trials: usize,
    pub mean: Option<f64>,
    pub best: Option<f64>,
}

pub struct Report {
    pub sweep: String,
    pub rank_by: Metric,
    pub direction: Direction,
    pub axes: Vec<String>,
    /// Ranked rows first, then rows without the metric, in plan order.
    pub rows: Vec<Row>,
}

fn axis_value(params: &serde_json::Value, axis: &str) -> String {
    match params.get(axis) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    }
}

fn status_name(s: TrialStatus) -> &'static str {
    match s {
        TrialStatus::Completed => "completed",
        TrialStatus::Diverged => "diverged",
        TrialStatus::Failed => "failed",
    }
}

impl Report {
    pub fn build(sweep: &StoredSweep, core: &Core) -> Report {
        let mut rows = Vec::new();
        for (id, label, reported) in &sweep.trials {
            let Some(trial) = core.trial(id) else {
                continue;
            };
            let params = serde_json::to_value(&trial.spec).unwrap_or_default();
            let mut row = Row {
                id: id.clone(),
                label: label.clone(),
                axis_values: sweep.axes.iter().map(|a| axis_value(&params, a)).collect(),
                params,
                status: String::new(),
                reason: None,
                test_accuracy: None,
                best_val_accuracy: None,
                test_binary_accuracy: None,
                reported: *reported,
                epochs: Vec::new(),
                seconds: None,
                worker: None,
                attempt: 0,
                confusion: None,
                provenance: None,
            };
            match &trial.state {
                TrialState::Queued { attempt } => {
                    (row.status, row.attempt) = ("queued".into(), *attempt)
                }
                TrialState::Running {
                    attempt,
                    worker,
                    epochs,
                    ..
                } => {
                    (row.status, row.attempt, row.worker) =
                        ("running".into(), *attempt, Some(worker.clone()));
                    row.epochs = epochs.clone();
                }
                TrialState::Finished {
                    attempt,
                    worker,
                    result,
                } => {
                    row.status = status_name(result.status).into();
                    row.attempt = *attempt;
                    row.worker = Some(worker.clone());
                    row.reason = result.reason.clone();
                    row.test_accuracy = result.test_accuracy();
                    row.test_binary_accuracy = result.test.as_ref().and_then(|t| t.binary_accuracy);
                    row.confusion = result.test.as_ref().map(|t| t.confusion.clone());
                    row.best_val_accuracy = result.best_val_accuracy;
                    row.epochs = result.epochs.clone();
                    row.seconds = Some(result.seconds);
                    row.provenance = result.provenance.clone();
                }
                TrialState::Failed { attempts, reason } => {
                    (row.status, row.attempt, row.reason) =
                        ("failed".into(), *attempts, Some(reason.clone()));
                }
                TrialState::Cancelled => row.status = "cancelled".into(),
            }
            rows.push(row);
        }
        let m = sweep.rank_by;
        let better = |a: f64, b: f64| match sweep.direction {
            Direction::Max => b.total_cmp(&a),
            Direction::Min => a.total_cmp(&b),
        };
        // Stable sort: ties keep plan order; rows without the metric go last.
        rows.sort_by(|a, b| match (a.metric(m), b.metric(m)) {
            (Some(x), Some(y)) => better(x, y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        Report {
            sweep: sweep.name.clone(),
            rank_by: m,
            direction: sweep.direction,
            axes: sweep.axes.clone(),
            rows,
        }
    }

    /// For every axis with more than one value: (value, trials, mean, best) of the metric,
    /// best mean first.
    pub fn effects(&self) -> Vec<(String, Vec<AxisEffect>)> {
        let mut out = Vec::new();
        for (i, axis) in self.axes.iter().enumerate() {
            let mut values: Vec<String> = Vec::new();
            for r in &self.rows {
                if !values.contains(&r.axis_values[i]) {
                    values.push(r.axis_values[i].clone());
                }
            }
            if values.len() < 2 {
                continue;
            }
            let mut stats: Vec<AxisEffect> = values
                .into_iter()
                .map(|v| {
                    let ms: Vec<f64> = self
                        .rows
                        .iter()
                        .filter(|r| r.axis_values[i] == v)
                        .filter_map(|r| r.metric(self.rank_by))
                        .collect();
                    let n = self.rows.iter().filter(|r| r.axis_values[i] == v).count();
                    let mean = (!ms.is_empty()).then(|| ms.iter().sum::<f64>() / ms.len() as f64);
                    let best = match self.direction {
                        Direction::Max => ms.iter().copied().reduce(f64::max),
                        Direction::Min => ms.iter().copied().reduce(f64::min),
                    };
                    AxisEffect {
                        value: v,
                        trials: n,
                        mean,
                        best,
                    }
                })
                .collect();
            // Best value first; values without any result last.
            let dir = self.direction;
            stats.sort_by(|a, b| match (a.mean, b.mean) {
                (Some(x), Some(y)) if dir == Direction::Max => y.total_cmp(&x),
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            out.push((axis.clone(), stats));
        }
        out
    }

    /// Binary cross-entropy trials, whose Keras-style binary accuracy is reported too.
    pub fn bce_rows(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.test_binary_accuracy.is_some())
            .collect()
    }

    fn metric_name(&self) -> &'static str {
        match self.rank_by {
            Metric::TestAccuracy => "test acc",
            Metric::BestValAccuracy => "best val acc",
        }
    }

    /// The ranked table as markdown (also printed in the terminal).
    pub fn table(&self) -> String {
        let has_reported = self.rows.iter().any(|r| r.reported.is_some());
        let has_labels = self.rows.iter().any(|r| r.label.is_some());
        let mut head = vec!["rank".to_string(), "trial".to_string()];
        if has_labels {
            head.push("label".into());
        }
        head.extend(self.axes.iter().cloned());
        head.extend(["status".into(), "test acc".into(), "best val acc".into()]);
        if has_reported {
            head.extend(["reported".into(), "measured - reported".into()]);
        }
        head.push("seconds".into());
        let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
        let mut rank = 0;
        let mut last: Option<f64> = None;
        for (i, r) in self.rows.iter().enumerate() {
            let m = r.metric(self.rank_by);
            let cell = match m {
                Some(v) if last == Some(v) => rank.to_string(), // tie: same rank
                Some(v) => {
                    rank = i + 1;
                    last = Some(v);
                    rank.to_string()
                }
                None => "-".into(),
            };
            let mut cells = vec![cell, r.id.clone()];
            if has_labels {
                cells.push(r.label.clone().unwrap_or_default());
            }
            cells.extend(r.axis_values.iter().cloned());
            let status = match &r.reason {
                Some(why) if r.status != "completed" => {
                    format!("{} ({})", r.status, why.replace('|', "/"))
                }
                _ => r.status.clone(),
            };
            cells.extend([status, pct(r.test_accuracy), pct(r.best_val_accuracy)]);
            if has_reported {
                let diff = match (r.test_accuracy, r.reported) {
                    (Some(t), Some(rep)) => format!("{:+.2} pts", 100.0 * (t - rep)),
                    _ => "-".into(),
                };
                cells.extend([pct(r.reported), diff]);
            }
            cells.push(r.seconds.map_or("-".into(), |s| format!("{s:.0}")));
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Sweep `{}`\n\nRanked by {} ({:?}).\n\n",
            self.sweep,
            self.metric_name(),
            self.direction
        );
        out += &self.table();
        let effects = self.effects();
        if !effects.is_empty() {
            out += "\n## Effect of each axis\n\nMean and best ranking metric over the trials with each value.\n";
            for (axis, stats) in effects {
                let _ = write!(
                    out,
                    "\n### {axis}\n\n| value | trials | mean | best |\n|---|---|---|---|\n"
                );
                for AxisEffect {
                    value: v,
                    trials: n,
                    mean,
                    best,
                } in stats
                {
                    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.2}%", 100.0 * x));
                    let _ = writeln!(out, "| {v} | {n} | {} | {} |", f(mean), f(best));
                }
            }
        }
        let bce = self.bce_rows();
        if !bce.is_empty() {
            out += "\n## Binary cross-entropy: what Keras showed vs true accuracy\n\n| trial | Keras binary accuracy | true top-1 accuracy |\n|---|---|---|\n";
            for r in bce {
                let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.2}%", 100.0 * x));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    r.id,
                    f(r.test_binary_accuracy),
                    f(r.test_accuracy)
                );
            }
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from("id,label,status");
        for a in &self.axes {
            out += &format!(",{a}");
        }
        out += ",test_accuracy,best_val_accuracy,reported,seconds,worker,attempt\n";
        let field = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let num = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for r in &self.rows {
            let mut cells = vec![
                r.id.clone(),
                field(r.label.as_deref().unwrap_or("")),
                r.status.clone(),
            ];
            cells.extend(r.axis_values.iter().map(|v| field(v)));
            cells.extend([
                num(r.test_accuracy),
                num(r.best_val_accuracy),
                num(r.reported),
                num(r.seconds),
                field(r.worker.as_deref().unwrap_or("")),
                r.attempt.to_string(),
            ]);
            out += &cells.join(",");
            out.push('\n');
        }
        out
    }

    /// The four files [`Report::write`] writes, as (name, contents).
    pub fn files(&self) -> [(&'static str, String); 4] {
        [
            ("report.md", self.markdown()),
            (
                "results.json",
                serde_json::to_string_pretty(&self.rows).unwrap_or_default(),
            ),
            ("results.csv", self.csv()),
            ("report.html", crate::html::render(self)),
        ]
    }

    /// Writes report.md, results.json, results.csv and report.html into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, contents) in self.files() {
            std::fs::write(dir.join(name), contents)?;
        }
        Ok(())
    }
}

impl Report {
    /// The report of `sweep` with these results, in plan order (one per trial; fewer leaves
    /// the rest queued), taken as they are: for tests and the report fuzz target.
    pub fn from_results(
        sweep: &crate::sweep::Sweep,
        results: Vec<sweep_proto::TrialResult>,
    ) -> Report {
        use crate::core::{Config, DeviceKind, NewWorker};
        let mut core = Core::new(Config::default());
        let new = NewWorker {
            name: "w".into(),
            device: DeviceKind::Cpu,
            slots: crate::core::MAX_SLOTS,
            nonce: 0,
            secret: String::new(),
        };
        let (w, _) = core.register(new, None, 0);
        for t in &sweep.trials {
            core.add_trial(
                t.id.clone(),
                t.spec.clone(),
                TrialState::Queued { attempt: 1 },
                false,
            );
        }
        for (t, r) in sweep.trials.iter().zip(results) {
            if core.lease(&w, 1, 0).is_ok_and(|g| !g.is_empty()) {
                let _ = core.finish(&w, &t.id, 1, r, 0);
            }
        }
        let stored = StoredSweep {
            name: sweep.name.clone(),
            file: sweep.file.display().to_string(),
            data: None,
            rank_by: sweep.rank_by,
            direction: sweep.direction,
            axes: sweep.axes.clone(),
            cancelled: false,
            trials: sweep
                .trials
                .iter()
                .map(|t| (t.id.clone(), t.label.clone(), t.reported))
                .collect(),
        };
        Report::build(&stored, &core)
    }
}

/// The spec fields of a row, back as a trial (for tests and tools).
pub fn row_spec(row: &Row) -> Option<TrialSpec> {
    serde_json::from_value(row.params.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep;
    use sweep_proto::{EpochMetrics, TestMetrics, TrialResult};

    fn result(acc: f64, status: TrialStatus) -> TrialResult {
        TrialResult {
            status,
            reason: (status != TrialStatus::Completed).then(|| "loss became NaN".into()),
            epochs: (1..=3)
                .map(|epoch| EpochMetrics {
                    epoch,
                    train_loss: 2.0 / epoch as f64,
                    train_accuracy: acc * epoch as f64 / 3.0,
                    val_loss: Some(2.2 / epoch as f64),
                    val_accuracy: Some(acc * epoch as f64 / 3.1),
                    train_binary_accuracy: None,
                    val_binary_accuracy: None,
                    lr: 0.001,
                    seconds: 1.0,
                    images_per_sec: 100.0,
                })
                .collect(),
            test: (status == TrialStatus::Completed).then(|| TestMetrics {
                loss: 1.0,
                accuracy: acc,
                binary_accuracy: (acc > 0.7).then_some(0.93),
                per_class_accuracy: vec![],
                confusion: (0..10)
                    .map(|i| (0..10).map(|j| if i == j { 7 } else { 1 }).collect())
                    .collect(),
                images: 160,
            }),
            best_val_accuracy: Some(acc),
            train_images: 1,
            val_images: 1,
            parameters: 1,
            device: "cpu".into(),
            seconds: 3.0,
            notes: Vec::new(),
            diverged_epoch: (status == TrialStatus::Diverged).then_some(4),
            provenance: Some(Provenance {
                libtorch_version: "2.11.0".into(),
                ..Provenance::default()
            }),
        }
    }

    fn report_for(accs: &[Option<f64>]) -> Report {
        let text = "name = \"r\"\n[grid]\nmodel = [\"dense\", \"seed-cnn\"]\ncolor = [\"color\", \"grayscale\"]\n";
        let s = sweep::parse(text, Path::new("g.toml")).unwrap();
        let results = accs
            .iter()
            .map(|acc| match acc {
                Some(a) => result(*a, TrialStatus::Completed),
                None => result(0.0, TrialStatus::Diverged),
            })
            .collect();
        Report::from_results(&s, results)
    }

    #[test]
    fn absurd_values_from_an_old_database_render_in_bounded_time() {
        // A loss near f64::MAX made the chart axis infinite and plotters loop forever.
        let mut r = result(0.5, TrialStatus::Completed);
        r.epochs[0].train_loss = f64::MAX;
        r.epochs[1].val_loss = Some(f64::INFINITY);
        r.epochs[2].train_accuracy = 1e308;
        let mut bad_rank = result(0.5, TrialStatus::Completed);
        bad_rank.test.as_mut().unwrap().accuracy = f64::INFINITY;
        let text = "name = \"r\"\n[grid]\nseed = [1, 2]\n";
        let s = sweep::parse(text, Path::new("g.toml")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let report = Report::from_results(&s, vec![r, bad_rank]);
            let _ = tx.send(report.files().map(|f| f.1.len()));
        });
        let sizes = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the report rendered within a minute");
        assert!(sizes.iter().all(|n| *n > 0));
    }

    #[test]
    fn ranks_by_metric_keeps_failures_and_ties() {
        let r = report_for(&[Some(0.3), None, Some(0.5), Some(0.5)]);
        let statuses: Vec<&str> = r.rows.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(
            statuses,
            vec!["completed", "completed", "completed", "diverged"]
        );
        assert_eq!(r.rows[0].test_accuracy, Some(0.5));
        // Ties keep plan order and share a rank.
        let table = r.table();
        let ranks: Vec<&str> = table
            .lines()
            .skip(2)
            .map(|l| l.split('|').nth(1).unwrap().trim())
            .collect();
        assert_eq!(ranks, vec!["1", "1", "3", "-"]);
        assert!(table.contains("diverged (loss became NaN)"));
    }

    #[test]
    fn effects_per_axis() {
        let r = report_for(&[Some(0.2), Some(0.4), Some(0.6), Some(0.8)]);
        let effects = r.effects();
        assert_eq!(effects.len(), 2);
        let (axis, model) = &effects[0];
        assert_eq!(axis, "model");
        // Plan order: dense/color 0.2, dense/gray 0.4, seed-cnn/color 0.6, seed-cnn/gray 0.8.
        assert_eq!(model[0].value, "seed-cnn", "best mean first");
        assert!((model[0].mean.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(
            (model[1].value.as_str(), model[1].best, model[1].trials),
            ("dense", Some(0.4), 2)
        );
        let (_, color) = &effects[1];
        assert_eq!(color[0].value, "grayscale");
        assert!(
            (color[0].mean.unwrap() - 0.6).abs() < 1e-12,
            "grayscale mean of 0.4 and 0.8"
        );
    }

    /// The HTML report's structure: every trial, every chart, every section, findings that
    /// come from these numbers.
    #[test]
    fn html_report_has_every_part() {
        let r = report_for(&[Some(0.2), None, Some(0.6), Some(0.8)]);
        let html = crate::html::render(&r);
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        for row in &r.rows {
            assert!(
                html.contains(&format!("id=\"trial-{}\"", row.id)),
                "trial {} missing",
                row.id
            );
            assert!(html.contains(&format!("id=\"row-{}\"", row.id)));
        }
        for section in [
            "findings",
            "ranking",
            "top-curves",
            "effects",
            "confusion",
            "bce",
            "trials",
        ] {
            assert!(
                html.contains(&format!("id=\"{section}\"")),
                "section {section} missing"
            );
        }
        // 1 ranking + 2 overlays + 2 axis charts + 2 per trial.
        assert_eq!(html.matches("<svg").count(), 1 + 2 + 2 + 2 * 4);
        assert!(!html.contains("chart not drawn"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "the page must not fetch anything"
        );
        let findings = crate::html::findings(&r);
        assert!(
            findings[0].contains("seed-cnn, grayscale") && findings[0].contains("80.00%"),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with("model: seed-cnn is best on average")),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("Keras' accuracy metric would have shown 93.00%")),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("did not complete") && f.contains("diverged")),
            "{findings:?}"
        );
    }

    #[test]
    fn writes_all_three_files() {
        let r = report_for(&[Some(0.2), None, Some(0.6), Some(0.8)]);
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("report.html"))
            .unwrap()
            .contains("<svg"));
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("## Effect of each axis") && md.contains("### color"));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json.as_array().unwrap().len(), 4);
        assert_eq!(json[0]["params"]["model"], "seed-cnn");
        assert!(
            json[0]["params"]["lr"].is_number(),
            "every resolved field is present"
        );
        assert!(row_spec(&r.rows[0]).is_some());
        // Each finished row says where it came from.
        let finished = json
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] != "queued");
        for row in finished {
            assert_eq!(row["provenance"]["libtorch_version"], "2.11.0", "{row}");
        }
        let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5);
        assert!(csv.starts_with("id,label,status,model,color,test_accuracy"));
    }
}
