//! Builds the trial's optimiser over a var store.

use sweep_proto::{Optimizer, TrialSpec};
use tch::nn::{self, OptimizerConfig};

pub fn build(vs: &nn::VarStore, spec: &TrialSpec) -> Result<nn::Optimizer, tch::TchError> {
    let wd = spec.weight_decay;
    match spec.optimizer {
        Optimizer::Sgd => nn::Sgd {
            momentum: spec.momentum,
            dampening: 0.0,
            wd,
            nesterov: spec.nesterov,
        }
        .build(vs, spec.lr),
        Optimizer::Adam => nn::Adam {
            wd,
            ..Default::default()
        }
        .build(vs, spec.lr),
        Optimizer::Amsgrad => nn::Adam {
            wd,
            amsgrad: true,
            ..Default::default()
        }
        .build(vs, spec.lr),
        Optimizer::Adamw => nn::AdamW {
            wd,
            ..Default::default()
        }
        .build(vs, spec.lr),
    }
}
