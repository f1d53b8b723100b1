//! Datasets on disk: CIFAR-10 and CIFAR-100 in both official layouts, and image folders
//! (`train/<class>/*`, `test/<class>/*`, decoded in Rust and cached); finding, reading,
//! summarising, fetching (CIFAR-10).
//!
//! Images are kept as planes, one flat row per image: C planes of H x W bytes, row-major (for
//! CIFAR 1024 R, 1024 G, 1024 B, each 32x32, exactly as the files store them). Turning rows
//! into tensors (layout, grayscale, normalisation) is the worker's job, on the training device.
//!
//! This crate does not link libtorch, so the readers can be fuzzed on their own (`fuzz/`).
//!
//! - [`binary`]: the binary layout's batch files (`data_batch_N.bin`).
//! - [`pickle`], [`python`]: a bounded pickle interpreter and the Python layout's batches.
//! - [`cifar100`]: CIFAR-100 in both layouts, fine or coarse labels.
//! - [`imagefolder`]: folders of JPEG/PNG images, their fingerprint and decode cache.
//! - [`fetch`]: downloading and unpacking the official CIFAR-10 archive.
//! - `locate`: where a dataset directory is, from a flag, the environment or the defaults.
//! - [`testdata`] (feature `testdata`): small synthetic datasets for tests.

pub mod binary;
pub mod cifar100;
pub mod fetch;
pub mod imagefolder;
mod locate;
pub mod pickle;
pub mod python;

use serde::Serialize;
use std::path::{Path, PathBuf};

pub use locate::{find_data_dir, find_data_for, missing_message, DataArg, DATA_ENV};
pub use sweep_proto::DatasetKind;

pub const IMAGE_BYTES: usize = 3072;
pub const PIXELS: usize = 1024;
pub const NUM_CLASSES: usize = 10;
pub const TRAIN_BATCHES: u32 = 5;

/// The class names of the official release, used when a dataset has no metadata file.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = sweep_proto::CIFAR10_CLASSES;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    NotFound(String),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid dataset file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Folder { path: PathBuf, reason: String },
    #[error("download failed: {0}")]
    Fetch(String),
}

impl DataError {
    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// This user's cache directory for the sweep tools: `$XDG_CACHE_HOME/sweep-worker`, else
/// `~/.cache/sweep-worker`, else (no home) the temp directory's `sweep-worker-<user>`.
pub fn user_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match base {
        Some(b) => b.join("sweep-worker"),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            std::env::temp_dir().join(format!("sweep-worker-{user}"))
        }
    }
}

/// Which layout a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// `cifar-10-batches-bin/`: records of 1 label byte + 3072 pixel bytes.
    #[serde(rename = "binary")]
    Binary,
    /// `cifar-10-batches-py/`: Python 2 cPickle dicts, as the original study loaded them.
    #[serde(rename = "python")]
    Python,
    /// `cifar-100-binary/`: records of a coarse and a fine label byte + 3072 pixel bytes.
    #[serde(rename = "cifar100-binary")]
    Cifar100Binary,
    /// `cifar-100-python/`: pickled dicts with `fine_labels` and `coarse_labels`.
    #[serde(rename = "cifar100-python")]
    Cifar100Python,
    /// `train/<class>/*` and `test/<class>/*` PNG and JPEG files.
    #[serde(rename = "imagefolder")]
    ImageFolder,
}

/// Channels, height and width of every image of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    /// CIFAR's 3 x 32 x 32.
    pub const CIFAR: Shape = Shape {
        channels: 3,
        height: 32,
        width: 32,
    };

    pub fn square(channels: usize, side: usize) -> Shape {
        Shape {
            channels,
            height: side,
            width: side,
        }
    }

    /// Bytes per image.
    pub fn bytes(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
}

/// Flat images and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `len() == labels.len() * image_bytes`.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    /// Bytes per image.
    pub image_bytes: usize,
}

impl Default for Batch {
    /// An empty batch of CIFAR-sized images.
    fn default() -> Self {
        Batch::new(IMAGE_BYTES)
    }
}

impl Batch {
    pub fn new(image_bytes: usize) -> Batch {
        Batch {
            images: Vec::new(),
            labels: Vec::new(),
            image_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.image_bytes..(i + 1) * self.image_bytes]
    }

    fn append(&mut self, other: Batch) {
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
    }

