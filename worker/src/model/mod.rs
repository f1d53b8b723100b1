//! Model builders in the tch-rs style: each takes an `nn::Path` and returns a module.
//! Every model maps `[B, C, S, S]` float images to `[B, classes]` logits ([`Io`]); C is 3
//! (colour) or 1 (grayscale), S is 32 for CIFAR. The user's TorchScript modules are loaded by
//! [`torchscript`]. [`amp`]: bf16 autocast (with fp32 fallback) and channels-last.
//!
//! - `dense`, `seed_cnn`: the study's models; `resnet`: ResNet-20/56/110; `fast`: ResNet-9.
//! - [`layers`]: convolution and batch-norm layers with Keras' or PyTorch's initialisers.

pub mod amp;
mod dense;
mod fast;
pub mod layers;
mod resnet;
mod seed_cnn;
pub mod torchscript;

pub use layers::{Conv, Layers};
use sweep_proto::{Model, Semantics};
use tch::nn::{self, ModuleT};

/// What a model maps: `[B, channels, size, size]` images to `[B, classes]` logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub channels: i64,
    pub size: i64,
    pub classes: i64,
}

impl Io {
    /// CIFAR-10 images of `channels` channels.
    pub fn cifar10(channels: i64) -> Io {
        Io {
            channels,
            size: 32,
            classes: 10,
        }
    }
}

/// Builds `model` for `io` under `vs`, its layers started as `semantics` defines (see
/// [`layers`]). A TorchScript module is loaded from this worker's module cache and checked
/// against `io` before anything trains.
pub fn build(
    vs: &nn::Path,
    model: Model,
    io: Io,
    semantics: Semantics,
) -> Result<Box<dyn ModuleT>, String> {
    let layers = Layers::new(semantics);
    Ok(match model {
        Model::Dense => Box::new(dense::dense(vs, layers, io)),
        Model::SeedCnn => Box::new(seed_cnn::seed_cnn(vs, layers, io)),
        Model::ResNet(depth) => Box::new(resnet::cifar_resnet(
            vs,
            layers.he_normal_kernels(),
            depth,
            io,
        )),
        Model::Fast => Box::new(fast::fast(vs, layers, io)),
        Model::TorchScript(hash) => Box::new(crate::model::torchscript::load(vs, hash, io)?),
    })
}

/// Number of trainable scalars.
pub fn parameter_count(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn every_model_maps_images_to_ten_logits() {
        let _lock = crate::test_rng_lock();
        let models = [
            "dense",
            "seed-cnn",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "fast",
        ];
        for name in models {
            for channels in [3, 1] {
                let vs = nn::VarStore::new(Device::Cpu);
                let net = build(
                    &vs.root(),
                    name.parse().unwrap(),
                    Io::cifar10(channels),
                    Semantics::Keras,
                )
                .unwrap();
                let x = Tensor::rand([2, channels, 32, 32], (Kind::Float, Device::Cpu));
                for train in [true, false] {
                    let y = net.forward_t(&x, train);
                    assert_eq!(
                        y.size(),
                        vec![2, 10],
                        "{name} with {channels} channels, train={train}"
                    );
                    assert!(y.isfinite().all().int64_value(&[]) == 1);
                }
            }
        }
    }

    #[test]
    fn every_batch_norm_starts_at_gamma_one_and_beta_zero() {
        let _lock = crate::test_rng_lock();
        for name in ["resnet20", "fast"] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = build(
                &vs.root(),
                name.parse().unwrap(),
                Io::cifar10(3),
                Semantics::Pytorch,
            );
            let mut seen = 0;
            for (var, t) in vs.variables() {
                let expect = if var.ends_with("bn.weight") {
                    1.0
                } else if var.ends_with("bn.bias") {
                    0.0
                } else {
                    continue;
                };
                seen += 1;
                let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
                assert!(lo == expect && hi == expect, "{name} {var}: [{lo}, {hi}]");
            }
            assert!(
                seen >= 2 * 7,
                "{name}: only {seen} batch-norm parameters found"
            );
        }
    }

    /// Parameter counts pin each architecture: seed-cnn's layer sizes follow from the study's
    /// description, and the ResNets match He et al.'s table (0.27M for ResNet-20, 0.85M for
    /// ResNet-56, 1.7M for ResNet-110; ours differ slightly through the 1x1 projections).
    #[test]
    fn parameter_counts() {
        let _lock = crate::test_rng_lock();
        let count = |name: &str, c: i64| {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = build(
                &vs.root(),
                name.parse().unwrap(),
                Io::cifar10(c),
                Semantics::Pytorch,
            );
            parameter_count(&vs)
        };
        // 3072*1024+1024 + 1024*256+256 + 256*64+64 + 64*10+10
        assert_eq!(count("dense", 3), 3_426_250);
        assert_eq!(count("dense", 1), 3_426_250 - 2048 * 1024);
        // conv 3*128*64+128, 128*256*16+256, 256*512*4+512; dense 8192*256+256, 256*64+64, 64*10+10
        assert_eq!(
            count("seed-cnn", 3),
            24_704 + 524_544 + 524_800 + 2_097_408 + 16_448 + 650
        );
        for (name, lo, hi) in [
            ("resnet20", 260_000, 290_000),
            ("resnet56", 840_000, 870_000),
            ("resnet110", 1_700_000, 1_750_000),
        ] {
            let n = count(name, 3);
            assert!((lo..hi).contains(&n), "{name} has {n} parameters");
        }
        // ResNet-9: 3x3 convs 3-64, 64-128, 2x 128-128, 128-256, 256-512, 2x 512-512 (no bias),
        // a BN (weight + bias) after each, and a 512x10 head without bias.
        let convs = 9 * (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512 + 2 * 512 * 512);
        let bns = 2 * (64 + 128 + 2 * 128 + 256 + 512 + 2 * 512);
        assert_eq!(count("fast", 3), convs + bns + 512 * 10);
    }
}
