//! Searches that learn from their results (`search = "tpe"`), run by the coordinator: each
//! active search's [`Searcher`] and the sweep settings its suggestions take.
//!
//! Rules:
//! - A suggestion is made when a worker asks for work and no queued trial fits it: for each
//!   free slot, each search with budget left (by sweep name) suggests one trial the worker's
//!   device can run. The suggestion is written in the lease's batch, before the lease: it is
//!   on disk before any worker hears of it, and a batch the disk refuses takes both back.
//! - Suggestions are made off the core's lock ([`SuggestJob`]): under the lock the lease
//!   reserves positions in the search (the n-th suggestion's generator is seeded by n) and
//!   copies the observations; the model is fitted and sampled on a blocking thread; back
//!   under the lock each suggestion is queued, or, when the coordinator has that trial
//!   already (a repeat, another sweep's, another suggestion's), made again there at the
//!   same position, which replays the same draws as a suggestion made under the lock.
//!   Other workers' leases, heartbeats and results go on meanwhile. A reservation whose
//!   lease went away is released.
//! - What a trial tells the model ([`outcome`]): a completed or early-stopped trial its
//!   ranking value (the report's, `report::rank::value`), negated when larger is better; a
//!   diverged one is worse than any value; a queued or running one is pending, which the
//!   model leaves out (`sched::search::PENDING`, measured against a constant liar); a
//!   failed or cancelled one, or one whose value cannot rank, is left out.
//! - Opening a database or submitting the sweep again restores a search from its stored
//!   members. Finished trials of other sweeps that fit the space are prior observations
//!   (the first [`MAX_PRIOR`] by id), before the members.
//! - A suggestion is always a trial the coordinator does not have yet, of a device the asking
//!   worker has: it is leased in the same batch as it is written.
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
use crate::sched::core::DeviceKind;
use crate::sched::core::{TrialId, TrialState};
use crate::sched::early_stop::{EarlyStopping, Method};
use crate::sched::search::{model_budget, Next, Searcher};
use crate::sched::tpe::{Observation, Outcome, TpeError};
use crate::store::Write;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use sweep_proto::{TrialSpec, TrialStatus};

/// At most this many earlier trials are prior observations (in id order): each suggestion
/// models every observation (about 10 ms per 10,000 on 2 cores, off the core's lock; the
/// observations are copied under it; docs/PERFORMANCE.md, "Search").
pub const MAX_PRIOR: usize = 5_000;

/// A search as the coordinator runs it.
#[derive(Debug, Clone)]
pub struct ActiveSearch {
    pub searcher: Searcher,
    /// Which installation of the search this is: a suggestion made for an earlier one (the
    /// sweep was submitted again meanwhile) is dropped.
    generation: u64,
    /// Positions reserved by suggestions being made off the lock.
    reserved: usize,
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

/// Numbers each installation of a search ([`ActiveSearch::generation`]).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Positions reserved in sweep `name`'s search (the installation `generation`) by
/// suggestions being made off the lock.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    pub name: String,
    pub generation: u64,
    pub count: usize,
}

/// Suggestions of one search to make off the core's lock, for one worker: the search's space
/// ([`Searcher::detached`]), the observations when the worker asked, and the positions
/// reserved.
pub(crate) struct SuggestJob {
    reservation: Reservation,
    searcher: Searcher,
    /// The first reserved position (of `reservation.count`).
    first: usize,
    observations: Vec<Observation>,
    model_epoch: Option<u32>,
    device: DeviceKind,
}

/// What a [`SuggestJob`] made: new trials in order, and why it stopped short, if it did.
pub(crate) struct Made {
    reservation: Reservation,
    model_epoch: Option<u32>,
    device: DeviceKind,
    suggestions: Vec<(TrialId, TrialSpec)>,
    end: Option<Result<Next, TpeError>>,
}

impl SuggestJob {
    /// The reservation this job holds (to release it if its lease goes away).
    pub(crate) fn reservation(&self) -> Reservation {
        self.reservation.clone()
    }

    /// Pure and off the lock: the suggestions at the reserved positions, each of a device
    /// the worker runs (whether the search has it already is checked when it is placed).
    pub(crate) fn run(self) -> Made {
        let mut taken: HashSet<TrialId> = HashSet::new();
        let mut suggestions = Vec::new();
        let mut end = None;
        for position in self.first..self.first + self.reservation.count {
            let next = self
                .searcher
                .next_at(position, &self.observations, |id, spec| {
                    !taken.contains(id) && self.device.can_run(spec.device)
                });
            match next {
                Ok(Next::Suggest { id, spec, .. }) => {
                    taken.insert(id.clone());
                    suggestions.push((id, spec));
                }
                other => {
                    end = Some(other);
                    break;
                }
            }
        }
        Made {
            reservation: self.reservation,
            model_epoch: self.model_epoch,
            device: self.device,
            suggestions,
            end,
        }
    }
}

