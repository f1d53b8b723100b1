//! Checkpoints of a running trial: everything a later attempt needs to train on exactly as an
//! uninterrupted run would.
//!
//! A checkpoint after epoch k holds the model's variables (batch-norm statistics included), the
//! optimiser's buffers and step count, and the metrics of epochs 1..=k. The schedule is a
//! function of the epoch and step, and every epoch seeds libtorch's generator from the trial
//! seed and the epoch number, so nothing else is needed.
//!
//! Format: `SWEEPCK1`, the header's length (u64, little-endian), the header (JSON), then the
//! tensors in the safetensors format (`model.NAME`, `opt.NAME`, and for a TorchScript trial
//! `module`: the whole module as a TorchScript file, since its buffers are not in the
//! `VarStore`; bytes as a U8 vector). The coordinator keeps the
//! SHA-256 of the whole; [`decode`] refuses anything that does not parse, belongs to another
//! trial or trainer version, or does not fit the model.

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use sweep_proto::{EpochMetrics, TrialSpec, TRAINER_SEMANTICS};
use tch::{nn, Kind, Tensor};

const MAGIC: &[u8; 8] = b"SWEEPCK1";
/// The tensor holding a TorchScript trial's module.
const MODULE: &str = "module";
/// A header is a few KB (one line of metrics per epoch); anything larger is not ours.
const MAX_HEADER: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`TRAINER_SEMANTICS`] of the trainer that wrote it.
    pub semantics: u32,
    /// [`TrialSpec::resume_key`] at `epoch`: a checkpoint resumes only a trial that trained
    /// its epochs the same way (its own, or a PBT member's next segment); for a trial without
    /// changes, the SHA-256 (hex) of its canonical TOML.
    pub spec_sha256: String,
    /// Epochs trained (the next attempt starts at epoch `epoch + 1`).
    pub epoch: u32,
    pub optimizer_step: u64,
    /// Metrics of epochs 1..=epoch, as reported.
    pub epochs: Vec<EpochMetrics>,
}

/// SHA-256 (hex) of `bytes`.
pub use sweep_proto::sha256_hex;

pub fn spec_sha256(spec: &TrialSpec) -> String {
    sha256_hex(spec.to_toml().as_bytes())
}

/// A CPU copy of a tensor for the safetensors writer.
pub(crate) struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Raw bytes as a U8 vector (a TorchScript module inside a checkpoint or a model file).
pub(crate) fn raw_bytes(data: &[u8]) -> Bytes {
    Bytes {
        dtype: Dtype::U8,
        shape: vec![data.len()],
        data: data.to_vec(),
    }
}

