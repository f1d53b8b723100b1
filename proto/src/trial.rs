//! One trial's full configuration: data preparation, model, optimiser, schedule,
//! augmentation and loss. Parsed with `deny_unknown_fields`, then [`TrialSpec::validate`].
//!
//! Every field has a default, so a trial file only names what it changes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A problem with a trial's configuration, naming the key and the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {value} ({reason})")]
    Invalid {
        /// The field (`augment.shift`, `changes[0].lr`).
        key: std::borrow::Cow<'static, str>,
        value: String,
        reason: String,
    },
}

fn invalid(
    key: impl Into<std::borrow::Cow<'static, str>>,
    value: impl fmt::Display,
    reason: impl Into<String>,
) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Network architecture. `resnetN` are He et al. (2016) CIFAR ResNets with N = 6n + 2 layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Model {
    /// 3072(or 1024)-1024-256-64-10 multilayer perceptron, ReLU.
    Dense,
    /// The original study's CNN (8x8/4x4/2x2 "same" convolutions, 128/256/512 channels).
    SeedCnn,
    /// CIFAR ResNet of the given depth (20, 32, 44, 56 or 110).
    ResNet(u32),
    /// ResNet-9 in the style of the fast CIFAR-10 trainers (Page's DAWNBench entry): 64-128-
    /// 256-512 channels, two residual blocks, max pooling, a scaled linear head. 6.6M weights.
    Fast,
    /// The user's own TorchScript module, named by the SHA-256 of its file (the first 16
    /// bytes). Sweep files and `worker train` accept `torchscript:PATH` and resolve it to
    /// `torchscript:<32 hex digits>`, so the file's content, not its name, is in the trial id.
    TorchScript(ModuleHash),
}

/// The first 16 bytes of a TorchScript file's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleHash(pub [u8; 16]);

impl ModuleHash {
    /// The hash of a module file's bytes.
    pub fn of(bytes: &[u8]) -> ModuleHash {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(bytes);
        let mut h = [0u8; 16];
        h.copy_from_slice(&digest[..16]);
        ModuleHash(h)
    }

    /// 32 lower-case hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<ModuleHash> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut h = [0u8; 16];
        for (i, byte) in h.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ModuleHash(h))
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// `model = "torchscript:..."`: what follows the prefix is a file path until resolved.
pub const TORCHSCRIPT_PREFIX: &str = "torchscript:";

/// The dataset a trial trains on. The directory comes from the sweep's `data` (or the
/// worker's `--data`); this says what must be found there, so that trials on different data
/// never share an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatasetKind {
    /// CIFAR-10 in either official layout.
    #[default]
    Cifar10,
    /// CIFAR-100 in either official layout, with its 100 fine labels.
    Cifar100,
    /// CIFAR-100 with its 20 coarse (superclass) labels.
    Cifar100Coarse,
    /// An image folder (`train/<class>/*`, `test/<class>/*`), identified by a fingerprint of
    /// its file list: relative paths and sizes (see `cifar10::imagefolder`).
    ImageFolder(u64),
}

/// `data = "imagefolder:PATH"` in sweep files and `--data imagefolder:PATH` for workers.
pub const IMAGEFOLDER_PREFIX: &str = "imagefolder:";

impl DatasetKind {
    pub const NAMES: &'static str = "cifar10, cifar100, cifar100-coarse";

    /// Number of classes, where the kind fixes it.
    pub fn classes(&self) -> Option<usize> {
        match self {
            DatasetKind::Cifar10 => Some(10),
            DatasetKind::Cifar100 => Some(100),
            DatasetKind::Cifar100Coarse => Some(20),
            DatasetKind::ImageFolder(_) => None,
        }
    }

    pub fn is_cifar(&self) -> bool {
        !matches!(self, DatasetKind::ImageFolder(_))
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetKind::Cifar10 => f.write_str("cifar10"),
            DatasetKind::Cifar100 => f.write_str("cifar100"),
            DatasetKind::Cifar100Coarse => f.write_str("cifar100-coarse"),
            DatasetKind::ImageFolder(fp) => write!(f, "{IMAGEFOLDER_PREFIX}{fp:016x}"),
        }
    }
}

