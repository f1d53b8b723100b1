//! Early stopping: which running trials are not worth their remaining epochs.
//!
//! Pure like the scheduling core: a [`Stopper`] is fed each trial's per-epoch metric as it is
//! reported and answers with a [`Decision`]; nothing here knows about time, the network or the
//! database, so the rules are tested on hand-made sequences.
//!
//! Rules (a sweep's `[early_stopping]`):
//! - **ASHA** (asynchronous successive halving, Li et al. 2020): rungs at
//!   `grace_epochs * reduction_factor^k` epochs, below the trial's last epoch (stopping there
//!   would save nothing). A trial reaching a rung is compared with every trial of the sweep
//!   that has reached that rung so far, itself included: it continues only if its value at
//!   that epoch is among the best `ceil(n / reduction_factor)` of those `n` (ties continue).
//!   The first trials to arrive therefore continue, and a trial is judged only against those
//!   that came before it: order matters, as in any asynchronous rule.
//! - **Median** (the median stopping rule, Golovin et al. 2017, with best-so-far values as
//!   Optuna's median pruner): from `grace_epochs` on, a trial stops when its best value so far
//!   is worse than the median of the best values of the other trials at the same epoch, once
//!   at least `min_trials` others have reached that epoch.
//! - Values are the validation accuracy (higher is better) or loss (lower is better) of the
//!   epoch; an epoch without one (no validation split) is never judged.
//! - A trial told to stop is told again if it reports again (the answer was lost), until it is
//!   leased anew: a new attempt is judged afresh at its rungs.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use sweep_proto::EpochMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Asha,
    Median,
}

/// The metric the rules compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    #[default]
    ValAccuracy,
    ValLoss,
}

impl StopMetric {
    pub fn of(self, m: &EpochMetrics) -> Option<f64> {
        match self {
            StopMetric::ValAccuracy => m.val_accuracy,
            StopMetric::ValLoss => m.val_loss,
        }
    }

    pub fn higher_is_better(self) -> bool {
        self == StopMetric::ValAccuracy
    }

    /// `a` is strictly better than `b`.
    fn better(self, a: f64, b: f64) -> bool {
        match self {
            StopMetric::ValAccuracy => a > b,
            StopMetric::ValLoss => a < b,
        }
    }

    fn best(self, a: f64, b: f64) -> f64 {
        if self.better(b, a) {
            b
        } else {
            a
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopMetric::ValAccuracy => "val_accuracy",
            StopMetric::ValLoss => "val_loss",
        }
    }
}

/// A sweep's `[early_stopping]` section, checked (see `plan::parse`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub method: Method,
    #[serde(default)]
    pub metric: StopMetric,
    /// No trial is stopped before this many epochs.
    pub grace_epochs: u32,
    /// ASHA's eta: rungs grow by this factor and keep the top 1/eta.
    pub reduction_factor: u32,
    /// Median: others that must have reached an epoch before it is judged.
    pub min_trials: u32,
}

pub const DEFAULT_GRACE: u32 = 1;
pub const DEFAULT_REDUCTION: u32 = 3;
pub const DEFAULT_MIN_TRIALS: u32 = 3;

