//! Running trials' checkpoints on the coordinator's disk, beside the database.
//!
//! One file per trial, the latest: `TRIAL.ckpt`, with `TRIAL.json` holding its epoch, size and
//! SHA-256. A checkpoint arrives as chunks into `TRIAL.ATTEMPT.N.tmp` (N numbers the uploads:
//! two streams for one lease never share a file, and a failed one removes only its own), is
//! checked against the
//! size and checksum its sender announced, synced, and only then renamed over the previous one
//! (then the sidecar, the same way), so a crash never leaves half a file; a crash between the
//! two renames leaves a checkpoint that does not match its sidecar, which the next read
//! refuses (the trial then starts over: a lost checkpoint, never a wrong one). Reading checks the checksum again: a file damaged on disk is dropped and
//! the trial starts over instead of training from garbage. Checkpoints of ended trials are
//! removed ([`Checkpoints::retain`]).
//!
//! The index of what is stored lives in memory (filled from the sidecars at start), so a lease
//! learns whether its trial has a checkpoint without touching the disk. File work is blocking:
//! callers run it on a blocking thread.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use sweep_proto::ModuleHash;

pub use crate::plan::CheckpointPolicy as Policy;

/// Largest checkpoint accepted (a ResNet-110 with Adam's moments is about 20 MB).
pub use sweep_proto::limits::MAX_CHECKPOINT_BYTES;

/// What the sidecar says about a trial's stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub epoch: u32,
    /// The attempt that wrote it.
    pub attempt: u32,
    pub size: u64,
    pub sha256: String,
}

pub struct Checkpoints {
    dir: PathBuf,
    index: Mutex<HashMap<String, Meta>>,
    /// Numbers each upload's temporary file.
    uploads: AtomicU64,
    /// Held through a commit's check and renames: two commits of one trial never interleave
    /// (a file from one and the sidecar of the other would be a checkpoint lost).
    committing: Mutex<()>,
}

/// Trial ids are 16 hex digits; only such names become file names here.
pub fn valid_id(trial: &str) -> bool {
    !trial.is_empty() && trial.len() <= 64 && trial.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `bytes` can be a TorchScript module, as far as the coordinator can tell without
/// libtorch: a zip archive (what `torch.jit.save` writes) whose central directory names a
/// `data.pkl` and a `code/` folder. Random bytes, other zip files, a `torch.save` state dict
/// (no code) and empty files are refused, naming what is missing; the worker's load stays the
/// last word.
pub fn check_torchscript(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(format!(
            "not a TorchScript module: {} bytes that are not a zip archive (torch.jit.save writes one)",
            bytes.len()
        ));
    }
    // The central directory, with every entry's name, is at the end.
    let tail = &bytes[bytes.len().saturating_sub(4 << 20)..];
    let has = |name: &[u8]| tail.windows(name.len()).any(|w| w == name);
    if !has(b"PK\x05\x06") {
        return Err("not a TorchScript module: the zip archive has no end (cut short?)".into());
    }
    if !has(b"/data.pkl") || !has(b"/code/") {
        return Err(
            "not a TorchScript module: the zip archive has no data.pkl and code/ (torch.save writes weights; a module needs torch.jit.save)".into(),
        );
    }
    Ok(())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::plan::sha256_hex(bytes)
}

