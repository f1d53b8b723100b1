//! The coordinator's shared state and its gRPC face.
//!
//! [`Handle`] is a cloneable handle around the core and the store (mini-redis style). The
//! gRPC service only translates: protobuf in, a core call plus a store write, protobuf out.
//!
//! Writes are group-committed: a request applies its change to the core, adds the matching
//! [`Write`] to the open batch and waits; the committer thread writes the whole batch in one
//! transaction (one fsync however many requests are in it) and only then are those requests
//! answered. If the transaction fails, every change in the batch is taken back from the core
//! before anyone hears of it, so the core never holds a result the disk lacks.

use crate::app::status::SweepMeta;
use crate::plan::{KeepModels, Sweep};
use crate::sched::core::{
    Config, Core, Counts, DeviceKind, Finished, NewWorker, Rejected, TrialId, TrialState, MAX_SLOTS,
};
use crate::sched::early_stop::{Decision, EarlyStopping, Stopper};
use crate::store::files::{self, Checkpoints, Meta, Policy as CheckpointPolicy};
use crate::store::{Store, StoreError, StoredSweep, Write};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;
use sweep_proto::convert::{artifact_chunks, CHUNK_BYTES};
use sweep_proto::pb::{self, coordinator_server::Coordinator};
use sweep_proto::{EpochMetrics, TrialResult};
use tokio::sync::{broadcast, watch};
use tonic::{Code, Request, Response, Status};

/// What a batch's requests wait for: `None` until it is written, then the outcome.
type Outcome = Option<Result<(), String>>;

pub struct Shared {
    pub core: Core,
    /// Dataset directory to suggest to workers, per trial (from the sweep that queued it).
    data_hints: HashMap<TrialId, String>,
    /// Early stopping: each sweep with an `[early_stopping]` rule and the values its trials
    /// reported, and per trial the sweep whose rule judges it (the last one submitted with
    /// it). Rebuilt from the results on restart.
    stoppers: HashMap<String, Stopper>,
    judged_by: HashMap<TrialId, String>,
    /// When each trial saves checkpoints (from the sweep that queued it last).
    policies: HashMap<TrialId, CheckpointPolicy>,
    /// Trials whose sweep keeps trained models (keep_models is not "none").
    keep_model: HashMap<TrialId, bool>,
    started: Instant,
    data_version: i64,
    /// The last write error, until a write succeeds again: the coordinator is not ready and
    /// takes no work while its disk refuses it (full, read-only, gone).
    storage_error: Option<String>,
    /// The open batch: writes not yet handed to the committer, and where its outcome goes.
    batch: Vec<Write>,
    batch_done: watch::Sender<Outcome>,
}

impl Shared {
    /// Milliseconds since this coordinator started: the core's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Adds a write to the open batch; the receiver learns when that batch is on disk.
    fn enqueue(&mut self, w: Write) -> watch::Receiver<Outcome> {
        self.batch.push(w);
        self.batch_done.subscribe()
    }

    /// Installs (or, with `None`, removes) a sweep's early-stopping rule over `trials`,
    /// remembering the epochs they already have.
    fn set_stopper(&mut self, sweep: &str, rule: Option<EarlyStopping>, trials: &[&str]) {
        self.stoppers.remove(sweep);
        self.judged_by.retain(|_, s| s != sweep);
        // The sweep submitted last decides for its trials, rule or no rule.
        for id in trials {
            self.judged_by.remove(*id);
        }
        let Some(rule) = rule else { return };
        let mut stopper = Stopper::new(rule);
        for id in trials {
            let epochs = match self.core.trial(id).map(|t| &t.state) {
                Some(TrialState::Running { epochs, .. }) => epochs.as_slice(),
                Some(TrialState::Finished { result, .. }) => result.epochs.as_slice(),
                _ => &[],
            };
            stopper.remember(id, epochs);
            self.judged_by.insert(id.to_string(), sweep.to_string());
        }
        self.stoppers.insert(sweep.to_string(), stopper);
    }

    /// The early-stopping verdict on an epoch just reported (`None`: go on).
    fn judge(&mut self, trial: &str, attempt: u32, m: &EpochMetrics) -> Option<String> {
        let sweep = self.judged_by.get(trial)?;
        let epochs = self.core.trial(trial)?.spec.epochs;
        let stopper = self.stoppers.get_mut(sweep)?;
        match stopper.report(trial, attempt, epochs, m) {
            // The rule leads the reason: a later sweep reuses the stopped result only under
            // the same rule (see `Store::add_sweep`).
            Decision::Stop(why) => Some(format!("{}: {why}", stopper.rule.describe())),
            Decision::Continue => None,
        }
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
                // Progress is also in the result; a re-queue the disk missed is redone on
                // restart (running trials come back queued with their next attempt).
                Write::Epoch { .. } | Write::Requeue(_) | Write::Nothing => {}
            }
        }
    }
}

