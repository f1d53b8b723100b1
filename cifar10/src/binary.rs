//! The binary layout (`cifar-10-binary.tar.gz`): each record is 1 label byte followed by the
//! 3072 pixel bytes; `batches.meta.txt` lists the class names, one per line.

use super::{Batch, DataError, CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES};
use std::path::Path;

const RECORD: usize = 1 + IMAGE_BYTES;

pub fn read_batch(path: &Path) -> Result<Batch, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_batch(&bytes, path)
}

/// A batch from a binary file's bytes; `path` only names it in errors.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<Batch, DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::corrupt(
            path,
            format!("size {} bytes is not a positive multiple of {RECORD} (1 label byte + {IMAGE_BYTES} pixels)", bytes.len()),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut batch = Batch {
        images: Vec::with_capacity(n * IMAGE_BYTES),
        labels: Vec::with_capacity(n),
    };
    for record in bytes.chunks_exact(RECORD) {
        batch.labels.push(record[0]);
        batch.images.extend_from_slice(&record[1..]);
    }
    Ok(batch)
}

/// Class names from `batches.meta.txt` when present, else the official names.
pub fn read_classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let path = dir.join("batches.meta.txt");
    if !path.exists() {
        return Ok(CLASS_NAMES.map(String::from).to_vec());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::corrupt(
            &path,
            format!("lists {} class names, expected {NUM_CLASSES}", names.len()),
        ));
    }
    Ok(names)
}
