//! Builds the trial's optimiser over a var store, and the L2 penalty, under the trial's
//! [`Semantics`].
//!
//! PyTorch semantics use libtorch's optimisers: Adam's epsilon (1e-8) is added after bias
//! correction, and `weight_decay` is the optimiser's L2 term on every parameter (decoupled for
//! AdamW). Keras semantics run [`KerasAdam`], Keras 2's Adam and AMSGrad (epsilon 1e-7 added
//! before bias correction), and `weight_decay` becomes `kernel_regularizer=l2(wd)`: a loss term
//! wd * sum(w^2) over every convolution kernel ([`l2_penalty`]), so no decay in the optimiser.

use sweep_proto::{Optimizer, Semantics, TrialSpec};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

/// Keras' `backend.epsilon()`, Adam's default epsilon.
pub const KERAS_EPSILON: f64 = 1e-7;

/// The trial's optimiser.
pub enum Optim {
    Torch(nn::Optimizer),
    Keras(KerasAdam),
}

impl Optim {
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Optim::Torch(opt) => opt.set_lr(lr),
            Optim::Keras(opt) => opt.lr = lr,
        }
    }

    /// Zeroes the gradients, back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) {
        match self {
            Optim::Torch(opt) => opt.backward_step(loss),
            Optim::Keras(opt) => {
                opt.zero_grad();
                loss.backward();
                opt.step();
            }
        }
    }
}

pub fn build(vs: &nn::VarStore, spec: &TrialSpec) -> Result<Optim, tch::TchError> {
    if spec.semantics == Semantics::Keras {
        let amsgrad = match spec.optimizer {
            Optimizer::Adam => false,
            Optimizer::Amsgrad => true,
            // TrialSpec::validate refuses these under Keras semantics.
            other => {
                return Err(tch::TchError::Kind(format!(
                    "optimizer {other:?} has no Keras implementation here"
                )))
            }
        };
        return Ok(Optim::Keras(KerasAdam::new(
            vs.trainable_variables(),
            spec.lr,
            amsgrad,
        )));
    }
    let wd = spec.weight_decay;
    let opt = match spec.optimizer {
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
    }?;
    Ok(Optim::Torch(opt))
}

/// Keras' `l2(wd)` on every convolution kernel (the 4-D trainable variables): wd * sum(w^2),
/// to be added to the loss. `None` when it adds nothing (PyTorch semantics or wd = 0).
pub fn l2_penalty(vs: &nn::VarStore, spec: &TrialSpec) -> Option<Tensor> {
    if spec.semantics != Semantics::Keras || spec.weight_decay == 0.0 {
        return None;
    }
    let kernels: Vec<Tensor> = vs
        .trainable_variables()
        .into_iter()
        .filter(|v| v.dim() == 4)
        .map(|w| (&w * &w).sum(Kind::Float))
        .collect();
    if kernels.is_empty() {
        return None;
    }
    Some(Tensor::stack(&kernels, 0).sum(Kind::Float) * spec.weight_decay)
}