impl FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" => DatasetKind::Cifar100,
            "cifar100-coarse" => DatasetKind::Cifar100Coarse,
            _ => match s.strip_prefix(IMAGEFOLDER_PREFIX) {
                Some(fp) if fp.len() == 16 => u64::from_str_radix(fp, 16)
                    .map(DatasetKind::ImageFolder)
                    .map_err(|_| format!("`{s}`: the fingerprint must be 16 hex digits"))?,
                Some(_) => {
                    return Err(format!(
                        "`{s}`: image folders are named by the sweep's `data = \"imagefolder:PATH\"` (or the worker's --data), which sets this key"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown dataset `{s}`; expected one of: {}",
                        DatasetKind::NAMES
                    ))
                }
            },
        })
    }
}

impl TryFrom<String> for DatasetKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DatasetKind> for String {
    fn from(d: DatasetKind) -> String {
        d.to_string()
    }
}

impl Model {
    pub const RESNET_DEPTHS: [u32; 5] = [20, 32, 44, 56, 110];
    pub const NAMES: &'static str =
        "dense, seed-cnn, resnet20, resnet32, resnet44, resnet56, resnet110, fast, torchscript:PATH";
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Dense => f.write_str("dense"),
            Model::SeedCnn => f.write_str("seed-cnn"),
            Model::ResNet(depth) => write!(f, "resnet{depth}"),
            Model::Fast => f.write_str("fast"),
            Model::TorchScript(h) => write!(f, "{TORCHSCRIPT_PREFIX}{h}"),
        }
    }
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let model = match s {
            "dense" => Model::Dense,
            "seed-cnn" => Model::SeedCnn,
            "fast" => Model::Fast,
            _ if s.starts_with(TORCHSCRIPT_PREFIX) => {
                let rest = &s[TORCHSCRIPT_PREFIX.len()..];
                match ModuleHash::from_hex(rest) {
                    Some(h) => Model::TorchScript(h),
                    None => {
                        return Err(format!(
                            "`{s}` is not resolved: a sweep file or `worker train` turns torchscript:PATH into the file's hash (here the path would be `{rest}`)"
                        ))
                    }
                }
            }
            _ => match s.strip_prefix("resnet").and_then(|d| d.parse::<u32>().ok()) {
                Some(depth) if Model::RESNET_DEPTHS.contains(&depth) => Model::ResNet(depth),
                _ => {
                    return Err(format!(
                        "unknown model `{s}`; expected one of: {}",
                        Model::NAMES
                    ))
                }
            },
        };
        Ok(model)
    }
}

impl TryFrom<String> for Model {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Model> for String {
    fn from(m: Model) -> String {
        m.to_string()
    }
}

/// Colour input, or ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) as one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorMode {
    Color,
    Grayscale,
}

/// How a flat 3072-byte CIFAR row becomes an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The official meaning: 1024 R, then 1024 G, then 1024 B bytes, each 32x32 row-major.
    Standard,
    /// The original study's bug: `row.reshape(32, 32, 3)`, which interleaves the three
    /// planes into a scrambled image whose "channels" are neighbouring pixels of one plane.
    SeedReshape,
}

/// Input scaling applied on the training device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Raw 0..255 values, as the original study fed them.
    None,
    /// Divide by 255.
    Scale,
    /// Subtract the training set's per-channel mean and divide by its per-channel std.
    Standard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    Sgd,
    Adam,
    Amsgrad,
    Adamw,
}

/// Learning-rate schedule; see `lr_at` in the worker for the exact formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    /// Multiply by `step_gamma` at each epoch in `step_epochs`.
    Step,
    /// Cosine decay from `lr` to 0 over all epochs, after `warmup_epochs` of linear warm-up.
    Cosine,
    /// Linear warm-up from lr/25 to lr over `warmup_epochs`, then cosine down to lr/1e4.
    OneCycle,
    /// The study's schedule: lr for epoch < 10, then lr * exp(0.1 * (10 - epoch)).
    ExpDecay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax + categorical cross-entropy.
    CrossEntropy,
    /// Binary cross-entropy on the softmax output, as the study ran it (Keras 2: probabilities
    /// clipped to [1e-7, 1 - 1e-7], mean over the 10 outputs); results carry Keras' binary
    /// accuracy (the study's "82% after one epoch") beside true top-1.
    BinaryCrossEntropy,
    /// A sigmoid per class with binary cross-entropy on one-hot targets (multi-label BCE, where
    /// answering "no" to every class scores 90% binary accuracy). Not what the study ran.
    SigmoidBinaryCrossEntropy,
}

