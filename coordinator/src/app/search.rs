//! Searches that learn from their results (`search = "tpe"`), run by the coordinator: each
//! active search's [`Searcher`] and the sweep settings its suggestions take.
//!
//! Rules:
//! - A suggestion is made when a worker asks for work and no queued trial fits it: for each
//!   free slot, each search with budget left (by sweep name) suggests one trial the worker's
//!   device can run. The suggestion is written in the lease's batch, before the lease: it is
//!   on disk before any worker hears of it, and a batch the disk refuses takes both back.
//! - What a trial tells the model ([`outcome`]): a completed or early-stopped trial its
//!   ranking value (the report's, `report::rank::value`), negated when larger is better; a
//!   diverged one is worse than any value; a queued or running one is pending, which the
//!   model leaves out (`sched::search::PENDING`, measured against a constant liar); a
//!   failed or cancelled one, or one whose value cannot rank, is left out.
//! - Opening a database or submitting the sweep again restores a search from its stored
//!   members. Finished trials of other sweeps that fit the space are prior observations
//!   (the first [`MAX_PRIOR`] by id), before the members.
//! - A suggestion is always a trial the coordinator does not have yet, of a device the asking
//!   worker has: it is leased at once, in the same batch.
//! - With `[early_stopping] method = "asha"` the search is BOHB-like (Falkner et al. 2018):
//!   the model is fitted at the largest budget (an ASHA rung, or the trials' full length) at
//!   which enough trials (`max(startup_trials, axes + 1)`) have a value of the early-stopping
//!   metric; a trial counts with its value at that epoch, so a trial stopped at a rung counts
//!   there with its rung's value. A trial that has not reached that epoch is pending while
//!   it is queued or running, and left out once it ended short of it.
//! - A cancelled search suggests nothing until its sweep is submitted again.

use super::settings::SweepSettings;
use super::Shared;
use crate::plan::Direction;
use crate::report::rank::{self, RowStatus};
use crate::sched::core::{TrialId, TrialState};
use crate::sched::early_stop::{EarlyStopping, Method};
use crate::sched::search::{model_budget, Next, Searcher};
use crate::sched::tpe::{Observation, Outcome};
use crate::store::Write;
use sweep_proto::{TrialSpec, TrialStatus};

/// At most this many earlier trials are prior observations (in id order): each suggestion
/// models every observation under the core's lock, about 12 ms per 10,000
/// (docs/PERFORMANCE.md, "Search").
pub const MAX_PRIOR: usize = 5_000;

/// A search as the coordinator runs it.
#[derive(Debug, Clone)]
pub struct ActiveSearch {
    pub searcher: Searcher,
    /// The sweep's settings, which its suggestions take.
    pub sweep: SweepSettings,
    /// The base trial (for the device its trials ask for).
    base: TrialSpec,
    /// The longest a trial of the space trains (BOHB's full budget).
    epochs: u32,
}

/// What trial state `state` tells a search ranking by `sweep`'s metric and direction.
pub fn outcome(state: Option<&TrialState>, sweep: &SweepSettings) -> Outcome {
    match state {
        None | Some(TrialState::Failed { .. } | TrialState::Cancelled) => Outcome::Failed,
        Some(TrialState::Queued { .. } | TrialState::Running { .. }) => Outcome::Pending,
        Some(TrialState::Finished { result, .. }) => match result.status {
            TrialStatus::Diverged => Outcome::Diverged,
            TrialStatus::Failed => Outcome::Failed,
            TrialStatus::Completed | TrialStatus::Stopped => {
                match rank::value(
                    RowStatus::of(result.status),
                    result.test_accuracy(),
                    result.best_val_accuracy,
                    sweep.rank_by,
                ) {
                    Some(v) if sweep.direction == Direction::Max => Outcome::Loss(-v),
                    Some(v) => Outcome::Loss(v),
                    None => Outcome::Failed,
                }
            }
        },
    }
}

