//! The report's one view model: every trial's row, the configurations they repeat (trials
//! that differ only in `seed`) with an estimate and its 95% interval, the effect of each axis
//! with a test against its best value, and the findings. The renderers (`render` for the
//! terminal, markdown, CSV and JSON; `html`) only format this structure, so every format shows
//! the same numbers, ranks and verdicts.
//!
//! How sure a number is, the rules every renderer states:
//! - A configuration run with several seeds: mean, sample standard deviation and the 95%
//!   interval mean +- t(0.975, n - 1) sd / sqrt(n).
//! - A single run: the evaluation set's binomial sampling error, accuracy +- 1.96
//!   sqrt(p (1 - p) / N) over its N images, and the words "single run" (seed-to-seed spread,
//!   usually larger, is not measured).
//! - One value is called better than another only when Welch's t-test (two-sided, alpha 0.05)
//!   says so, which needs two or more results on each side; otherwise the difference is
//!   "within noise", or, for single runs whose gap exceeds the sampling error, unresolved
//!   until repeated with more seeds. A single result against several is not tested.
//! - Only completed trials with an accuracy in [0, 1] rank and enter an estimate.
//!
//! A search's section (best so far, each axis's importance) is in [`search`].
//!
//! Failed, diverged, cancelled and unfinished trials are listed below the ranked ones, never
//! dropped. Ranks are competition ranks (equal values share a rank, the next rank skips);
//! ties keep plan order.
//!
//! - [`rank`]: the one ranking of trials (also used to prune kept models) and [`RowStatus`].
//! - [`stats`]: means, intervals and Welch's t-test.
//! - `findings`: the sentences at the top of every report.
//! - `tables`: the report's tables as rows of cells, shared by every renderer.
//! - [`render`]: terminal, markdown, CSV and JSON.
//! - [`html`]: the self-contained report.html with SVG charts.

use crate::sched::core::{Core, TrialLookup, TrialState};
mod findings;
pub mod html;
pub mod pbt;
pub mod rank;
pub mod render;
pub mod search;
pub mod stats;
mod tables;

pub use rank::RowStatus;
pub use tables::{matched_grid, Table, TableRow, METHOD};

use crate::plan::{Direction, Metric};
use crate::store::StoredSweep;
use serde::Serialize;
use sweep_proto::{EpochMetrics, Provenance, TrialSpec};

/// One trial's row (this is also the `results.json` object).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub label: Option<String>,
    /// Every resolved trial field.
    pub params: serde_json::Value,
    /// completed, diverged, failed, stopped, cancelled, queued or running.
    pub status: RowStatus,
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
    /// The attempt resumed from a checkpoint written after this many epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from_epoch: Option<u32>,
    /// Test-set `confusion[true][predicted]`, for completed trials.
    pub confusion: Option<Vec<Vec<u64>>>,
    /// The dataset's class names, in label order (empty: CIFAR-10's).
    pub class_names: Vec<String>,
    /// Where and how the result was produced (versions, device, threads, times, data
    /// fingerprint, trainer semantics), for finished trials that recorded it.
    pub provenance: Option<Provenance>,
    /// Rank by the ranking metric among trials (competition ranking; `None` without it).
    pub rank: Option<usize>,
    /// The configuration this trial is a run of, with its estimate over all its seeds.
    pub config: Option<RowConfig>,
    /// Images the ranking metric was measured on (test or validation set).
    #[serde(skip)]
    pub metric_images: Option<u64>,
    #[serde(skip)]
    pub axis_values: Vec<String>,
}

/// A row's configuration in `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RowConfig {
    pub name: String,
    pub rank: Option<usize>,
    pub estimate: Option<Estimate>,
}

impl Row {
    /// The ranking metric of a completed trial. A diverged trial's best validation accuracy
    /// (from the epochs before it diverged) does not rank, and neither does a value that no
    /// accuracy can be (an old database may hold one): both would top the ranking.
    pub fn metric(&self, m: Metric) -> Option<f64> {
        rank::value(self.status, self.test_accuracy, self.best_val_accuracy, m)
    }

    /// "diverged (loss became NaN)", or just the status.
    pub fn status_text(&self) -> String {
        match &self.reason {
            Some(why) if self.status != RowStatus::Completed => format!("{} ({why})", self.status),
            _ => self.status.to_string(),
        }
    }

    /// The label, else the axis values (e.g. "seed-cnn, grayscale"), else the id.
    pub fn name(&self) -> String {
        match (&self.label, self.axis_values.is_empty()) {
            (Some(l), _) => l.clone(),
            (None, false) => self.axis_values.join(", "),
            (None, true) => self.id.clone(),
        }
    }
}

/// What early stopping did to a sweep: how many trials it stopped where, and the epochs the
/// sweep's ended trials trained against what they would have trained without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlySummary {
    pub rule: String,
    pub stopped: usize,
    /// Trials that ended (completed, stopped or diverged), whose epochs are counted.
    pub ended: usize,
    pub epochs_run: u64,
    /// The same trials' `epochs`: what a sweep without early stopping trains.
    pub epochs_full: u64,
    pub rungs: Vec<Rung>,
}

/// One epoch at which the rule judged trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    pub epoch: u32,
    /// Trials that trained at least this many epochs.
    pub reached: usize,
    /// Trials stopped right after this epoch.
    pub stopped: usize,
}

