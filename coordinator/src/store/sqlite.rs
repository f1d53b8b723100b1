//! SQLite persistence (WAL, synchronous=FULL): sweeps, trials, attempts, per-epoch metrics and
//! results. Every state change the core makes is written here before the RPC that caused it
//! is answered, so killing the coordinator at any moment loses no reported result.
//!
//! Integrity: opening refuses a database whose file is gone while its `-wal` or `-shm` is
//! still there (it would start empty and overwrite the journal), runs SQLite's
//! `integrity_check`, and checks every stored result against its SHA-256, so a damaged or
//! hand-edited file is refused by name instead of serving changed numbers. A server takes an
//! exclusive lock ([`ServerLock`]); [`Store::checkpoint`] on shutdown folds the WAL into the
//! main file, so a stopped coordinator's database is one self-contained file.

use crate::plan::{Direction, Metric, Sweep};
use crate::sched::core::{
    Counts, DeviceKind, Requeued, TrialId, TrialState, WorkerId, WorkerRecord,
};
use crate::sched::early_stop::EarlyStopping;
use crate::sched::pbt::PbtRule;
use crate::sched::search::SearchRule;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use sweep_proto::{EpochMetrics, TrialResult, TrialSpec, TRAINER_SEMANTICS};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot start the database writer: {0}")]
    Thread(String),
    /// A sweep's TorchScript module could not be stored beside the checkpoints.
    #[error("{0}")]
    Module(String),
    /// A sweep names a TorchScript module this coordinator does not have (upload it first),
    /// or one that is not a TorchScript archive, or asks for what this version cannot run:
    /// the request, not the storage, is at fault.
    #[error("{0}")]
    Refused(String),
    #[error("database {path}: corrupt row for trial {trial}: {reason}")]
    Corrupt {
        path: String,
        trial: String,
        reason: String,
    },
    #[error("database {path} is damaged, refusing to use it: {reason}. Restore it from a copy (a stopped coordinator's database is one self-contained file)")]
    Malformed { path: String, reason: String },
    #[error("database {path} does not exist but {leftover} does: refusing to create a fresh database over it (restore {path}, or remove {leftover} to start over)")]
    Leftover { path: String, leftover: String },
    #[error("database {path} is in use by another coordinator ({holder}); stop it first or reach it with `--server URL`, or use another --db")]
    Locked { path: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("checkpoint directory {path}: {source}")]
    Checkpoints {
        path: String,
        source: std::io::Error,
    },
}

pub struct Store {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, file TEXT NOT NULL, data TEXT, rank_by TEXT NOT NULL,
    direction TEXT NOT NULL, axes TEXT NOT NULL, cancelled INTEGER NOT NULL DEFAULT 0,
    early_stopping TEXT, checkpoints TEXT, keep_models TEXT, submitted INTEGER, search TEXT);
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
    worker TEXT, reason TEXT, result TEXT, lost INTEGER NOT NULL DEFAULT 0, result_sha TEXT);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep TEXT NOT NULL, trial TEXT NOT NULL, position INTEGER NOT NULL, label TEXT, reported REAL,
    PRIMARY KEY (sweep, trial));
CREATE TABLE IF NOT EXISTS attempts (
    trial TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, outcome TEXT,
    PRIMARY KEY (trial, attempt));
CREATE TABLE IF NOT EXISTS epochs (
    trial TEXT NOT NULL, attempt INTEGER NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial, attempt, epoch));
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, device TEXT NOT NULL, slots INTEGER NOT NULL,
    secret_sha TEXT NOT NULL);
";

/// A sweep's row and its trials in plan order.
#[derive(Debug, Clone)]
pub struct StoredSweep {
    pub name: String,
    pub file: String,
    pub data: Option<String>,
    pub rank_by: Metric,
    pub direction: Direction,
    pub axes: Vec<String>,
    pub cancelled: bool,
    /// The sweep's `[early_stopping]` rule, if it has one.
    pub early_stopping: Option<EarlyStopping>,
    /// The sweep's `[checkpoints]` (the default where it was stored without one).
    pub checkpoints: crate::plan::CheckpointPolicy,
    /// Which trained models the sweep keeps.
    pub keep_models: crate::plan::KeepModels,
    /// `search = "tpe"`: the space and budget; `trials` are then the suggestions so far.
    pub search: Option<SearchRule>,
    /// `search = "pbt"`: the population's rule; `trials` are then its segments so far, in
    /// generation-major order (generation g's member m at position g·population + m).
    pub pbt: Option<PbtRule>,
    pub trials: Vec<SweepTrial>,
}

/// A sweep's learning rule as its row's `search` column holds it (JSON): a TPE search's rule
/// as it always was, or `{"pbt": rule}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredRule {
    Tpe(SearchRule),
    Pbt { pbt: PbtRule },
}

impl StoredRule {
    fn of(sweep: &Sweep) -> Option<StoredRule> {
        match (&sweep.search, &sweep.pbt) {
            (Some(r), _) => Some(StoredRule::Tpe(r.clone())),
            (_, Some(p)) => Some(StoredRule::Pbt { pbt: p.clone() }),
            _ => None,
        }
    }
}

/// One trial of a stored sweep, in plan order.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepTrial {
    pub id: TrialId,
    /// The sweep file's `label` for it, if any.
    pub label: Option<String>,
    /// The accuracy a published study reported for it (`reported`), if any.
    pub reported: Option<f64>,
}

/// A trial's row as stored, for tools and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTrial {
    pub id: TrialId,
    /// The `state` column: queued, running, finished, failed or cancelled ("running" exists
    /// only on disk; a restarted coordinator queues such trials again).
    pub state: String,
    pub attempt: u32,
    pub worker: Option<String>,
}

/// The columns of `trials` that restore a trial.
struct TrialRow {
    id: String,
    spec: String,
    state: String,
    attempt: u32,
    worker: Option<String>,
    reason: Option<String>,
    result: Option<String>,
    lost: u32,
    result_sha: Option<String>,
}

/// One change the scheduler made, to be made durable. The service collects the changes of many
/// requests and writes them in one transaction (group commit): one fsync for all of them.
#[derive(Debug, Clone)]
pub enum Write {
    Lease {
        trial: TrialId,
        attempt: u32,
        worker: WorkerId,
    },
    Epoch {
        trial: TrialId,
        attempt: u32,
        metrics: EpochMetrics,
    },
    Result {
        trial: TrialId,
        attempt: u32,
        worker: WorkerId,
        result: Box<TrialResult>,
    },
    Requeue(Requeued),
    /// A worker registered (or resumed with other slots): a restarted coordinator knows it.
    Worker(WorkerRecord),
    /// A search's suggestion: a new trial, queued, and the sweep's next place for it. Written
    /// in the batch of the lease that asked for it, before the lease.
    Suggest {
        sweep: String,
        trial: TrialId,
        spec: Box<TrialSpec>,
    },
    /// Writes nothing; a request that only needs to know that everything before it is on
    /// disk (a repeated result) waits for the batch it joins.
    Nothing,
}

