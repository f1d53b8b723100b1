//! Image folders: `train/<class>/*` and `test/<class>/*`, PNG or JPEG, any size.
//!
//! Class names are the folder names of `train/`, in byte order (as torchvision's
//! `ImageFolder` sorts them); `test/` must hold the same folders. Files are read in
//! (class, file name) order. Images are decoded in Rust (the `image` crate), converted to RGB
//! as PIL's `convert("RGB")` does, and resized to `side` x `side` (bilinear, antialiased when
//! shrinking) unless they already are.
//!
//! Decoding is done once per image size: the decoded planes are cached in
//! `<folder>/.sweep-cache/` (or, where the folder is read-only, `~/.cache/sweep-worker/images/`),
//! keyed by the folder's fingerprint, so later trials read one file.
//!
//! The fingerprint names the folder's content in trial ids without reading every image: a
//! SHA-256 over each file's split, relative path and size.

use super::{Batch, DataError, Dataset, Format, Shape};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Labels are bytes.
pub const MAX_CLASSES: usize = 256;

/// Decoded images above this many bytes are refused (a 224-pixel folder of 60,000 images is
/// 9 GB): the error names the size that would fit.
pub const MAX_DECODED_BYTES: u64 = 8 << 30;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
const CACHE_DIR: &str = ".sweep-cache";
const CACHE_MAGIC: &[u8] = b"SWEEPIMG1\n";

/// One image file.
#[derive(Debug, Clone)]
struct Entry {
    /// `<class>/<file>` below the split directory.
    rel: PathBuf,
    class: u8,
    size: u64,
    /// Modification time (ns since the epoch): not in the fingerprint (a copied folder keeps
    /// its trials), but in the decode cache's key (an image edited in place at the same size
    /// is decoded again).
    modified: u128,
}

/// A scanned image folder: its classes and files, not yet decoded.
#[derive(Debug, Clone)]
pub struct Folder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    train: Vec<Entry>,
    test: Vec<Entry>,
}

/// `SWEEP_IMAGE_CACHE=off` decodes every time (measurements); `=DIR` caches in DIR.
pub const CACHE_ENV: &str = "SWEEP_IMAGE_CACHE";

/// Where decoded images are cached.
#[derive(Debug, Clone)]
pub enum Cache {
    /// `<folder>/.sweep-cache/`, else `~/.cache/sweep-worker/images/`.
    Beside,
    /// This directory.
    Dir(PathBuf),
    /// Decode every time (measurements).
    Off,
}

impl Cache {
    /// [`CACHE_ENV`], else beside the folder.
    pub fn from_env() -> Cache {
        match std::env::var_os(CACHE_ENV) {
            Some(v) if v == "off" => Cache::Off,
            Some(v) if !v.is_empty() => Cache::Dir(PathBuf::from(v)),
            _ => Cache::Beside,
        }
    }
}

fn folder_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether `root` has `train/` and `test/` directories (what `worker data check` tries first).
pub fn looks_like(root: &Path) -> bool {
    root.join("train").is_dir() && root.join("test").is_dir()
}

fn sorted_dir(dir: &Path) -> Result<Vec<(String, PathBuf, std::fs::Metadata)>, DataError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            return Err(folder_error(
                &path,
                "a file name that is not UTF-8; rename it (class names and paths are text)",
            ));
        };
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
        out.push((name, path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    EXTENSIONS.iter().any(|e| lower.ends_with(&format!(".{e}")))
}

/// The images of `root/split/<class>/` for every class, in class then name order; a class
/// folder without images, a folder inside one, or a file that is not PNG or JPEG by its
/// extension is an error naming the path.
fn list_split(root: &Path, split: &str, classes: &[String]) -> Result<Vec<Entry>, DataError> {
    let mut entries = Vec::new();
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(split).join(class);
        let files = sorted_dir(&dir)?;
        let before = entries.len();
        for (name, path, meta) in files {
            if meta.is_dir() {
                return Err(folder_error(
                    &path,
                    "a folder inside a class folder; images go directly in <split>/<class>/",
                ));
            }
            if !is_image(&name) {
                return Err(folder_error(
                    &path,
                    "not a PNG or JPEG file by its extension (.png, .jpg, .jpeg); move it out of the image folder",
                ));
            }
            entries.push(Entry {
                rel: Path::new(class).join(&name),
                class: c as u8,
                size: meta.len(),
                modified: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos()),
            });
        }
        if entries.len() == before {
            return Err(folder_error(&dir, "holds no images"));
        }
    }
    Ok(entries)
}