#[derive(Clone)]
pub struct Handle {
    inner: Arc<Mutex<Shared>>,
    store: Arc<Mutex<Store>>,
    /// Wakes the committer; when every handle is gone it stops.
    wake: mpsc::Sender<()>,
    /// Trial events for `Admin.Watch`, sent once the change they describe is on disk.
    events: broadcast::Sender<pb::TrialEvent>,
    /// Set on shutdown: ends the never-ending streams (`Watch`) so the server can stop.
    streams: Arc<watch::Sender<bool>>,
    /// Sweeps as views read them, filled on first read and dropped whenever a sweep's row
    /// changes (submit, cancel, rerun, another process's write). Status polls then never
    /// take the database's lock, which the committer needs for every batch: with 50 pollers
    /// reading a 20,000-trial sweep from SQLite, throughput fell from 5,528 to 57 trials/s
    /// (`sweep-load --workers 100 --trials 20000 --pollers 0,50`).
    views: Arc<Mutex<Views>>,
    /// Taken first by every admin change (submit, cancel, rerun), so that they happen one at
    /// a time: submit and rerun write the database before they lock the core, and must not
    /// interleave with a cancel that would then be undone in the core.
    admin: Arc<Mutex<()>>,
    /// Running trials' checkpoints, beside the database (see [`crate::store::files`]).
    checkpoints: Arc<Checkpoints>,
    /// Finished trials' trained models (`CHECKPOINT_DIR/models`), as keep_models says.
    models: Arc<Checkpoints>,
    /// Set when a model arrives: the next tick prunes models to what the sweeps keep.
    models_changed: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Views {
    names: Option<Vec<String>>,
    sweeps: HashMap<String, Arc<SweepMeta>>,
    /// Recent live views by (sweep, with curves), with when they were built.
    built: HashMap<(String, bool), (Instant, Arc<crate::app::status::SweepView>)>,
}

/// How stale a live view may be: dashboards poll once a second.
pub const VIEW_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(500);

/// Events a slow watcher may fall behind by before it misses some (it then reads the state).
const EVENT_BUFFER: usize = 4096;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An event about one trial, stamped now.
pub fn event(kind: pb::EventKind, trial: &str, attempt: u32, worker: &str) -> pb::TrialEvent {
    pb::TrialEvent {
        kind: kind as i32,
        trial_id: trial.to_string(),
        attempt,
        worker_id: worker.to_string(),
        unix_ms: unix_ms(),
        ..Default::default()
    }
}

/// The committer thread: writes each batch in one transaction and publishes the outcome.
fn commit_batches(inner: Arc<Mutex<Shared>>, store: Arc<Mutex<Store>>, wake: mpsc::Receiver<()>) {
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
        let outcome = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&writes);
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
    /// Opens (or creates) the database and restores every trial into the core; checkpoints
    /// go to `DB.checkpoints/` beside it.
    pub fn open(db: &Path, config: Config) -> Result<Handle, StoreError> {
        let mut dir = db.as_os_str().to_owned();
        dir.push(".checkpoints");
        Handle::open_with(db, config, Path::new(&dir))
    }

