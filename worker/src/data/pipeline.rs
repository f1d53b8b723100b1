//! Turns a loaded dataset into device-resident tensors for one trial: validation split,
//! subset caps, pixel layout, grayscale, and normalisation statistics.
//!
//! Images stay `uint8` on the device (150 MB for all of CIFAR-10 in colour); each batch is
//! gathered, converted, augmented and normalised there, so training makes no per-batch
//! host-to-device copies.

use crate::data::augment;
use crate::data::{Batch, Dataset, Shape};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sweep_proto::{Augment, ColorMode, Layout, Normalization, TrialSpec};
use tch::{Device, Kind, Tensor};

/// The validation split uses its own fixed seed, so every trial of a sweep holds out the same
/// images whatever its training seed.
pub const SPLIT_SEED: u64 = 0x5eed_c1fa;

/// ITU-R BT.601 luma weights.
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("validation_split = {split} leaves no training images out of {total}")]
    NoTrainingImages { split: f64, total: usize },
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}

/// Images `[N, C, H, W]` (uint8) and labels `[N]` (int64), on the device.
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Pipeline {
    pub train: Split,
    pub val: Option<Split>,
    pub test: Split,
    /// Per-channel statistics of the training split, on the 0..255 scale, shape `[1, C, 1, 1]`.
    pub mean: Tensor,
    pub std: Tensor,
    normalization: Normalization,
    augment: Augment,
}

impl Pipeline {
    pub fn new(
        data: &Dataset,
        spec: &TrialSpec,
        device: Device,
    ) -> Result<Pipeline, PipelineError> {
        let total = data.train.len();
        let mut order: Vec<usize> = (0..total).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(SPLIT_SEED));
        let n_val = (total as f64 * spec.validation_split).round() as usize;
        if n_val >= total {
            return Err(PipelineError::NoTrainingImages {
                split: spec.validation_split,
                total,
            });
        }
        let (val_idx, train_idx) = order.split_at(n_val);
        let cap = |idx: &[usize], limit: Option<u32>| {
            idx.len().min(limit.map_or(usize::MAX, |l| l as usize))
        };
        let train_idx = &train_idx[..cap(train_idx, spec.train_images)];
        let test_idx: Vec<usize> =
            (0..cap(&(0..data.test.len()).collect::<Vec<_>>(), spec.test_images)).collect();

        let to_split = |batch: &Batch, idx: &[usize]| -> Result<Split, PipelineError> {
            let x = images_to_tensor(batch, data.shape, idx, spec.layout, spec.color)?
                .f_to_device(device)?;
            let labels: Vec<i64> = idx.iter().map(|&i| batch.labels[i] as i64).collect();
            Ok(Split {
                x,
                y: Tensor::from_slice(&labels).f_to_device(device)?,
            })
        };
        let train = to_split(&data.train, train_idx)?;
        let val = if val_idx.is_empty() {
            None
        } else {
            Some(to_split(&data.train, val_idx)?)
        };
        let test = to_split(&data.test, &test_idx)?;
        let (mean, std) = channel_stats(&train.x)?;
        Ok(Pipeline {
            train,
            val,
            test,
            mean,
            std,
            normalization: spec.normalization,
            augment: spec.augment,
        })
    }

    /// The augmentation of the training batches from now on (a trial's `changes`).
    pub fn set_augment(&mut self, augment: Augment) {
        self.augment = augment;
    }

    /// The training batch at `idx` (int64 indices on the device): augmented and normalised.
    pub fn train_batch(&self, idx: &Tensor) -> (Tensor, Tensor) {
        let x = self.train.x.index_select(0, idx).to_kind(Kind::Float);
        let x = if self.augment.is_enabled() {
            augment::apply(&x, &self.augment)
        } else {
            x
        };
        (self.normalize(&x), self.train.y.index_select(0, idx))
    }

    /// Rows `start..start+len` of a split, normalised, for evaluation.
    pub fn eval_batch(&self, split: &Split, start: i64, len: i64) -> (Tensor, Tensor) {
        let x = split.x.narrow(0, start, len).to_kind(Kind::Float);
        (self.normalize(&x), split.y.narrow(0, start, len))
    }

    fn normalize(&self, x: &Tensor) -> Tensor {
        normalize(x, self.normalization, &self.mean, &self.std)
    }
}

/// Float images on the 0..255 scale normalised as a trial says (`mean`, `std`: `[1, C, 1, 1]`).
pub fn normalize(x: &Tensor, how: Normalization, mean: &Tensor, std: &Tensor) -> Tensor {
    match how {
        Normalization::None => x.shallow_clone(),
        Normalization::Scale => x / 255.0,
        Normalization::Standard => (x - mean) / std,
    }
}

