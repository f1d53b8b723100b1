//! The scheduling core: a pure state machine over trials and workers.
//!
//! Events come in as method calls with the current time in milliseconds; nothing here touches
//! the network, the clock or the database, so every rule is tested directly. The gRPC layer
//! translates requests into these calls and persists what they return.
//!
//! Rules:
//! - Workers pull. A lease goes to the front of the queue among trials the worker can run
//!   (a `device = "cuda"` trial never goes to a CPU worker).
//! - Every lease has an attempt number. Progress and results are accepted only from the
//!   worker holding the current attempt; anything else (a lost attempt reporting late) is
//!   ignored, so a result is never counted twice.
//! - A worker silent for longer than the heartbeat timeout is lost: its trials go back to the
//!   front of the queue with the next attempt number. A trial fails (reason kept) once it has
//!   lost its worker `max_attempts` times: lost attempts count, not attempts, so coordinator
//!   restarts and `--rerun` do not use up the budget.
//! - Worker ids are `NAME-<16 hex digits>`, never reused while the database lives, and come
//!   with a secret: a worker resumes its id after a network cut only with that secret.
//! - A restart costs nothing: the database keeps each worker (its secret's hash, never the
//!   secret) and its leases. At start the workers holding leases are restored as just seen;
//!   one that comes back with its secret within a heartbeat timeout keeps its id and leases,
//!   one that does not loses them as any silent worker does, except that this does not count
//!   as a lost attempt (the restart was not the trial's fault).
//! - A worker never holds more leases than the slots it registered, whatever it asks for.
//! - Heartbeats reconcile: a lease the worker does not list in two heartbeats in a row (the
//!   lease reply never reached it) is lost and goes back to the queue.
//! - A coordinator that was itself not running (stopped, suspended, starved) does not blame
//!   workers for its own silence: when a tick comes more than a heartbeat interval late,
//!   every worker is treated as just seen.
//! - An identical repeat of a stored result by the worker that sent it (the first answer
//!   was lost) is acknowledged as stored; from any other worker it is refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use sweep_proto::{DeviceRequest, EpochMetrics, TrialResult, TrialSpec};