impl EarlySummary {
    fn of(rule: &crate::sched::early_stop::EarlyStopping, rows: &[Row]) -> EarlySummary {
        let full = |r: &Row| r.params.get("epochs").and_then(|e| e.as_u64()).unwrap_or(0);
        let ended: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                matches!(
                    r.status,
                    RowStatus::Completed | RowStatus::Diverged | RowStatus::Stopped
                )
            })
            .collect();
        let longest = rows.iter().map(full).max().unwrap_or(0) as u32;
        let stopped_at =
            |r: &&Row| (r.status == RowStatus::Stopped).then_some(r.epochs.len() as u32);
        let rungs = rule
            .rungs(longest)
            .into_iter()
            .map(|epoch| Rung {
                epoch,
                reached: rows
                    .iter()
                    .filter(|r| r.epochs.len() as u32 >= epoch)
                    .count(),
                stopped: ended
                    .iter()
                    .filter(|r| stopped_at(r) == Some(epoch))
                    .count(),
            })
            .filter(|r| r.reached > 0 || rule.method == crate::sched::early_stop::Method::Asha)
            .collect();
        EarlySummary {
            rule: rule.describe(),
            stopped: ended
                .iter()
                .filter(|r| r.status == RowStatus::Stopped)
                .count(),
            ended: ended.len(),
            epochs_run: ended.iter().map(|r| r.epochs.len() as u64).sum(),
            epochs_full: ended.iter().map(|r| full(r)).sum(),
            rungs,
        }
    }

    /// "stopped 20 of 27 ended trials; they trained 70 of 243 epochs (29%)".
    pub fn describe(&self) -> String {
        let share = if self.epochs_full > 0 {
            format!(
                " ({:.0}%)",
                100.0 * self.epochs_run as f64 / self.epochs_full as f64
            )
        } else {
            String::new()
        };
        format!(
            "Early stopping ({}) stopped {} of {} ended trials; they trained {} of the {} epochs \
             a full run of the same trials takes{share}.",
            self.rule, self.stopped, self.ended, self.epochs_run, self.epochs_full
        )
    }
}

/// The axis that makes repeats: its values are seeds, never an effect.
pub const SEED: &str = "seed";

/// How sure a number is (see the module's rules).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Interval {
    /// Two or more results: the 95% t interval of their mean.
    Repeats {
        runs: usize,
        sd: f64,
        low: f64,
        high: f64,
    },
    /// One result: the 95% interval of the evaluation set's sampling error alone.
    SingleRun {
        images: u64,
        sampling_error: f64,
        low: f64,
        high: f64,
    },
    /// One result on an evaluation set of unknown size.
    SingleRunUnknownSize,
}

/// A measured value and how sure it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub interval: Interval,
}

impl Estimate {
    /// From (metric, evaluation images) of each result; `None` without results.
    pub fn of(values: &[(f64, Option<u64>)]) -> Option<Estimate> {
        let xs: Vec<f64> = values.iter().map(|v| v.0).collect();
        let mean = stats::mean(&xs)?;
        let interval = match (stats::mean_ci(&xs), stats::sd(&xs), values) {
            // Accuracies: an interval is clipped to [0, 1] (tables::METHOD says so); two runs
            // of 0.33 and 0.66 gave "-11.72-77.22%" before.
            (Some((low, high)), Some(sd), _) => Interval::Repeats {
                runs: xs.len(),
                sd,
                low: low.max(0.0),
                high: high.min(1.0),
            },
            (_, _, [(p, Some(images))]) => match stats::sampling_se(*p, *images) {
                Some(se) => Interval::SingleRun {
                    images: *images,
                    sampling_error: se,
                    low: (p - stats::Z975 * se).max(0.0),
                    high: (p + stats::Z975 * se).min(1.0),
                },
                None => Interval::SingleRunUnknownSize,
            },
            _ => Interval::SingleRunUnknownSize,
        };
        Some(Estimate { mean, interval })
    }

    pub fn runs(&self) -> usize {
        match self.interval {
            Interval::Repeats { runs, .. } => runs,
            _ => 1,
        }
    }

    /// The 95% interval, where there is one.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match self.interval {
            Interval::Repeats { low, high, .. } | Interval::SingleRun { low, high, .. } => {
                Some((low, high))
            }
            Interval::SingleRunUnknownSize => None,
        }
    }

    pub fn sd(&self) -> Option<f64> {
        match self.interval {
            Interval::Repeats { sd, .. } => Some(sd),
            _ => None,
        }
    }

    /// What kind of interval, in words ("95% CI over 5 seeds", "single run: ...").
    pub fn basis(&self) -> String {
        match &self.interval {
            Interval::Repeats { runs, .. } => format!("95% CI over {runs} runs"),
            Interval::SingleRun { images, .. } => {
                format!("single run; 95% sampling error of {images} images")
            }
            Interval::SingleRunUnknownSize => "single run".into(),
        }
    }

    /// "37.63% [35.10, 40.16]" with the basis in words.
    pub fn describe(&self) -> String {
        match self.bounds() {
            Some((lo, hi)) => format!(
                "{} [{:.2}, {:.2}] ({})",
                pct(Some(self.mean)),
                100.0 * lo,
                100.0 * hi,
                self.basis()
            ),
            None => format!("{} ({})", pct(Some(self.mean)), self.basis()),
        }
    }
}

/// A fraction as a percentage with two decimals, "-" for none.
pub fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// What a comparison of two sets of results concluded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Welch's t-test rejects equal means at alpha 0.05.
    Better { p: f64 },
    /// Welch's t-test does not (`p`), or single runs lie within their sampling error (`p` none).
    WithinNoise { p: Option<f64> },
    /// Single runs further apart than their sampling error: seed-to-seed spread is unmeasured,
    /// so no verdict until repeated.
    NeedsRepeats,
    /// One side has a single result and the other several, or a single run's evaluation set
    /// is of unknown size: no standard test applies.
    Untested,
}

impl Verdict {
    /// Compares results `a` (the better mean) with `b`, as the module's rules say.
    pub fn of(a: &[(f64, Option<u64>)], b: &[(f64, Option<u64>)]) -> Option<Verdict> {
        let xa: Vec<f64> = a.iter().map(|v| v.0).collect();
        let xb: Vec<f64> = b.iter().map(|v| v.0).collect();
        if let Some((_, _, p)) = stats::welch(&xa, &xb) {
            return Some(if p < stats::ALPHA {
                Verdict::Better { p }
            } else {
                Verdict::WithinNoise { p: Some(p) }
            });
        }
        let se = |v: &[(f64, Option<u64>)]| match v {
            [(p, Some(n))] => stats::sampling_se(*p, *n),
            _ => None,
        };
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let (Some(sa), Some(sb)) = (se(a), se(b)) else {
            return Some(Verdict::Untested);
        };
        let gap = (stats::mean(&xa)? - stats::mean(&xb)?).abs();
        Some(if gap <= stats::Z975 * (sa * sa + sb * sb).sqrt() {
            Verdict::WithinNoise { p: None }
        } else {
            Verdict::NeedsRepeats
        })
    }

