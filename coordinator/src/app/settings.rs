//! A trial's sweep-level settings: what the sweep that queued it says about running it (where
//! its data is, when it checkpoints, whether its model is kept, which early-stopping rule
//! judges it). A trial may belong to several sweeps; the one submitted last decides.
//!
//! One function ([`restore`]) reads them back from the store, in submission order, and one
//! method ([`Shared::apply`]) installs a sweep's settings over its trials: opening a database,
//! picking up another process's writes and submitting all go through the two, so they cannot
//! disagree.

use super::Shared;
use crate::plan::{CheckpointPolicy, Direction, KeepModels, Metric, Sweep};
use crate::sched::core::TrialId;
use crate::sched::early_stop::{Decision, EarlyStopping, Stopper};
use crate::sched::pbt::PbtRule;
use crate::sched::search::SearchRule;
use crate::store::{Store, StoreError, StoredSweep};
use sweep_proto::EpochMetrics;

/// What a trial's (last) sweep says about running it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSettings {
    /// Dataset directory to suggest to workers (`None`: the worker's own).
    pub data_hint: Option<String>,
    /// When it saves checkpoints.
    pub checkpoints: CheckpointPolicy,
    /// Whether its trained model is sent and kept (keep_models is not "none").
    pub keep_model: bool,
    /// The sweep whose early-stopping rule judges it, if that sweep has one.
    pub judged_by: Option<String>,
}

impl Default for TrialSettings {
    fn default() -> TrialSettings {
        TrialSettings {
            data_hint: None,
            checkpoints: CheckpointPolicy::default(),
            keep_model: true,
            judged_by: None,
        }
    }
}

/// A sweep's settings for its trials, from a sweep file or from its stored row.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub name: String,
    pub data: Option<String>,
    pub checkpoints: CheckpointPolicy,
    pub keep_models: KeepModels,
    pub early_stopping: Option<EarlyStopping>,
    /// `search = "tpe"`: the rule; `trials` are then its members so far.
    pub search: Option<SearchRule>,
    /// `search = "pbt"`: the rule; `trials` are then its segments so far.
    pub pbt: Option<PbtRule>,
    /// What a search ranks its observations by.
    pub rank_by: Metric,
    pub direction: Direction,
    pub cancelled: bool,
    pub trials: Vec<TrialId>,
}

impl From<&Sweep> for SweepSettings {
    fn from(s: &Sweep) -> SweepSettings {
        SweepSettings {
            name: s.name.clone(),
            data: s.data.as_ref().map(|d| d.display().to_string()),
            checkpoints: s.checkpoints,
            keep_models: s.keep_models,
            early_stopping: s.early_stopping,
            search: s.search.clone(),
            pbt: s.pbt.clone(),
            rank_by: s.rank_by,
            direction: s.direction,
            cancelled: false,
            trials: s.trials.iter().map(|t| t.id.clone()).collect(),
        }
    }
}

impl From<StoredSweep> for SweepSettings {
    fn from(s: StoredSweep) -> SweepSettings {
        SweepSettings {
            name: s.name,
            data: s.data,
            checkpoints: s.checkpoints,
            keep_models: s.keep_models,
            early_stopping: s.early_stopping,
            search: s.search,
            pbt: s.pbt,
            rank_by: s.rank_by,
            direction: s.direction,
            cancelled: s.cancelled,
            trials: s.trials.into_iter().map(|t| t.id).collect(),
        }
    }
}

/// Every stored sweep's settings, in submission order (apply them in this order: the last
/// sweep submitted with a trial decides for it).
pub fn restore(store: &Store) -> Result<Vec<SweepSettings>, StoreError> {
    let mut out = Vec::new();
    for name in store.sweep_names_by_submission()? {
        if let Some(s) = store.sweep(&name)? {
            out.push(SweepSettings::from(s));
        }
    }
    Ok(out)
}

impl Shared {
    /// A trial's settings (the defaults for a trial no sweep named).
    pub fn settings(&self, trial: &str) -> TrialSettings {
        self.settings.get(trial).cloned().unwrap_or_default()
    }

    /// Installs sweep `s`'s settings over its trials, and its early-stopping rule (or, with
    /// none, removes the one it had), remembering the epochs its trials already have. A sweep
    /// whose rule is unchanged keeps its stopper, with the verdicts it gave.
    pub fn apply(&mut self, s: &SweepSettings) {
        let kept = self
            .stoppers
            .remove(&s.name)
            .filter(|old| Some(old.rule) == s.early_stopping);
        for t in self.settings.values_mut() {
            if t.judged_by.as_deref() == Some(s.name.as_str()) {
                t.judged_by = None;
            }
        }
        if let Some(stopper) = kept.or_else(|| s.early_stopping.map(Stopper::new)) {
            self.stoppers.insert(s.name.clone(), stopper);
        }
        for id in &s.trials {
            self.settle(s, id);
            let epochs = self.core.trial(id).map_or(&[][..], |t| t.state.epochs());
            if let Some(stopper) = self.stoppers.get_mut(&s.name) {
                stopper.remember(id, epochs);
            }
        }
        self.apply_search(s);
        self.apply_population(s);
    }

    /// Sweep `s`'s settings for one of its trials. The sweep submitted last decides for its
    /// trials, early-stopping rule or no rule.
    pub(crate) fn settle(&mut self, s: &SweepSettings, id: &TrialId) {
        let judged_by = self.stoppers.contains_key(&s.name).then(|| s.name.clone());
        let t = self.settings.entry(id.clone()).or_default();
        if let Some(data) = &s.data {
            t.data_hint = Some(data.clone());
        }
        t.checkpoints = s.checkpoints;
        t.keep_model = s.keep_models != KeepModels::None;
        t.judged_by = judged_by;
    }

    /// The early-stopping verdict on an epoch just reported (`None`: go on).
    pub fn judge(&mut self, trial: &str, attempt: u32, m: &EpochMetrics) -> Option<String> {
        let sweep = self.settings.get(trial)?.judged_by.as_ref()?;
        let epochs = self.core.trial(trial)?.spec.epochs;
        let stopper = self.stoppers.get_mut(sweep)?;
        match stopper.report(trial, attempt, epochs, m) {
            // The rule leads the reason: a later sweep reuses the stopped result only under
            // the same rule (see `Store::add_sweep`).
            Decision::Stop(why) => Some(format!("{}: {why}", stopper.rule.describe())),
            Decision::Continue => None,
        }
    }
}