impl EarlyStopping {
    /// The epochs at which ASHA judges a trial of `epochs` epochs (every epoch from the grace
    /// on, below the last, for the median rule).
    pub fn rungs(&self, epochs: u32) -> Vec<u32> {
        let mut rungs = Vec::new();
        match self.method {
            Method::Asha => {
                let mut r = self.grace_epochs.max(1) as u64;
                while r < epochs as u64 {
                    rungs.push(r as u32);
                    r *= self.reduction_factor.max(2) as u64;
                }
            }
            Method::Median => rungs.extend(self.grace_epochs.max(1)..epochs),
        }
        rungs
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self.method {
            Method::Asha => format!(
                "ASHA on {}, grace {} epoch(s), reduction factor {}",
                self.metric.name(),
                self.grace_epochs,
                self.reduction_factor
            ),
            Method::Median => format!(
                "median rule on {}, grace {} epoch(s), at least {} other trial(s)",
                self.metric.name(),
                self.grace_epochs,
                self.min_trials
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Continue,
    /// Stop after this epoch; the reason goes into the result.
    Stop(String),
}

/// The reported values of one sweep's trials and the rule that judges them.
#[derive(Debug, Clone)]
pub struct Stopper {
    pub rule: EarlyStopping,
    /// Per trial, its metric at epoch i+1 (`None` where the epoch had none).
    history: HashMap<String, Vec<Option<f64>>>,
    /// Attempts told to stop, with why: told again if they report again.
    stopped: HashMap<(String, u32), String>,
}

impl Stopper {
    pub fn new(rule: EarlyStopping) -> Stopper {
        Stopper {
            rule,
            history: HashMap::new(),
            stopped: HashMap::new(),
        }
    }

    /// Takes in the epochs of a trial known from before (a stored result, a restart): they
    /// count for the others' decisions but decide nothing themselves.
    pub fn remember(&mut self, trial: &str, epochs: &[EpochMetrics]) {
        let h = self.history.entry(trial.to_string()).or_default();
        for m in epochs {
            put(h, m.epoch, self.rule.metric.of(m));
        }
    }

    /// A trial of `epochs` epochs reported epoch `m` in `attempt`: should it go on?
    pub fn report(&mut self, trial: &str, attempt: u32, epochs: u32, m: &EpochMetrics) -> Decision {
        let value = self.rule.metric.of(m);
        let h = self.history.entry(trial.to_string()).or_default();
        put(h, m.epoch, value);
        if let Some(why) = self.stopped.get(&(trial.to_string(), attempt)) {
            return Decision::Stop(why.clone());
        }
        let Some(value) = value else {
            return Decision::Continue;
        };
        if !self.rule.rungs(epochs).contains(&m.epoch) {
            return Decision::Continue;
        }
        let decision = match self.rule.method {
            Method::Asha => self.asha(m.epoch, value),
            Method::Median => self.median(trial, m.epoch),
        };
        if let Decision::Stop(why) = &decision {
            self.stopped
                .insert((trial.to_string(), attempt), why.clone());
        }
        decision
    }

    /// The values at `epoch` of every trial that reached it (this one included).
    fn at(&self, epoch: u32) -> impl Iterator<Item = (&String, f64)> {
        self.history
            .iter()
            .filter_map(move |(t, h)| h.get(epoch as usize - 1).copied().flatten().map(|v| (t, v)))
    }

    fn asha(&self, epoch: u32, value: f64) -> Decision {
        let metric = self.rule.metric;
        let n = self.at(epoch).count();
        let keep = n.div_ceil(self.rule.reduction_factor.max(2) as usize);
        let better = self
            .at(epoch)
            .filter(|(_, v)| metric.better(*v, value))
            .count();
        if better < keep {
            Decision::Continue
        } else {
            Decision::Stop(format!(
                "ASHA rung at epoch {epoch}: {} {value:.4} is not in the top {keep} of the {n} \
                 trials that reached it",
                metric.name()
            ))
        }
    }

    /// Best value of `trial` over its first `epoch` epochs.
    fn best_until(&self, h: &[Option<f64>], epoch: u32) -> Option<f64> {
        let metric = self.rule.metric;
        if h.len() < epoch as usize {
            return None;
        }
        h[..epoch as usize]
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| metric.best(a, b))
    }

    fn median(&self, trial: &str, epoch: u32) -> Decision {
        let metric = self.rule.metric;
        let Some(mine) = self
            .history
            .get(trial)
            .and_then(|h| self.best_until(h, epoch))
        else {
            return Decision::Continue;
        };
        let mut others: Vec<f64> = self
            .history
            .iter()
            .filter(|(t, _)| t.as_str() != trial)
            .filter_map(|(_, h)| self.best_until(h, epoch))
            .collect();
        if others.len() < self.rule.min_trials.max(1) as usize {
            return Decision::Continue;
        }
        others.sort_by(f64::total_cmp);
        let k = others.len();
        let median = if k % 2 == 1 {
            others[k / 2]
        } else {
            (others[k / 2 - 1] + others[k / 2]) / 2.0
        };
        if metric.better(median, mine) {
            Decision::Stop(format!(
                "median rule at epoch {epoch}: best {} {mine:.4} is worse than the median \
                 {median:.4} of {k} other trials",
                metric.name()
            ))
        } else {
            Decision::Continue
        }
    }
}

fn put(h: &mut Vec<Option<f64>>, epoch: u32, value: Option<f64>) {
    let i = epoch.max(1) as usize - 1;
    if h.len() <= i {
        h.resize(i + 1, None);
    }
    h[i] = value;
    // A trial reporting epoch e again (a new attempt) starts its later epochs over.
    h.truncate(i + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(grace: u32, eta: u32) -> EarlyStopping {
        EarlyStopping {
            method: Method::Asha,
            metric: StopMetric::ValAccuracy,
            grace_epochs: grace,
            reduction_factor: eta,
            min_trials: DEFAULT_MIN_TRIALS,
        }
    }

    fn epoch(e: u32, acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: e,
            train_loss: 1.0,
            train_accuracy: acc,
            val_loss: Some(2.0 - acc),
            val_accuracy: Some(acc),
            train_binary_accuracy: None,
            val_binary_accuracy: None,
            lr: 0.1,
            seconds: 1.0,
            images_per_sec: 1.0,
        }
    }

    /// Feeds `(trial, epoch, accuracy)` in order; returns the trials told to stop, with the
    /// epoch.
    fn run(s: &mut Stopper, epochs: u32, reports: &[(&str, u32, f64)]) -> Vec<(String, u32)> {
        let mut stopped = Vec::new();
        for &(t, e, acc) in reports {
            if let Decision::Stop(_) = s.report(t, 1, epochs, &epoch(e, acc)) {
                stopped.push((t.to_string(), e));
            }
        }
        stopped
    }

    #[test]
    fn asha_rungs_grow_by_the_factor_below_the_last_epoch() {
        assert_eq!(asha(1, 3).rungs(27), vec![1, 3, 9]);
        assert_eq!(asha(1, 3).rungs(9), vec![1, 3]);
        assert_eq!(asha(2, 2).rungs(16), vec![2, 4, 8]);
        assert_eq!(asha(4, 3).rungs(4), Vec::<u32>::new());
        let mut median = asha(2, 3);
        median.method = Method::Median;
        assert_eq!(median.rungs(5), vec![2, 3, 4]);
    }

    #[test]
    fn asha_keeps_the_top_third_of_those_that_reached_a_rung() {
        let mut s = Stopper::new(asha(1, 3));
        // a arrives first: 1 of 1 reached, top ceil(1/3) = 1 -> continues.
        // b worse than a: top 1 of 2 -> stops. c best: continues. d (4th, keep 2): second
        // best -> continues; e (5th, keep 2): third -> stops.
        let stopped = run(
            &mut s,
            9,
            &[
                ("a", 1, 0.30),
                ("b", 1, 0.20),
                ("c", 1, 0.50),
                ("d", 1, 0.40),
                ("e", 1, 0.35),
            ],
        );
        assert_eq!(stopped, vec![("b".into(), 1), ("e".into(), 1)]);
        // Between rungs nobody is judged; at rung 3 a (first there) continues, c better
        // continues, d worst of 3 (keep 1) stops.
        let stopped = run(
            &mut s,
            9,
            &[
                ("a", 2, 0.1),
                ("a", 3, 0.45),
                ("c", 2, 0.1),
                ("c", 3, 0.60),
                ("d", 3, 0.44),
            ],
        );
        assert_eq!(stopped, vec![("d".into(), 3)]);
    }

    #[test]
    fn asha_depends_on_arrival_order_not_on_trial_names() {
        // The same three values, worst first: nobody has a better one before them.
        let mut s = Stopper::new(asha(1, 3));
        let stopped = run(&mut s, 4, &[("z", 1, 0.1), ("y", 1, 0.2), ("x", 1, 0.3)]);
        assert!(stopped.is_empty(), "{stopped:?}");
        // Best first: the two later, worse ones stop.
        let mut s = Stopper::new(asha(1, 3));
        let stopped = run(&mut s, 4, &[("x", 1, 0.3), ("y", 1, 0.2), ("z", 1, 0.1)]);
        assert_eq!(stopped, vec![("y".into(), 1), ("z".into(), 1)]);
    }

    #[test]
    fn ties_continue_and_loss_is_lower_is_better() {
        let mut s = Stopper::new(asha(1, 2));
        assert!(run(&mut s, 3, &[("a", 1, 0.5), ("b", 1, 0.5)]).is_empty());
        let mut rule = asha(1, 2);
        rule.metric = StopMetric::ValLoss;
        let mut s = Stopper::new(rule);
        // val_loss = 2 - acc: a 1.5, b 1.2 (better), c 1.8 (worse than both; keep 2 of 3).
        let stopped = run(&mut s, 3, &[("a", 1, 0.5), ("b", 1, 0.8), ("c", 1, 0.2)]);
        assert_eq!(stopped, vec![("c".into(), 1)]);
    }

    #[test]
    fn trials_known_from_before_count_and_epochs_without_the_metric_are_not_judged() {
        let mut s = Stopper::new(asha(1, 3));
        s.remember("done", &[epoch(1, 0.9), epoch(2, 0.9), epoch(3, 0.9)]);
        assert_eq!(run(&mut s, 3, &[("new", 1, 0.5)]), vec![("new".into(), 1)]);
        let mut blind = epoch(1, 0.1);
        blind.val_accuracy = None;
        assert_eq!(s.report("other", 1, 3, &blind), Decision::Continue);
    }

    #[test]
    fn a_stopped_attempt_is_told_again_and_a_new_attempt_is_judged_afresh() {
        let mut s = Stopper::new(asha(1, 3));
        run(&mut s, 9, &[("a", 1, 0.9)]);
        assert!(matches!(
            s.report("b", 1, 9, &epoch(1, 0.1)),
            Decision::Stop(_)
        ));
        // The worker missed the answer and trained on: still stop.
        assert!(matches!(
            s.report("b", 1, 9, &epoch(2, 0.1)),
            Decision::Stop(_)
        ));
        // Attempt 2 (after its worker was lost) does better at the rung: it continues.
        assert_eq!(s.report("b", 2, 9, &epoch(1, 0.95)), Decision::Continue);
    }

    #[test]
    fn median_rule_waits_for_enough_trials_and_compares_best_so_far() {
        let mut rule = asha(2, 3);
        rule.method = Method::Median;
        rule.min_trials = 2;
        let mut s = Stopper::new(rule);
        let reports = [
            ("a", 1, 0.5),
            ("a", 2, 0.6),
            ("b", 1, 0.4),
            // b at epoch 2: only one other trial there -> not judged.
            ("b", 2, 0.45),
            ("c", 1, 0.7),
            ("c", 2, 0.3),
            // c's best so far (0.7) beats the median of a (0.6) and b (0.45): continues.
            ("d", 1, 0.2),
            ("d", 2, 0.5),
            // d's best 0.5 < median of a, b, c bests (0.6, 0.45, 0.7) = 0.6: stops.
            ("e", 1, 0.1),
            // epoch 1 is before the grace: never judged.
        ];
        assert_eq!(run(&mut s, 5, &reports), vec![("d".into(), 2)]);
        // At the last epoch nobody is judged (nothing to save).
        assert!(run(&mut s, 2, &[("f", 2, 0.0)]).is_empty());
    }
}