/// A trial's `state` column. `Running` names the lease's attempt and worker: a restarted
/// coordinator gives the worker a heartbeat timeout to come back to it (see
/// [`Store::lease_holders`]), and otherwise queues the trial again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl StoredState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredState::Queued => "queued",
            StoredState::Running => "running",
            StoredState::Finished => "finished",
            StoredState::Failed => "failed",
            StoredState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<StoredState> {
        [
            StoredState::Queued,
            StoredState::Running,
            StoredState::Finished,
            StoredState::Failed,
            StoredState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Schema version (`PRAGMA user_version`): 1 added `trials.lost` and `trials.result_sha`;
/// 7 added `workers` (created by [`SCHEMA`] in an older database too).
const SCHEMA_VERSION: i64 = 7;

/// Hex SHA-256 of a stored result's JSON.
fn checksum(json: &str) -> String {
    crate::plan::sha256_hex(json.as_bytes())
}

/// The files SQLite keeps beside a database.
fn companions(path: &Path) -> [std::path::PathBuf; 3] {
    ["-wal", "-shm", "-journal"].map(|suffix| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    })
}

/// One server per database: an exclusive `flock` on `DB.lock`, held while this value lives.
/// The file names the holder (pid and what it serves), so a second server can say who has it.
#[derive(Debug)]
pub struct ServerLock {
    _file: std::fs::File,
}

impl ServerLock {
    pub fn acquire(db: &Path, holder: &str) -> Result<ServerLock, StoreError> {
        use std::io::{Read, Seek, Write as _};
        use std::os::fd::AsRawFd;
        let mut p = db.as_os_str().to_owned();
        p.push(".lock");
        let path = std::path::PathBuf::from(p);
        let err = |source| StoreError::Lock {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err(e));
            }
            let mut who = String::new();
            let _ = file.take(4096).read_to_string(&mut who);
            return Err(StoreError::Locked {
                path: db.display().to_string(),
                holder: match who.trim() {
                    "" => "a process that has not said who it is".into(),
                    w => w.to_string(),
                },
            });
        }
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        writeln!(file, "pid {} {holder}", std::process::id()).map_err(err)?;
        Ok(ServerLock { _file: file })
    }
}

/// One trial as stored.
#[derive(Debug, Clone)]
pub struct StoredTrial {
    pub id: TrialId,
    pub spec: TrialSpec,
    pub state: TrialState,
    /// Attempts that lost their worker (the retry budget).
    pub lost: u32,
    /// The row says `running`: the lease it names. `state` is then the re-queued attempt a
    /// restart falls back to if that worker does not come back.
    pub lease: Option<StoredLease>,
}

