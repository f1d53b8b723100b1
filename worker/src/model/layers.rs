//! Layers started the way the trial's [`Semantics`] says, so no model inherits tch's own
//! defaults (He-uniform kernels, gamma drawn from U(0, 1)), which are neither PyTorch's nor
//! Keras'.
//!
//! - `pytorch`: `nn.Conv2d`/`nn.Linear` draw weight and bias from U(-b, b) with
//!   b = 1/sqrt(fan_in) (`kaiming_uniform_(a=sqrt(5))` works out to exactly that bound);
//!   `nn.BatchNorm2d` has momentum 0.1 and epsilon 1e-5.
//! - `keras` (Keras 2): `glorot_uniform` kernels, U(-l, l) with l = sqrt(6/(fan_in + fan_out)),
//!   and zero biases; `he_normal` where the study's ResNet script asked for it: a normal with
//!   standard deviation sqrt(2/fan_in)/0.87962566103423978 truncated at two of those standard
//!   deviations (the truncation brings the spread back to sqrt(2/fan_in));
//!   `BatchNormalization` momentum 0.99 (0.01 in torch's convention of the new batch's weight)
//!   and epsilon 1e-3.
//!
//! Fans include the receptive field: a k x k convolution from c_in to c_out channels has
//! fan_in = k*k*c_in and fan_out = k*k*c_out, in both frameworks.

use sweep_proto::Semantics;
use tch::nn::{self, ConvConfig, Init};
use tch::{Kind, Tensor};

/// Keras' constant: the standard deviation of a unit normal truncated at +-2.
const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;

/// Builds conv, linear and batch-norm layers under one trial's semantics.
#[derive(Debug, Clone, Copy)]
pub struct Layers {
    semantics: Semantics,
    /// Under Keras, kernels start `he_normal` instead of `glorot_uniform`.
    he_normal: bool,
}

/// A convolution's shape and options.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub c_in: i64,
    pub c_out: i64,
    pub k: i64,
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
}

impl Conv {
    /// Stride 1, no padding, with bias.
    pub fn new(c_in: i64, c_out: i64, k: i64) -> Conv {
        Conv {
            c_in,
            c_out,
            k,
            stride: 1,
            padding: 0,
            bias: true,
        }
    }
    pub fn stride(self, stride: i64) -> Conv {
        Conv { stride, ..self }
    }
    pub fn padding(self, padding: i64) -> Conv {
        Conv { padding, ..self }
    }
    pub fn no_bias(self) -> Conv {
        Conv {
            bias: false,
            ..self
        }
    }
}

impl Layers {
    pub fn new(semantics: Semantics) -> Layers {
        Layers {
            semantics,
            he_normal: false,
        }
    }

    /// The study's ResNet script (Keras' `resnet_v1` example) set `he_normal` on every Conv2D
    /// and on the classifier; under PyTorch semantics this changes nothing.
    pub fn he_normal_kernels(self) -> Layers {
        Layers {
            he_normal: true,
            ..self
        }
    }

    pub fn conv(&self, vs: nn::Path, c: Conv) -> nn::Conv2D {
        let fan_in = c.k * c.k * c.c_in;
        let fan_out = c.k * c.k * c.c_out;
        let (ws_init, bs_init) = self.inits(fan_in, fan_out);
        let cfg = ConvConfig {
            stride: c.stride,
            padding: c.padding,
            bias: c.bias,
            ws_init,
            bs_init,
            ..Default::default()
        };
        let conv = nn::conv2d(vs, c.c_in, c.c_out, c.k, cfg);
        self.maybe_he_normal(&conv.ws, fan_in);
        conv
    }

    pub fn linear(&self, vs: nn::Path, inputs: i64, outputs: i64, bias: bool) -> nn::Linear {
        let (ws_init, bs_init) = self.inits(inputs, outputs);
        let cfg = nn::LinearConfig {
            ws_init,
            bs_init: Some(bs_init),
            bias,
        };
        let linear = nn::linear(vs, inputs, outputs, cfg);
        self.maybe_he_normal(&linear.ws, inputs);
        linear
    }

    /// gamma = 1 and beta = 0 in both frameworks; momentum and epsilon as each defines them.
    pub fn batch_norm(&self, vs: nn::Path, channels: i64) -> nn::BatchNorm {
        let (momentum, eps) = match self.semantics {
            Semantics::Pytorch => (0.1, 1e-5),
            Semantics::Keras => (1.0 - 0.99, 1e-3),
        };
        let cfg = nn::BatchNormConfig {
            ws_init: Init::Const(1.0),
            bs_init: Init::Const(0.0),
            momentum,
            eps,
            ..Default::default()
        };
        nn::batch_norm2d(vs, channels, cfg)
    }

    /// (kernel init, bias init).
    fn inits(&self, fan_in: i64, fan_out: i64) -> (Init, Init) {
        match self.semantics {
            Semantics::Pytorch => {
                let b = 1.0 / (fan_in as f64).sqrt();
                let u = Init::Uniform { lo: -b, up: b };
                (u, u)
            }
            Semantics::Keras => {
                let l = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (Init::Uniform { lo: -l, up: l }, Init::Const(0.0))
            }
        }
    }

    fn maybe_he_normal(&self, kernel: &Tensor, fan_in: i64) {
        if self.he_normal && self.semantics == Semantics::Keras {
            let std = (2.0 / fan_in as f64).sqrt() / TRUNCATED_STD;
            let values = truncated_normal(&kernel.size(), std, kernel.device());
            tch::no_grad(|| {
                let mut k = kernel.shallow_clone();
                k.copy_(&values);
            });
        }
    }
}

