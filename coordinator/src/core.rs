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
//!   front of the queue with the next attempt number, until `max_attempts` is reached and
//!   the trial fails with the reason kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use sweep_proto::{DeviceRequest, EpochMetrics, TrialResult, TrialSpec};

pub type TrialId = String;
pub type WorkerId = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
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
    },
    /// The worker reported a result (completed, diverged, or failed in training).
    Finished {
        attempt: u32,
        worker: WorkerId,
        result: Box<TrialResult>,
    },
    /// Lost its worker `max_attempts` times.
    Failed {
        attempts: u32,
        reason: String,
    },
    Cancelled,
}

impl TrialState {
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
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub name: String,
    pub device: DeviceKind,
    pub slots: u32,
    pub last_seen_ms: u64,
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

/// What happened to a lost worker's trials.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeued {
    Retry { trial: TrialId, next_attempt: u32 },
    GaveUp { trial: TrialId, reason: String },
}

#[derive(Debug, Default)]
pub struct Core {
    pub config: Config,
    trials: HashMap<TrialId, Trial>,
    queue: VecDeque<TrialId>,
    workers: HashMap<WorkerId, Worker>,
    next_worker: u64,
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

    pub fn workers(&self) -> impl Iterator<Item = (&WorkerId, &Worker)> {
        self.workers.iter()
    }

    /// Adds a trial in the given state (restored from the database, or new and queued).
    /// A trial already known keeps its state unless `replace` is set.
    pub fn add_trial(&mut self, id: TrialId, spec: TrialSpec, state: TrialState, replace: bool) {
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
        self.trials.insert(
            id,
            Trial {
                spec,
                spec_toml,
                state,
            },
        );
    }

    /// Registers a worker. A worker that reconnects after a network cut passes the id it had
    /// (`resume`): while that id is still alive (not expired) it keeps it, so its running
    /// leases stay its own and its results still count.
    pub fn register(
        &mut self,
        name: String,
        device: DeviceKind,
        slots: u32,
        resume: Option<&str>,
        now_ms: u64,
    ) -> WorkerId {
        if let Some(id) = resume {
            if let Some(w) = self.workers.get_mut(id) {
                if w.name == name && w.device == device {
                    w.last_seen_ms = now_ms;
                    w.slots = slots.max(1);
                    return id.to_string();
                }
            }
        }
        self.next_worker += 1;
        let id = format!("{name}-{}", self.next_worker);
        self.workers.insert(
            id.clone(),
            Worker {
                name,
                device,
                slots: slots.max(1),
                last_seen_ms: now_ms,
            },
        );
        id
    }

