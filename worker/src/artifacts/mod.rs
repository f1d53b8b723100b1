//! What a trial leaves behind.
//!
//! - [`checkpoint`]: a running trial's state (model, optimiser, schedule, RNG) to resume from.
//! - [`export`]: a finished trial's model file (safetensors + description, or TorchScript).
//! - [`predict`]: `worker eval` and `worker predict` from an exported model.
//! - [`provenance`]: versions, device, data fingerprint and semantics of a result.

pub mod checkpoint;
pub mod export;
pub mod predict;
pub mod provenance;
