//! Builds the trial's optimiser over a var store, and the L2 penalty, under the trial's
//! [`Semantics`].
//!
//! PyTorch semantics use libtorch's optimisers: Adam's epsilon (1e-8) is added after bias
//! correction, and `weight_decay` is the optimiser's L2 term on every parameter (decoupled for
//! AdamW). Keras semantics run [`KerasAdam`], Keras 2's Adam and AMSGrad (epsilon 1e-7 added
//! before bias correction), and `weight_decay` becomes `kernel_regularizer=l2(wd)`: a loss term
//! wd * sum(w^2) over every convolution kernel ([`l2_penalty`]), so no decay in the optimiser.

use sweep_proto::{Optimizer, Semantics, TrialSpec};
use tch::nn;
use tch::{Kind, Tensor};

/// Keras' `backend.epsilon()`, Adam's default epsilon.
pub use sweep_proto::limits::KERAS_EPSILON;

/// The trial's optimiser. PyTorch's SGD, Adam, AMSGrad and AdamW are written out here (as
/// libtorch's C++ optimisers compute them) rather than taken from libtorch, whose state tch
/// cannot read: a checkpoint must carry the momentum and moment buffers for a resumed trial to
/// train on exactly as an uninterrupted one (`optimizers_follow_libtorch` checks the match).
pub enum Optim {
    Sgd(Sgd),
    Adam(Adam),
    Keras(KerasAdam),
}

impl Optim {
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Optim::Sgd(opt) => opt.lr = lr,
            Optim::Adam(opt) => opt.lr = lr,
            Optim::Keras(opt) => opt.lr = lr,
        }
    }

    /// Momentum and weight decay from now on (a trial's `changes`); the buffers are kept.
    /// Keras' L2 is a loss term ([`l2_penalty`]), so it has none here.
    pub fn set_hyper(&mut self, momentum: f64, weight_decay: f64) {
        match self {
            Optim::Sgd(opt) => {
                opt.momentum = momentum;
                opt.wd = weight_decay;
            }
            Optim::Adam(opt) => opt.wd = weight_decay,
            Optim::Keras(_) => {}
        }
    }

    /// Zeroes the gradients, back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) {
        let vars = match self {
            Optim::Sgd(opt) => &opt.vars,
            Optim::Adam(opt) => &opt.vars,
            Optim::Keras(opt) => &opt.vars,
        };
        zero_grad(vars);
        loss.backward();
        tch::no_grad(|| match self {
            Optim::Sgd(opt) => opt.step(),
            Optim::Adam(opt) => opt.step(),
            Optim::Keras(opt) => opt.step(),
        });
        // The next forward pass must see these weights, not autocast's cached bf16 copies.
        crate::model::amp::weights_changed();
    }

    /// The state a checkpoint needs, as named tensors plus the step count.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut named = Vec::new();
        let mut add = |what: &str, list: &[Tensor]| {
            for (i, t) in list.iter().enumerate() {
                named.push((format!("{what}.{i}"), t.shallow_clone()));
            }
        };
        let step = match self {
            Optim::Sgd(opt) => {
                let defined: Vec<Tensor> = opt
                    .buf
                    .iter()
                    .flatten()
                    .map(Tensor::shallow_clone)
                    .collect();
                if defined.len() == opt.vars.len() {
                    add("buf", &defined);
                }
                opt.steps
            }
            Optim::Adam(opt) => {
                add("m", &opt.m);
                add("v", &opt.v);
                if let Some(v_max) = &opt.v_max {
                    add("v_max", v_max);
                }
                opt.step
            }
            Optim::Keras(opt) => {
                add("m", &opt.m);
                add("v", &opt.v);
                if let Some(v_max) = &opt.v_max {
                    add("v_max", v_max);
                }
                opt.step as u64
            }
        };
        (named, step)
    }

    /// The state tensors a checkpoint after `step` steps must hold, with their shapes.
    fn required(&self, step: u64) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        let mut each = |what: &str, vars: &[Tensor]| {
            for (i, v) in vars.iter().enumerate() {
                out.push((format!("{what}.{i}"), v.size()));
            }
        };
        match self {
            Optim::Sgd(opt) => {
                if step > 0 && opt.momentum != 0.0 {
                    each("buf", &opt.vars);
                }
            }
            Optim::Adam(Adam { vars, v_max, .. }) | Optim::Keras(KerasAdam { vars, v_max, .. }) => {
                each("m", vars);
                each("v", vars);
                if v_max.is_some() {
                    each("v_max", vars);
                }
            }
        }
        out
    }

    /// Restores what [`Optim::state`] saved into this (freshly built) optimiser. Everything is
    /// checked before anything changes: on an error the optimiser is as it was.
    pub fn load_state(
        &mut self,
        named: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        for (name, shape) in self.required(step) {
            match named.get(&name) {
                None => return Err(format!("the checkpoint has no optimizer state {name}")),
                Some(t) if t.size() != shape => {
                    return Err(format!(
                        "optimizer state {name} has shape {:?}, the model needs {shape:?}",
                        t.size()
                    ))
                }
                Some(_) => {}
            }
        }
        let fill = |what: &str, list: &mut [Tensor]| -> Result<(), String> {
            for (i, t) in list.iter_mut().enumerate() {
                let saved = named
                    .get(&format!("{what}.{i}"))
                    .ok_or_else(|| format!("the checkpoint has no optimizer state {what}.{i}"))?;
                if saved.size() != t.size() {
                    return Err(format!(
                        "optimizer state {what}.{i} has shape {:?}, the model needs {:?}",
                        saved.size(),
                        t.size()
                    ));
                }
                tch::no_grad(|| t.copy_(saved));
            }
            Ok(())
        };
        match self {
            Optim::Sgd(opt) => {
                opt.steps = step;
                if step > 0 && opt.momentum != 0.0 {
                    let mut bufs: Vec<Tensor> = opt.vars.iter().map(Tensor::zeros_like).collect();
                    fill("buf", &mut bufs)?;
                    opt.buf = bufs.into_iter().map(Some).collect();
                }
            }
            Optim::Adam(opt) => {
                opt.step = step;
                fill("m", &mut opt.m)?;
                fill("v", &mut opt.v)?;
                if let Some(v_max) = &mut opt.v_max {
                    fill("v_max", v_max)?;
                }
            }
            Optim::Keras(opt) => {
                opt.step = step as i32;
                fill("m", &mut opt.m)?;
                fill("v", &mut opt.v)?;
                if let Some(v_max) = &mut opt.v_max {
                    fill("v_max", v_max)?;
                }
            }
        }
        Ok(())
    }
}

