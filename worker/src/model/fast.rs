//! `fast`: the ResNet-9 of the fast CIFAR-10 trainers (David Page's DAWNBench entry, the
//! ancestor of airbench): conv-BN-ReLU blocks at 64/128/256/512 channels, max pooling between
//! stages, two residual blocks, global max pooling and a linear head scaled by 1/8.
//!
//! Its recipe (docs/PERFORMANCE.md, `examples/fast.toml`): SGD with Nesterov momentum, a
//! one-cycle schedule, label smoothing 0.2, flip + pad-crop + cutout, batch 512, bf16 and
//! channels-last on GPUs.

use super::{Conv, Io, Layers};
use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv_bn_relu(vs: &nn::Path, layers: Layers, c_in: i64, c_out: i64) -> nn::SequentialT {
    nn::seq_t()
        .add(layers.conv(vs / "conv", Conv::new(c_in, c_out, 3).padding(1).no_bias()))
        .add(layers.batch_norm(vs / "bn", c_out))
        .add_fn(|x| x.relu())
}

/// Two conv-BN-ReLU blocks added back onto their input.
fn residual(vs: &nn::Path, layers: Layers, c: i64) -> impl ModuleT {
    let a = conv_bn_relu(&(vs / "a"), layers, c, c);
    let b = conv_bn_relu(&(vs / "b"), layers, c, c);
    nn::func_t(move |x: &Tensor, train| x + b.forward_t(&a.forward_t(x, train), train))
}

pub fn fast(vs: &nn::Path, layers: Layers, io: Io) -> nn::SequentialT {
    let pool = |x: &Tensor| x.max_pool2d_default(2);
    nn::seq_t()
        .add(conv_bn_relu(&(vs / "prep"), layers, io.channels, 64))
        .add(conv_bn_relu(&(vs / "layer1"), layers, 64, 128))
        .add_fn(pool)
        .add(residual(&(vs / "res1"), layers, 128))
        .add(conv_bn_relu(&(vs / "layer2"), layers, 128, 256))
        .add_fn(pool)
        .add(conv_bn_relu(&(vs / "layer3"), layers, 256, 512))
        .add_fn(pool)
        .add(residual(&(vs / "res3"), layers, 512))
        .add_fn(|x| x.adaptive_max_pool2d([1, 1]).0.flatten(1, -1))
        .add(layers.linear(vs / "fc", 512, io.classes, false))
        .add_fn(|x| x * 0.125)
}
