//! The one ranking of trials. The report's tables and model pruning (`keep_models = "best"`)
//! both rank through here, so the model kept as "best" is the report's rank 1.
//!
//! Rules:
//! - Only completed and early-stopped trials rank, and only with a value in [0, 1]: a
//!   diverged trial's best validation accuracy (from the epochs before it diverged) does not
//!   rank, and neither does a value no accuracy can be (an old database may hold one); both
//!   would top the ranking.
//! - The better value comes first by the sweep's direction; ties keep plan order.

use crate::plan::{Direction, Metric};
use crate::sched::core::{TrialId, TrialLookup, TrialState};
use crate::store::StoredSweep;
use serde::Serialize;
use std::cmp::Ordering;
use sweep_proto::TrialStatus;

/// A report row's status: the trial's state, and for a finished trial its result's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Queued,
    Running,
    Completed,
    Diverged,
    Failed,
    Stopped,
    Cancelled,
}

impl RowStatus {
    pub fn of(status: TrialStatus) -> RowStatus {
        match status {
            TrialStatus::Completed => RowStatus::Completed,
            TrialStatus::Diverged => RowStatus::Diverged,
            TrialStatus::Failed => RowStatus::Failed,
            TrialStatus::Stopped => RowStatus::Stopped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Queued => "queued",
            RowStatus::Running => "running",
            RowStatus::Completed => "completed",
            RowStatus::Diverged => "diverged",
            RowStatus::Failed => "failed",
            RowStatus::Stopped => "stopped",
            RowStatus::Cancelled => "cancelled",
        }
    }

    /// Still waiting or training.
    pub fn unfinished(self) -> bool {
        matches!(self, RowStatus::Queued | RowStatus::Running)
    }
}

impl std::fmt::Display for RowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value a trial ranks by, if it ranks (see the rules above).
pub fn value(
    status: RowStatus,
    test_accuracy: Option<f64>,
    best_val_accuracy: Option<f64>,
    m: Metric,
) -> Option<f64> {
    if !matches!(status, RowStatus::Completed | RowStatus::Stopped) {
        return None;
    }
    let v = match m {
        Metric::TestAccuracy => test_accuracy,
        Metric::BestValAccuracy => best_val_accuracy,
    };
    v.filter(|v| (0.0..=1.0).contains(v))
}

/// The better of two ranking values first; a value before none.
pub fn order(direction: Direction, a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) if direction == Direction::Max => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The sweep's trials that rank, best first (ties in plan order).
pub fn ranked(sweep: &StoredSweep, trials: &impl TrialLookup) -> Vec<TrialId> {
    let mut values: Vec<(f64, &TrialId)> = sweep
        .trials
        .iter()
        .filter_map(|t| match trials.trial(&t.id).map(|t| &t.state) {
            Some(TrialState::Finished { result, .. }) => value(
                RowStatus::of(result.status),
                result.test_accuracy(),
                result.best_val_accuracy,
                sweep.rank_by,
            )
            .map(|v| (v, &t.id)),
            _ => None,
        })
        .collect();
    values.sort_by(|a, b| order(sweep.direction, Some(a.0), Some(b.0)));
    values.into_iter().map(|(_, id)| id.clone()).collect()
}
