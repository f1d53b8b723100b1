//! The report's section on a search (`search = "tpe"`): the best value so far against the
//! trial number, and how much each axis matters.
//!
//! Rules:
//! - Trials are numbered in the order they were suggested (1-based). A trial's value is its
//!   ranking value (`rank::value`); the best so far is the best of the values up to it.
//! - Importance is the correlation ratio eta² (Pearson 1905; one-way ANOVA's share of
//!   variance) of the ranking value on each axis, over the trials with a value: a list axis
//!   groups by value, a range by quantile bins (up to [`BINS`], equal counts). An axis that a
//!   condition switches off groups its inactive trials together. eta² near 1: the axis alone
//!   explains the spread; near 0: it explains none of it. Its 90% interval is a percentile
//!   bootstrap over the trials ([`RESAMPLES`] resamples, seeded, so the report is the same
//!   every time). This is not Optuna's fANOVA (a random forest's functional ANOVA): it is
//!   marginal, one axis at a time, and says nothing of interactions.

use super::rank;
use super::tables::Table;
use super::{axis_value, pct, Row};
use crate::plan::{Direction, Metric};
use crate::sched::search::{SearchRule, Values};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Quantile bins of a range axis.
pub const BINS: usize = 4;
/// Bootstrap resamples per axis.
pub const RESAMPLES: usize = 200;

/// One suggested trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// 1-based, in suggestion order.
    pub n: usize,
    pub id: String,
    pub value: Option<f64>,
    pub best: Option<f64>,
}

/// How much one axis explains of the values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Importance {
    pub axis: String,
    pub eta2: f64,
    pub low: f64,
    pub high: f64,
    /// Trials it was computed over.
    pub trials: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSummary {
    pub budget: usize,
    pub startup: usize,
    pub seed: u64,
    pub steps: Vec<Step>,
    pub importance: Vec<Importance>,
    pub rule: SearchRule,
}

/// The best value so far at each trial of `trials` (numbered, in suggestion order, each with
/// its value if it has one), by the rules in the module doc: what the report's section and
/// the dashboard's chart both draw.
pub fn best_so_far(
    trials: impl IntoIterator<Item = (usize, String, Option<f64>)>,
    direction: Direction,
) -> Vec<Step> {
    let better = |a: f64, b: f64| match direction {
        Direction::Max => a > b,
        Direction::Min => a < b,
    };
    let mut best: Option<f64> = None;
    trials
        .into_iter()
        .map(|(n, id, value)| {
            if let Some(v) = value {
                if best.is_none_or(|b| better(v, b)) {
                    best = Some(v);
                }
            }
            Step { n, id, value, best }
        })
        .collect()
}

impl SearchSummary {
    /// The summary of a search whose trials, in suggestion order, are `order` (ids), with the
    /// report's `rows`.
    pub fn of(
        rule: &SearchRule,
        order: &[String],
        rows: &[Row],
        metric: Metric,
        direction: Direction,
    ) -> SearchSummary {
        let value = |r: &Row| rank::value(r.status, r.test_accuracy, r.best_val_accuracy, metric);
        let by_id: std::collections::HashMap<&str, &Row> =
            rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let in_report: Vec<(usize, &Row)> = order
            .iter()
            .enumerate()
            .filter_map(|(i, id)| by_id.get(id.as_str()).map(|&row| (i + 1, row)))
            .collect();
        let steps = best_so_far(
            in_report
                .iter()
                .map(|&(n, row)| (n, row.id.clone(), value(row))),
            direction,
        );
        let valued: Vec<&Row> = in_report
            .iter()
            .map(|&(_, row)| row)
            .filter(|row| value(row).is_some())
            .collect();
        let values: Vec<f64> = valued.iter().filter_map(|r| value(r)).collect();
        let importance = rule
            .axes
            .iter()
            .map(|axis| {
                let groups = groups(axis, &valued);
                let (eta2, low, high) = eta2_with_interval(&values, &groups, &axis.name);
                Importance {
                    axis: axis.name.clone(),
                    eta2,
                    low,
                    high,
                    trials: values.len(),
                }
            })
            .collect();
        SearchSummary {
            budget: rule.budget,
            startup: rule.startup,
            seed: rule.seed,
            steps,
            importance,
            rule: rule.clone(),
        }
    }

    /// One line: the budget, how far the search got, its best.
    pub fn describe(&self) -> String {
        let best = self
            .steps
            .iter()
            .filter(|s| s.value.is_some() && s.value == s.best)
            .last();
        format!(
            "TPE search: {} of {} trials suggested ({} uniform first, search_seed {}); best {}{}.",
            self.steps.len(),
            self.budget,
            self.startup,
            self.seed,
            pct(best.and_then(|s| s.value)),
            best.map_or(String::new(), |s| format!(" at trial {}", s.n))
        )
    }

