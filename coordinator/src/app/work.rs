//! The workers' operations: register, lease, heartbeat, progress, result, and the checks
//! behind checkpoint and module transfers. Each changes the core under its lock, adds the
//! matching write to the open batch, and answers only once that batch is on disk
//! ([`super::commit`]); events go out after that.

use super::commit::Outcome;
use super::events::{Event, EventKind};
use super::metrics::{Artifact, Direction, ResultOutcome};
use super::search::{Reservation, SuggestJob};
use super::{AppError, Handle, Shared};
use crate::plan::CheckpointPolicy;
use crate::sched::core::{
    Beat, Config, DeviceKind, Finished, LeaseRef, NewWorker, Rejected, TrialState, WorkerId,
    MAX_SLOTS,
};
use crate::store::files::{Checkpoints, Meta};
use crate::store::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use sweep_proto::limits::MAX_NAME;
use sweep_proto::result::check_epoch;
use sweep_proto::{EpochMetrics, ModuleHash, TrialResult, TrialStatus};
use tokio::sync::watch;

/// Longest free-text label a worker describes itself with (GPU model, version).
pub const MAX_LABEL: usize = 128;

/// Positions reserved by suggestions being made off the lock, released if the lease goes
/// away before they are placed (its request was dropped, or the suggestion panicked).
struct Reservations<'a> {
    handle: &'a Handle,
    held: Vec<Reservation>,
}

impl Drop for Reservations<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut s = self.handle.lock();
        for r in self.held.drain(..) {
            s.release(&r);
        }
    }
}

/// A worker's registration as it asked for it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Empty: "worker".
    pub name: String,
    pub device: DeviceKind,
    pub slots: u32,
    pub gpu_model: String,
    pub version: String,
    /// The id and secret of an earlier registration to resume, if any.
    pub resume: Option<(String, String)>,
}

/// What a registered worker is told.
#[derive(Debug, Clone)]
pub struct Registered {
    pub worker: WorkerId,
    pub secret: String,
    pub heartbeat_interval_ms: u32,
}

/// A lease as a worker receives it: the trial, and what its sweep says about running it.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub lease: LeaseRef,
    /// The trial's canonical TOML.
    pub spec_toml: Arc<str>,
    /// Dataset directory to suggest ("" for none).
    pub data_hint: String,
    /// Whether an early-stopping rule judges it (the worker then reports every epoch).
    pub early_stopping: bool,
    /// The epoch of the stored checkpoint to resume from (0: none).
    pub checkpoint_epoch: u32,
    pub checkpoints: CheckpointPolicy,
    pub keep_model: bool,
}

/// The answer to a report: taken, or ignored with the reason (the worker logs it and moves
/// on); `stop` asks the worker to stop the trial (early stopping).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub accepted: bool,
    pub reason: String,
    pub stop: bool,
}

impl Reply {
    pub fn accepted() -> Reply {
        Reply {
            accepted: true,
            ..Reply::default()
        }
    }

    pub fn ignored(reason: impl Into<String>) -> Reply {
        Reply {
            accepted: false,
            reason: reason.into(),
            stop: false,
        }
    }
}

/// 32 random bytes as hex: a token, or the secret a worker resumes its id with.
pub fn random_token() -> String {
    use rand::Rng;
    (0..32)
        .map(|_| format!("{:02x}", rand::rng().random::<u8>()))
        .collect()
}

/// Heartbeat period the coordinator asks workers for: a third of the timeout.
pub fn heartbeat_interval_ms(config: &Config) -> u32 {
    (config.heartbeat_timeout_ms / 3).clamp(100, 10_000) as u32
}

/// Worker names appear in ids, logs and reports: letters, digits, `.`, `_` and `-`, at most
/// [`MAX_NAME`] bytes (a host name fits), so nothing can forge a log line or grow unbounded.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!(
            "name: {} bytes, over the limit of {MAX_NAME}",
            name.len()
        ));
    }
    if let Some(c) = crate::plan::unsafe_name_char(name) {
        return Err(format!(
            "name: {c:?} is not allowed (letters, digits, '.', '_' and '-' only)"
        ));
    }
    Ok(())
}

