//! Small synthetic CIFAR-10 datasets written in both official layouts, for tests.
//!
//! The Python files are written opcode for opcode the way Python 2's cPickle (protocol 2)
//! wrote the official `cifar-10-python.tar.gz`: `U`/`T` byte strings, `q`/`r` memo puts after
//! every container and string, lists filled by `(`...`e` in chunks of 1000, the numpy array
//! via `numpy.core.multiarray._reconstruct` and a `BUILD` with the raw bytes as a `T` string.

use super::{Batch, CLASS_NAMES, IMAGE_BYTES, PIXELS};
use std::path::Path;

pub struct Synthetic {
    pub train: Vec<Batch>,
    pub test: Batch,
}

impl Synthetic {
    pub fn all_train_labels(&self) -> Vec<u8> {
        self.train
            .iter()
            .flat_map(|b| b.labels.iter().copied())
            .collect()
    }
}

/// A deterministic image: each plane has its own base level so channel means are distinct.
fn image(seed: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(IMAGE_BYTES);
    for (c, base) in [10usize, 100, 200].into_iter().enumerate() {
        for p in 0..PIXELS {
            px.push(((base + (seed * 31 + p * 7 + c * 3) % 50) % 256) as u8);
        }
    }
    // Make every image unique, so tests can tell images apart.
    px[0] = (seed % 256) as u8;
    px[1] = (seed / 256 % 256) as u8;
    px
}

fn batch(n: usize, offset: usize) -> Batch {
    let mut b = Batch::default();
    for i in 0..n {
        b.images.extend(image(offset + i));
        b.labels.push(((offset + i) * 3 % 10) as u8);
    }
    b
}

/// Five training batches of `per_batch` images and a test batch of `test` images.
pub fn synthetic(per_batch: usize, test: usize) -> Synthetic {
    Synthetic {
        train: (0..5).map(|b| batch(per_batch, b * per_batch)).collect(),
        test: batch(test, 99_000),
    }
}

/// Per-channel means computed the obvious way, independently of `Dataset::summary`.
pub fn expected_means(data: &Synthetic) -> [f64; 3] {
    let mut sums = [0f64; 3];
    let mut n = 0f64;
    for b in &data.train {
        for i in 0..b.len() {
            let img = b.image(i);
            for c in 0..3 {
                for p in 0..PIXELS {
                    sums[c] += img[c * PIXELS + p] as f64;
                }
            }
            n += PIXELS as f64;
        }
    }
    sums.map(|s| s / n)
}

pub fn write_binary(root: &Path, data: &Synthetic) {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, b: &Batch| {
        let mut out = Vec::new();
        for i in 0..b.len() {
            out.push(b.labels[i]);
            out.extend_from_slice(b.image(i));
        }
        std::fs::write(dir.join(name), out).unwrap();
    };
    for (i, b) in data.train.iter().enumerate() {
        write(&format!("data_batch_{}.bin", i + 1), b);
    }
    write("test_batch.bin", &data.test);
    std::fs::write(dir.join("batches.meta.txt"), CLASS_NAMES.join("\n") + "\n").unwrap();
}

pub fn write_python(root: &Path, data: &Synthetic) {
    let dir = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, b) in data.train.iter().enumerate() {
        let label = format!("training batch {} of 5", i + 1);
        std::fs::write(
            dir.join(format!("data_batch_{}", i + 1)),
            py2_batch(b, &label),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("test_batch"),
        py2_batch(&data.test, "testing batch 1 of 1"),
    )
    .unwrap();
    std::fs::write(dir.join("batches.meta"), py2_meta()).unwrap();
}

/// Emits protocol-2 opcodes as Python 2's cPickle did.
struct Py2 {
    out: Vec<u8>,
    memo: u32,
}