fn zero_grad(vars: &[Tensor]) {
    for var in vars {
        let mut grad = var.grad();
        if grad.defined() {
            let _ = grad.detach_();
            let _ = grad.zero_();
        }
    }
}

/// PyTorch's SGD (dampening 0): d = g + wd w; b = d at the first step, then momentum b + d;
/// with Nesterov d + momentum b, else b; w -= lr d.
pub struct Sgd {
    vars: Vec<Tensor>,
    buf: Vec<Option<Tensor>>,
    steps: u64,
    pub lr: f64,
    momentum: f64,
    wd: f64,
    nesterov: bool,
}

impl Sgd {
    fn step(&mut self) {
        self.steps += 1;
        for (var, buf) in self.vars.iter_mut().zip(self.buf.iter_mut()) {
            let grad = var.grad();
            if !grad.defined() {
                continue;
            }
            let mut d = if self.wd != 0.0 {
                &grad + &*var * self.wd
            } else {
                grad
            };
            if self.momentum != 0.0 {
                let b = match buf {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(self.momentum);
                        let _ = b.g_add_(&d);
                        b.shallow_clone()
                    }
                    None => buf.insert(d.copy()).shallow_clone(),
                };
                d = if self.nesterov {
                    &d + &b * self.momentum
                } else {
                    b
                };
            }
            let _ = var.g_sub_(&(d * self.lr));
        }
    }
}

/// The moment updates of variable `i` that PyTorch's and Keras' Adam share:
/// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2; returns v, or with AMSGrad (`v_max`) the
/// running maximum of v, for the denominator.
fn moments(
    m: &mut [Tensor],
    v: &mut [Tensor],
    v_max: &mut Option<Vec<Tensor>>,
    i: usize,
    grad: &Tensor,
    (b1, b2): (f64, f64),
) -> Tensor {
    let _ = m[i].g_mul_scalar_(b1);
    let _ = m[i].g_add_(&(grad * (1.0 - b1)));
    let _ = v[i].g_mul_scalar_(b2);
    let _ = v[i].g_add_(&(grad * grad * (1.0 - b2)));
    match v_max {
        Some(v_max) => {
            let bigger = v_max[i].maximum(&v[i]);
            v_max[i].copy_(&bigger);
            v_max[i].shallow_clone()
        }
        None => v[i].shallow_clone(),
    }
}