    /// "better (Welch's t-test p = 0.003)", "within noise (p = 0.41)", ...
    pub fn describe(&self) -> String {
        match self {
            Verdict::Better { p } => format!("better (Welch's t-test {})", p_value(*p)),
            Verdict::WithinNoise { p: Some(p) } => {
                format!("within noise (Welch's t-test {})", p_value(*p))
            }
            Verdict::WithinNoise { p: None } => {
                "within noise (single runs, inside the sampling error)".into()
            }
            Verdict::Untested => {
                "not tested: a single result against several (or of unknown size)".into()
            }
            Verdict::NeedsRepeats => {
                "not settled: single runs further apart than their sampling error; repeat with more seeds"
                    .into()
            }
        }
    }
}

/// "p = 0.028", or "p < 0.001" below that.
fn p_value(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// Trials that differ only in their seed: one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub name: String,
    pub label: Option<String>,
    /// Values of the sweep's axes other than `seed`.
    pub axis_values: Vec<String>,
    /// Its trials' ids, in plan order.
    pub trials: Vec<String>,
    pub rank: Option<usize>,
    pub estimate: Option<Estimate>,
    pub reported: Option<f64>,
    /// Whether the reported number lies inside the measured 95% interval.
    pub reported_inside: Option<bool>,
    #[serde(skip)]
    values: Vec<(f64, Option<u64>)>,
    /// Every resolved field but `seed`.
    #[serde(skip)]
    params: serde_json::Value,
}

/// Two configurations identical in every field but one axis: the cleanest comparison a sweep
/// offers (an axis' marginal means mix in whatever else varies with it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matched {
    pub axis: String,
    /// The configuration with the better mean, and its value of the axis.
    pub better: String,
    pub better_value: String,
    pub other: String,
    pub other_value: String,
    /// Difference of the means (positive: `better` is ahead).
    pub gap: f64,
    pub verdict: Verdict,
}

/// The ranking metric over the trials that share one value of an axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AxisEffect {
    pub value: String,
    pub trials: usize,
    pub estimate: Option<Estimate>,
    pub best: Option<f64>,
    /// Against the axis' best value (`None` for the best itself, or without results).
    pub vs_best: Option<Verdict>,
    #[serde(skip)]
    values: Vec<(f64, Option<u64>)>,
}

impl AxisEffect {
    pub fn mean(&self) -> Option<f64> {
        self.estimate.as_ref().map(|e| e.mean)
    }
}

/// Every value of one axis, best mean first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AxisEffects {
    pub axis: String,
    pub values: Vec<AxisEffect>,
    /// Whether every value of the axis comes with the same other settings (a full grid
    /// over it). Otherwise the marginal means mix in what varies with the axis, and no
    /// value is tested against another here: the matched pairs compare them all else equal.
    pub balanced: bool,
}

pub struct Report {
    pub sweep: String,
    pub rank_by: Metric,
    pub direction: Direction,
    pub axes: Vec<String>,
    /// Ranked rows first, then rows without the metric, in plan order.
    pub rows: Vec<Row>,
    /// Ranked configurations first (by mean), then those without results.
    pub configs: Vec<Config>,
    /// For every axis but `seed` with more than one value.
    pub effects: Vec<AxisEffects>,
    /// Pairs of configurations that differ in one axis only, best of each group against the
    /// rest.
    pub matched: Vec<Matched>,
    /// Plain-language findings, each computed from the results above.
    pub findings: Vec<String>,
    /// Only for a sweep with `[early_stopping]`.
    pub early_stopping: Option<EarlySummary>,
    /// Only for a search (`search = "tpe"`).
    pub search: Option<search::SearchSummary>,
    /// Only for a population (`search = "pbt"`).
    pub pbt: Option<pbt::PbtSummary>,
}

/// `params` without the fields `keys` (e.g. the seed, or the axis being compared).
fn without(params: &serde_json::Value, keys: &[&str]) -> serde_json::Value {
    let mut rest = params.clone();
    if let Some(o) = rest.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    rest
}

/// A trial's value of `axis` (`augment.shift`: a field of a table).
pub(crate) fn axis_value(params: &serde_json::Value, axis: &str) -> String {
    let found = axis.split('.').try_fold(params, |v, key| v.get(key));
    match found {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    }
}

