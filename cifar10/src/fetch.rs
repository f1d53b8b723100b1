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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::write_small_binary;
    use crate::Dataset;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A cifar-10-binary.tar.gz look-alike holding a small synthetic dataset.
    fn archive_bytes() -> Vec<u8> {
        let src = tempfile::tempdir().unwrap();
        write_small_binary(src.path(), 5, 3);
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        tar.append_dir_all(
            "cifar-10-batches-bin",
            src.path().join("cifar-10-batches-bin"),
        )
        .unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// Serves `body` to `requests` GET requests on a loopback port; returns the URL.
    fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/cifar-10-binary.tar.gz",
            listener.local_addr().unwrap()
        );
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        (url, handle)
    }

    fn archive_for(url: &str, body: &[u8]) -> Archive {
        Archive {
            url: url.to_string(),
            file_name: "cifar-10-binary.tar.gz".into(),
            size: body.len() as u64,
            md5: format!("{:x}", Md5::digest(body)),
        }
    }

    #[test]
    fn official_archive_facts() {
        let a = Archive::official();
        assert_eq!(
            (a.size, a.md5.as_str()),
            (170_052_171, "c32a1d4ab5d03f1284b67883e8d87530")
        );
        assert!(a.url.ends_with("/cifar-10-binary.tar.gz"));
    }

    #[test]
    fn downloads_checks_and_unpacks_then_reuses_the_archive() {
        let body = archive_bytes();
        let (url, server) = serve(body.clone(), 1);
        let dest = tempfile::tempdir().unwrap();
        let archive = archive_for(&url, &body);
        fetch(&archive, dest.path(), false).unwrap();
        server.join().unwrap();
        let data = Dataset::load(dest.path(), 5).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (25, 3));
        // The server is gone: a second fetch must use the verified archive on disk.
        fetch(&archive, dest.path(), false).unwrap();
    }

    #[test]
    fn checksum_mismatch_is_an_error_and_leaves_nothing() {
        let body = archive_bytes();
        let (url, server) = serve(body.clone(), 1);
        let dest = tempfile::tempdir().unwrap();
        let archive = Archive {
            md5: "00000000000000000000000000000000".into(),
            ..archive_for(&url, &body)
        };
        let err = fetch(&archive, dest.path(), false).unwrap_err().to_string();
        server.join().unwrap();
        assert!(err.contains("MD5") && err.contains("expected"), "{err}");
        assert_eq!(
            std::fs::read_dir(dest.path()).unwrap().count(),
            0,
            "partial download left behind"
        );
    }

    #[test]
    fn size_mismatch_and_unreachable_server_are_errors() {
        let body = archive_bytes();
        let (url, server) = serve(body.clone(), 1);
        let dest = tempfile::tempdir().unwrap();
        let archive = Archive {
            size: 10,
            ..archive_for(&url, &body)
        };
        let err = fetch(&archive, dest.path(), false).unwrap_err().to_string();
        server.join().unwrap();
        assert!(err.contains("larger than the expected 10 bytes"), "{err}");

        // A port that was just free: connection refused, reported with the URL.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/x.tar.gz");
        let err = fetch(&archive_for(&url, &body), dest.path(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&url), "{err}");
    }
}