/// Free text a worker describes itself with: printable, at most [`MAX_LABEL`] bytes.
fn check_label(field: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_LABEL {
        return Err(format!(
            "{field}: {} bytes, over the limit of {MAX_LABEL}",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field}: control characters are not allowed"));
    }
    Ok(())
}

impl Handle {
    /// Registers a worker (or resumes its earlier id with the secret), answered once the
    /// database knows it: a restarted coordinator can then let it resume its id and leases.
    pub async fn register(&self, r: Registration) -> Result<Registered, AppError> {
        let name = if r.name.trim().is_empty() {
            "worker".to_string()
        } else {
            check_name(&r.name).map_err(AppError::Invalid)?;
            r.name
        };
        check_label("gpu_model", &r.gpu_model).map_err(AppError::Invalid)?;
        check_label("version", &r.version).map_err(AppError::Invalid)?;
        if r.slots > MAX_SLOTS {
            return Err(AppError::Invalid(format!(
                "slots: {} is over the limit of {MAX_SLOTS}",
                r.slots
            )));
        }
        let fresh = NewWorker {
            name,
            device: r.device,
            slots: r.slots,
            nonce: rand::random(),
            secret: random_token(),
        };
        let (registered, done) = {
            let mut s = self.lock();
            let now = s.now_ms();
            let resume = r
                .resume
                .as_ref()
                .filter(|(id, _)| !id.is_empty())
                .map(|(id, secret)| (id.as_str(), secret.as_str()));
            let known = resume.and_then(|(id, _)| s.core.record(id));
            let (record, secret) = s.core.register(fresh, resume, now);
            tracing::info!(worker = %record.id, device = ?r.device, slots = r.slots, gpu = %r.gpu_model, "worker registered");
            let registered = Registered {
                worker: record.id.clone(),
                secret,
                heartbeat_interval_ms: heartbeat_interval_ms(&s.core.config),
            };
            // A worker resuming as the database already has it writes nothing, so that it
            // can come back while the disk refuses writes and keep offering its results.
            let done = (known.as_ref() != Some(&record)).then(|| s.enqueue(Write::Worker(record)));
            (registered, done)
        };
        if let Some(done) = done {
            self.committed(done).await?;
        }
        self.metrics
            .registered(&registered.worker.to_string(), &r.gpu_model, || {
                let s = self.lock();
                s.core.workers().map(|(id, _)| id.to_string()).collect()
            });
        Ok(registered)
    }

    /// Up to `free_slots` leases for `worker`, answered once they are on disk. A lease the
    /// disk refuses is taken back (see `commit`): no one runs work the database does not know.
    pub async fn lease(&self, worker: &str, free_slots: u32) -> Result<Vec<LeaseGrant>, AppError> {
        let started = Instant::now();
        let leases = self.lease_now(worker, free_slots).await?;
        self.metrics.leased(leases.len(), started);
        Ok(leases)
    }

    async fn lease_now(&self, worker: &str, free_slots: u32) -> Result<Vec<LeaseGrant>, AppError> {
        let mut leases = Vec::new();
        let mut done = Vec::new();
        let jobs = {
            let mut s = self.lock();
            let now = s.now_ms();
            let grants = s.core.lease(worker, free_slots, now)?;
            // No queued trial fits: the searches suggest new ones, made off the lock.
            let wanted = free_slots.saturating_sub(grants.len() as u32);
            let jobs = if wanted > 0 {
                s.plan_suggestions(worker, wanted)
            } else {
                Vec::new()
            };
            done.extend(self.grant(&mut s, worker, grants, &mut leases));
            jobs
        };
        let suggested = !jobs.is_empty();
        if suggested {
            let mut reservations = Reservations {
                handle: self,
                held: jobs.iter().map(SuggestJob::reservation).collect(),
            };
            let made = tokio::task::spawn_blocking(move || {
                jobs.into_iter().map(SuggestJob::run).collect::<Vec<_>>()
            })
            .await
            .map_err(|e| AppError::Internal(format!("a suggestion panicked: {e}")))?;
            let mut s = self.lock();
            // Each suggestion is written before the lease that hands it out, in one batch.
            let placed: u32 = made.into_iter().map(|m| s.place(m)).sum();
            reservations.held.clear();
            if placed > 0 {
                let now = s.now_ms();
                let grants = s.core.lease(worker, placed, now)?;
                done.extend(self.grant(&mut s, worker, grants, &mut leases));
            }
        }
        for d in done {
            self.committed(d).await?;
        }
        if suggested {
            // The sweeps' trial lists grew.
            self.forget_views();
        }
        for l in &leases {
            self.emit(Event::trial(
                EventKind::Leased,
                &l.lease.trial,
                l.lease.attempt,
                worker,
            ));
        }
        Ok(leases)
    }

    /// Writes `grants` into the open batch and adds what the worker is told to `leases`;
    /// returns the batch's outcome to wait for, if there were any.
    fn grant(
        &self,
        s: &mut Shared,
        worker: &str,
        grants: Vec<crate::sched::core::Grant>,
        leases: &mut Vec<LeaseGrant>,
    ) -> Option<watch::Receiver<Outcome>> {
        let mut done = None;
        for g in grants {
            done = Some(s.enqueue(Write::Lease {
                trial: g.trial.clone(),
                attempt: g.attempt,
                worker: worker.into(),
            }));
            tracing::debug!(trial = %g.trial, attempt = g.attempt, %worker, "leased");
            let settings = s.settings(&g.trial);
            leases.push(LeaseGrant {
                checkpoint_epoch: self.checkpoints.latest(&g.trial).map_or(0, |m| m.epoch),
                lease: LeaseRef {
                    trial: g.trial,
                    attempt: g.attempt,
                },
                spec_toml: g.spec_toml,
                data_hint: settings.data_hint.unwrap_or_default(),
                early_stopping: settings.judged_by.is_some(),
                checkpoints: settings.checkpoints,
                keep_model: settings.keep_model,
            });
        }
        done
    }

    /// A worker's heartbeat listing the leases it runs; returns those it must stop. Leases it
    /// did not list twice in a row are re-queued, answered once that is on disk.
    pub async fn heartbeat(
        &self,
        worker: &str,
        running: &[LeaseRef],
    ) -> Result<Vec<LeaseRef>, AppError> {
        let (done, stop) = {
            let mut s = self.lock();
            let now = s.now_ms();
            let Beat { stop, lost } = s.core.heartbeat(worker, running, now)?;
            let mut done = None;
            for l in lost {
                tracing::warn!(%worker, "lease lost: {l:?} (not in two heartbeats)");
                done = Some(s.enqueue(Write::Requeue(l)));
            }
            (done, stop)
        };
        if let Some(done) = done {
            self.committed(done).await?;
        }
        self.metrics.heartbeat();
        Ok(stop)
    }

    /// An epoch's metrics from the worker holding `lease`; the reply says whether early
    /// stopping ends the trial. Metrics are validated by the caller's conversion.
    pub async fn progress(
        &self,
        worker: &str,
        lease: &LeaseRef,
        metrics: EpochMetrics,
    ) -> Result<Reply, AppError> {
        let (done, stop, judged) = {
            let mut s = self.lock();
            if let Some(n) = s.epochs_of(&lease.trial) {
                check_epoch("metrics.epoch", metrics.epoch, n)
                    .map_err(|e| AppError::Invalid(e.to_string()))?;
            }
            let now = s.now_ms();
            match s
                .core
                .progress(worker, &lease.trial, lease.attempt, metrics.clone(), now)
            {
                Ok(()) => {
                    let stop = s.judge(&lease.trial, lease.attempt, &metrics);
                    let judged = s
                        .settings
                        .get(&lease.trial)
                        .is_some_and(|t| t.judged_by.is_some());
                    if let Some(why) = &stop {
                        tracing::info!(trial = %lease.trial, attempt = lease.attempt, epoch = metrics.epoch, "early stop: {why}");
                    }
                    let done = s.enqueue(Write::Epoch {
                        trial: lease.trial.clone(),
                        attempt: lease.attempt,
                        metrics: metrics.clone(),
                    });
                    (done, stop, judged)
                }
                Err(e @ Rejected::UnknownWorker(_)) => return Err(e.into()),
                Err(e) => return Ok(Reply::ignored(e.to_string())),
            }
        };
        self.committed(done).await?;
        // Counted once on disk, as the verdict the worker is told.
        if judged {
            self.metrics.judged(stop.is_some());
        }
        let mut e = Event::trial(EventKind::Epoch, &lease.trial, lease.attempt, worker);
        e.metrics = Some(metrics);
        self.emit(e);
        Ok(match stop {
            Some(why) => Reply {
                accepted: true,
                reason: why,
                stop: true,
            },
            None => Reply::accepted(),
        })
    }

    /// A trial's result from the worker holding `lease`, answered only once on disk; if the
    /// write fails the core takes the result back and the worker, told `Unavailable`, keeps
    /// it and sends it again. An identical repeat of a stored result is acknowledged.
    pub async fn finish(
        &self,
        worker: &str,
        lease: &LeaseRef,
        result: TrialResult,
    ) -> Result<Reply, AppError> {
        let started = Instant::now();
        let answer = self.finish_now(worker, lease, result).await;
        let outcome = match &answer {
            Ok((_, outcome)) => *outcome,
            Err(AppError::Invalid(_)) => ResultOutcome::invalid,
            Err(AppError::NotFound(_)) => ResultOutcome::unknown,
            Err(_) => ResultOutcome::unavailable,
        };
        self.metrics.result(outcome, started);
        answer.map(|(reply, _)| reply)
    }

    async fn finish_now(
        &self,
        worker: &str,
        lease: &LeaseRef,
        result: TrialResult,
    ) -> Result<(Reply, ResultOutcome), AppError> {
        let (trial, attempt) = (&lease.trial, lease.attempt);
        let mut finished = Event::trial(
            match result.status {
                TrialStatus::Failed => EventKind::Failed,
                _ => EventKind::Finished,
            },
            trial,
            attempt,
            worker,
        )
        .with_message(result.reason.clone().unwrap_or_default());
        finished.status = Some(result.status);
        finished.test_accuracy = result.test_accuracy();
        let (done, repeat) = {
            let mut s = self.lock();
            if let Some(n) = s.epochs_of(trial) {
                result
                    .fits(n)
                    .map_err(|e| AppError::Invalid(format!("result.{e}")))?;
            }
            let now = s.now_ms();
            tracing::debug!(%trial, attempt, status = ?result.status, acc = ?result.test_accuracy(), "result");
            match s.core.finish(worker, trial, attempt, result.clone(), now) {
                Ok(Finished::New) => (
                    s.enqueue(Write::Result {
                        trial: trial.clone(),
                        attempt,
                        worker: worker.into(),
                        result: Box::new(result),
                    }),
                    false,
                ),
                // Acknowledged once the batch that holds it is on disk: the original's, or
                // a later one (which the committer writes after it).
                Ok(Finished::AlreadyStored) => {
                    tracing::info!(%trial, attempt, %worker, "a repeated result, already stored");
                    (s.enqueue(Write::Nothing), true)
                }
                Err(e) => {
                    tracing::info!(%trial, attempt, %worker, "ignored a result: {e}");
                    let outcome = match e {
                        Rejected::StaleLease { .. } => ResultOutcome::stale_lease,
                        _ => ResultOutcome::unknown,
                    };
                    return Ok((Reply::ignored(e.to_string()), outcome));
                }
            }
        };
        self.committed(done).await?;
        if repeat {
            // The original's batch may have failed meanwhile (and been taken back).
            let s = self.lock();
            let kept = matches!(s.core.trial(trial).map(|t| &t.state),
                Some(TrialState::Finished { attempt: a, .. }) if *a == attempt);
            if !kept {
                return Err(AppError::Unavailable(
                    "the original report was not stored; send it again".into(),
                ));
            }
            let reply = Reply {
                accepted: true,
                reason: "already stored (a repeated report)".into(),
                stop: false,
            };
            return Ok((reply, ResultOutcome::repeated));
        }
        self.emit(finished);
        // Its model (sent just before) can be ranked now: the next tick prunes.
        if self.models.latest(trial).is_some() {
            self.models_changed.store(true, Ordering::Relaxed);
        }
        // The last segment of a generation: the next one is made before the reply, so the
        // worker's next ask (it asks at once) finds it. Left to the tick, it waited for the
        // worker's next heartbeat: 5.1 s between generations, measured, against 0.12-0.17 s
        // between segments within one (docs/PERFORMANCE.md, "Population-based training").
        if self.lock().keeps_for_population(trial) {
            let h = self.clone();
            let _ = tokio::task::spawn_blocking(move || h.advance_populations()).await;
        }
        Ok((Reply::accepted(), ResultOutcome::accepted))
    }

    /// Whether `worker` holds `lease` now: NotFound for an unknown trial, NotHeld for a lease
    /// that is not (or no longer) its own, Invalid for a trial id no trial can have.
    pub fn holds(&self, worker: &str, lease: &LeaseRef) -> Result<(), AppError> {
        let LeaseRef { trial, attempt } = lease;
        if !crate::store::files::valid_id(trial) {
            return Err(AppError::Invalid(format!(
                "lease.trial_id {trial:?} is not a trial id"
            )));
        }
        let s = self.lock();
        match s.core.trial(trial).map(|t| &t.state) {
            Some(TrialState::Running {
                attempt: a,
                worker: w,
                ..
            }) if a == attempt && w == worker => Ok(()),
            None => Err(AppError::NotFound(format!("unknown trial {trial}"))),
            _ => Err(AppError::NotHeld(format!(
                "trial {trial} attempt {attempt} is not leased to {worker}"
            ))),
        }
    }

    /// [`Handle::holds`], and the upload's `epoch` is one of the trial's.
    pub fn holds_upload(&self, worker: &str, lease: &LeaseRef, epoch: u32) -> Result<(), AppError> {
        self.holds(worker, lease)?;
        match self.lock().epochs_of(&lease.trial) {
            Some(n) => check_epoch("epoch", epoch, n).map_err(|e| AppError::Invalid(e.to_string())),
            None => Ok(()),
        }
    }

    /// Where an upload for `lease` goes (a model or a checkpoint), once `holds` said yes.
    pub fn upload_target(&self, model: bool) -> Arc<Checkpoints> {
        if model {
            self.models.clone()
        } else {
            self.checkpoints.clone()
        }
    }

    /// Keeps an uploaded checkpoint or model whose bytes were checked, unless the lease went
    /// while the bytes came (a worker paused mid-upload and presumed dead: its checkpoint
    /// must not replace the new attempt's). Returns the reply: not accepted when a later
    /// epoch is stored.
    pub async fn keep_upload(
        &self,
        worker: &str,
        lease: &LeaseRef,
        path: PathBuf,
        meta: Meta,
        model: bool,
    ) -> Result<Reply, AppError> {
        if let Err(e) = self.holds(worker, lease) {
            let _ = tokio::fs::remove_file(&path).await;
            return match e {
                AppError::NotHeld(_) | AppError::NotFound(_) => Ok(Reply::ignored(
                    Rejected::StaleLease {
                        trial: lease.trial.clone(),
                        attempt: lease.attempt,
                    }
                    .to_string(),
                )),
                e => Err(e),
            };
        }
        let (epoch, size) = (meta.epoch, meta.size);
        let store = self.upload_target(model);
        let t = lease.trial.clone();
        let kept = tokio::task::spawn_blocking(move || store.commit(&t, &path, meta))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Unavailable(format!("cannot store the checkpoint: {e}")))?;
        if model {
            self.models_changed.store(true, Ordering::Relaxed);
        }
        if kept {
            let kind = if model {
                Artifact::model
            } else {
                Artifact::checkpoint
            };
            self.metrics.moved(kind, Direction::received, size);
        }
        tracing::info!(trial = %lease.trial, attempt = lease.attempt, epoch, size, kept, model, "checkpoint");
        Ok(if kept {
            Reply::accepted()
        } else {
            Reply::ignored("a checkpoint of a later epoch is stored")
        })
    }

    /// The stored checkpoint of the trial `worker` leases, to resume from. Blocking.
    pub async fn load_checkpoint(
        &self,
        worker: &str,
        lease: &LeaseRef,
    ) -> Result<(Meta, Vec<u8>), AppError> {
        self.holds(worker, lease)?;
        let store = self.checkpoints.clone();
        let t = lease.trial.clone();
        // A panicked read is the coordinator's fault (INTERNAL), not a damaged checkpoint.
        let read = tokio::task::spawn_blocking(move || store.read(&t))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        match read {
            Ok((meta, bytes)) => {
                tracing::info!(trial = %lease.trial, attempt = lease.attempt, epoch = meta.epoch, "resuming from a checkpoint");
                self.metrics
                    .moved(Artifact::checkpoint, Direction::sent, bytes.len() as u64);
                Ok((meta, bytes))
            }
            Err(e) => {
                tracing::warn!(trial = %lease.trial, attempt = lease.attempt, "{e}");
                Err(AppError::DataLoss(format!(
                    "{e}; train from the first epoch"
                )))
            }
        }
    }

    /// The TorchScript module the trial `worker` leases trains: its hash, size, SHA-256 and
    /// file (streamed from disk by the caller).
    pub async fn module_for(
        &self,
        worker: &str,
        lease: &LeaseRef,
    ) -> Result<(ModuleHash, u64, String, PathBuf), AppError> {
        self.holds(worker, lease)?;
        let trial = &lease.trial;
        let model = self.lock().core.trial(trial).map(|t| t.spec.model);
        let Some(sweep_proto::Model::TorchScript(hash)) = model else {
            return Err(AppError::NotHeld(format!(
                "trial {trial} does not train a TorchScript module"
            )));
        };
        let store = self.checkpoints.clone();
        let (size, sha256) = tokio::task::spawn_blocking(move || store.module_digest(hash))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| {
                tracing::warn!(%trial, "{e}");
                AppError::NotFound(e)
            })?;
        tracing::info!(%trial, %hash, size, "sending a TorchScript module");
        Ok((hash, size, sha256, self.checkpoints.module_path(hash)))
    }
}

impl Shared {
    /// How many epochs trial `id` runs (to `stop_after`, for a PBT segment), if the core knows it: what a worker's epoch numbers
    /// about it must stay within.
    fn epochs_of(&self, id: &str) -> Option<u32> {
        self.core.trial(id).map(|t| t.spec.last_epoch())
    }
}
