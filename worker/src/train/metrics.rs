//! Loss and accuracy, including the binary-cross-entropy trap.
//!
//! The study changed only its loss to `binary_crossentropy` and kept its softmax output. Keras
//! 2 then computes, per image, the mean over the 10 outputs of
//! `-(y log(p + e) + (1 - y) log(1 - p + e))` with `p` the softmax clipped to [e, 1 - e],
//! e = 1e-7, and its `accuracy` metric becomes `binary_accuracy`: the mean over the 10 outputs
//! of `(p > 0.5) == y`. With softmax at most one output passes 0.5, so a model collapsed onto
//! one confident class scores 0.1 * 1.0 + 0.9 * 0.8 = 0.82 binary accuracy (the study's "82%
//! after 1 epoch") at about 10% true accuracy, with a loss of 2.768 in float32 (the study
//! logged 2.7665).
//! That is [`Loss::BinaryCrossEntropy`].
//!
//! [`Loss::SigmoidBinaryCrossEntropy`] is the other mistake, kept as an explicit choice: a
//! sigmoid per class (multi-label BCE), where answering "no" to every class scores 90%.
//!
//! Accuracy here is always true top-1 (argmax of the logits, the same under softmax or
//! sigmoid); the binary figure is reported beside it.

use sweep_proto::Loss;
use tch::{Kind, Reduction, Tensor};

/// Mean loss over the batch.
/// The training loss; `label_smoothing` applies to cross-entropy (validation rejects it for
/// BCE). Logits are taken in float32 whatever precision the forward pass ran in.
pub fn loss(logits: &Tensor, labels: &Tensor, kind: Loss, label_smoothing: f64) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    match kind {
        Loss::CrossEntropy => logits.cross_entropy_loss::<Tensor>(
            labels,
            None,
            Reduction::Mean,
            -100,
            label_smoothing,
        ),
        Loss::BinaryCrossEntropy => {
            keras_bce_on_softmax(&logits, &one_hot(labels, &logits, Kind::Float))
        }
        Loss::SigmoidBinaryCrossEntropy => {
            let targets = one_hot(labels, &logits, logits.kind());
            logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)
        }
    }
}

/// Keras' `epsilon()`: BCE clips probabilities to [e, 1 - e] and adds e inside the logs.
pub use sweep_proto::limits::KERAS_EPSILON;

/// Keras 2's `binary_crossentropy` on a softmax output (`from_logits=False`), averaged over
/// the outputs and the batch. The clip passes no gradient outside [e, 1 - e], as in TF.
fn keras_bce_on_softmax(logits: &Tensor, targets: &Tensor) -> Tensor {
    let e = KERAS_EPSILON;
    let p = logits.softmax(1, Kind::Float).clamp(e, 1.0 - e);
    // In float32 and in TF's order, `log(1 - p + e)` as `(1 - p) + e`: next to 1 these
    // roundings move the loss of a collapsed model by 0.01 (2.768 instead of 2.777).
    let pos = targets * (&p + e).log();
    let neg = (targets.ones_like() - targets) * (p.ones_like() - &p + e).log();
    -(pos + neg).mean(Kind::Float)
}

/// Which outputs say "yes" (probability above 0.5), for Keras' binary accuracy.
fn binary_predictions(logits: &Tensor, kind: Loss) -> Option<Tensor> {
    match kind {
        Loss::CrossEntropy => None,
        Loss::BinaryCrossEntropy => Some(logits.softmax(1, Kind::Float).gt(0.5)),
        // sigmoid(z) > 0.5  <=>  z > 0
        Loss::SigmoidBinaryCrossEntropy => Some(logits.gt(0.0)),
    }
}

/// One-hot targets as wide as the model's output (`logits`: `[B, classes]`).
fn one_hot(labels: &Tensor, logits: &Tensor, kind: Kind) -> Tensor {
    labels.one_hot(logits.size()[1]).to_kind(kind)
}

/// Sums over a set of batches, kept on the device so training never waits on the host.
pub struct Tally {
    kind: Loss,
    loss_sum: Tensor,
    correct: Tensor,
    binary_correct: Option<Tensor>,
    images: i64,
}

