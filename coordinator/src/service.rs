//! The coordinator's shared state and its gRPC face.
//!
//! [`Handle`] is a cloneable handle around the core and the store (mini-redis style). The
//! gRPC service only translates: protobuf in, a core call plus a store write, protobuf out.
//! Reports are checked against the core before they are written and applied after, so a
//! database error never leaves the core believing in a result the disk does not have.

use crate::core::{Config, Core, Counts, DeviceKind, Rejected, TrialId, TrialState};
use crate::store::{Store, StoreError, StoredSweep};
use crate::sweep::Sweep;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use sweep_proto::pb::{self, coordinator_server::Coordinator};
use sweep_proto::{EpochMetrics, TrialResult};
use tonic::{Request, Response, Status};

pub struct Shared {
    pub core: Core,
    pub store: Store,
    /// Dataset directory to suggest to workers, per trial (from the sweep that queued it).
    data_hints: HashMap<TrialId, String>,
    started: Instant,
    data_version: i64,
    /// The last write error, until a write succeeds again: the coordinator is not ready and
    /// takes no work while its disk refuses it (full, read-only, gone).
    storage_error: Option<String>,
}

impl Shared {
    /// Passes a store result through, remembering whether the disk is taking writes.
    fn wrote<T>(&mut self, r: Result<T, StoreError>) -> Result<T, Status> {
        match r {
            Ok(v) => {
                if self.storage_error.take().is_some() {
                    tracing::info!("database writes work again");
                }
                Ok(v)
            }
            Err(e) => {
                self.storage_error = Some(e.to_string());
                Err(storage(e))
            }
        }
    }
}

#[derive(Clone)]
pub struct Handle {
    inner: Arc<Mutex<Shared>>,
}

