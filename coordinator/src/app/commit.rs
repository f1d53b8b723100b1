//! Group commit: the one writer of the database while a server runs.
//!
//! A request applies its change to the core, adds the matching [`Write`] to the open batch
//! ([`Shared::enqueue`]) and waits ([`Handle::committed`]); the committer thread writes the
//! whole batch in one transaction (one fsync however many requests are in it) and only then
//! are those requests answered. If the transaction fails, every change in the batch is taken
//! back from the core ([`Shared::undo`]) before anyone hears of it, so the core never holds a
//! result the disk lacks.

use super::{AppError, Handle, Shared};
use crate::store::{Store, Write};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::watch;

/// What a batch's requests wait for: `None` until it is written, then the outcome.
pub type Outcome = Option<Result<(), String>>;

impl Shared {
    /// Adds a write to the open batch; the receiver learns when that batch is on disk.
    pub(crate) fn enqueue(&mut self, w: Write) -> watch::Receiver<Outcome> {
        self.batch.push(w);
        self.batch_done.subscribe()
    }

    /// Takes back from the core the changes of a batch the database refused.
    fn undo(&mut self, writes: &[Write]) {
        let now = self.now_ms();
        for w in writes.iter().rev() {
            match w {
                Write::Lease {
                    trial,
                    attempt,
                    worker,
                } => self.core.unlease(worker, trial, *attempt),
                Write::Result {
                    trial,
                    attempt,
                    worker,
                    ..
                } => self.core.unfinish(worker, trial, *attempt, now),
                Write::Suggest { sweep, trial, .. } => {
                    self.unsuggest(sweep, trial);
                    self.unplace(sweep, trial);
                }
                // Progress is also in the result; a re-queue the disk missed is redone on
                // restart (running trials come back queued with their next attempt).
                // A worker the disk missed is still known in memory; after a restart it
                // registers anew (its leases, if any were written, are then given away).
                Write::Epoch { .. } | Write::Requeue(_) | Write::Worker(_) | Write::Nothing => {}
            }
        }
    }
}

/// The committer thread: writes each batch in one transaction and publishes the outcome.
pub(crate) fn commit_batches(
    inner: Arc<Mutex<Shared>>,
    store: Arc<Mutex<Store>>,
    wake: mpsc::Receiver<()>,
    metrics: &super::metrics::Metrics,
) {
    while wake.recv().is_ok() {
        while wake.try_recv().is_ok() {}
        let (writes, done) = {
            let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
            if s.batch.is_empty() {
                continue;
            }
            let next = watch::channel(None).0;
            (
                std::mem::take(&mut s.batch),
                std::mem::replace(&mut s.batch_done, next),
            )
        };
        let outcome = {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            // The write itself, not the wait for the database's lock.
            let started = std::time::Instant::now();
            let outcome = store.write(&writes);
            metrics.committed(writes.len(), started);
            outcome
        };
        {
            let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
            match &outcome {
                Ok(()) => {
                    if s.storage_error.take().is_some() {
                        tracing::info!("database writes work again");
                    }
                }
                Err(e) => {
                    tracing::error!(writes = writes.len(), "{e}");
                    s.storage_error = Some(e.to_string());
                    s.undo(&writes);
                }
            }
        }
        done.send_replace(Some(outcome.map_err(|e| e.to_string())));
    }
}

impl Handle {
    /// Hands the open batch to the committer and waits until it is on disk.
    pub(crate) async fn committed(
        &self,
        mut done: watch::Receiver<Outcome>,
    ) -> Result<(), AppError> {
        let _ = self.wake.send(());
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| AppError::Unavailable("coordinator storage stopped".into()))?
            .clone();
        match outcome {
            Some(Err(e)) => Err(AppError::Unavailable(format!(
                "coordinator storage error, not accepting work: {e}"
            ))),
            _ => Ok(()),
        }
    }

    /// Wakes the committer if the open batch holds anything (after a tick's re-queues).
    pub(crate) fn wake_committer(&self) {
        let _ = self.wake.send(());
    }

    /// Folds the write-ahead log into the database file (on shutdown), after whatever is still
    /// in the open batch: the stopped coordinator's database is then one self-contained file
    /// that can be copied alone.
    pub async fn checkpoint(&self) -> Result<(), String> {
        let done = self.lock().enqueue(Write::Nothing);
        self.committed(done).await.map_err(|e| e.to_string())?;
        let store = self.store_arc();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .checkpoint()
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
