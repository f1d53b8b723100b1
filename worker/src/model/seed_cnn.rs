//! The study's CNN: 32 -conv8-> 32 -pool4-> 8 -conv4-> 8 -pool2-> 4 -conv2-> 4, then
//! 4*4*512 -> 256 -> 64 -> 10.
//!
//! Keras `padding="same"` with an even kernel k pads (k-1)/2 pixels before and the rest after.
//! libtorch's `padding="same"` does the same by copying the input into a padded tensor (and
//! warns about it on every run); padding explicitly is the same work without the warning.

use super::{Conv, Io, Layers};
use tch::{nn, Tensor};

/// A "same"-padded convolution with bias (stride 1).
fn same_conv(
    vs: nn::Path,
    layers: Layers,
    c_in: i64,
    c_out: i64,
    k: i64,
) -> impl Fn(&Tensor) -> Tensor {
    let conv = layers.conv(vs, Conv::new(c_in, c_out, k));
    let (before, after) = ((k - 1) / 2, k - 1 - (k - 1) / 2);
    move |x: &Tensor| {
        x.constant_pad_nd([before, after, before, after])
            .apply(&conv)
    }
}

/// `io.size` must be a multiple of 8 (checked by the trial's validation).
pub fn seed_cnn(vs: &nn::Path, layers: Layers, io: Io) -> nn::SequentialT {
    let conv1 = same_conv(vs / "conv1", layers, io.channels, 128, 8);
    let side = io.size / 8;
    let conv2 = same_conv(vs / "conv2", layers, 128, 256, 4);
    let conv3 = same_conv(vs / "conv3", layers, 256, 512, 2);
    nn::seq_t()
        .add_fn(move |x| conv1(x).relu().max_pool2d_default(4))
        .add_fn(move |x| conv2(x).relu().max_pool2d_default(2))
        .add_fn_t(|x, train| x.dropout(0.2, train))
        .add_fn(move |x| conv3(x).relu())
        .add_fn_t(|x, train| x.dropout(0.2, train))
        .add_fn(|x| x.flatten(1, -1))
        .add(layers.linear(vs / "fc1", side * side * 512, 256, true))
        .add_fn(|x| x.relu())
        .add(layers.linear(vs / "fc2", 256, 64, true))
        .add_fn(|x| x.relu())
        .add(layers.linear(vs / "fc3", 64, io.classes, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Explicit asymmetric padding computes exactly what libtorch's `padding="same"` does.
    #[test]
    fn explicit_padding_matches_libtorch_same() {
        let _lock = crate::test_rng_lock();
        for k in [2, 4, 8, 3] {
            let vs = nn::VarStore::new(Device::Cpu);
            let layers = Layers::new(sweep_proto::Semantics::Pytorch);
            let conv = same_conv(vs.root() / "c", layers, 3, 5, k);
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            let vars = vs.variables();
            let (w, b) = (&vars["c.weight"], &vars["c.bias"]);
            let reference = x.conv2d_padding(w, Some(b), [1, 1], "same", [1, 1], 1);
            let ours = conv(&x);
            assert_eq!(ours.size(), vec![2, 5, 32, 32]);
            assert!(ours.allclose(&reference, 1e-5, 1e-5, false), "kernel {k}");
        }
    }
}