/// What trial state `state` tells a BOHB model at `epoch` by the early-stopping metric (the
/// rules in the module doc).
pub fn outcome_at(state: Option<&TrialState>, epoch: u32, rule: &EarlyStopping) -> Outcome {
    let value = state
        .map_or(&[][..], TrialState::epochs)
        .iter()
        .find(|m| m.epoch == epoch)
        .and_then(|m| rule.metric.of(m));
    match (value, state) {
        (Some(v), _) if !v.is_finite() => Outcome::Diverged,
        (Some(v), _) if rule.metric.higher_is_better() => Outcome::Loss(-v),
        (Some(v), _) => Outcome::Loss(v),
        (None, Some(TrialState::Queued { .. } | TrialState::Running { .. })) => Outcome::Pending,
        (None, Some(TrialState::Finished { result, .. }))
            if result.status == TrialStatus::Diverged =>
        {
            Outcome::Diverged
        }
        (None, _) => Outcome::Failed,
    }
}

impl ActiveSearch {
    /// The observations the next suggestion is made from: at the full result, or (BOHB) at
    /// the largest budget with enough values, which comes back with them.
    fn observations<'a>(
        &'a self,
        state: impl Fn(&TrialId) -> Option<&'a TrialState>,
    ) -> (Vec<Observation>, Option<u32>) {
        let full = |state: &dyn Fn(&TrialId) -> Option<&'a TrialState>| {
            (
                self.searcher
                    .observations(|id| outcome(state(id), &self.sweep)),
                None,
            )
        };
        let rule = match self.sweep.early_stopping {
            Some(rule) if rule.method == Method::Asha => rule,
            _ => return full(&state),
        };
        let mut budgets = rule.rungs(self.epochs);
        budgets.push(self.epochs);
        let enough = self
            .searcher
            .rule
            .startup
            .max(self.searcher.dims().len() + 1);
        let observed_at = |e: u32| {
            self.searcher
                .count(|id| matches!(outcome_at(state(id), e, &rule), Outcome::Loss(_)))
        };
        match model_budget(&budgets, observed_at, enough) {
            Some(e) => (
                self.searcher
                    .observations(|id| outcome_at(state(id), e, &rule)),
                Some(e),
            ),
            None => full(&state),
        }
    }
}

impl Shared {
    /// Installs (or, with no rule, removes) sweep `s`'s search, from its stored members; a
    /// member suggested here whose write is still in the open batch is kept.
    pub(crate) fn apply_search(&mut self, s: &SweepSettings) {
        let old = self.searches.remove(&s.name);
        let Some(rule) = &s.search else { return };
        let mut searcher = match Searcher::new(rule.clone()) {
            Ok(searcher) => searcher,
            Err(e) => {
                tracing::error!(sweep = %s.name, "its stored search does not hold together: {e}");
                return;
            }
        };
        let Ok(base) = toml::Value::Table(rule.base.clone()).try_into::<TrialSpec>() else {
            tracing::error!(sweep = %s.name, "its stored search's defaults are not a trial");
            return;
        };
        let stored: std::collections::HashSet<&TrialId> = s.trials.iter().collect();
        let in_flight: Vec<TrialId> = old
            .iter()
            .flat_map(|o| o.searcher.members().cloned().collect::<Vec<_>>())
            .filter(|id| !stored.contains(id))
            .collect();
        for id in s.trials.iter().chain(&in_flight) {
            if let Some(t) = self.core.trial(id) {
                searcher.add_member(id.clone(), &t.spec);
            }
        }
        let mut others: Vec<(&TrialId, &TrialSpec)> = self
            .core
            .trials()
            .filter(|(_, t)| matches!(t.state, TrialState::Finished { .. }))
            .map(|(id, t)| (id, &t.spec))
            .collect();
        others.sort_by(|a, b| a.0.cmp(b.0));
        for (id, spec) in others {
            if searcher.prior_count() >= MAX_PRIOR {
                break;
            }
            searcher.add_prior(id.clone(), spec);
        }
        if s.cancelled {
            searcher.exhaust("the sweep was cancelled".into());
        }
        if searcher.prior_count() > 0 {
            tracing::info!(sweep = %s.name, prior = searcher.prior_count(), members = searcher.member_count(), "search restored with earlier sweeps' trials as observations");
        }
        let epochs = crate::plan::longest_epochs(rule).unwrap_or(base.epochs);
        self.searches.insert(
            s.name.clone(),
            ActiveSearch {
                searcher,
                sweep: s.clone(),
                base,
                epochs,
            },
        );
    }