/// Whose conventions the trainer follows where frameworks differ. Both are defined exactly in
/// docs/TRIAL.md; `keras` is what the study's own-settings rows inherited from Keras 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Semantics {
    /// PyTorch's module defaults: conv/linear weights and biases U(+-1/sqrt(fan_in)),
    /// BatchNorm momentum 0.1 and epsilon 1e-5, Adam epsilon 1e-8 added after bias correction,
    /// `weight_decay` as the optimiser's L2 term on every parameter (decoupled for AdamW).
    #[default]
    Pytorch,
    /// Keras 2's defaults: glorot_uniform kernels and zero biases (he_normal in the ResNets, as
    /// the study's script set it), BatchNorm momentum 0.99 and epsilon 1e-3, Adam/AMSGrad with
    /// epsilon 1e-7 in Keras' form, and `weight_decay` as `kernel_regularizer=l2(wd)`:
    /// wd * sum(w^2) of every convolution kernel added to the loss.
    Keras,
}

/// Arithmetic for the forward and backward passes. Weights and optimizer state stay float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    Fp32,
    /// bfloat16 autocast (convolutions and matrix products in bf16, reductions in fp32); falls
    /// back to fp32, saying so in the result, where the device cannot do bf16.
    Bf16,
}

/// Which device kind a trial needs. `auto` runs wherever the worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda,
}

/// Training-time augmentation, applied to whole batches on the training device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
    /// Random translation up to this fraction of the image size (Keras `width_shift_range`).
    pub shift: f64,
    /// Zero-pad by this many pixels and crop back to 32x32 at a random offset.
    pub pad_crop: u32,
    /// Random rotation, uniformly within +-this many degrees.
    pub rotation: f64,
    /// Zero a random square of this many pixels per side in every image (DeVries & Taylor).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub cutout: u32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip: false,
            shift: 0.0,
            pad_crop: 0,
            rotation: 0.0,
            cutout: 0,
        }
    }
}

impl Augment {
    pub fn is_enabled(&self) -> bool {
        self.flip || self.shift > 0.0 || self.pad_crop > 0 || self.rotation > 0.0 || self.cutout > 0
    }
}

// Fields added after the first release are left out of the canonical TOML at their defaults,
// so trials written before they existed keep their ids (and their finished results).
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_fp32(p: &Precision) -> bool {
    *p == Precision::Fp32
}
fn is_pytorch(s: &Semantics) -> bool {
    *s == Semantics::Pytorch
}
fn is_cifar10(d: &DatasetKind) -> bool {
    *d == DatasetKind::Cifar10
}
fn is_32(v: &u32) -> bool {
    *v == 32
}

/// Image side length of the CIFAR datasets.
pub const CIFAR_IMAGE_SIZE: u32 = 32;

/// Everything one trial can set. TOML field names are the struct's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrialSpec {
    /// Which dataset (see [`DatasetKind`]); image folders are set by the sweep's `data`.
    #[serde(skip_serializing_if = "is_cifar10")]
    pub dataset: DatasetKind,
    /// Side length images are resized to on load (image folders; CIFAR images are 32).
    #[serde(skip_serializing_if = "is_32")]
    pub image_size: u32,
    pub model: Model,
    pub color: ColorMode,
    pub layout: Layout,
    pub normalization: Normalization,
    /// How many of the five training batch files to use (1..=5).
    pub train_batches: u32,
    /// Fraction of the training images held out for validation (fixed split seed).
    pub validation_split: f64,
    /// Use at most this many training images (after the validation split). For quick runs.
    pub train_images: Option<u32>,
    /// Evaluate on at most this many test images. For quick runs.
    pub test_images: Option<u32>,
    pub epochs: u32,
    pub batch_size: u32,
    pub optimizer: Optimizer,
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 penalty (SGD, Adam, AMSGrad) or decoupled decay (AdamW).
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Epochs (0-based indices) at which the `step` schedule multiplies lr by `step_gamma`.
    pub step_epochs: Vec<u32>,
    pub step_gamma: f64,
    /// Linear warm-up length for `cosine` and `one-cycle`.
    pub warmup_epochs: f64,
    pub augment: Augment,
    pub loss: Loss,
    /// Cross-entropy against targets with this much probability spread over all classes.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub label_smoothing: f64,
    pub seed: u64,
    /// Framework conventions for initialisation, batch norm, Adam and L2 (see [`Semantics`]).
    #[serde(skip_serializing_if = "is_pytorch")]
    pub semantics: Semantics,
    pub device: DeviceRequest,
    #[serde(skip_serializing_if = "is_fp32")]
    pub precision: Precision,
    /// Channels-last (NHWC) memory layout for images and convolution weights; faster with
    /// tensor cores, a no-op in results.
    #[serde(skip_serializing_if = "is_false")]
    pub channels_last: bool,
    /// Values that change mid-training: from each change's `epoch` (1-based) on, its fields
    /// replace the trial's (`[[changes]]`; PBT's schedules, and their replay). Ascending
    /// epochs in 2..=epochs; only [`Change`]'s fields may change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Train epochs 1 to this of an `epochs`-long run, save a checkpoint there, and end (as
    /// stopped): a PBT segment, which the next segment resumes from. Below `epochs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<u32>,
}