/// A lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLease {
    pub worker: WorkerId,
    pub attempt: u32,
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let wrap = |source| StoreError::Sqlite {
            path: p.clone(),
            source,
        };
        if !path.exists() {
            if let Some(left) = companions(path).into_iter().find(|c| c.exists()) {
                return Err(StoreError::Leftover {
                    path: p,
                    leftover: left.display().to_string(),
                });
            }
        }
        let malformed = |e: rusqlite::Error| StoreError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(malformed)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        let store = Store { conn, path: p };
        store.check_integrity()?;
        store.conn.execute_batch(SCHEMA).map_err(|e| store.err(e))?;
        store.migrate()?;
        Ok(store)
    }

    /// SQLite's own check of every page and index; the first problems it lists are the reason.
    fn check_integrity(&self) -> Result<(), StoreError> {
        let malformed = |reason: String| StoreError::Malformed {
            path: self.path.clone(),
            reason,
        };
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check(5)")
            .map_err(|e| malformed(e.to_string()))?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| malformed(e.to_string()))?;
        if lines != ["ok"] {
            return Err(malformed(lines.join("; ")));
        }
        Ok(())
    }

    /// Brings an older database up to [`SCHEMA_VERSION`].
    fn migrate(&self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let columns: Vec<String> = self
            .conn
            .prepare("SELECT name FROM pragma_table_info('trials')")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))?;
        let sweep_columns: Vec<String> = self
            .conn
            .prepare("SELECT name FROM pragma_table_info('sweeps')")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))?;
        let r: Result<(), rusqlite::Error> = (|| {
            for (column, kind) in [
                ("early_stopping", "TEXT"),
                ("checkpoints", "TEXT"),
                ("keep_models", "TEXT"),
                ("submitted", "INTEGER"),
                ("search", "TEXT"),
            ] {
                if !sweep_columns.iter().any(|c| c == column) {
                    self.conn.execute_batch(&format!(
                        "ALTER TABLE sweeps ADD COLUMN {column} {kind};"
                    ))?;
                }
            }
            if !columns.iter().any(|c| c == "lost") {
                self.conn.execute_batch(
                    "ALTER TABLE trials ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE trials ADD COLUMN result_sha TEXT;",
                )?;
            }
            // Results written before checksums existed are taken as they are.
            let rows: Vec<(String, String)> = self
                .conn
                .prepare(
                    "SELECT id, result FROM trials WHERE result IS NOT NULL AND result_sha IS NULL",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (id, json) in rows {
                self.conn.execute(
                    "UPDATE trials SET result_sha = ?2 WHERE id = ?1",
                    params![id, checksum(&json)],
                )?;
            }
            self.conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
        })();
        r.map_err(|e| self.err(e))
    }

    /// On shutdown: folds the WAL into the database file and leaves WAL mode, which deletes
    /// the `-wal` and `-shm` files, so the `.db` file alone holds everything and is the only
    /// database file left beside the lock. The process never closes this connection on its
    /// way out (the `Handle`'s clones live until exit), and SQLite deletes those files only
    /// when the last connection closes: without leaving WAL mode an empty `-wal` stayed
    /// behind (seen by scripts/check-containers.sh after `docker stop`). Writes after this
    /// still work, in rollback-journal mode; the next `open` returns to WAL.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| self.err(e))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if mode != "delete" {
            tracing::warn!("{}: still in {mode} mode after the final checkpoint", self.path);
        }
        Ok(())
    }

    /// Every worker id the database has seen (they are never given out again).
    pub fn worker_ids(&self) -> Result<Vec<WorkerId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT worker FROM attempts UNION SELECT id FROM workers")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| r.get::<_, String>(0).map(WorkerId::from))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The workers that hold a running lease, to be restored at start.
    pub fn lease_holders(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, device, slots, secret_sha FROM workers
                 WHERE id IN (SELECT worker FROM trials WHERE state = 'running') ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String, u32, String)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(id, name, device, slots, secret_sha)| {
                let device = match device.as_str() {
                    "cpu" => DeviceKind::Cpu,
                    "cuda" => DeviceKind::Cuda,
                    other => {
                        return Err(StoreError::Malformed {
                            path: self.path.clone(),
                            reason: format!("worker {id}: unknown device {other:?}"),
                        })
                    }
                };
                Ok(WorkerRecord {
                    id: id.into(),
                    name,
                    device,
                    slots,
                    secret_sha,
                })
            })
            .collect()
    }

    /// The epochs an attempt reported, in order.
    pub fn epoch_metrics(
        &self,
        trial: &str,
        attempt: u32,
    ) -> Result<Vec<EpochMetrics>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT metrics FROM epochs WHERE trial = ?1 AND attempt = ?2 ORDER BY epoch")
            .map_err(|e| self.err(e))?;
        let rows: Vec<String> = stmt
            .query_map(params![trial, attempt], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    trial: trial.to_string(),
                    reason: format!("epoch metrics: {e}"),
                })
            })
            .collect()
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records `sweep` (a new one, or a new version of one) and its trials; new trials are
    /// queued, and listed ones are queued again by [`requeue_on_submit`]'s rules. Returns what
    /// that did, and what happened to the trials the previous version listed and this one does
    /// not (see [`Submitted`], [`Dropped`]).
    pub fn add_sweep(&mut self, sweep: &Sweep, rerun: bool) -> Result<Submitted, StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let r: Result<Submitted, rusqlite::Error> = (|| {
            let mut submitted = Submitted::default();
            let before: Vec<String> = tx
                .prepare("SELECT trial FROM sweep_trials WHERE sweep = ?1")?
                .query_map(params![sweep.name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let previous: Option<String> = tx
                .query_row(
                    "SELECT search FROM sweeps WHERE name = ?1",
                    params![sweep.name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            tx.execute(
                "INSERT INTO sweeps (name, file, data, rank_by, direction, axes, cancelled, early_stopping, checkpoints, keep_models, submitted, search)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, (SELECT IFNULL(MAX(submitted), 0) + 1 FROM sweeps), ?10)
                 ON CONFLICT(name) DO UPDATE SET file = ?2, data = ?3, rank_by = ?4, direction = ?5, axes = ?6, cancelled = 0, early_stopping = ?7, checkpoints = ?8, keep_models = ?9,
                   submitted = (SELECT IFNULL(MAX(submitted), 0) + 1 FROM sweeps), search = ?10",
                params![
                    sweep.name,
                    sweep.file.display().to_string(),
                    sweep.data.as_ref().map(|d| d.display().to_string()),
                    enum_str(&sweep.rank_by),
                    enum_str(&sweep.direction),
                    serde_json::to_string(&sweep.axes).unwrap_or_default(),
                    sweep
                        .early_stopping
                        .as_ref()
                        .and_then(|e| serde_json::to_string(e).ok()),
                    serde_json::to_string(&sweep.checkpoints).ok(),
                    serde_json::to_string(&sweep.keep_models).ok(),
                    StoredRule::of(sweep).and_then(|r| serde_json::to_string(&r).ok()),
                ],
            )?;
            // A search's trials are its suggestions so far: submitting it again with the same
            // space goes on from them (its budget counts them; the budget, the seed and the
            // startup may change). A grid's trials, or another space's, are dropped from it
            // (they stay in the database, where they can be prior observations).
            if !same_space(previous.as_deref(), sweep) {
                tx.execute(
                    "DELETE FROM sweep_trials WHERE sweep = ?1",
                    params![sweep.name],
                )?;
            }
            for (pos, t) in sweep.trials.iter().enumerate() {
                tx.execute(
                    "INSERT INTO sweep_trials (sweep, trial, position, label, reported) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![sweep.name, t.id.as_str(), pos as i64, t.label, t.reported],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO trials (id, spec, state, attempt) VALUES (?1, ?2, 'queued', 1)",
                    params![t.id.as_str(), t.spec.to_toml()],
                )?;
                submitted.count(requeue_on_submit(&tx, t.id.as_str(), sweep, rerun)?);
            }
            // A search's (or a population's) members so far follow the same rules as planned
            // trials.
            if sweep.search.is_some() || sweep.pbt.is_some() {
                let members: Vec<String> = tx
                    .prepare("SELECT trial FROM sweep_trials WHERE sweep = ?1")?
                    .query_map(params![sweep.name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in members {
                    submitted.count(requeue_on_submit(&tx, &id, sweep, rerun)?);
                }
            }
            submitted.dropped = drop_unlisted(&tx, before)?;
            Ok(submitted)
        })();
        let submitted = r.map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        tx.commit().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        Ok(submitted)
    }

    pub fn sweep(&self, name: &str) -> Result<Option<StoredSweep>, StoreError> {
        let row = self
            .conn
            .query_row("SELECT name, file, data, rank_by, direction, axes, cancelled, early_stopping, checkpoints, keep_models, search FROM sweeps WHERE name = ?1", params![name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((
            name,
            file,
            data,
            rank_by,
            direction,
            axes,
            cancelled,
            early,
            checkpoints,
            keep,
            search,
        )) = row
        else {
            return Ok(None);
        };
        // A search that does not read back would turn into a sweep of its members alone.
        let rule: Option<StoredRule> = match search {
            None => None,
            Some(text) => Some(
                serde_json::from_str(&text).map_err(|e| StoreError::Malformed {
                    path: self.path.clone(),
                    reason: format!("sweep `{name}`: its search does not read back: {e}"),
                })?,
            ),
        };
        let (search, pbt) = match rule {
            Some(StoredRule::Tpe(r)) => (Some(r), None),
            Some(StoredRule::Pbt { pbt }) => (None, Some(pbt)),
            None => (None, None),
        };
        let mut stmt = self
            .conn
            .prepare("SELECT trial, label, reported FROM sweep_trials WHERE sweep = ?1 ORDER BY position")
            .map_err(|e| self.err(e))?;
        let trials = stmt
            .query_map(params![name], |r| {
                Ok(SweepTrial {
                    id: TrialId::from(r.get::<_, String>(0)?),
                    label: r.get(1)?,
                    reported: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok(Some(StoredSweep {
            name,
            file,
            data,
            rank_by: serde_json::from_value(serde_json::Value::String(rank_by)).unwrap_or_default(),
            direction: serde_json::from_value(serde_json::Value::String(direction))
                .unwrap_or_default(),
            axes: serde_json::from_str(&axes).unwrap_or_default(),
            cancelled: cancelled != 0,
            early_stopping: early.and_then(|e| serde_json::from_str(&e).ok()),
            checkpoints: checkpoints
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
            keep_models: keep
                .and_then(|k| serde_json::from_str(&k).ok())
                .unwrap_or_default(),
            search,
            pbt,
            trials,
        }))
    }

    /// Sweep names in the order they were last submitted (older databases' sweeps first, by
    /// name): replaying them in this order gives each trial the settings of the sweep that
    /// queued it last.
    pub fn sweep_names_by_submission(&self) -> Result<Vec<String>, StoreError> {
        self.names_in("IFNULL(submitted, 0), name")
    }

    pub fn sweep_names(&self) -> Result<Vec<String>, StoreError> {
        self.names_in("name")
    }

    fn names_in(&self, order: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT name FROM sweeps ORDER BY {order}"))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Trial counts of a sweep by their stored state.
    pub fn state_counts(&self, sweep: &str) -> Result<Counts, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT t.state, COUNT(*) FROM sweep_trials s JOIN trials t ON t.id = s.trial WHERE s.sweep = ?1 GROUP BY t.state")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, i64)> = stmt
            .query_map(params![sweep], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let mut c = Counts::default();
        for (state, n) in rows {
            let n = n as usize;
            match StoredState::parse(&state) {
                Some(StoredState::Queued) => c.queued += n,
                Some(StoredState::Running) => c.running += n,
                Some(StoredState::Finished) => c.finished += n,
                Some(StoredState::Failed) => c.failed += n,
                Some(StoredState::Cancelled) => c.cancelled += n,
                None => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        trial: format!("(sweep {sweep})"),
                        reason: format!("unknown state {state}"),
                    })
                }
            }
        }
        Ok(c)
    }

    /// Changes whenever another connection (e.g. `coordinator submit`) commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Every trial, for restoring the core: running trials come back queued with their next
    /// attempt, since their workers' leases died with the previous coordinator.
    pub fn load_trials(&self) -> Result<Vec<StoredTrial>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, spec, state, attempt, worker, reason, result, lost, result_sha FROM trials")
            .map_err(|e| self.err(e))?;
        let rows: Vec<TrialRow> = stmt
            .query_map([], |r| {
                Ok(TrialRow {
                    id: r.get(0)?,
                    spec: r.get(1)?,
                    state: r.get(2)?,
                    attempt: r.get(3)?,
                    worker: r.get(4)?,
                    reason: r.get(5)?,
                    result: r.get(6)?,
                    lost: r.get(7)?,
                    result_sha: r.get(8)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let TrialRow {
                id,
                spec,
                state,
                attempt,
                worker,
                reason,
                result,
                lost,
                result_sha,
            } = row;
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.path.clone(),
                trial: id.clone(),
                reason,
            };
            let spec = TrialSpec::from_toml(&spec).map_err(|e| corrupt(e.to_string()))?;
            let stored = StoredState::parse(&state)
                .ok_or_else(|| corrupt(format!("unknown state {state}")))?;
            let lease = (stored == StoredState::Running).then(|| StoredLease {
                worker: worker.clone().unwrap_or_default().into(),
                attempt,
            });
            let state = match stored {
                StoredState::Queued => TrialState::Queued { attempt },
                StoredState::Running => TrialState::Queued {
                    attempt: attempt + 1,
                },
                StoredState::Finished => {
                    let json = result.as_deref().unwrap_or("");
                    if result_sha.as_deref() != Some(checksum(json).as_str()) {
                        return Err(corrupt(
                            "the stored result does not match its checksum (changed outside the coordinator, or damaged)".into(),
                        ));
                    }
                    let result: TrialResult =
                        serde_json::from_str(json).map_err(|e| corrupt(format!("result: {e}")))?;
                    TrialState::Finished {
                        attempt,
                        worker: worker.unwrap_or_default().into(),
                        result: Box::new(result),
                    }
                }
                StoredState::Failed => TrialState::Failed {
                    attempts: attempt,
                    reason: reason.unwrap_or_default(),
                },
                StoredState::Cancelled => TrialState::Cancelled,
            };
            out.push(StoredTrial {
                id: id.into(),
                spec,
                state,
                lost,
                lease,
            });
        }
        Ok(out)
    }

    /// Every trial as stored, for tools and tests.
    pub fn raw_states(&self) -> Result<Vec<RawTrial>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, state, attempt, worker FROM trials ORDER BY id")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(RawTrial {
                id: TrialId::from(r.get::<_, String>(0)?),
                state: r.get(1)?,
                attempt: r.get(2)?,
                worker: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Number of epoch rows stored for a trial's attempt.
    pub fn epochs_of(&self, trial: &str, attempt: u32) -> Result<u32, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM epochs WHERE trial = ?1 AND attempt = ?2",
                params![trial, attempt],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Makes `writes` durable in one transaction, in order: all of them or none.
    pub fn write(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        for w in writes {
            apply(&tx, w).map_err(wrap)?;
        }
        tx.commit().map_err(wrap)
    }

    /// Cancels sweep `name` in one transaction and returns the trials it stopped: those of
    /// its trials still queued or running that no other active (not cancelled) sweep holds.
    /// A finished, failed or already cancelled trial is never changed, whatever the caller's
    /// view of it was, so a cancel racing a result cannot overwrite it.
    pub fn cancel_sweep(&mut self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        self.flag_sweep_and_update(
            name,
            true,
            "UPDATE trials SET state = 'cancelled'
             WHERE state IN ('queued', 'running')
               AND id IN (SELECT trial FROM sweep_trials WHERE sweep = ?1)
               AND id NOT IN (SELECT st.trial FROM sweep_trials st JOIN sweeps s ON s.name = st.sweep
                              WHERE s.name != ?1 AND s.cancelled = 0)
             RETURNING id",
        )
    }

    /// Cancels one trial if it is still queued or running; returns it if it was.
    pub fn cancel_trial(&mut self, id: &str) -> Result<Vec<TrialId>, StoreError> {
        returned_ids(
            &self.conn,
            "UPDATE trials SET state = 'cancelled' WHERE id = ?1 AND state IN ('queued', 'running')
             RETURNING id",
            id,
        )
        .map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Queues the failed and cancelled trials of sweep `name` again with their next attempt
    /// (failed: lost their worker too often, or a worker reported `failed`; a diverged
    /// trial would diverge again and is kept), and makes the sweep active again. One
    /// transaction; returns the trials queued.
    pub fn rerun_sweep(&mut self, name: &str) -> Result<Vec<TrialId>, StoreError> {
        self.flag_sweep_and_update(
            name,
            false,
            "UPDATE trials SET state = 'queued', attempt = attempt + 1, lost = 0, reason = NULL,
                    result = NULL, result_sha = NULL
             WHERE id IN (SELECT trial FROM sweep_trials WHERE sweep = ?1)
               AND (state IN ('failed', 'cancelled')
                    OR (state = 'finished' AND json_extract(result, '$.status') = 'failed'))
             RETURNING id",
        )
    }

    /// In one transaction: sets sweep `name`'s `cancelled` flag, then runs `update` (an UPDATE
    /// of trials with the sweep's name as ?1, `RETURNING id`) and returns the ids it changed.
    fn flag_sweep_and_update(
        &mut self,
        name: &str,
        cancelled: bool,
        update: &str,
    ) -> Result<Vec<TrialId>, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        tx.execute(
            "UPDATE sweeps SET cancelled = ?2 WHERE name = ?1",
            params![name, cancelled],
        )
        .map_err(wrap)?;
        let ids = returned_ids(&tx, update, name).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(ids)
    }
}

/// What a submit did: finished trials queued again for another trainer's semantics, those
/// kept because another sweep lists them, and the previous version's trials the new one no
/// longer lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submitted {
    pub stale: usize,
    /// Finished trials this sweep would train again (another trainer's semantics, another
    /// early-stopping rule) but another sweep lists: kept as they are (see
    /// [`requeue_on_submit`]).
    pub kept_shared: usize,
    pub dropped: Dropped,
}

impl Submitted {
    fn count(&mut self, r: Resubmitted) {
        match r {
            Resubmitted::Stale => self.stale += 1,
            Resubmitted::KeptShared => self.kept_shared += 1,
            Resubmitted::No | Resubmitted::Other => {}
        }
    }
}

/// What [`requeue_on_submit`] did to one listed trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resubmitted {
    No,
    /// Finished by a trainer of other semantics, queued again.
    Stale,
    /// Queued again for `rerun`, a cancel, or another early-stopping rule.
    Other,
    /// Would be queued again for its semantics or its early stop, but another sweep lists it.
    KeptShared,
}

/// Trials an edited sweep no longer lists, and no other sweep does. Queued ones are removed
/// (nothing of them is lost: they never ran), running ones are cancelled (their worker is told
/// at its next heartbeat), and ended ones are kept: a later version that lists them again
/// reuses their results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dropped {
    pub queued: Vec<TrialId>,
    pub running: Vec<TrialId>,
    pub kept: usize,
}

/// Applies [`Dropped`]'s rules to the members a sweep had `before` that no sweep lists now.
fn drop_unlisted(
    tx: &rusqlite::Transaction,
    before: Vec<String>,
) -> Result<Dropped, rusqlite::Error> {
    let mut dropped = Dropped::default();
    // One read of what every sweep lists: a lookup per member by trial has no index to use,
    // and made resubmitting a large sweep quadratic.
    let listed: std::collections::HashSet<String> = tx
        .prepare("SELECT DISTINCT trial FROM sweep_trials")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in before.into_iter().filter(|id| !listed.contains(id)) {
        let state: Option<String> = tx
            .query_row("SELECT state FROM trials WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        match state.as_deref().and_then(StoredState::parse) {
            Some(StoredState::Queued) => {
                tx.execute("DELETE FROM trials WHERE id = ?1", params![id])?;
                dropped.queued.push(id.into());
            }
            Some(StoredState::Running) => {
                tx.execute(
                    "UPDATE trials SET state = 'cancelled' WHERE id = ?1",
                    params![id],
                )?;
                dropped.running.push(id.into());
            }
            Some(_) => dropped.kept += 1,
            None => {}
        }
    }
    Ok(dropped)
}

/// Whether a stored search (its JSON) has `sweep`'s space: the same axes and defaults; or a
/// stored population `sweep`'s rule.
fn same_space(previous: Option<&str>, sweep: &Sweep) -> bool {
    let old = previous.and_then(|p| serde_json::from_str::<StoredRule>(p).ok());
    match (old, StoredRule::of(sweep)) {
        (Some(StoredRule::Tpe(old)), Some(StoredRule::Tpe(new))) => {
            old.axes == new.axes && old.base == new.base
        }
        // A population goes on only under the same rule: its history depends on all of it.
        (Some(StoredRule::Pbt { pbt: old }), Some(StoredRule::Pbt { pbt: new })) => old == new,
        _ => false,
    }
}

/// A submitted sweep's trial `id`, already stored, queued again where the rules say so:
/// cancelled ones (and, with `rerun`, every one not running); one stopped early under
/// another rule (or none), and one whose result came from a trainer of other semantics,
/// unless another sweep lists it.
fn requeue_on_submit(
    tx: &Connection,
    id: &str,
    sweep: &Sweep,
    rerun: bool,
) -> Result<Resubmitted, rusqlite::Error> {
    const REQUEUE: &str = "UPDATE trials SET state = 'queued', attempt = attempt + 1, lost = 0, reason = NULL, result = NULL, result_sha = NULL WHERE id = ?1";
    // `rerun` is asked for: every ended trial trains again. Cancelled trials come back when a
    // sweep listing them is submitted again.
    let asked = if rerun {
        "state != 'running'"
    } else {
        "state = 'cancelled'"
    };
    if tx.execute(&format!("{REQUEUE} AND {asked}"), params![id])? > 0 {
        return Ok(Resubmitted::Other);
    }
    // A finished result this sweep would not reuse: one of a trainer of other semantics
    // (results without provenance are semantics 1), or one stopped early, which has not run
    // its epochs (a sweep without early stopping trains it in full, one with another rule
    // judges it anew; the stop's reason starts with the rule that gave it).
    let rule = sweep.early_stopping.map(|e| e.describe());
    let (stale, stopped): (bool, bool) = tx
        .query_row(
            "SELECT IFNULL(json_extract(result, '$.provenance.semantics'), 1) != ?2,
                    json_extract(result, '$.status') = 'stopped'
                      AND (?3 IS NULL OR substr(IFNULL(json_extract(result, '$.reason'), ''), 1, length(?3)) != ?3)
             FROM trials WHERE id = ?1 AND state = 'finished'",
            params![id, TRAINER_SEMANTICS, rule],
            |r| Ok((r.get(0)?, r.get::<_, Option<bool>>(1)?.unwrap_or(false))),
        )
        .optional()?
        .unwrap_or((false, false));
    if !stale && !stopped {
        return Ok(Resubmitted::No);
    }
    // Issue 28: submitting sweep B does not reopen sweep A. A trial another sweep lists keeps
    // its result (B reuses it as it is, and the answer says so); `--rerun` trains it again.
    let shared: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sweep_trials WHERE trial = ?1 AND sweep != ?2)",
        params![id, sweep.name],
        |r| r.get(0),
    )?;
    if shared {
        return Ok(Resubmitted::KeptShared);
    }
    tx.execute(REQUEUE, params![id])?;
    Ok(if stale {
        Resubmitted::Stale
    } else {
        Resubmitted::Other
    })
}

/// The ids an `UPDATE ... RETURNING id` with one parameter changed.
fn returned_ids(conn: &Connection, sql: &str, arg: &str) -> Result<Vec<TrialId>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params![arg], |r| r.get::<_, String>(0).map(TrialId::from))?;
    rows.collect()
}

/// One write; statements are prepared once per connection (half the cost of a write is SQL
/// parsing otherwise).
fn apply(conn: &Connection, w: &Write) -> Result<(), rusqlite::Error> {
    match w {
        Write::Lease {
            trial,
            attempt,
            worker,
        } => {
            conn.prepare_cached(
                // Not over a cancel that another process committed since this lease was
                // granted: the coordinator picks the cancel up and stops the worker.
                "UPDATE trials SET state = 'running', attempt = ?2, worker = ?3 WHERE id = ?1 AND state != 'cancelled'",
            )?
            .execute(params![trial.as_str(), attempt, worker.as_str()])?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO attempts (trial, attempt, worker, outcome) VALUES (?1, ?2, ?3, NULL)",
            )?
            .execute(params![trial.as_str(), attempt, worker.as_str()])?;
        }
        Write::Epoch {
            trial,
            attempt,
            metrics,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO epochs (trial, attempt, epoch, metrics) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![trial.as_str(), attempt, metrics.epoch, serde_json::to_string(metrics).unwrap_or_default()])?;
        }
        Write::Result {
            trial,
            attempt,
            worker,
            result,
        } => {
            let json = serde_json::to_string(result).unwrap_or_default();
            conn.prepare_cached(
                "UPDATE trials SET state = 'finished', attempt = ?2, worker = ?3, result = ?4, reason = ?5, result_sha = ?6 WHERE id = ?1",
            )?
            .execute(params![trial.as_str(), attempt, worker.as_str(), json, result.reason, checksum(&json)])?;
            conn.prepare_cached(
                "UPDATE attempts SET outcome = ?3 WHERE trial = ?1 AND attempt = ?2",
            )?
            .execute(params![trial.as_str(), attempt, enum_str(&result.status)])?;
        }
        Write::Requeue(Requeued::Retry {
            trial,
            next_attempt,
            lost,
        }) => {
            conn.prepare_cached(
                // Not over a cancel committed since the core re-queued it (the core has
                // followed the cancel by then).
                "UPDATE trials SET state = 'queued', attempt = ?2, lost = ?3 WHERE id = ?1 AND state != 'cancelled'",
            )?
            .execute(params![trial.as_str(), next_attempt, lost])?;
        }
        Write::Requeue(Requeued::GaveUp {
            trial,
            reason,
            lost,
        }) => {
            conn.prepare_cached(
                "UPDATE trials SET state = 'failed', reason = ?2, lost = ?3 WHERE id = ?1 AND state != 'cancelled'",
            )?
            .execute(params![trial.as_str(), reason, lost])?;
        }
        Write::Suggest { sweep, trial, spec } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO trials (id, spec, state, attempt) VALUES (?1, ?2, 'queued', 1)",
            )?
            .execute(params![trial.as_str(), spec.to_toml()])?;
            // After every stored member: a suggestion taken back (its batch refused) frees
            // its number in memory, not on disk, and two members must never share a place
            // (they are restored in position order).
            conn.prepare_cached(
                "INSERT OR IGNORE INTO sweep_trials (sweep, trial, position)
                 VALUES (?1, ?2, (SELECT IFNULL(MAX(position), -1) + 1 FROM sweep_trials WHERE sweep = ?1))",
            )?
            .execute(params![sweep, trial.as_str()])?;
        }
        Write::Worker(w) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO workers (id, name, device, slots, secret_sha) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                w.id.as_str(),
                w.name,
                match w.device {
                    DeviceKind::Cpu => "cpu",
                    DeviceKind::Cuda => "cuda",
                },
                w.slots,
                w.secret_sha
            ])?;
        }
        Write::Nothing => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan;
    use std::collections::HashSet;
    use sweep_proto::TrialStatus;

    /// Trial `id`'s state as the database holds it now.
    fn stored_state(store: &Store, id: &str) -> TrialState {
        store
            .load_trials()
            .unwrap()
            .into_iter()
            .find(|t| t.id == id)
            .unwrap()
            .state
    }

    fn record_lease(store: &mut Store, trial: &str, attempt: u32, worker: &str) {
        let (trial, worker) = (trial.into(), worker.into());
        store
            .write(&[Write::Lease {
                trial,
                attempt,
                worker,
            }])
            .unwrap();
    }

    fn record_result(store: &mut Store, trial: &str, attempt: u32, worker: &str, r: TrialResult) {
        let (trial, worker) = (trial.into(), worker.into());
        store
            .write(&[Write::Result {
                trial,
                attempt,
                worker,
                result: Box::new(r),
            }])
            .unwrap();
    }

    fn result(acc: f64) -> TrialResult {
        TrialResult::builder()
            .best_val_accuracy(acc)
            .images(10, 0)
            .parameters(5)
            .seconds(2.0)
            .provenance(sweep_proto::Provenance {
                semantics: TRAINER_SEMANTICS,
                ..Default::default()
            })
            .build()
    }

    #[test]
    fn survives_reopen_and_requeues_running_trials() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let sweep = plan::parse(
            "name = \"s\"\n[grid]\nlr = [0.1, 0.01, 0.001]\n",
            Path::new("g.toml"),
        )
        .unwrap();
        let ids: Vec<TrialId> = sweep.trials.iter().map(|t| t.id.clone()).collect();
        {
            let mut store = Store::open(&db).unwrap();
            store.add_sweep(&sweep, false).unwrap();
            record_lease(&mut store, &ids[0], 1, "w-1");
            record_result(&mut store, &ids[0], 1, "w-1", result(0.5));
            record_lease(&mut store, &ids[1], 1, "w-1");
        }
        let store = Store::open(&db).unwrap();
        let trials = store.load_trials().unwrap();
        let state = |id: &str| trials.iter().find(|t| t.id == id).unwrap().state.clone();
        assert!(
            matches!(state(&ids[0]), TrialState::Finished { attempt: 1, result, .. } if result.best_val_accuracy == Some(0.5))
        );
        assert_eq!(state(&ids[1]), TrialState::Queued { attempt: 2 });
        assert_eq!(state(&ids[2]), TrialState::Queued { attempt: 1 });
        let s = store.sweep("s").unwrap().unwrap();
        assert_eq!(
            s.trials.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            ids
        );
        assert_eq!(s.axes, vec!["lr"]);
    }

    #[test]
    fn results_of_another_trainer_semantics_are_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let sweep = plan::parse(
            "name = \"s\"\n[grid]\nseed = [1, 2, 3]\n",
            Path::new("g.toml"),
        )
        .unwrap();
        let ids: Vec<TrialId> = sweep.trials.iter().map(|t| t.id.clone()).collect();
        assert_eq!(store.add_sweep(&sweep, false).unwrap().stale, 0);
        let with = |semantics: Option<u32>| {
            let mut r = result(0.5);
            r.provenance = semantics.map(|semantics| sweep_proto::Provenance {
                semantics,
                ..Default::default()
            });
            r
        };
        // Current semantics, an older one, and none at all (a result from before provenance).
        for (id, r) in ids.iter().zip([
            with(Some(TRAINER_SEMANTICS)),
            with(Some(TRAINER_SEMANTICS - 1)),
            with(None),
        ]) {
            record_lease(&mut store, id, 1, "w");
            record_result(&mut store, id, 1, "w", r);
        }
        assert_eq!(store.add_sweep(&sweep, false).unwrap().stale, 2);
        let trials = store.load_trials().unwrap();
        let state = |id: &str| trials.iter().find(|t| t.id == id).unwrap().state.clone();
        assert!(matches!(state(&ids[0]), TrialState::Finished { .. }));
        assert_eq!(state(&ids[1]), TrialState::Queued { attempt: 2 });
        assert_eq!(state(&ids[2]), TrialState::Queued { attempt: 2 });
    }

    /// Issue 28: submitting sweep B does not reopen sweep A. B's trials that A lists keep
    /// their results of an older trainer (counted as kept), B's own are run again, and A stays
    /// finished; `--rerun` of B trains the shared ones again too.
    #[test]
    fn another_sweep_does_not_reopen_shared_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let plan = |t: &str| plan::parse(t, Path::new("g.toml")).unwrap();
        let a = plan("name = \"a\"\n[grid]\nseed = [1, 2]\n");
        let b = plan("name = \"b\"\n[grid]\nseed = [2, 3]\n");
        store.add_sweep(&a, false).unwrap();
        store.add_sweep(&b, false).unwrap();
        let mut old = result(0.5);
        old.provenance = Some(sweep_proto::Provenance {
            semantics: TRAINER_SEMANTICS - 1,
            ..Default::default()
        });
        let ids: Vec<TrialId> = [&a.trials[0], &a.trials[1], &b.trials[1]]
            .iter()
            .map(|t| t.id.clone())
            .collect();
        for id in &ids {
            record_lease(&mut store, id, 1, "w");
            record_result(&mut store, id, 1, "w", old.clone());
        }
        let submitted = store.add_sweep(&b, false).unwrap();
        assert_eq!((submitted.stale, submitted.kept_shared), (1, 1));
        let finished = |store: &Store, id: &TrialId| {
            matches!(stored_state(store, id), TrialState::Finished { .. })
        };
        assert!(finished(&store, &ids[0]) && finished(&store, &ids[1]));
        assert_eq!(
            stored_state(&store, &ids[2]),
            TrialState::Queued { attempt: 2 }
        );
        // A itself, submitted again, runs its stale results again: seed 2 for both sweeps.
        let again = store.add_sweep(&a, false).unwrap();
        assert_eq!((again.stale, again.kept_shared), (1, 1));
        assert_eq!(
            stored_state(&store, &ids[0]),
            TrialState::Queued { attempt: 2 }
        );
        assert!(finished(&store, &ids[1]));
        store.add_sweep(&b, true).unwrap();
        assert_eq!(
            stored_state(&store, &ids[1]),
            TrialState::Queued { attempt: 2 }
        );
    }

    #[test]
    fn resubmitting_keeps_finished_trials_unless_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let sweep = plan::parse("name = \"s\"\n", Path::new("g.toml")).unwrap();
        let id = sweep.trials[0].id.clone();
        store.add_sweep(&sweep, false).unwrap();
        record_lease(&mut store, &id, 1, "w");
        record_result(&mut store, &id, 1, "w", result(0.1));
        store.add_sweep(&sweep, false).unwrap();
        assert!(matches!(
            store.load_trials().unwrap()[0].state,
            TrialState::Finished { .. }
        ));
        store.add_sweep(&sweep, true).unwrap();
        assert_eq!(
            store.load_trials().unwrap()[0].state,
            TrialState::Queued { attempt: 2 }
        );
    }

    /// `rerun` queues a sweep's failed and cancelled trials again (a worker's `failed` result
    /// included, a diverged one not), with their next attempt, and makes the sweep active;
    /// A stopped result is reused only under the rule that stopped it: the same sweep again
    /// keeps it; with another grace period, or without early stopping, it trains again.
    #[test]
    fn stopped_trials_are_reused_only_under_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let text = |grace: &str| {
            format!(
                "name = \"e\"\n[defaults]\nepochs = 9\nvalidation_split = 0.1\n[grid]\nseed = [1]\n{grace}"
            )
        };
        let plan = |t: &str| plan::parse(t, Path::new("e.toml")).unwrap();
        let asha1 = plan(&text(
            "[early_stopping]\nmethod = \"asha\"\ngrace_epochs = 1\n",
        ));
        let asha3 = plan(&text(
            "[early_stopping]\nmethod = \"asha\"\ngrace_epochs = 3\n",
        ));
        let none = plan(&text(""));
        let id = asha1.trials[0].id.clone();
        let state = |store: &Store| stored_state(store, &id);
        for (again, kept) in [(&asha1, true), (&asha3, false), (&none, false)] {
            // Queued afresh (`--rerun`), then stopped under grace 1.
            store.add_sweep(&asha1, true).unwrap();
            let attempt = match state(&store) {
                TrialState::Queued { attempt } => attempt,
                other => panic!("{other:?}"),
            };
            let mut stopped = result(0.4);
            stopped.status = TrialStatus::Stopped;
            stopped.reason = Some(format!(
                "{}: ASHA rung at epoch 1: ...",
                asha1.early_stopping.unwrap().describe()
            ));
            stopped.epochs = vec![stopped.epochs.first().cloned().unwrap_or(EpochMetrics {
                epoch: 1,
                train_loss: 1.0,
                train_accuracy: 0.5,
                val_loss: Some(1.0),
                val_accuracy: Some(0.4),
                train_binary_accuracy: None,
                val_binary_accuracy: None,
                lr: 0.001,
                seconds: 1.0,
                images_per_sec: 1.0,
            })];
            record_lease(&mut store, &id, attempt, "w");
            record_result(&mut store, &id, attempt, "w", stopped);
            store.add_sweep(again, false).unwrap();
            let reused = matches!(state(&store), TrialState::Finished { .. });
            assert_eq!(reused, kept, "{:?}", again.early_stopping);
        }
    }

    /// `cancel_trial` stops one trial and never an ended one.
    #[test]
    fn rerun_queues_failed_and_cancelled_trials_and_cancel_trial_spares_ended_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let a = plan::parse(
            "name = \"a\"\n[grid]\nseed = [1, 2, 3, 4, 5]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        store.add_sweep(&a, false).unwrap();
        let ids: Vec<TrialId> = a.trials.iter().map(|t| t.id.clone()).collect();
        // 1 completed, 2 failed by its worker, 3 diverged, 4 cancelled, 5 queued.
        let mut failed = result(0.0);
        failed.status = TrialStatus::Failed;
        failed.reason = Some("out of memory".into());
        failed.test = None;
        let mut diverged = result(0.0);
        diverged.status = TrialStatus::Diverged;
        diverged.test = None;
        for (id, r) in ids.iter().zip([result(0.5), failed, diverged]) {
            record_lease(&mut store, id, 1, "w");
            record_result(&mut store, id, 1, "w", r);
        }
        assert_eq!(store.cancel_trial(&ids[3]).unwrap(), [ids[3].clone()]);
        assert!(
            store.cancel_trial(&ids[0]).unwrap().is_empty(),
            "finished: kept"
        );
        assert!(
            store.cancel_trial(&ids[3]).unwrap().is_empty(),
            "already cancelled"
        );
        store.cancel_sweep("a").unwrap();
        assert!(store.sweep("a").unwrap().unwrap().cancelled);
        let queued: HashSet<TrialId> = store.rerun_sweep("a").unwrap().into_iter().collect();
        assert_eq!(
            queued,
            [&ids[1], &ids[3], &ids[4]].into_iter().cloned().collect()
        );
        assert!(!store.sweep("a").unwrap().unwrap().cancelled);
        let trials = store.load_trials().unwrap();
        let state = |id: &str| trials.iter().find(|t| t.id == id).unwrap().state.clone();
        assert_eq!(state(&ids[1]), TrialState::Queued { attempt: 2 });
        assert_eq!(state(&ids[4]), TrialState::Queued { attempt: 2 });
        assert!(matches!(state(&ids[0]), TrialState::Finished { .. }));
        assert!(matches!(state(&ids[2]), TrialState::Finished { .. }));
    }

    /// Cancel races (issue 14): a cancel never changes a finished trial, keeps a trial another
    /// active sweep holds, is not undone by a lease written after it, and stops 3,000 trials
    /// in one transaction.
    #[test]
    fn cancel_is_one_transaction_that_spares_finished_and_shared_trials() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let a = plan::parse(
            "name = \"a\"\n[grid]\nseed = [1, 2, 3, 4]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let b = plan::parse("name = \"b\"\n[grid]\nseed = [4, 5]\n", Path::new("b.toml")).unwrap();
        store.add_sweep(&a, false).unwrap();
        store.add_sweep(&b, false).unwrap();
        let ids: Vec<TrialId> = a.trials.iter().map(|t| t.id.clone()).collect();
        // Seed 1 finished, seed 2 running, seed 3 queued, seed 4 queued and shared with b.
        record_lease(&mut store, &ids[0], 1, "w");
        record_result(&mut store, &ids[0], 1, "w", result(0.3));
        record_lease(&mut store, &ids[1], 1, "w");
        let cancelled = store.cancel_sweep("a").unwrap();
        assert_eq!(
            cancelled.iter().collect::<HashSet<_>>(),
            [&ids[1], &ids[2]].into_iter().collect()
        );
        let state = stored_state;
        assert!(matches!(
            state(&store, &ids[0]),
            TrialState::Finished { .. }
        ));
        assert_eq!(state(&store, &ids[3]), TrialState::Queued { attempt: 1 });
        // A lease the server granted before it saw the cancel does not resurrect the trial.
        record_lease(&mut store, &ids[2], 1, "w");
        assert_eq!(state(&store, &ids[2]), TrialState::Cancelled);
        // A result that arrives anyway is kept: a finished result is never lost.
        record_result(&mut store, &ids[1], 1, "w", result(0.4));
        assert!(matches!(
            state(&store, &ids[1]),
            TrialState::Finished { .. }
        ));
        // Cancelling b as well now stops the shared trial.
        assert_eq!(store.cancel_sweep("b").unwrap().len(), 2);
        assert_eq!(state(&store, &ids[3]), TrialState::Cancelled);

        let seeds: Vec<String> = (100..3100).map(|i| i.to_string()).collect();
        let text = format!("name = \"big\"\n[grid]\nseed = [{}]\n", seeds.join(", "));
        let big = plan::parse(&text, Path::new("big.toml")).unwrap();
        store.add_sweep(&big, false).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(store.cancel_sweep("big").unwrap().len(), 3000);
        eprintln!("cancelled 3,000 trials in {:?}", t0.elapsed());
        assert!(store
            .load_trials()
            .unwrap()
            .iter()
            .filter(|t| big.trials.iter().any(|b| b.id == t.id))
            .all(|t| t.state == TrialState::Cancelled));
    }

    /// A database with one finished trial, and its writer still open.
    fn finished_db(dir: &Path) -> (std::path::PathBuf, TrialId, Store) {
        let db = dir.join("s.db");
        let sweep = plan::parse("name = \"s\"\n", Path::new("g.toml")).unwrap();
        let id = sweep.trials[0].id.clone();
        let mut store = Store::open(&db).unwrap();
        store.add_sweep(&sweep, false).unwrap();
        record_lease(&mut store, &id, 1, "w");
        record_result(&mut store, &id, 1, "w", result(0.11147540983606559));
        (db, id, store)
    }

    #[test]
    fn after_a_checkpoint_the_database_file_alone_holds_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (db, id, writer) = finished_db(dir.path());
        // Copy only the .db (what users do to share results); the writer is still open, as a
        // coordinator's is when it exits.
        writer.checkpoint().unwrap();
        for leftover in ["-wal", "-shm"] {
            let f = format!("{}{leftover}", db.display());
            assert!(!std::path::Path::new(&f).exists(), "{f} is left after the checkpoint");
        }
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        let trials = Store::open(&copy).unwrap().load_trials().unwrap();
        let t = trials.iter().find(|t| t.id == id).unwrap();
        assert!(matches!(&t.state, TrialState::Finished { result, .. }
            if result.best_val_accuracy.map(f64::to_bits) == Some(0.11147540983606559f64.to_bits())));
    }

    #[test]
    fn a_missing_database_beside_its_wal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        std::fs::write(dir.path().join("s.db-wal"), b"journal").unwrap();
        let e = Store::open(&db).err().unwrap().to_string();
        assert!(e.contains("s.db-wal") && e.contains("refusing"), "{e}");
        assert!(!db.exists(), "nothing was created");
    }

    #[test]
    fn damaged_files_and_changed_results_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (db, id, writer) = finished_db(dir.path());
        drop(writer);
        // A stored accuracy edited in place: the checksum no longer matches.
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute(
                "UPDATE trials SET result = replace(result, '0.11147540983606559', '0.91147540983606559')",
                [],
            )
            .unwrap();
        }
        let e = Store::open(&db)
            .unwrap()
            .load_trials()
            .unwrap_err()
            .to_string();
        assert!(e.contains(id.as_str()) && e.contains("checksum"), "{e}");
        // Garbage over the pages: refused at open, naming the file.
        let bytes = std::fs::read(&db).unwrap();
        let mut bad = bytes.clone();
        for b in bad.iter_mut().skip(4096).take(4096) {
            *b = 0x5a;
        }
        std::fs::write(&db, &bad).unwrap();
        let e = Store::open(&db).err().unwrap().to_string();
        assert!(e.contains("s.db") && e.contains("damaged"), "{e}");
        std::fs::write(&db, b"not a database at all, just text").unwrap();
        let e = Store::open(&db).err().unwrap().to_string();
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn one_server_per_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let held = ServerLock::acquire(&db, "coordinator serve --listen 127.0.0.1:1").unwrap();
        let e = ServerLock::acquire(&db, "second").unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("127.0.0.1:1"),
            "{e}"
        );
        drop(held);
        ServerLock::acquire(&db, "second").unwrap();
    }

    #[test]
    fn an_old_database_is_migrated_and_its_results_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE trials (id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
                 attempt INTEGER NOT NULL, worker TEXT, reason TEXT, result TEXT);",
            )
            .unwrap();
            let json = serde_json::to_string(&result(0.5)).unwrap();
            conn.execute(
                "INSERT INTO trials VALUES ('t', ?1, 'finished', 3, 'w-1', NULL, ?2)",
                params![TrialSpec::default().to_toml(), json],
            )
            .unwrap();
        }
        let store = Store::open(&db).unwrap();
        let t = &store.load_trials().unwrap()[0];
        assert_eq!(t.lost, 0);
        assert!(matches!(t.state, TrialState::Finished { attempt: 3, .. }));
        assert_eq!(store.worker_ids().unwrap(), Vec::<String>::new());
    }
}
