//! SQLite persistence (WAL, synchronous=FULL): sweeps, trials, attempts, per-epoch metrics and
//! results. Every state change the core makes is written here before the RPC that caused it
//! is answered, so killing the coordinator at any moment loses no reported result.

use crate::core::{Counts, Requeued, TrialState};
use crate::sweep::{Direction, Metric, Sweep};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use sweep_proto::{EpochMetrics, TrialResult, TrialSpec};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot start the database writer: {0}")]
    Thread(String),
    #[error("database {path}: corrupt row for trial {trial}: {reason}")]
    Corrupt {
        path: String,
        trial: String,
        reason: String,
    },
}

pub struct Store {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, file TEXT NOT NULL, data TEXT, rank_by TEXT NOT NULL,
    direction TEXT NOT NULL, axes TEXT NOT NULL, cancelled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
    worker TEXT, reason TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep TEXT NOT NULL, trial TEXT NOT NULL, position INTEGER NOT NULL, label TEXT, reported REAL,
    PRIMARY KEY (sweep, trial));
CREATE TABLE IF NOT EXISTS attempts (
    trial TEXT NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, outcome TEXT,
    PRIMARY KEY (trial, attempt));
CREATE TABLE IF NOT EXISTS epochs (
    trial TEXT NOT NULL, attempt INTEGER NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial, attempt, epoch));
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
    /// (trial id, label, reported)
    pub trials: Vec<(String, Option<String>, Option<f64>)>,
}

/// (id, state, attempt, worker) of a trial row, state as stored ("running" included).
pub type RawTrial = (String, String, u32, Option<String>);