/// The trial fields that may change between epochs: the optimiser's rate, momentum and
/// weight decay, label smoothing and augmentation strengths. None of them changes the
/// weights' shapes or the optimiser's state, so a trial (or a PBT member copying another's
/// weights) goes on with the same state under new values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The first epoch (1-based) trained with these values.
    pub epoch: u32,
    /// The base rate from this epoch: the schedule's factor at each step still applies to it
    /// (with `schedule = "constant"` it is the rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    #[serde(skip_serializing_if = "AugmentChange::is_empty", default)]
    pub augment: AugmentChange,
}

/// The fields a [`Change`] may set, as sweep files name them (PBT's mutations).
pub const CHANGEABLE: &[&str] = &[
    "lr",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "augment.flip",
    "augment.shift",
    "augment.pad_crop",
    "augment.rotation",
    "augment.cutout",
];

/// Augmentation strengths a [`Change`] sets; the others keep their values.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_crop: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutout: Option<u32>,
}

impl AugmentChange {
    pub fn is_empty(&self) -> bool {
        *self == AugmentChange::default()
    }
}

impl Change {
    /// Whether it sets no field.
    pub fn is_empty(&self) -> bool {
        self.lr.is_none()
            && self.momentum.is_none()
            && self.weight_decay.is_none()
            && self.label_smoothing.is_none()
            && self.augment.is_empty()
    }

    /// Sets its fields in `spec`.
    pub fn apply(&self, spec: &mut TrialSpec) {
        let set = |to: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *to = v;
            }
        };
        set(&mut spec.lr, self.lr);
        set(&mut spec.momentum, self.momentum);
        set(&mut spec.weight_decay, self.weight_decay);
        set(&mut spec.label_smoothing, self.label_smoothing);
        let (a, c) = (&mut spec.augment, &self.augment);
        a.flip = c.flip.unwrap_or(a.flip);
        set(&mut a.shift, c.shift);
        a.pad_crop = c.pad_crop.unwrap_or(a.pad_crop);
        set(&mut a.rotation, c.rotation);
        a.cutout = c.cutout.unwrap_or(a.cutout);
    }
}

impl Default for TrialSpec {
    fn default() -> Self {
        TrialSpec {
            dataset: DatasetKind::Cifar10,
            image_size: CIFAR_IMAGE_SIZE,
            model: Model::SeedCnn,
            color: ColorMode::Color,
            layout: Layout::Standard,
            normalization: Normalization::Standard,
            train_batches: 5,
            validation_split: 0.0,
            train_images: None,
            test_images: None,
            epochs: 10,
            batch_size: 128,
            optimizer: Optimizer::Adam,
            lr: 0.001,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            step_epochs: Vec::new(),
            step_gamma: 0.1,
            warmup_epochs: 0.0,
            augment: Augment::default(),
            loss: Loss::CrossEntropy,
            label_smoothing: 0.0,
            seed: 0,
            semantics: Semantics::Pytorch,
            device: DeviceRequest::Auto,
            precision: Precision::Fp32,
            channels_last: false,
            changes: Vec::new(),
            stop_after: None,
        }
    }
}