    /// The trials that improved on the best so far.
    pub fn improvements(&self) -> Table {
        let mut rows = Vec::new();
        let mut last: Option<f64> = None;
        for s in &self.steps {
            if s.best.is_some() && s.best != last {
                rows.push(super::tables::TableRow {
                    id: Some(s.id.clone()),
                    cells: vec![s.n.to_string(), s.id.clone(), pct(s.best)],
                });
                last = s.best;
            }
        }
        Table {
            head: ["trial #", "id", "best so far"].map(String::from).to_vec(),
            rows,
        }
    }

    pub fn importance_table(&self) -> Table {
        let rows = self
            .importance
            .iter()
            .map(|i| super::tables::TableRow {
                id: None,
                cells: vec![
                    i.axis.clone(),
                    format!("{:.2}", i.eta2),
                    format!("{:.2}-{:.2}", i.low, i.high),
                    i.trials.to_string(),
                ],
            })
            .collect();
        Table {
            head: ["axis", "eta²", "90% interval", "trials"]
                .map(String::from)
                .to_vec(),
            rows,
        }
    }
}

/// How importance is computed, as every format states it.
pub const METHOD: &str =
    "Importance: the correlation ratio eta² of the ranking value on each axis \
(list axes grouped by value, ranges in 4 quantile bins), with a 90% percentile-bootstrap \
interval over the trials (200 resamples). One axis at a time: not fANOVA, no interactions.";

/// Each valued trial's group on `axis`: its value's index for a list, its quantile bin for a
/// range (inactive trials, where a condition left the default, form a group of their own).
fn groups(axis: &crate::sched::search::Axis, rows: &[&Row]) -> Vec<usize> {
    let raw: Vec<String> = rows
        .iter()
        .map(|r| axis_value(&r.params, &axis.name))
        .collect();
    match &axis.values {
        Values::List { .. } => {
            let mut seen: Vec<&String> = Vec::new();
            raw.iter()
                .map(|v| match seen.iter().position(|s| *s == v) {
                    Some(i) => i,
                    None => {
                        seen.push(v);
                        seen.len() - 1
                    }
                })
                .collect()
        }
        Values::Float { .. } | Values::Int { .. } => {
            let nums: Vec<Option<f64>> = raw.iter().map(|v| v.parse::<f64>().ok()).collect();
            let mut sorted: Vec<f64> = nums.iter().flatten().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let cut = |q: usize| sorted[(q * sorted.len() / BINS).min(sorted.len() - 1)];
            nums.iter()
                .map(|v| match v {
                    Some(x) if !sorted.is_empty() => (1..BINS).filter(|&q| *x >= cut(q)).count(),
                    _ => BINS,
                })
                .collect()
        }
    }
}

/// eta² = between-group sum of squares / total sum of squares (0 when nothing varies).
fn eta2(values: &[f64], groups: &[usize]) -> f64 {
    let n = values.len() as f64;
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n;
    let total: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let k = groups.iter().max().map_or(0, |m| m + 1);
    let mut sum = vec![0.0; k];
    let mut count = vec![0usize; k];
    for (v, &g) in values.iter().zip(groups) {
        sum[g] += v;
        count[g] += 1;
    }
    let between: f64 = (0..k)
        .filter(|&g| count[g] > 0)
        .map(|g| count[g] as f64 * (sum[g] / count[g] as f64 - mean).powi(2))
        .sum();
    (between / total).clamp(0.0, 1.0)
}

/// eta² and its 90% percentile-bootstrap interval, seeded by the axis name.
fn eta2_with_interval(values: &[f64], groups: &[usize], axis: &str) -> (f64, f64, f64) {
    let point = eta2(values, groups);
    if values.len() < 3 {
        return (point, 0.0, 1.0);
    }
    let seed = axis
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let (mut v, mut g) = (Vec::new(), Vec::new());
            for _ in 0..values.len() {
                let i = rng.random_range(0..values.len());
                v.push(values[i]);
                g.push(groups[i]);
            }
            eta2(&v, &g)
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((RESAMPLES - 1) as f64 * q).round() as usize];
    (point, at(0.05), at(0.95))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made: the value is set by the group alone, then not at all.
    #[test]
    fn eta2_is_the_share_of_variance_between_groups() {
        assert!((eta2(&[1.0, 1.0, 3.0, 3.0], &[0, 0, 1, 1]) - 1.0).abs() < 1e-12);
        assert!(eta2(&[1.0, 3.0, 1.0, 3.0], &[0, 0, 1, 1]).abs() < 1e-12);
        // Mean 2.5: total 2.25 + 0.25 + 0.25 + 2.25 = 5; group means 2 and 3: between
        // 4 * 0.25 = 1; eta² = 0.2.
        assert!((eta2(&[1.0, 3.0, 2.0, 4.0], &[0, 0, 1, 1]) - 0.2).abs() < 1e-12);
        let (p, lo, hi) =
            eta2_with_interval(&[1.0, 1.1, 3.0, 3.1, 1.05, 2.9], &[0, 0, 1, 1, 0, 1], "x");
        assert!(p > 0.95 && lo <= p && p <= hi && hi <= 1.0, "{p} {lo} {hi}");
    }
}
