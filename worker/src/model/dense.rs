//! The study's first model: a 3072-1024-256-64-10 multilayer perceptron with ReLU.

use super::{Io, Layers};
use tch::nn;

pub fn dense(vs: &nn::Path, layers: Layers, io: Io) -> nn::SequentialT {
    let inputs = io.channels * io.size * io.size;
    nn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(layers.linear(vs / "fc1", inputs, 1024, true))
        .add_fn(|x| x.relu())
        .add(layers.linear(vs / "fc2", 1024, 256, true))
        .add_fn(|x| x.relu())
        .add(layers.linear(vs / "fc3", 256, 64, true))
        .add_fn(|x| x.relu())
        .add(layers.linear(vs / "fc4", 64, io.classes, true))
}
