//! The coordinator/worker API crate.
//!
//! - [`pb`]: the generated gRPC types and service stubs (`proto/sweep.proto`).
//! - [`TrialSpec`]: everything one trial can set, with `validate()`; parsed from TOML by
//!   `worker train` and (later) expanded from sweep grids by the coordinator.
//! - [`TrialResult`]: what a worker reports for one trial, with `validate()`; it crosses the
//!   wire as the typed `pb::TrialResult` (conversions in [`convert`]).
//!
//! Neither side links libtorch through this crate. Its modules:
//!
//! - [`trial`]: [`TrialSpec`], its canonical TOML and validation.
//! - [`result`]: [`TrialResult`], its validation and its test builder.
//! - [`ids`]: `TrialId`, `WorkerId` and `LeaseRef`.
//! - [`limits`]: limits both sides must agree on (names, checkpoints, Keras' epsilon).
//! - [`convert`]: protobuf <-> these types, artifact chunking, tokens.
//! - [`tls`]: client TLS flags and endpoints, the client's bearer interceptor.
//! - [`module`]: TorchScript modules named by content hash.
//! - [`health`]: `/healthz` and `/readyz` (and a worker's `/metrics`).
//! - [`observe`]: `--log-format` and the `/metrics` answer.
//! - [`signal`]: shutdown on SIGTERM or Ctrl-C.

/// The ten CIFAR-10 class names, in label order (the official release's `batches.meta`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub mod convert;
pub mod health;
pub mod ids;
pub mod limits;
pub mod module;
pub mod observe;
pub mod result;
pub mod signal;
pub mod tls;
pub mod trial;

pub use convert::read_token;

/// SHA-256 of `data` in lower-case hex: trial ids, stored results' checksums, checkpoints
/// and artifacts on the wire (one function for the coordinator and the worker, which must
/// agree on it).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(data))
}

/// Bytes in lower-case hex (a digest computed in pieces, say).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
pub use result::{
    EpochMetrics, InvalidResult, Provenance, TestMetrics, TrialResult, TrialStatus, MAX_EPOCH,
    TRAINER_SEMANTICS,
};
pub use trial::{
    Augment, AugmentChange, Change, ColorMode, DatasetKind, DeviceRequest, Layout, Loss, Model,
    ModuleHash, Normalization, Optimizer, Precision, Schedule, Semantics, SpecError, TrialSpec,
    CHANGEABLE, CIFAR_IMAGE_SIZE, IMAGEFOLDER_PREFIX, TORCHSCRIPT_PREFIX,
};

/// Generated protobuf/gRPC code.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("sweep.v1");
}