/// PyTorch's Adam, AMSGrad and AdamW (b1 0.9, b2 0.999, eps 1e-8), step t = 1, 2, ...:
///
/// ```text
/// AdamW: w *= 1 - lr wd                  Adam: g += wd w
/// m = b1 m + (1 - b1) g                  v = b2 v + (1 - b2) g^2      (AMSGrad: v^ = max(v^, v))
/// w -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
pub struct Adam {
    vars: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    v_max: Option<Vec<Tensor>>,
    step: u64,
    pub lr: f64,
    wd: f64,
    decoupled: bool,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(vars: Vec<Tensor>, lr: f64, wd: f64, amsgrad: bool, decoupled: bool) -> Adam {
        let zeros = |vars: &[Tensor]| vars.iter().map(Tensor::zeros_like).collect::<Vec<_>>();
        Adam {
            m: zeros(&vars),
            v: zeros(&vars),
            v_max: amsgrad.then(|| zeros(&vars)),
            vars,
            step: 0,
            lr,
            wd,
            decoupled,
        }
    }

    fn step(&mut self) {
        self.step += 1;
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        let bc1 = 1.0 - b1.powf(self.step as f64);
        let bc2 = 1.0 - b2.powf(self.step as f64);
        for i in 0..self.vars.len() {
            let var = &mut self.vars[i];
            let mut grad = var.grad();
            if !grad.defined() {
                continue;
            }
            if self.decoupled {
                let _ = var.g_mul_scalar_(1.0 - self.lr * self.wd);
            } else if self.wd != 0.0 {
                grad = &grad + &*var * self.wd;
            }
            let second = moments(
                &mut self.m,
                &mut self.v,
                &mut self.v_max,
                i,
                &grad,
                (b1, b2),
            );
            let denom = second.sqrt() / bc2.sqrt() + Self::EPS;
            let _ = self.vars[i].g_sub_(&(&self.m[i] / denom * (self.lr / bc1)));
        }
    }
}