/// Builds a `[n, C, H, W]` uint8 tensor from the selected flat rows.
fn images_to_tensor(
    batch: &Batch,
    shape: Shape,
    idx: &[usize],
    layout: Layout,
    color: ColorMode,
) -> Result<Tensor, tch::TchError> {
    let mut flat = Vec::with_capacity(idx.len() * batch.image_bytes);
    for &i in idx {
        flat.extend_from_slice(batch.image(i));
    }
    rows_to_tensor(&flat, idx.len(), shape, layout, color)
}

/// `n` rows of `shape` planes (for CIFAR 3,072 bytes each, R, G and B planes) as the
/// `[n, C, H, W]` uint8 images a trial with `layout` and `color` trains on.
pub fn rows_to_tensor(
    flat: &[u8],
    n: usize,
    shape: Shape,
    layout: Layout,
    color: ColorMode,
) -> Result<Tensor, tch::TchError> {
    let n = n as i64;
    let (c, h, w) = (
        shape.channels as i64,
        shape.height as i64,
        shape.width as i64,
    );
    let rows = Tensor::f_from_slice(flat)?;
    let x = match layout {
        Layout::Standard => rows.f_view([n, c, h, w])?,
        // The study's `reshape(32, 32, 3)`: consecutive bytes of the R plane become one
        // pixel's "RGB", and so on, then channels-last becomes channels-first.
        Layout::SeedReshape => rows
            .f_view([n, h, w, c])?
            .f_permute([0, 3, 1, 2])?
            .f_contiguous()?,
    };
    Ok(match color {
        ColorMode::Color => x,
        // A one-channel dataset is grayscale already.
        ColorMode::Grayscale if c == 1 => x,
        ColorMode::Grayscale => {
            let w = Tensor::from_slice(&LUMA)
                .to_kind(Kind::Float)
                .view([1, 3, 1, 1]);
            (x.to_kind(Kind::Float) * w)
                .sum_dim_intlist(1, true, Kind::Float)
                .round()
                .clamp(0.0, 255.0)
                .to_kind(Kind::Uint8)
        }
    })
}

