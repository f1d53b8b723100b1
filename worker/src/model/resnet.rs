//! He et al. (2016) CIFAR ResNets with 6n+2 layers: a 3x3 stem with 16 channels, three
//! stages of n basic blocks at 16/32/64 channels (the first block of stages 2 and 3 halves
//! the resolution), global average pooling and a linear classifier.
//!
//! The shortcut is the study's (Keras' `resnet_v1` example): where the shape changes, a
//! strided 1x1 convolution without batch norm; elsewhere the identity.

//! Under Keras semantics every kernel starts `he_normal`, as that script set it. Its Conv2D
//! layers also carry a (zero-started) bias before each batch norm, which the norm's mean
//! subtraction cancels exactly; ours leave it out.

use super::{Conv, Io, Layers};
use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv_bn(vs: &nn::Path, layers: Layers, c_in: i64, c_out: i64, stride: i64) -> nn::SequentialT {
    let conv = Conv::new(c_in, c_out, 3)
        .stride(stride)
        .padding(1)
        .no_bias();
    nn::seq_t()
        .add(layers.conv(vs / "conv", conv))
        .add(layers.batch_norm(vs / "bn", c_out))
}

fn basic_block(vs: nn::Path, layers: Layers, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT {
    let first = conv_bn(&(&vs / "a"), layers, c_in, c_out, stride);
    let second = conv_bn(&(&vs / "b"), layers, c_out, c_out, 1);
    let shortcut = (stride != 1 || c_in != c_out)
        .then(|| layers.conv(&vs / "shortcut", Conv::new(c_in, c_out, 1).stride(stride)));
    nn::func_t(move |x: &Tensor, train| {
        let y = second.forward_t(&first.forward_t(x, train).relu(), train);
        let skip = match &shortcut {
            Some(proj) => x.apply(proj),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    })
}

pub fn cifar_resnet(vs: &nn::Path, layers: Layers, depth: u32, io: Io) -> nn::SequentialT {
    let n = ((depth - 2) / 6) as i64;
    let mut net = nn::seq_t()
        .add(conv_bn(&(vs / "stem"), layers, io.channels, 16, 1))
        .add_fn(|x| x.relu());
    let mut c_in = 16;
    for (stage, c_out) in [16i64, 32, 64].into_iter().enumerate() {
        for block in 0..n {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            net = net.add(basic_block(
                vs / format!("stage{}_{}", stage + 1, block),
                layers,
                c_in,
                c_out,
                stride,
            ));
            c_in = c_out;
        }
    }
    net.add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add(layers.linear(vs / "fc", 64, io.classes, true))
}
