//! The status views' cache: sweeps as views read them, and recent live views, so that status
//! polls neither take the database's lock (which the committer needs for every batch) nor
//! walk every trial under the core's lock once per poller.
//!
//! Lock order (as everywhere, see the `app` module): the views' lock is taken before the
//! database's or the core's, never while holding either. Views are dropped whenever a
//! sweep's row changes (submit, cancel, rerun, another process's write).

use super::status::{self, SweepMeta, SweepSummary, SweepView};
use super::{AppError, Handle};
use crate::sched::core::{Counts, TrialId};
use crate::store::{StoreError, StoredSweep};
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

/// How stale a live view may be: dashboards poll once a second.
pub const VIEW_MAX_AGE: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Views {
    names: Option<Vec<String>>,
    sweeps: HashMap<String, Arc<SweepMeta>>,
    /// Recent live views by (sweep, with curves), with when they were built.
    built: HashMap<(String, bool), (Instant, Arc<SweepView>)>,
}

pub(crate) fn no_sweep(name: &str) -> AppError {
    AppError::NotFound(format!("no sweep named `{name}`"))
}

impl Handle {
    fn views(&self) -> MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn forget_views(&self) {
        *self.views() = Views::default();
    }

    pub fn sweep(&self, name: &str) -> Result<Option<StoredSweep>, StoreError> {
        self.store().sweep(name)
    }

    /// The stored sweep `name`, or NotFound.
    pub fn stored(&self, name: &str) -> Result<StoredSweep, AppError> {
        self.sweep(name)?.ok_or_else(|| no_sweep(name))
    }

    /// Every sweep's name, from memory after the first read.
    pub fn sweep_names(&self) -> Result<Vec<String>, StoreError> {
        let mut views = self.views();
        if let Some(n) = &views.names {
            return Ok(n.clone());
        }
        let names = self.store().sweep_names()?;
        views.names = Some(names.clone());
        Ok(names)
    }

    /// Sweep `name` as views read it, from memory after the first read (which reads the
    /// database: call from a blocking thread). The first read holds the views' lock, so
    /// pollers arriving together build it once, not once each.
    pub fn sweep_meta(&self, name: &str) -> Result<Option<Arc<SweepMeta>>, StoreError> {
        let mut views = self.views();
        self.meta_in(&mut views, name)
    }

    fn meta_in(&self, views: &mut Views, name: &str) -> Result<Option<Arc<SweepMeta>>, StoreError> {
        if let Some(m) = views.sweeps.get(name) {
            return Ok(Some(m.clone()));
        }
        let Some(stored) = self.sweep(name)? else {
            return Ok(None);
        };
        // Specs copied under the core's lock, their axis values computed outside it.
        let specs: Vec<Option<sweep_proto::TrialSpec>> = {
            let s = self.lock();
            stored
                .trials
                .iter()
                .map(|t| s.core.trial(&t.id).map(|t| t.spec.clone()))
                .collect()
        };
        let params = specs
            .iter()
            .map(|spec| {
                spec.as_ref()
                    .map(|sp| status::params_of(sp, &stored.axes))
                    .unwrap_or_default()
            })
            .collect();
        let meta = Arc::new(SweepMeta { stored, params });
        views.sweeps.insert(name.to_string(), meta.clone());
        Ok(Some(meta))
    }

    /// Sweep `name`'s live view (with or without curves), built at most once per
    /// [`VIEW_MAX_AGE`] however many clients poll it, and rebuilt at once after a change this
    /// coordinator made (submit, cancel, rerun). A view walks every trial of the sweep under
    /// the scheduler's lock; 50 dashboards polling a 100,000-trial sweep once a second built
    /// 50 of them a second and cut throughput to about 50 trials/s
    /// (`sweep-load --workers 100 --trials 100000 --pollers 50`). Reads the database the first
    /// time: call from a blocking thread.
    pub fn sweep_view(
        &self,
        name: &str,
        curves: bool,
    ) -> Result<Option<Arc<SweepView>>, StoreError> {
        let mut views = self.views();
        let key = (name.to_string(), curves);
        if let Some((at, v)) = views.built.get(&key) {
            if at.elapsed() < VIEW_MAX_AGE {
                return Ok(Some(v.clone()));
            }
        }
        let Some(meta) = self.meta_in(&mut views, name)? else {
            return Ok(None);
        };
        let view = {
            let s = self.lock();
            let mut view =
                status::sweep_view(&meta, &s.core, s.now_ms(), curves, status::MAX_VIEW_TRIALS);
            view.sweep.counts.to_suggest = s.to_suggest(name);
            Arc::new(view)
        };
        views.built.insert(key, (Instant::now(), view.clone()));
        Ok(Some(view))
    }

    /// One sweep's trials as of at most [`VIEW_MAX_AGE`] ago, or NotFound (may read the
    /// store: call on a blocking thread).
    pub fn view(&self, name: &str, curves: bool) -> Result<Arc<SweepView>, AppError> {
        self.sweep_view(name, curves)?.ok_or_else(|| no_sweep(name))
    }

    /// Every sweep with its counts (may read the store: call on a blocking thread).
    pub fn list(&self) -> Result<Vec<SweepSummary>, AppError> {
        let mut sweeps = Vec::new();
        for name in self.sweep_names()? {
            let m = self.sweep_meta(&name)?.ok_or_else(|| no_sweep(&name))?;
            let s = self.lock();
            let mut summary = status::summary(&m.stored, &s.core);
            summary.counts.to_suggest = s.to_suggest(&name);
            sweeps.push(summary);
        }
        Ok(sweeps)
    }

    pub fn counts(&self, ids: &[TrialId]) -> Counts {
        self.lock().core.counts(ids)
    }

    /// Sweep `name`'s trials so far (a search's members, else `planned`) and their counts,
    /// with the trials its search has still to suggest.
    pub fn sweep_counts(&self, name: &str, planned: &[TrialId]) -> (Vec<TrialId>, Counts) {
        let s = self.lock();
        let ids = s.members(name).unwrap_or_else(|| planned.to_vec());
        let mut counts = s.core.counts(&ids);
        counts.to_suggest = s.to_suggest(name);
        (ids, counts)
    }
}
