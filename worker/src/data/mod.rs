//! Datasets and what a trial makes of them. The `cifar10` crate (no libtorch: find, read,
//! summarise and fetch CIFAR-10, CIFAR-100 and image folders) is re-exported here whole.
//!
//! - [`pipeline`]: per-trial tensors on the training device (split, layout, grayscale, stats).
//! - [`augment`]: batched flips, crops, shifts, rotations and cutout on the device.

pub use cifar10::*;

pub mod augment;
pub mod pipeline;
