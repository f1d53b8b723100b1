//! Loss and accuracy, including the binary-cross-entropy trap.
//!
//! With a sigmoid per class and one-hot targets, Keras' `accuracy` metric becomes
//! `binary_accuracy`: the fraction of the 10 outputs per image on the right side of 0.5.
//! Predicting "no" for every class already scores 90%, which is the study's "90%" trap.
//! Accuracy here is always true top-1 (argmax); the binary figure is reported beside it.

use sweep_proto::Loss;
use tch::{Kind, Reduction, Tensor};

use crate::data::NUM_CLASSES;

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
            let targets = one_hot(labels, logits.kind());
            logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)
        }
    }
}

fn one_hot(labels: &Tensor, kind: Kind) -> Tensor {
    labels.one_hot(NUM_CLASSES as i64).to_kind(kind)
}

/// Sums over a set of batches, kept on the device so training never waits on the host.
pub struct Tally {
    loss_sum: Tensor,
    correct: Tensor,
    binary_correct: Option<Tensor>,
    images: i64,
}

impl Tally {
    pub fn new(loss_kind: Loss, device: tch::Device) -> Tally {
        let zero = || Tensor::zeros([], (Kind::Double, device));
        Tally {
            loss_sum: zero(),
            correct: zero(),
            binary_correct: (loss_kind == Loss::BinaryCrossEntropy).then(zero),
            images: 0,
        }
    }

    /// Adds one batch: its mean `loss`, `logits` and true `labels`.
    pub fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
        let n = labels.size()[0];
        let logits = logits.detach();
        self.loss_sum += loss.detach().to_kind(Kind::Double) * n as f64;
        self.correct += logits.argmax(1, false).eq_tensor(labels).sum(Kind::Double);
        if let Some(b) = &mut self.binary_correct {
            // sigmoid(z) > 0.5  <=>  z > 0
            let predicted = logits.gt(0.0);
            let targets = one_hot(labels, Kind::Bool);
            *b += predicted.eq_tensor(&targets).sum(Kind::Double) / NUM_CLASSES as f64;
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
}

impl Confusion {
    pub fn new(device: tch::Device) -> Confusion {
        Confusion {
            counts: Tensor::zeros([(NUM_CLASSES * NUM_CLASSES) as i64], (Kind::Int64, device)),
        }
    }

    pub fn add(&mut self, logits: &Tensor, labels: &Tensor) {
        let pred = logits.argmax(1, false);
        let cell = labels * NUM_CLASSES as i64 + pred;
        self.counts += cell.bincount::<Tensor>(None, (NUM_CLASSES * NUM_CLASSES) as i64);
    }

    pub fn matrix(&self) -> Vec<Vec<u64>> {
        let flat: Vec<i64> =
            Vec::try_from(self.counts.to_device(tch::Device::Cpu)).unwrap_or_default();
        flat.chunks(NUM_CLASSES)
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
    fn all_negative_sigmoid_outputs_score_ninety_percent_binary_accuracy() {
        // A model that says "no" to every class: top-1 is whatever argmax picks (class 0),
        // but Keras' binary accuracy is exactly 9/10 for every image.
        let logits = Tensor::full([8, 10], -5.0, (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]);
        let mut t = Tally::new(Loss::BinaryCrossEntropy, Device::Cpu);
        t.add(
            &loss(&logits, &labels, Loss::BinaryCrossEntropy, 0.0),
            &logits,
            &labels,
        );
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
        let mut t = Tally::new(Loss::BinaryCrossEntropy, Device::Cpu);
        t.add(
            &loss(&logits, &labels, Loss::BinaryCrossEntropy, 0.0),
            &logits,
            &labels,
        );
        let (_, acc, bin) = t.finish();
        assert_eq!((acc, bin), (1.0, Some(1.0)));

        let mut c = Confusion::new(Device::Cpu);
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