impl Tally {
    pub fn new(loss_kind: Loss, device: tch::Device) -> Tally {
        let zero = || Tensor::zeros([], (Kind::Double, device));
        Tally {
            kind: loss_kind,
            loss_sum: zero(),
            correct: zero(),
            binary_correct: (loss_kind != Loss::CrossEntropy).then(zero),
            images: 0,
        }
    }

    /// Adds one batch: its mean `loss`, `logits` and true `labels`.
    pub fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
        let n = labels.size()[0];
        let logits = logits.detach();
        self.loss_sum += loss.detach().to_kind(Kind::Double) * n as f64;
        self.correct += logits.argmax(1, false).eq_tensor(labels).sum(Kind::Double);
        if let (Some(b), Some(predicted)) = (
            &mut self.binary_correct,
            binary_predictions(&logits, self.kind),
        ) {
            let targets = one_hot(labels, &logits, Kind::Bool);
            *b += predicted.eq_tensor(&targets).sum(Kind::Double) / logits.size()[1] as f64;
        }
        self.images += n;
    }

    pub fn images(&self) -> i64 {
        self.images
    }

    /// (mean loss, top-1 accuracy, binary accuracy) — this synchronises with the device.
    pub fn finish(&self) -> (f64, f64, Option<f64>) {
        let n = self.images.max(1) as f64;
        (
            self.loss_sum.double_value(&[]) / n,
            self.correct.double_value(&[]) / n,
            self.binary_correct
                .as_ref()
                .map(|b| b.double_value(&[]) / n),
        )
    }
}

/// Accumulates `confusion[true][predicted]` on the device.
pub struct Confusion {
    counts: Tensor,
    classes: i64,
}

impl Confusion {
    pub fn new(device: tch::Device, classes: usize) -> Confusion {
        let classes = classes as i64;
        Confusion {
            counts: Tensor::zeros([classes * classes], (Kind::Int64, device)),
            classes,
        }
    }

    pub fn add(&mut self, logits: &Tensor, labels: &Tensor) {
        let pred = logits.argmax(1, false);
        let cell = labels * self.classes + pred;
        self.counts += cell.bincount::<Tensor>(None, self.classes * self.classes);
    }

    pub fn matrix(&self) -> Vec<Vec<u64>> {
        let flat: Vec<i64> =
            Vec::try_from(self.counts.to_device(tch::Device::Cpu)).unwrap_or_default();
        flat.chunks(self.classes.max(1) as usize)
            .map(|row| row.iter().map(|&v| v as u64).collect())
            .collect()
    }
}

