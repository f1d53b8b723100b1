//! `worker bench`: training throughput of one model through the real training path
//! (device-resident uint8 images, gather, normalise, forward, loss, backward, optimiser step,
//! on-device metric sums), on random images so no dataset is needed.
//!
//! `bench/train_speed.py` does exactly the same work in PyTorch eager so the two can be
//! compared side by side on the same torch install.

use crate::data::{Batch, Dataset, Format, Shape, CLASS_NAMES, IMAGE_BYTES};
use crate::train::{self, Event};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sweep_proto::{Model, Normalization, Optimizer, Precision, TrialSpec, TrialStatus};
use tch::Device;

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub impl_name: &'static str,
    pub model: String,
    pub batch_size: u32,
    pub images: u64,
    pub device: String,
    pub precision: Precision,
    pub channels_last: bool,
    /// Anything the trial reported about how it ran (e.g. a bf16 fallback).
    pub notes: Vec<String>,
    /// Per-epoch training throughput; the first epoch includes warm-up.
    pub epoch_images_per_sec: Vec<f64>,
    /// Best epoch after the first.
    pub images_per_sec: f64,
}

fn random_batch(n: usize, rng: &mut impl Rng) -> Batch {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    rng.fill(images.as_mut_slice());
    Batch {
        images,
        labels: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        image_bytes: IMAGE_BYTES,
    }
}

/// What `worker bench` measures.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    pub model: Model,
    pub batch_size: u32,
    pub images: usize,
    pub epochs: u32,
    pub precision: Precision,
    pub channels_last: bool,
}

/// Trains the model for `epochs` epochs over `images` random images.
pub fn run(config: BenchConfig, device: Device) -> Result<BenchResult, String> {
    let BenchConfig {
        model,
        batch_size,
        images,
        epochs,
        precision,
        channels_last,
    } = config;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let data = Dataset {
        format: Format::Binary,
        dir: "random".into(),
        classes: CLASS_NAMES.map(String::from).to_vec(),
        shape: Shape::CIFAR,
        train: random_batch(images, &mut rng),
        test: random_batch(batch_size as usize, &mut rng),
    };
    let spec = TrialSpec {
        model,
        epochs,
        batch_size,
        optimizer: Optimizer::Sgd,
        lr: 0.01,
        momentum: 0.9,
        normalization: Normalization::Standard,
        precision,
        channels_last,
        ..TrialSpec::default()
    };
    let mut epoch_ips = Vec::new();
    let result = train::run(&spec, &data, device, &mut |e| {
        if let Event::Epoch(m) = e {
            epoch_ips.push(m.images_per_sec)
        }
    });
    if result.status != TrialStatus::Completed {
        return Err(format!(
            "benchmark run ended {:?}: {}",
            result.status,
            result.reason.unwrap_or_default()
        ));
    }
    let steady = epoch_ips.iter().skip(1).copied().fold(f64::NAN, f64::max);
    Ok(BenchResult {
        impl_name: "worker (tch)",
        model: model.to_string(),
        batch_size,
        images: images as u64,
        device: result.device,
        precision,
        channels_last,
        notes: result.notes,
        images_per_sec: if steady.is_nan() {
            epoch_ips.first().copied().unwrap_or(0.0)
        } else {
            steady
        },
        epoch_images_per_sec: epoch_ips,
    })
}
