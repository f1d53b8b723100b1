//! What a worker reports for one trial.

use serde::{Deserialize, Serialize};

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialStatus {
    /// Trained all epochs and was evaluated on the test set.
    Completed,
    /// The training loss became NaN or infinite; `epochs` keeps the last good metrics.
    Diverged,
    /// Could not run (bad data, out of memory, ...); `reason` says why.
    Failed,
}

/// Metrics of one finished epoch. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    pub train_loss: f64,
    /// True top-1 (argmax) accuracy over the epoch's training batches.
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Keras-style per-element binary accuracy; only for binary cross-entropy trials.
    pub train_binary_accuracy: Option<f64>,
    pub val_binary_accuracy: Option<f64>,
    /// Learning rate at the start of the epoch.
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// Test-set evaluation at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    pub loss: f64,
    /// True top-1 accuracy.
    pub accuracy: f64,
    /// What Keras' `accuracy` metric would show for binary cross-entropy: the fraction of the
    /// 10 sigmoid outputs per image on the right side of 0.5. Only for binary cross-entropy.
    pub binary_accuracy: Option<f64>,
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true_class][predicted_class]` image counts.
    pub confusion: Vec<Vec<u64>>,
    pub images: u64,
}

/// The whole outcome of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub status: TrialStatus,
    pub reason: Option<String>,
    pub epochs: Vec<EpochMetrics>,
    pub test: Option<TestMetrics>,
    pub best_val_accuracy: Option<f64>,
    pub train_images: u64,
    pub val_images: u64,
    pub parameters: u64,
    /// e.g. "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)".
    pub device: String,
    pub seconds: f64,
    /// Things the user should know about how the trial ran, e.g. a bf16 request that fell
    /// back to fp32 on a device without bf16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Only for [`TrialStatus::Diverged`]: the 1-based epoch whose loss was not finite (the
    /// metrics of that epoch cannot be represented and are not in `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_epoch: Option<u32>,
}

/// A value that cannot be true, with the field that holds it (e.g. `epochs[3].val_accuracy`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidResult {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> InvalidResult {
    InvalidResult {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Largest magnitude accepted for a loss, a time or a rate: far beyond any real value, small
/// enough that a chart's axis (value * 1.05) stays finite.
pub const MAX_VALUE: f64 = 1e12;

fn fraction(field: &str, v: f64) -> Result<(), InvalidResult> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is not a fraction in [0, 1]")))
    }
}

fn amount(field: &str, v: f64) -> Result<(), InvalidResult> {
    if v.is_finite() && (0.0..=MAX_VALUE).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is not a finite value in [0, {MAX_VALUE:e}]")))
    }
}

fn opt(field: &str, v: Option<f64>, check: fn(&str, f64) -> Result<(), InvalidResult>) -> Result<(), InvalidResult> {
    v.map_or(Ok(()), |v| check(field, v))
}

impl EpochMetrics {
    /// Refuses values that cannot be true (accuracies outside [0, 1], negative, huge or
    /// non-finite losses and times), naming the field under `at` (e.g. `epochs[2]`).
    pub fn validate(&self, at: &str) -> Result<(), InvalidResult> {
        let f = |name: &str| format!("{at}.{name}");
        if self.epoch == 0 {
            return Err(bad(f("epoch"), "epochs are numbered from 1"));
        }
        amount(&f("train_loss"), self.train_loss)?;
        fraction(&f("train_accuracy"), self.train_accuracy)?;
        opt(&f("val_loss"), self.val_loss, amount)?;
        opt(&f("val_accuracy"), self.val_accuracy, fraction)?;
        opt(&f("train_binary_accuracy"), self.train_binary_accuracy, fraction)?;
        opt(&f("val_binary_accuracy"), self.val_binary_accuracy, fraction)?;
        amount(&f("lr"), self.lr)?;
        amount(&f("seconds"), self.seconds)?;
        amount(&f("images_per_sec"), self.images_per_sec)
    }
}