    fn touch(&mut self, worker: &str, now_ms: u64) -> Result<&Worker, Rejected> {
        let w = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| Rejected::UnknownWorker(worker.to_string()))?;
        w.last_seen_ms = now_ms;
        Ok(w)
    }

    /// Running leases of a worker.
    pub fn leases_of(&self, worker: &str) -> Vec<(TrialId, u32)> {
        self.trials
            .iter()
            .filter_map(|(id, t)| match &t.state {
                TrialState::Running {
                    attempt, worker: w, ..
                } if w == worker => Some((id.clone(), *attempt)),
                _ => None,
            })
            .collect()
    }

    /// Hands up to `free_slots` queued trials the worker can run, front of the queue first.
    pub fn lease(
        &mut self,
        worker: &str,
        free_slots: u32,
        now_ms: u64,
    ) -> Result<Vec<Grant>, Rejected> {
        let device = self.touch(worker, now_ms)?.device;
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
            trial.state = TrialState::Running {
                attempt,
                worker: worker.to_string(),
                since_ms: now_ms,
                epochs: Vec::new(),
            };
            grants.push(Grant {
                trial: id,
                attempt,
                spec_toml: trial.spec_toml.clone(),
            });
        }
        Ok(grants)
    }

    /// Records a heartbeat; returns the worker's leases that it must stop (cancelled or
    /// taken away), among those it says it runs.
    pub fn heartbeat(
        &mut self,
        worker: &str,
        running: &[(TrialId, u32)],
        now_ms: u64,
    ) -> Result<Vec<(TrialId, u32)>, Rejected> {
        self.touch(worker, now_ms)?;
        Ok(running
            .iter()
            .filter(|(id, attempt)| {
                !matches!(self.trials.get(id).map(|t| &t.state),
                    Some(TrialState::Running { attempt: a, worker: w, .. }) if a == attempt && w == worker)
            })
            .cloned()
            .collect())
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
            .ok_or_else(|| Rejected::UnknownTrial(trial.to_string()))?;
        match &t.state {
            TrialState::Running {
                attempt: a,
                worker: w,
                ..
            } if *a == attempt && w == worker => Ok(&mut t.state),
            _ => Err(Rejected::StaleLease {
                trial: trial.to_string(),
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
    ) -> Result<(), Rejected> {
        self.touch(worker, now_ms)?;
        let state = self.current(worker, trial, attempt)?;
        *state = TrialState::Finished {
            attempt,
            worker: worker.to_string(),
            result: Box::new(result),
        };
        Ok(())
    }

    /// Takes back a lease that could not be recorded (the database failed): the trial goes
    /// back to the front of the queue with the same attempt number, as if never leased.
    pub fn unlease(&mut self, worker: &str, trial: &str, attempt: u32) {
        if let Ok(state) = self.current(worker, trial, attempt) {
            *state = TrialState::Queued { attempt };
            self.queue.push_front(trial.to_string());
        }
    }

    /// Takes back a result the database could not record: the lease runs again, so the
    /// worker's retry of the same report counts (or, if the worker is gone by now, the trial
    /// is queued again with the next attempt number).
    pub fn unfinish(&mut self, worker: &str, trial: &str, attempt: u32, now_ms: u64) {
        let alive = self.workers.contains_key(worker);
        let Some(t) = self.trials.get_mut(trial) else {
            return;
        };
        if !matches!(&t.state, TrialState::Finished { attempt: a, worker: w, .. } if *a == attempt && w == worker)
        {
            return;
        }
        t.state = if alive {
            TrialState::Running {
                attempt,
                worker: worker.to_string(),
                since_ms: now_ms,
                epochs: Vec::new(),
            }
        } else {
            self.queue.push_front(trial.to_string());
            TrialState::Queued {
                attempt: attempt + 1,
            }
        };
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

    /// Removes a worker and re-queues its trials at the front (or fails them after too many
    /// attempts).
    pub fn lose_worker(&mut self, worker: &str, why: &str) -> Vec<Requeued> {
        self.workers.remove(worker);
        let mut out = Vec::new();
        let mut ids: Vec<(TrialId, u32)> = self.leases_of(worker);
        ids.sort();
        for (id, attempt) in ids.into_iter().rev() {
            let trial = self.trials.get_mut(&id).expect("lease of a known trial");
            if attempt >= self.config.max_attempts {
                let reason = format!(
                    "attempt {attempt} of {} lost: {why}",
                    self.config.max_attempts
                );
                trial.state = TrialState::Failed {
                    attempts: attempt,
                    reason: reason.clone(),
                };
                out.push(Requeued::GaveUp { trial: id, reason });
            } else {
                trial.state = TrialState::Queued {
                    attempt: attempt + 1,
                };
                self.queue.push_front(id.clone());
                out.push(Requeued::Retry {
                    trial: id,
                    next_attempt: attempt + 1,
                });
            }
        }
        out
    }

    /// Expires silent workers; the periodic tick of the service.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(WorkerId, Vec<Requeued>)> {
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
            if let Some(t) = self.trials.get_mut(id) {
                if !t.state.is_terminal() {
                    t.state = TrialState::Cancelled;
                    cancelled.push(id.clone());
                }
            }
        }
        let gone: std::collections::HashSet<&TrialId> = cancelled.iter().collect();
        self.queue.retain(|q| !gone.contains(q));
        cancelled
    }

    /// Counts of the given trials by state: (queued, running, finished, failed, cancelled).
    pub fn counts(&self, ids: &[TrialId]) -> Counts {
        let mut c = Counts::default();
        for t in ids.iter().filter_map(|id| self.trials.get(id)) {
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
        )
    }
}

impl Counts {
    pub fn total(&self) -> usize {
        self.queued + self.running + self.finished + self.failed + self.cancelled
    }

    pub fn is_done(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
}

#[cfg(test)]
mod tests;
