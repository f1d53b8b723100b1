//! Finding the dataset: `--data`, then `$CIFAR10_DATA`, then `./data`. A directory may be the
//! batch directory itself or its parent (what the official archives unpack to).

use super::{cifar100, imagefolder, DataError, DatasetKind, Format};
use std::path::{Path, PathBuf};

/// Environment variable naming the dataset directory.
pub const DATA_ENV: &str = "CIFAR10_DATA";

const BIN_DIR: &str = "cifar-10-batches-bin";
const PY_DIR: &str = "cifar-10-batches-py";

pub fn train_file(format: Format, n: u32) -> String {
    match format {
        Format::Binary => format!("data_batch_{n}.bin"),
        _ => format!("data_batch_{n}"),
    }
}

pub fn test_file(format: Format) -> &'static str {
    match format {
        Format::Binary => "test_batch.bin",
        _ => "test_batch",
    }
}

fn holds(dir: &Path, format: Format) -> bool {
    dir.join(train_file(format, 1)).is_file()
}

/// Resolves `root` to the directory holding the batch files and their format.
pub fn batch_dir(root: &Path) -> Result<(Format, PathBuf), DataError> {
    for (format, sub) in [(Format::Binary, BIN_DIR), (Format::Python, PY_DIR)] {
        for dir in [root.join(sub), root.to_path_buf()] {
            if holds(&dir, format) {
                return Ok((format, dir));
            }
        }
    }
    Err(DataError::NotFound(missing_message(root)))
}

/// Exactly which files to put where, for a directory that holds no dataset.
pub fn missing_message(root: &Path) -> String {
    let r = root.display();
    format!(
        "no CIFAR-10 dataset in {r}. Put either\n  \
         {r}/{BIN_DIR}/data_batch_1.bin ... data_batch_5.bin and test_batch.bin (from cifar-10-binary.tar.gz), or\n  \
         {r}/{PY_DIR}/data_batch_1 ... data_batch_5, test_batch and batches.meta (from cifar-10-python.tar.gz)\n\
         there, or download it with `worker data fetch --dest {r}`"
    )
}

/// Picks the dataset directory: the explicit one, else `$CIFAR10_DATA`, else `./data`.
/// Returns the first candidate that holds a dataset, or an error listing what was tried.
pub fn find_data_dir(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(dir) = explicit {
        batch_dir(dir)?;
        return Ok(dir.to_path_buf());
    }
    let mut tried = Vec::new();
    if let Some(env) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(env);
        if batch_dir(&dir).is_ok() {
            return Ok(dir);
        }
        tried.push(format!("${DATA_ENV}={}", dir.display()));
    }
    let default = PathBuf::from("data");
    if batch_dir(&default).is_ok() {
        return Ok(default);
    }
    tried.push("./data".into());
    Err(DataError::NotFound(format!(
        "CIFAR-10 not found (tried {}); pass --data DIR or set {DATA_ENV}=DIR.\n{}",
        tried.join(", "),
        missing_message(&default)
    )))
}

/// A `--data` value or a sweep's data hint: a directory, or `imagefolder:DIR`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataArg {
    pub dir: PathBuf,
    /// Written with the `imagefolder:` prefix.
    pub image_folder: bool,
}

impl DataArg {
    pub fn parse(s: &str) -> DataArg {
        match s.strip_prefix(sweep_proto::IMAGEFOLDER_PREFIX) {
            Some(dir) => DataArg {
                dir: PathBuf::from(dir),
                image_folder: true,
            },
            None => DataArg {
                dir: PathBuf::from(s),
                image_folder: false,
            },
        }
    }

    pub fn from_path(p: &Path) -> DataArg {
        DataArg::parse(&p.to_string_lossy())
    }
}

/// Picks the directory a trial on `kind` loads: the explicit one, else (for CIFAR)
/// `$CIFAR10_DATA`, else `./data`. An image folder must be named (`--data imagefolder:DIR`
/// or the sweep's `data`).
pub fn find_data_for(explicit: Option<&Path>, kind: DatasetKind) -> Result<PathBuf, DataError> {
    let explicit = explicit.map(DataArg::from_path);
    match kind {
        DatasetKind::Cifar10 => find_data_dir(explicit.as_ref().map(|a| a.dir.as_path())),
        DatasetKind::ImageFolder(fingerprint) => {
            let Some(arg) = explicit else {
                return Err(DataError::NotFound(
                    "the trial trains on an image folder, but none was named: pass --data imagefolder:DIR (or set the sweep's data)".into(),
                ));
            };
            if !arg.dir.exists() {
                return Err(DataError::NotFound(format!(
                    "image folder {} is not on this machine: workers elsewhere need it at that path, or --data imagefolder:DIR",
                    arg.dir.display()
                )));
            }
            let found = imagefolder::Folder::scan(&arg.dir)?.fingerprint();
            if found != fingerprint {
                return Err(DataError::Folder {
                    path: arg.dir,
                    reason: format!(
                        "is not the image folder the trial was planned on (file-list fingerprint {found:016x}, the trial's {fingerprint:016x}): its files changed since, or it is another folder"
                    ),
                });
            }
            Ok(arg.dir)
        }
        DatasetKind::Cifar100 | DatasetKind::Cifar100Coarse => {
            let mut candidates: Vec<PathBuf> = explicit.map(|a| a.dir).into_iter().collect();
            if candidates.is_empty() {
                if let Some(env) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
                    candidates.push(PathBuf::from(env));
                }
                candidates.push(PathBuf::from("data"));
            }
            let first = candidates[0].clone();
            candidates
                .into_iter()
                .find(|d| cifar100::locate(d).is_some())
                .ok_or_else(|| DataError::NotFound(cifar100::missing_message(&first)))
        }
    }
}
