//! The training worker: CIFAR-10 data, models, and the libtorch training loop.
//!
//! - [`data`]: the `cifar10` crate (find, read, summarise and fetch the dataset), re-exported.
//! - [`pipeline`]: per-trial tensors on the training device (split, layout, grayscale, stats).
//! - [`amp`]: bf16 autocast (with fp32 fallback) and channels-last layout.
//! - [`augment`]: batched flips, crops, shifts and rotations on the device.
//! - [`models`], [`optim`], [`schedule`], [`metrics`]: the pieces a trial is made of.
//! - [`train`]: one trial, start to finish, reporting through an observer.
//! - [`trial_panic`]: libtorch errors (out of memory included) as a trial's failure reason.
//! - [`bench`]: training throughput measurement for `worker bench`.
//! - [`client`]: the long-running loop that pulls trials from a coordinator over gRPC.

pub mod amp;
pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod client;
pub mod tls_probe;
pub use cifar10 as data;
pub mod device;
pub mod export;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod pipeline;
pub mod predict;
pub mod provenance;
pub mod schedule;
pub mod torchscript;
pub mod train;
pub mod trial_panic;

/// Tests that seed libtorch's global generator and compare results hold this lock, so that
/// tests running on other threads do not draw from the generator in between.
#[cfg(test)]
pub(crate) fn test_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