/// A normal with standard deviation `std` truncated at +-2 `std`, drawn by inverting the CDF
/// over [Phi(-2), Phi(2)] (what TensorFlow's resampling draws, in distribution).
fn truncated_normal(shape: &[i64], std: f64, device: tch::Device) -> Tensor {
    const PHI_MINUS_2: f64 = 0.022_750_131_948_179_195;
    let u = Tensor::rand(shape, (Kind::Double, device)) * (1.0 - 2.0 * PHI_MINUS_2) + PHI_MINUS_2;
    let z = (u * 2.0 - 1.0).erfinv() * std::f64::consts::SQRT_2;
    // Rounding at the ends of the interval can land a hair beyond 2: keep the bound exact.
    (z.clamp(-2.0, 2.0) * std).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::ModuleT;
    use tch::Device;

    fn stats(t: &Tensor) -> (f64, f64, f64) {
        let t = t.to_kind(Kind::Double);
        let max = t.abs().max().double_value(&[]);
        let mean = t.mean(Kind::Double).double_value(&[]);
        let std = t.std(false).double_value(&[]);
        (max, mean, std)
    }

    /// Each initialiser against its formula: the bound is exact, the spread within 2%
    /// (hundreds of thousands of draws).
    #[test]
    fn kernels_start_as_each_framework_defines_them() {
        let _lock = crate::test_rng_lock();
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = Conv::new(64, 128, 3).no_bias();
        let (fan_in, fan_out) = (9.0 * 64.0, 9.0 * 128.0);

        let torch = Layers::new(Semantics::Pytorch).conv(vs.root() / "t", conv);
        let (max, _, std) = stats(&torch.ws);
        let b = 1.0 / f64::sqrt(fan_in);
        assert!(max <= b && max > 0.99 * b, "pytorch bound {max} vs {b}");
        assert!(
            (std / (b / 3f64.sqrt()) - 1.0).abs() < 0.02,
            "pytorch std {std}"
        );

        let glorot = Layers::new(Semantics::Keras).conv(vs.root() / "g", conv);
        let (max, _, std) = stats(&glorot.ws);
        let l = f64::sqrt(6.0 / (fan_in + fan_out));
        assert!(max <= l && max > 0.99 * l, "glorot bound {max} vs {l}");
        assert!(
            (std / (l / 3f64.sqrt()) - 1.0).abs() < 0.02,
            "glorot std {std}"
        );

        let he = Layers::new(Semantics::Keras)
            .he_normal_kernels()
            .conv(vs.root() / "h", conv);
        let (max, mean, std) = stats(&he.ws);
        let target = f64::sqrt(2.0 / fan_in);
        let cut = 2.0 * target / TRUNCATED_STD;
        assert!(
            max <= cut * (1.0 + 1e-6) && max > 0.98 * cut,
            "he_normal cut {max} vs {cut}"
        );
        assert!(mean.abs() < 0.01 * target, "he_normal mean {mean}");
        assert!(
            (std / target - 1.0).abs() < 0.02,
            "he_normal std {std} vs {target}"
        );

        // he_normal is the study's ResNet choice under Keras only.
        let torch_he = Layers::new(Semantics::Pytorch)
            .he_normal_kernels()
            .conv(vs.root() / "th", conv);
        assert!(stats(&torch_he.ws).0 <= b);
    }

    #[test]
    fn biases_are_zero_under_keras_and_uniform_under_pytorch() {
        let _lock = crate::test_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let keras = Layers::new(Semantics::Keras).linear(vs.root() / "k", 400, 300, true);
        let bias = keras.bs.as_ref().unwrap();
        assert_eq!(bias.abs().max().double_value(&[]), 0.0);
        let torch = Layers::new(Semantics::Pytorch).linear(vs.root() / "t", 400, 300, true);
        let (max, _, _) = stats(torch.bs.as_ref().unwrap());
        assert!(max > 0.0 && max <= 1.0 / 20.0, "bias bound {max}");
        let (max, _, _) = stats(&torch.ws);
        assert!(max <= 1.0 / 20.0 && max > 0.99 / 20.0, "weight bound {max}");
    }

    /// Running statistics move by the framework's momentum, and epsilon enters the variance:
    /// a channel of constant value 1 and one of +-1 normalise to 0 and +-1/sqrt(1 + eps).
    #[test]
    fn batch_norm_momentum_and_epsilon() {
        let _lock = crate::test_rng_lock();
        for (sem, momentum, eps) in [
            (Semantics::Pytorch, 0.1, 1e-5f64),
            (Semantics::Keras, 0.01, 1e-3),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let bn = Layers::new(sem).batch_norm(vs.root() / "bn", 2);
            // Channel 0: all 1. Channel 1: +1 and -1 (mean 0, biased variance 1).
            let ones = Tensor::ones([2, 1, 1, 1], (Kind::Float, Device::Cpu));
            let signs = Tensor::from_slice(&[1f32, -1.0]).view([2, 1, 1, 1]);
            let x = Tensor::cat(&[ones, signs], 1);
            let y = bn.forward_t(&x, true);
            let expect = 1.0 / (1.0 + eps).sqrt();
            let got = y.double_value(&[0, 1, 0, 0]);
            assert!((got - expect).abs() < 1e-6, "{sem:?}: {got} vs {expect}");
            let running_mean = bn.running_mean.double_value(&[0]);
            assert!(
                (running_mean - momentum).abs() < 1e-7,
                "{sem:?}: {running_mean}"
            );
        }
    }
}