impl Row {
    /// Trial `t` of `sweep` as it stands.
    fn of(
        sweep: &StoredSweep,
        t: &crate::store::SweepTrial,
        trial: &crate::sched::core::Trial,
    ) -> Row {
        let (id, label, reported) = (&t.id, &t.label, &t.reported);
        let params = serde_json::to_value(&trial.spec).unwrap_or_default();
        // The values it ended with (a PBT segment's after its changes).
        let end = serde_json::to_value(&*trial.spec.at_epoch(trial.spec.last_epoch()))
            .unwrap_or_default();
        let mut row = Row {
            id: id.to_string(),
            label: label.clone(),
            axis_values: sweep.axes.iter().map(|a| axis_value(&end, a)).collect(),
            params,
            status: RowStatus::Queued,
            reason: None,
            test_accuracy: None,
            best_val_accuracy: None,
            test_binary_accuracy: None,
            reported: *reported,
            epochs: Vec::new(),
            seconds: None,
            worker: None,
            attempt: 0,
            resumed_from_epoch: None,
            confusion: None,
            class_names: Vec::new(),
            provenance: None,
            rank: None,
            config: None,
            metric_images: None,
        };
        match &trial.state {
            TrialState::Queued { attempt } => {
                (row.status, row.attempt) = (RowStatus::Queued, *attempt)
            }
            TrialState::Running {
                attempt,
                worker,
                epochs,
                ..
            } => {
                (row.status, row.attempt, row.worker) =
                    (RowStatus::Running, *attempt, Some(worker.to_string()));
                row.epochs = epochs.clone();
            }
            TrialState::Finished {
                attempt,
                worker,
                result,
            } => {
                row.status = RowStatus::of(result.status);
                row.attempt = *attempt;
                row.worker = Some(worker.to_string());
                row.reason = result.reason.clone();
                row.test_accuracy = result.test_accuracy();
                row.test_binary_accuracy = result.test.as_ref().and_then(|t| t.binary_accuracy);
                row.confusion = result.test.as_ref().map(|t| t.confusion.clone());
                row.class_names = result
                    .test
                    .as_ref()
                    .map(|t| t.class_names.clone())
                    .unwrap_or_default();
                row.best_val_accuracy = result.best_val_accuracy;
                row.epochs = result.epochs.clone();
                row.seconds = Some(result.seconds);
                row.provenance = result.provenance.clone();
                row.resumed_from_epoch = result.resumed_from_epoch;
                row.metric_images = match sweep.rank_by {
                    Metric::TestAccuracy => result.test.as_ref().map(|t| t.images),
                    Metric::BestValAccuracy => Some(result.val_images),
                };
            }
            TrialState::Failed { attempts, reason } => {
                (row.status, row.attempt, row.reason) =
                    (RowStatus::Failed, *attempts, Some(reason.clone()));
            }
            TrialState::Cancelled => row.status = RowStatus::Cancelled,
        }
        row
    }
}

impl Report {
    /// The report of `sweep` over its trials as `trials` holds them (the core, or a snapshot
    /// of it taken so that the report is built outside the core's lock).
    pub fn build(sweep: &StoredSweep, trials: &impl TrialLookup) -> Report {
        let mut rows = Vec::new();
        for t in &sweep.trials {
            if let Some(trial) = trials.trial(&t.id) {
                rows.push(Row::of(sweep, t, trial));
            }
        }
        let order: Vec<String> = sweep.trials.iter().map(|t| t.id.to_string()).collect();
        let m = sweep.rank_by;
        // Stable sort: ties keep plan order; rows without the metric go last.
        rows.sort_by(|a, b| rank::order(sweep.direction, a.metric(m), b.metric(m)));
        let mut report = Report {
            sweep: sweep.name.clone(),
            rank_by: m,
            direction: sweep.direction,
            axes: sweep.axes.clone(),
            rows,
            configs: Vec::new(),
            effects: Vec::new(),
            matched: Vec::new(),
            findings: Vec::new(),
            early_stopping: None,
            search: None,
            pbt: None,
        };
        report.early_stopping = sweep
            .early_stopping
            .as_ref()
            .map(|rule| EarlySummary::of(rule, &report.rows));
        report.search = sweep
            .search
            .as_ref()
            .map(|rule| search::SearchSummary::of(rule, &order, &report.rows, m, sweep.direction));
        report.summarise();
        // After the ranks: the best member is the best-ranked of the last generation.
        report.pbt = sweep
            .pbt
            .as_ref()
            .and_then(|rule| pbt::PbtSummary::of(rule, &order, &report.rows, trials));
        report
    }

    /// The better of two values of the ranking metric comes first.
    fn order(&self, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
        rank::order(self.direction, a, b)
    }

    /// Ranks, configurations, effects and findings from the rows.
    fn summarise(&mut self) {
        let trial_ranks = competition_ranks(
            &self
                .rows
                .iter()
                .map(|r| r.metric(self.rank_by))
                .collect::<Vec<_>>(),
        );
        for (row, rank) in self.rows.iter_mut().zip(trial_ranks) {
            row.rank = rank;
        }
        self.configs = self.group_configs();
        let by_trial: std::collections::HashMap<&str, &Config> = self
            .configs
            .iter()
            .flat_map(|c| c.trials.iter().map(move |t| (t.as_str(), c)))
            .collect();
        let row_configs: Vec<Option<RowConfig>> = self
            .rows
            .iter()
            .map(|row| {
                by_trial.get(row.id.as_str()).map(|c| RowConfig {
                    name: c.name.clone(),
                    rank: c.rank,
                    estimate: c.estimate.clone(),
                })
            })
            .collect();
        for (row, config) in self.rows.iter_mut().zip(row_configs) {
            row.config = config;
        }
        self.effects = self.axis_effects();
        self.matched = self.matched_pairs();
        self.findings = findings::findings(self);
    }

    fn value(&self, r: &Row) -> Option<(f64, Option<u64>)> {
        r.metric(self.rank_by).map(|v| (v, r.metric_images))
    }