pub use sweep_proto::ids::{LeaseRef, TrialId, WorkerId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    /// "cpu" or "cuda".
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    pub fn can_run(self, request: DeviceRequest) -> bool {
        !matches!(
            (self, request),
            (DeviceKind::Cpu, DeviceRequest::Cuda) | (DeviceKind::Cuda, DeviceRequest::Cpu)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrialState {
    /// Waiting for a worker; `attempt` is the number the next lease gets (1-based).
    Queued {
        attempt: u32,
    },
    Running {
        attempt: u32,
        worker: WorkerId,
        since_ms: u64,
        epochs: Vec<EpochMetrics>,
        /// Heartbeats in a row from its worker that did not list this lease.
        unconfirmed: u32,
    },
    /// The worker reported a result (completed, diverged, or failed in training).
    Finished {
        attempt: u32,
        worker: WorkerId,
        result: Box<TrialResult>,
    },
    /// Lost its worker `max_attempts` times (`attempts` is the last attempt's number).
    Failed {
        attempts: u32,
        reason: String,
    },
    Cancelled,
}

impl TrialState {
    /// A lease just handed to `worker` (or handed back to it), with no epochs yet.
    fn running(attempt: u32, worker: &str, now_ms: u64) -> TrialState {
        TrialState::Running {
            attempt,
            worker: worker.into(),
            since_ms: now_ms,
            epochs: Vec::new(),
            unconfirmed: 0,
        }
    }

    /// The epochs a trial has reported: a running one's so far, a finished one's result's.
    pub fn epochs(&self) -> &[EpochMetrics] {
        match self {
            TrialState::Running { epochs, .. } => epochs,
            TrialState::Finished { result, .. } => &result.epochs,
            _ => &[],
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TrialState::Finished { .. } | TrialState::Failed { .. } | TrialState::Cancelled
        )
    }
}

#[derive(Debug, Clone)]
pub struct Trial {
    pub spec: TrialSpec,
    /// The spec as it crosses the wire (canonical TOML), made once rather than per lease.
    pub spec_toml: Arc<str>,
    pub state: TrialState,
    /// Attempts that lost their worker (expired, or a lease it never received); the retry
    /// budget counts these.
    pub lost: u32,
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub name: String,
    pub device: DeviceKind,
    pub slots: u32,
    pub last_seen_ms: u64,
    /// SHA-256 (hex) of the secret that proves a reconnecting worker is this one.
    secret_sha: String,
    /// Restored from the database at start and not heard from since: if it does not come
    /// back, its leases go back to the queue without counting as lost.
    pub restored: bool,
}

/// A worker as the database keeps it, so that a restarted coordinator knows it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub name: String,
    pub device: DeviceKind,
    pub slots: u32,
    /// SHA-256 (hex) of its resume secret; the secret itself is never stored.
    pub secret_sha: String,
}

/// Where trials are looked up by id: the core itself, or a [`Snapshot`] of some of them
/// copied out of it (so that long work, a report, is done outside the core's lock).
pub trait TrialLookup {
    fn trial(&self, id: &str) -> Option<&Trial>;
}

/// Some trials copied out of the core.
pub type Snapshot = HashMap<TrialId, Trial>;

impl TrialLookup for Snapshot {
    fn trial(&self, id: &str) -> Option<&Trial> {
        self.get(id)
    }
}

impl TrialLookup for Core {
    fn trial(&self, id: &str) -> Option<&Trial> {
        Core::trial(self, id)
    }
}

/// Most trials one worker may run at once.
pub const MAX_SLOTS: u32 = 256;

/// A registration: who the worker says it is, plus fresh randomness from the caller (the core
/// stays pure) for its id and secret.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub name: String,
    pub device: DeviceKind,
    pub slots: u32,
    /// Random bits for the id suffix.
    pub nonce: u64,
    /// A random secret, handed to the worker for resuming.
    pub secret: String,
}

/// The worker a running trial is leased to.
fn holder(state: &TrialState) -> Option<&WorkerId> {
    match state {
        TrialState::Running { worker, .. } => Some(worker),
        _ => None,
    }
}

/// The hex SHA-256 of a worker's resume secret: what the core and the database keep.
pub fn secret_sha(secret: &str) -> String {
    sweep_proto::sha256_hex(secret.as_bytes())
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What [`Core::finish`] did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// A new result: persist it.
    New,
    /// The same result for the same attempt is already stored (a retried report).
    AlreadyStored,
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub heartbeat_timeout_ms: u64,
    pub max_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_timeout_ms: 15_000,
            max_attempts: 3,
        }
    }
}

/// A lease handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub trial: TrialId,
    pub attempt: u32,
    /// The trial's canonical TOML (what the worker parses).
    pub spec_toml: Arc<str>,
}

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("unknown worker {0}; register again")]
    UnknownWorker(WorkerId),
    #[error("unknown trial {0}")]
    UnknownTrial(TrialId),
    #[error(
        "trial {trial} attempt {attempt} is not leased to this worker (lost lease or late report)"
    )]
    StaleLease { trial: TrialId, attempt: u32 },
}

/// What a heartbeat decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    /// Leases the worker listed that it must stop (cancelled, or no longer its own).
    pub stop: Vec<LeaseRef>,
    /// Leases it held but did not list twice in a row: lost, re-queued or failed.
    pub lost: Vec<Requeued>,
}

/// What happened to a lost worker's trials.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeued {
    Retry {
        trial: TrialId,
        next_attempt: u32,
        lost: u32,
    },
    GaveUp {
        trial: TrialId,
        reason: String,
        lost: u32,
    },
}

#[derive(Debug, Default)]
pub struct Core {
    pub config: Config,
    trials: HashMap<TrialId, Trial>,
    queue: VecDeque<TrialId>,
    workers: HashMap<WorkerId, Worker>,
    /// Every worker id ever given out (this run, and those in the database's history).
    known_ids: HashSet<WorkerId>,
    /// Running leases per worker, so slot caps and lost workers do not scan every trial.
    held: HashMap<WorkerId, HashSet<TrialId>>,
    last_tick_ms: Option<u64>,
}

