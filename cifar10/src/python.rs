//! The Python layout (`cifar-10-python.tar.gz`), which the original study loaded: each batch is
//! a pickled dict with `data` (numpy uint8, N x 3072), `labels` (list of N ints), `batch_label`
//! and `filenames`; `batches.meta` holds `label_names`.

use super::pickle::{self, Value};
use super::{Batch, DataError, IMAGE_BYTES, NUM_CLASSES};
use std::path::Path;

fn load(path: &Path) -> Result<Value, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    load_bytes(&bytes, path)
}

fn load_bytes(bytes: &[u8], path: &Path) -> Result<Value, DataError> {
    let value = pickle::load(bytes).map_err(|e| DataError::corrupt(path, e.to_string()))?;
    if !matches!(value, Value::Dict(_)) {
        return Err(DataError::corrupt(
            path,
            format!("the pickle holds a {}, expected a dict", value.type_name()),
        ));
    }
    Ok(value)
}

fn field(path: &Path, dict: &Value, key: &str) -> Result<Value, DataError> {
    dict.get(key)
        .ok_or_else(|| DataError::corrupt(path, format!("the dict has no `{key}` entry")))
}

fn int_list(path: &Path, v: &Value, key: &str) -> Result<Vec<i64>, DataError> {
    let Value::List(items) = v else {
        return Err(DataError::corrupt(
            path,
            format!("`{key}` is a {}, expected a list", v.type_name()),
        ));
    };
    items
        .borrow()
        .iter()
        .map(|x| match x {
            Value::Int(i) => Ok(*i),
            other => Err(DataError::corrupt(
                path,
                format!("`{key}` holds a {}, expected ints", other.type_name()),
            )),
        })
        .collect()
}

pub fn read_batch(path: &Path) -> Result<Batch, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_batch(&bytes, path)
}

/// A batch from a pickle's bytes; `path` only names it in errors.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<Batch, DataError> {
    parse_labelled(bytes, path, "labels", NUM_CLASSES)
}

/// A batch whose labels (below `classes`) are the dict's `label_key` list (CIFAR-100:
/// `fine_labels` or `coarse_labels`).
pub fn parse_labelled(
    bytes: &[u8],
    path: &Path,
    label_key: &str,
    classes: usize,
) -> Result<Batch, DataError> {
    let dict = load_bytes(bytes, path)?;
    let array = pickle::as_ndarray(&field(path, &dict, "data")?)
        .map_err(|e| DataError::corrupt(path, format!("`data`: {e}")))?;
    if array.dtype != "u1" && array.dtype != "|u1" {
        return Err(DataError::corrupt(
            path,
            format!("`data` has dtype {}, expected uint8", array.dtype),
        ));
    }
    if array.shape.len() != 2 || array.shape[1] != IMAGE_BYTES || array.fortran_order {
        return Err(DataError::corrupt(
            path,
            format!(
                "`data` has shape {:?}, expected (N, {IMAGE_BYTES}) in C order",
                array.shape
            ),
        ));
    }
    if array.data.len() != array.shape[0] * IMAGE_BYTES {
        return Err(DataError::corrupt(
            path,
            format!(
                "`data` holds {} bytes, but its shape {:?} needs {}",
                array.data.len(),
                array.shape,
                array.shape[0] * IMAGE_BYTES
            ),
        ));
    }
    let labels = int_list(path, &field(path, &dict, label_key)?, label_key)?;
    if labels.len() != array.shape[0] {
        return Err(DataError::corrupt(
            path,
            format!("{} labels for {} images", labels.len(), array.shape[0]),
        ));
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            u8::try_from(l)
                .ok()
                .filter(|&l| (l as usize) < classes)
                .ok_or_else(|| {
                    DataError::corrupt(
                        path,
                        format!("image {i} has label {l}, expected 0 to {}", classes - 1),
                    )
                })
        })
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(Batch {
        images: array.data.as_ref().clone(),
        labels,
        image_bytes: IMAGE_BYTES,
    })
}

pub fn read_classes(dir: &Path) -> Result<Vec<String>, DataError> {
    read_names(&dir.join("batches.meta"), "label_names", NUM_CLASSES)
}

/// The `key` list of strings in the pickled dict at `path`, which must hold `count` names.
pub fn read_names(path: &Path, key: &str, count: usize) -> Result<Vec<String>, DataError> {
    let path = path.to_path_buf();
    let meta = load(&path)?;
    let Value::List(names) = field(&path, &meta, key)? else {
        return Err(DataError::corrupt(&path, format!("`{key}` is not a list")));
    };
    let names: Vec<String> = names
        .borrow()
        .iter()
        .map(|v| {
            v.as_text()
                .ok_or_else(|| DataError::corrupt(&path, format!("`{key}` holds a non-string")))
        })
        .collect::<Result<_, _>>()?;
    if names.len() != count {
        return Err(DataError::corrupt(
            &path,
            format!("lists {} class names, expected {count}", names.len()),
        ));
    }
    Ok(names)
}
