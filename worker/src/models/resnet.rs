//! He et al. (2016) CIFAR ResNets with 6n+2 layers: a 3x3 stem with 16 channels, three
//! stages of n basic blocks at 16/32/64 channels (the first block of stages 2 and 3 halves
//! the resolution), global average pooling and a linear classifier.
//!
//! The shortcut is the study's (Keras' `resnet_v1` example): where the shape changes, a
//! strided 1x1 convolution without batch norm; elsewhere the identity.

use tch::nn::{self, ConvConfig, ModuleT};
use tch::Tensor;

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, k, cfg)
}

fn conv_bn(vs: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::SequentialT {
    nn::seq_t()
        .add(conv(vs / "conv", c_in, c_out, 3, stride))
        .add(super::batch_norm(vs / "bn", c_out))
}

fn basic_block(vs: nn::Path, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT {
    let first = conv_bn(&(&vs / "a"), c_in, c_out, stride);
    let second = conv_bn(&(&vs / "b"), c_out, c_out, 1);
    let shortcut = (stride != 1 || c_in != c_out).then(|| {
        let cfg = ConvConfig {
            stride,
            bias: true,
            ..Default::default()
        };
        nn::conv2d(&vs / "shortcut", c_in, c_out, 1, cfg)
    });
    nn::func_t(move |x: &Tensor, train| {
        let y = second.forward_t(&first.forward_t(x, train).relu(), train);
        let skip = match &shortcut {
            Some(proj) => x.apply(proj),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    })
}

pub fn cifar_resnet(vs: &nn::Path, depth: u32, in_channels: i64) -> nn::SequentialT {
    let n = ((depth - 2) / 6) as i64;
    let mut net = nn::seq_t()
        .add(conv_bn(&(vs / "stem"), in_channels, 16, 1))
        .add_fn(|x| x.relu());
    let mut c_in = 16;
    for (stage, c_out) in [16i64, 32, 64].into_iter().enumerate() {
        for block in 0..n {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            net = net.add(basic_block(
                vs / format!("stage{}_{}", stage + 1, block),
                c_in,
                c_out,
                stride,
            ));
            c_in = c_out;
        }
    }
    net.add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add(nn::linear(vs / "fc", 64, 10, Default::default()))
}