impl Core {
    pub fn new(config: Config) -> Core {
        Core {
            config,
            ..Core::default()
        }
    }

    pub fn trial(&self, id: &str) -> Option<&Trial> {
        self.trials.get(id)
    }

    pub fn trials(&self) -> impl Iterator<Item = (&TrialId, &Trial)> {
        self.trials.iter()
    }

    /// Copies of the trials `ids` names (those the core has).
    pub fn snapshot<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Snapshot {
        ids.into_iter()
            .filter_map(|id| self.trials.get_key_value(id))
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect()
    }

    pub fn workers(&self) -> impl Iterator<Item = (&WorkerId, &Worker)> {
        self.workers.iter()
    }

    /// Adds a trial in the given state (restored from the database, or new and queued).
    /// A trial already known keeps its state unless `replace` is set.
    pub fn add_trial(&mut self, id: TrialId, spec: TrialSpec, state: TrialState, replace: bool) {
        self.add_trial_lost(id, spec, state, 0, replace)
    }

    /// [`Core::add_trial`] with the lost-attempt count a stored trial carries.
    pub fn add_trial_lost(
        &mut self,
        id: TrialId,
        spec: TrialSpec,
        state: TrialState,
        lost: u32,
        replace: bool,
    ) {
        match self.trials.get(&id) {
            Some(_) if !replace => return,
            // Only a queued trial is in the queue; scanning it for every new trial made
            // submitting 100,000 trials quadratic (minutes; found by bench/load).
            Some(Trial {
                state: TrialState::Queued { .. },
                ..
            }) => self.queue.retain(|q| q != &id),
            _ => {}
        }
        if let TrialState::Queued { .. } = state {
            self.queue.push_back(id.clone());
        }
        let spec_toml = Arc::from(spec.to_toml());
        let old = self.trials.get(&id).and_then(|t| holder(&t.state)).cloned();
        self.reindex(&id, old, holder(&state).cloned());
        self.trials.insert(
            id,
            Trial {
                spec,
                spec_toml,
                state,
                lost,
            },
        );
    }

    /// Forgets a queued trial (a suggestion whose write the disk refused); a trial in any
    /// other state is kept.
    pub fn remove_queued(&mut self, id: &str) {
        if matches!(
            self.trials.get(id).map(|t| &t.state),
            Some(TrialState::Queued { .. })
        ) {
            self.queue.retain(|q| q != id);
            self.trials.remove(id);
        }
    }

    /// How many more leases `worker` may hold, and its device; `None` for an unknown worker.
    pub fn room(&self, worker: &str) -> Option<(DeviceKind, u32)> {
        let w = self.workers.get(worker)?;
        let holding = self.held.get(worker).map_or(0, HashSet::len) as u32;
        Some((w.device, w.slots.saturating_sub(holding)))
    }

    /// Ids of workers from the database's history: never given out again.
    pub fn remember_worker_ids(&mut self, ids: impl IntoIterator<Item = WorkerId>) {
        self.known_ids.extend(ids);
    }

    /// Moves `trial` in the per-worker lease index from the worker that held it (if any) to
    /// the one that holds it now (if any).
    fn reindex(&mut self, trial: &str, old: Option<WorkerId>, new: Option<WorkerId>) {
        if let Some(h) = old.and_then(|w| self.held.get_mut(&w)) {
            h.remove(trial);
        }
        if let Some(w) = new {
            self.held.entry(w).or_default().insert(trial.into());
        }
    }

    /// Sets a trial's state, keeping the per-worker lease index in step.
    fn set_state(&mut self, trial: &str, state: TrialState) {
        let Some(t) = self.trials.get_mut(trial) else {
            return;
        };
        let old = std::mem::replace(&mut t.state, state);
        let new = holder(&t.state).cloned();
        self.reindex(trial, holder(&old).cloned(), new);
    }