impl TrialSpec {
    /// Parses a trial from TOML text. Errors carry the line, column and key from the parser.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: TrialSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Canonical TOML for this trial (every field written out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# unserializable trial spec: {e}"))
    }

    /// The last epoch this trial trains: `stop_after`, or `epochs`.
    pub fn last_epoch(&self) -> u32 {
        self.stop_after.unwrap_or(self.epochs)
    }

    /// What a checkpoint after `epoch` epochs of this trial is a checkpoint *of*: the SHA-256
    /// (hex) of the canonical TOML of the trial without `stop_after` and without the changes
    /// after `epoch`. Any trial that trains its first `epoch` epochs the same way has the same
    /// key and may resume from it (the next PBT segment, a replay); for a trial without
    /// changes or `stop_after` it is the hash of its own TOML.
    pub fn resume_key(&self, epoch: u32) -> String {
        let mut prefix = self.clone();
        prefix.stop_after = None;
        prefix.changes.retain(|c| c.epoch <= epoch);
        crate::sha256_hex(prefix.to_toml().as_bytes())
    }

    /// The values that train epoch `epoch` (1-based): the trial with every change up to that
    /// epoch applied (itself, borrowed, when it has no changes).
    pub fn at_epoch(&self, epoch: u32) -> std::borrow::Cow<'_, TrialSpec> {
        if self.changes.first().is_none_or(|c| c.epoch > epoch) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut spec = self.clone();
        for c in self.changes.iter().take_while(|c| c.epoch <= epoch) {
            c.apply(&mut spec);
        }
        spec.changes.clear();
        std::borrow::Cow::Owned(spec)
    }

    /// `changes` in ascending epochs within 2..=epochs, each setting a field, and each epoch's
    /// values valid as the trial's own would be (the error names the change's epoch).
    fn validate_changes(&self) -> Result<(), SpecError> {
        let mut last = 1;
        for (i, c) in self.changes.iter().enumerate() {
            let key = format!("changes[{i}].epoch");
            if c.epoch <= last || c.epoch > self.epochs {
                return Err(invalid(
                    key,
                    c.epoch,
                    format!(
                        "changes take effect at epochs 2 to epochs ({}), each after the last (epoch 1 is the trial's own values)",
                        self.epochs
                    ),
                ));
            }
            if c.is_empty() {
                return Err(invalid(key, c.epoch, "the change sets no field"));
            }
            last = c.epoch;
            let at = self.at_epoch(c.epoch);
            at.validate().map_err(|e| match e {
                SpecError::Invalid { key, value, reason } => SpecError::Invalid {
                    key: format!("changes[{i}].{key}").into(),
                    value,
                    reason,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Number of input channels the model sees.
    pub fn input_channels(&self) -> i64 {
        match self.color {
            ColorMode::Color => 3,
            ColorMode::Grayscale => 1,
        }
    }

    /// Checks every value a worker would reject, naming the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_data()?;
        if !(1..=5).contains(&self.train_batches) {
            return Err(invalid(
                "train_batches",
                self.train_batches,
                "must be 1 to 5",
            ));
        }
        if !(0.0..0.9).contains(&self.validation_split) {
            return Err(invalid(
                "validation_split",
                self.validation_split,
                "must be in [0, 0.9)",
            ));
        }
        if self.train_images == Some(0) {
            return Err(invalid("train_images", 0, "must be at least 1 when set"));
        }
        if self.test_images == Some(0) {
            return Err(invalid("test_images", 0, "must be at least 1 when set"));
        }
        if !(1..=10_000).contains(&self.epochs) {
            return Err(invalid("epochs", self.epochs, "must be 1 to 10000"));
        }
        if !(1..=65_536).contains(&self.batch_size) {
            return Err(invalid("batch_size", self.batch_size, "must be 1 to 65536"));
        }
        positive_finite("lr", self.lr)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid("momentum", self.momentum, "must be in [0, 1)"));
        }
        if self.nesterov && (self.optimizer != Optimizer::Sgd || self.momentum == 0.0) {
            return Err(invalid(
                "nesterov",
                true,
                "needs optimizer = \"sgd\" and momentum > 0",
            ));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(invalid(
                "weight_decay",
                self.weight_decay,
                "must be in [0, 1)",
            ));
        }
        if self.schedule == Schedule::Step && self.step_epochs.is_empty() {
            return Err(invalid(
                "step_epochs",
                "[]",
                "the step schedule needs at least one epoch",
            ));
        }
        if let Some(&e) = self.step_epochs.iter().find(|&&e| e >= self.epochs) {
            return Err(invalid(
                "step_epochs",
                e,
                format!("must be below epochs ({})", self.epochs),
            ));
        }
        if !(self.step_gamma > 0.0 && self.step_gamma <= 1.0) {
            return Err(invalid("step_gamma", self.step_gamma, "must be in (0, 1]"));
        }
        if !(0.0..=self.epochs as f64).contains(&self.warmup_epochs) {
            return Err(invalid(
                "warmup_epochs",
                self.warmup_epochs,
                "must be in [0, epochs]",
            ));
        }
        if self.schedule == Schedule::OneCycle && self.warmup_epochs == 0.0 {
            return Err(invalid(
                "warmup_epochs",
                0,
                "one-cycle needs a warm-up (e.g. 30% of epochs)",
            ));
        }
        let a = &self.augment;
        if !(0.0..=0.5).contains(&a.shift) {
            return Err(invalid("augment.shift", a.shift, "must be in [0, 0.5]"));
        }
        if a.pad_crop > 16 {
            return Err(invalid(
                "augment.pad_crop",
                a.pad_crop,
                "must be 0 to 16 pixels",
            ));
        }
        if !(0.0..=180.0).contains(&a.rotation) {
            return Err(invalid(
                "augment.rotation",
                a.rotation,
                "must be 0 to 180 degrees",
            ));
        }
        if a.cutout > 32 {
            return Err(invalid(
                "augment.cutout",
                a.cutout,
                "must be 0 to 32 pixels",
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "must be in [0, 1)",
            ));
        }
        if self.label_smoothing > 0.0 && self.loss != Loss::CrossEntropy {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "applies to loss = \"cross-entropy\" only",
            ));
        }
        self.validate_semantics()?;
        self.validate_changes()?;
        match self.stop_after {
            Some(k) if k == 0 || k >= self.epochs => Err(invalid(
                "stop_after",
                k,
                format!("must be 1 to epochs - 1 ({})", self.epochs - 1),
            )),
            _ => Ok(()),
        }
    }

    fn validate_data(&self) -> Result<(), SpecError> {
        if self.dataset.is_cifar() && self.image_size != CIFAR_IMAGE_SIZE {
            return Err(invalid(
                "image_size",
                self.image_size,
                format!(
                    "{} images are {CIFAR_IMAGE_SIZE}x{CIFAR_IMAGE_SIZE}; image_size applies to image folders",
                    self.dataset
                ),
            ));
        }
        if !(8..=512).contains(&self.image_size) {
            return Err(invalid("image_size", self.image_size, "must be 8 to 512"));
        }
        if matches!(self.model, Model::Dense | Model::SeedCnn) && self.image_size > 128 {
            return Err(invalid(
                "image_size",
                self.image_size,
                format!(
                    "{}'s first dense layer grows with the image's area; at most 128 (the ResNets and fast pool globally)",
                    self.model
                ),
            ));
        }
        if self.model == Model::SeedCnn && !self.image_size.is_multiple_of(8) {
            return Err(invalid(
                "image_size",
                self.image_size,
                "seed-cnn pools by 4 and 2, so it needs a multiple of 8",
            ));
        }
        if self.dataset != DatasetKind::Cifar10 && self.train_batches != 5 {
            return Err(invalid(
                "train_batches",
                self.train_batches,
                format!(
                    "selects CIFAR-10's five training files; {} has one (use train_images)",
                    self.dataset
                ),
            ));
        }
        Ok(())
    }

    fn validate_semantics(&self) -> Result<(), SpecError> {
        if self.semantics != Semantics::Keras {
            return Ok(());
        }
        if let Model::TorchScript(_) = self.model {
            return Err(invalid(
                "semantics",
                "keras",
                "applies to the built-in models; a TorchScript module keeps its own initialisation",
            ));
        }
        if !matches!(self.optimizer, Optimizer::Adam | Optimizer::Amsgrad) {
            return Err(invalid(
                "optimizer",
                format!("{:?}", self.optimizer).to_lowercase(),
                "semantics = \"keras\" implements Keras' adam and amsgrad only",
            ));
        }
        if self.weight_decay > 0.0 && self.model == Model::Dense {
            return Err(invalid(
                "weight_decay",
                self.weight_decay,
                "under semantics = \"keras\" it is l2() on convolution kernels, and dense has none",
            ));
        }
        Ok(())
    }
}