impl Folder {
    /// Lists `root/train/<class>/*` and `root/test/<class>/*` (PNG and JPEG by extension;
    /// hidden files skipped, other files refused by name).
    pub fn scan(root: &Path) -> Result<Folder, DataError> {
        for split in ["train", "test"] {
            if !root.join(split).is_dir() {
                return Err(folder_error(
                    root,
                    format!("not an image folder: it has no `{split}/` directory (expected train/<class>/*.png|jpg and test/<class>/*.png|jpg)"),
                ));
            }
        }
        let classes: Vec<String> = sorted_dir(&root.join("train"))?
            .into_iter()
            .filter(|(_, _, m)| m.is_dir())
            .map(|(name, _, _)| name)
            .collect();
        if classes.len() < 2 {
            return Err(folder_error(
                &root.join("train"),
                format!(
                    "{} class folder(s); a classifier needs at least 2",
                    classes.len()
                ),
            ));
        }
        if classes.len() > MAX_CLASSES {
            return Err(folder_error(
                &root.join("train"),
                format!(
                    "{} class folders; at most {MAX_CLASSES} are supported",
                    classes.len()
                ),
            ));
        }
        let test_classes: Vec<String> = sorted_dir(&root.join("test"))?
            .into_iter()
            .filter(|(_, _, m)| m.is_dir())
            .map(|(name, _, _)| name)
            .collect();
        if let Some(missing) = classes.iter().find(|c| !test_classes.contains(c)) {
            return Err(folder_error(
                &root.join("test"),
                format!("has no folder for class `{missing}` (train/{missing}/ exists); every class needs test images"),
            ));
        }
        if let Some(extra) = test_classes.iter().find(|c| !classes.contains(c)) {
            return Err(folder_error(
                &root.join("train"),
                format!("has no folder for class `{extra}` (test/{extra}/ exists); the model can only learn classes it trains on"),
            ));
        }
        let train = list_split(root, "train", &classes)?;
        let test = list_split(root, "test", &classes)?;
        Ok(Folder {
            root: root.to_path_buf(),
            classes,
            train,
            test,
        })
    }

    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    pub fn test_len(&self) -> usize {
        self.test.len()
    }

