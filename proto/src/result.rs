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
    /// Stopped early by the sweep's early-stopping rule after the epochs it has, then
    /// evaluated on the test set like a completed trial; `reason` names the rule.
    Stopped,
}

impl TrialStatus {
    /// Ended with test metrics (completed, or stopped early and then evaluated).
    pub fn has_test(self) -> bool {
        matches!(self, TrialStatus::Completed | TrialStatus::Stopped)
    }
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
    /// 10 outputs per image on the right side of 0.5 (softmax or sigmoid outputs, as the loss
    /// says). Only for the binary cross-entropy losses.
    pub binary_accuracy: Option<f64>,
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true_class][predicted_class]` image counts.
    pub confusion: Vec<Vec<u64>>,
    pub images: u64,
    /// The dataset's class names in label order (empty in results from before they were
    /// sent: those are CIFAR-10's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
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
    /// The attempt started from a checkpoint written after this many epochs (a previous
    /// attempt trained them); its `epochs` still list every epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_epoch: Option<u32>,
    /// Absent in results from before it was recorded (semantics 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// The trainer's semantics version. Bump it whenever the same configuration would train to
/// different numbers (a fixed initialisation, another loss formula): a finished result from
/// another version is not reused, `coordinator sweep` and `submit` run that trial again.
///
/// 1: results before provenance was recorded. 2: BatchNorm starts at gamma = 1, beta = 0 (tch's
/// default drew gamma from U(0, 1)). 3: `loss = "binary-cross-entropy"` is BCE on the softmax
/// output as Keras ran it for the study (it was a sigmoid per class, now
/// `"sigmoid-binary-cross-entropy"`). 4: every layer starts as the trial's `semantics` defines
/// (under `pytorch`, conv and linear layers now draw from U(+-1/sqrt(fan_in)) as PyTorch's do,
/// not tch's He-uniform), and `semantics = "keras"` exists. 5: PyTorch's optimisers are computed
/// by the worker (their state goes into checkpoints; libtorch fuses some multiply-adds, so the
/// last bits differ) and every epoch seeds the generator from the trial seed and the epoch
/// number, so that a trial resumed from a checkpoint ends exactly as an uninterrupted one.
pub const TRAINER_SEMANTICS: u32 = 5;

/// Where and how a result was produced, so a number can be traced and compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// [`TRAINER_SEMANTICS`] of the worker that trained it.
    pub semantics: u32,
    pub worker_version: String,
    pub libtorch_version: String,
    /// CPU model or GPU name.
    pub device_name: String,
    /// libtorch intra-op threads.
    pub threads: u32,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// SHA-256 over the images and labels the trial trained and was tested on (empty when the
    /// trial failed before loading them).
    pub dataset_fingerprint: String,
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

/// Highest epoch number accepted (trials run at most 10,000 epochs).
pub const MAX_EPOCH: u32 = 10_000;

/// The one rule for an epoch number a worker sends about a leased trial of `epochs` epochs
/// (progress, a checkpoint, a kept model, a result's epochs): one of that trial's own.
pub fn check_epoch(field: &str, epoch: u32, epochs: u32) -> Result<(), InvalidResult> {
    if (1..=epochs).contains(&epoch) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{epoch} is not an epoch of this trial (1 to {epochs})"),
        ))
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
        Err(bad(
            field,
            format!("{v} is not a finite value in [0, {MAX_VALUE:e}]"),
        ))
    }
}

fn opt(
    field: &str,
    v: Option<f64>,
    check: fn(&str, f64) -> Result<(), InvalidResult>,
) -> Result<(), InvalidResult> {
    v.map_or(Ok(()), |v| check(field, v))
}

impl EpochMetrics {
    /// Refuses values that cannot be true (accuracies outside [0, 1], negative, huge or
    /// non-finite losses and times), naming the field under `at` (e.g. `epochs[2]`).
    pub fn validate(&self, at: &str) -> Result<(), InvalidResult> {
        let f = |name: &str| format!("{at}.{name}");
        if !(1..=MAX_EPOCH).contains(&self.epoch) {
            return Err(bad(
                f("epoch"),
                format!("{} is not an epoch number (1 to {MAX_EPOCH})", self.epoch),
            ));
        }
        amount(&f("train_loss"), self.train_loss)?;
        fraction(&f("train_accuracy"), self.train_accuracy)?;
        opt(&f("val_loss"), self.val_loss, amount)?;
        opt(&f("val_accuracy"), self.val_accuracy, fraction)?;
        opt(
            &f("train_binary_accuracy"),
            self.train_binary_accuracy,
            fraction,
        )?;
        opt(
            &f("val_binary_accuracy"),
            self.val_binary_accuracy,
            fraction,
        )?;
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
            return Err(bad(
                "test.per_class_accuracy",
                format!("{classes} classes (expected 2 to 1000)"),
            ));
        }
        for (i, &a) in self.per_class_accuracy.iter().enumerate() {
            fraction(&format!("test.per_class_accuracy[{i}]"), a)?;
        }
        if self.confusion.len() != classes || self.confusion.iter().any(|r| r.len() != classes) {
            return Err(bad(
                "test.confusion",
                format!("not a {classes}x{classes} matrix"),
            ));
        }
        if !self.class_names.is_empty() && self.class_names.len() != classes {
            return Err(bad(
                "test.class_names",
                format!("{} names for {classes} classes", self.class_names.len()),
            ));
        }
        if let Some(n) = self.class_names.iter().find(|n| n.len() > 256) {
            return Err(bad(
                "test.class_names",
                format!("a name of {} bytes (at most 256)", n.len()),
            ));
        }
        let total = self
            .confusion
            .iter()
            .flatten()
            .try_fold(0u64, |a, &n| a.checked_add(n));
        if total != Some(self.images) {
            return Err(bad(
                "test.confusion",
                format!(
                    "counts {} images, test.images says {}",
                    total.map_or("too many".into(), |t| t.to_string()),
                    self.images
                ),
            ));
        }
        Ok(())
    }
}

/// Longest text accepted in `reason`, `device` and each note.
pub const MAX_TEXT: usize = 4096;

impl TrialResult {
    /// Refuses a result that cannot be the result of its trial (of `epochs` epochs): an epoch
    /// number outside 1 to `epochs`, or epochs out of order or repeated, or a diverged epoch
    /// past the end. [`TrialResult::validate`] checks what holds for any trial.
    pub fn fits(&self, epochs: u32) -> Result<(), InvalidResult> {
        let mut last = 0;
        for (i, e) in self.epochs.iter().enumerate() {
            let field = format!("epochs[{i}].epoch");
            check_epoch(&field, e.epoch, epochs)?;
            if e.epoch <= last {
                return Err(bad(
                    field,
                    format!(
                        "{} comes after epoch {last}: epochs go up, each once",
                        e.epoch
                    ),
                ));
            }
            last = e.epoch;
        }
        if let Some(d) = self.diverged_epoch {
            check_epoch("diverged_epoch", d, epochs)?;
        }
        Ok(())
    }

    /// Refuses a result that cannot be true: out-of-range or non-finite values, test metrics on
    /// a trial that did not complete, a completed trial without them, a diverged trial without
    /// its epoch. The error names the field.
    pub fn validate(&self) -> Result<(), InvalidResult> {
        for (i, e) in self.epochs.iter().enumerate() {
            e.validate(&format!("epochs[{i}]"))?;
        }
        match (self.status, &self.test) {
            (status, None) if status.has_test() => {
                return Err(bad(
                    "test",
                    format!("a {status:?} trial needs its test metrics"),
                ))
            }
            (status, Some(t)) if status.has_test() => t.validate()?,
            (status, Some(_)) => {
                return Err(bad(
                    "test",
                    format!("a {status:?} trial has no test metrics"),
                ))
            }
            _ => {}
        }
        match (self.status, self.diverged_epoch) {
            (TrialStatus::Diverged, None) => {
                return Err(bad(
                    "diverged_epoch",
                    "a diverged trial says in which epoch",
                ))
            }
            (TrialStatus::Diverged, Some(e)) if !(1..=MAX_EPOCH).contains(&e) => {
                return Err(bad(
                    "diverged_epoch",
                    format!("{e} is not an epoch number (1 to {MAX_EPOCH})"),
                ))
            }
            (TrialStatus::Diverged, Some(_)) => {}
            (_, Some(_)) => return Err(bad("diverged_epoch", "only for a diverged trial")),
            (_, None) => {}
        }
        if let Some(e) = self.resumed_from_epoch {
            if e == 0 || e as usize > self.epochs.len() {
                return Err(bad(
                    "resumed_from_epoch",
                    format!(
                        "{e} is not one of the {} epochs reported",
                        self.epochs.len()
                    ),
                ));
            }
        }
        if self.status == TrialStatus::Failed && self.reason.as_deref().is_none_or(str::is_empty) {
            return Err(bad("reason", "a failed trial says why"));
        }
        if self.status == TrialStatus::Stopped && self.epochs.is_empty() {
            return Err(bad("epochs", "a stopped trial keeps the epochs it trained"));
        }
        opt("best_val_accuracy", self.best_val_accuracy, fraction)?;
        amount("seconds", self.seconds)?;
        if let Some(p) = &self.provenance {
            if p.started_unix_ms > p.finished_unix_ms {
                return Err(bad("provenance.finished_unix_ms", "before started_unix_ms"));
            }
        }
        let provenance = self.provenance.iter().flat_map(|p| {
            [
                ("provenance.worker_version", &p.worker_version),
                ("provenance.libtorch_version", &p.libtorch_version),
                ("provenance.device_name", &p.device_name),
                ("provenance.dataset_fingerprint", &p.dataset_fingerprint),
            ]
            .map(|(f, t)| (f.to_string(), t))
        });
        let texts = self
            .reason
            .iter()
            .map(|r| ("reason".to_string(), r))
            .chain([("device".to_string(), &self.device)])
            .chain(provenance);
        let notes = self
            .notes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("notes[{i}]"), n));
        for (field, text) in texts.chain(notes) {
            if text.len() > MAX_TEXT {
                return Err(bad(field, format!("{} bytes, over {MAX_TEXT}", text.len())));
            }
        }
        Ok(())
    }
}

impl TrialResult {
    /// A result built field by field (tests, tools, benchmarks): see [`ResultBuilder`].
    pub fn builder() -> ResultBuilder {
        ResultBuilder(TrialResult {
            status: TrialStatus::Completed,
            reason: None,
            epochs: Vec::new(),
            test: None,
            best_val_accuracy: None,
            train_images: 0,
            val_images: 0,
            parameters: 0,
            device: "cpu".into(),
            seconds: 0.0,
            notes: Vec::new(),
            diverged_epoch: None,
            resumed_from_epoch: None,
            provenance: None,
        })
    }

    /// A trial that could not run, with the reason.
    pub fn failed(reason: String, device: String) -> TrialResult {
        TrialResult::builder()
            .status(TrialStatus::Failed)
            .reason(reason)
            .device(device)
            .build()
    }

    /// The trainer semantics the result was produced under (1 when it predates provenance).
    pub fn semantics(&self) -> u32 {
        self.provenance.as_ref().map_or(1, |p| p.semantics)
    }

    /// True top-1 test accuracy, for completed trials.
    pub fn test_accuracy(&self) -> Option<f64> {
        self.test.as_ref().map(|t| t.accuracy)
    }
}

/// Builds a [`TrialResult`]: it starts as a completed trial on the CPU with no epochs, no
/// test metrics and nothing counted, and each method sets one field. A new result field
/// needs its default in [`TrialResult::builder`] only, not in every test that makes results.
#[derive(Debug, Clone)]
pub struct ResultBuilder(TrialResult);

impl ResultBuilder {
    pub fn status(mut self, status: TrialStatus) -> Self {
        self.0.status = status;
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.0.reason = Some(reason.into());
        self
    }

    pub fn epochs(mut self, epochs: Vec<EpochMetrics>) -> Self {
        self.0.epochs = epochs;
        self
    }

    pub fn test(mut self, test: TestMetrics) -> Self {
        self.0.test = Some(test);
        self
    }

    /// Test metrics with this accuracy over a balanced two-class confusion matrix of four
    /// images (loss 1).
    pub fn test_accuracy(self, accuracy: f64) -> Self {
        self.test(TestMetrics {
            loss: 1.0,
            accuracy,
            binary_accuracy: None,
            per_class_accuracy: vec![0.5, 0.5],
            confusion: vec![vec![1, 1], vec![1, 1]],
            images: 4,
            class_names: Vec::new(),
        })
    }

    pub fn best_val_accuracy(mut self, accuracy: f64) -> Self {
        self.0.best_val_accuracy = Some(accuracy);
        self
    }

    /// Training and validation images.
    pub fn images(mut self, train: u64, val: u64) -> Self {
        (self.0.train_images, self.0.val_images) = (train, val);
        self
    }

    pub fn parameters(mut self, parameters: u64) -> Self {
        self.0.parameters = parameters;
        self
    }

    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.0.device = device.into();
        self
    }

    pub fn seconds(mut self, seconds: f64) -> Self {
        self.0.seconds = seconds;
        self
    }

    pub fn diverged_epoch(mut self, epoch: u32) -> Self {
        self.0.diverged_epoch = Some(epoch);
        self
    }

    pub fn provenance(mut self, provenance: Provenance) -> Self {
        self.0.provenance = Some(provenance);
        self
    }

    pub fn build(self) -> TrialResult {
        self.0
    }
}
