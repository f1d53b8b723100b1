//! A finished trial's trained model as files a user keeps: `model.safetensors` (the weights
//! and batch-norm statistics, named as the model builders name them, e.g. `fc1.weight`) and
//! `model.json` (what is needed to use them: the resolved trial, the class names, the input
//! shape and the normalisation). The JSON also travels inside the safetensors header
//! (`__metadata__["sweep_model"]`), so the one file sent to the coordinator is complete.
//!
//! A TorchScript trial's model file holds one tensor instead, `torchscript` (U8): the trained
//! module as a TorchScript file, parameters and buffers included, in eval mode. It is also
//! written out as `model.pt`, which `torch.jit.load` reads.
//!
//! Inputs are `[N, C, S, S]` float tensors (S = the trial's `image_size`, 32 for CIFAR): pixels on the 0..255 scale, grayscale as the
//! trial's `color` says, then normalised by `normalization` (`standard`: (x - mean) / std
//! per channel, with the training split's statistics stored here; `scale`: x / 255).

use crate::artifacts::checkpoint::{self, Bytes};
use crate::data::pipeline;
use safetensors::tensor::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use sweep_proto::TrialSpec;
use tch::{nn, Device, Kind, Tensor};

pub const WEIGHTS: &str = "model.safetensors";
pub const SIDECAR: &str = "model.json";
/// A TorchScript trial's trained module, beside the other two.
pub const MODULE: &str = "model.pt";
/// The tensor holding it in the model file.
pub const MODULE_TENSOR: &str = "torchscript";
const METADATA_KEY: &str = "sweep_model";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format: u32,
    /// The trial's id (first 16 hex digits of the SHA-256 of its canonical TOML).
    pub trial_id: String,
    /// The resolved trial: model, color, layout, normalization and every other field.
    pub trial: TrialSpec,
    pub classes: Vec<String>,
    /// `[channels, height, width]` of one input image.
    pub input: [i64; 3],
    /// Per-channel training statistics on the 0..255 scale (used by `standard`).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// What the trial measured on its test set with these weights.
    pub test_accuracy: Option<f64>,
    pub test_images: Option<u64>,
    pub semantics: u32,
}

/// The id a coordinator gives `spec`.
pub fn trial_id(spec: &TrialSpec) -> String {
    let mut id = checkpoint::spec_sha256(spec);
    id.truncate(16);
    id
}

pub fn channel_values(t: &Tensor) -> Vec<f64> {
    let t = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .flatten(0, -1);
    (0..t.size()[0]).map(|i| t.double_value(&[i])).collect()
}

/// The model file's bytes: `vs`'s variables with `info` in the header.
pub fn encode(vs: &nn::VarStore, info: &ModelInfo) -> Result<Vec<u8>, String> {
    let mut named: Vec<(String, Bytes)> = Vec::new();
    for (name, t) in vs.variables() {
        named.push((name, checkpoint::to_bytes(&t)?));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(&str, &Bytes)> = named.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let json = serde_json::to_string(info).map_err(|e| e.to_string())?;
    let meta = Some(HashMap::from([(METADATA_KEY.to_string(), json)]));
    safetensors::tensor::serialize(views, &meta).map_err(|e| format!("{e:?}"))
}

/// The model file of a TorchScript trial: its trained module's bytes with `info` in the header.
pub fn encode_module(module: &[u8], info: &ModelInfo) -> Result<Vec<u8>, String> {
    let tensor = checkpoint::raw_bytes(module);
    let json = serde_json::to_string(info).map_err(|e| e.to_string())?;
    let meta = Some(HashMap::from([(METADATA_KEY.to_string(), json)]));
    safetensors::tensor::serialize([(MODULE_TENSOR, &tensor)], &meta).map_err(|e| format!("{e:?}"))
}

/// The TorchScript module in a model file's bytes, if it holds one.
pub fn module_bytes(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    match st.tensor(MODULE_TENSOR) {
        Ok(view) if view.dtype() == safetensors::Dtype::U8 => Ok(Some(view.data().to_vec())),
        Ok(view) => Err(format!(
            "tensor {MODULE_TENSOR} is {:?}, not U8",
            view.dtype()
        )),
        Err(_) => Ok(None),
    }
}

/// Reads a model file's bytes back: its description and its tensors.
pub fn decode(bytes: &[u8]) -> Result<(ModelInfo, HashMap<String, Tensor>), String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{e:?}"))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or("not a model file of this project (no sweep_model metadata)")?;
    let info: ModelInfo = serde_json::from_str(json).map_err(|e| format!("metadata: {e}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        tensors.insert(
            name.clone(),
            Tensor::try_from(view).map_err(|e| format!("tensor {name}: {e}"))?,
        );
    }
    Ok((info, tensors))
}

