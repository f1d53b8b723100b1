//! A sweep's live state, the one view model behind `coordinator status`, `watch`, the
//! dashboard's JSON and the Admin API's `SweepStatus` (which only converts it to protobuf).

use crate::sched::core::{Core, Counts, TrialState};
use crate::store::StoredSweep;
use serde::Serialize;
use sweep_proto::{EpochMetrics, TrialStatus};

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn of(state: &TrialState) -> Phase {
        match state {
            TrialState::Queued { .. } => Phase::Queued,
            TrialState::Running { .. } => Phase::Running,
            TrialState::Finished { .. } => Phase::Finished,
            TrialState::Failed { .. } => Phase::Failed,
            TrialState::Cancelled => Phase::Cancelled,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Finished => "finished",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CountsView {
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// A search's trials not yet suggested.
    pub to_suggest: usize,
}

impl From<Counts> for CountsView {
    fn from(c: Counts) -> CountsView {
        CountsView {
            total: c.total(),
            queued: c.queued,
            running: c.running,
            finished: c.finished,
            failed: c.failed,
            cancelled: c.cancelled,
            to_suggest: c.to_suggest,
        }
    }
}

/// One sweep in the list of sweeps.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSummary {
    pub name: String,
    pub file: String,
    pub cancelled: bool,
    pub counts: CountsView,
}

/// One point of a learning curve.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

impl From<&EpochMetrics> for Point {
    fn from(m: &EpochMetrics) -> Point {
        Point {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_accuracy: m.train_accuracy,
            val_loss: m.val_loss,
            val_accuracy: m.val_accuracy,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    pub id: String,
    pub label: Option<String>,
    /// The sweep's axis values, `axis=value` separated by spaces.
    pub params: String,
    pub phase: Phase,
    pub attempt: u32,
    pub worker: Option<String>,
    pub epoch: u32,
    pub epochs: u32,
    /// Latest validation accuracy (training accuracy without a validation split).
    pub accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// Finished trials: completed, diverged or failed.
    pub status: Option<TrialStatus>,
    pub reason: Option<String>,
    pub elapsed_seconds: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Every epoch so far (empty unless asked for).
    pub curve: Vec<Point>,
    #[serde(skip)]
    pub metrics: Vec<EpochMetrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepView {
    pub sweep: SweepSummary,
    pub axes: Vec<String>,
    pub trials: Vec<TrialView>,
    /// Trials left out to keep the view small (see [`MAX_VIEW_TRIALS`]).
    pub omitted: usize,
    /// A search's progress (`search = "tpe"` sweeps only).
    pub search: Option<SearchProgress>,
}

/// How far a search has got: what the dashboard's best-so-far chart draws.
#[derive(Debug, Clone, Serialize)]
pub struct SearchProgress {
    pub budget: usize,
    /// Trials suggested so far.
    pub suggested: usize,
    /// The ranking metric (as the sweep file names it), and whether larger is better.
    pub metric: crate::plan::Metric,
    pub maximise: bool,
    /// The trials at which the best so far changed, in suggestion order (the report's
    /// best-so-far steps, `report::search::best_so_far`, without the trials between).
    pub improvements: Vec<crate::report::search::Step>,
}

/// [`SearchProgress`] of a search sweep, its trials' values read from the core by the
/// report's ranking rule (`report::rank::value`).
fn search_progress(sweep: &StoredSweep, core: &Core) -> Option<SearchProgress> {
    use crate::report::rank::{self, RowStatus};
    let rule = sweep.search.as_ref()?;
    let value = |id: &str| match core.trial(id).map(|t| &t.state) {
        Some(TrialState::Finished { result, .. }) => rank::value(
            RowStatus::of(result.status),
            result.test_accuracy(),
            result.best_val_accuracy,
            sweep.rank_by,
        ),
        _ => None,
    };
    let mut improvements = crate::report::search::best_so_far(
        sweep
            .trials
            .iter()
            .enumerate()
            .map(|(i, t)| (i + 1, t.id.to_string(), value(&t.id))),
        sweep.direction,
    );
    // The best so far only improves, and stays once it has a value.
    improvements.retain(|s| s.best.is_some());
    improvements.dedup_by(|later, earlier| later.best == earlier.best);
    Some(SearchProgress {
        budget: rule.budget,
        suggested: sweep.trials.len(),
        metric: sweep.rank_by,
        maximise: sweep.direction == crate::plan::Direction::Max,
        improvements,
    })
}

/// Most trials one view lists: running trials first, then the others in plan order. A view is
/// built under the scheduler's lock, and dashboards poll it every second: a sweep of 100,000
/// trials must not hold every lease up for the time it takes to list them all.
pub const MAX_VIEW_TRIALS: usize = 2000;

fn latest_accuracy(epochs: &[EpochMetrics]) -> Option<f64> {
    epochs
        .iter()
        .max_by_key(|e| e.epoch)
        .map(|e| e.val_accuracy.unwrap_or(e.train_accuracy))
}

/// A trial's values of the sweep's axes (those it ends with), `axis=value` separated by
/// spaces.
pub fn params_of(spec: &sweep_proto::TrialSpec, axes: &[String]) -> String {
    let params = serde_json::to_value(&*spec.at_epoch(spec.last_epoch())).unwrap_or_default();
    axes.iter()
        .map(|a| format!("{a}={}", crate::report::axis_value(&params, a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sweep as views read it, kept in memory by the service (see `Handle::sweep_meta`): its
/// stored row and trials, and each trial's axis values, so that a view polled every second
/// reads neither the database nor a trial's JSON.
#[derive(Debug)]
pub struct SweepMeta {
    pub stored: StoredSweep,
    /// [`params_of`] for each of `stored.trials`.
    pub params: Vec<String>,
}

/// A trial as the core holds it now; `now_ms` is the core's clock.
fn trial_view(
    id: &str,
    label: Option<&str>,
    params: &str,
    core: &Core,
    now_ms: u64,
    curves: bool,
) -> Option<TrialView> {
    let t = core.trial(id)?;
    let mut v = TrialView {
        id: id.to_string(),
        label: label.map(str::to_string),
        params: params.to_string(),
        phase: Phase::of(&t.state),
        attempt: 0,
        worker: None,
        epoch: 0,
        epochs: t.spec.epochs,
        accuracy: None,
        test_accuracy: None,
        status: None,
        reason: None,
        elapsed_seconds: None,
        eta_seconds: None,
        curve: Vec::new(),
        metrics: Vec::new(),
    };
    let epochs: &[EpochMetrics] = match &t.state {
        TrialState::Queued { attempt } => {
            v.attempt = *attempt;
            &[]
        }
        TrialState::Running {
            attempt,
            worker,
            since_ms,
            epochs,
            ..
        } => {
            v.attempt = *attempt;
            v.worker = Some(worker.to_string());
            let elapsed = now_ms.saturating_sub(*since_ms) as f64 / 1000.0;
            v.elapsed_seconds = Some(elapsed);
            let done = epochs.len() as f64;
            if done > 0.0 {
                let left = (t.spec.epochs as f64 - done).max(0.0);
                v.eta_seconds = Some(elapsed / done * left);
            }
            epochs
        }
        TrialState::Finished {
            attempt,
            worker,
            result,
        } => {
            v.attempt = *attempt;
            v.worker = Some(worker.to_string());
            v.status = Some(result.status);
            v.test_accuracy = result.test_accuracy();
            v.reason = result.reason.clone();
            &result.epochs
        }
        TrialState::Failed { attempts, reason } => {
            v.attempt = *attempts;
            v.reason = Some(reason.clone());
            &[]
        }
        TrialState::Cancelled => &[],
    };
    v.epoch = epochs.iter().map(|e| e.epoch).max().unwrap_or(0);
    v.accuracy = latest_accuracy(epochs);
    if curves {
        v.curve = epochs.iter().map(Point::from).collect();
        v.metrics = epochs.to_vec();
    }
    Some(v)
}

pub fn summary(sweep: &StoredSweep, core: &Core) -> SweepSummary {
    SweepSummary {
        name: sweep.name.clone(),
        file: sweep.file.clone(),
        cancelled: sweep.cancelled,
        counts: core.counts(sweep.trials.iter().map(|t| &t.id)).into(),
    }
}

/// The trials of `sweep` in plan order, as the core holds it at `now_ms`: all of them up to
/// `limit`, else every running one and the first others in plan order.
pub fn sweep_view(
    meta: &SweepMeta,
    core: &Core,
    now_ms: u64,
    curves: bool,
    limit: usize,
) -> SweepView {
    let sweep = &meta.stored;
    let running = |id: &str| {
        core.trial(id)
            .is_some_and(|t| matches!(t.state, TrialState::Running { .. }))
    };
    let keep: Vec<bool> = if sweep.trials.len() <= limit {
        vec![true; sweep.trials.len()]
    } else {
        let mut room = limit.saturating_sub(sweep.trials.iter().filter(|t| running(&t.id)).count());
        sweep
            .trials
            .iter()
            .map(|t| {
                running(&t.id)
                    || (room > 0 && {
                        room -= 1;
                        true
                    })
            })
            .collect()
    };
    let trials: Vec<TrialView> = sweep
        .trials
        .iter()
        .zip(&meta.params)
        .zip(&keep)
        .filter(|(_, k)| **k)
        .filter_map(|((t, params), _)| {
            trial_view(&t.id, t.label.as_deref(), params, core, now_ms, curves)
        })
        .collect();
    SweepView {
        sweep: summary(sweep, core),
        axes: sweep.axes.clone(),
        omitted: sweep.trials.len() - trials.len(),
        search: search_progress(sweep, core),
        trials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Direction, Metric};
    use crate::sched::core::{Config, DeviceKind, NewWorker};
    use sweep_proto::TrialSpec;

    /// Five queued trials, the last two leased.
    fn setup() -> (SweepMeta, Core) {
        let mut core = Core::new(Config::default());
        let ids: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        for id in ids.iter().rev() {
            // Queued in reverse, so the lease takes t4 and t3: late in plan order.
            let spec = TrialSpec {
                epochs: 4,
                ..TrialSpec::default()
            };
            core.add_trial(
                id.clone().into(),
                spec,
                TrialState::Queued { attempt: 1 },
                false,
            );
        }
        let w = core
            .register(
                NewWorker {
                    name: "w".into(),
                    device: DeviceKind::Cpu,
                    slots: 2,
                    nonce: 1,
                    secret: "s".into(),
                },
                None,
                0,
            )
            .0
            .id;
        assert_eq!(core.lease(&w, 2, 0).unwrap().len(), 2);
        let sweep = StoredSweep {
            name: "s".into(),
            file: "s.toml".into(),
            data: None,
            rank_by: Metric::TestAccuracy,
            direction: Direction::Max,
            axes: vec!["seed".into()],
            cancelled: false,
            early_stopping: None,
            checkpoints: Default::default(),
            keep_models: Default::default(),
            search: None,
            pbt: None,
            trials: ids
                .into_iter()
                .map(|id| crate::store::SweepTrial {
                    id: id.into(),
                    label: None,
                    reported: None,
                })
                .collect(),
        };
        let params = vec!["seed=1".to_string(); 5];
        (
            SweepMeta {
                stored: sweep,
                params,
            },
            core,
        )
    }

    #[test]
    fn a_large_sweep_lists_its_running_trials_first_then_plan_order() {
        let (sweep, core) = setup();
        let all = sweep_view(&sweep, &core, 1000, false, 10);
        assert_eq!(all.trials.len(), 5);
        assert_eq!(all.omitted, 0);
        assert_eq!(all.sweep.counts.running, 2);
        let capped = sweep_view(&sweep, &core, 1000, false, 3);
        let ids: Vec<&str> = capped.trials.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            ["t0", "t3", "t4"],
            "running t3, t4 kept, then plan order"
        );
        assert_eq!(capped.omitted, 2);
        assert_eq!(capped.sweep.counts.total, 5, "counts cover every trial");
        let running = &capped.trials[1];
        assert_eq!(running.phase, Phase::Running);
        assert_eq!((running.epoch, running.epochs), (0, 4));
        assert_eq!(running.elapsed_seconds, Some(1.0));
        assert_eq!(running.eta_seconds, None, "no epoch yet, no estimate");
    }
}