impl Py2 {
    fn new() -> Self {
        Py2 {
            out: vec![0x80, 2],
            memo: 0,
        }
    }
    fn put(&mut self) {
        self.memo += 1;
        if self.memo < 256 {
            self.out.extend([b'q', self.memo as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend(self.memo.to_le_bytes());
        }
    }
    fn string(&mut self, s: &[u8]) {
        if s.len() < 256 {
            self.out.extend([b'U', s.len() as u8]);
        } else {
            self.out.push(b'T');
            self.out.extend((s.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(s);
    }
    fn int(&mut self, v: u32) {
        if v < 256 {
            self.out.extend([b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend((v as u16).to_le_bytes());
        } else {
            self.out.push(b'J');
            self.out.extend((v as i32).to_le_bytes());
        }
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend(format!("{module}\n{name}\n").bytes());
        self.put();
    }
    /// A list, appended in MARK ... APPENDS chunks of 1000 like cPickle's BATCHSIZE.
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.out.push(b']');
        self.put();
        for chunk in items.chunks(1000) {
            self.out.push(b'(');
            for item in chunk {
                each(self, item);
            }
            self.out.push(b'e');
        }
    }
    fn key(&mut self, k: &str) {
        self.string(k.as_bytes());
        self.put();
    }
    fn ndarray_u8(&mut self, rows: usize, cols: usize, bytes: &[u8]) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.out.extend([b'K', 0, 0x85]); // (0,)
        self.string(b"b");
        self.out.extend([0x87, b'R']); // TUPLE3, REDUCE
        self.put();
        self.out.extend([b'(', b'K', 1]); // MARK, version 1
        self.int(rows as u32);
        self.int(cols as u32);
        self.out.push(0x86); // shape tuple
        self.global("numpy", "dtype");
        self.string(b"u1");
        self.out.extend([b'K', 0, b'K', 1, 0x87, b'R']); // dtype('u1', 0, 1)
        self.put();
        self.out.extend([b'(', b'K', 3]);
        self.string(b"|");
        self.out.extend(b"NNN");
        self.out.extend([
            b'J', 0xff, 0xff, 0xff, 0xff, b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', b'b',
        ]);
        self.out.push(0x89); // NEWFALSE: not Fortran order
        self.string(bytes);
        self.out.extend([b't', b'b']);
    }
    fn finish(mut self) -> Vec<u8> {
        self.out.extend([b'u', b'.']); // SETITEMS, STOP
        self.out
    }
}

fn py2_batch(b: &Batch, batch_label: &str) -> Vec<u8> {
    let mut p = Py2::new();
    p.out.push(b'}');
    p.put();
    p.out.push(b'(');
    p.key("data");
    p.ndarray_u8(b.len(), IMAGE_BYTES, &b.images);
    p.key("labels");
    p.list(&b.labels, |p, &l| p.int(l as u32));
    p.key("batch_label");
    p.string(batch_label.as_bytes());
    p.put();
    p.key("filenames");
    let names: Vec<String> = (0..b.len())
        .map(|i| format!("synthetic_{i:05}.png"))
        .collect();
    p.list(&names, |p, n| {
        p.string(n.as_bytes());
        p.put();
    });
    p.finish()
}

fn py2_meta() -> Vec<u8> {
    let mut p = Py2::new();
    p.out.push(b'}');
    p.put();
    p.out.push(b'(');
    p.key("num_cases_per_batch");
    p.int(10000);
    p.key("label_names");
    p.list(&CLASS_NAMES, |p, n| {
        p.string(n.as_bytes());
        p.put();
    });
    p.key("num_vis");
    p.int(3072);
    p.finish()
}

/// Writes a small binary-layout dataset of `per_batch` x 5 training and `test` test images.
pub fn write_small_binary(root: &Path, per_batch: usize, test: usize) -> Synthetic {
    let data = synthetic(per_batch, test);
    write_binary(root, &data);
    data
}

/// A small synthetic CIFAR-100: images as for CIFAR-10, fine labels 0..100 and coarse ones
/// 0..20 (fine / 5, as the official superclasses group five classes each).
pub struct Synthetic100 {
    pub train_images: Vec<u8>,
    pub train_fine: Vec<u8>,
    pub train_coarse: Vec<u8>,
    pub test_images: Vec<u8>,
    pub test_fine: Vec<u8>,
    pub test_coarse: Vec<u8>,
}

pub fn synthetic100(train: usize, test: usize) -> Synthetic100 {
    let split = |n: usize, offset: usize| {
        let images: Vec<u8> = (0..n).flat_map(|i| image(offset + i)).collect();
        let fine: Vec<u8> = (0..n).map(|i| ((offset + i) * 7 % 100) as u8).collect();
        let coarse = fine.iter().map(|f| f / 5).collect();
        (images, fine, coarse)
    };
    let (train_images, train_fine, train_coarse) = split(train, 0);
    let (test_images, test_fine, test_coarse) = split(test, 77_000);
    Synthetic100 {
        train_images,
        train_fine,
        train_coarse,
        test_images,
        test_fine,
        test_coarse,
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i}")).collect()
}

pub fn write_cifar100_binary(root: &Path, data: &Synthetic100) {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, images: &[u8], fine: &[u8], coarse: &[u8]| {
        let mut out = Vec::new();
        for (i, img) in images.chunks(IMAGE_BYTES).enumerate() {
            out.extend([coarse[i], fine[i]]);
            out.extend_from_slice(img);
        }
        std::fs::write(dir.join(name), out).unwrap();
    };
    write(
        "train.bin",
        &data.train_images,
        &data.train_fine,
        &data.train_coarse,
    );
    write(
        "test.bin",
        &data.test_images,
        &data.test_fine,
        &data.test_coarse,
    );
    std::fs::write(
        dir.join("fine_label_names.txt"),
        names("fine", 100).join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("coarse_label_names.txt"),
        names("coarse", 20).join("\n") + "\n",
    )
    .unwrap();
}

pub fn write_cifar100_python(root: &Path, data: &Synthetic100) {
    let dir = root.join("cifar-100-python");
    std::fs::create_dir_all(&dir).unwrap();
    let batch = |images: &[u8], fine: &[u8], coarse: &[u8], label: &str| {
        let n = fine.len();
        let mut p = Py2::new();
        p.out.push(b'}');
        p.put();
        p.out.push(b'(');
        p.key("filenames");
        let files: Vec<String> = (0..n).map(|i| format!("synthetic_{i:05}.png")).collect();
        p.list(&files, |p, f| {
            p.string(f.as_bytes());
            p.put();
        });
        p.key("batch_label");
        p.string(label.as_bytes());
        p.put();
        p.key("fine_labels");
        p.list(fine, |p, &l| p.int(l as u32));
        p.key("coarse_labels");
        p.list(coarse, |p, &l| p.int(l as u32));
        p.key("data");
        p.ndarray_u8(n, IMAGE_BYTES, images);
        p.finish()
    };
    let train = batch(
        &data.train_images,
        &data.train_fine,
        &data.train_coarse,
        "training batch 1 of 1",
    );
    let test = batch(
        &data.test_images,
        &data.test_fine,
        &data.test_coarse,
        "testing batch 1 of 1",
    );
    std::fs::write(dir.join("train"), train).unwrap();
    std::fs::write(dir.join("test"), test).unwrap();
    let mut p = Py2::new();
    p.out.push(b'}');
    p.put();
    p.out.push(b'(');
    p.key("fine_label_names");
    p.list(&names("fine", 100), |p, n| {
        p.string(n.as_bytes());
        p.put();
    });
    p.key("coarse_label_names");
    p.list(&names("coarse", 20), |p, n| {
        p.string(n.as_bytes());
        p.put();
    });
    std::fs::write(dir.join("meta"), p.finish()).unwrap();
}

/// Writes an image folder of `per_class` training and `test_per_class` test PNGs per class
/// (`side` x `side` RGB, distinct deterministic pixels), classes named `classes`.
pub fn write_image_folder(
    root: &Path,
    classes: &[&str],
    per_class: usize,
    test_per_class: usize,
    side: u32,
) {
    for (split, n) in [("train", per_class), ("test", test_per_class)] {
        for (c, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let seed = (c * 1000 + i + if split == "test" { 500 } else { 0 }) as u32;
                let img = image::RgbImage::from_fn(side, side, |x, y| {
                    let v = |k: u32| {
                        ((seed * 37 + x * 11 + y * 5 + k * 60 + c as u32 * 40) % 256) as u8
                    };
                    image::Rgb([v(0), v(1), v(2)])
                });
                img.save(dir.join(format!("img{i:04}.png"))).unwrap();
            }
        }
    }
}
