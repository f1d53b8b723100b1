//! CIFAR-10 on disk: finding it, reading both official layouts, summarising it, fetching it.
//!
//! Images are kept exactly as the files store them: one flat 3072-byte row per image
//! (1024 R, 1024 G, 1024 B, each 32x32 row-major). Turning rows into tensors (layout,
//! grayscale, normalisation) is the worker's job, on the training device.
//!
//! This crate does not link libtorch, so the readers can be fuzzed on their own (`fuzz/`).

pub mod binary;
pub mod fetch;
mod locate;
pub mod pickle;
pub mod python;

use serde::Serialize;
use std::path::{Path, PathBuf};

pub use locate::{find_data_dir, missing_message, DATA_ENV};

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
    #[error("{} is not a valid CIFAR-10 file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
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

/// Which official layout a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `cifar-10-batches-bin/`: records of 1 label byte + 3072 pixel bytes.
    Binary,
    /// `cifar-10-batches-py/`: Python 2 cPickle dicts, as the original study loaded them.
    Python,
}

/// Flat images and their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `len() == labels.len() * IMAGE_BYTES`.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    fn append(&mut self, other: Batch) {
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
    }

    /// Checks sizes and label range; `path` names the file the batch came from.
    pub fn check(&self, path: &Path) -> Result<(), DataError> {
        if self.is_empty() {
            return Err(DataError::corrupt(path, "it holds no images"));
        }
        if self.images.len() != self.labels.len() * IMAGE_BYTES {
            return Err(DataError::corrupt(
                path,
                format!(
                    "{} labels but {} pixel bytes (expected {} per image)",
                    self.labels.len(),
                    self.images.len(),
                    IMAGE_BYTES
                ),
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= NUM_CLASSES)
        {
            return Err(DataError::corrupt(
                path,
                format!("image {i} has label {l}, expected 0 to 9"),
            ));
        }
        Ok(())
    }
}

/// A loaded dataset: the first `train_batches` training files merged, and the test file.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub format: Format,
    /// The directory holding the batch files.
    pub dir: PathBuf,
    pub classes: Vec<String>,
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
            Format::Python => &python::read_batch,
        };
        let mut train = Batch::default();
        for n in 1..=train_batches.clamp(1, TRAIN_BATCHES) {
            let path = dir.join(locate::train_file(format, n));
            let batch = reader(&path)?;
            batch.check(&path)?;
            train.append(batch);
        }
        let test_path = dir.join(locate::test_file(format));
        let test = reader(&test_path)?;
        test.check(&test_path)?;
        let classes = match format {
            Format::Binary => binary::read_classes(&dir)?,
            Format::Python => python::read_classes(&dir)?,
        };
        Ok(Dataset {
            format,
            dir,
            classes,
            train,
            test,
        })
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
            train: self.train.len(),
            test: self.test.len(),
            classes: self.classes.clone(),
            train_class_counts: class_counts(&self.train.labels),
            test_class_counts: class_counts(&self.test.labels),
            pixel_mean_rgb: channel_means(&self.train.images),
        }
    }
}

/// What `worker data check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format: Format,
    pub dir: PathBuf,
    pub train: usize,
    pub test: usize,
    pub classes: Vec<String>,
    pub train_class_counts: Vec<u64>,
    pub test_class_counts: Vec<u64>,
    /// Mean of all training pixels per channel, on the 0..255 scale.
    pub pixel_mean_rgb: [f64; 3],
}

fn class_counts(labels: &[u8]) -> Vec<u64> {
    let mut counts = vec![0u64; NUM_CLASSES];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

fn channel_means(images: &[u8]) -> [f64; 3] {
    let mut sums = [0u64; 3];
    for row in images.chunks_exact(IMAGE_BYTES) {
        for (c, plane) in row.chunks_exact(PIXELS).enumerate() {
            sums[c] += plane.iter().map(|&p| p as u64).sum::<u64>();
        }
    }
    let n = (images.len() / IMAGE_BYTES * PIXELS).max(1) as f64;
    sums.map(|s| s as f64 / n)
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
        assert_eq!(s.train_class_counts, class_counts(&data.all_train_labels()));
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