    /// Registers a worker. A worker that reconnects after a network cut or a coordinator
    /// restart passes the id it had and its secret (`resume`): while that id is still alive
    /// (not expired) and the secret matches, it keeps the id, so its running leases stay its
    /// own and its results still count. Otherwise it gets a new id that was never used before.
    /// Returns the worker as the database should keep it, and its secret.
    pub fn register(
        &mut self,
        w: NewWorker,
        resume: Option<(&str, &str)>,
        now_ms: u64,
    ) -> (WorkerRecord, String) {
        let slots = w.slots.clamp(1, MAX_SLOTS);
        if let Some((id, secret)) = resume {
            if let Some(old) = self.workers.get_mut(id) {
                if old.name == w.name
                    && old.device == w.device
                    && constant_time_eq(old.secret_sha.as_bytes(), secret_sha(secret).as_bytes())
                {
                    old.last_seen_ms = now_ms;
                    old.slots = slots;
                    old.restored = false;
                    let record = self.record(id).expect("just found");
                    return (record, secret.to_string());
                }
            }
        }
        let mut nonce = w.nonce;
        let id = loop {
            let id = WorkerId::new(format!("{}-{nonce:016x}", w.name));
            if !self.known_ids.contains(&id) {
                break id;
            }
            nonce = nonce.wrapping_add(1);
        };
        self.known_ids.insert(id.clone());
        self.workers.insert(
            id.clone(),
            Worker {
                name: w.name,
                device: w.device,
                slots,
                last_seen_ms: now_ms,
                secret_sha: secret_sha(&w.secret),
                restored: false,
            },
        );
        (self.record(&id).expect("just added"), w.secret)
    }

    /// Worker `id` as the database keeps it.
    pub fn record(&self, id: &str) -> Option<WorkerRecord> {
        self.workers.get(id).map(|w| WorkerRecord {
            id: id.into(),
            name: w.name.clone(),
            device: w.device,
            slots: w.slots,
            secret_sha: w.secret_sha.clone(),
        })
    }

    /// A worker the database knows, brought back at start as if just heard from: it has one
    /// heartbeat timeout to come back (with its secret) before its leases are given away.
    pub fn restore_worker(&mut self, w: WorkerRecord, now_ms: u64) {
        self.known_ids.insert(w.id.clone());
        self.workers.insert(
            w.id,
            Worker {
                name: w.name,
                device: w.device,
                slots: w.slots.clamp(1, MAX_SLOTS),
                last_seen_ms: now_ms,
                secret_sha: w.secret_sha,
                restored: true,
            },
        );
    }

    /// A lease the database holds for a restored worker: the queued trial runs again on that
    /// worker's attempt, with the epochs it had reported. Nothing happens unless the trial is
    /// queued with the next attempt and the worker is known.
    pub fn restore_lease(
        &mut self,
        trial: &str,
        attempt: u32,
        worker: &str,
        epochs: Vec<EpochMetrics>,
        now_ms: u64,
    ) {
        let queued_next = matches!(self.trials.get(trial).map(|t| &t.state),
            Some(TrialState::Queued { attempt: a }) if *a == attempt + 1);
        if !queued_next || !self.workers.contains_key(worker) {
            return;
        }
        self.queue.retain(|q| q != trial);
        let mut state = TrialState::running(attempt, worker, now_ms);
        if let TrialState::Running { epochs: e, .. } = &mut state {
            *e = epochs;
        }
        self.set_state(trial, state);
    }