    /// Checks sizes and that labels are below `classes`; `path` names the batch's file.
    pub fn check(&self, path: &Path, classes: usize) -> Result<(), DataError> {
        if self.is_empty() {
            return Err(DataError::corrupt(path, "it holds no images"));
        }
        if self.images.len() != self.labels.len() * self.image_bytes {
            return Err(DataError::corrupt(
                path,
                format!(
                    "{} labels but {} pixel bytes (expected {} per image)",
                    self.labels.len(),
                    self.images.len(),
                    self.image_bytes
                ),
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(DataError::corrupt(
                path,
                format!("image {i} has label {l}, expected 0 to {}", classes - 1),
            ));
        }
        Ok(())
    }
}

/// A loaded dataset: the training images (for CIFAR-10 the first `train_batches` files
/// merged) and the test images.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub format: Format,
    /// The directory holding the batch files (or the image folder).
    pub dir: PathBuf,
    pub classes: Vec<String>,
    pub shape: Shape,
    pub train: Batch,
    pub test: Batch,
}

impl Dataset {
    /// Loads training batches `1..=train_batches` and the test batch from `root`, which may be
    /// the batch directory itself or a directory containing `cifar-10-batches-{bin,py}`.
    pub fn load(root: &Path, train_batches: u32) -> Result<Dataset, DataError> {
        let (format, dir) = locate::batch_dir(root)?;
        let reader: &dyn Fn(&Path) -> Result<Batch, DataError> = match format {
            Format::Binary => &binary::read_batch,
            _ => &python::read_batch,
        };
        let mut train = Batch::default();
        for n in 1..=train_batches.clamp(1, TRAIN_BATCHES) {
            let path = dir.join(locate::train_file(format, n));
            let batch = reader(&path)?;
            batch.check(&path, NUM_CLASSES)?;
            train.append(batch);
        }
        let test_path = dir.join(locate::test_file(format));
        let test = reader(&test_path)?;
        test.check(&test_path, NUM_CLASSES)?;
        let classes = match format {
            Format::Binary => binary::read_classes(&dir)?,
            _ => python::read_classes(&dir)?,
        };
        Ok(Dataset {
            format,
            dir,
            classes,
            shape: Shape::CIFAR,
            train,
            test,
        })
    }

    /// Loads the dataset a trial names from `root`: CIFAR-10 (the first `train_batches`
    /// files), CIFAR-100 (fine or coarse labels) or an image folder, whose file list must
    /// still have the fingerprint the trial was planned with; its images are resized to
    /// `image_size` squares (decoded once, then read from the cache beside the folder).
    pub fn open(
        root: &Path,
        kind: DatasetKind,
        image_size: u32,
        train_batches: u32,
    ) -> Result<Dataset, DataError> {
        match kind {
            DatasetKind::Cifar10 => Dataset::load(root, train_batches),
            DatasetKind::Cifar100 => cifar100::load(root, false),
            DatasetKind::Cifar100Coarse => cifar100::load(root, true),
            DatasetKind::ImageFolder(fingerprint) => {
                let folder = imagefolder::Folder::scan(root)?;
                if folder.fingerprint() != fingerprint {
                    return Err(DataError::Folder {
                        path: root.to_path_buf(),
                        reason: format!(
                            "its files have changed since the trial was planned (file-list fingerprint {:016x}, the trial's {fingerprint:016x}); plan the sweep again",
                            folder.fingerprint()
                        ),
                    });
                }
                folder.load(image_size as usize, &imagefolder::Cache::from_env())
            }
        }
    }

    /// What a directory holds, for `worker data check`: an image folder (`train/` and
    /// `test/` with class folders), CIFAR-100, or else CIFAR-10.
    pub fn detect(root: &Path) -> DatasetKind {
        if imagefolder::looks_like(root) {
            imagefolder::Folder::scan(root)
                .map(|f| DatasetKind::ImageFolder(f.fingerprint()))
                .unwrap_or(DatasetKind::ImageFolder(0))
        } else if cifar100::locate(root).is_some() {
            DatasetKind::Cifar100
        } else {
            DatasetKind::Cifar10
        }
    }

    /// SHA-256 (hex) over what a trial sees: class names, then the training and the test
    /// images and labels, as decoded (so the binary and Python layouts of the same data agree).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for c in &self.classes {
            h.update((c.len() as u64).to_le_bytes());
            h.update(c.as_bytes());
        }
        for b in [&self.train, &self.test] {
            h.update((b.labels.len() as u64).to_le_bytes());
            h.update(&b.labels);
            h.update(&b.images);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `worker data check` summary.
    pub fn summary(&self) -> Summary {
        Summary {
            format: self.format,
            dir: self.dir.clone(),
            shape: self.shape,
            train: self.train.len(),
            test: self.test.len(),
            classes: self.classes.clone(),
            train_class_counts: class_counts(&self.train.labels, self.classes.len()),
            test_class_counts: class_counts(&self.test.labels, self.classes.len()),
            pixel_mean_rgb: channel_means(&self.train.images, self.shape),
        }
    }
}

/// What `worker data check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format: Format,
    pub dir: PathBuf,
    pub shape: Shape,
    pub train: usize,
    pub test: usize,
    pub classes: Vec<String>,
    pub train_class_counts: Vec<u64>,
    pub test_class_counts: Vec<u64>,
    /// Mean of all training pixels per channel, on the 0..255 scale.
    pub pixel_mean_rgb: Vec<f64>,
}