    /// Trials grouped by everything but their seed (and by label), ranked by mean.
    fn group_configs(&self) -> Vec<Config> {
        let seed_axis = self.axes.iter().position(|a| a == SEED);
        let mut configs: Vec<(String, Config)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        // Rows are ranked, so a configuration appears where its best trial does.
        for r in &self.rows {
            let params = without(&r.params, &[SEED]);
            let key = format!("{:?}\u{0}{params}", r.label);
            let axis_values: Vec<String> = r
                .axis_values
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != seed_axis)
                .map(|(_, v)| v.clone())
                .collect();
            let i = match index.get(&key) {
                Some(&i) => i,
                None => {
                    index.insert(key.clone(), configs.len());
                    let name = match (&r.label, axis_values.is_empty()) {
                        (Some(l), _) => l.clone(),
                        (None, false) => axis_values.join(", "),
                        (None, true) => r.id.clone(),
                    };
                    configs.push((
                        key,
                        Config {
                            name,
                            label: r.label.clone(),
                            axis_values,
                            trials: Vec::new(),
                            rank: None,
                            estimate: None,
                            reported: None,
                            reported_inside: None,
                            values: Vec::new(),
                            params,
                        },
                    ));
                    configs.len() - 1
                }
            };
            let c = &mut configs[i].1;
            c.trials.push(r.id.clone());
            c.reported = c.reported.or(r.reported);
            c.values.extend(self.value(r));
        }
        let mut configs: Vec<Config> = configs.into_iter().map(|(_, c)| c).collect();
        for c in &mut configs {
            c.estimate = Estimate::of(&c.values);
            c.reported_inside = match (c.reported, c.estimate.as_ref().and_then(Estimate::bounds)) {
                (Some(r), Some((lo, hi))) => Some((lo..=hi).contains(&r)),
                _ => None,
            };
        }
        // Stable: equal means keep the order of their best trial.
        configs.sort_by(|a, b| {
            self.order(
                a.estimate.as_ref().map(|e| e.mean),
                b.estimate.as_ref().map(|e| e.mean),
            )
        });
        let ranks = competition_ranks(
            &configs
                .iter()
                .map(|c| c.estimate.as_ref().map(|e| e.mean))
                .collect::<Vec<_>>(),
        );
        for (c, rank) in configs.iter_mut().zip(ranks) {
            c.rank = rank;
        }
        configs
    }

    /// For every axis but `seed`: configurations equal in every other field, grouped; in each
    /// group the best mean against each other member.
    fn matched_pairs(&self) -> Vec<Matched> {
        let mut out = Vec::new();
        for axis in self.axes.iter().filter(|a| *a != SEED) {
            let mut groups: Vec<(String, Vec<&Config>)> = Vec::new();
            let mut index: std::collections::HashMap<String, usize> = Default::default();
            for c in self.configs.iter().filter(|c| c.estimate.is_some()) {
                let rest = without(&c.params, &[axis]);
                // Labels are names, not settings: "r1 seed-cnn color" and "r1 seed-cnn
                // grayscale" still match on `color`.
                let key = rest.to_string();
                match index.get(&key) {
                    Some(&i) => groups[i].1.push(c),
                    None => {
                        index.insert(key.clone(), groups.len());
                        groups.push((key, vec![c]));
                    }
                }
            }
            let value = |c: &Config| axis_value(&c.params, axis);
            // Configurations are ranked, so each group's first member has the best mean.
            for (_, group) in groups.iter().filter(|g| g.1.len() > 1) {
                let best = group[0];
                for other in &group[1..] {
                    let (Some(a), Some(b)) = (&best.estimate, &other.estimate) else {
                        continue;
                    };
                    // Split by label alone (an include lending its label to some seeds of a
                    // grid point): the same settings, nothing to compare.
                    if value(best) == value(other) {
                        continue;
                    }
                    let Some(verdict) = Verdict::of(&best.values, &other.values) else {
                        continue;
                    };
                    out.push(Matched {
                        axis: axis.clone(),
                        better: best.name.clone(),
                        better_value: value(best),
                        other: other.name.clone(),
                        other_value: value(other),
                        gap: (a.mean - b.mean).abs(),
                        verdict,
                    });
                }
            }
        }
        out
    }

    /// For every axis but `seed` with more than one value: each value's estimate over its
    /// trials, best mean first, each compared with the best.
    fn axis_effects(&self) -> Vec<AxisEffects> {
        let mut out = Vec::new();
        for (i, axis) in self.axes.iter().enumerate() {
            if axis == SEED {
                continue;
            }
            let mut values: Vec<String> = Vec::new();
            for r in &self.rows {
                if !values.contains(&r.axis_values[i]) {
                    values.push(r.axis_values[i].clone());
                }
            }
            if values.len() < 2 {
                continue;
            }
            let mut effects: Vec<AxisEffect> = values
                .into_iter()
                .map(|v| {
                    let rows: Vec<&Row> =
                        self.rows.iter().filter(|r| r.axis_values[i] == v).collect();
                    let values: Vec<(f64, Option<u64>)> =
                        rows.iter().filter_map(|r| self.value(r)).collect();
                    let best = values
                        .iter()
                        .map(|x| Some(x.0))
                        .min_by(|a, b| self.order(*a, *b))
                        .flatten();
                    AxisEffect {
                        value: v,
                        trials: rows.len(),
                        estimate: Estimate::of(&values),
                        best,
                        vs_best: None,
                        values,
                    }
                })
                .collect();
            effects.sort_by(|a, b| self.order(a.mean(), b.mean()));
            let balanced = self.balanced(i, axis);
            if balanced {
                let best = effects[0].values.clone();
                for e in effects.iter_mut().skip(1) {
                    e.vs_best = Verdict::of(&best, &e.values);
                }
            }
            out.push(AxisEffects {
                axis: axis.clone(),
                values: effects,
                balanced,
            });
        }
        out
    }

    /// Whether every value of axis `i` appears with the same set of other settings (labels
    /// and seeds aside).
    fn balanced(&self, i: usize, axis: &str) -> bool {
        let mut contexts: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
            Default::default();
        for r in &self.rows {
            let rest = without(&r.params, &[axis, SEED]);
            contexts
                .entry(r.axis_values[i].as_str())
                .or_default()
                .insert(rest.to_string());
        }
        let mut sets = contexts.values();
        let first = sets.next();
        sets.all(|s| Some(s) == first)
    }

    /// Binary cross-entropy trials, whose Keras-style binary accuracy is reported too.
    pub fn bce_rows(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.test_binary_accuracy.is_some())
            .collect()
    }

    pub fn metric_name(&self) -> &'static str {
        match self.rank_by {
            Metric::TestAccuracy => "test acc",
            Metric::BestValAccuracy => "best val acc",
        }
    }

    /// Whether any configuration has more than one trial (repeats).
    pub fn has_repeats(&self) -> bool {
        self.configs.iter().any(|c| c.trials.len() > 1)
    }
}

/// Competition ranks of values already sorted best first: equal values share a rank and the
/// next rank skips ("1, 1, 3"); no value, no rank.
pub fn competition_ranks(sorted: &[Option<f64>]) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(sorted.len());
    let mut last: Option<(f64, usize)> = None;
    for (i, v) in sorted.iter().enumerate() {
        out.push(v.map(|v| match last {
            Some((prev, rank)) if prev == v => rank,
            _ => {
                last = Some((v, i + 1));
                i + 1
            }
        }));
    }
    out
}

