//! The study's first model: a 3072-1024-256-64-10 multilayer perceptron with ReLU.

use tch::nn;

pub fn dense(vs: &nn::Path, in_channels: i64) -> nn::SequentialT {
    let inputs = in_channels * 32 * 32;
    nn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(vs / "fc1", inputs, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc2", 1024, 256, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc3", 256, 64, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc4", 64, 10, Default::default()))
}
