//! Limits and constants both sides must agree on, in one place.

/// Longest sweep or worker name (bytes): names appear in ids, logs and reports, and a host
/// name fits.
pub const MAX_NAME: usize = 64;

/// Largest checkpoint or kept model a worker sends and the coordinator stores. A TorchScript
/// checkpoint holds the module, the parameters and the optimiser's state (about four copies
/// of the parameters with Adam): about 130 MB of parameters fit.
pub const MAX_CHECKPOINT_BYTES: u64 = 512 << 20;

/// Keras' `epsilon()`: its Adam's epsilon and the clip of its cross-entropy losses and
/// binary accuracy.
pub const KERAS_EPSILON: f64 = 1e-7;