/// Keras 2's Adam (and AMSGrad), step t = 1, 2, ...:
///
/// ```text
/// m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2        (AMSGrad: v^ = max(v^, v))
/// lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
/// w -= lr_t m / (sqrt(v) + eps)                                  (AMSGrad: sqrt(v^))
/// ```
///
/// with b1 = 0.9, b2 = 0.999, eps = 1e-7. PyTorch adds its epsilon to sqrt(v / (1 - b2^t))
/// instead, which is the same update only when epsilon is negligible.
pub struct KerasAdam {
    vars: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    v_max: Option<Vec<Tensor>>,
    step: i32,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl KerasAdam {
    pub fn new(vars: Vec<Tensor>, lr: f64, amsgrad: bool) -> KerasAdam {
        let zeros = |vars: &[Tensor]| vars.iter().map(Tensor::zeros_like).collect::<Vec<_>>();
        KerasAdam {
            m: zeros(&vars),
            v: zeros(&vars),
            v_max: amsgrad.then(|| zeros(&vars)),
            vars,
            step: 0,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: KERAS_EPSILON,
        }
    }

    pub fn zero_grad(&mut self) {
        for var in &self.vars {
            let mut grad = var.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    pub fn step(&mut self) {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let lr_t = self.lr * (1.0 - b2.powi(self.step)).sqrt() / (1.0 - b1.powi(self.step));
        tch::no_grad(|| {
            for i in 0..self.vars.len() {
                let grad = self.vars[i].grad();
                if !grad.defined() {
                    continue;
                }
                let m = &mut self.m[i];
                let _ = m.g_mul_scalar_(b1);
                let _ = m.g_add_(&(&grad * (1.0 - b1)));
                let v = &mut self.v[i];
                let _ = v.g_mul_scalar_(b2);
                let _ = v.g_add_(&(&grad * &grad * (1.0 - b2)));
                let second = match &mut self.v_max {
                    Some(v_max) => {
                        let bigger = v_max[i].maximum(&self.v[i]);
                        v_max[i].copy_(&bigger);
                        v_max[i].shallow_clone()
                    }
                    None => self.v[i].shallow_clone(),
                };
                let update = &self.m[i] * lr_t / (second.sqrt() + self.eps);
                let _ = self.vars[i].g_sub_(&update);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Keras' update rule written out in f64 for a scalar with gradient `grad(w)`.
    fn keras_reference(
        mut w: f64,
        grads: &dyn Fn(f64) -> f64,
        lr: f64,
        amsgrad: bool,
        steps: i32,
    ) -> f64 {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7);
        let (mut m, mut v, mut v_max) = (0.0, 0.0, 0.0f64);
        for t in 1..=steps {
            let g = grads(w);
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            v_max = v_max.max(v);
            let second = if amsgrad { v_max } else { v };
            let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
            w -= lr_t * m / (second.sqrt() + eps);
        }
        w
    }

    fn run_ours(
        w0: f64,
        loss: &dyn Fn(&Tensor) -> Tensor,
        lr: f64,
        amsgrad: bool,
        steps: i32,
    ) -> f64 {
        let w = Tensor::from_slice(&[w0 as f32]).set_requires_grad(true);
        let mut opt = Optim::Keras(KerasAdam::new(vec![w.shallow_clone()], lr, amsgrad));
        for _ in 0..steps {
            opt.backward_step(&loss(&w));
        }
        w.double_value(&[0])
    }

    /// Against the formula, on a loss whose gradient changes sign and size (so AMSGrad's
    /// running maximum matters), and on a gradient so small that where epsilon enters decides
    /// the step.
    #[test]
    fn keras_adam_and_amsgrad_follow_keras_formula() {
        let _lock = crate::test_rng_lock();
        // loss = (w - 3)^4 / 4, gradient (w - 3)^3.
        let quartic = |w: &Tensor| (w - 3.0).pow_tensor_scalar(4).sum(Kind::Float) / 4.0;
        let quartic_grad = |w: f64| (w - 3.0).powi(3);
        for amsgrad in [false, true] {
            let ours = run_ours(0.5, &quartic, 0.05, amsgrad, 40);
            let expect = keras_reference(0.5, &quartic_grad, 0.05, amsgrad, 40);
            assert!(
                (ours - expect).abs() < 1e-4,
                "amsgrad={amsgrad}: {ours} vs {expect}"
            );
        }
        // A gradient of 1e-7: Keras' first step is lr g / (|g| + eps / sqrt(1 - b2)), 3% of lr;
        // PyTorch's, lr g / (|g| + 1e-8), would be 91% of it.
        let tiny = |w: &Tensor| w.sum(Kind::Float) * 1e-7;
        let ours = run_ours(0.0, &tiny, 0.001, false, 1);
        let expect = keras_reference(0.0, &|_| 1e-7, 0.001, false, 1);
        assert!((ours - expect).abs() < 1e-8, "{ours} vs {expect}");
        assert!(ours < 0.0 && ours > -0.04 * 0.001, "a small step: {ours}");
    }

    /// l2(wd) adds wd * sum(w^2) of the convolution kernels only: biases, batch-norm and dense
    /// weights carry none, and its gradient on a kernel is 2 wd w.
    #[test]
    fn l2_penalty_is_on_convolution_kernels_only() {
        let _lock = crate::test_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = TrialSpec {
            semantics: Semantics::Keras,
            weight_decay: 1e-4,
            model: sweep_proto::Model::ResNet(20),
            ..TrialSpec::default()
        };
        let _net = crate::models::build(&vs.root(), spec.model, 3, spec.semantics);
        let penalty = l2_penalty(&vs, &spec).expect("a penalty");
        let mut expect = 0.0;
        for (name, var) in vs.variables() {
            if var.dim() == 4 {
                assert!(name.ends_with("weight"), "{name}");
                expect += (&var * &var).sum(Kind::Double).double_value(&[]);
            }
        }
        let got = penalty.double_value(&[]);
        assert!(
            (got / (1e-4 * expect) - 1.0).abs() < 1e-5,
            "{got} vs {}",
            1e-4 * expect
        );

        penalty.backward();
        for (name, var) in vs.variables() {
            let grad = var.grad();
            if var.dim() == 4 {
                let want = &var * 2e-4;
                assert!(grad.allclose(&want, 1e-6, 1e-9, false), "{name}");
            } else {
                assert!(
                    !grad.defined() || grad.abs().max().double_value(&[]) == 0.0,
                    "{name}"
                );
            }
        }
        let torch = TrialSpec {
            semantics: Semantics::Pytorch,
            ..spec
        };
        assert!(l2_penalty(&vs, &torch).is_none());
    }
}