    /// Gives away now the leases of restored workers that have not come back (a local sweep,
    /// whose workers died with the previous process, need not wait for them): back to the
    /// queue, not counted as lost.
    pub fn drop_restored(&mut self) -> Vec<(WorkerId, Vec<Requeued>)> {
        let mut gone: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.restored)
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort();
        gone.into_iter()
            .map(|w| {
                let requeued = self.lose_worker(&w, "the coordinator restarted");
                (w, requeued)
            })
            .collect()
    }

    fn touch(&mut self, worker: &str, now_ms: u64) -> Result<&Worker, Rejected> {
        let w = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| Rejected::UnknownWorker(worker.into()))?;
        w.last_seen_ms = now_ms;
        Ok(w)
    }

    /// Running leases of a worker.
    pub fn leases_of(&self, worker: &str) -> Vec<(TrialId, u32)> {
        let mut out: Vec<(TrialId, u32)> = self
            .held
            .get(worker)
            .into_iter()
            .flatten()
            .filter_map(|id| match self.trials.get(id).map(|t| &t.state) {
                Some(TrialState::Running { attempt, .. }) => Some((id.clone(), *attempt)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Hands up to `free_slots` queued trials the worker can run, front of the queue first,
    /// never more than its registered slots minus the leases it holds.
    pub fn lease(
        &mut self,
        worker: &str,
        free_slots: u32,
        now_ms: u64,
    ) -> Result<Vec<Grant>, Rejected> {
        let (device, slots) = {
            let w = self.touch(worker, now_ms)?;
            (w.device, w.slots)
        };
        let holding = self.held.get(worker).map_or(0, HashSet::len) as u32;
        let free_slots = free_slots.min(slots.saturating_sub(holding));
        let mut grants = Vec::new();
        let mut i = 0;
        while i < self.queue.len() && grants.len() < free_slots as usize {
            let id = &self.queue[i];
            let trial = self.trials.get_mut(id).expect("queued trials exist");
            let TrialState::Queued { attempt } = trial.state else {
                unreachable!("only queued trials are in the queue")
            };
            if !device.can_run(trial.spec.device) {
                i += 1;
                continue;
            }
            let id = self.queue.remove(i).expect("index checked");
            let spec_toml = trial.spec_toml.clone();
            self.set_state(&id, TrialState::running(attempt, worker, now_ms));
            grants.push(Grant {
                trial: id,
                attempt,
                spec_toml,
            });
        }
        Ok(grants)
    }

    /// Records a heartbeat. Returns the leases it lists that the worker must stop (cancelled
    /// or taken away), and the leases it held but did not list twice in a row, now lost and
    /// re-queued (to be persisted).
    pub fn heartbeat(
        &mut self,
        worker: &str,
        running: &[LeaseRef],
        now_ms: u64,
    ) -> Result<Beat, Rejected> {
        self.touch(worker, now_ms)?;
        let stop = running
            .iter()
            .filter(|l| {
                !matches!(self.trials.get(&l.trial).map(|t| &t.state),
                    Some(TrialState::Running { attempt: a, worker: w, .. }) if *a == l.attempt && w == worker)
            })
            .cloned()
            .collect();
        let listed: HashSet<(&str, u32)> = running
            .iter()
            .map(|l| (l.trial.as_str(), l.attempt))
            .collect();
        let mut missing = Vec::new();
        for (id, attempt) in self.leases_of(worker) {
            let confirmed = listed.contains(&(id.as_str(), attempt));
            if let Some(Trial {
                state: TrialState::Running { unconfirmed, .. },
                ..
            }) = self.trials.get_mut(&id)
            {
                *unconfirmed = if confirmed { 0 } else { *unconfirmed + 1 };
                if *unconfirmed >= 2 {
                    missing.push((id, attempt));
                }
            }
        }
        let requeued = missing
            .into_iter()
            .map(|(id, attempt)| {
                self.lose_lease(&id, attempt, "the worker never received its lease", true)
            })
            .collect();
        Ok(Beat {
            stop,
            lost: requeued,
        })
    }

    fn current<'a>(
        &'a mut self,
        worker: &str,
        trial: &str,
        attempt: u32,
    ) -> Result<&'a mut TrialState, Rejected> {
        let t = self
            .trials
            .get_mut(trial)
            .ok_or_else(|| Rejected::UnknownTrial(trial.into()))?;
        match &t.state {
            TrialState::Running {
                attempt: a,
                worker: w,
                ..
            } if *a == attempt && w == worker => Ok(&mut t.state),
            _ => Err(Rejected::StaleLease {
                trial: trial.into(),
                attempt,
            }),
        }
    }

    pub fn progress(
        &mut self,
        worker: &str,
        trial: &str,
        attempt: u32,
        metrics: EpochMetrics,
        now_ms: u64,
    ) -> Result<(), Rejected> {
        self.touch(worker, now_ms)?;
        if let TrialState::Running { epochs, .. } = self.current(worker, trial, attempt)? {
            epochs.retain(|e| e.epoch != metrics.epoch);
            epochs.push(metrics);
        }
        Ok(())
    }

    pub fn finish(
        &mut self,
        worker: &str,
        trial: &str,
        attempt: u32,
        result: TrialResult,
        now_ms: u64,
    ) -> Result<Finished, Rejected> {
        // A retry of a report whose answer was lost: the same worker (a restart or a short
        // cut keeps its id), the same attempt, exactly the same result. Anyone else is
        // refused below: the attempt is not theirs.
        if let Some(TrialState::Finished {
            attempt: a,
            worker: w,
            result: stored,
        }) = self.trials.get(trial).map(|t| &t.state)
        {
            if *a == attempt && w == worker && **stored == result {
                if let Some(w) = self.workers.get_mut(worker) {
                    w.last_seen_ms = now_ms;
                }
                return Ok(Finished::AlreadyStored);
            }
        }
        self.touch(worker, now_ms)?;
        self.current(worker, trial, attempt)?;
        self.set_state(
            trial,
            TrialState::Finished {
                attempt,
                worker: worker.into(),
                result: Box::new(result),
            },
        );
        Ok(Finished::New)
    }

    /// Takes back a lease that could not be recorded (the database failed): the trial goes
    /// back to the front of the queue with the same attempt number, as if never leased.
    pub fn unlease(&mut self, worker: &str, trial: &str, attempt: u32) {
        if self.current(worker, trial, attempt).is_ok() {
            self.set_state(trial, TrialState::Queued { attempt });
            self.queue.push_front(trial.into());
        }
    }

    /// Takes back a result the database could not record: the lease runs again, so the
    /// worker's retry of the same report counts (or, if the worker is gone by now, the trial
    /// is queued again with the next attempt number).
    pub fn unfinish(&mut self, worker: &str, trial: &str, attempt: u32, now_ms: u64) {
        let alive = self.workers.contains_key(worker);
        let Some(t) = self.trials.get(trial) else {
            return;
        };
        if !matches!(&t.state, TrialState::Finished { attempt: a, worker: w, .. } if *a == attempt && w == worker)
        {
            return;
        }
        let state = if alive {
            TrialState::running(attempt, worker, now_ms)
        } else {
            self.queue.push_front(trial.into());
            TrialState::Queued {
                attempt: attempt + 1,
            }
        };
        self.set_state(trial, state);
    }

    /// Workers silent for longer than the timeout, as of `now_ms`.
    pub fn expired_workers(&self, now_ms: u64) -> Vec<WorkerId> {
        let mut lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                now_ms.saturating_sub(w.last_seen_ms) > self.config.heartbeat_timeout_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        lost.sort();
        lost
    }

    /// A running attempt lost its worker: back to the front of the queue with the next
    /// attempt number, or failed once the trial has lost `max_attempts` attempts.
    fn lose_lease(&mut self, id: &str, attempt: u32, why: &str, counts: bool) -> Requeued {
        let max = self.config.max_attempts;
        let lost = self.trials.get(id).map_or(0, |t| t.lost) + u32::from(counts);
        if let Some(t) = self.trials.get_mut(id) {
            t.lost = lost;
        }
        if counts && lost >= max {
            let reason =
                format!("lost its worker {lost} times (max {max}); last, attempt {attempt}: {why}");
            self.set_state(
                id,
                TrialState::Failed {
                    attempts: attempt,
                    reason: reason.clone(),
                },
            );
            Requeued::GaveUp {
                trial: id.into(),
                reason,
                lost,
            }
        } else {
            self.set_state(
                id,
                TrialState::Queued {
                    attempt: attempt + 1,
                },
            );
            self.queue.push_front(id.into());
            Requeued::Retry {
                trial: id.into(),
                next_attempt: attempt + 1,
                lost,
            }
        }
    }

    /// Removes a worker and re-queues its trials at the front (or fails them after too many
    /// lost attempts).
    pub fn lose_worker(&mut self, worker: &str, why: &str) -> Vec<Requeued> {
        // A restored worker that never came back lost its leases to the restart, not to a
        // fault of the trials: that does not use up their retries.
        let counts = self.workers.remove(worker).is_none_or(|w| !w.restored);
        let leases = self.leases_of(worker);
        self.held.remove(worker);
        leases
            .into_iter()
            .rev()
            .map(|(id, attempt)| self.lose_lease(&id, attempt, why, counts))
            .collect()
    }

    /// Expires silent workers; the periodic tick of the service. A tick more than a heartbeat
    /// interval (a third of the timeout) after the previous one means this coordinator was not
    /// running meanwhile: workers could not have been heard, so all count as seen now.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(WorkerId, Vec<Requeued>)> {
        let late = self
            .last_tick_ms
            .is_some_and(|last| now_ms.saturating_sub(last) > self.config.heartbeat_timeout_ms / 3);
        self.last_tick_ms = Some(now_ms);
        if late {
            for w in self.workers.values_mut() {
                w.last_seen_ms = w.last_seen_ms.max(now_ms);
            }
        }
        self.expired_workers(now_ms)
            .into_iter()
            .map(|w| {
                let requeued = self.lose_worker(&w, "worker stopped sending heartbeats");
                (w, requeued)
            })
            .collect()
    }

    /// Cancels the given trials unless they already ended. Running ones are told to stop at
    /// their next heartbeat.
    pub fn cancel(&mut self, ids: &[TrialId]) -> Vec<TrialId> {
        let mut cancelled = Vec::new();
        for id in ids {
            if self.trials.get(id).is_some_and(|t| !t.state.is_terminal()) {
                self.set_state(id, TrialState::Cancelled);
                cancelled.push(id.clone());
            }
        }
        let gone: std::collections::HashSet<&TrialId> = cancelled.iter().collect();
        self.queue.retain(|q| !gone.contains(q));
        cancelled
    }

    /// Follows a cancel the database made (it changed exactly `ids`, sparing finished
    /// trials): like [`Core::cancel`], and a trial the core gave up on meanwhile (failed for
    /// lost workers, a state the database then did not record over the cancel) is cancelled
    /// too. A trial whose result the core holds stays finished: the database keeps a result
    /// written after a cancel.
    pub fn follow_cancel(&mut self, ids: &[TrialId]) -> Vec<TrialId> {
        let gave_up: Vec<TrialId> = ids
            .iter()
            .filter(|id| {
                matches!(
                    self.trials.get(*id).map(|t| &t.state),
                    Some(TrialState::Failed { .. })
                )
            })
            .cloned()
            .collect();
        let mut cancelled = self.cancel(ids);
        for id in gave_up {
            self.set_state(&id, TrialState::Cancelled);
            cancelled.push(id);
        }
        cancelled
    }

    /// Counts of the given trials by state: (queued, running, finished, failed, cancelled).
    pub fn counts<'a>(&self, ids: impl IntoIterator<Item = &'a TrialId>) -> Counts {
        let mut c = Counts::default();
        for t in ids.into_iter().filter_map(|id| self.trials.get(id)) {
            match t.state {
                TrialState::Queued { .. } => c.queued += 1,
                TrialState::Running { .. } => c.running += 1,
                TrialState::Finished { .. } => c.finished += 1,
                TrialState::Failed { .. } => c.failed += 1,
                TrialState::Cancelled => c.cancelled += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// A search's trials not yet suggested (`search = "tpe"`; set by the caller).
    pub to_suggest: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} trials: {} finished, {} running, {} queued, {} failed, {} cancelled",
            self.total(),
            self.finished,
            self.running,
            self.queued,
            self.failed,
            self.cancelled
        )?;
        if self.to_suggest > 0 {
            write!(f, ", {} to suggest", self.to_suggest)?;
        }
        Ok(())
    }
}

impl Counts {
    /// Trials stored (those still to suggest are not counted).
    pub fn total(&self) -> usize {
        self.queued + self.running + self.finished + self.failed + self.cancelled
    }

    pub fn is_done(&self) -> bool {
        self.queued == 0 && self.running == 0 && self.to_suggest == 0
    }
}

#[cfg(test)]
mod tests;