fn class_counts(labels: &[u8], classes: usize) -> Vec<u64> {
    let mut counts = vec![0u64; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

fn channel_means(images: &[u8], shape: Shape) -> Vec<f64> {
    let mut sums = vec![0u64; shape.channels];
    for row in images.chunks_exact(shape.bytes()) {
        for (c, plane) in row.chunks_exact(shape.pixels()).enumerate() {
            sums[c] += plane.iter().map(|&p| p as u64).sum::<u64>();
        }
    }
    let n = (images.len() / shape.bytes() * shape.pixels()).max(1) as f64;
    sums.into_iter().map(|s| s as f64 / n).collect()
}

#[cfg(any(test, feature = "testdata"))]
pub mod testdata;

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn binary_and_python_layouts_load_the_same_images() {
        let data = synthetic(40, 12);
        let bin = tempfile::tempdir().unwrap();
        let py = tempfile::tempdir().unwrap();
        write_binary(bin.path(), &data);
        write_python(py.path(), &data);
        let a = Dataset::load(bin.path(), 5).unwrap();
        let b = Dataset::load(py.path(), 5).unwrap();
        assert_eq!(a.format, Format::Binary);
        assert_eq!(b.format, Format::Python);
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        assert_eq!(a.classes, CLASS_NAMES.map(String::from).to_vec());
        assert_eq!(b.classes, a.classes);
        assert_eq!(a.train.len(), 5 * 40);
        assert_eq!(a.test.len(), 12);
    }

    #[test]
    fn train_batches_selects_files_in_order() {
        let data = synthetic(10, 4);
        let dir = tempfile::tempdir().unwrap();
        write_binary(dir.path(), &data);
        let two = Dataset::load(dir.path(), 2).unwrap();
        assert_eq!(two.train.len(), 20);
        assert_eq!(two.train.image(10), data.train[1].image(0));
    }

    #[test]
    fn summary_counts_and_means() {
        let data = synthetic(10, 4);
        let dir = tempfile::tempdir().unwrap();
        write_binary(dir.path(), &data);
        let s = Dataset::load(dir.path(), 5).unwrap().summary();
        assert_eq!((s.train, s.test), (50, 4));
        assert_eq!(s.train_class_counts.iter().sum::<u64>(), 50);
        assert_eq!(
            s.train_class_counts,
            class_counts(&data.all_train_labels(), 10)
        );
        // synthetic() fills R, G and B planes with distinct constant offsets.
        let expect = expected_means(&data);
        for c in 0..3 {
            assert!(
                (s.pixel_mean_rgb[c] - expect[c]).abs() < 1e-9,
                "{:?} vs {:?}",
                s.pixel_mean_rgb,
                expect
            );
        }
    }

    #[test]
    fn missing_directory_says_which_files_go_where() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::load(dir.path(), 5).unwrap_err().to_string();
        assert!(
            err.contains("cifar-10-batches-bin/data_batch_1.bin"),
            "{err}"
        );
        assert!(err.contains("test_batch.bin"), "{err}");
        assert!(err.contains("worker data fetch"), "{err}");
    }

    #[test]
    fn missing_batch_file_is_named() {
        let data = synthetic(10, 4);
        let dir = tempfile::tempdir().unwrap();
        write_binary(dir.path(), &data);
        std::fs::remove_file(dir.path().join("cifar-10-batches-bin/data_batch_3.bin")).unwrap();
        let err = Dataset::load(dir.path(), 5).unwrap_err().to_string();
        assert!(err.contains("data_batch_3.bin"), "{err}");
        // Only the first two are needed for train_batches = 2.
        assert!(Dataset::load(dir.path(), 2).is_ok());
    }

    #[test]
    fn truncated_and_corrupt_files_are_named() {
        let data = synthetic(10, 4);
        let bin = tempfile::tempdir().unwrap();
        write_binary(bin.path(), &data);
        let f = bin.path().join("cifar-10-batches-bin/data_batch_1.bin");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
        let err = Dataset::load(bin.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("3073"),
            "{err}"
        );

        let mut bad_label = bytes.clone();
        bad_label[3073] = 42;
        std::fs::write(&f, &bad_label).unwrap();
        let err = Dataset::load(bin.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("label 42"),
            "{err}"
        );

        let py = tempfile::tempdir().unwrap();
        write_python(py.path(), &data);
        let f = py.path().join("cifar-10-batches-py/data_batch_1");
        let bytes = std::fs::read(&f).unwrap();
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&f, &bytes[..cut]).unwrap();
            let err = Dataset::load(py.path(), 1).unwrap_err().to_string();
            assert!(err.contains("data_batch_1"), "cut at {cut}: {err}");
        }
        std::fs::write(&f, b"not a pickle at all").unwrap();
        let err = Dataset::load(py.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1") && err.contains("opcode"),
            "{err}"
        );
    }
}