/// id, spec, state, attempt, worker, reason, result: the columns of `trials`.
type TrialRow = (
    String,
    String,
    String,
    u32,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One change the scheduler made, to be made durable. The service collects the changes of many
/// requests and writes them in one transaction (group commit): one fsync for all of them.
#[derive(Debug, Clone)]
pub enum Write {
    Lease {
        trial: String,
        attempt: u32,
        worker: String,
    },
    Epoch {
        trial: String,
        attempt: u32,
        metrics: EpochMetrics,
    },
    Result {
        trial: String,
        attempt: u32,
        worker: String,
        result: Box<TrialResult>,
    },
    Requeue(Requeued),
}

/// One trial as stored.
#[derive(Debug, Clone)]
pub struct StoredTrial {
    pub id: String,
    pub spec: TrialSpec,
    pub state: TrialState,
    /// The row says `running` (`state` is then the re-queued attempt a restart starts with).
    pub running: bool,
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
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(Store { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a sweep and its trials; new trials are queued. With `rerun`, finished trials of
    /// this sweep are queued again with their next attempt number.
    pub fn add_sweep(&mut self, sweep: &Sweep, rerun: bool) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let r: Result<(), rusqlite::Error> = (|| {
            tx.execute(
                "INSERT INTO sweeps (name, file, data, rank_by, direction, axes, cancelled) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
                 ON CONFLICT(name) DO UPDATE SET file = ?2, data = ?3, rank_by = ?4, direction = ?5, axes = ?6, cancelled = 0",
                params![
                    sweep.name,
                    sweep.file.display().to_string(),
                    sweep.data.as_ref().map(|d| d.display().to_string()),
                    enum_str(&sweep.rank_by),
                    enum_str(&sweep.direction),
                    serde_json::to_string(&sweep.axes).unwrap_or_default(),
                ],
            )?;
            tx.execute(
                "DELETE FROM sweep_trials WHERE sweep = ?1",
                params![sweep.name],
            )?;
            for (pos, t) in sweep.trials.iter().enumerate() {
                tx.execute(
                    "INSERT INTO sweep_trials (sweep, trial, position, label, reported) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![sweep.name, t.id, pos as i64, t.label, t.reported],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO trials (id, spec, state, attempt) VALUES (?1, ?2, 'queued', 1)",
                    params![t.id, t.spec.to_toml()],
                )?;
                // Cancelled trials come back when their sweep is submitted again.
                let requeue = if rerun {
                    "state != 'running'"
                } else {
                    "state = 'cancelled'"
                };
                tx.execute(
                    &format!("UPDATE trials SET state = 'queued', attempt = attempt + 1, reason = NULL, result = NULL WHERE id = ?1 AND {requeue}"),
                    params![t.id],
                )?;
            }
            Ok(())
        })();
        r.map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        tx.commit().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })
    }

    pub fn sweep(&self, name: &str) -> Result<Option<StoredSweep>, StoreError> {
        let row = self
            .conn
            .query_row("SELECT name, file, data, rank_by, direction, axes, cancelled FROM sweeps WHERE name = ?1", params![name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((name, file, data, rank_by, direction, axes, cancelled)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT trial, label, reported FROM sweep_trials WHERE sweep = ?1 ORDER BY position")
            .map_err(|e| self.err(e))?;
        let trials = stmt
            .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
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
            trials,
        }))
    }

    pub fn sweep_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sweeps ORDER BY name")
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
            match state.as_str() {
                "queued" => c.queued += n,
                "running" => c.running += n,
                "finished" => c.finished += n,
                "failed" => c.failed += n,
                _ => c.cancelled += n,
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

    pub fn set_sweep_cancelled(&self, name: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sweeps SET cancelled = 1 WHERE name = ?1",
                params![name],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every trial, for restoring the core: running trials come back queued with their next
    /// attempt, since their workers' leases died with the previous coordinator.
    pub fn load_trials(&self) -> Result<Vec<StoredTrial>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, spec, state, attempt, worker, reason, result FROM trials")
            .map_err(|e| self.err(e))?;
        let rows: Vec<TrialRow> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (id, spec, state, attempt, worker, reason, result) in rows {
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.path.clone(),
                trial: id.clone(),
                reason,
            };
            let spec = TrialSpec::from_toml(&spec).map_err(|e| corrupt(e.to_string()))?;
            let running = state == "running";
            let state = match state.as_str() {
                "queued" => TrialState::Queued { attempt },
                "running" => TrialState::Queued {
                    attempt: attempt + 1,
                },
                "finished" => {
                    let result: TrialResult = serde_json::from_str(result.as_deref().unwrap_or(""))
                        .map_err(|e| corrupt(format!("result: {e}")))?;
                    TrialState::Finished {
                        attempt,
                        worker: worker.unwrap_or_default(),
                        result: Box::new(result),
                    }
                }
                "failed" => TrialState::Failed {
                    attempts: attempt,
                    reason: reason.unwrap_or_default(),
                },
                "cancelled" => TrialState::Cancelled,
                other => return Err(corrupt(format!("unknown state {other}"))),
            };
            out.push(StoredTrial {
                id,
                spec,
                state,
                running,
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
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
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

    pub fn record_cancelled(&self, trials: &[String]) -> Result<(), StoreError> {
        for t in trials {
            self.conn
                .execute(
                    "UPDATE trials SET state = 'cancelled' WHERE id = ?1",
                    params![t],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
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
                "UPDATE trials SET state = 'running', attempt = ?2, worker = ?3 WHERE id = ?1",
            )?
            .execute(params![trial, attempt, worker])?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO attempts (trial, attempt, worker, outcome) VALUES (?1, ?2, ?3, NULL)",
            )?
            .execute(params![trial, attempt, worker])?;
        }
        Write::Epoch {
            trial,
            attempt,
            metrics,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO epochs (trial, attempt, epoch, metrics) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![trial, attempt, metrics.epoch, serde_json::to_string(metrics).unwrap_or_default()])?;
        }
        Write::Result {
            trial,
            attempt,
            worker,
            result,
        } => {
            let json = serde_json::to_string(result).unwrap_or_default();
            conn.prepare_cached(
                "UPDATE trials SET state = 'finished', attempt = ?2, worker = ?3, result = ?4, reason = ?5 WHERE id = ?1",
            )?
            .execute(params![trial, attempt, worker, json, result.reason])?;
            conn.prepare_cached(
                "UPDATE attempts SET outcome = ?3 WHERE trial = ?1 AND attempt = ?2",
            )?
            .execute(params![trial, attempt, enum_str(&result.status)])?;
        }
        Write::Requeue(Requeued::Retry {
            trial,
            next_attempt,
        }) => {
            conn.prepare_cached("UPDATE trials SET state = 'queued', attempt = ?2 WHERE id = ?1")?
                .execute(params![trial, next_attempt])?;
        }
        Write::Requeue(Requeued::GaveUp { trial, reason }) => {
            conn.prepare_cached("UPDATE trials SET state = 'failed', reason = ?2 WHERE id = ?1")?
                .execute(params![trial, reason])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep;
    use sweep_proto::TrialStatus;

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
        TrialResult {
            status: TrialStatus::Completed,
            reason: None,
            epochs: vec![],
            test: None,
            best_val_accuracy: Some(acc),
            train_images: 10,
            val_images: 0,
            parameters: 5,
            device: "cpu".into(),
            seconds: 2.0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn survives_reopen_and_requeues_running_trials() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let sweep = sweep::parse(
            "name = \"s\"\n[grid]\nlr = [0.1, 0.01, 0.001]\n",
            Path::new("g.toml"),
        )
        .unwrap();
        let ids: Vec<String> = sweep.trials.iter().map(|t| t.id.clone()).collect();
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
            s.trials.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
            ids
        );
        assert_eq!(s.axes, vec!["lr"]);
    }

    #[test]
    fn resubmitting_keeps_finished_trials_unless_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let sweep = sweep::parse("name = \"s\"\n", Path::new("g.toml")).unwrap();
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
}
