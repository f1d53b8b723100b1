//! The running coordinator: the state every request shares and the operations on it. This
//! layer knows no tonic or protobuf type: it takes and returns domain values and
//! [`AppError`], and `api/` translates both ways.
//!
//! - [`handle`]: [`Handle`], the cloneable handle (mini-redis style) over the core, the store
//!   and the files; opening a database restores everything into the core.
//! - [`settings`]: a trial's sweep-level settings (data hint, checkpoint policy, keep-models,
//!   early-stopping rule) as one struct, restored by one function.
//! - [`commit`]: the group-commit thread, which writes everything workers report (leases,
//!   epochs, results, re-queues); admin changes write their own transaction under the admin
//!   lock.
//! - [`events`]: trial events, sent once the change they describe is on disk.
//! - [`views`]: the status view model's cache (what dashboards and `status` poll).
//! - [`status`]: the status view model itself: sweeps, their trials' phases, counts, ETAs.
//! - [`ops`]: the admin operations: submit, cancel, rerun, report, export; the periodic tick.
//! - [`search`]: searches that learn from their results (`search = "tpe"`): suggestions made
//!   as workers ask for work, stored before they are leased.
//! - [`pbt`]: population-based training (`search = "pbt"`): each generation made by the tick
//!   when the last one has ended, its checkpoints copied before it is written.
//! - [`metrics`]: the Prometheus metrics (`/metrics`), recorded by the operations and read
//!   when scraped.
//! - [`work`]: the workers' operations: register, lease, heartbeat, progress, result,
//!   checkpoints and modules.
//!
//! Lock order: the admin lock, then the views' lock, then the checkpoint-copies lock (held
//! while a population's generation is made and while ended trials' checkpoints are removed),
//! then the core ([`Handle::lock`]) or the database ([`Handle::store`]), which are never held
//! together. Nothing writes a file or the
//! database, or builds a report, while holding the core's lock.

pub mod commit;
pub mod events;
pub mod handle;
pub mod metrics;
pub mod ops;
pub mod pbt;
pub mod search;
pub mod settings;
pub mod status;
pub mod views;
pub mod work;

pub use events::{Event, EventKind};
pub use handle::{Handle, Shared};
pub use views::VIEW_MAX_AGE;

/// Why an operation did not happen, in the terms the API layer maps to its status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Storage refused or stopped (full disk, read-only): try again later.
    #[error("{0}")]
    Unavailable(String),
    /// No such sweep, trial, worker, module or model.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a bad name, a size over a limit, a malformed sweep).
    #[error("{0}")]
    Invalid(String),
    /// The caller does not hold what it claims (a lease it lost), or the state does not allow
    /// the operation.
    #[error("{0}")]
    NotHeld(String),
    /// Bytes arrived or were read damaged.
    #[error("{0}")]
    DataLoss(String),
    /// A bug or a panicked task.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> AppError {
        match e {
            // Retrying cannot help: the caller must upload the module, or send a real one.
            crate::store::StoreError::Refused(m) => AppError::NotHeld(m),
            e => AppError::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::sched::core::Rejected> for AppError {
    fn from(r: crate::sched::core::Rejected) -> AppError {
        use crate::sched::core::Rejected;
        match r {
            Rejected::UnknownWorker(_) | Rejected::UnknownTrial(_) => {
                AppError::NotFound(r.to_string())
            }
            Rejected::StaleLease { .. } => AppError::NotHeld(r.to_string()),
        }
    }
}

/// Runs blocking work (the store, files, reports) off the async threads that serve requests.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("admin task failed: {e}")))?
}