    /// The first 8 bytes of a SHA-256 over every file's split, relative path and size.
    pub fn fingerprint(&self) -> u64 {
        let mut h = sha2::Sha256::new();
        for (split, entries) in [("train", &self.train), ("test", &self.test)] {
            for e in entries {
                let rel = e.rel.to_string_lossy();
                h.update(split.as_bytes());
                h.update([0]);
                h.update((rel.len() as u64).to_le_bytes());
                h.update(rel.as_bytes());
                h.update(e.size.to_le_bytes());
            }
        }
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]))
    }

    /// A hash of every file's modification time (the decode cache's key, with the
    /// fingerprint).
    fn modified_stamp(&self) -> u64 {
        let mut h = sha2::Sha256::new();
        for e in self.train.iter().chain(&self.test) {
            h.update(e.modified.to_le_bytes());
        }
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]))
    }

    /// Decodes (or reads from the cache) every image as `side` x `side` RGB planes.
    pub fn load(&self, side: usize, cache: &Cache) -> Result<Dataset, DataError> {
        if !(1..=65_536).contains(&side) {
            return Err(folder_error(
                &self.root,
                format!("image size {side} is not a side length (1 to 65536)"),
            ));
        }
        let shape = Shape::square(3, side);
        let total = (self.train.len() + self.test.len()) as u64 * shape.bytes() as u64;
        if total > MAX_DECODED_BYTES {
            let fits = ((MAX_DECODED_BYTES / 3 / (self.train.len() + self.test.len()) as u64)
                as f64)
                .sqrt() as u64;
            return Err(folder_error(
                &self.root,
                format!(
                    "{} images of {side}x{side} need {:.1} GiB decoded, above the {} GiB limit; choose image_size = {fits} or less",
                    self.train.len() + self.test.len(),
                    total as f64 / (1u64 << 30) as f64,
                    MAX_DECODED_BYTES >> 30
                ),
            ));
        }
        let path = self.cache_path(side, cache);
        if let Some(p) = &path {
            if let Some((train, test)) = self.read_cache(p, shape) {
                return Ok(self.dataset(shape, train, test));
            }
        }
        let train = self.decode_split("train", &self.train, side)?;
        let test = self.decode_split("test", &self.test, side)?;
        if let Some(p) = &path {
            // A cache that cannot be written costs the next trial a decode, nothing more.
            if self.write_cache(p, shape, &train, &test).is_err() && matches!(cache, Cache::Beside)
            {
                let _ = self.write_cache(&self.temp_cache_path(side), shape, &train, &test);
            }
        }
        Ok(self.dataset(shape, train, test))
    }

    fn dataset(&self, shape: Shape, train: Batch, test: Batch) -> Dataset {
        Dataset {
            format: Format::ImageFolder,
            dir: self.root.clone(),
            classes: self.classes.clone(),
            shape,
            train,
            test,
        }
    }

    fn cache_name(&self, side: usize) -> String {
        format!(
            "decoded-{side}px-{JPEG_DECODER}-{:016x}.bin",
            self.fingerprint()
        )
    }

    /// The per-user fallback for a read-only folder.
    fn temp_cache_path(&self, side: usize) -> PathBuf {
        crate::user_cache_dir()
            .join("images")
            .join(self.cache_name(side))
    }

    fn cache_path(&self, side: usize, cache: &Cache) -> Option<PathBuf> {
        match cache {
            Cache::Off => None,
            Cache::Dir(d) => Some(d.join(self.cache_name(side))),
            Cache::Beside => {
                let beside = self.root.join(CACHE_DIR).join(self.cache_name(side));
                if beside.is_file() || !self.temp_cache_path(side).is_file() {
                    Some(beside)
                } else {
                    Some(self.temp_cache_path(side))
                }
            }
        }
    }

    fn header(&self, shape: Shape, train: usize, test: usize) -> Vec<u8> {
        let mut h = CACHE_MAGIC.to_vec();
        let json = serde_json::json!({
            "fingerprint": format!("{:016x}", self.fingerprint()),
            "jpeg_decoder": JPEG_DECODER,
            "modified": format!("{:016x}", self.modified_stamp()),
            "classes": self.classes,
            "shape": [shape.channels, shape.height, shape.width],
            "train": train,
            "test": test,
        });
        h.extend(json.to_string().bytes());
        h.push(b'\n');
        h
    }

    /// The cached images, when the file is there and says exactly what this folder would
    /// decode to (header and size); anything else is decoded again.
    fn read_cache(&self, path: &Path, shape: Shape) -> Option<(Batch, Batch)> {
        let (n_train, n_test) = (self.train.len(), self.test.len());
        let header = self.header(shape, n_train, n_test);
        let expect = header.len() + (n_train + n_test) * (1 + shape.bytes());
        let mut file = std::fs::File::open(path).ok()?;
        if file.metadata().ok()?.len() != expect as u64 {
            return None;
        }
        let mut head = vec![0u8; header.len()];
        file.read_exact(&mut head).ok()?;
        if head != header {
            return None;
        }
        // Read straight into the four parts; a file cut short meanwhile is an error, not a
        // panic, and decoded again.
        let mut take = |n: usize| {
            let mut part = vec![0u8; n];
            file.read_exact(&mut part).ok().map(|_| part)
        };
        let train_labels = take(n_train)?;
        let test_labels = take(n_test)?;
        let train_images = take(n_train * shape.bytes())?;
        let test_images = take(n_test * shape.bytes())?;
        let batch = |images, labels| Batch {
            images,
            labels,
            image_bytes: shape.bytes(),
        };
        let (train, test) = (
            batch(train_images, train_labels),
            batch(test_images, test_labels),
        );
        let classes = self.classes.len();
        (train.check(path, classes).is_ok() && test.check(path, classes).is_ok())
            .then_some((train, test))
    }

    /// Written to a temporary file and renamed, so a reader sees all of it or none.
    fn write_cache(
        &self,
        path: &Path,
        shape: Shape,
        train: &Batch,
        test: &Batch,
    ) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // A name no other writer (thread, process, machine on a shared folder) uses, created
        // exclusively, so concurrent first trials never write into one file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!(
            ".{}.{}.{}.{nanos}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut f = std::io::BufWriter::new(file);
        f.write_all(&self.header(shape, train.len(), test.len()))?;
        for part in [&train.labels, &test.labels, &train.images, &test.images] {
            f.write_all(part)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Decodes a split on every core; an unreadable image fails the load, naming it (and
    /// how many others failed).
    fn decode_split(
        &self,
        split: &str,
        entries: &[Entry],
        side: usize,
    ) -> Result<Batch, DataError> {
        let bytes = 3 * side * side;
        let dir = self.root.join(split);
        let mut images = vec![0u8; entries.len() * bytes];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        let per = entries.len().div_ceil(threads).max(1);
        let errors: Vec<(PathBuf, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = images
                .chunks_mut(per * bytes)
                .zip(entries.chunks(per))
                .map(|(out, chunk)| {
                    let dir = &dir;
                    s.spawn(move || {
                        let mut errors = Vec::new();
                        for (e, dst) in chunk.iter().zip(out.chunks_mut(bytes)) {
                            let path = dir.join(&e.rel);
                            if let Err(reason) = decode_into(&path, side, dst) {
                                errors.push((path, reason));
                            }
                        }
                        errors
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![(dir.clone(), "decoder panicked".into())])
                })
                .collect()
        });
        if let Some((path, reason)) = errors.first() {
            let more = match errors.len() {
                1 => String::new(),
                n => format!(" (and {} more unreadable images)", n - 1),
            };
            return Err(folder_error(path, format!("cannot decode: {reason}{more}")));
        }
        Ok(Batch {
            images,
            labels: entries.iter().map(|e| e.class).collect(),
            image_bytes: bytes,
        })
    }
}

/// Which JPEG decoder this build uses: "libjpeg" (the system's libjpeg-turbo, PIL's pixels)
/// or "rust" (the image crate's; within a few levels of PIL's).
pub const JPEG_DECODER: &str = if cfg!(sweep_libjpeg) {
    "libjpeg"
} else {
    "rust"
};

/// Largest image accepted, in pixels (decoding a bigger one would need its full size in
/// memory before it is resized).
pub const MAX_PIXELS: u64 = 64 << 20;

#[cfg(sweep_libjpeg)]
mod libjpeg {
    use std::os::raw::{c_char, c_uchar, c_uint, c_ulong};
    extern "C" {
        pub fn sweep_jpeg_decode(
            data: *const c_uchar,
            len: c_ulong,
            max_pixels: c_ulong,
            width: *mut c_uint,
            height: *mut c_uint,
            msg: *mut c_char,
            msg_len: c_ulong,
        ) -> *mut c_uchar;
        pub fn sweep_jpeg_free(buf: *mut c_uchar);
    }

    /// RGB rows of a JPEG, as libjpeg-turbo decodes them; `Ok(None)` for CMYK and YCCK files,
    /// which libjpeg does not convert to RGB.
    pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Option<image::RgbImage>, String> {
        let (mut w, mut h) = (1u32, 0u32);
        let mut msg = [0u8; 256];
        // SAFETY: the C side reads `len` bytes of `data`, writes at most `msg_len` bytes of
        // `msg` (NUL-terminated) and returns NULL or a malloc'd buffer of w * h * 3 bytes,
        // which is copied out and freed here.
        unsafe {
            let buf = sweep_jpeg_decode(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                max_pixels as c_ulong,
                &mut w,
                &mut h,
                msg.as_mut_ptr() as *mut c_char,
                msg.len() as c_ulong,
            );
            if buf.is_null() {
                if w == 0 {
                    return Ok(None);
                }
                let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
                return Err(format!("JPEG: {}", String::from_utf8_lossy(&msg[..end])));
            }
            let pixels = std::slice::from_raw_parts(buf, w as usize * h as usize * 3).to_vec();
            sweep_jpeg_free(buf);
            image::RgbImage::from_raw(w, h, pixels)
                .map(Some)
                .ok_or_else(|| "bad JPEG dimensions".into())
        }
    }
}

fn decode_rgb(bytes: &[u8]) -> Result<image::RgbImage, String> {
    #[cfg(sweep_libjpeg)]
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        if let Some(img) = libjpeg::decode(bytes, MAX_PIXELS)? {
            return Ok(img);
        }
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!("{w}x{h} pixels is more than accepted"));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    Ok(img.to_rgb8())
}

