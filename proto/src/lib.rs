//! The coordinator/worker API crate.
//!
//! - [`pb`]: the generated gRPC types and service stubs (`proto/sweep.proto`).
//! - [`TrialSpec`]: everything one trial can set, with `validate()`; parsed from TOML by
//!   `worker train` and (later) expanded from sweep grids by the coordinator.
//! - [`TrialResult`]: what a worker reports for one trial.
//!
//! Neither side links libtorch through this crate.

pub mod convert;
pub mod result;
pub mod trial;

pub use convert::read_token;
pub use result::{EpochMetrics, TestMetrics, TrialResult, TrialStatus};
pub use trial::{
    Augment, ColorMode, DeviceRequest, Layout, Loss, Model, Normalization, Optimizer, Schedule,
    SpecError, TrialSpec,
};

/// Generated protobuf/gRPC code.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("sweep.v1");
}