    /// Sweep `name`'s search, if it has one.
    pub fn searcher(&self, name: &str) -> Option<&Searcher> {
        self.searches.get(name).map(|a| &a.searcher)
    }

    /// Trials sweep `name`'s search has still to suggest (0 for a sweep without one).
    pub fn to_suggest(&self, name: &str) -> usize {
        self.searches.get(name).map_or(0, |a| a.searcher.left())
    }

    /// A search's members so far, if sweep `name` has a search.
    pub fn members(&self, name: &str) -> Option<Vec<TrialId>> {
        self.searches
            .get(name)
            .map(|a| a.searcher.members().cloned().collect())
    }

    /// Stops sweep `name`'s suggestions (it was cancelled).
    pub(crate) fn stop_search(&mut self, name: &str) {
        if let Some(a) = self.searches.get_mut(name) {
            a.searcher.exhaust("the sweep was cancelled".into());
        }
    }

    /// Up to `n` new trials for `worker` from the searches, queued in the core and added to
    /// the open batch; returns how many.
    pub(crate) fn suggest(&mut self, worker: &str, n: u32) -> u32 {
        let Some((device, room)) = self.core.room(worker) else {
            return 0;
        };
        let mut names: Vec<String> = self
            .searches
            .iter()
            .filter(|(_, a)| a.searcher.left() > 0 && device.can_run(a.base.device))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        let mut made = 0;
        for name in names {
            while made < n.min(room) && self.suggest_one(&name, device) {
                made += 1;
            }
        }
        made
    }

    /// One suggestion of sweep `name`'s search that a `device` worker can run, queued and
    /// written; false when it has none. A trial the coordinator already has (another sweep's,
    /// in any state) is drawn again, so every suggestion is a new trial that this worker
    /// leases at once.
    fn suggest_one(&mut self, name: &str, device: crate::sched::core::DeviceKind) -> bool {
        let Some(active) = self.searches.get(name) else {
            return false;
        };
        let (observations, model_epoch) =
            active.observations(|id| self.core.trial(id).map(|t| &t.state));
        let next = active.searcher.next_where(&observations, |id, spec| {
            self.core.trial(id).is_none() && device.can_run(spec.device)
        });
        let (id, spec) = match next {
            Ok(Next::Suggest { id, spec, .. }) => (id, spec),
            Ok(Next::Done | Next::Refused) => return false,
            Ok(Next::Exhausted(why)) => return self.exhaust(name, why),
            Err(e) => return self.exhaust(name, e.to_string()),
        };
        self.core.add_trial(
            id.clone(),
            spec.clone(),
            TrialState::Queued { attempt: 1 },
            false,
        );
        let Some(active) = self.searches.get_mut(name) else {
            return false;
        };
        let position = active.searcher.member_count();
        active.searcher.add_member(id.clone(), &spec);
        let sweep = active.sweep.clone();
        self.settle(&sweep, &id);
        tracing::info!(sweep = %name, trial = %id, position, model_epoch = ?model_epoch, "suggested");
        self.enqueue(Write::Suggest {
            sweep: name.to_string(),
            trial: id,
            spec: Box::new(spec),
        });
        true
    }

    fn exhaust(&mut self, name: &str, why: String) -> bool {
        tracing::warn!(sweep = %name, "the search ends early: {why}");
        if let Some(a) = self.searches.get_mut(name) {
            a.searcher.exhaust(why);
        }
        false
    }

    /// Takes back a suggestion whose write the disk refused (always a trial new to the core).
    pub(crate) fn unsuggest(&mut self, sweep: &str, trial: &TrialId) {
        if let Some(a) = self.searches.get_mut(sweep) {
            a.searcher.remove_member(trial);
        }
        self.core.remove_queued(trial);
        self.settings.remove(trial);
    }
}