/// Decodes one file into `side` x `side` RGB planes (`dst`: 3 * side * side bytes).
pub fn decode_into(path: &Path, side: usize, dst: &mut [u8]) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let img = decode_rgb(&bytes)?;
    let img = if img.dimensions() == (side as u32, side as u32) {
        img
    } else {
        image::imageops::resize(
            &img,
            side as u32,
            side as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let plane = side * side;
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            dst[c * plane + i] = px.0[c];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::write_image_folder;

    #[test]
    fn classes_files_and_pixels_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write_image_folder(dir.path(), &["b_cat", "a_dog", "c_owl"], 4, 2, 16);
        let folder = Folder::scan(dir.path()).unwrap();
        assert_eq!(folder.classes, ["a_dog", "b_cat", "c_owl"]);
        let data = folder.load(16, &Cache::Off).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (12, 6));
        assert_eq!(data.train.labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(data.shape, Shape::square(3, 16));
        // Planes: pixel (x=3, y=2) of a_dog/img0001.png, channel 1.
        let img = image::open(dir.path().join("train/a_dog/img0001.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            data.train.image(1)[256 + 2 * 16 + 3],
            img.get_pixel(3, 2).0[1]
        );
        // Resized on load.
        let small = folder.load(8, &Cache::Off).unwrap();
        assert_eq!(small.train.image_bytes, 3 * 64);
    }

    #[test]
    fn the_cache_is_used_and_refreshed_when_the_files_change() {
        let dir = tempfile::tempdir().unwrap();
        write_image_folder(dir.path(), &["x", "y"], 3, 2, 12);
        let folder = Folder::scan(dir.path()).unwrap();
        let first = folder.load(12, &Cache::Beside).unwrap();
        let cached = dir.path().join(CACHE_DIR).join(folder.cache_name(12));
        assert!(cached.is_file());
        // The second load reads the cache: prove it by making the images undecodable.
        let victim = dir.path().join("train/x/img0000.png");
        let original = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, vec![0u8; original.len()]).unwrap();
        let second = folder.load(12, &Cache::Beside).unwrap();
        assert_eq!(first.train, second.train);
        // A file of another size changes the fingerprint, so the cache is not used, and the
        // broken file is reported by path.
        std::fs::write(&victim, b"not an image").unwrap();
        let rescanned = Folder::scan(dir.path()).unwrap();
        assert_ne!(rescanned.fingerprint(), folder.fingerprint());
        let err = rescanned.load(12, &Cache::Beside).unwrap_err().to_string();
        assert!(
            err.contains("train/x/img0000.png") && err.contains("cannot decode"),
            "{err}"
        );
        // A truncated cache is decoded again, not trusted.
        std::fs::write(&victim, &original).unwrap();
        let bytes = std::fs::read(&cached).unwrap();
        std::fs::write(&cached, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(folder.load(12, &Cache::Beside).unwrap().train, first.train);
    }

    /// libjpeg-turbo's decode (the worker's build): a truncated file fails as it does in PIL;
    /// a few bytes declaring 65500x65500 pixels are refused before the pixels are allocated.
    #[cfg(sweep_libjpeg)]
    #[test]
    fn hostile_and_broken_jpegs_fail_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let img =
            image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 7]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let ok = dir.path().join("ok.jpg");
        std::fs::write(&ok, &jpeg).unwrap();
        let mut out = vec![0u8; 3 * 32 * 32];
        decode_into(&ok, 32, &mut out).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
        let err = decode_into(&cut, 32, &mut out).unwrap_err();
        assert!(err.contains("JPEG"), "{err}");
        // SOF0: FF C0, length (2), precision (1), height (2), width (2).
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        let mut huge = jpeg.clone();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]);
        let big = dir.path().join("big.jpg");
        std::fs::write(&big, &huge).unwrap();
        let err = decode_into(&big, 32, &mut out).unwrap_err();
        assert!(
            err.contains("65500x65500") && err.contains("accepted"),
            "{err}"
        );
    }

    #[test]
    fn bad_folders_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let err = Folder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`train/`"), "{err}");
        write_image_folder(dir.path(), &["cat", "dog"], 2, 1, 8);
        std::fs::remove_dir_all(dir.path().join("test/dog")).unwrap();
        let err = Folder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("class `dog`") && err.contains("test"), "{err}");
        std::fs::create_dir_all(dir.path().join("test/dog")).unwrap();
        let err = Folder::scan(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("test/dog") && err.contains("no images"),
            "{err}"
        );
        std::fs::copy(
            dir.path().join("test/cat/img0000.png"),
            dir.path().join("test/dog/a.png"),
        )
        .unwrap();
        std::fs::write(dir.path().join("train/cat/notes.txt"), "hi").unwrap();
        let err = Folder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        std::fs::remove_file(dir.path().join("train/cat/notes.txt")).unwrap();
        assert!(Folder::scan(dir.path()).is_ok());
        let err = Folder::scan(dir.path())
            .unwrap()
            .load(40_000, &Cache::Off)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image_size"), "{err}");
    }
}