impl Report {
    /// The report of `sweep` with these results, in plan order (one per trial; fewer leaves
    /// the rest queued), taken as they are: for tests and the report fuzz target.
    pub fn from_results(
        sweep: &crate::plan::Sweep,
        results: Vec<sweep_proto::TrialResult>,
    ) -> Report {
        use crate::sched::core::{Config, DeviceKind, NewWorker};
        let mut core = Core::new(Config::default());
        let new = NewWorker {
            name: "w".into(),
            device: DeviceKind::Cpu,
            slots: crate::sched::core::MAX_SLOTS,
            nonce: 0,
            secret: String::new(),
        };
        let w = core.register(new, None, 0).0.id;
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
            early_stopping: None,
            checkpoints: Default::default(),
            keep_models: Default::default(),
            search: None,
            pbt: None,
            trials: sweep
                .trials
                .iter()
                .map(|t| crate::store::SweepTrial {
                    id: t.id.clone(),
                    label: t.label.clone(),
                    reported: t.reported,
                })
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
    use crate::plan;
    use std::path::Path;
    use sweep_proto::{EpochMetrics, TestMetrics, TrialResult, TrialStatus};

    fn result(acc: f64, status: TrialStatus) -> TrialResult {
        let epochs = (1..=3)
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
            .collect();
        let mut r = TrialResult::builder()
            .status(status)
            .epochs(epochs)
            .best_val_accuracy(acc)
            .images(1, 1)
            .parameters(1)
            .seconds(3.0)
            .provenance(Provenance {
                libtorch_version: "2.11.0".into(),
                ..Provenance::default()
            });
        if status != TrialStatus::Completed {
            r = r.reason("loss became NaN");
        } else {
            r = r.test(TestMetrics {
                loss: 1.0,
                accuracy: acc,
                binary_accuracy: (acc > 0.7).then_some(0.93),
                per_class_accuracy: vec![],
                confusion: (0..10)
                    .map(|i| (0..10).map(|j| if i == j { 7 } else { 1 }).collect())
                    .collect(),
                images: 160,
                class_names: Vec::new(),
            });
        }
        if status == TrialStatus::Diverged {
            r = r.diverged_epoch(4);
        }
        r.build()
    }

    /// A worker's text reaches report.md as text: HTML in a reason is escaped (Markdown
    /// viewers render raw HTML; report.html already escaped it). Notes, devices and class
    /// names are not in report.md; every table cell and finding goes through `md_text`.
    #[test]
    fn worker_text_cannot_put_html_into_report_md() {
        let text = "name = \"r\"\n[grid]\nseed = [1, 2]\n";
        let s = plan::parse(text, Path::new("g.toml")).unwrap();
        let mut failed = result(0.0, TrialStatus::Failed);
        failed.reason = Some("<script>alert(1)</script>\nsecond | line".into());
        let r = Report::from_results(&s, vec![failed, result(0.5, TrialStatus::Completed)]);
        let md = crate::report::render::markdown(&r);
        assert!(!md.contains("<script"), "{md}");
        assert!(
            md.contains("&lt;script&gt;alert(1)&lt;/script&gt; second / line"),
            "{md}"
        );
    }

    fn report_for(accs: &[Option<f64>]) -> Report {
        let text = "name = \"r\"\n[grid]\nmodel = [\"dense\", \"seed-cnn\"]\ncolor = [\"color\", \"grayscale\"]\n";
        let s = plan::parse(text, Path::new("g.toml")).unwrap();
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
        let s = plan::parse(text, Path::new("g.toml")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let report = Report::from_results(&s, vec![r, bad_rank]);
            let sizes: Vec<usize> = crate::report::render::files(&report)
                .iter()
                .map(|f| f.1.len())
                .collect();
            let _ = tx.send(sizes);
        });
        let sizes = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the report rendered within a minute");
        assert!(sizes.iter().all(|n| *n > 0));
    }

    /// Accuracy intervals stay within [0, 1]: two runs of 0.33 and 0.66 (the quick sweep's
    /// "-11.72-77.22%"), and one run of 0.99 on 50 images.
    #[test]
    fn accuracy_intervals_are_clipped_to_what_accuracies_can_be() {
        let two = Estimate::of(&[(0.33, None), (0.66, None)]).unwrap();
        assert_eq!(two.bounds().map(|b| b.0), Some(0.0));
        let one = Estimate::of(&[(0.99, Some(50))]).unwrap();
        assert_eq!(one.bounds().map(|b| b.1), Some(1.0));
        assert!(tables::METHOD.contains("clipped to [0, 100%]"));
    }