pub(crate) fn to_bytes(t: &Tensor) -> Result<Bytes, String> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let dtype = match t.kind() {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        other => return Err(format!("cannot checkpoint a {other:?} tensor")),
    };
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)
        .map_err(|e| e.to_string())?;
    Ok(Bytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// The checkpoint of `vs` and the optimiser state after `header.epoch` epochs; `module`: a
/// TorchScript trial's module ([`crate::model::torchscript::Scripted::to_bytes`]).
pub fn encode(
    header: &Header,
    vs: &nn::VarStore,
    optimizer: &[(String, Tensor)],
    module: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut named: Vec<(String, Bytes)> = Vec::new();
    if let Some(module) = module {
        named.push((MODULE.to_string(), raw_bytes(module)));
    }
    for (name, t) in vs.variables() {
        named.push((format!("model.{name}"), to_bytes(&t)?));
    }
    for (name, t) in optimizer {
        named.push((format!("opt.{name}"), to_bytes(t)?));
    }
    let views: Vec<(&str, &Bytes)> = named.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let tensors = safetensors::tensor::serialize(views, &None).map_err(|e| e.to_string())?;
    let head = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(16 + head.len() + tensors.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&tensors);
    Ok(out)
}

/// A checkpoint read back: its header, the model's tensors and the optimiser's, by name.
pub struct Restored {
    pub header: Header,
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    /// A TorchScript trial's module file.
    pub module: Option<Vec<u8>>,
}

/// Parses a checkpoint for `spec`; the error says what is wrong with it.
pub fn decode(bytes: &[u8], spec: &TrialSpec) -> Result<Restored, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a checkpoint (no SWEEPCK1 header)".into());
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    if len > MAX_HEADER || 16 + len as usize > bytes.len() {
        return Err(format!("header length {len} does not fit the file"));
    }
    let end = 16 + len as usize;
    let header: Header =
        serde_json::from_slice(&bytes[16..end]).map_err(|e| format!("header: {e}"))?;
    if header.semantics != TRAINER_SEMANTICS {
        return Err(format!(
            "written by trainer semantics {}, this worker is {TRAINER_SEMANTICS}",
            header.semantics
        ));
    }
    if header.spec_sha256 != spec.resume_key(header.epoch) {
        return Err("it belongs to another trial".into());
    }
    if header.epoch == 0
        || header.epoch >= spec.epochs
        || header.epochs.len() != header.epoch as usize
    {
        return Err(format!(
            "epoch {} with {} epochs of metrics does not fit a {}-epoch trial",
            header.epoch,
            header.epochs.len(),
            spec.epochs
        ));
    }
    let st = SafeTensors::deserialize(&bytes[end..]).map_err(|e| format!("tensors: {e:?}"))?;
    let (mut model, mut optimizer, mut module) = (HashMap::new(), HashMap::new(), None);
    for (name, view) in st.tensors() {
        if name == MODULE && view.dtype() == Dtype::U8 {
            module = Some(view.data().to_vec());
            continue;
        }
        let t = Tensor::try_from(view).map_err(|e| format!("tensor {name}: {e}"))?;
        if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("opt.") {
            optimizer.insert(n.to_string(), t);
        } else {
            return Err(format!("unexpected tensor {name}"));
        }
    }
    if module.is_some() != matches!(spec.model, sweep_proto::Model::TorchScript(_)) {
        return Err(match module {
            Some(_) => "it holds a TorchScript module, the trial's model is built in".into(),
            None => "it has no module for the trial's TorchScript model".into(),
        });
    }
    Ok(Restored {
        header,
        model,
        optimizer,
        module,
    })
}

/// Checks that a checkpoint's model tensors fit `vs`: every variable, with its shape.
pub fn check_model(vs: &nn::VarStore, model: &HashMap<String, Tensor>) -> Result<(), String> {
    let vars = vs.variables();
    if vars.len() != model.len() {
        return Err(format!(
            "{} model tensors for a model of {} variables",
            model.len(),
            vars.len()
        ));
    }
    for (name, var) in vars {
        let saved = model
            .get(&name)
            .ok_or_else(|| format!("the checkpoint has no variable {name}"))?;
        if saved.size() != var.size() {
            return Err(format!(
                "variable {name} has shape {:?}, the model needs {:?}",
                saved.size(),
                var.size()
            ));
        }
    }
    Ok(())
}

/// Copies a checkpoint's model tensors into `vs`, after [`check_model`]: on an error nothing
/// has changed.
pub fn load_model(vs: &nn::VarStore, model: &HashMap<String, Tensor>) -> Result<(), String> {
    check_model(vs, model)?;
    for (name, mut var) in vs.variables() {
        if let Some(saved) = model.get(&name) {
            tch::no_grad(|| var.copy_(saved));
        }
    }
    Ok(())
}

/// When a running trial writes a checkpoint: after `every_epochs` epochs since the last one,
/// or after an epoch that ends `every_seconds` or more after it (0 turns a rule off).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    pub every_epochs: u32,
    pub every_seconds: u32,
}

impl Policy {
    pub fn due(&self, epochs_since: u32, seconds_since: f64) -> bool {
        (self.every_epochs > 0 && epochs_since >= self.every_epochs)
            || (self.every_seconds > 0 && seconds_since >= self.every_seconds as f64)
    }
}
