//! The binary layout (`cifar-10-binary.tar.gz`): each record is 1 label byte followed by the
//! 3072 pixel bytes; `batches.meta.txt` lists the class names, one per line.

use super::{Batch, DataError, CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES};
use std::path::Path;

pub fn read_batch(path: &Path) -> Result<Batch, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_batch(&bytes, path)
}

/// A batch from a binary file's bytes; `path` only names it in errors.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<Batch, DataError> {
    parse_records(bytes, path, 1, 0)
}

/// Records of `label_bytes` label bytes and 3072 pixel bytes; the label kept is byte
/// `label_at` (CIFAR-100 stores the coarse label, then the fine one).
pub fn parse_records(
    bytes: &[u8],
    path: &Path,
    label_bytes: usize,
    label_at: usize,
) -> Result<Batch, DataError> {
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::corrupt(
            path,
            format!("size {} bytes is not a positive multiple of {record} ({label_bytes} label byte(s) + {IMAGE_BYTES} pixels)", bytes.len()),
        ));
    }
    let n = bytes.len() / record;
    let mut batch = Batch {
        images: Vec::with_capacity(n * IMAGE_BYTES),
        labels: Vec::with_capacity(n),
        image_bytes: IMAGE_BYTES,
    };
    for r in bytes.chunks_exact(record) {
        batch.labels.push(r[label_at]);
        batch.images.extend_from_slice(&r[label_bytes..]);
    }
    Ok(batch)
}

/// Class names from `batches.meta.txt` when present, else the official names.
pub fn read_classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let path = dir.join("batches.meta.txt");
    if !path.exists() {
        return Ok(CLASS_NAMES.map(String::from).to_vec());
    }
    read_names(&path, NUM_CLASSES)
}

/// One class name per non-empty line of the text file at `path`, which must list `count`.
pub fn read_names(path: &Path, count: usize) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != count {
        return Err(DataError::corrupt(
            path,
            format!("lists {} class names, expected {count}", names.len()),
        ));
    }
    Ok(names)
}