/// Writes `model.safetensors` and `model.json` into `dir`, and a TorchScript trial's
/// `model.pt`.
pub fn write_dir(dir: &Path, bytes: &[u8]) -> Result<ModelInfo, String> {
    let (info, _) = decode(bytes)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(MODULE);
    match module_bytes(bytes)? {
        Some(module) => {
            std::fs::write(&path, module).map_err(|e| format!("{}: {e}", path.display()))?
        }
        // Not one left over from an earlier export into the same directory.
        None if path.exists() => {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {}
    }
    let weights = dir.join(WEIGHTS);
    std::fs::write(&weights, bytes).map_err(|e| format!("{}: {e}", weights.display()))?;
    let sidecar = dir.join(SIDECAR);
    let json = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
    std::fs::write(&sidecar, json + "\n").map_err(|e| format!("{}: {e}", sidecar.display()))?;
    Ok(info)
}

/// A model directory (or a `.safetensors` file) loaded: the model in inference mode.
pub struct Loaded {
    pub info: ModelInfo,
    pub vs: nn::VarStore,
    pub model: Box<dyn tch::nn::ModuleT>,
}

pub fn load(path: &Path, device: Device) -> Result<Loaded, String> {
    let file = if path.is_dir() {
        path.join(WEIGHTS)
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (info, tensors) = decode(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    info.trial
        .validate()
        .map_err(|e| format!("{}: the model's trial is not valid: {e}", file.display()))?;
    let channels = info.trial.input_channels();
    let size = info.trial.image_size as i64;
    if !(2..=crate::data::imagefolder::MAX_CLASSES).contains(&info.classes.len())
        || info
            .trial
            .dataset
            .classes()
            .is_some_and(|n| n != info.classes.len())
        || info.mean.len() != channels as usize
        || info.std.len() != channels as usize
        || info.input != [channels, size, size]
    {
        return Err(format!(
            "{}: the model's description does not fit its trial ({} classes, {} means, {} stds, input {:?} for {channels} channel(s))",
            file.display(),
            info.classes.len(),
            info.mean.len(),
            info.std.len(),
            info.input
        ));
    }
    let io = crate::model::Io {
        channels,
        size,
        classes: info.classes.len() as i64,
    };
    if let sweep_proto::Model::TorchScript(_) = info.trial.model {
        // The module was saved trained: nothing to build or copy.
        let module = module_bytes(&bytes)
            .and_then(|m| {
                m.ok_or(format!(
                    "no {MODULE_TENSOR} tensor for the trial's TorchScript model"
                ))
            })
            .and_then(|m| crate::model::torchscript::load_frozen(&m, device, io))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let vs = nn::VarStore::new(device);
        return Ok(Loaded {
            info,
            vs,
            model: Box::new(module),
        });
    }
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = crate::model::build(&vs.root(), info.trial.model, io, info.trial.semantics)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    checkpoint::load_model(&vs, &tensors).map_err(|e| format!("{}: {e}", file.display()))?;
    vs.set_device(device);
    Ok(Loaded { info, vs, model })
}

impl Loaded {
    /// Side length of the images the model takes.
    pub fn side(&self) -> usize {
        self.info.trial.image_size as usize
    }

    /// Images as rows of R, G and B planes of `side()` x `side()` (CIFAR: 3,072 bytes),
    /// prepared as the trial's pipeline prepares test images.
    pub fn inputs(&self, rows: &[u8], n: usize) -> Result<Tensor, String> {
        let t = &self.info.trial;
        let shape = crate::data::Shape::square(3, self.side());
        let x = pipeline::rows_to_tensor(rows, n, shape, t.layout, t.color)
            .map_err(|e| e.to_string())?;
        let shape = [1, self.info.mean.len() as i64, 1, 1];
        let mean = Tensor::from_slice(&self.info.mean)
            .to_kind(Kind::Float)
            .view(shape);
        let std = Tensor::from_slice(&self.info.std)
            .to_kind(Kind::Float)
            .view(shape);
        let device = self.vs.device();
        Ok(pipeline::normalize(
            &x.to_device(device).to_kind(Kind::Float),
            t.normalization,
            &mean.to_device(device),
            &std.to_device(device),
        ))
    }
}
