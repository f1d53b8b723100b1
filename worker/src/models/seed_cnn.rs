//! The study's CNN. Keras `padding="same"` with even kernels pads one pixel more on the
//! bottom/right; libtorch's `padding="same"` does the same, so the shapes match exactly:
//! 32 -conv8-> 32 -pool4-> 8 -conv4-> 8 -pool2-> 4 -conv2-> 4, then 4*4*512 -> 256 -> 64 -> 10.

use tch::{nn, Tensor};

/// A "same"-padded convolution with bias (stride 1), initialised like `nn::conv2d`.
fn same_conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64) -> impl Fn(&Tensor) -> Tensor {
    let conv = nn::conv2d(vs, c_in, c_out, k, Default::default());
    move |x: &Tensor| x.conv2d_padding(&conv.ws, conv.bs.as_ref(), [1, 1], "same", [1, 1], 1)
}

pub fn seed_cnn(vs: &nn::Path, in_channels: i64) -> nn::SequentialT {
    let conv1 = same_conv(vs / "conv1", in_channels, 128, 8);
    let conv2 = same_conv(vs / "conv2", 128, 256, 4);
    let conv3 = same_conv(vs / "conv3", 256, 512, 2);
    nn::seq_t()
        .add_fn(move |x| conv1(x).relu().max_pool2d_default(4))
        .add_fn(move |x| conv2(x).relu().max_pool2d_default(2))
        .add_fn_t(|x, train| x.dropout(0.2, train))
        .add_fn(move |x| conv3(x).relu())
        .add_fn_t(|x, train| x.dropout(0.2, train))
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(vs / "fc1", 4 * 4 * 512, 256, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc2", 256, 64, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc3", 64, 10, Default::default()))
}