impl TestMetrics {
    fn validate(&self) -> Result<(), InvalidResult> {
        amount("test.loss", self.loss)?;
        fraction("test.accuracy", self.accuracy)?;
        opt("test.binary_accuracy", self.binary_accuracy, fraction)?;
        let classes = self.per_class_accuracy.len();
        if !(2..=1000).contains(&classes) {
            return Err(bad("test.per_class_accuracy", format!("{classes} classes (expected 2 to 1000)")));
        }
        for (i, &a) in self.per_class_accuracy.iter().enumerate() {
            fraction(&format!("test.per_class_accuracy[{i}]"), a)?;
        }
        if self.confusion.len() != classes || self.confusion.iter().any(|r| r.len() != classes) {
            return Err(bad("test.confusion", format!("not a {classes}x{classes} matrix")));
        }
        let total = self
            .confusion
            .iter()
            .flatten()
            .try_fold(0u64, |a, &n| a.checked_add(n));
        if total != Some(self.images) {
            return Err(bad(
                "test.confusion",
                format!("counts {} images, test.images says {}", total.map_or("too many".into(), |t| t.to_string()), self.images),
            ));
        }
        Ok(())
    }
}

/// Longest text accepted in `reason`, `device` and each note.
pub const MAX_TEXT: usize = 4096;

impl TrialResult {
    /// Refuses a result that cannot be true: out-of-range or non-finite values, test metrics on
    /// a trial that did not complete, a completed trial without them, a diverged trial without
    /// its epoch. The error names the field.
    pub fn validate(&self) -> Result<(), InvalidResult> {
        for (i, e) in self.epochs.iter().enumerate() {
            e.validate(&format!("epochs[{i}]"))?;
        }
        match (self.status, &self.test) {
            (TrialStatus::Completed, None) => {
                return Err(bad("test", "a completed trial needs its test metrics"))
            }
            (TrialStatus::Completed, Some(t)) => t.validate()?,
            (status, Some(_)) => {
                return Err(bad("test", format!("a {status:?} trial has no test metrics")))
            }
            _ => {}
        }
        match (self.status, self.diverged_epoch) {
            (TrialStatus::Diverged, None) => {
                return Err(bad("diverged_epoch", "a diverged trial says in which epoch"))
            }
            (TrialStatus::Diverged, Some(0)) => {
                return Err(bad("diverged_epoch", "epochs are numbered from 1"))
            }
            (TrialStatus::Diverged, Some(_)) => {}
            (_, Some(_)) => return Err(bad("diverged_epoch", "only for a diverged trial")),
            (_, None) => {}
        }
        if self.status == TrialStatus::Failed && self.reason.as_deref().is_none_or(str::is_empty) {
            return Err(bad("reason", "a failed trial says why"));
        }
        opt("best_val_accuracy", self.best_val_accuracy, fraction)?;
        amount("seconds", self.seconds)?;
        let texts = self.reason.iter().map(|r| ("reason".to_string(), r)).chain([("device".to_string(), &self.device)]);
        let notes = self.notes.iter().enumerate().map(|(i, n)| (format!("notes[{i}]"), n));
        for (field, text) in texts.chain(notes) {
            if text.len() > MAX_TEXT {
                return Err(bad(field, format!("{} bytes, over {MAX_TEXT}", text.len())));
            }
        }
        Ok(())
    }
}

impl TrialResult {
    /// A trial that could not run, with the reason.
    pub fn failed(reason: String, device: String) -> TrialResult {
        TrialResult {
            status: TrialStatus::Failed,
            reason: Some(reason),
            epochs: Vec::new(),
            test: None,
            best_val_accuracy: None,
            train_images: 0,
            val_images: 0,
            parameters: 0,
            device,
            seconds: 0.0,
            notes: Vec::new(),
            diverged_epoch: None,
        }
    }

    /// True top-1 test accuracy, for completed trials.
    pub fn test_accuracy(&self) -> Option<f64> {
        self.test.as_ref().map(|t| t.accuracy)
    }
}
