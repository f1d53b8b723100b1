//! The training worker: datasets, models, the libtorch training loop, and the client that
//! pulls trials from a coordinator. One folder per layer:
//!
//! - [`data`]: the `cifar10` crate's datasets (find, read, summarise, fetch), re-exported,
//!   plus the per-trial tensors on the device ([`data::pipeline`]) and their augmentation.
//! - [`model`]: the built-in models, the user's TorchScript modules, bf16 autocast and
//!   channels-last.
//! - [`train`]: one trial start to finish (the loop), optimisers, schedules, metrics, the
//!   device choice, libtorch panics as failures, and the throughput benchmark.
//! - [`artifacts`]: what a trial leaves: checkpoints, exported models, predictions and
//!   evaluation from them, provenance.
//! - [`net`]: the long-running client (session, leases, heartbeats, transfers) and the TLS
//!   probe.
//!
//! The `worker` binary (`cli/main.rs`) sits on top.

pub mod artifacts;
pub mod data;
pub mod model;
pub mod net;
pub mod train;

/// Tests that seed libtorch's global generator and compare results hold this lock, so that
/// tests running on other threads do not draw from the generator in between.
#[cfg(test)]
pub(crate) fn test_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
