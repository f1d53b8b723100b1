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
}

impl TrialResult {
    pub fn test_accuracy(&self) -> Option<f64> {
        self.test.as_ref().map(|t| t.accuracy)
    }
}
