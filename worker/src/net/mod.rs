//! The worker on the network.
//!
//! - [`client`]: the long-running loop: register, lease, heartbeat, report, and the chunked
//!   checkpoint, model and module transfers.
//! - [`metrics`]: what `/metrics` on the health port exports.
//! - [`tls_probe`]: a clear error when the coordinator's TLS does not fit the worker's.

pub mod client;
pub mod metrics;
pub mod tls_probe;
