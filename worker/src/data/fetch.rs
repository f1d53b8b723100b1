//! `worker data fetch`: downloads the official binary archive, checks its size and MD5 while
//! streaming it to disk, and unpacks it. A finished, verified archive is not downloaded again.

use super::{locate, DataError};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What to download and what it must hash to.
#[derive(Debug, Clone)]
pub struct Archive {
    pub url: String,
    pub file_name: String,
    pub size: u64,
    pub md5: String,
}

impl Archive {
    /// The official CIFAR-10 binary release.
    pub fn official() -> Archive {
        Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
            file_name: "cifar-10-binary.tar.gz".into(),
            size: 170_052_171,
            md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
        }
    }
}

fn md5_file(path: &Path) -> Result<String, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Md5::new();
    std::io::copy(&mut f, &mut h).map_err(|e| DataError::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

fn bar(len: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Streams `archive.url` to `path`, hashing as it goes; fails on a size or checksum mismatch.
fn download(archive: &Archive, path: &Path, show_progress: bool) -> Result<(), DataError> {
    let mut response = ureq::get(&archive.url)
        .call()
        .map_err(|e| DataError::Fetch(format!("GET {}: {e}", archive.url)))?;
    let part = path.with_extension("part");
    let mut out = File::create(&part).map_err(|e| DataError::io(&part, e))?;
    let progress = bar(archive.size, show_progress);
    progress.set_message(archive.file_name.clone());
    let mut reader = response.body_mut().as_reader();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| DataError::Fetch(format!("reading {}: {e}", archive.url)))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > archive.size {
            progress.abandon();
            let _ = std::fs::remove_file(&part);
            return Err(DataError::Fetch(format!(
                "{} is larger than the expected {} bytes",
                archive.url, archive.size
            )));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(&part, e))?;
        progress.set_position(total);
    }
    out.flush().map_err(|e| DataError::io(&part, e))?;
    progress.finish();
    let md5 = format!("{:x}", hasher.finalize());
    if total != archive.size || md5 != archive.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(DataError::Fetch(format!(
            "{}: got {total} bytes with MD5 {md5}, expected {} bytes with MD5 {}",
            archive.url, archive.size, archive.md5
        )));
    }
    std::fs::rename(&part, path).map_err(|e| DataError::io(path, e))
}

/// Downloads (unless already present and verified) and unpacks `archive` into `dest`.
/// Returns `dest`, which then holds the batch directory.
pub fn fetch(archive: &Archive, dest: &Path, show_progress: bool) -> Result<PathBuf, DataError> {
    std::fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let path = dest.join(&archive.file_name);
    let verified = path.is_file() && md5_file(&path)? == archive.md5;
    if !verified {
        download(archive, &path, show_progress)?;
    }
    let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
    // `unpack` refuses entries that would land outside `dest`.
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dest)
        .map_err(|e| DataError::corrupt(&path, format!("cannot unpack: {e}")))?;
    locate::batch_dir(dest)?;
    Ok(dest.to_path_buf())
}