    /// A binary cross-entropy and a cross-entropy are drawn on charts of their own.
    #[test]
    fn each_loss_function_gets_its_own_loss_chart() {
        let text = "name = \"r\"\n[grid]\nloss = [\"cross-entropy\", \"binary-cross-entropy\"]\n";
        let s = plan::parse(text, Path::new("g.toml")).unwrap();
        let r = Report::from_results(
            &s,
            vec![
                result(0.5, TrialStatus::Completed),
                result(0.4, TrialStatus::Completed),
            ],
        );
        let html = crate::report::html::render(&r);
        assert!(html.contains("training loss (cross-entropy)"), "{html}");
        assert!(html.contains("training loss (binary-cross-entropy)"));
        assert!(!html.contains("training loss<"));
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
        let table = crate::report::render::table(&r);
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
        let effects = &r.effects;
        assert_eq!(effects.len(), 2);
        let (axis, model) = (&effects[0].axis, &effects[0].values);
        assert_eq!(axis, "model");
        // Plan order: dense/color 0.2, dense/gray 0.4, seed-cnn/color 0.6, seed-cnn/gray 0.8.
        assert_eq!(model[0].value, "seed-cnn", "best mean first");
        assert!((model[0].mean().unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(
            (model[1].value.as_str(), model[1].best, model[1].trials),
            ("dense", Some(0.4), 2)
        );
        let color = &effects[1].values;
        assert_eq!(color[0].value, "grayscale");
        assert!(
            (color[0].mean().unwrap() - 0.6).abs() < 1e-12,
            "grayscale mean of 0.4 and 0.8"
        );
    }

    /// The HTML report's structure: every trial, every chart, every section, findings that
    /// come from these numbers.
    #[test]
    fn html_report_has_every_part() {
        let r = report_for(&[Some(0.2), None, Some(0.6), Some(0.8)]);
        let html = crate::report::html::render(&r);
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        for row in &r.rows {
            assert!(
                html.contains(&format!("id=\"trial-{}\"", row.id)),
                "trial {} missing",
                row.id
            );
            assert!(html.contains(&format!("id=\"row-{}\"", row.id)));
            // The rank the markdown shows is the rank the page shows.
            let rank = row.rank.map_or("-".into(), |n| n.to_string());
            assert!(html.contains(&format!(
                "<tr id=\"row-{}\"><td class=\"l\">{rank}</td>",
                row.id
            )));
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
        let findings = &r.findings;
        assert!(
            findings[0].contains("seed-cnn, grayscale")
                && findings[0].contains("80.00%")
                && findings[0].contains("single run"),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with("model: seed-cnn has the best mean")),
            "{findings:?}"
        );
        for f in findings {
            assert!(
                html.contains(&esc_for_test(f)),
                "finding missing from the page: {f}"
            );
        }
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

    fn esc_for_test(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    /// A sweep of `model` x `color` with `repeats` seeds each: accuracies from `acc(model,
    /// color, seed)`, 10,000 test images each.
    fn repeated(repeats: u32, acc: impl Fn(&str, &str, u64) -> f64) -> Report {
        let text = format!("name = \"r\"\nrepeats = {repeats}\n[grid]\nmodel = [\"dense\", \"seed-cnn\"]\ncolor = [\"color\", \"grayscale\"]\n");
        let s = plan::parse(&text, Path::new("g.toml")).unwrap();
        let results = s
            .trials
            .iter()
            .map(|t| {
                let a = acc(
                    &t.spec.model.to_string(),
                    if t.spec.color == sweep_proto::ColorMode::Color {
                        "color"
                    } else {
                        "grayscale"
                    },
                    t.spec.seed,
                );
                let mut r = result(a, TrialStatus::Completed);
                r.test.as_mut().unwrap().images = 10_000;
                r
            })
            .collect();
        Report::from_results(&s, results)
    }

    /// Three seeds per configuration: every format carries the mean and its 95% t interval,
    /// the seed axis is not an effect, a clear gap is called better by Welch's t-test and an
    /// overlapping one "within noise".
    #[test]
    fn repeats_give_intervals_and_tested_findings_in_every_format() {
        // seed-cnn is 20 points above dense (seed noise +-1 point): a real effect. Colour and
        // grayscale differ by 0.2 points against the same noise: no effect.
        let noise = |seed: u64| [0.01, -0.01, 0.0][(seed % 3) as usize];
        let r = repeated(3, |model, color, seed| {
            let base = if model == "seed-cnn" { 0.6 } else { 0.4 };
            base + if color == "color" { 0.002 } else { 0.0 }
                + noise(seed + if color == "color" { 1 } else { 0 })
        });
        assert_eq!(r.configs.len(), 4);
        let best = &r.configs[0];
        let est = best.estimate.as_ref().unwrap();
        assert_eq!(est.runs(), 3);
        let (lo, hi) = est.bounds().unwrap();
        let half = 4.302_652_73 * est.sd().unwrap() / 3f64.sqrt();
        assert!((hi - lo - 2.0 * half).abs() < 1e-9 && lo < est.mean && est.mean < hi);
        assert_eq!(
            r.effects
                .iter()
                .map(|e| e.axis.as_str())
                .collect::<Vec<_>>(),
            ["model", "color"]
        );
        let model = &r.effects[0].values;
        assert!(
            matches!(model[1].vs_best, Some(Verdict::Better { p }) if p < 0.001),
            "{model:?}"
        );
        let color = &r.effects[1].values;
        assert!(
            matches!(color[1].vs_best, Some(Verdict::WithinNoise { p: Some(p) }) if p > 0.5),
            "{color:?}"
        );
        let findings = r.findings.join("\n");
        assert!(
            findings.contains("model: seed-cnn has the best mean"),
            "{findings}"
        );
        assert!(
            findings.contains("within noise (Welch's t-test p = "),
            "{findings}"
        );
        assert!(findings.contains("model's is the largest"), "{findings}");

        let [(_, md), (_, json), (_, csv), (_, html)]: [(&str, String); 4] =
            crate::report::render::files(&r).try_into().unwrap();
        let interval = format!("{:.2}-{:.2}%", 100.0 * lo, 100.0 * hi);
        assert!(
            md.contains("## Configurations") && md.contains(&interval),
            "{md}"
        );
        assert!(
            md.contains("95% CI over 3 runs") && md.contains("within noise"),
            "{md}"
        );
        assert!(html.contains(&interval) && html.contains("within noise"));
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        let first = &rows[0]["config"];
        assert_eq!(first["estimate"]["interval"]["kind"], "repeats");
        assert_eq!(first["estimate"]["interval"]["runs"], 3);
        assert_eq!(first["estimate"]["interval"]["low"].as_f64(), Some(lo));
        assert!(csv
            .lines()
            .next()
            .unwrap()
            .ends_with(",rank,config,config_rank,config_runs,config_mean,config_sd,config_ci95_low,config_ci95_high,config_basis"));
        // The best trial's line ends with its configuration: name, rank 1, 3 runs, the estimate.
        let tail = format!(
            ",\"{}\",1,3,{},{},{lo},{hi},95% CI over 3 runs",
            best.name,
            est.mean,
            est.sd().unwrap()
        );
        assert!(
            csv.lines().nth(1).unwrap().ends_with(&tail),
            "{csv}\n{tail}"
        );
    }

    /// Single runs: the test set's sampling error, the words "single run", and no verdict of
    /// "better" from one run each.
    #[test]
    fn single_runs_carry_the_sampling_error_and_are_never_called_better() {
        let r = repeated(1, |model, _, _| if model == "seed-cnn" { 0.6 } else { 0.4 });
        let est = r.configs[0].estimate.as_ref().unwrap();
        let se = (0.6f64 * 0.4 / 10_000.0).sqrt();
        assert_eq!(
            est.bounds().unwrap(),
            (0.6 - stats::Z975 * se, 0.6 + stats::Z975 * se)
        );
        assert!(est.basis().contains("single run"));
        let model = &r.effects[0].values;
        // Two runs a side (the colour axis varies within each model value): Welch's t-test.
        assert!(matches!(
            model[1].vs_best,
            Some(Verdict::Better { .. }) | Some(Verdict::WithinNoise { .. })
        ));
        let r = repeated(1, |model, color, _| match (model, color) {
            ("seed-cnn", "color") => 0.6,
            ("seed-cnn", _) => 0.601,
            (_, "color") => 0.3,
            _ => 0.5,
        });
        // Single runs 0.1 points apart on 10,000 images: inside the sampling error.
        assert_eq!(
            Verdict::of(&[(0.601, Some(10_000))], &[(0.6, Some(10_000))]),
            Some(Verdict::WithinNoise { p: None })
        );
        assert_eq!(
            Verdict::of(&[(0.6, Some(10_000))], &[(0.5, Some(10_000))]),
            Some(Verdict::NeedsRepeats)
        );
        let md = crate::report::render::markdown(&r);
        assert!(
            md.contains("single run; 95% sampling error of 10000 images"),
            "{md}"
        );
        assert!(
            !r.findings.iter().any(|f| f.contains("better (")),
            "{:?}",
            r.findings
        );
    }

    /// The study's round 1 is unbalanced (dense in colour only): the colour axis' marginal
    /// means mix dense in, the matched comparison does not: seed-cnn colour vs seed-cnn
    /// grayscale, whatever the labels.
    #[test]
    fn matched_comparisons_hold_everything_else_equal() {
        let text = "name = \"r1\"\nrepeats = 3\n[[include]]\nlabel = \"dense\"\nmodel = \"dense\"\n\
                    [[include]]\nlabel = \"cnn colour\"\nmodel = \"seed-cnn\"\n\
                    [[include]]\nlabel = \"cnn gray\"\nmodel = \"seed-cnn\"\ncolor = \"grayscale\"\n";
        let s = plan::parse(text, Path::new("r1.toml")).unwrap();
        let accs = [0.10, 0.11, 0.12, 0.46, 0.40, 0.43, 0.47, 0.45, 0.41];
        let results = accs
            .iter()
            .map(|a| {
                let mut r = result(*a, TrialStatus::Completed);
                r.test.as_mut().unwrap().images = 10_000;
                r
            })
            .collect();
        let r = Report::from_results(&s, results);
        // The colour axis is unbalanced (dense only in colour): no marginal verdict.
        let fx = r.effects.iter().find(|e| e.axis == "color").unwrap();
        assert!(!fx.balanced && fx.values.iter().all(|v| v.vs_best.is_none()));
        assert!(r
            .findings
            .iter()
            .any(|f| f.contains("values come with different other settings")));
        assert!(
            !r.findings
                .iter()
                .any(|f| f.starts_with("color:") && f.contains("better (")),
            "{:?}",
            r.findings
        );
        let color: Vec<&Matched> = r.matched.iter().filter(|m| m.axis == "color").collect();
        assert_eq!(color.len(), 1, "{:?}", r.matched);
        let m = color[0];
        assert_eq!(
            (m.better.as_str(), m.other.as_str()),
            ("cnn gray", "cnn colour")
        );
        assert_eq!(
            (m.better_value.as_str(), m.other_value.as_str()),
            ("grayscale", "color")
        );
        let (_, _, p) = stats::welch(&[0.47, 0.45, 0.41], &[0.46, 0.40, 0.43]).unwrap();
        assert_eq!(m.verdict, Verdict::WithinNoise { p: Some(p) });
        let md = crate::report::render::markdown(&r);
        assert!(
            md.contains("## All else equal") && md.contains("grayscale (cnn gray)"),
            "{md}"
        );
        assert!(crate::report::html::render(&r).contains("id=\"matched\""));
    }

    /// Only completed trials with an accuracy in [0, 1] rank: a diverged trial's best
    /// validation accuracy and an infinite accuracy from an old database would top the list.
    #[test]
    fn diverged_and_impossible_values_do_not_rank() {
        let text = "name = \"r\"\nrank_by = \"best_val_accuracy\"\n[grid]\nseed = [1, 2, 3]\n";
        let s = plan::parse(text, Path::new("g.toml")).unwrap();
        let mut diverged = result(0.0, TrialStatus::Diverged);
        diverged.best_val_accuracy = Some(0.9);
        let mut impossible = result(0.5, TrialStatus::Completed);
        impossible.best_val_accuracy = Some(f64::INFINITY);
        let r = Report::from_results(
            &s,
            vec![diverged, impossible, result(0.4, TrialStatus::Completed)],
        );
        let ranked: Vec<(Option<usize>, Option<f64>)> = r
            .rows
            .iter()
            .map(|row| (row.rank, row.metric(r.rank_by)))
            .collect();
        assert_eq!(
            ranked,
            vec![(Some(1), Some(0.4)), (None, None), (None, None)]
        );
        assert!(r.findings[0].contains("40.00%"), "{:?}", r.findings);
    }

    #[test]
    fn competition_ranks_share_ties() {
        let v = [Some(0.5), Some(0.5), Some(0.3), Some(0.3), Some(0.1), None];
        assert_eq!(
            competition_ranks(&v),
            vec![Some(1), Some(1), Some(3), Some(3), Some(5), None]
        );
    }

    #[test]
    fn writes_all_three_files() {
        let r = report_for(&[Some(0.2), None, Some(0.6), Some(0.8)]);
        let dir = tempfile::tempdir().unwrap();
        crate::report::render::write(&r, dir.path()).unwrap();
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