    /// [`Handle::open`] with the checkpoints in `checkpoint_dir`.
    pub fn open_with(
        db: &Path,
        config: Config,
        checkpoint_dir: &Path,
    ) -> Result<Handle, StoreError> {
        let open = |dir: &Path| {
            Checkpoints::open(dir).map_err(|e| StoreError::Checkpoints {
                path: dir.display().to_string(),
                source: e,
            })
        };
        let checkpoints = open(checkpoint_dir)?;
        let models = open(&checkpoint_dir.join("models"))?;
        let store = Store::open(db)?;
        let mut core = Core::new(config);
        for t in store.load_trials()? {
            core.add_trial_lost(t.id, t.spec, t.state, t.lost, true);
        }
        core.remember_worker_ids(store.worker_ids()?);
        let mut data_hints = HashMap::new();
        let mut rules = Vec::new();
        let mut policies = HashMap::new();
        let mut keep_model = HashMap::new();
        for name in store.sweep_names_by_submission()? {
            if let Some(s) = store.sweep(&name)? {
                for (id, _, _) in &s.trials {
                    policies.insert(id.clone(), s.checkpoints);
                    keep_model.insert(id.clone(), s.keep_models != KeepModels::None);
                }
                if let Some(data) = &s.data {
                    for (id, _, _) in &s.trials {
                        data_hints.insert(id.clone(), data.clone());
                    }
                }
                // Every sweep, rule or not, in submission order: the last one decides.
                let ids: Vec<String> = s.trials.into_iter().map(|t| t.0).collect();
                rules.push((name, s.early_stopping, ids));
            }
        }
        let data_version = store.data_version()?;
        let mut shared = Shared {
            core,
            data_hints,
            stoppers: HashMap::new(),
            judged_by: HashMap::new(),
            policies,
            keep_model,
            started: Instant::now(),
            data_version,
            storage_error: None,
            batch: Vec::new(),
            batch_done: watch::channel(None).0,
        };
        for (name, rule, ids) in rules {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            shared.set_stopper(&name, rule, &ids);
        }
        let inner = Arc::new(Mutex::new(shared));
        let store = Arc::new(Mutex::new(store));
        let (wake, woken) = mpsc::channel();
        {
            let (inner, store) = (inner.clone(), store.clone());
            std::thread::Builder::new()
                .name("db-commit".into())
                .spawn(move || commit_batches(inner, store, woken))
                .map_err(|e| StoreError::Thread(e.to_string()))?;
        }
        let events = broadcast::channel(EVENT_BUFFER).0;
        Ok(Handle {
            inner,
            store,
            wake,
            events,
            streams: Arc::new(watch::channel(false).0),
            views: Arc::default(),
            admin: Arc::default(),
            checkpoints: Arc::new(checkpoints),
            models: Arc::new(models),
            models_changed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Folds the write-ahead log into the database file (on shutdown), after whatever is still
    /// in the open batch: the stopped coordinator's database is then one self-contained file
    /// that can be copied alone.
    pub async fn checkpoint(&self) -> Result<(), String> {
        let done = self.lock().enqueue(Write::Nothing);
        self.committed(done)
            .await
            .map_err(|s| s.message().to_string())?;
        let store = self.store.clone();
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

    /// The core and what goes with it. Lock order: this before [`Handle::store`], never after.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database, for reads and for the rare synchronous writes (submit, cancel).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the open batch to the committer and waits until it is on disk.
    async fn committed(&self, mut done: watch::Receiver<Outcome>) -> Result<(), Status> {
        let _ = self.wake.send(());
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::unavailable("coordinator storage stopped"))?
            .clone();
        match outcome {
            Some(Err(e)) => Err(Status::unavailable(format!(
                "coordinator storage error, not accepting work: {e}"
            ))),
            _ => Ok(()),
        }
    }

    /// Stores an uploaded TorchScript module (`Admin.UploadModule`); returns its hash.
    /// Blocking.
    pub fn store_module(&self, bytes: &[u8]) -> Result<sweep_proto::ModuleHash, String> {
        let hash = sweep_proto::ModuleHash::of(bytes);
        self.checkpoints.store_module_bytes(hash, bytes)?;
        Ok(hash)
    }

    /// Records a sweep and queues its new (or, with `rerun`, all) trials, and those whose
    /// results came from a trainer of other semantics; returns how many of those there were.
    ///
    /// The database is written and read before the scheduling state is locked (a sweep of
    /// 100,000 trials takes seconds to store), so leases and results go on meanwhile; the new
    /// trials are not in the core yet, and one the database re-queued replaces the core's only
    /// where the core holds it ended (never a running lease).
    pub fn submit(&self, sweep: &Sweep, rerun: bool) -> Result<usize, StoreError> {
        let _admin = self.admin_change();
        // Workers fetch the modules from here: they are stored before any trial can lease.
        for (hash, path) in &sweep.modules {
            self.checkpoints
                .store_module(*hash, path)
                .map_err(StoreError::Module)?;
        }
        for t in &sweep.trials {
            if let sweep_proto::Model::TorchScript(hash) = t.spec.model {
                if !self.checkpoints.has_module(hash) {
                    return Err(StoreError::Module(format!(
                        "trial {} trains TorchScript module {hash}, which this coordinator does not have: name the file (model = \"torchscript:PATH\") and submit with `coordinator submit`, which uploads it",
                        t.id
                    )));
                }
            }
        }
        let (stale, stored) = {
            let mut store = self.store();
            let stale = store.add_sweep(sweep, rerun)?;
            (stale, store.load_trials()?)
        };
        let mut s = self.lock();
        let wanted: HashMap<&str, ()> = sweep.trials.iter().map(|t| (t.id.as_str(), ())).collect();
        for t in stored
            .into_iter()
            .filter(|t| wanted.contains_key(t.id.as_str()))
        {
            let replace = matches!(t.state, TrialState::Queued { .. })
                && s.core.trial(&t.id).is_none_or(|c| c.state.is_terminal());
            s.core
                .add_trial_lost(t.id, t.spec, t.state, t.lost, replace);
        }
        if let Some(data) = &sweep.data {
            for t in &sweep.trials {
                s.data_hints
                    .insert(t.id.clone(), data.display().to_string());
            }
        }
        let ids: Vec<&str> = sweep.trials.iter().map(|t| t.id.as_str()).collect();
        s.set_stopper(&sweep.name, sweep.early_stopping, &ids);
        for id in ids {
            s.policies.insert(id.to_string(), sweep.checkpoints);
            s.keep_model
                .insert(id.to_string(), sweep.keep_models != KeepModels::None);
        }
        drop(s);
        self.forget_views();
        let mut e = event(pb::EventKind::Submitted, "", 0, "");
        e.message = sweep.name.clone();
        self.emit(e);
        Ok(stale)
    }

    pub fn sweep(&self, name: &str) -> Result<Option<StoredSweep>, StoreError> {
        self.store().sweep(name)
    }

    fn views(&self) -> MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_views(&self) {
        *self.views() = Views::default();
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
    /// pollers arriving together build it once, not once each. Lock order: views, then the
    /// database, then the core; nothing takes the views' lock while holding the others.
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
                .map(|(id, _, _)| s.core.trial(id).map(|t| t.spec.clone()))
                .collect()
        };
        let params = specs
            .iter()
            .map(|spec| {
                spec.as_ref()
                    .map(|sp| crate::app::status::params_of(sp, &stored.axes))
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
    ) -> Result<Option<Arc<crate::app::status::SweepView>>, StoreError> {
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
            Arc::new(crate::app::status::sweep_view(
                &meta,
                &s.core,
                s.now_ms(),
                curves,
                crate::app::status::MAX_VIEW_TRIALS,
            ))
        };
        views.built.insert(key, (Instant::now(), view.clone()));
        Ok(Some(view))
    }

    pub fn counts(&self, ids: &[TrialId]) -> Counts {
        self.lock().core.counts(ids)
    }

    /// Cancels sweep `name`: its queued and running trials that no other active sweep needs.
    pub fn cancel(&self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        let _admin = self.admin_change();
        let cancelled = {
            let mut s = self.lock();
            let mut store = self.store();
            if store.sweep(name)?.is_none() {
                return Ok(Vec::new());
            }
            // The database decides (one transaction, finished and shared trials spared); the
            // core follows it. What is reported is what the core stopped: a trial whose result
            // waits in the open batch ends finished, not cancelled.
            let in_db = store.cancel_sweep(name)?;
            s.core.cancel(&in_db)
        };
        self.forget_views();
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    /// Cancels one trial, if it is still queued or running (whichever sweeps hold it).
    pub fn cancel_trial(&self, id: &str) -> Result<Vec<TrialId>, StoreError> {
        let _admin = self.admin_change();
        let cancelled = {
            let mut s = self.lock();
            let in_db = self.store().cancel_trial(id)?;
            s.core.cancel(&in_db)
        };
        self.forget_views();
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    fn admin_change(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancelled(&self, ids: &[TrialId]) {
        for id in ids {
            self.emit(event(pb::EventKind::Cancelled, id, 0, ""));
        }
    }

    /// Queues the failed and cancelled trials of sweep `name` again (and makes the sweep
    /// active again); returns them.
    ///
    /// The database is written and read before the core is locked (as in [`Handle::submit`]);
    /// the trials it re-queued have ended in the core, so no lease races it.
    pub fn rerun(&self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        let _admin = self.admin_change();
        let (ids, stored) = {
            let mut store = self.store();
            let ids = store.rerun_sweep(name)?;
            (ids, store.load_trials()?)
        };
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        {
            let mut s = self.lock();
            for t in stored
                .into_iter()
                .filter(|t| wanted.contains(t.id.as_str()))
            {
                s.core.add_trial_lost(t.id, t.spec, t.state, t.lost, true);
            }
        }
        self.forget_views();
        // Watchers hear of it as of a submit: the sweep has work again.
        let mut e = event(pb::EventKind::Submitted, "", 0, "");
        e.message = name.to_string();
        self.emit(e);
        Ok(ids)
    }

    /// Tells open streams to end (the server is stopping).
    pub fn stop_streams(&self) {
        self.streams.send_replace(true);
    }

    /// Becomes true when open streams must end.
    pub fn streams_stop(&self) -> watch::Receiver<bool> {
        self.streams.subscribe()
    }

    /// Live trial events (see `Admin.Watch`).
    pub fn subscribe(&self) -> broadcast::Receiver<pb::TrialEvent> {
        self.events.subscribe()
    }

    fn emit(&self, e: pb::TrialEvent) {
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(e);
    }

    /// Picks up what other processes wrote to the database (`submit`, `cancel`): new trials
    /// are queued, trials re-queued by `--rerun` replace finished ones, cancelled ones stop.
    /// The database is read before the scheduling state is locked, so RPCs never wait on
    /// that read.
    fn sync_from_store(&self) -> Result<(), StoreError> {
        let seen = self.lock().data_version;
        let (version, trials, hints, rules) = {
            let store = self.store();
            let version = store.data_version()?;
            if version == seen {
                return Ok(());
            }
            let mut hints = Vec::new();
            let mut rules = Vec::new();
            for name in store.sweep_names_by_submission()? {
                if let Some(sweep) = store.sweep(&name)? {
                    let ids: Vec<String> = sweep.trials.iter().map(|t| t.0.clone()).collect();
                    if let Some(data) = sweep.data {
                        hints.extend(ids.iter().map(|id| (id.clone(), data.clone())));
                    }
                    if sweep.early_stopping.is_some() {
                        rules.push((name, sweep.early_stopping, ids));
                    }
                }
            }
            (version, store.load_trials()?, hints, rules)
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
                (Some(c), TrialState::Queued { .. }) if c.is_terminal() && !t.running => {
                    s.core.add_trial_lost(t.id, t.spec, t.state, t.lost, true)
                }
                _ => {}
            }
        }
        for (id, data) in hints {
            s.data_hints.entry(id).or_insert(data);
        }
        for (name, rule, ids) in rules {
            if !s.stoppers.contains_key(&name) {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                s.set_stopper(&name, rule, &ids);
            }
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
        for (worker, requeued) in s.core.tick(now) {
            tracing::warn!(%worker, trials = requeued.len(), "worker lost: no heartbeat");
            for r in requeued {
                let mut e = match &r {
                    crate::sched::core::Requeued::Retry { trial, .. } => {
                        event(pb::EventKind::WorkerLost, trial, 0, &worker)
                    }
                    crate::sched::core::Requeued::GaveUp { trial, reason, .. } => {
                        let mut e = event(pb::EventKind::Failed, trial, 0, &worker);
                        e.message = reason.clone();
                        e
                    }
                };
                if e.message.is_empty() {
                    e.message = "worker stopped sending heartbeats; trial queued again".into();
                }
                self.emit(e);
                s.enqueue(Write::Requeue(r));
            }
        }
        if !s.batch.is_empty() {
            let _ = self.wake.send(());
        }
        drop(s);
        // Checkpoints of trials that ended (finished, failed, cancelled) are of no more use.
        let removed = self.checkpoints.retain(|t| {
            self.lock()
                .core
                .trial(t)
                .is_some_and(|c| !c.state.is_terminal())
        });
        if removed > 0 {
            tracing::debug!(removed, "checkpoints of ended trials removed");
        }
        if self
            .models_changed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.prune_models()?;
        }
        Ok(())
    }

    /// Deletes the trained models no sweep keeps: for keep_models = "best" the best
    /// `keep_best` of its ranked trials, "all" every one, "none" nothing. Blocking.
    pub fn prune_models(&self) -> Result<(), StoreError> {
        let mut sweeps = Vec::new();
        {
            let store = self.store();
            for name in store.sweep_names()? {
                sweeps.extend(store.sweep(&name)?);
            }
        }
        let mut kept: std::collections::HashSet<String> = Default::default();
        {
            let s = self.lock();
            for sweep in &sweeps {
                let n = match sweep.keep_models {
                    KeepModels::None => 0,
                    KeepModels::All => usize::MAX,
                    KeepModels::Best(n) => n as usize,
                };
                let mut ranked: Vec<(f64, &String)> = sweep
                    .trials
                    .iter()
                    .filter_map(|(id, _, _)| match s.core.trial(id).map(|t| &t.state) {
                        Some(TrialState::Finished { result, .. }) if result.status.has_test() => {
                            let v = match sweep.rank_by {
                                crate::plan::Metric::TestAccuracy => result.test_accuracy(),
                                crate::plan::Metric::BestValAccuracy => result.best_val_accuracy,
                            }?;
                            Some((v, id))
                        }
                        _ => None,
                    })
                    .collect();
                ranked.sort_by(|a, b| match sweep.direction {
                    crate::plan::Direction::Max => b.0.total_cmp(&a.0),
                    crate::plan::Direction::Min => a.0.total_cmp(&b.0),
                });
                kept.extend(ranked.into_iter().take(n).map(|(_, id)| id.clone()));
                // A model arrives just before its trial's result: until the result is in, the
                // trial cannot be ranked and its model stays.
                if n > 0 {
                    kept.extend(
                        sweep
                            .trials
                            .iter()
                            .filter(|(id, _, _)| {
                                s.core.trial(id).is_some_and(|t| !t.state.is_terminal())
                            })
                            .map(|(id, _, _)| id.clone()),
                    );
                }
            }
        }
        let removed = self.models.retain(|t| kept.contains(t));
        if removed > 0 {
            tracing::info!(removed, "trained models no sweep keeps removed");
        }
        Ok(())
    }

    /// A kept model's bytes (checked against its checksum). Blocking.
    pub fn model(&self, trial: &str) -> Result<(Meta, Vec<u8>), String> {
        self.models.read(trial)
    }

    pub fn has_model(&self, trial: &str) -> bool {
        self.models.latest(trial).is_some()
    }

    /// Where this coordinator keeps checkpoints.
    pub fn checkpoint_dir(&self) -> &Path {
        self.checkpoints.dir()
    }

    /// The trial and attempt of a request, if `worker` holds that lease now.
    fn holds(&self, worker: &str, lease: Option<pb::LeaseRef>) -> Result<(String, u32), Status> {
        let (trial, attempt) = lease_ref(lease)?;
        if !files::valid_id(&trial) {
            return Err(Status::invalid_argument(format!(
                "lease.trial_id {trial:?} is not a trial id"
            )));
        }
        let s = self.lock();
        match s.core.trial(&trial).map(|t| &t.state) {
            Some(TrialState::Running {
                attempt: a,
                worker: w,
                ..
            }) if *a == attempt && w == worker => Ok((trial, attempt)),
            None => Err(Status::not_found(format!("unknown trial {trial}"))),
            _ => Err(Status::failed_precondition(format!(
                "trial {trial} attempt {attempt} is not leased to {worker}"
            ))),
        }
    }

    /// Readiness: the database answers and the last write went through. (Liveness is only
    /// that the process serves HTTP.)
    pub fn ready(&self) -> Result<(), String> {
        if let Some(e) = &self.lock().storage_error {
            return Err(format!("database writes fail: {e}"));
        }
        self.store()
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

/// A report's answer: taken, or ignored with the reason (the worker logs it and moves on).
fn ack(outcome: Result<(), Rejected>) -> Response<pb::Ack> {
    Response::new(match outcome {
        Ok(()) => pb::Ack {
            accepted: true,
            ..Default::default()
        },
        Err(e) => pb::Ack {
            accepted: false,
            reason: e.to_string(),
            ..Default::default()
        },
    })
}

fn lease_ref(l: Option<pb::LeaseRef>) -> Result<(String, u32), Status> {
    let l = l.ok_or_else(|| Status::invalid_argument("missing lease"))?;
    Ok((l.trial_id, l.attempt))
}

/// Heartbeat period the coordinator asks workers for: a third of the timeout.
pub fn heartbeat_interval_ms(config: &Config) -> u32 {
    (config.heartbeat_timeout_ms / 3).clamp(100, 10_000) as u32
}

type ChunkStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for Handle {
    type LoadCheckpointStream = ChunkStream;
    type FetchModuleStream = ChunkStream;

    async fn save_checkpoint(
        &self,
        req: Request<tonic::Streaming<pb::CheckpointChunk>>,
    ) -> Result<Response<pb::Ack>, Status> {
        use sha2::{Digest, Sha256};
        use tokio::io::AsyncWriteExt;
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty checkpoint stream"))?;
        let (trial, attempt) = match self.holds(&first.worker_id, first.lease.clone()) {
            Ok(lease) => lease,
            Err(e) if e.code() == Code::FailedPrecondition => {
                return Ok(ack(Err(Rejected::StaleLease {
                    trial: first.lease.map(|l| l.trial_id).unwrap_or_default(),
                    attempt: 0,
                })))
            }
            Err(e) => return Err(e),
        };
        if first.size > files::MAX_CHECKPOINT_BYTES {
            return Err(Status::invalid_argument(format!(
                "size: {} bytes is over the limit of {} MiB",
                first.size,
                files::MAX_CHECKPOINT_BYTES >> 20
            )));
        }
        if first.epoch == 0 || first.sha256.len() != 64 {
            return Err(Status::invalid_argument(
                "the first chunk names the epoch (>= 1) and the SHA-256 (64 hex digits)",
            ));
        }
        let model = first.kind == pb::ArtifactKind::Model as i32;
        let target = if model {
            &self.models
        } else {
            &self.checkpoints
        };
        let path = target.upload_path(&trial, attempt);
        let fail = |path: &Path, status: Status| {
            let _ = std::fs::remove_file(path);
            Err(status)
        };
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::unavailable(format!("cannot store the checkpoint: {e}")))?;
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        let mut next = Some(first.data);
        loop {
            let data = match next.take() {
                Some(d) => d,
                None => match chunks.message().await {
                    Ok(Some(c)) => c.data,
                    Ok(None) => break,
                    Err(e) => return fail(&path, e),
                },
            };
            size += data.len() as u64;
            if size > first.size {
                return fail(
                    &path,
                    Status::invalid_argument(format!(
                        "more than the {} bytes announced",
                        first.size
                    )),
                );
            }
            hasher.update(&data);
            if let Err(e) = file.write_all(&data).await {
                return fail(
                    &path,
                    Status::unavailable(format!("cannot store the checkpoint: {e}")),
                );
            }
        }
        drop(file);
        let sha: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if size != first.size || sha != first.sha256 {
            return fail(&path, Status::data_loss(format!(
                "checkpoint of trial {trial} arrived as {size} bytes with SHA-256 {sha}; announced {} bytes, {}",
                first.size, first.sha256
            )));
        }
        let meta = Meta {
            epoch: first.epoch,
            attempt,
            size,
            sha256: sha,
        };
        // The lease may have gone while the chunks came (a worker paused mid-upload and
        // presumed dead): its checkpoint must not replace the new attempt's.
        if self.holds(&first.worker_id, first.lease.clone()).is_err() {
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(ack(Err(Rejected::StaleLease {
                trial: trial.clone(),
                attempt,
            })));
        }
        let store = target.clone();
        let t = trial.clone();
        let kept = tokio::task::spawn_blocking(move || store.commit(&t, &path, meta))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(format!("cannot store the checkpoint: {e}")))?;
        if model {
            self.models_changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(%trial, attempt, epoch = first.epoch, size, kept, model, "checkpoint");
        if !kept {
            return Ok(Response::new(pb::Ack {
                accepted: false,
                reason: "a checkpoint of a later epoch is stored".into(),
                stop: false,
            }));
        }
        Ok(ack(Ok(())))
    }

    async fn load_checkpoint(
        &self,
        req: Request<pb::LoadCheckpointRequest>,
    ) -> Result<Response<Self::LoadCheckpointStream>, Status> {
        let r = req.into_inner();
        let (trial, attempt) = self.holds(&r.worker_id, r.lease)?;
        let store = self.checkpoints.clone();
        let t = trial.clone();
        let (meta, bytes) = tokio::task::spawn_blocking(move || store.read(&t))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                tracing::warn!(%trial, attempt, "{e}");
                Status::data_loss(format!("{e}; train from the first epoch"))
            })?;
        tracing::info!(%trial, attempt, epoch = meta.epoch, "resuming from a checkpoint");
        let header = pb::CheckpointChunk {
            epoch: meta.epoch,
            size: meta.size,
            sha256: meta.sha256,
            ..Default::default()
        };
        let chunks = artifact_chunks(&bytes, CHUNK_BYTES, header);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn fetch_module(
        &self,
        req: Request<pb::FetchModuleRequest>,
    ) -> Result<Response<Self::FetchModuleStream>, Status> {
        let r = req.into_inner();
        let (trial, _) = self.holds(&r.worker_id, r.lease)?;
        let model = self.lock().core.trial(&trial).map(|t| t.spec.model);
        let Some(sweep_proto::Model::TorchScript(hash)) = model else {
            return Err(Status::failed_precondition(format!(
                "trial {trial} does not train a TorchScript module"
            )));
        };
        let store = self.checkpoints.clone();
        let (size, sha256) = tokio::task::spawn_blocking(move || store.module_digest(hash))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                tracing::warn!(%trial, "{e}");
                Status::not_found(e)
            })?;
        tracing::info!(%trial, %hash, size, "sending a TorchScript module");
        // Streamed from the file a chunk at a time (a few chunks in flight), so many workers
        // fetching a large module at once cost no memory to speak of; the worker checks the
        // SHA-256.
        let path = self.checkpoints.module_path(hash);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::not_found(format!("module {hash}: {e}"))));
                    return;
                }
            };
            let mut first = Some(pb::CheckpointChunk {
                size,
                sha256,
                ..Default::default()
            });
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let n = match file.read(&mut data) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ =
                            tx.blocking_send(Err(Status::internal(format!("module {hash}: {e}"))));
                        return;
                    }
                };
                if n == 0 && first.is_none() {
                    return;
                }
                data.truncate(n);
                let mut chunk = first.take().unwrap_or_default();
                chunk.data = data;
                if tx.blocking_send(Ok(chunk)).is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

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
            check_name(&r.name).map_err(Status::invalid_argument)?;
            r.name
        };
        check_label("gpu_model", &r.gpu_model).map_err(Status::invalid_argument)?;
        check_label("version", &r.version).map_err(Status::invalid_argument)?;
        if r.slots > MAX_SLOTS {
            return Err(Status::invalid_argument(format!(
                "slots: {} is over the limit of {MAX_SLOTS}",
                r.slots
            )));
        }
        let fresh = NewWorker {
            name,
            device,
            slots: r.slots,
            nonce: rand::random(),
            secret: crate::api::tls::random_token(),
        };
        let mut s = self.lock();
        let now = s.now_ms();
        let resume = Some((r.resume_worker_id.as_str(), r.resume_secret.as_str()))
            .filter(|(id, _)| !id.is_empty());
        let (id, secret) = s.core.register(fresh, resume, now);
        tracing::info!(worker = %id, ?device, slots = r.slots, gpu = %r.gpu_model, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: heartbeat_interval_ms(&s.core.config),
            resume_secret: secret,
        }))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        let mut leases = Vec::new();
        let mut done = None;
        {
            let mut s = self.lock();
            let now = s.now_ms();
            let grants = s
                .core
                .lease(&r.worker_id, r.free_slots, now)
                .map_err(rejected)?;
            for g in grants {
                // A lease the disk refuses is taken back (see `Shared::undo`): no one runs
                // work the database does not know of.
                done = Some(s.enqueue(Write::Lease {
                    trial: g.trial.clone(),
                    attempt: g.attempt,
                    worker: r.worker_id.clone(),
                }));
                tracing::debug!(trial = %g.trial, attempt = g.attempt, worker = %r.worker_id, "leased");
                let data_hint = s.data_hints.get(&g.trial).cloned().unwrap_or_default();
                let early_stopping = s.judged_by.contains_key(&g.trial);
                let policy = s.policies.get(&g.trial).copied().unwrap_or_default();
                let checkpoint_epoch = self.checkpoints.latest(&g.trial).map_or(0, |m| m.epoch);
                let keep_model = s.keep_model.get(&g.trial).copied().unwrap_or(true);
                leases.push(pb::Lease {
                    trial_id: g.trial,
                    attempt: g.attempt,
                    spec_toml: g.spec_toml.to_string(),
                    data_hint,
                    early_stopping,
                    checkpoint_epoch,
                    checkpoint_every_epochs: policy.every_epochs,
                    checkpoint_every_seconds: policy.every_seconds,
                    keep_model,
                });
            }
        }
        if let Some(done) = done {
            self.committed(done).await?;
        }
        for l in &leases {
            self.emit(event(
                pb::EventKind::Leased,
                &l.trial_id,
                l.attempt,
                &r.worker_id,
            ));
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
        let (done, answer) = {
            let mut s = self.lock();
            let now = s.now_ms();
            let crate::sched::core::Beat { stop, lost } = s
                .core
                .heartbeat(&r.worker_id, &running, now)
                .map_err(rejected)?;
            let mut done = None;
            for l in lost {
                tracing::warn!(worker = %r.worker_id, "lease lost: {l:?} (not in two heartbeats)");
                done = Some(s.enqueue(Write::Requeue(l)));
            }
            let cancel = stop
                .into_iter()
                .map(|(trial_id, attempt)| pb::LeaseRef { trial_id, attempt })
                .collect();
            (done, pb::HeartbeatResponse { cancel })
        };
        // Answered once the re-queued leases are on disk, like every other change.
        if let Some(done) = done {
            self.committed(done).await?;
        }
        Ok(Response::new(answer))
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
        metrics
            .validate("metrics")
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (done, stop) = {
            let mut s = self.lock();
            let now = s.now_ms();
            match s
                .core
                .progress(&r.worker_id, &trial, attempt, metrics.clone(), now)
            {
                Ok(()) => {
                    let stop = s.judge(&trial, attempt, &metrics);
                    if let Some(why) = &stop {
                        tracing::info!(%trial, attempt, epoch = metrics.epoch, "early stop: {why}");
                    }
                    let done = s.enqueue(Write::Epoch {
                        trial: trial.clone(),
                        attempt,
                        metrics: metrics.clone(),
                    });
                    (done, stop)
                }
                Err(Rejected::UnknownWorker(w)) => {
                    return Err(rejected(Rejected::UnknownWorker(w)))
                }
                Err(e) => return Ok(ack(Err(e))),
            }
        };
        self.committed(done).await?;
        let mut e = event(pb::EventKind::Epoch, &trial, attempt, &r.worker_id);
        e.metrics = Some((&metrics).into());
        self.emit(e);
        let mut answer = ack(Ok(()));
        if let Some(why) = stop {
            answer.get_mut().stop = true;
            answer.get_mut().reason = why;
        }
        Ok(answer)
    }

    async fn report_result(
        &self,
        req: Request<pb::ResultReport>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let (trial, attempt) = lease_ref(r.lease)?;
        let result = TrialResult::try_from(
            r.result
                .ok_or_else(|| Status::invalid_argument("missing result"))?,
        )
        .map_err(|e| Status::invalid_argument(format!("result.{e}")))?;
        let mut finished = {
            let kind = match result.status {
                sweep_proto::TrialStatus::Failed => pb::EventKind::Failed,
                _ => pb::EventKind::Finished,
            };
            let mut e = event(kind, &trial, attempt, &r.worker_id);
            e.status = pb::TrialStatus::from(result.status) as i32;
            e.test_accuracy = result.test_accuracy();
            e.message = result.reason.clone().unwrap_or_default();
            e
        };
        let (done, repeat) = {
            let mut s = self.lock();
            let now = s.now_ms();
            tracing::debug!(%trial, attempt, status = ?result.status, acc = ?result.test_accuracy(), "result");
            match s
                .core
                .finish(&r.worker_id, &trial, attempt, result.clone(), now)
            {
                Ok(Finished::New) => (
                    s.enqueue(Write::Result {
                        trial: trial.clone(),
                        attempt,
                        worker: r.worker_id,
                        result: Box::new(result),
                    }),
                    false,
                ),
                // Acknowledged once the batch that holds it is on disk: the original's, or
                // a later one (which the committer writes after it).
                Ok(Finished::AlreadyStored) => {
                    tracing::info!(%trial, attempt, worker = %r.worker_id, "a repeated result, already stored");
                    (s.enqueue(Write::Nothing), true)
                }
                Err(e) => {
                    tracing::info!(%trial, attempt, worker = %r.worker_id, "ignored a result: {e}");
                    return Ok(ack(Err(e)));
                }
            }
        };
        // Answered only once on disk; if the write fails the core takes the result back and
        // the worker, told `unavailable`, keeps it and sends it again.
        self.committed(done).await?;
        if repeat {
            // The original's batch may have failed meanwhile (and been taken back).
            let s = self.lock();
            let kept = matches!(s.core.trial(&trial).map(|t| &t.state),
                Some(TrialState::Finished { attempt: a, .. }) if *a == attempt);
            if !kept {
                return Err(Status::unavailable(
                    "the original report was not stored; send it again",
                ));
            }
            return Ok(Response::new(pb::Ack {
                accepted: true,
                reason: "already stored (a repeated report)".into(),
                stop: false,
            }));
        }
        self.emit(std::mem::take(&mut finished));
        // Its model (sent just before) can be ranked now: the next tick prunes.
        if self.models.latest(&trial).is_some() {
            self.models_changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(ack(Ok(())))
    }
}

/// Longest worker name.
pub const MAX_NAME: usize = 64;

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

/// Free text a worker describes itself with: printable, at most 128 bytes.
fn check_label(field: &str, text: &str) -> Result<(), String> {
    if text.len() > 128 {
        return Err(format!(
            "{field}: {} bytes, over the limit of 128",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field}: control characters are not allowed"));
    }
    Ok(())
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
            Some(t)
                if crate::sched::core::constant_time_eq(t.as_bytes(), self.token.as_bytes()) =>
            {
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated("wrong worker token")),
            None => Err(Status::unauthenticated(
                "missing worker token (authorization: Bearer ...)",
            )),
        }
    }
}