/// Per-channel mean and standard deviation over all pixels, in float64, chunked so the
/// float copy of 50,000 images never exists at once.
fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let (n, c, h, w) = x.size4()?;
    let mut sum = Tensor::zeros([c], (Kind::Double, x.device()));
    let mut sumsq = Tensor::zeros([c], (Kind::Double, x.device()));
    let chunk = 5000;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let xf = x.f_narrow(0, start, len)?.to_kind(Kind::Double);
        sum += xf.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        sumsq += (&xf * &xf).sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        start += len;
    }
    let count = (n * h * w).max(1) as f64;
    let mean = &sum / count;
    let var = (&sumsq / count - &mean * &mean).clamp_min(0.0);
    // A constant channel (e.g. synthetic data) must not divide by zero.
    let std = var.sqrt().clamp_min(1e-3);
    let shape = [1, c, 1, 1];
    Ok((
        mean.to_kind(Kind::Float).view(shape),
        std.to_kind(Kind::Float).view(shape),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testdata::write_small_binary;

    fn load(per_batch: usize) -> (tempfile::TempDir, Dataset) {
        let dir = tempfile::tempdir().unwrap();
        write_small_binary(dir.path(), per_batch, 20);
        let data = Dataset::load(dir.path(), 5).unwrap();
        (dir, data)
    }

    fn spec() -> TrialSpec {
        TrialSpec {
            normalization: Normalization::None,
            ..TrialSpec::default()
        }
    }

    #[test]
    fn standard_layout_keeps_planes() {
        let (_d, data) = load(4);
        let p = Pipeline::new(
            &data,
            &TrialSpec {
                validation_split: 0.0,
                ..spec()
            },
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(p.test.x.size(), vec![20, 3, 32, 32]);
        let first = data.test.image(0);
        let x = p.test.x.get(0);
        for (c, h, w) in [(0, 0, 0), (1, 5, 7), (2, 31, 31)] {
            let v = x.int64_value(&[c, h, w]);
            assert_eq!(v, first[(c * 1024 + h * 32 + w) as usize] as i64);
        }
    }

    #[test]
    fn seed_reshape_scrambles_like_numpy_reshape() {
        let (_d, data) = load(4);
        let s = TrialSpec {
            layout: Layout::SeedReshape,
            ..spec()
        };
        let p = Pipeline::new(&data, &s, Device::Cpu).unwrap();
        let first = data.test.image(0);
        let x = p.test.x.get(0);
        // numpy: row.reshape(32, 32, 3)[h, w, c] == row[h * 96 + w * 3 + c]
        for (c, h, w) in [(0, 0, 0), (1, 0, 0), (2, 3, 9), (0, 31, 31)] {
            assert_eq!(
                x.int64_value(&[c, h, w]),
                first[(h * 96 + w * 3 + c) as usize] as i64
            );
        }
    }

    #[test]
    fn grayscale_is_bt601_luma() {
        let (_d, data) = load(4);
        let p = Pipeline::new(
            &data,
            &TrialSpec {
                color: ColorMode::Grayscale,
                ..spec()
            },
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(p.test.x.size(), vec![20, 1, 32, 32]);
        let img = data.test.image(3);
        for px in [0usize, 100, 1023] {
            let want = (0.299 * img[px] as f64
                + 0.587 * img[1024 + px] as f64
                + 0.114 * img[2048 + px] as f64)
                .round();
            let got = p
                .test
                .x
                .get(3)
                .int64_value(&[0, (px / 32) as i64, (px % 32) as i64]);
            assert_eq!(got as f64, want);
        }
    }

    #[test]
    fn validation_split_is_fixed_and_disjoint() {
        let (_d, data) = load(20); // 100 training images
        let s = TrialSpec {
            validation_split: 0.1,
            seed: 1,
            ..spec()
        };
        let a = Pipeline::new(&data, &s, Device::Cpu).unwrap();
        let b = Pipeline::new(
            &data,
            &TrialSpec {
                seed: 2,
                ..s.clone()
            },
            Device::Cpu,
        )
        .unwrap();
        let val = a.val.as_ref().unwrap();
        assert_eq!((a.train.len(), val.len()), (90, 10));
        // Same held-out images whatever the training seed.
        assert!(val.x.equal(&b.val.as_ref().unwrap().x));
        // Held-out images are not in the training split (synthetic images are all distinct).
        let flat_train = a.train.x.view([90, -1]);
        for i in 0..10 {
            let v = val.x.get(i).view([1, -1]);
            let hits = flat_train
                .eq_tensor(&v)
                .all_dim(1, false)
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert_eq!(hits, 0, "validation image {i} is also in training");
        }
    }

    #[test]
    fn caps_and_empty_training() {
        let (_d, data) = load(20);
        let s = TrialSpec {
            train_images: Some(7),
            test_images: Some(5),
            ..spec()
        };
        let p = Pipeline::new(&data, &s, Device::Cpu).unwrap();
        assert_eq!((p.train.len(), p.test.len()), (7, 5));
        let err = Pipeline::new(
            &data,
            &TrialSpec {
                validation_split: 0.8,
                train_images: None,
                ..spec()
            },
            Device::Cpu,
        );
        assert!(err.is_ok());
        let tiny = {
            let dir = tempfile::tempdir().unwrap();
            write_small_binary(dir.path(), 1, 2);
            Dataset::load(dir.path(), 1).unwrap()
        };
        let err = Pipeline::new(
            &tiny,
            &TrialSpec {
                validation_split: 0.8,
                ..spec()
            },
            Device::Cpu,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("validation_split"), "{err}");
    }

    #[test]
    fn normalizations() {
        let (_d, data) = load(10);
        let std_spec = TrialSpec {
            normalization: Normalization::Standard,
            ..spec()
        };
        let p = Pipeline::new(&data, &std_spec, Device::Cpu).unwrap();
        let (x, _) = p.eval_batch(&p.train, 0, p.train.len());
        let m = x.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
        let s = x.std_dim([0i64, 2, 3].as_slice(), false, false);
        for c in 0..3 {
            assert!(m.double_value(&[c]).abs() < 1e-3, "mean {m}");
            assert!((s.double_value(&[c]) - 1.0).abs() < 1e-3, "std {s}");
        }
        let raw = Pipeline::new(&data, &spec(), Device::Cpu).unwrap();
        let (x, _) = raw.eval_batch(&raw.test, 0, 2);
        assert!(x.max().double_value(&[]) > 1.0, "none keeps 0..255");
        let scaled = Pipeline::new(
            &data,
            &TrialSpec {
                normalization: Normalization::Scale,
                ..spec()
            },
            Device::Cpu,
        )
        .unwrap();
        let (y, _) = scaled.eval_batch(&scaled.test, 0, 2);
        assert!(y.allclose(&(x / 255.0), 1e-6, 1e-6, false));
    }
}