fn positive_finite(key: &'static str, v: f64) -> Result<(), SpecError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, v, "must be a positive number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial ids are hashes of the canonical TOML: fields added later must not appear in it at
    /// their defaults, or every stored result would stop matching its sweep.
    #[test]
    fn later_fields_stay_out_of_canonical_toml_at_defaults() {
        let text = TrialSpec::default().to_toml();
        for key in [
            "precision",
            "channels_last",
            "label_smoothing",
            "cutout",
            "semantics",
            "dataset",
            "image_size",
            "changes",
            "stop_after",
        ] {
            assert!(!text.contains(key), "{key} in:\n{text}");
        }
        let bf16 = TrialSpec {
            precision: Precision::Bf16,
            ..TrialSpec::default()
        };
        assert!(bf16.to_toml().contains("precision = \"bf16\""));
    }

    /// `[[changes]]`: read from a trial file, applied from their epoch on, written back in the
    /// canonical TOML; out-of-order, empty, too early or too late ones, and values the trial
    /// itself could not take, are refused naming the change.
    #[test]
    fn changes_apply_from_their_epoch_and_are_checked() {
        let text = "epochs = 4\nlr = 0.1\n[[changes]]\nepoch = 2\nlr = 0.05\naugment = { shift = 0.1 }\n[[changes]]\nepoch = 4\nmomentum = 0.5\n";
        let spec = TrialSpec::from_toml(text).unwrap();
        let at = |e: u32| spec.at_epoch(e).into_owned();
        assert_eq!(
            (at(1).lr, at(1).augment.shift, at(1).momentum),
            (0.1, 0.0, 0.9)
        );
        assert_eq!(
            (at(3).lr, at(3).augment.shift, at(3).momentum),
            (0.05, 0.1, 0.9)
        );
        assert_eq!((at(4).lr, at(4).momentum), (0.05, 0.5));
        assert!(at(4).changes.is_empty());
        assert_eq!(TrialSpec::from_toml(&spec.to_toml()).unwrap(), spec);
        let refused = |changes: &str, needle: &str| {
            let e = TrialSpec::from_toml(&format!("epochs = 4\n{changes}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        };
        refused(
            "[[changes]]\nepoch = 1\nlr = 0.1\n",
            "`changes[0].epoch`: 1",
        );
        refused(
            "[[changes]]\nepoch = 5\nlr = 0.1\n",
            "epochs 2 to epochs (4)",
        );
        refused(
            "[[changes]]\nepoch = 3\nlr = 0.1\n[[changes]]\nepoch = 2\nlr = 0.1\n",
            "`changes[1].epoch`: 2",
        );
        refused("[[changes]]\nepoch = 3\n", "sets no field");
        refused("[[changes]]\nepoch = 3\nlr = -1.0\n", "`changes[0].lr`: -1");
        refused(
            "[[changes]]\nepoch = 3\naugment = { shift = 0.9 }\n",
            "`changes[0].augment.shift`",
        );
        refused(
            "[[changes]]\nepoch = 3\nmodel = \"dense\"\n",
            "unknown field `model`",
        );
    }

    /// A checkpoint's key covers the epochs it trained: the same for a segment (`stop_after`)
    /// and its continuation with a change after it, different for one whose earlier epochs
    /// differ; a trial without changes keys as its own TOML.
    #[test]
    fn resume_keys_cover_the_epochs_trained() {
        let plain = TrialSpec {
            epochs: 6,
            ..TrialSpec::default()
        };
        assert_eq!(
            plain.resume_key(3),
            crate::sha256_hex(plain.to_toml().as_bytes())
        );
        let change = |epoch: u32, lr: f64| Change {
            epoch,
            lr: Some(lr),
            ..Default::default()
        };
        let segment = TrialSpec {
            changes: vec![change(3, 0.01)],
            stop_after: Some(4),
            ..plain.clone()
        };
        let next = TrialSpec {
            changes: vec![change(3, 0.01), change(5, 0.02)],
            ..plain.clone()
        };
        assert_eq!(segment.resume_key(4), next.resume_key(4));
        assert_ne!(segment.resume_key(4), next.resume_key(5));
        assert_eq!(plain.resume_key(2), segment.resume_key(2));
        assert_ne!(plain.resume_key(3), segment.resume_key(3));
        assert_eq!((segment.last_epoch(), next.last_epoch()), (4, 6));
        for bad in [0, 6, 7] {
            let spec = TrialSpec {
                stop_after: Some(bad),
                ..plain.clone()
            };
            let e = spec.validate().unwrap_err().to_string();
            assert!(
                e.contains("`stop_after`") && e.contains("1 to epochs - 1 (5)"),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_file_is_the_default_trial() {
        assert_eq!(TrialSpec::from_toml("").unwrap(), TrialSpec::default());
    }

    #[test]
    fn round_trips_through_canonical_toml() {
        let spec = TrialSpec {
            model: Model::ResNet(56),
            color: ColorMode::Grayscale,
            layout: Layout::SeedReshape,
            schedule: Schedule::Step,
            step_epochs: vec![3, 6],
            augment: Augment {
                flip: true,
                shift: 0.1,
                pad_crop: 0,
                rotation: 10.0,
                cutout: 8,
            },
            label_smoothing: 0.2,
            precision: Precision::Bf16,
            channels_last: true,
            train_images: Some(500),
            semantics: Semantics::Keras,
            ..TrialSpec::default()
        };
        assert_eq!(TrialSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn datasets_and_modules_round_trip() {
        let hash = ModuleHash::of(b"a module");
        let spec = TrialSpec {
            dataset: DatasetKind::ImageFolder(0xab),
            image_size: 64,
            model: Model::TorchScript(hash),
            ..TrialSpec::default()
        };
        let text = spec.to_toml();
        assert!(
            text.contains("dataset = \"imagefolder:00000000000000ab\""),
            "{text}"
        );
        assert!(
            text.contains(&format!("model = \"torchscript:{hash}\"")),
            "{text}"
        );
        assert_eq!(TrialSpec::from_toml(&text).unwrap(), spec);
        for d in ["cifar10", "cifar100", "cifar100-coarse"] {
            assert_eq!(d.parse::<DatasetKind>().unwrap().to_string(), d);
        }
        assert_eq!(DatasetKind::Cifar100Coarse.classes(), Some(20));
        assert_eq!(ModuleHash::from_hex(&hash.hex()), Some(hash));
    }

    #[test]
    fn models_parse_and_print() {
        for name in [
            "dense",
            "seed-cnn",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
        ] {
            assert_eq!(name.parse::<Model>().unwrap().to_string(), name);
        }
        for bad in ["resnet18", "resnet", "cnn", ""] {
            assert!(bad.parse::<Model>().is_err(), "{bad} should be rejected");
        }
    }

    /// Table of bad trial files and the key (and position) their error must name.
    #[test]
    fn bad_trials_name_the_key() {
        let cases: &[(&str, &[&str])] = &[
            ("modle = \"dense\"", &["modle", "line 1"]),
            ("model = \"resnet18\"", &["resnet18", "line 1"]),
            ("epochs = \"ten\"", &["epochs", "line 1"]),
            ("epochs = 0", &["`epochs`", "0"]),
            ("lr = -0.1", &["`lr`", "-0.1"]),
            ("train_batches = 6", &["`train_batches`", "6"]),
            ("validation_split = 1.5", &["`validation_split`"]),
            ("color = \"sepia\"", &["sepia", "line 1"]),
            ("layout = \"nhwc\"", &["nhwc"]),
            ("loss = \"mse\"", &["mse"]),
            ("schedule = \"step\"", &["`step_epochs`"]),
            ("schedule = \"one-cycle\"", &["`warmup_epochs`"]),
            ("epochs = 5\nstep_epochs = [7]", &["`step_epochs`", "7"]),
            ("nesterov = true\noptimizer = \"adam\"", &["`nesterov`"]),
            ("[augment]\nflip = true\nzoom = 0.2", &["zoom", "line 3"]),
            ("[augment]\nrotation = 400", &["`augment.rotation`", "400"]),
            ("batch_size = 0", &["`batch_size`"]),
            ("train_images = 0", &["`train_images`"]),
            ("semantics = \"tf\"", &["tf", "line 1"]),
            ("image_size = 64", &["`image_size`", "image folders"]),
            ("dataset = \"mnist\"", &["mnist", "cifar100"]),
            ("dataset = \"imagefolder:x\"", &["imagefolder:PATH"]),
            (
                "model = \"torchscript:net.pt\"",
                &["not resolved", "net.pt"],
            ),
            ("model = \"torchscript:\"", &["not resolved"]),
            (
                "dataset = \"cifar100\"\ntrain_batches = 2",
                &["`train_batches`", "train_images"],
            ),
            (
                "dataset = \"imagefolder:00000000000000ab\"\nimage_size = 4",
                &["`image_size`", "8 to 512"],
            ),
            (
                "dataset = \"imagefolder:00000000000000ab\"\nimage_size = 20",
                &["`image_size`", "multiple of 8"],
            ),
            (
                "semantics = \"keras\"\noptimizer = \"sgd\"",
                &["`optimizer`", "sgd", "keras"],
            ),
            (
                "semantics = \"keras\"\nmodel = \"dense\"\nweight_decay = 1e-4",
                &["`weight_decay`", "convolution kernels"],
            ),
        ];
        for (text, needles) in cases {
            let err = TrialSpec::from_toml(text).expect_err(text).to_string();
            for needle in *needles {
                assert!(
                    err.contains(needle),
                    "error for {text:?} should mention {needle:?}: {err}"
                );
            }
        }
    }
}