impl ActiveSearch {
    /// Suggestions the search may still make: its budget left less the positions reserved.
    fn available(&self) -> usize {
        self.searcher.left().saturating_sub(self.reserved)
    }

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
                generation: GENERATION.fetch_add(1, Ordering::Relaxed),
                reserved: 0,
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
        self.searches.get(name).map_or(0, |a| a.searcher.left()) + self.segments_left(name)
    }

    /// A search's members (or a population's segments) so far, if sweep `name` has one.
    pub fn members(&self, name: &str) -> Option<Vec<TrialId>> {
        if let Some(p) = self.populations.get(name) {
            return Some(p.segments.iter().map(|p| p.id.clone()).collect());
        }
        self.searches
            .get(name)
            .map(|a| a.searcher.members().cloned().collect())
    }

    /// Stops sweep `name`'s suggestions (it was cancelled).
    pub(crate) fn stop_search(&mut self, name: &str) {
        if let Some(p) = self.populations.get_mut(name) {
            p.ended = Some("the sweep was cancelled".into());
        }
        if let Some(a) = self.searches.get_mut(name) {
            a.searcher.exhaust("the sweep was cancelled".into());
        }
    }

    /// The suggestions to make for up to `n` free slots of `worker`, off the lock: each
    /// search with budget left that the worker's device can run (by sweep name) reserves
    /// positions for as many as are still wanted.
    pub(crate) fn plan_suggestions(&mut self, worker: &str, n: u32) -> Vec<SuggestJob> {
        let Some((device, room)) = self.core.room(worker) else {
            return Vec::new();
        };
        let mut wanted = n.min(room) as usize;
        let mut names: Vec<String> = self
            .searches
            .iter()
            .filter(|(_, a)| a.available() > 0 && device.can_run(a.base.device))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        let mut jobs = Vec::new();
        for name in names {
            if wanted == 0 {
                break;
            }
            let Some(active) = self.searches.get(&name) else {
                continue;
            };
            let count = active.available().min(wanted);
            let (observations, model_epoch) =
                active.observations(|id| self.core.trial(id).map(|t| &t.state));
            jobs.push(SuggestJob {
                reservation: Reservation {
                    name: name.clone(),
                    generation: active.generation,
                    count,
                },
                searcher: active.searcher.detached(),
                first: active.searcher.member_count() + active.reserved,
                observations,
                model_epoch,
                device,
            });
            if let Some(active) = self.searches.get_mut(&name) {
                active.reserved += count;
            }
            wanted -= count;
        }
        jobs
    }

    /// Releases reserved positions (their suggestions are placed, or their lease went away),
    /// unless the search was installed again meanwhile.
    pub(crate) fn release(&mut self, r: &Reservation) {
        if let Some(a) = self.searches.get_mut(&r.name) {
            if a.generation == r.generation {
                a.reserved = a.reserved.saturating_sub(r.count);
            }
        }
    }

    /// Queues and writes what a [`SuggestJob`] made, releasing its reservation; returns how
    /// many trials it queued. A suggestion that is no longer new (another sweep, or another
    /// suggestion, has that trial now) is made again here, under the lock.
    pub(crate) fn place(&mut self, made: Made) -> u32 {
        let Made {
            reservation,
            model_epoch,
            device,
            suggestions,
            end,
        } = made;
        self.release(&reservation);
        let name = reservation.name;
        let Some(active) = self.searches.get(&name) else {
            return 0;
        };
        if active.generation != reservation.generation || active.searcher.exhausted().is_some() {
            return 0;
        }
        let mut placed = 0;
        for (id, spec) in suggestions {
            let Some(active) = self.searches.get(&name) else {
                break;
            };
            if active.searcher.left() == 0 {
                break;
            }
            if self.core.trial(&id).is_some() || active.searcher.knows(&id) {
                if self.suggest_here(&name, device) {
                    placed += 1;
                }
                continue;
            }
            self.add_suggestion(&name, id, spec, model_epoch);
            placed += 1;
        }
        match end {
            Some(Ok(Next::Exhausted(why))) => {
                self.exhaust(&name, why);
            }
            Some(Err(e)) => {
                self.exhaust(&name, e.to_string());
            }
            _ => {}
        }
        placed
    }

    /// One suggestion of sweep `name`'s search that a `device` worker can run, made under the
    /// lock, queued and written; false when it has none.
    fn suggest_here(&mut self, name: &str, device: DeviceKind) -> bool {
        let Some(active) = self.searches.get(name) else {
            return false;
        };
        let (observations, model_epoch) =
            active.observations(|id| self.core.trial(id).map(|t| &t.state));
        let next = active.searcher.next_at(
            active.searcher.member_count() + active.reserved,
            &observations,
            |id, spec| self.core.trial(id).is_none() && device.can_run(spec.device),
        );
        match next {
            Ok(Next::Suggest { id, spec, .. }) => {
                self.add_suggestion(name, id, spec, model_epoch);
                true
            }
            Ok(Next::Done | Next::Refused) => false,
            Ok(Next::Exhausted(why)) => self.exhaust(name, why),
            Err(e) => self.exhaust(name, e.to_string()),
        }
    }

    /// Queues a new trial of sweep `name`'s search in the core and adds its write to the
    /// open batch.
    fn add_suggestion(
        &mut self,
        name: &str,
        id: TrialId,
        spec: TrialSpec,
        model_epoch: Option<u32>,
    ) {
        self.core.add_trial(
            id.clone(),
            spec.clone(),
            TrialState::Queued { attempt: 1 },
            false,
        );
        let Some(active) = self.searches.get_mut(name) else {
            return;
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