impl Handle {
    /// Opens (or creates) the database and restores every trial into the core.
    pub fn open(db: &Path, config: Config) -> Result<Handle, StoreError> {
        let store = Store::open(db)?;
        let mut core = Core::new(config);
        for t in store.load_trials()? {
            core.add_trial(t.id, t.spec, t.state, true);
        }
        let mut data_hints = HashMap::new();
        for name in store.sweep_names()? {
            if let Some(s) = store.sweep(&name)? {
                if let Some(data) = &s.data {
                    for (id, _, _) in &s.trials {
                        data_hints.insert(id.clone(), data.clone());
                    }
                }
            }
        }
        let data_version = store.data_version()?;
        let shared = Shared {
            core,
            store,
            data_hints,
            started: Instant::now(),
            data_version,
            storage_error: None,
        };
        Ok(Handle {
            inner: Arc::new(Mutex::new(shared)),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sweep and queues its new (or, with `rerun`, all) trials.
    pub fn submit(&self, sweep: &Sweep, rerun: bool) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.store.add_sweep(sweep, rerun)?;
        let stored = s.store.load_trials()?;
        let wanted: HashMap<&str, ()> = sweep.trials.iter().map(|t| (t.id.as_str(), ())).collect();
        for t in stored
            .into_iter()
            .filter(|t| wanted.contains_key(t.id.as_str()))
        {
            let replace = matches!(t.state, TrialState::Queued { .. })
                && s.core.trial(&t.id).is_none_or(|c| c.state.is_terminal());
            s.core.add_trial(t.id, t.spec, t.state, replace);
        }
        if let Some(data) = &sweep.data {
            for t in &sweep.trials {
                s.data_hints
                    .insert(t.id.clone(), data.display().to_string());
            }
        }
        Ok(())
    }

    pub fn sweep(&self, name: &str) -> Result<Option<StoredSweep>, StoreError> {
        self.lock().store.sweep(name)
    }

    pub fn counts(&self, ids: &[TrialId]) -> Counts {
        self.lock().core.counts(ids)
    }

    pub fn cancel(&self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        let mut s = self.lock();
        let Some(sweep) = s.store.sweep(name)? else {
            return Ok(Vec::new());
        };
        let ids: Vec<TrialId> = sweep.trials.into_iter().map(|t| t.0).collect();
        let cancelled = s.core.cancel(&ids);
        s.store.record_cancelled(&cancelled)?;
        s.store.set_sweep_cancelled(name)?;
        Ok(cancelled)
    }

    fn now_ms(s: &Shared) -> u64 {
        s.started.elapsed().as_millis() as u64
    }

    /// Picks up what other processes wrote to the database (`submit`, `cancel`): new trials
    /// are queued, trials re-queued by `--rerun` replace finished ones, cancelled ones stop.
    fn sync_from_store(s: &mut Shared) -> Result<(), StoreError> {
        let version = s.store.data_version()?;
        if version == s.data_version {
            return Ok(());
        }
        s.data_version = version;
        for t in s.store.load_trials()? {
            let current = s.core.trial(&t.id).map(|c| c.state.clone());
            match (current, &t.state) {
                (None, _) => s.core.add_trial(t.id, t.spec, t.state, false),
                (Some(c), TrialState::Cancelled) if !c.is_terminal() => {
                    s.core.cancel(&[t.id]);
                }
                (Some(c), TrialState::Queued { .. }) if c.is_terminal() => {
                    s.core.add_trial(t.id, t.spec, t.state, true)
                }
                _ => {}
            }
        }
        for name in s.store.sweep_names()? {
            if let Some(sweep) = s.store.sweep(&name)? {
                if let Some(data) = &sweep.data {
                    for (id, _, _) in &sweep.trials {
                        s.data_hints
                            .entry(id.clone())
                            .or_insert_with(|| data.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Expires silent workers and persists what that changed.
    pub fn tick(&self) -> Result<(), StoreError> {
        let mut s = self.lock();
        Self::sync_from_store(&mut s)?;
        let now = Self::now_ms(&s);
        for (worker, requeued) in s.core.tick(now) {
            tracing::warn!(%worker, trials = requeued.len(), "worker lost: no heartbeat");
            for r in &requeued {
                let written = s.store.record_requeue(r);
                if let Err(e) = &written {
                    s.storage_error = Some(e.to_string());
                }
                written?;
            }
        }
        Ok(())
    }

    /// Readiness: the database answers and the last write went through. (Liveness is only
    /// that the process serves HTTP.)
    pub fn ready(&self) -> Result<(), String> {
        let s = self.lock();
        if let Some(e) = &s.storage_error {
            return Err(format!("database writes fail: {e}"));
        }
        s.store
            .data_version()
            .map(|_| ())
            .map_err(|e| format!("database: {e}"))
    }
}

fn rejected(r: Rejected) -> Status {
    match r {
        Rejected::UnknownWorker(_) => Status::not_found(r.to_string()),
        Rejected::UnknownTrial(_) => Status::not_found(r.to_string()),
        Rejected::StaleLease { .. } => Status::failed_precondition(r.to_string()),
    }
}

fn storage(e: StoreError) -> Status {
    tracing::error!("{e}");
    Status::unavailable(format!(
        "coordinator storage error, not accepting work: {e}"
    ))
}

fn lease_ref(l: Option<pb::LeaseRef>) -> Result<(String, u32), Status> {
    let l = l.ok_or_else(|| Status::invalid_argument("missing lease"))?;
    Ok((l.trial_id, l.attempt))
}

/// Heartbeat period the coordinator asks workers for: a third of the timeout.
pub fn heartbeat_interval_ms(config: &Config) -> u32 {
    (config.heartbeat_timeout_ms / 3).clamp(100, 10_000) as u32
}

#[tonic::async_trait]
impl Coordinator for Handle {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let device = match pb::DeviceKind::try_from(r.device) {
            Ok(pb::DeviceKind::Cuda) => DeviceKind::Cuda,
            Ok(pb::DeviceKind::Cpu) => DeviceKind::Cpu,
            _ => return Err(Status::invalid_argument("device must be cpu or cuda")),
        };
        let name = if r.name.trim().is_empty() {
            "worker".to_string()
        } else {
            r.name
        };
        let mut s = self.lock();
        let now = Self::now_ms(&s);
        let resume = Some(r.resume_worker_id.as_str()).filter(|id| !id.is_empty());
        let id = s.core.register(name, device, r.slots, resume, now);
        tracing::info!(worker = %id, ?device, slots = r.slots, gpu = %r.gpu_model, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: heartbeat_interval_ms(&s.core.config),
        }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        let mut s = self.lock();
        let now = Self::now_ms(&s);
        let grants = s
            .core
            .lease(&r.worker_id, r.free_slots, now)
            .map_err(rejected)?;
        let mut leases = Vec::new();
        let mut grants = grants.into_iter();
        while let Some(g) = grants.next() {
            let recorded = s.store.record_lease(&g.trial, g.attempt, &r.worker_id);
            if let Err(e) = s.wrote(recorded) {
                // Not persisted: take back this and the remaining grants rather than run work
                // the disk does not know of. Leases recorded before stay valid.
                let unrecorded: Vec<_> = std::iter::once(g).chain(grants).collect();
                for g in unrecorded.iter().rev() {
                    s.core.unlease(&r.worker_id, &g.trial, g.attempt);
                }
                return Err(e);
            }
            tracing::info!(trial = %g.trial, attempt = g.attempt, worker = %r.worker_id, "leased");
            let data_hint = s.data_hints.get(&g.trial).cloned().unwrap_or_default();
            leases.push(pb::Lease {
                trial_id: g.trial,
                attempt: g.attempt,
                spec_toml: g.spec.to_toml(),
                data_hint,
            });
        }
        Ok(Response::new(pb::LeaseResponse { leases }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let running: Vec<(String, u32)> = r
            .running
            .into_iter()
            .map(|l| (l.trial_id, l.attempt))
            .collect();
        let mut s = self.lock();
        let now = Self::now_ms(&s);
        let stop = s
            .core
            .heartbeat(&r.worker_id, &running, now)
            .map_err(rejected)?;
        let cancel = stop
            .into_iter()
            .map(|(trial_id, attempt)| pb::LeaseRef { trial_id, attempt })
            .collect();
        Ok(Response::new(pb::HeartbeatResponse { cancel }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ProgressReport>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let (trial, attempt) = lease_ref(r.lease)?;
        let metrics = EpochMetrics::from(
            r.metrics
                .ok_or_else(|| Status::invalid_argument("missing metrics"))?,
        );
        let mut s = self.lock();
        let now = Self::now_ms(&s);
        match s
            .core
            .progress(&r.worker_id, &trial, attempt, metrics.clone(), now)
        {
            Ok(()) => {
                let recorded = s.store.record_epoch(&trial, attempt, &metrics);
                s.wrote(recorded)?;
                Ok(Response::new(pb::Ack {
                    accepted: true,
                    reason: String::new(),
                }))
            }
            Err(Rejected::UnknownWorker(w)) => Err(rejected(Rejected::UnknownWorker(w))),
            Err(e) => Ok(Response::new(pb::Ack {
                accepted: false,
                reason: e.to_string(),
            })),
        }
    }

    async fn report_result(
        &self,
        req: Request<pb::ResultReport>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let (trial, attempt) = lease_ref(r.lease)?;
        let result: TrialResult = serde_json::from_str(&r.result_json)
            .map_err(|e| Status::invalid_argument(format!("result_json: {e}")))?;
        let mut s = self.lock();
        let now = Self::now_ms(&s);
        // Check first, persist, then apply: the core never holds a result the disk lacks.
        match s.core.trial(&trial).map(|t| &t.state) {
            Some(TrialState::Running {
                attempt: a,
                worker: w,
                ..
            }) if *a == attempt && *w == r.worker_id => {}
            None => {
                return Ok(Response::new(pb::Ack {
                    accepted: false,
                    reason: format!("unknown trial {trial}"),
                }))
            }
            Some(_) => {
                tracing::info!(%trial, attempt, worker = %r.worker_id, "ignored a stale result");
                let reason = Rejected::StaleLease { trial, attempt }.to_string();
                return Ok(Response::new(pb::Ack {
                    accepted: false,
                    reason,
                }));
            }
        }
        let recorded = s
            .store
            .record_result(&trial, attempt, &r.worker_id, &result);
        s.wrote(recorded)?;
        tracing::info!(%trial, attempt, status = ?result.status, acc = ?result.test_accuracy(), "result");
        s.core
            .finish(&r.worker_id, &trial, attempt, result, now)
            .map_err(rejected)?;
        Ok(Response::new(pb::Ack {
            accepted: true,
            reason: String::new(),
        }))
    }
}

/// Checks `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub struct TokenCheck {
    token: Arc<str>,
}

impl TokenCheck {
    pub fn new(token: &str) -> TokenCheck {
        TokenCheck {
            token: Arc::from(token),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong worker token")),
            None => Err(Status::unauthenticated(
                "missing worker token (authorization: Bearer ...)",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
