//! The admin operations (submit, cancel, rerun, report, export) and the periodic tick.
//!
//! Every admin change takes the admin lock first, so they happen one at a time. The database
//! is written before the core is locked, never while it is held: a sweep of 100,000 trials
//! takes seconds to store, and leases and results go on meanwhile. That order is safe
//! because the store's writes of leases, re-queues and give-ups never overwrite a cancel,
//! and the core then follows what the database decided (`Core::follow_cancel`):
//! - a trial leased in between is cancelled in the core too, and its worker is told to stop
//!   at its next heartbeat, as for a cancel another process wrote;
//! - a trial whose worker was given up on in between is cancelled, as the database says;
//! - a result that arrived in between is kept (the database keeps a result over a cancel),
//!   and the trial is not reported as cancelled.

use super::events::{Event, EventKind};
use super::settings::{self, SweepSettings};
use super::{AppError, Handle, Shared};
use crate::plan::Sweep;
use crate::report::Report;
use crate::sched::core::{Requeued, TrialId, TrialState, WorkerId};
use crate::store::files::Meta;
use crate::store::{StoreError, Submitted, Write};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// Every model a sweep's trials can train, with what names it: its planned trials, or a
/// search's default and its `model` axis's values.
fn models_of(sweep: &Sweep) -> Vec<(String, sweep_proto::Model)> {
    let mut out: Vec<(String, sweep_proto::Model)> = sweep
        .trials
        .iter()
        .map(|t| (format!("trial {}", t.id), t.spec.model))
        .collect();
    if let Some(rule) = &sweep.search {
        let model_of = |v: &toml::Value| {
            let mut t = toml::Table::new();
            t.insert("model".into(), v.clone());
            toml::Value::Table(t)
                .try_into::<sweep_proto::TrialSpec>()
                .ok()
                .map(|s| s.model)
        };
        let axis = rule.axes.iter().find(|a| a.name == "model");
        let listed = match axis.map(|a| &a.values) {
            Some(crate::sched::search::Values::List { values }) => values.iter().collect(),
            _ => Vec::new(),
        };
        for v in rule.base.get("model").into_iter().chain(listed) {
            if let Some(m) = model_of(v) {
                out.push(("the search's model".to_string(), m));
            }
        }
    }
    out
}

impl Handle {
    /// Records a sweep and queues its new (or, with `rerun`, all) trials, and those whose
    /// results came from a trainer of other semantics. Trials of its previous version that it
    /// no longer lists (and no other sweep does) are dropped by [`crate::store::Dropped`]'s
    /// rules: queued ones removed, running ones stopped, ended ones kept for reuse.
    ///
    /// A trial the database re-queued replaces the core's only where the core holds it ended
    /// (never a running lease).
    pub fn submit(&self, sweep: &Sweep, rerun: bool) -> Result<Submitted, StoreError> {
        if sweep.pbt.is_some() && rerun {
            return Err(StoreError::Refused(format!(
                "{}: --rerun does not apply to search = \"pbt\": a population's segments depend on each other's results; submit it under another name or search_seed to train a new population",
                sweep.file.display()
            )));
        }
        let _admin = self.admin_change();
        // Workers fetch the modules from here: they are stored before any trial can lease.
        for (hash, path) in &sweep.modules {
            self.checkpoints
                .store_module(*hash, path)
                .map_err(StoreError::Module)?;
        }
        for (trial, model) in models_of(sweep) {
            if let sweep_proto::Model::TorchScript(hash) = model {
                if !self.checkpoints.has_module(hash) {
                    return Err(StoreError::Refused(format!(
                        "{trial} trains TorchScript module {hash}, which this coordinator does not have: name the file (model = \"torchscript:PATH\") and submit with `coordinator submit`, which uploads it"
                    )));
                }
            }
        }
        let (submitted, stored, members) = {
            let mut store = self.store();
            let submitted = store.add_sweep(sweep, rerun)?;
            // A search (or a population) goes on from the members it has.
            let members = match sweep.search.is_some() || sweep.pbt.is_some() {
                true => store.sweep(&sweep.name)?.map(|s| s.trials),
                false => None,
            };
            (submitted, store.load_trials()?, members)
        };
        let mut s = self.lock();
        let dropped = &submitted.dropped;
        for id in &dropped.queued {
            s.core.remove_queued(id);
        }
        // Running ones, and a dropped queued one a worker leased meanwhile (its row is gone,
        // so its result would have nowhere to go): stopped at their next heartbeat.
        let stop: Vec<TrialId> = dropped
            .running
            .iter()
            .chain(&dropped.queued)
            .filter(|id| s.core.trial(id).is_some_and(|t| !t.state.is_terminal()))
            .cloned()
            .collect();
        s.core.follow_cancel(&stop);
        if !dropped.queued.is_empty() || !dropped.running.is_empty() {
            tracing::info!(sweep = %sweep.name, queued = dropped.queued.len(), running = dropped.running.len(), kept = dropped.kept, "trials the edited sweep no longer lists were dropped");
        }
        let mut wanted: HashSet<&str> = sweep.trials.iter().map(|t| t.id.as_str()).collect();
        // A population's later generations come back too (a cancelled one resumes).
        if sweep.pbt.is_some() {
            wanted.extend(members.iter().flatten().map(|t| t.id.as_str()));
        }
        for t in stored
            .into_iter()
            .filter(|t| wanted.contains(t.id.as_str()))
        {
            let replace = matches!(t.state, TrialState::Queued { .. })
                && s.core.trial(&t.id).is_none_or(|c| c.state.is_terminal());
            s.core
                .add_trial_lost(t.id, t.spec, t.state, t.lost, replace);
        }
        let mut settings = SweepSettings::from(sweep);
        if let Some(members) = members {
            settings.trials = members.into_iter().map(|t| t.id).collect();
        }
        s.apply(&settings);
        drop(s);
        self.forget_views();
        self.emit(Event::submitted(&sweep.name));
        Ok(submitted)
    }

