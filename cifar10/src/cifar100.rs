//! CIFAR-100 in both official layouts: 50,000 training and 10,000 test images of 32x32x3,
//! each with a fine label (100 classes) and a coarse one (20 superclasses).
//!
//! - `cifar-100-binary/` (`cifar-100-binary.tar.gz`): `train.bin` and `test.bin`, records of
//!   the coarse label byte, the fine label byte and 3072 pixel bytes;
//!   `coarse_label_names.txt` and `fine_label_names.txt`, one name per line.
//! - `cifar-100-python/` (`cifar-100-python.tar.gz`): pickled dicts `train` and `test` with
//!   `data`, `fine_labels` and `coarse_labels`; `meta` with `fine_label_names` and
//!   `coarse_label_names`.

use super::{binary, python, Batch, DataError, Dataset, Format, Shape};
use std::path::{Path, PathBuf};

const BIN_DIR: &str = "cifar-100-binary";
const PY_DIR: &str = "cifar-100-python";
pub const FINE: usize = 100;
pub const COARSE: usize = 20;

/// The directory holding CIFAR-100 under `root` (or `root` itself), and its layout.
pub fn locate(root: &Path) -> Option<(Format, PathBuf)> {
    for (format, sub, file) in [
        (Format::Cifar100Binary, BIN_DIR, "train.bin"),
        (Format::Cifar100Python, PY_DIR, "train"),
    ] {
        for dir in [root.join(sub), root.to_path_buf()] {
            if dir.join(file).is_file()
                && (format == Format::Cifar100Binary || dir.join("meta").is_file())
            {
                return Some((format, dir));
            }
        }
    }
    None
}

pub fn missing_message(root: &Path) -> String {
    let r = root.display();
    format!(
        "no CIFAR-100 dataset in {r}. Put either\n  \
         {r}/{BIN_DIR}/train.bin, test.bin, fine_label_names.txt and coarse_label_names.txt (from cifar-100-binary.tar.gz), or\n  \
         {r}/{PY_DIR}/train, test and meta (from cifar-100-python.tar.gz)\n\
         there"
    )
}

/// Loads CIFAR-100 from `root` with its fine labels, or its coarse ones.
pub fn load(root: &Path, coarse: bool) -> Result<Dataset, DataError> {
    let (format, dir) = locate(root).ok_or_else(|| DataError::NotFound(missing_message(root)))?;
    let (classes, which) = if coarse {
        (COARSE, "coarse")
    } else {
        (FINE, "fine")
    };
    // The two layouts differ in file names and in how a file's bytes become a batch.
    type Parse<'a> = Box<dyn Fn(&[u8], &Path) -> Result<Batch, DataError> + 'a>;
    let (train_file, test_file, parse, names): (_, _, Parse, _) = match format {
        Format::Cifar100Binary => (
            "train.bin",
            "test.bin",
            Box::new(|bytes, path| {
                binary::parse_records(bytes, path, 2, if coarse { 0 } else { 1 })
            }),
            binary::read_names(&dir.join(format!("{which}_label_names.txt")), classes)?,
        ),
        _ => {
            let key = format!("{which}_labels");
            (
                "train",
                "test",
                Box::new(move |bytes, path| python::parse_labelled(bytes, path, &key, classes)),
                python::read_names(&dir.join("meta"), &format!("{which}_label_names"), classes)?,
            )
        }
    };
    let read = |name: &str| {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let batch = parse(&bytes, &path)?;
        batch.check(&path, classes)?;
        Ok::<_, DataError>(batch)
    };
    let (train, test) = (read(train_file)?, read(test_file)?);
    Ok(Dataset {
        format,
        dir,
        classes: names,
        shape: Shape::CIFAR,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{synthetic100, write_cifar100_binary, write_cifar100_python};

    #[test]
    fn both_layouts_load_the_same_images_with_fine_or_coarse_labels() {
        let data = synthetic100(30, 12);
        let bin = tempfile::tempdir().unwrap();
        let py = tempfile::tempdir().unwrap();
        write_cifar100_binary(bin.path(), &data);
        write_cifar100_python(py.path(), &data);
        for coarse in [false, true] {
            let a = load(bin.path(), coarse).unwrap();
            let b = load(py.path(), coarse).unwrap();
            assert_eq!(a.format, Format::Cifar100Binary);
            assert_eq!(b.format, Format::Cifar100Python);
            assert_eq!(a.train, b.train);
            assert_eq!(a.test, b.test);
            assert_eq!(a.classes, b.classes);
            let (labels, n) = if coarse {
                (&data.train_coarse, COARSE)
            } else {
                (&data.train_fine, FINE)
            };
            assert_eq!(&a.train.labels, labels);
            assert_eq!(a.classes.len(), n);
            assert_eq!(a.train.images, data.train_images);
            assert_eq!(a.test.len(), 12);
        }
        assert_eq!(load(bin.path(), false).unwrap().classes[3], "fine_3");
        assert_eq!(load(py.path(), true).unwrap().classes[19], "coarse_19");
        assert_eq!(
            Dataset::detect(bin.path()),
            sweep_proto::DatasetKind::Cifar100
        );
    }

    #[test]
    fn bad_files_are_named() {
        let data = synthetic100(10, 4);
        let bin = tempfile::tempdir().unwrap();
        write_cifar100_binary(bin.path(), &data);
        let f = bin.path().join("cifar-100-binary/train.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[1] = 150; // the first image's fine label
        std::fs::write(&f, &bytes).unwrap();
        let err = load(bin.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("train.bin") && err.contains("label 150"),
            "{err}"
        );
        assert!(
            load(bin.path(), true).is_ok(),
            "the coarse labels are still fine"
        );
        std::fs::write(&f, &bytes[..100]).unwrap();
        let err = load(bin.path(), true).unwrap_err().to_string();
        assert!(err.contains("train.bin") && err.contains("3074"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = load(empty.path(), false).unwrap_err().to_string();
        assert!(err.contains("cifar-100-binary/train.bin"), "{err}");

        let py = tempfile::tempdir().unwrap();
        write_cifar100_python(py.path(), &data);
        std::fs::write(py.path().join("cifar-100-python/meta"), b"garbage").unwrap();
        let err = load(py.path(), false).unwrap_err().to_string();
        assert!(err.contains("meta"), "{err}");
    }
}