impl Checkpoints {
    /// Opens (creating) `dir`, reads the sidecars and removes unfinished uploads.
    pub fn open(dir: &Path) -> std::io::Result<Checkpoints> {
        std::fs::create_dir_all(dir)?;
        let mut index = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
            } else if let Some(trial) = name.strip_suffix(".json").filter(|t| valid_id(t)) {
                let meta = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
                if let Some(meta) = meta {
                    index.insert(trial.to_string(), meta);
                }
            }
        }
        Ok(Checkpoints {
            dir: dir.to_path_buf(),
            index: Mutex::new(index),
            uploads: AtomicU64::new(0),
            committing: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<String, Meta>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored checkpoint's description, from memory.
    pub fn latest(&self, trial: &str) -> Option<Meta> {
        self.index().get(trial).cloned()
    }

    /// Where an upload of `trial` by `attempt` is written before it is checked.
    /// A new name at every call, so concurrent uploads of one lease each write their own.
    pub fn upload_path(&self, trial: &str, attempt: u32) -> PathBuf {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{trial}.{attempt}.{n}.tmp"))
    }

    fn file(&self, trial: &str) -> PathBuf {
        self.dir.join(format!("{trial}.ckpt"))
    }

    fn sidecar(&self, trial: &str) -> PathBuf {
        self.dir.join(format!("{trial}.json"))
    }

    /// Makes a checked upload the trial's checkpoint, unless a later epoch is already stored.
    /// Blocking.
    pub fn commit(&self, trial: &str, upload: &Path, meta: Meta) -> std::io::Result<bool> {
        let _one_at_a_time = self.committing.lock().unwrap_or_else(|p| p.into_inner());
        if self.latest(trial).is_some_and(|m| m.epoch > meta.epoch) {
            let _ = std::fs::remove_file(upload);
            return Ok(false);
        }
        std::fs::File::open(upload)?.sync_all()?;
        std::fs::rename(upload, self.file(trial))?;
        let side = self.dir.join(format!("{trial}.json.tmp"));
        let mut f = std::fs::File::create(&side)?;
        f.write_all(&serde_json::to_vec(&meta).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&side, self.sidecar(trial))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.index().insert(trial.to_string(), meta);
        Ok(true)
    }

    /// The stored checkpoint's bytes, checked against its sidecar. A damaged one is removed
    /// and the error says so. Blocking.
    pub fn read(&self, trial: &str) -> Result<(Meta, Vec<u8>), String> {
        let meta = self
            .latest(trial)
            .ok_or_else(|| format!("no checkpoint of trial {trial}"))?;
        let bytes = std::fs::read(self.file(trial)).map_err(|e| {
            self.remove(trial);
            format!("checkpoint of trial {trial} cannot be read ({e}); dropped it")
        })?;
        if bytes.len() as u64 != meta.size || sha256_hex(&bytes) != meta.sha256 {
            self.remove(trial);
            return Err(format!(
                "checkpoint of trial {trial} after epoch {} failed its checksum ({} bytes, {} expected); dropped it",
                meta.epoch,
                bytes.len(),
                meta.size
            ));
        }
        Ok((meta, bytes))
    }

    /// Makes trial `from`'s checkpoint (checked) trial `to`'s too, as a commit of an upload
    /// (attempt 0: no worker's). Blocking.
    pub fn copy(&self, from: &str, to: &str) -> Result<Meta, String> {
        if !valid_id(to) {
            return Err(format!("{to:?} is not a trial id"));
        }
        let (meta, bytes) = self.read(from)?;
        let path = self.upload_path(to, 0);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = Meta { attempt: 0, ..meta };
        self.commit(to, &path, meta.clone())
            .map_err(|e| format!("checkpoint of {to}: {e}"))?;
        Ok(meta)
    }

    /// Forgets and deletes a trial's checkpoint. Blocking.
    pub fn remove(&self, trial: &str) {
        self.index().remove(trial);
        let _ = std::fs::remove_file(self.file(trial));
        let _ = std::fs::remove_file(self.sidecar(trial));
    }

    /// Where the TorchScript module `hash` is kept (content-addressed, never pruned: a module
    /// is small beside the results that name it).
    pub fn module_path(&self, hash: ModuleHash) -> PathBuf {
        self.dir.join("modules").join(format!("{hash}.pt"))
    }

    /// Copies the module file at `src` into the store, checking it still has `hash`.
    /// Blocking.
    pub fn store_module(&self, hash: ModuleHash, src: &Path) -> Result<(), String> {
        let dst = self.module_path(hash);
        if dst.is_file() {
            return Ok(());
        }
        let bytes = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
        check_torchscript(&bytes).map_err(|e| format!("{}: {e}", src.display()))?;
        if ModuleHash::of(&bytes) != hash {
            return Err(format!(
                "{} changed while the sweep was submitted; submit it again",
                src.display()
            ));
        }
        self.store_module_bytes(hash, &bytes)
    }

    /// Whether the module `hash` is stored.
    pub fn has_module(&self, hash: ModuleHash) -> bool {
        self.module_path(hash).is_file()
    }

    /// Stores a module's bytes (checked by the caller to have `hash`, and by
    /// [`check_torchscript`] to be a TorchScript archive). Blocking.
    pub fn store_module_bytes(&self, hash: ModuleHash, bytes: &[u8]) -> Result<(), String> {
        let dst = self.module_path(hash);
        if dst.is_file() {
            return Ok(());
        }
        let dir = self.dir.join("modules");
        // Two submissions of one module at once each write their own file; either rename
        // leaves a whole one.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{hash}.{}.{n}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::write(dst.with_extension("sha256"), sha256_hex(bytes))?;
            std::fs::rename(&tmp, &dst)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot store module {hash} in {}: {e}", dir.display())
        })
    }

    /// A stored module's size and SHA-256 (hex), from the sidecar written when it was
    /// stored (or, for a module stored without one, computed by reading it once). Blocking.
    pub fn module_digest(&self, hash: ModuleHash) -> Result<(u64, String), String> {
        let path = self.module_path(hash);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("module {hash}: {e}"))?
            .len();
        let sidecar = path.with_extension("sha256");
        if let Ok(sha) = std::fs::read_to_string(&sidecar) {
            if sha.len() == 64 {
                return Ok((size, sha));
            }
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("module {hash}: {e}"))?;
        if ModuleHash::of(&bytes) != hash {
            return Err(format!("module {hash} in {} is damaged", path.display()));
        }
        let sha = sha256_hex(&bytes);
        let _ = std::fs::write(&sidecar, &sha);
        Ok((bytes.len() as u64, sha))
    }

    /// Deletes the checkpoints of every trial `keep` says no to (ended trials); returns how
    /// many. Blocking.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        // The index is not held while `keep` runs: it may take other locks.
        let stored: Vec<String> = self.index().keys().cloned().collect();
        let gone: Vec<String> = stored.into_iter().filter(|t| !keep(t)).collect();
        for t in &gone {
            self.remove(t);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(c: &Checkpoints, trial: &str, attempt: u32, bytes: &[u8]) -> (PathBuf, Meta) {
        let path = c.upload_path(trial, attempt);
        std::fs::write(&path, bytes).unwrap();
        let meta = Meta {
            epoch: bytes[0] as u32,
            attempt,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        };
        (path, meta)
    }

    #[test]
    fn the_latest_checkpoint_survives_a_restart_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        let (p, m) = upload(&c, "ab12", 1, &[2, 9, 9]);
        assert!(c.commit("ab12", &p, m.clone()).unwrap());
        // An older epoch (a slow upload from a lost attempt) does not replace it.
        let (p, old) = upload(&c, "ab12", 1, &[1, 7]);
        assert!(!c.commit("ab12", &p, old).unwrap());
        assert!(!p.exists());
        // A crash mid-upload leaves a .tmp, removed on the next start.
        let half = c.upload_path("ab12", 2);
        std::fs::write(&half, b"half").unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert!(!half.exists());
        assert_eq!(c.latest("ab12"), Some(m.clone()));
        assert_eq!(c.read("ab12").unwrap(), (m, vec![2, 9, 9]));
        // A flipped byte on disk: refused, dropped, and the trial has no checkpoint any more.
        std::fs::write(dir.path().join("ab12.ckpt"), [2, 9, 8]).unwrap();
        let err = c.read("ab12").unwrap_err();
        assert!(err.contains("failed its checksum"), "{err}");
        assert_eq!(c.latest("ab12"), None);
        assert!(!dir.path().join("ab12.json").exists());
    }

    /// Two streams for one lease at once (issue 28): each writes its own file, the commits
    /// take turns, and the stored checkpoint is one of the two whole, matching its sidecar.
    /// With one shared temporary file, the bytes mixed and the next read was DATA_LOSS.
    #[test]
    fn concurrent_uploads_of_one_lease_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Checkpoints::open(dir.path()).unwrap());
        let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 64 * 1024]).collect();
        let paths: Vec<PathBuf> = bodies.iter().map(|_| c.upload_path("cd34", 1)).collect();
        assert_eq!(
            paths.iter().collect::<std::collections::HashSet<_>>().len(),
            4
        );
        // Interleaved writes, a chunk of each in turn, as concurrent streams arrive.
        let mut files: Vec<std::fs::File> = paths
            .iter()
            .map(|p| std::fs::File::create(p).unwrap())
            .collect();
        for k in 0..64 {
            for (f, b) in files.iter_mut().zip(&bodies) {
                f.write_all(&b[k * 1024..(k + 1) * 1024]).unwrap();
            }
        }
        drop(files);
        let threads: Vec<_> = paths
            .into_iter()
            .zip(&bodies)
            .map(|(p, b)| {
                let (c, meta) = (
                    c.clone(),
                    Meta {
                        epoch: 1,
                        attempt: 1,
                        size: b.len() as u64,
                        sha256: sha256_hex(b),
                    },
                );
                std::thread::spawn(move || c.commit("cd34", &p, meta).unwrap())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        let (meta, bytes) = c.read("cd34").unwrap();
        assert!(bodies.contains(&bytes) && meta.sha256 == sha256_hex(&bytes));
    }

    #[test]
    fn ended_trials_lose_their_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        for t in ["aa", "bb"] {
            let (p, m) = upload(&c, t, 1, &[1, 2]);
            c.commit(t, &p, m).unwrap();
        }
        assert_eq!(c.retain(|t| t == "bb"), 1);
        assert_eq!(
            (c.latest("aa").is_none(), c.latest("bb").is_some()),
            (true, true)
        );
        assert!(!valid_id("../etc") && !valid_id("") && valid_id("0123abcd"));
    }
}