    /// Cancels sweep `name`: its queued and running trials that no other active sweep needs.
    /// The database decides (one transaction, finished and shared trials spared); the core
    /// follows it. What is reported is what the core stopped: a trial whose result waits in
    /// the open batch ends finished, not cancelled.
    pub fn cancel(&self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        let _admin = self.admin_change();
        // No suggestion after this point: one made before it is in a batch that the cancel
        // below, which waits for the database, sees written.
        self.lock().stop_search(name);
        let in_db = {
            let mut store = self.store();
            if store.sweep(name)?.is_none() {
                return Ok(Vec::new());
            }
            store.cancel_sweep(name)?
        };
        let cancelled = self.lock().core.follow_cancel(&in_db);
        self.forget_views();
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    /// Cancels one trial, if it is still queued or running (whichever sweeps hold it).
    pub fn cancel_trial(&self, id: &str) -> Result<Vec<TrialId>, StoreError> {
        let _admin = self.admin_change();
        let in_db = self.store().cancel_trial(id)?;
        let cancelled = self.lock().core.follow_cancel(&in_db);
        self.forget_views();
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    fn cancelled(&self, ids: &[TrialId]) {
        for id in ids {
            self.emit(Event::trial(EventKind::Cancelled, id, 0, ""));
        }
    }

    /// Cancels a sweep (`trial` empty) or one of its trials, or NotFound.
    pub fn cancel_in(&self, name: &str, trial: &str) -> Result<Vec<TrialId>, AppError> {
        let s = self.stored(name)?;
        if trial.is_empty() {
            return Ok(self.cancel(name)?);
        }
        if !s.trials.iter().any(|t| t.id == trial) {
            return Err(AppError::NotFound(format!(
                "sweep `{name}` has no trial `{trial}`"
            )));
        }
        Ok(self.cancel_trial(trial)?)
    }

    /// Queues the failed and cancelled trials of sweep `name` again (and makes the sweep
    /// active again); returns them. The trials it re-queued have ended in the core, so no
    /// lease races it.
    pub fn rerun(&self, name: &str) -> Result<Vec<TrialId>, AppError> {
        self.stored(name)?;
        let _admin = self.admin_change();
        let (ids, stored, sweep) = {
            let mut store = self.store();
            let ids = store.rerun_sweep(name)?;
            (ids, store.load_trials()?, store.sweep(name)?)
        };
        let wanted: HashSet<&str> = ids.iter().map(TrialId::as_str).collect();
        {
            let mut s = self.lock();
            for t in stored
                .into_iter()
                .filter(|t| wanted.contains(t.id.as_str()))
            {
                s.core.add_trial_lost(t.id, t.spec, t.state, t.lost, true);
            }
            // A cancelled search suggests again, and a cancelled population goes on, as after
            // a restart.
            if let Some(sweep) = sweep.filter(|s| s.search.is_some() || s.pbt.is_some()) {
                let settings = SweepSettings::from(sweep);
                s.apply_search(&settings);
                s.apply_population(&settings);
            }
        }
        self.forget_views();
        // Watchers hear of it as of a submit: the sweep has work again.
        self.emit(Event::submitted(name));
        Ok(ids)
    }

    /// The report of sweep `name` as it stands. Reads the store and builds the report
    /// outside the core's lock (from a snapshot of the sweep's trials): call on a blocking
    /// thread.
    pub fn report(&self, name: &str) -> Result<Report, AppError> {
        let stored = self.stored(name)?;
        let trials = self
            .lock()
            .core
            .snapshot(stored.trials.iter().map(|t| t.id.as_str()));
        Ok(Report::build(&stored, &trials))
    }

    /// The kept model of a sweep's trial (`trial` empty: of its best-ranked trial that has
    /// one): (trial id, its description, the file's bytes). Blocking.
    pub fn model_of(&self, name: &str, trial: &str) -> Result<(TrialId, Meta, Vec<u8>), AppError> {
        let trial = if trial.is_empty() {
            // The report's ranking, without building the report.
            let stored = self.stored(name)?;
            let ranked = crate::report::rank::ranked(&stored, &self.lock().core);
            ranked
                .into_iter()
                .find(|id| self.has_model(id))
                .ok_or_else(|| {
                    AppError::NotFound(format!(
                        "sweep `{name}` has no kept model yet (keep_models = \"none\", or no trial has finished with one)"
                    ))
                })?
        } else if self.stored(name)?.trials.iter().any(|t| t.id == trial) {
            TrialId::from(trial)
        } else {
            return Err(AppError::NotFound(format!(
                "sweep `{name}` has no trial {trial}"
            )));
        };
        if !self.has_model(&trial) {
            return Err(AppError::NotFound(format!(
                "trial {trial} of sweep `{name}` has no kept model (keep_models keeps the best {} by default; it may not have finished)",
                crate::plan::DEFAULT_KEEP_BEST
            )));
        }
        let (meta, bytes) = self.model(&trial).map_err(AppError::DataLoss)?;
        Ok((trial, meta, bytes))
    }

    /// Picks up what another process wrote to the database (the server lock keeps other
    /// coordinators off it, so this is a safety net): new trials are queued, trials re-queued
    /// by `--rerun` replace finished ones, cancelled ones stop, and every sweep's settings are
    /// applied again as on opening (the sweep submitted last decides for a trial; a stopper
    /// whose rule is unchanged keeps its verdicts). The database is read before the
    /// scheduling state is locked, so requests never wait on that read.
    fn sync_from_store(&self) -> Result<(), StoreError> {
        let seen = self.lock().data_version;
        let (version, trials, sweeps) = {
            let store = self.store();
            let version = store.data_version()?;
            if version == seen {
                return Ok(());
            }
            (version, store.load_trials()?, settings::restore(&store)?)
        };
        let mut s = self.lock();
        s.data_version = version;
        for t in trials {
            let current = s.core.trial(&t.id).map(|c| c.state.clone());
            match (current, &t.state) {
                (None, _) => s.core.add_trial(t.id, t.spec, t.state, false),
                (Some(c), TrialState::Cancelled) if !c.is_terminal() => {
                    s.core.cancel(&[t.id]);
                }
                // A row still `running` is this coordinator's own lease (its result may be in a
                // batch not yet written), not a re-run.
                (Some(c), TrialState::Queued { .. }) if c.is_terminal() && t.lease.is_none() => {
                    s.core.add_trial_lost(t.id, t.spec, t.state, t.lost, true)
                }
                _ => {}
            }
        }
        for sweep in &sweeps {
            s.apply(sweep);
        }
        drop(s);
        // After the core has the new state, so no view is built from the old one.
        self.forget_views();
        Ok(())
    }

    /// Expires silent workers and persists what that changed. Reads the database: call it
    /// from a blocking thread (`spawn_blocking`), not from an async task.
    pub fn tick(&self) -> Result<(), StoreError> {
        self.sync_from_store()?;
        let mut s = self.lock();
        let now = s.now_ms();
        let lost = s.core.tick(now);
        self.record_lost(&mut s, lost, "worker stopped sending heartbeats");
        if !s.batch.is_empty() {
            self.wake_committer();
        }
        drop(s);
        self.advance_populations();
        // Checkpoints of trials that ended (finished, failed, cancelled) are of no more use,
        // except a population's last generation's, which the next one starts from. Not while
        // a generation is being made: its copies belong to trials the core does not know yet.
        let copies = self
            .checkpoint_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let removed = self.checkpoints.retain(|t| {
            let s = self.lock();
            s.core.trial(t).is_some_and(|c| !c.state.is_terminal()) || s.keeps_for_population(t)
        });
        drop(copies);
        if removed > 0 {
            tracing::debug!(removed, "checkpoints of ended trials removed");
        }
        if self.models_changed.swap(false, Ordering::Relaxed) {
            self.prune_models()?;
        }
        Ok(())
    }

    /// Announces and queues the writes for workers the core gave up on, and their trials.
    fn record_lost(&self, s: &mut Shared, lost: Vec<(WorkerId, Vec<Requeued>)>, why: &str) {
        for (worker, requeued) in lost {
            tracing::warn!(%worker, trials = requeued.len(), "worker lost: {why}");
            for r in requeued {
                let e = match &r {
                    Requeued::Retry { trial, .. } => {
                        Event::trial(EventKind::WorkerLost, trial, 0, &worker)
                            .with_message(format!("{why}; trial queued again"))
                    }
                    Requeued::GaveUp { trial, reason, .. } => {
                        Event::trial(EventKind::Failed, trial, 0, &worker)
                            .with_message(reason.clone())
                    }
                };
                self.emit(e);
                s.enqueue(Write::Requeue(r));
            }
        }
    }

    /// Queues again, now, the trials of workers restored from the database that have not come
    /// back (not counted as lost attempts). For `coordinator sweep`, whose local workers died
    /// with the process that started them: no one will resume those leases.
    pub async fn drop_restored_workers(&self) -> Result<(), AppError> {
        let done = {
            let mut s = self.lock();
            let lost = s.core.drop_restored();
            self.record_lost(&mut s, lost, "the coordinator restarted");
            s.enqueue(Write::Nothing)
        };
        self.committed(done).await
    }

    /// Deletes the trained models no sweep keeps: for keep_models = "best" the best
    /// `keep_best` of its ranked trials (ranked as the report ranks them), "all" every one,
    /// "none" nothing. Blocking.
    pub fn prune_models(&self) -> Result<(), StoreError> {
        let mut sweeps = Vec::new();
        {
            let store = self.store();
            for name in store.sweep_names()? {
                sweeps.extend(store.sweep(&name)?);
            }
        }
        let mut kept: HashSet<TrialId> = HashSet::new();
        for sweep in &sweeps {
            let n = sweep.keep_models.count();
            if n == 0 {
                continue;
            }
            // Ranking reads the core in place (no I/O under its lock, no copies).
            let s = self.lock();
            kept.extend(
                crate::report::rank::ranked(sweep, &s.core)
                    .into_iter()
                    .take(n),
            );
            // A model arrives just before its trial's result: until the result is in, the
            // trial cannot be ranked and its model stays.
            kept.extend(
                sweep
                    .trials
                    .iter()
                    .filter(|t| s.core.trial(&t.id).is_some_and(|c| !c.state.is_terminal()))
                    .map(|t| t.id.clone()),
            );
        }
        let removed = self.models.retain(|t| kept.contains(t));
        if removed > 0 {
            tracing::info!(removed, "trained models no sweep keeps removed");
        }
        Ok(())
    }
}
