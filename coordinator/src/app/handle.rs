//! [`Handle`]: the cloneable handle over the scheduling core, the database and the files
//! beside it. Opening a database restores every trial into the core and every sweep's
//! settings ([`super::settings`]), and starts the committer ([`super::commit`]).

use super::commit::{commit_batches, Outcome};
use super::events::Events;
use super::settings::{self, TrialSettings};
use super::views::Views;
use super::AppError;
use crate::sched::core::{Config, Core, TrialId};
use crate::sched::early_stop::Stopper;
use crate::store::files::{Checkpoints, Meta};
use crate::store::{Store, StoreError, Write};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// The core and what goes with it, behind [`Handle::lock`].
pub struct Shared {
    pub core: Core,
    /// Each trial's sweep-level settings (from the sweep that queued it last).
    pub(crate) settings: HashMap<TrialId, TrialSettings>,
    /// Early stopping: each sweep with an `[early_stopping]` rule and the values its trials
    /// reported. Rebuilt from the results on restart.
    pub(crate) stoppers: HashMap<String, Stopper>,
    /// Each sweep with `search = "tpe"`, by name ([`super::search`]).
    pub(crate) searches: HashMap<String, super::search::ActiveSearch>,
    /// Each sweep with `search = "pbt"`, by name ([`super::pbt`]).
    pub(crate) populations: HashMap<String, super::pbt::Population>,
    started: Instant,
    pub(crate) data_version: i64,
    /// The last write error, until a write succeeds again: the coordinator is not ready and
    /// takes no work while its disk refuses it (full, read-only, gone).
    pub(crate) storage_error: Option<String>,
    /// The open batch: writes not yet handed to the committer, and where its outcome goes.
    pub(crate) batch: Vec<Write>,
    pub(crate) batch_done: watch::Sender<Outcome>,
}

impl Shared {
    /// Milliseconds since this coordinator started: the core's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[derive(Clone)]
pub struct Handle {
    inner: Arc<Mutex<Shared>>,
    store: Arc<Mutex<Store>>,
    /// Wakes the committer; when every handle is gone it stops.
    pub(crate) wake: mpsc::Sender<()>,
    /// Trial events for `Admin.Watch`, sent once the change they describe is on disk.
    pub(crate) events: Arc<Events>,
    /// Sweeps as views read them, filled on first read and dropped whenever a sweep's row
    /// changes (submit, cancel, rerun, another process's write). Status polls then never
    /// take the database's lock, which the committer needs for every batch: with 50 pollers
    /// reading a 20,000-trial sweep from SQLite, throughput fell from 5,528 to 57 trials/s
    /// (`sweep-load --workers 100 --trials 20000 --pollers 0,50`).
    pub(crate) views: Arc<Mutex<Views>>,
    /// Taken first by every admin change (submit, cancel, rerun), so that they happen one at
    /// a time: submit and rerun write the database before they lock the core, and must not
    /// interleave with a cancel that would then be undone in the core.
    admin: Arc<Mutex<()>>,
    /// Running trials' checkpoints, beside the database (see [`crate::store::files`]).
    pub(crate) checkpoints: Arc<Checkpoints>,
    /// Finished trials' trained models (`CHECKPOINT_DIR/models`), as keep_models says.
    pub(crate) models: Arc<Checkpoints>,
    /// Set when a model arrives: the next tick prunes models to what the sweeps keep.
    pub(crate) models_changed: Arc<AtomicBool>,
    /// Held while a population's next generation is made (its checkpoints copied to trials
    /// the core does not know yet) and while the tick removes ended trials' checkpoints, so
    /// that the second never removes what the first has just copied. A result's handler and
    /// the tick both make generations.
    pub(crate) checkpoint_copies: Arc<Mutex<()>>,
    /// What `/metrics` exports ([`super::metrics`]).
    pub(crate) metrics: Arc<super::metrics::Metrics>,
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
        let core = restore_core(&store, config)?;
        let mut shared = Shared {
            core,
            settings: HashMap::new(),
            stoppers: HashMap::new(),
            searches: HashMap::new(),
            populations: HashMap::new(),
            started: Instant::now(),
            data_version: store.data_version()?,
            storage_error: None,
            batch: Vec::new(),
            batch_done: watch::channel(None).0,
        };
        for sweep in settings::restore(&store)? {
            shared.apply(&sweep);
        }
        let inner = Arc::new(Mutex::new(shared));
        let store = Arc::new(Mutex::new(store));
        let (wake, woken) = mpsc::channel();
        let metrics = Arc::new(super::metrics::Metrics::default());
        {
            let (inner, store, metrics) = (inner.clone(), store.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("db-commit".into())
                .spawn(move || commit_batches(inner, store, woken, &metrics))
                .map_err(|e| StoreError::Thread(e.to_string()))?;
        }
        Ok(Handle {
            inner,
            store,
            wake,
            events: Arc::default(),
            views: Arc::default(),
            admin: Arc::default(),
            checkpoints: Arc::new(checkpoints),
            models: Arc::new(models),
            models_changed: Arc::new(AtomicBool::new(true)),
            checkpoint_copies: Arc::default(),
            metrics,
        })
    }

    /// The core and what goes with it. Never held while taking [`Handle::store`] or the
    /// reverse: the two are taken one after the other.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database, for reads and for the admin changes' own writes (submit, cancel, rerun:
    /// one transaction each, under the admin lock).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn store_arc(&self) -> Arc<Mutex<Store>> {
        self.store.clone()
    }

    /// Taken first by every admin change, so that they happen one at a time.
    pub(crate) fn admin_change(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an uploaded TorchScript module (`Admin.UploadModule`); returns its hash.
    /// Blocking.
    pub fn store_module(&self, bytes: &[u8]) -> Result<sweep_proto::ModuleHash, AppError> {
        crate::store::files::check_torchscript(bytes).map_err(AppError::Invalid)?;
        let hash = sweep_proto::ModuleHash::of(bytes);
        self.checkpoints
            .store_module_bytes(hash, bytes)
            .map_err(AppError::Unavailable)?;
        Ok(hash)
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

/// The scheduling core as the database left it. Workers that held leases are restored as just
/// seen (at time 0, this process's start) with those leases and the epochs they reported: a
/// worker that comes back within a heartbeat timeout goes on as if nothing happened.
fn restore_core(store: &Store, config: Config) -> Result<Core, StoreError> {
    let mut core = Core::new(config);
    let mut leases = Vec::new();
    for t in store.load_trials()? {
        if let Some(lease) = &t.lease {
            leases.push((t.id.clone(), lease.clone()));
        }
        core.add_trial_lost(t.id, t.spec, t.state, t.lost, true);
    }
    core.remember_worker_ids(store.worker_ids()?);
    for w in store.lease_holders()? {
        core.restore_worker(w, 0);
    }
    for (trial, lease) in leases {
        let epochs = store.epoch_metrics(&trial, lease.attempt)?;
        core.restore_lease(&trial, lease.attempt, &lease.worker, epochs, 0);
    }
    Ok(core)
}