pub fn build(vs: &nn::VarStore, spec: &TrialSpec) -> Result<Optim, tch::TchError> {
    let vars = vs.trainable_variables();
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
        return Ok(Optim::Keras(KerasAdam::new(vars, spec.lr, amsgrad)));
    }
    let wd = spec.weight_decay;
    Ok(match spec.optimizer {
        Optimizer::Sgd => Optim::Sgd(Sgd {
            buf: vars.iter().map(|_| None).collect(),
            vars,
            steps: 0,
            lr: spec.lr,
            momentum: spec.momentum,
            wd,
            nesterov: spec.nesterov,
        }),
        Optimizer::Adam => Optim::Adam(Adam::new(vars, spec.lr, wd, false, false)),
        Optimizer::Amsgrad => Optim::Adam(Adam::new(vars, spec.lr, wd, true, false)),
        Optimizer::Adamw => Optim::Adam(Adam::new(vars, spec.lr, wd, false, true)),
    })
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
                let second = moments(
                    &mut self.m,
                    &mut self.v,
                    &mut self.v_max,
                    i,
                    &grad,
                    (b1, b2),
                );
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

    /// Under bf16 autocast (held for a whole trial), each step's forward pass runs on the
    /// weights the previous step left, not on the cast autocast cached at the first one. With
    /// the cache kept, the second output equalled the first and `fast` trained to 28%.
    #[test]
    fn bf16_steps_see_the_weights_of_the_previous_step() {
        let _lock = crate::test_rng_lock();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let conv = nn::conv2d(vs.root(), 3, 4, 3, Default::default());
        let spec = TrialSpec {
            optimizer: Optimizer::Sgd,
            lr: 0.5,
            ..TrialSpec::default()
        };
        let mut opt = build(&vs, &spec).unwrap();
        let x = Tensor::rand([2, 3, 6, 6], (Kind::Float, tch::Device::Cpu));
        let (_autocast, note) = crate::model::amp::enable(
            sweep_proto::Precision::Bf16,
            tch::Device::Cpu,
            crate::model::amp::bf16_works,
        );
        assert!(note.is_none(), "{note:?}");
        let first = x.apply(&conv);
        assert_eq!(first.kind(), Kind::BFloat16, "autocast is on");
        opt.backward_step(&first.to_kind(Kind::Float).square().mean(Kind::Float));
        let second = x.apply(&conv);
        let moved = (&second - &first).abs().max().double_value(&[]);
        assert!(
            moved > 1e-2,
            "the step did not reach the forward pass: {moved}"
        );
        // And that output is the new weights' own (as an fp32 pass computes it).
        drop(_autocast);
        let fp32 = x.apply(&conv);
        let off = (second.to_kind(Kind::Float) - fp32)
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            off < 0.05,
            "bf16 output differs from the weights' fp32 output by {off}"
        );
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

    /// Ours against libtorch's own optimisers (what trials used before checkpoints), from the
    /// same start on the same batches: the same weights up to float rounding (libtorch fuses
    /// some multiply-adds), for every optimiser and the options that change the update.
    #[test]
    fn optimizers_follow_libtorch() {
        use tch::nn::{Module, OptimizerConfig};
        let _lock = crate::test_rng_lock();
        let cases: Vec<(&str, TrialSpec)> = vec![
            (
                "sgd",
                TrialSpec {
                    optimizer: Optimizer::Sgd,
                    momentum: 0.0,
                    lr: 0.1,
                    ..TrialSpec::default()
                },
            ),
            (
                "sgd momentum wd",
                TrialSpec {
                    optimizer: Optimizer::Sgd,
                    momentum: 0.9,
                    weight_decay: 0.01,
                    lr: 0.05,
                    ..TrialSpec::default()
                },
            ),
            (
                "sgd nesterov",
                TrialSpec {
                    optimizer: Optimizer::Sgd,
                    momentum: 0.9,
                    nesterov: true,
                    lr: 0.05,
                    ..TrialSpec::default()
                },
            ),
            (
                "adam wd",
                TrialSpec {
                    optimizer: Optimizer::Adam,
                    weight_decay: 0.01,
                    lr: 0.01,
                    ..TrialSpec::default()
                },
            ),
            (
                "amsgrad",
                TrialSpec {
                    optimizer: Optimizer::Amsgrad,
                    lr: 0.01,
                    ..TrialSpec::default()
                },
            ),
            (
                "adamw",
                TrialSpec {
                    optimizer: Optimizer::Adamw,
                    weight_decay: 0.1,
                    lr: 0.01,
                    ..TrialSpec::default()
                },
            ),
        ];
        tch::manual_seed(7);
        let x = Tensor::randn([64, 20], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(5, [64], (Kind::Int64, Device::Cpu));
        for (name, spec) in cases {
            let net = |vs: &nn::VarStore| {
                let p = vs.root();
                nn::seq()
                    .add(nn::linear(&p / "a", 20, 16, Default::default()))
                    .add_fn(|t| t.relu())
                    .add(nn::linear(&p / "b", 16, 5, Default::default()))
            };
            let (theirs_vs, ours_vs) = (
                nn::VarStore::new(Device::Cpu),
                nn::VarStore::new(Device::Cpu),
            );
            let (theirs_net, ours_net) = (net(&theirs_vs), net(&ours_vs));
            let mut ours_vs = ours_vs;
            ours_vs.copy(&theirs_vs).unwrap();
            let wd = spec.weight_decay;
            let mut theirs = match spec.optimizer {
                Optimizer::Sgd => nn::Sgd {
                    momentum: spec.momentum,
                    dampening: 0.0,
                    wd,
                    nesterov: spec.nesterov,
                }
                .build(&theirs_vs, spec.lr),
                Optimizer::Adam => nn::Adam {
                    wd,
                    ..Default::default()
                }
                .build(&theirs_vs, spec.lr),
                Optimizer::Amsgrad => nn::Adam {
                    wd,
                    amsgrad: true,
                    ..Default::default()
                }
                .build(&theirs_vs, spec.lr),
                Optimizer::Adamw => nn::AdamW {
                    wd,
                    ..Default::default()
                }
                .build(&theirs_vs, spec.lr),
            }
            .unwrap();
            let mut ours = build(&ours_vs, &spec).unwrap();
            for _ in 0..30 {
                theirs.backward_step(&theirs_net.forward(&x).cross_entropy_for_logits(&y));
                ours.backward_step(&ours_net.forward(&x).cross_entropy_for_logits(&y));
            }
            for (k, theirs) in theirs_vs.variables() {
                let ours = &ours_vs.variables()[&k];
                let gap = (ours - &theirs).abs().max().double_value(&[]);
                assert!(gap < 1e-5, "{name}: {k} differs by {gap}");
                assert!(
                    gap < (theirs.abs().max().double_value(&[])),
                    "{name}: {k} moved"
                );
            }
        }
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
        let _net = crate::model::build(
            &vs.root(),
            spec.model,
            crate::model::Io::cifar10(3),
            spec.semantics,
        );
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