/// Per-class recall from a confusion matrix (0 for a class with no images).
pub fn per_class_accuracy(confusion: &[Vec<u64>]) -> Vec<f64> {
    confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u64 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[c] as f64 / total as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_softmax_model_collapsed_onto_one_class_scores_the_studys_82_percent() {
        // The study's BCE row: softmax output, every image put in class 0 with certainty, ten
        // images one per class. Keras' binary accuracy: the right image scores 10/10, each
        // other 8/10 (its true class and class 0 wrong): 0.1 * 1.0 + 0.9 * 0.8 = 0.82.
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let logits = Tensor::zeros([10, 10], (Kind::Float, Device::Cpu));
        let _ = logits.narrow(1, 0, 1).fill_(40.0);
        let kind = Loss::BinaryCrossEntropy;
        let mut t = Tally::new(kind, Device::Cpu);
        t.add(&loss(&logits, &labels, kind, 0.0), &logits, &labels);
        let (l, acc, bin) = t.finish();
        assert!((acc - 0.1).abs() < 1e-12, "{acc}");
        assert!((bin.unwrap() - 0.82).abs() < 1e-12, "{bin:?}");
        // Per wrong image two outputs cost almost everything: the true class, clipped to e,
        // -ln(e + e); the chosen one, clipped to 1 - e, -ln((1 - (1 - e)) + e), both in float32
        // as TF computes them. The right image costs almost nothing. The study logged 2.7665.
        let e = KERAS_EPSILON as f32;
        let top = 1.0f32 - e;
        let want = 0.9 * (-(e + e).ln() - ((1.0f32 - top) + e).ln()) as f64 / 10.0;
        assert!((l - want).abs() < 1e-3, "{l} vs {want}");
        assert!((l - 2.7665).abs() < 0.005, "{l} vs the study's 2.7665");
    }

    #[test]
    fn keras_bce_matches_its_formula_on_a_soft_prediction() {
        let logits = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 0.0, 0.5, -0.7, 1.1, 0.2, -2.0, 0.9])
            .view([1, 10]);
        let labels = Tensor::from_slice(&[2i64]);
        let got = loss(&logits, &labels, Loss::BinaryCrossEntropy, 0.0).double_value(&[]);
        let z: Vec<f64> = Vec::<f32>::try_from(logits.view([10]))
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let sum: f64 = z.iter().map(|v| v.exp()).sum();
        let e = KERAS_EPSILON;
        let want = z
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let p = (v.exp() / sum).clamp(e, 1.0 - e);
                let y = if i == 2 { 1.0 } else { 0.0 };
                -(y * (p + e).ln() + (1.0 - y) * (1.0 - p + e).ln())
            })
            .sum::<f64>()
            / 10.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn all_negative_sigmoid_outputs_score_ninety_percent_binary_accuracy() {
        // The sigmoid variant: a model that says "no" to every class: top-1 is whatever argmax
        // picks (class 0), but binary accuracy is exactly 9/10 for every image.
        let logits = Tensor::full([8, 10], -5.0, (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]);
        let kind = Loss::SigmoidBinaryCrossEntropy;
        let mut t = Tally::new(kind, Device::Cpu);
        t.add(&loss(&logits, &labels, kind, 0.0), &logits, &labels);
        let (l, acc, bin) = t.finish();
        assert_eq!(acc, 0.0);
        assert!((bin.unwrap() - 0.9).abs() < 1e-12);
        // BCE of sigmoid(-5) against one-hot: (9 * -ln(1 - s) + -ln(s)) / 10
        let s = 1.0 / (1.0 + 5f64.exp());
        let want = (9.0 * -(1.0 - s).ln() - s.ln()) / 10.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    }

    #[test]
    fn perfect_predictions() {
        let labels = Tensor::from_slice(&[0i64, 3, 9, 3]);
        let logits = labels.one_hot(10).to_kind(Kind::Float) * 20.0 - 10.0;
        for kind in [Loss::BinaryCrossEntropy, Loss::SigmoidBinaryCrossEntropy] {
            let mut t = Tally::new(kind, Device::Cpu);
            t.add(&loss(&logits, &labels, kind, 0.0), &logits, &labels);
            let (_, acc, bin) = t.finish();
            assert_eq!((acc, bin), (1.0, Some(1.0)), "{kind:?}");
        }

        let mut c = Confusion::new(Device::Cpu, 10);
        c.add(&logits, &labels);
        let m = c.matrix();
        assert_eq!(m[3][3], 2);
        assert_eq!(m.iter().flatten().sum::<u64>(), 4);
        let pc = per_class_accuracy(&m);
        assert_eq!((pc[0], pc[3], pc[1]), (1.0, 1.0, 0.0));
    }

    #[test]
    fn cross_entropy_matches_formula() {
        let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .view([1, 10]);
        let labels = Tensor::from_slice(&[2i64]);
        let l = loss(&logits, &labels, Loss::CrossEntropy, 0.0).double_value(&[]);
        let z: f64 = [1f64, 2.0, 3.0].iter().map(|v| v.exp()).sum::<f64>() + 7.0;
        assert!((l - (z.ln() - 3.0)).abs() < 1e-5);
        let mut t = Tally::new(Loss::CrossEntropy, Device::Cpu);
        t.add(&Tensor::from(l), &logits, &labels);
        assert_eq!(t.finish().2, None);

        // Smoothing e: target (1 - e) on the label plus e/10 on every class.
        let e = 0.2;
        let smoothed = loss(&logits, &labels, Loss::CrossEntropy, e).double_value(&[]);
        let log_p: Vec<f64> = [1f64, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            .iter()
            .map(|v| v - z.ln())
            .collect();
        let want = -(1.0 - e) * log_p[2] - e / 10.0 * log_p.iter().sum::<f64>();
        assert!((smoothed - want).abs() < 1e-5, "{smoothed} vs {want}");
    }
}
